-- imapferry state store, schema version 14: how often an account's folder pairs were deleted
-- or renamed. Same SQL subset as schema.sql; never edited once released.

-- The mirror keeps the folder pairs it read between drains while the epoch it reads with the
-- journal stays the same: a pair deleted, renamed or given another NEW name meanwhile (by any
-- process) moves it on.
CREATE TABLE pair_epochs (
    account_id BIGINT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    epoch      BIGINT NOT NULL
);
