//! What the migration holds open right now, all accounts together, for `/metrics`: the engine's
//! logged-in OLD and NEW connections (pooled pairs, idle or in use, and live pickup's own OLD
//! connections) and the accounts whose live pickup IDLEs on OLD or polls it; the journal's
//! entries and commits so far and how long writes waited for them, the backfills (folder
//! checks) started, and the state store's operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::histogram::{Counts, Histogram, INF};
use crate::imap::Side;
use crate::store::Operations;

/// Upper bounds (seconds) of [`JournalWait`]'s buckets: a commit to a local disk takes a
/// fraction of a millisecond, one to PostgreSQL across a network a few.
const JOURNAL_WAIT_BOUNDS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, INF,
];

/// How long users' writes waited for their journal commit, so far.
pub type JournalWait = Counts<13>;

/// Gauges shared by every account of one proxy process.
#[derive(Debug)]
pub struct Gauges {
    old: AtomicU64,
    new: AtomicU64,
    idling: AtomicU64,
    polling: AtomicU64,
    journaled: AtomicU64,
    commits: AtomicU64,
    backfills: AtomicU64,
    journal_wait: Histogram<13>,
}

impl Default for Gauges {
    fn default() -> Self {
        Gauges {
            old: AtomicU64::new(0),
            new: AtomicU64::new(0),
            idling: AtomicU64::new(0),
            polling: AtomicU64::new(0),
            journaled: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            backfills: AtomicU64::new(0),
            journal_wait: Histogram::new(JOURNAL_WAIT_BOUNDS),
        }
    }
}

/// How an account's live pickup asks OLD for new mail right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asking {
    Idle,
    Poll,
}

/// A snapshot of [`Gauges`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Engine connections to OLD.
    pub old: u64,
    /// Engine connections to NEW (the sessions' own connections are not counted here).
    pub new: u64,
    /// Accounts whose live pickup IDLEs on OLD.
    pub idling: u64,
    /// Accounts whose live pickup polls OLD.
    pub polling: u64,
    /// Journal entries committed since the start, and the commits that held them (a group
    /// commit holds the entries of several sessions).
    pub journaled: u64,
    pub commits: u64,
    /// Backfills started since the start: a folder's first fill, or a check of what OLD got
    /// since (asked for by a command, live pickup or the sweeper).
    pub backfills: u64,
    /// `[migration] mirror_paused` is in force (set by the migrator, not counted here).
    pub mirror_paused: bool,
    /// The state store's reads and write transactions so far (the store counts them).
    pub store: Operations,
}

impl Gauges {
    pub fn snapshot(&self) -> Held {
        Held {
            old: self.old.load(Relaxed),
            new: self.new.load(Relaxed),
            idling: self.idling.load(Relaxed),
            polling: self.polling.load(Relaxed),
            journaled: self.journaled.load(Relaxed),
            commits: self.commits.load(Relaxed),
            backfills: self.backfills.load(Relaxed),
            mirror_paused: false,
            store: Operations::default(),
        }
    }

    /// One commit of `entries` journal entries.
    pub(crate) fn committed(&self, entries: usize) {
        self.commits.fetch_add(1, Relaxed);
        self.journaled.fetch_add(entries as u64, Relaxed);
    }

    /// A user's write waited `took` for its journal commit (however the commit ended).
    pub(crate) fn journal_wait(&self, took: Duration) {
        self.journal_wait.observe(took);
    }

    /// How long users' writes waited for their journal commits so far.
    pub fn journal_waits(&self) -> JournalWait {
        self.journal_wait.counts()
    }

    /// One backfill started.
    pub(crate) fn backfill(&self) {
        self.backfills.fetch_add(1, Relaxed);
    }

    fn counter(&self, side: Side) -> &AtomicU64 {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// Counts one logged-in connection to `side` until the returned guard drops.
    pub(crate) fn connection(self: &Arc<Self>, side: Side) -> Counted {
        self.counter(side).fetch_add(1, Relaxed);
        Counted {
            gauges: Arc::clone(self),
            what: What::Connection(side),
        }
    }

    /// Counts one account's live pickup as `asking` until the returned guard drops.
    pub(crate) fn pickup(self: &Arc<Self>, asking: Asking) -> Counted {
        self.pickup_counter(asking).fetch_add(1, Relaxed);
        Counted {
            gauges: Arc::clone(self),
            what: What::Pickup(asking),
        }
    }

    fn pickup_counter(&self, asking: Asking) -> &AtomicU64 {
        match asking {
            Asking::Idle => &self.idling,
            Asking::Poll => &self.polling,
        }
    }
}

#[derive(Debug)]
enum What {
    Connection(Side),
    Pickup(Asking),
}

/// Keeps one thing counted in [`Gauges`].
#[derive(Debug)]
pub(crate) struct Counted {
    gauges: Arc<Gauges>,
    what: What,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = match self.what {
            What::Connection(side) => self.gauges.counter(side),
            What::Pickup(asking) => self.gauges.pickup_counter(asking),
        };
        counter.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_while_held() {
        let g = Arc::new(Gauges::default());
        let old = g.connection(Side::Old);
        let news = [g.connection(Side::New), g.connection(Side::New)];
        let idle = g.pickup(Asking::Idle);
        assert_eq!(
            g.snapshot(),
            Held {
                old: 1,
                new: 2,
                idling: 1,
                polling: 0,
                ..Held::default()
            }
        );
        drop((old, news, idle));
        assert_eq!(g.snapshot(), Held::default());
    }
}
