-- imapferry state store, schema version 4: journal entries that OLD refuses (see src/store/mod.rs).
-- Same SQL subset as schema.sql; never edited once released.

-- `done`: 0 pending, 1 mirrored to OLD, 2 parked (it can never apply; the account is diverged
-- until `imapferry reconcile`). A refused entry is retried after `retry_at` (unix seconds),
-- `attempts` counts the refusals and `reason` keeps the last one.
ALTER TABLE journal ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE journal ADD COLUMN reason TEXT;
ALTER TABLE journal ADD COLUMN retry_at BIGINT;

-- Done entries are purged after a while (kept for audit until then).
CREATE INDEX journal_done ON journal (created) WHERE done = 1;
