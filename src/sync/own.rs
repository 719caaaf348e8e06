//! What this process changed on an OLD folder since its pair's recorded state (the mirror's
//! STOREs, with the modseq OLD gave each, its expunges and the messages it put there), and the
//! check that finds OLD changed by nothing else: the recorded state then moves forward with one
//! FETCH, and no pass runs to find what the mirror already did.

use std::collections::{BTreeSet, HashMap};

use super::account::state_of;
use crate::imap::{Client, ImapError, MailboxStatus, Untagged};
use crate::store::{FolderPair, MailboxState, PairId, Phase};

/// This process's own changes to OLD's folder of `pair` since OLD was `base` (a state the pair
/// recorded, with CONDSTORE).
#[derive(Clone, Debug, PartialEq)]
pub struct OwnChanges {
    pub pair: PairId,
    pub base: MailboxState,
    /// OLD UID → the modseq OLD reported for this process's last STORE on the message.
    pub stored: HashMap<u32, u64>,
    /// Messages this process put on OLD (APPENDUID, COPYUID).
    pub added: BTreeSet<u32>,
    /// Messages this process expunged on OLD.
    pub expunged: BTreeSet<u32>,
}

impl OwnChanges {
    /// Nothing changed since `base`; `None` without CONDSTORE (no modseq tells changes apart).
    pub fn since(pair: PairId, base: MailboxState) -> Option<Self> {
        (base.highestmodseq > 0).then(|| OwnChanges {
            pair,
            base,
            stored: HashMap::new(),
            added: BTreeSet::new(),
            expunged: BTreeSet::new(),
        })
    }

    /// The modseq a message of OLD's folder has while nobody else changed it: the one this
    /// process's last STORE got, else at most the base's HIGHESTMODSEQ. A STORE
    /// `UNCHANGEDSINCE` it fails on a message someone else changed. A message this process put
    /// there has no modseq known to it ([`OwnChanges::explain`] takes it as its own whatever
    /// its modseq): the largest one RFC 7162 allows.
    pub fn known_modseq(&self, uid: u32) -> u64 {
        match self.stored.get(&uid) {
            Some(modseq) => *modseq,
            None if self.added.contains(&uid) => i64::MAX as u64,
            None => self.base.highestmodseq,
        }
    }

    /// Whether these are all the changes that took OLD's folder from `base` to `now`:
    /// `changed` holds the modseq of every message changed since the base's HIGHESTMODSEQ
    /// (read after `now`). Each changed message is one this process stored last (same modseq)
    /// or put there; each it put there is there still or expunged by it; and the count is the
    /// base's, plus what was added, minus what this process expunged of the base's messages.
    pub fn explain(&self, now: &MailboxState, changed: &HashMap<u32, u64>) -> bool {
        let base = &self.base;
        if now.uidvalidity != base.uidvalidity
            || now.uidnext < base.uidnext
            || now.highestmodseq < base.highestmodseq
        {
            return false;
        }
        let own = |(uid, modseq): (&u32, &u64)| {
            if *uid >= base.uidnext {
                self.added.contains(uid)
            } else {
                self.stored.get(uid) == Some(modseq)
            }
        };
        if !changed.iter().all(own) {
            return false;
        }
        if (self.added.iter()).any(|u| !changed.contains_key(u) && !self.expunged.contains(u)) {
            return false;
        }
        let added = changed.keys().filter(|u| **u >= base.uidnext).count();
        i64::from(now.messages) == self.messages_with(added)
    }

    /// Whether OLD's STATUS `now` may show this process's changes alone: no message it did not
    /// put there (UIDNEXT no higher than its own additions make it), none gone that it did not
    /// expunge (the count), nothing older than the base (a modseq of 0 is not known). A flag
    /// someone else changed does not show in a STATUS: only [`OwnChanges::explain`], given
    /// what changed, rules that out.
    pub fn may_explain(&self, now: &MailboxState) -> bool {
        let base = &self.base;
        let next =
            (self.added.last()).map_or(base.uidnext, |u| base.uidnext.max(u.saturating_add(1)));
        let kept = (self.added.iter())
            .filter(|u| !self.expunged.contains(u))
            .count();
        now.uidvalidity == base.uidvalidity
            && (now.highestmodseq == 0 || now.highestmodseq >= base.highestmodseq)
            && (base.uidnext..=next).contains(&now.uidnext)
            && i64::from(now.messages) == self.messages_with(kept)
    }

    /// The base's message count with `added` new messages, less those of the base's this
    /// process expunged.
    fn messages_with(&self, added: usize) -> i64 {
        let removed = (self.expunged.iter())
            .filter(|u| **u < self.base.uidnext)
            .count();
        i64::from(self.base.messages) + added as i64 - removed as i64
    }
}

/// Whether OLD's folder of `pair`, whose STATUS is `now`, changed since the pair's recorded
/// state by `own` changes only. Reads the messages changed since on OLD (one FETCH, selecting
/// the folder read-only unless `old` has it selected).
pub(crate) async fn explained(
    old: &mut Client,
    pair: &FolderPair,
    now: &MailboxStatus,
    own: &OwnChanges,
) -> Result<bool, ImapError> {
    let state = state_of(now);
    let recorded = pair.phase == Phase::Synced && pair.old == Some(own.base);
    if own.pair != pair.id || !recorded || !own.explain(&state, &own_only(own)) {
        // Even with nothing else changed, OLD's state cannot be what `own` makes it.
        return Ok(false);
    }
    if !old.has_selected(&pair.old_name) {
        old.select(&pair.old_name, true).await?;
    }
    let mut changed = HashMap::new();
    let fetch = old
        .send_uid_fetch(
            "1:*",
            "UID MODSEQ",
            &format!("CHANGEDSINCE {}", own.base.highestmodseq),
        )
        .await?;
    let side = old.side();
    old.wait(&fetch, |u| {
        if let Untagged::Fetch(f) = u
            && let (Some(uid), Some(modseq)) = (f.uid, f.modseq)
        {
            changed.insert(uid, modseq);
        }
    })
    .await?
    .ok(side, "UID FETCH")?;
    Ok(own.explain(&state, &changed))
}

/// NEW's state to record with OLD's when [`explained`] finds OLD changed by the caller's own
/// writes alone (the user's changes on NEW, all mirrored): its STATUS, while its UIDVALIDITY is
/// the recorded one and it has CONDSTORE; else `None` (a pass reads NEW).
pub(crate) async fn new_watermark(
    new: &mut Client,
    pair: &FolderPair,
) -> Result<Option<MailboxState>, ImapError> {
    let Some(recorded) = pair.new.filter(|n| n.highestmodseq > 0) else {
        return Ok(None);
    };
    let now = match new.status(&pair.new_name).await {
        Err(ImapError::Refused { .. }) => return Ok(None),
        now => now?,
    };
    let usable = now.uidvalidity == recorded.uidvalidity && now.highestmodseq > 0;
    Ok(usable.then(|| state_of(&now)))
}

/// The changes OLD would show if `own` were all of them (its additions not expunged, its
/// STOREs): a check that fails on these fails on anything.
fn own_only(own: &OwnChanges) -> HashMap<u32, u64> {
    let added = (own.added.iter())
        .filter(|u| !own.expunged.contains(u))
        .map(|u| (*u, 0));
    let stored = (own.stored.iter())
        .filter(|(u, _)| !own.expunged.contains(u) && **u < own.base.uidnext)
        .map(|(u, m)| (*u, *m));
    added.chain(stored).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(uidnext: u32, highestmodseq: u64, messages: u32) -> MailboxState {
        MailboxState {
            uidvalidity: 7,
            uidnext,
            highestmodseq,
            messages,
        }
    }

    /// Base: 10 messages, UIDs below 20, HIGHESTMODSEQ 100. This process stored on UID 3
    /// (modseq 104), put UIDs 20 and 21 there, expunged UID 5 and then UID 21.
    fn own() -> OwnChanges {
        let mut own = OwnChanges::since(1, state(20, 100, 10)).unwrap();
        own.stored.insert(3, 104);
        own.added.extend([20, 21]);
        own.expunged.extend([5, 21]);
        own
    }

    #[test]
    fn explains_only_its_own_changes() {
        let now = state(22, 106, 10);
        let ok: HashMap<u32, u64> = [(3, 104), (20, 105)].into();
        let cases: [(&str, MailboxState, HashMap<u32, u64>, bool); 9] = [
            ("exactly its own", now, ok.clone(), true),
            (
                "its message changed again by someone else",
                now,
                [(3, 106), (20, 105)].into(),
                false,
            ),
            (
                "another message changed",
                now,
                [(3, 104), (4, 106), (20, 105)].into(),
                false,
            ),
            (
                "a message it did not add",
                state(23, 107, 11),
                [(3, 104), (20, 105), (22, 107)].into(),
                false,
            ),
            (
                "a message it added was expunged by someone else",
                state(22, 106, 9),
                [(3, 104)].into(),
                false,
            ),
            (
                "someone else expunged one of the base's messages",
                state(22, 107, 9),
                ok.clone(),
                false,
            ),
            (
                "UIDVALIDITY changed",
                MailboxState {
                    uidvalidity: 8,
                    ..now
                },
                ok.clone(),
                false,
            ),
            (
                "a message it added and kept is missing",
                state(20, 100, 10),
                HashMap::new(),
                false,
            ),
            (
                "STATUS older than the base",
                state(22, 99, 10),
                ok.clone(),
                false,
            ),
        ];
        for (why, now, changed, want) in cases {
            assert_eq!(own().explain(&now, &changed), want, "{why}");
        }
    }

    #[test]
    fn a_status_may_show_its_own_changes_only_when_nothing_else_shows() {
        // Its own changes: UIDNEXT 22 (it added 20 and 21), 10 messages (+20, -5), any modseq.
        let cases: [(&str, MailboxState, bool); 8] = [
            ("its own changes", state(22, 106, 10), true),
            (
                "its own, and a flag someone else changed",
                state(22, 140, 10),
                true,
            ),
            ("a message it did not add", state(23, 107, 11), false),
            (
                "a message it did not add, one of its own expunged",
                state(23, 107, 10),
                false,
            ),
            (
                "someone else expunged one of the base's",
                state(22, 107, 9),
                false,
            ),
            (
                "the message it added and kept not there",
                state(20, 105, 9),
                false,
            ),
            ("older than the base", state(22, 99, 10), false),
            (
                "UIDVALIDITY changed",
                MailboxState {
                    uidvalidity: 8,
                    ..state(22, 106, 10)
                },
                false,
            ),
        ];
        for (why, now, want) in cases {
            assert_eq!(own().may_explain(&now), want, "{why}");
        }
        let none = OwnChanges::since(1, state(20, 100, 10)).unwrap();
        assert!(none.may_explain(&state(20, 100, 10)), "unchanged");
        assert!(!none.may_explain(&state(21, 101, 11)), "new mail");
    }

    #[test]
    fn with_no_changes_of_its_own_nothing_is_explained_but_the_base() {
        let own = OwnChanges::since(1, state(20, 100, 10)).unwrap();
        assert!(own.explain(&state(20, 100, 10), &HashMap::new()));
        assert!(!own.explain(&state(20, 101, 10), &[(4, 101)].into()));
        assert!(
            OwnChanges::since(1, state(20, 0, 10)).is_none(),
            "no CONDSTORE"
        );
    }

    #[test]
    fn a_stores_condition_is_what_is_known_of_the_message() {
        let own = own();
        assert_eq!(own.known_modseq(3), 104);
        assert_eq!(own.known_modseq(4), 100);
        assert_eq!(own.known_modseq(20), i64::MAX as u64, "added: any modseq");
    }
}
