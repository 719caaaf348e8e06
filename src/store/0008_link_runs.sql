-- imapferry state store, schema version 8: links stored as runs (DESIGN.md §4a, src/store/runs.rs).
-- Same SQL subset as schema.sql; never edited once released.

-- A run stands for the links old_start + i <-> new_start + i (i < length), all with the same base
-- flags: a folder copied in ascending OLD-UID order is a few rows whatever its size. Runs of a pair
-- never overlap. `links` keeps the exceptions that are stored per message: links with an identity
-- key (adoption, copies without UIDPLUS). A (pair_id, OLD UID) is in one run, in `links` or in
-- `tombstones`, never in two of them.
CREATE TABLE link_runs (
    pair_id   BIGINT NOT NULL REFERENCES folder_pairs (id) ON DELETE CASCADE,
    old_start BIGINT NOT NULL,
    new_start BIGINT NOT NULL,
    length    BIGINT NOT NULL,
    old_flags TEXT NOT NULL,
    new_flags TEXT NOT NULL,
    PRIMARY KEY (pair_id, old_start)
) WITHOUT ROWID;

-- The per-message links of earlier versions become runs (gaps and islands): within a pair, the
-- links with the same flags and the same distance new_uid - old_uid whose OLD UIDs follow each
-- other without a gap form one run (old_uid - its rank among them is constant along a run).
INSERT INTO link_runs (pair_id, old_start, new_start, length, old_flags, new_flags)
SELECT pair_id, MIN(old_uid), MIN(new_uid), COUNT(*), old_flags, new_flags
FROM (
    SELECT pair_id, old_uid, new_uid, old_flags, new_flags,
           new_uid - old_uid AS shift,
           old_uid - ROW_NUMBER() OVER (
               PARTITION BY pair_id, old_flags, new_flags, new_uid - old_uid
               ORDER BY old_uid
           ) AS island
    FROM links
    WHERE ident IS NULL
) AS numbered
GROUP BY pair_id, old_flags, new_flags, shift, island;

DELETE FROM links WHERE ident IS NULL;
