//! An account's engine connections: at most [`CONNECTIONS`] logged-in OLD+NEW pairs, each held
//! with a permit and reused for a while, logged in with the account's latest credentials.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::imap::{Client, Side};
use crate::lock::recover;
use crate::sync::{self, Endpoint, SyncError};

/// Connection pairs per account (backfills and the mirror).
pub(crate) const CONNECTIONS: usize = 2;
/// Pooled connections older than this are dropped rather than reused.
const IDLE_MAX: Duration = Duration::from_secs(60);
const ENDPOINTS: &str = "the account's credentials";
const IDLE: &str = "the account's idle connections";

/// A logged-in pair of engine connections.
pub(crate) struct Conn {
    pub old: Client,
    pub new: Client,
}

/// Both locks are recovered when poisoned ([`crate::lock::recover`]): each critical section
/// assigns, clones, pushes, pops or clears in one step, so the value is whole, and giving a pair
/// back (`put`, `clear`) has no error to return.
pub(crate) struct Pool {
    endpoints: StdMutex<(Endpoint, Endpoint)>,
    idle: StdMutex<Vec<(Conn, Instant)>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    pub fn new(endpoints: (Endpoint, Endpoint)) -> Pool {
        Pool {
            endpoints: StdMutex::new(endpoints),
            idle: StdMutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(CONNECTIONS)),
        }
    }

    /// The latest credentials (a user may change their password during the migration).
    pub fn set_endpoints(&self, old: Endpoint, new: Endpoint) {
        *recover(&self.endpoints, ENDPOINTS) = (old, new);
    }

    /// A pair of logged-in connections, with the permit that bounds them.
    pub async fn get(&self) -> Result<(Conn, OwnedSemaphorePermit), SyncError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Options("connection pool closed".into()))?;
        let pooled = {
            let mut idle = recover(&self.idle, IDLE);
            idle.retain(|(_, since)| since.elapsed() < IDLE_MAX);
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
        Ok((Conn { old, new }, permit))
    }

    /// Gives a pair back for reuse (only pairs that are in a known state).
    pub fn put(&self, conn: Conn) {
        recover(&self.idle, IDLE).push((conn, Instant::now()));
    }

    /// Drops the idle pairs (their logins end).
    pub fn clear(&self) {
        recover(&self.idle, IDLE).clear();
    }
}
