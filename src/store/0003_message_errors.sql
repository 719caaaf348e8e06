-- imapferry state store, schema version 3: messages a pass could not copy (see src/store/mod.rs).
-- Same SQL subset as schema.sql; never edited once released.

-- OLD messages the last pass over their folder pair ended with in error, with the reason: the
-- conservation law's error class (DESIGN.md §1.9). Replaced as a whole by each pass of the pair.
CREATE TABLE message_errors (
    pair_id BIGINT NOT NULL REFERENCES folder_pairs (id) ON DELETE CASCADE,
    old_uid BIGINT NOT NULL,
    reason  TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (pair_id, old_uid)
) WITHOUT ROWID;
