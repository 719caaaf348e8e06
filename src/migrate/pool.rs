//! An account's engine connections: at most [`CONNECTIONS`] logged-in OLD+NEW pairs, each held
//! with a permit and reused while it is fresh, logged in with the account's latest credentials.
//! A pair left unused for `[migration] idle_connections_secs` is logged out by a reaper task that
//! runs only while pairs wait. Live pickup's own OLD connection is logged in here too, and kept
//! as long when its loop ends (a user logging in again soon finds it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug};

use super::gauges::{Counted, Gauges};
use crate::imap::{Client, Side};
use crate::lock::recover;
use crate::sync::{self, Endpoint, SyncError};

/// Connection pairs per account (backfills and the mirror).
pub(crate) const CONNECTIONS: usize = 2;
/// Longest a LOGOUT of an idle connection may take before it is simply closed.
const LOGOUT_WAIT: Duration = Duration::from_secs(5);
const ENDPOINTS: &str = "the account's credentials";
const IDLE: &str = "the account's idle connections";

/// A logged-in pair of engine connections.
pub(crate) struct Conn {
    pub old: Client,
    pub new: Client,
    /// Counts both in the gauges while the pair lives.
    _counted: Option<(Counted, Counted)>,
}

impl Conn {
    /// A pair not counted in any gauge (tests).
    #[cfg(test)]
    pub fn uncounted(old: Client, new: Client) -> Conn {
        Conn {
            old,
            new,
            _counted: None,
        }
    }

    async fn logout(self) {
        let Conn { old, new, _counted } = self;
        let both = async { tokio::join!(old.logout(), new.logout()) };
        let _ = tokio::time::timeout(LOGOUT_WAIT, both).await;
    }
}

/// A logged-in OLD connection of its own (live pickup), counted while it lives.
pub(crate) struct OldConn {
    pub client: Client,
    _counted: Counted,
}

impl OldConn {
    pub async fn logout(self) {
        let _ = tokio::time::timeout(LOGOUT_WAIT, self.client.logout()).await;
    }
}

/// Pairs given back and waiting for reuse, with when each was given back; likewise live
/// pickup's OLD connection.
#[derive(Default)]
struct Idle {
    conns: StdMutex<Vec<(Conn, Instant)>>,
    old: StdMutex<Option<(OldConn, Instant)>>,
    /// A reaper task is running.
    reaping: AtomicBool,
}

/// Both locks are recovered when poisoned ([`crate::lock::recover`]): each critical section
/// assigns, clones, pushes, pops, drains or clears in one step, so the value is whole, and giving
/// a pair back (`put`, `clear`) has no error to return.
pub(crate) struct Pool {
    endpoints: StdMutex<(Endpoint, Endpoint)>,
    idle: Arc<Idle>,
    permits: Arc<Semaphore>,
    /// `[migration] idle_connections_secs`, as the last reload set it.
    keep: Arc<AtomicU64>,
    gauges: Arc<Gauges>,
    stop: watch::Receiver<bool>,
}

impl Pool {
    pub fn new(
        endpoints: (Endpoint, Endpoint),
        keep: Arc<AtomicU64>,
        gauges: Arc<Gauges>,
        stop: watch::Receiver<bool>,
    ) -> Pool {
        Pool {
            endpoints: StdMutex::new(endpoints),
            idle: Arc::new(Idle::default()),
            permits: Arc::new(Semaphore::new(CONNECTIONS)),
            keep,
            gauges,
            stop,
        }
    }

    /// The latest credentials (a user may change their password during the migration).
    pub fn set_endpoints(&self, old: Endpoint, new: Endpoint) {
        *recover(&self.endpoints, ENDPOINTS) = (old, new);
    }

    /// How long an unused connection is kept (`[migration] idle_connections_secs`).
    pub fn keep(&self) -> Duration {
        keep_of(&self.keep)
    }

    pub fn gauges(&self) -> &Arc<Gauges> {
        &self.gauges
    }

    /// A pair of logged-in connections, with the permit that bounds them.
    pub async fn get(&self) -> Result<(Conn, OwnedSemaphorePermit), SyncError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Options("connection pool closed".into()))?;
        let keep = self.keep();
        let pooled = {
            let mut idle = recover(&self.idle.conns, IDLE);
            idle.retain(|(_, since)| since.elapsed() < keep);
            idle.pop()
        };
        if let Some((conn, _)) = pooled {
            return Ok((conn, permit));
        }
        let (old_ep, new_ep) = recover(&self.endpoints, ENDPOINTS).clone();
        let (old, new) = tokio::try_join!(
            sync::login(&old_ep, Side::Old),
            sync::login(&new_ep, Side::New)
        )?;
        let counted = (
            self.gauges.connection(Side::Old),
            self.gauges.connection(Side::New),
        );
        Ok((
            Conn {
                old,
                new,
                _counted: Some(counted),
            },
            permit,
        ))
    }

    /// A logged-in OLD connection outside the pairs (live pickup's): the one given back within
    /// `[migration] idle_connections_secs`, else a new one.
    pub async fn old(&self) -> Result<OldConn, SyncError> {
        let kept = recover(&self.idle.old, IDLE).take();
        if let Some((conn, since)) = kept.filter(|(_, since)| since.elapsed() < self.keep()) {
            debug!(
                ms = since.elapsed().as_millis(),
                "live pickup's OLD connection reused"
            );
            return Ok(conn);
        }
        let old_ep = recover(&self.endpoints, ENDPOINTS).0.clone();
        let client = sync::login(&old_ep, Side::Old).await?;
        Ok(OldConn {
            client,
            _counted: self.gauges.connection(Side::Old),
        })
    }

    /// Gives a pair back for reuse (only pairs that are in a known state); it is logged out
    /// after `[migration] idle_connections_secs` unless used again before.
    pub fn put(&self, conn: Conn) {
        recover(&self.idle.conns, IDLE).push((conn, Instant::now()));
        self.reap_later();
    }

    /// Gives live pickup's OLD connection back (out of IDLE), like [`Pool::put`].
    pub fn put_old(&self, conn: OldConn) {
        *recover(&self.idle.old, IDLE) = Some((conn, Instant::now()));
        self.reap_later();
    }

    fn reap_later(&self) {
        if !self.idle.reaping.swap(true, Ordering::SeqCst) {
            let reaper = reap(
                Arc::downgrade(&self.idle),
                Arc::clone(&self.keep),
                self.stop.clone(),
            );
            tokio::spawn(reaper.in_current_span());
        }
    }

    /// Drops the idle connections (their logins end).
    pub fn clear(&self) {
        recover(&self.idle.conns, IDLE).clear();
        *recover(&self.idle.old, IDLE) = None;
    }
}

fn keep_of(keep: &AtomicU64) -> Duration {
    Duration::from_secs(keep.load(Ordering::SeqCst))
}

/// Logs out the connections that waited `keep` or longer, sleeping until the next one is due;
/// ends when none waits any more, the pool is gone or the proxy stops. A reload's new `keep` is
/// seen at the next wake-up.
async fn reap(idle: Weak<Idle>, keep: Arc<AtomicU64>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(pool) = idle.upgrade() else {
            return;
        };
        let keep = keep_of(&keep);
        let now = Instant::now();
        let (expired, expired_old, next) = {
            let mut conns = recover(&pool.conns, IDLE);
            let mut old = recover(&pool.old, IDLE);
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *conns)
                .into_iter()
                .partition(|(_, since)| now.duration_since(*since) >= keep);
            *conns = kept;
            let expired_old = old.take_if(|(_, since)| now.duration_since(*since) >= keep);
            let since = conns
                .iter()
                .map(|(_, t)| *t)
                .chain(old.iter().map(|(_, t)| *t));
            let next = since.min().map(|t| t + keep);
            if next.is_none() {
                pool.reaping.store(false, Ordering::SeqCst);
            }
            (expired, expired_old, next)
        };
        if !expired.is_empty() {
            debug!(pairs = expired.len(), "idle engine connections logged out");
        }
        for (conn, _) in expired {
            conn.logout().await;
        }
        if let Some((conn, _)) = expired_old {
            conn.logout().await;
        }
        // `reaping` was cleared while the list was locked: a pair put back since then started
        // a reaper of its own.
        let Some(next) = next else {
            return;
        };
        drop(pool);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::script::{serve, step};
    use crate::secret::Secret;
    use crate::sync::AuthMech;

    /// Live pickup's OLD connection, given back when its loop ends, is what the next one gets
    /// (no second login: the scripted OLD takes one connection), and is logged out once it
    /// waited `keep`.
    #[tokio::test]
    async fn live_pickups_old_connection_waits_for_the_next_login() {
        let (connect, old) = serve(
            "IMAP4rev1 IDLE",
            vec![
                step("LOGIN", "$tag OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"),
                step("NOOP", "$tag OK\r\n"),
                step("LOGOUT", "* BYE\r\n$tag OK\r\n"),
            ],
        )
        .await;
        let endpoint = Endpoint {
            connect,
            user: "u".into(),
            password: Secret::new("pw"),
            authuser: None,
            auth: AuthMech::Login,
        };
        let (_stop, stop) = watch::channel(false);
        let pool = Pool::new(
            (endpoint.clone(), endpoint),
            Arc::new(AtomicU64::new(1)),
            Arc::new(Gauges::default()),
            stop,
        );
        let first = pool.old().await.unwrap();
        pool.put_old(first);
        let mut again = tokio::time::timeout(Duration::from_secs(2), pool.old())
            .await
            .expect("the kept connection, not a new login")
            .unwrap();
        again.client.noop().await.unwrap();
        pool.put_old(again);
        let seen = tokio::time::timeout(Duration::from_secs(5), old)
            .await
            .expect("logged out after `keep`")
            .unwrap()
            .unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}
