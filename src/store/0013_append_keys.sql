-- imapferry state store, schema version 13: identity keys of the messages the mirror appends.
-- Same SQL subset as schema.sql; never edited once released.

-- Kept before OLD gets the mirror's APPEND of NEW message `new_uid` (the UID journal entry
-- `entry_id` names): a replay of an entry cut off after OLD stored the message finds OLD's copy
-- by its key even when the user has deleted NEW's since. They go with their entry.
CREATE TABLE append_keys (
    entry_id BIGINT NOT NULL REFERENCES journal (id) ON DELETE CASCADE,
    new_uid  BIGINT NOT NULL,
    ident    TEXT NOT NULL,
    PRIMARY KEY (entry_id, new_uid)
) WITHOUT ROWID;
