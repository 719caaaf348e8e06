//! The sweeper's switches and counters, shared with the admin API and `/metrics`: pause and
//! resume, accounts to take next, settings a reload hands over, and what the sweeps have done so
//! far. No I/O.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::Notify;

use crate::lock::recover;
use crate::store::AccountId;

const PRIORITY: &str = "the sweeper's priority queue";
const STATS: &str = "the sweeper's counters";
const SETTINGS: &str = "the sweeper's reloaded settings";

/// What the sweeper has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SweepStats {
    pub paused: bool,
    /// Accounts waiting for a sweep (pending, partial, due for a revisit, prioritised).
    pub queue: u64,
    /// Accounts being swept now.
    pub running: u64,
    pub accounts_swept: u64,
    pub messages_copied: u64,
    pub bytes_copied: u64,
    /// Failed sweeps by kind: `connect`, `login`, `timeout`, `refused`, `store`, `other`.
    pub errors: BTreeMap<String, u64>,
}

/// Shared by the sweeper, the admin API and the metrics.
#[derive(Debug, Default)]
pub struct Control {
    paused: AtomicBool,
    /// This and `stats` are recovered when poisoned ([`crate::lock::recover`]): each critical
    /// section pushes, removes, clones or counts in one step, so the value is whole, and their
    /// callers (getters, the sweep loop, the admin API's switches) have no error to return.
    priority: Mutex<VecDeque<AccountId>>,
    stats: Mutex<SweepStats>,
    /// `[sweep]` from a reload, for the loop to take at its next turn (recovered when poisoned:
    /// set or taken whole).
    settings: Mutex<Option<crate::config::Sweep>>,
    /// Woken on resume and on a new priority.
    pub(crate) wake: Notify,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Sweeps this account next (before pending ones), even if it is synced.
    pub fn prioritise(&self, account: AccountId) {
        {
            let mut p = recover(&self.priority, PRIORITY);
            if !p.contains(&account) {
                p.push_back(account);
            }
        }
        self.wake.notify_waiters();
    }

    /// The next prioritised account not in `busy`.
    pub(crate) fn take_priority(&self, busy: &[AccountId]) -> Option<AccountId> {
        let mut p = recover(&self.priority, PRIORITY);
        let i = p.iter().position(|a| !busy.contains(a))?;
        p.remove(i)
    }

    pub fn stats(&self) -> SweepStats {
        let mut s = recover(&self.stats, STATS).clone();
        s.paused = self.is_paused();
        s
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SweepStats)) {
        f(&mut recover(&self.stats, STATS));
    }

    /// Hands reloaded `[sweep]` settings to the running loop (sweeps in progress finish as they
    /// are; the parallelism, per-host bound, window and revisit apply from the next pick).
    pub fn set_settings(&self, settings: crate::config::Sweep) {
        *recover(&self.settings, SETTINGS) = Some(settings);
        self.wake.notify_waiters();
    }

    /// The settings handed over since the last call, if any.
    pub(crate) fn take_settings(&self) -> Option<crate::config::Sweep> {
        recover(&self.settings, SETTINGS).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_pause_and_stats() {
        let c = Control::new();
        c.prioritise(7);
        c.prioritise(3);
        c.prioritise(7);
        assert_eq!(c.take_priority(&[7]), Some(3));
        assert_eq!(c.take_priority(&[]), Some(7));
        assert_eq!(c.take_priority(&[]), None);
        c.pause();
        assert!(c.stats().paused);
        c.resume();
        c.update(|s| *s.errors.entry("login".into()).or_default() += 1);
        assert_eq!(c.stats().errors["login"], 1);
        assert!(!c.stats().paused);
        assert_eq!(c.take_settings(), None);
        let reloaded = crate::config::Sweep {
            accounts_in_parallel: 9,
            ..Default::default()
        };
        c.set_settings(reloaded.clone());
        assert_eq!(c.take_settings(), Some(reloaded));
        assert_eq!(c.take_settings(), None);
    }
}
