//! The conservation law of a folder pass (DESIGN.md §1.9): every OLD UID the pass scanned ends
//! linked, tombstoned, left out on purpose by a selection option, gone from OLD during the pass,
//! or an error with its reason. Nothing may fall through; [`Ledger::close`] turns whatever did
//! into an error. Pure: the pass records, this module counts.

use std::collections::{BTreeMap, BTreeSet};

/// What became of one scanned OLD message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Linked,
    Tombstoned,
    /// Left out on purpose: `--search`, `--maxage`/`--minage`, `--maxsize`/`--minsize`,
    /// `--nosyncduplicates`.
    Skipped,
    /// Expunged on OLD while the pass ran (its FETCH came back empty and OLD no longer has it).
    Vanished,
    Error(String),
}

/// Every scanned OLD UID and its fate so far.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    scanned: BTreeSet<u32>,
    fates: BTreeMap<u32, Fate>,
}

impl Ledger {
    pub fn new(scanned: impl IntoIterator<Item = u32>) -> Ledger {
        Ledger {
            scanned: scanned.into_iter().collect(),
            fates: BTreeMap::new(),
        }
    }

    /// Records `fate` for `uids` (UIDs the pass did not scan are ignored). An error never
    /// replaces a settled fate; a settled fate replaces an earlier error (a retry that worked).
    pub fn mark(&mut self, uids: impl IntoIterator<Item = u32>, fate: Fate) {
        for uid in uids {
            if !self.scanned.contains(&uid) {
                continue;
            }
            match (self.fates.get(&uid), &fate) {
                (Some(f), Fate::Error(_)) if !matches!(f, Fate::Error(_)) => {}
                _ => {
                    self.fates.insert(uid, fate.clone());
                }
            }
        }
    }

    pub fn error(&mut self, uid: u32, reason: impl Into<String>) {
        self.mark([uid], Fate::Error(reason.into()));
    }

    /// Scanned UIDs without a fate yet.
    pub fn unsettled(&self) -> Vec<u32> {
        self.scanned
            .iter()
            .copied()
            .filter(|u| !self.fates.contains_key(u))
            .collect()
    }

    /// Ends the pass: every unsettled UID becomes an error with `reason`. Returns those UIDs
    /// (empty when the law held).
    pub fn close(&mut self, reason: &str) -> Vec<u32> {
        let lost = self.unsettled();
        self.mark(lost.iter().copied(), Fate::Error(reason.to_string()));
        lost
    }

    /// The errors, by UID.
    pub fn errors(&self) -> Vec<(u32, String)> {
        self.fates
            .iter()
            .filter_map(|(uid, f)| match f {
                Fate::Error(reason) => Some((*uid, reason.clone())),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scanned_uid_ends_in_exactly_one_fate() {
        let mut l = Ledger::new(1..=8);
        l.mark([1, 2], Fate::Linked);
        l.mark([3], Fate::Tombstoned);
        l.mark([4], Fate::Skipped);
        l.mark([5], Fate::Vanished);
        l.error(6, "NO [OVERQUOTA]");
        // Not scanned: ignored.
        l.mark([99], Fate::Linked);
        assert_eq!(l.unsettled(), [7, 8]);
        assert_eq!(l.close("lost by the pass"), [7, 8]);
        assert!(l.unsettled().is_empty());
        assert_eq!(
            l.errors(),
            [
                (6, "NO [OVERQUOTA]".to_string()),
                (7, "lost by the pass".into()),
                (8, "lost by the pass".into())
            ]
        );
        assert_eq!(l.fates.values().filter(|f| **f == Fate::Linked).count(), 2);
        // A second close finds nothing more.
        assert!(l.close("again").is_empty());
    }

    #[test]
    fn a_retry_that_worked_clears_the_error_but_an_error_never_unlinks() {
        let mut l = Ledger::new([1, 2]);
        l.error(1, "MULTIAPPEND refused");
        l.mark([1], Fate::Linked);
        l.mark([2], Fate::Linked);
        l.error(2, "late error");
        assert!(l.errors().is_empty());
        assert!(l.fates.values().all(|f| *f == Fate::Linked));
    }

    #[test]
    fn an_empty_pass_holds_trivially() {
        let mut l = Ledger::new([]);
        assert!(l.close("x").is_empty());
        assert!(l.errors().is_empty());
    }
}
