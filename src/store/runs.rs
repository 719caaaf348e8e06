//! Links stored as runs (DESIGN.md §4a): a run `(old_start, new_start, len)` with one pair of base
//! flags stands for the links `old_start + i ↔ new_start + i`, `i < len`. These pure functions
//! rewrite the runs around the OLD UIDs a write touches; the SQL stores read that window, call
//! [`rewrite`], and write back only what [`changes`] says.

use std::collections::{BTreeMap, BTreeSet};

use super::Link;

/// A run of links: consecutive OLD UIDs copied to consecutive NEW UIDs, all with the same base
/// flags. `len` is at least 1; the run's UIDs stay within `u32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) old_start: u32,
    pub(super) new_start: u32,
    pub(super) len: u64,
    pub(super) old_flags: String,
    pub(super) new_flags: String,
}

impl Run {
    /// The run of one link (its identity key, if any, is not part of a run).
    pub(super) fn single(link: &Link) -> Run {
        Run {
            old_start: link.old_uid,
            new_start: link.new_uid,
            len: 1,
            old_flags: link.old_flags.clone(),
            new_flags: link.new_flags.clone(),
        }
    }

    /// One past the last OLD UID.
    pub(super) fn old_end(&self) -> u64 {
        u64::from(self.old_start) + self.len
    }

    pub(super) fn contains(&self, old_uid: u32) -> bool {
        old_uid >= self.old_start && u64::from(old_uid) < self.old_end()
    }

    /// The NEW UID linked to `old_uid`, which the run contains.
    pub(super) fn new_uid(&self, old_uid: u32) -> u32 {
        self.new_start + (old_uid - self.old_start)
    }

    /// Whether `next` starts where this run ends, on both sides, with the same flags.
    fn continued_by(&self, next: &Run) -> bool {
        self.old_end() == u64::from(next.old_start)
            && u64::from(self.new_start) + self.len == u64::from(next.new_start)
            && self.old_flags == next.old_flags
            && self.new_flags == next.new_flags
    }

    /// The part of the run from `from` (inclusive) to `to` (exclusive), both inside it.
    fn part(&self, from: u64, to: u64) -> Run {
        let skip = from - u64::from(self.old_start);
        Run {
            old_start: narrow(from),
            new_start: narrow(u64::from(self.new_start) + skip),
            len: to - from,
            old_flags: self.old_flags.clone(),
            new_flags: self.new_flags.clone(),
        }
    }

    /// The run's links whose NEW UID is in `first..=last`, ascending.
    pub(super) fn links_by_new(&self, first: u32, last: u32) -> impl Iterator<Item = Link> + '_ {
        let from = u64::from(first.saturating_sub(self.new_start));
        let to = (u64::from(last) + 1)
            .saturating_sub(u64::from(self.new_start))
            .min(self.len);
        (from..to).map(move |i| Link {
            old_uid: narrow(u64::from(self.old_start) + i),
            new_uid: narrow(u64::from(self.new_start) + i),
            old_flags: self.old_flags.clone(),
            new_flags: self.new_flags.clone(),
            ident: None,
        })
    }
}

/// A UID inside a run, which never leaves `u32` (the runs are built from `u32` links).
fn narrow(uid: u64) -> u32 {
    u32::try_from(uid).unwrap_or(u32::MAX)
}

/// The runs of a window (sorted by `old_start`, disjoint) once the links of the OLD UIDs in
/// `remove` are dropped and the runs in `add` (whose UIDs are in `remove` or in no run) are put in.
/// Neighbours that continue each other become one run.
pub(super) fn rewrite(window: &[Run], remove: &BTreeSet<u32>, add: Vec<Run>) -> Vec<Run> {
    let mut pieces: Vec<Run> = Vec::with_capacity(window.len() + add.len() + 1);
    for run in window {
        let mut from = u64::from(run.old_start);
        for &uid in remove.range(run.old_start..) {
            let uid = u64::from(uid);
            if uid >= run.old_end() {
                break;
            }
            if uid > from {
                pieces.push(run.part(from, uid));
            }
            from = uid + 1;
        }
        if from < run.old_end() {
            pieces.push(run.part(from, run.old_end()));
        }
    }
    pieces.extend(add);
    pieces.sort_by_key(|r| r.old_start);
    let mut out: Vec<Run> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match out.last_mut() {
            Some(last) if last.continued_by(&piece) => last.len += piece.len,
            _ => out.push(piece),
        }
    }
    out
}

/// What to write so that the runs `before` become `after`: the `old_start`s to delete, and the
/// runs to insert or replace (by `old_start`).
pub(super) fn changes(before: &[Run], after: &[Run]) -> (Vec<u32>, Vec<Run>) {
    let kept: BTreeMap<u32, &Run> = before.iter().map(|r| (r.old_start, r)).collect();
    let starts: BTreeSet<u32> = after.iter().map(|r| r.old_start).collect();
    let delete = before
        .iter()
        .map(|r| r.old_start)
        .filter(|s| !starts.contains(s))
        .collect();
    let upsert = after
        .iter()
        .filter(|r| kept.get(&r.old_start) != Some(r))
        .cloned()
        .collect();
    (delete, upsert)
}

/// Runs whose links continue each other, from links ascending by OLD UID without an identity key.
#[cfg(test)]
fn from_links(links: &[Link]) -> Vec<Run> {
    rewrite(
        &[],
        &BTreeSet::new(),
        links.iter().map(Run::single).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(old_start: u32, new_start: u32, len: u64, flags: &str) -> Run {
        Run {
            old_start,
            new_start,
            len,
            old_flags: flags.into(),
            new_flags: flags.into(),
        }
    }

    fn uids(list: &[u32]) -> BTreeSet<u32> {
        list.iter().copied().collect()
    }

    #[test]
    fn rewriting_a_window() {
        let seen = "\\Seen";
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Vec<Run>, &[u32], Vec<Run>, Vec<Run>)> = vec![
            (
                "an append extends the run",
                vec![run(1, 101, 5, "")],
                &[6],
                vec![run(6, 106, 1, "")],
                vec![run(1, 101, 6, "")],
            ),
            (
                "other flags start a new run",
                vec![run(1, 101, 5, "")],
                &[6],
                vec![run(6, 106, 1, seen)],
                vec![run(1, 101, 5, ""), run(6, 106, 1, seen)],
            ),
            (
                "a gap on NEW starts a new run",
                vec![run(1, 101, 5, "")],
                &[6],
                vec![run(6, 107, 1, "")],
                vec![run(1, 101, 5, ""), run(6, 107, 1, "")],
            ),
            (
                "a removal in the middle splits",
                vec![run(1, 101, 5, "")],
                &[3],
                vec![],
                vec![run(1, 101, 2, ""), run(4, 104, 2, "")],
            ),
            (
                "removals at both ends shrink",
                vec![run(1, 101, 5, "")],
                &[1, 5, 9],
                vec![],
                vec![run(2, 102, 3, "")],
            ),
            (
                "a flag change splits in three",
                vec![run(1, 101, 5, "")],
                &[3],
                vec![run(3, 103, 1, seen)],
                vec![run(1, 101, 2, ""), run(3, 103, 1, seen), run(4, 104, 2, "")],
            ),
            (
                "a flag change back joins them again",
                vec![run(1, 101, 2, ""), run(3, 103, 1, seen), run(4, 104, 2, "")],
                &[3],
                vec![run(3, 103, 1, "")],
                vec![run(1, 101, 5, "")],
            ),
            (
                "a re-added UID with another NEW UID",
                vec![run(1, 101, 3, "")],
                &[2],
                vec![run(2, 900, 1, "")],
                vec![run(1, 101, 1, ""), run(2, 900, 1, ""), run(3, 103, 1, "")],
            ),
            (
                "a hole filled joins two runs",
                vec![run(1, 101, 2, ""), run(4, 104, 2, "")],
                &[3],
                vec![run(3, 103, 1, "")],
                vec![run(1, 101, 5, "")],
            ),
            (
                "everything removed",
                vec![run(1, 101, 1, ""), run(3, 103, 1, "")],
                &[1, 3],
                vec![],
                vec![],
            ),
            (
                "the top of the UID space",
                vec![run(u32::MAX - 1, u32::MAX - 1, 1, "")],
                &[u32::MAX],
                vec![run(u32::MAX, u32::MAX, 1, "")],
                vec![run(u32::MAX - 1, u32::MAX - 1, 2, "")],
            ),
        ];
        for (what, window, remove, add, want) in table {
            assert_eq!(rewrite(&window, &uids(remove), add), want, "{what}");
        }
    }

    #[test]
    fn changes_write_only_what_differs() {
        let before = vec![run(1, 101, 5, ""), run(8, 108, 2, "")];
        let after = vec![run(1, 101, 6, ""), run(8, 108, 2, ""), run(20, 5, 1, "")];
        assert_eq!(
            changes(&before, &after),
            (vec![], vec![run(1, 101, 6, ""), run(20, 5, 1, "")])
        );
        let after = vec![run(1, 101, 2, ""), run(4, 104, 2, "")];
        assert_eq!(
            changes(&before, &after),
            (vec![8], vec![run(1, 101, 2, ""), run(4, 104, 2, "")])
        );
    }

    #[test]
    fn runs_expand_to_their_links() {
        let links: Vec<Link> = [(1, 10, ""), (2, 11, ""), (3, 12, "x"), (5, 13, "x")]
            .iter()
            .map(|&(o, n, f)| Link {
                old_uid: o,
                new_uid: n,
                old_flags: f.into(),
                new_flags: f.into(),
                ident: None,
            })
            .collect();
        let runs = from_links(&links);
        assert_eq!(
            runs,
            vec![run(1, 10, 2, ""), run(3, 12, 1, "x"), run(5, 13, 1, "x")]
        );
        let back: Vec<Link> = runs
            .iter()
            .flat_map(|r| r.links_by_new(0, u32::MAX))
            .collect();
        assert_eq!(back, links);
        assert!(runs[0].contains(2) && !runs[0].contains(3));
        assert_eq!(runs[0].new_uid(2), 11);
    }
}
