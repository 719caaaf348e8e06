-- imapferry state store, schema version 10: the folder-size table's last measure of each pair.
-- Same SQL subset as schema.sql; never edited once released.

-- imapsync prints every folder's message count, total and biggest size before and after a pass,
-- which costs a FETCH of every message's size. A side's measure stays true while its UIDVALIDITY,
-- UIDNEXT and message count do (no message added, none expunged), so an unchanged folder is sized
-- by one STATUS. A side's five columns are all NULL (never measured) or all set.
CREATE TABLE folder_sizes (
    pair_id         BIGINT NOT NULL PRIMARY KEY REFERENCES folder_pairs (id) ON DELETE CASCADE,
    old_uidvalidity BIGINT,
    old_uidnext     BIGINT,
    old_messages    BIGINT,
    old_bytes       BIGINT,
    old_biggest     BIGINT,
    new_uidvalidity BIGINT,
    new_uidnext     BIGINT,
    new_messages    BIGINT,
    new_bytes       BIGINT,
    new_biggest     BIGINT
) WITHOUT ROWID;
