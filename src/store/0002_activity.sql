-- imapferry state store, schema version 2: account activity (see src/store/mod.rs).
-- Same SQL subset as schema.sql; never edited once released.

-- When the account was last active (unix seconds): a login through the proxy or a backfill.
-- NULL: never.
ALTER TABLE accounts ADD COLUMN last_activity BIGINT;
