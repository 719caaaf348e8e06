-- imapferry state store, schema version 11: the UID map of a folder that keeps client caches.
-- Same SQL subset as schema.sql; never edited once released.

-- The numbers a client is shown for a folder pair (src/uidmap.rs), decided once: the first
-- decision stored wins, so every proxy of a fleet shows the same. A row with `uidvalidity` 0
-- (no IMAP UIDVALIDITY is 0, the other columns 0 and '') is a folder that shows NEW's own
-- numbers: it cannot keep client caches, and its clients cache NEW's. `uidvalidity` is the one shown for NEW's
-- `new_uidvalidity`; NEW's MODSEQ is shown plus `modseq_offset` (below 2^63); NEW UIDs from
-- `tail_new` on are shown from `tail_virt` on; `runs` holds the runs below the tail as
-- space-separated `new:virt:len` triples ('' for none). Gone with the pair's links when its
-- folder is reset or removed; kept by a rename and by retire. Not stored in its primary-key
-- b-tree as the per-message tables are: a fragmented folder's runs make a row of kilobytes.
CREATE TABLE uid_maps (
    pair_id         BIGINT NOT NULL PRIMARY KEY REFERENCES folder_pairs (id) ON DELETE CASCADE,
    uidvalidity     BIGINT NOT NULL,
    new_uidvalidity BIGINT NOT NULL,
    modseq_offset   BIGINT NOT NULL,
    tail_new        BIGINT NOT NULL,
    tail_virt       BIGINT NOT NULL,
    runs            TEXT NOT NULL
);
