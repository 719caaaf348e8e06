-- imapferry state store, schema version 9: a retired account keeps a summary (DESIGN.md §4a).
-- Same SQL subset as schema.sql; never edited once released.

-- `imapferry retire` deletes the account's tombstones: no pass runs for a retired account, so
-- nothing reads them again. The pair keeps how many there were, for `status`.
ALTER TABLE folder_pairs ADD COLUMN retired_tombstones BIGINT NOT NULL DEFAULT 0;

-- Accounts retired by earlier versions shrink the same way (their base flags stay until a
-- retire of this version would have forgotten them: harmless, as no pass reads them either).
UPDATE folder_pairs SET retired_tombstones =
    (SELECT COUNT(*) FROM tombstones t WHERE t.pair_id = folder_pairs.id)
    WHERE account_id IN (SELECT id FROM accounts WHERE state = 'retired');
DELETE FROM tombstones WHERE pair_id IN
    (SELECT p.id FROM folder_pairs p JOIN accounts a ON a.id = p.account_id
     WHERE a.state = 'retired');
DELETE FROM journal WHERE done = 1 AND account_id IN
    (SELECT id FROM accounts WHERE state = 'retired');
