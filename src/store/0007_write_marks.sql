-- imapferry state store, schema version 7: one write-ahead mark per process (see src/store/mod.rs
-- and migrate/intent.rs). Same SQL subset as schema.sql; never edited once released.

-- Set by a process (`holder`, as in `leases`) before a user's write goes to NEW while none of its
-- own was in flight, and deleted once its writes are answered and journaled. A mark whose holder
-- is not alive (an SQLite store: any holder but the reader; a shared store: no unexpired
-- `process:<holder>` lease) was left by a process that died between NEW doing a write and
-- journaling it.
CREATE TABLE write_marks (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    holder     TEXT NOT NULL,
    since      BIGINT NOT NULL,
    PRIMARY KEY (account_id, holder)
) WITHOUT ROWID;

-- The per-account marks of version 5 were left by a process that is gone.
INSERT INTO write_marks (account_id, holder, since)
    SELECT id, 'before-version-7', writes_in_flight FROM accounts WHERE writes_in_flight IS NOT NULL;
UPDATE accounts SET writes_in_flight = NULL;
