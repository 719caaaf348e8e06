//! This process's write-ahead mark on one account: set in the store before a user's write goes to
//! NEW while none is in flight, cleared once every write NEW answered is journaled and a quiet
//! moment passed. A mark of a process that is gone (a `kill -9` between NEW doing a write and the
//! journal's commit), or a session that ends before NEW answered its write, means nobody knows
//! what NEW did: OLD is reconciled with NEW ([`Account::reconcile_soon`]). In a fleet each proxy
//! has its own mark, and one is gone when its `process:` lease has expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::account::Account;
use super::drain::COMMIT_WITHIN;
use super::lease::{self, holder};

/// How long no write may be in flight before the mark is cleared (a busy session sets it once).
const QUIET: Duration = Duration::from_secs(5);

/// The mark's state in this process.
#[derive(Default)]
pub(crate) struct Intents {
    /// Whether the store holds this process's mark (as far as it knows), and the marks of gone
    /// processes it found (cleared with its own once OLD is reconciled); held while marks are set
    /// or cleared, so a write never goes out between a clear's check and its commit.
    marked: Mutex<Marks>,
    /// Writes sent to NEW (or about to be) and not answered yet, all sessions together.
    in_flight: AtomicU64,
    /// The mark a predecessor may have left was looked at.
    checked: AtomicBool,
    /// A clear is scheduled.
    clearing: AtomicBool,
}

#[derive(Default)]
struct Marks {
    own: bool,
    gone: Vec<String>,
}

/// The mark could not be set: the write must not go to NEW.
#[derive(Debug, thiserror::Error)]
#[error("the state store did not record the write-ahead mark: {0}")]
pub struct NotMarked(String);

impl Account {
    /// Before a user's write goes to NEW: the mark is in the store when this returns `Ok`. The
    /// write counts as in flight either way; [`Self::intent_over`] ends it.
    pub async fn intend(&self) -> Result<(), NotMarked> {
        self.intents.in_flight.fetch_add(1, Ordering::SeqCst);
        self.alone.begin();
        let mut marked = self.intents.marked.lock().await;
        if marked.own {
            return Ok(());
        }
        let mark = self.store.mark_writes_in_flight(self.id, holder(), true);
        match tokio::time::timeout(COMMIT_WITHIN, mark).await {
            Ok(Ok(())) => {
                marked.own = true;
                Ok(())
            }
            Ok(Err(e)) => Err(NotMarked(e.to_string())),
            Err(_) => Err(NotMarked("timed out".into())),
        }
    }

    /// NEW answered a write of [`Self::intend`] and it is journaled if accepted (`answered`), or
    /// the session ended first: NEW may have done it unjournaled, so OLD is reconciled.
    pub fn intent_over(self: &Arc<Self>, answered: bool) {
        if !answered {
            self.reconcile_soon("a session ended before NEW answered a write".into());
        }
        self.alone.over();
        if self.intents.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.clear_mark_later();
        }
    }

    /// Some write of the user's has gone to NEW and is not journaled yet (NEW may hold a
    /// message the journal does not know of).
    pub(super) fn writes_in_flight(&self) -> bool {
        self.intents.in_flight.load(Ordering::SeqCst) > 0
    }

    /// Waits (at most `within`) until no write is in flight, so every write NEW has answered
    /// so far is journaled. `false`: writes kept coming.
    pub(super) async fn writes_answered(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.intents.in_flight.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Whether some write may be on NEW and not in the journal, and OLD is not reconciled since.
    /// Passes do not copy meanwhile: an OLD message whose link was lost may be one the user
    /// moved on NEW.
    pub(crate) fn unsure(&self) -> bool {
        self.unjournaled.1.load(Ordering::SeqCst) < self.unjournaled.0.load(Ordering::SeqCst)
    }

    /// Waits (at most `within`, and not past the proxy's stop) until OLD is no longer waiting
    /// for a reconcile. `false`: it still is, or the reconcile's last attempt failed (a full
    /// state disk, OLD unreachable: nothing waits for its back-off).
    pub(super) async fn reconciled_within(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.unsure() {
            let stuck = self.recovery_stuck.load(Ordering::SeqCst);
            if stuck || tokio::time::Instant::now() >= until || *self.stop.borrow() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Before a pass or a session: a mark of a process that is gone says it stopped with writes
    /// in flight. With an SQLite store (one process) that is any mark but this process's, looked
    /// at once; in a fleet, one whose holder's `process:` lease expired, looked at every time
    /// (another proxy may die at any moment; one that died less than a lease ago is found by the
    /// next look).
    pub(super) async fn check_mark(self: &Arc<Self>) {
        let shared = self.store.shared();
        if !shared && self.intents.checked.load(Ordering::SeqCst) {
            return;
        }
        // Held until the answer is known: no pass of another caller starts before it.
        let mut marked = self.intents.marked.lock().await;
        if !shared && self.intents.checked.load(Ordering::SeqCst) {
            return;
        }
        let marks = match self.store.writes_in_flight(self.id).await {
            Ok(marks) => marks,
            Err(e) => return warn!("{e}: the write-ahead marks are looked at again later"),
        };
        for (other, since) in marks {
            if other == holder() || marked.gone.contains(&other) {
                continue;
            }
            if shared {
                match lease::alive(&self.store, &other).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => return warn!("{e}: the write-ahead marks are looked at again later"),
                }
            }
            marked.gone.push(other.clone());
            self.reconcile_soon(format!(
                "a proxy ({other}) stopped with writes in flight (marked at {since}): NEW may \
                 have one the journal lacks"
            ));
        }
        self.intents.checked.store(true, Ordering::SeqCst);
    }

    /// Clears the mark after [`QUIET`], if no write is in flight and OLD is not waiting for a
    /// reconcile by then (else the next write over, or the reconcile, schedules it again).
    pub(super) fn clear_mark_later(self: &Arc<Self>) {
        if self.intents.clearing.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = Arc::clone(self);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(QUIET) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            me.intents.clearing.store(false, Ordering::SeqCst);
            let mut marked = me.intents.marked.lock().await;
            let any = marked.own || !marked.gone.is_empty();
            if !any || me.intents.in_flight.load(Ordering::SeqCst) > 0 || me.unsure() {
                return;
            }
            let own = marked.own.then(|| holder().to_owned());
            for mark in own.into_iter().chain(marked.gone.clone()) {
                match me.store.mark_writes_in_flight(me.id, &mark, false).await {
                    Ok(()) if mark == holder() => marked.own = false,
                    Ok(()) => marked.gone.retain(|g| *g != mark),
                    Err(e) => {
                        return debug!(
                            "{e}: the write-ahead mark stays until the next write is over"
                        );
                    }
                }
            }
        });
    }
}
