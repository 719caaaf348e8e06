-- imapferry state store, schema version 12: a pair's runs found by their NEW UIDs.
-- Same SQL subset as schema.sql; never edited once released.

-- A mirror entry names NEW UIDs; their runs were found by reading every run of the pair (a
-- folder whose flags changed here and there is hundreds of short runs). Runs never overlap in
-- NEW UIDs either (a NEW message is linked to one OLD message at most): the run holding a NEW
-- UID is the last one starting at or before it.
CREATE INDEX link_runs_by_new ON link_runs (pair_id, new_start);
