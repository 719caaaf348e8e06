//! An account's engine connections: at most [`CONNECTIONS`] logged-in OLD+NEW pairs, each held
//! with a permit and reused for a while, logged in with the account's latest credentials.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::imap::{Client, Side};
use crate::sync::{self, Endpoint, SyncError};

/// Connection pairs per account (backfills and the mirror).
pub(crate) const CONNECTIONS: usize = 2;
/// Pooled connections older than this are dropped rather than reused.
const IDLE_MAX: Duration = Duration::from_secs(60);

/// A logged-in pair of engine connections.
pub(crate) struct Conn {
    pub old: Client,
    pub new: Client,
}

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
        if let Ok(mut e) = self.endpoints.lock() {
            *e = (old, new);
        }
    }

    /// A pair of logged-in connections, with the permit that bounds them.
    pub async fn get(&self) -> Result<(Conn, OwnedSemaphorePermit), SyncError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Options("connection pool closed".into()))?;
        let pooled = self.idle.lock().ok().and_then(|mut idle| {
            idle.retain(|(_, since)| since.elapsed() < IDLE_MAX);
            idle.pop()
        });
        if let Some((conn, _)) = pooled {
            return Ok((conn, permit));
        }
        let (old_ep, new_ep) = match self.endpoints.lock() {
            Ok(e) => e.clone(),
            Err(_) => return Err(SyncError::Options("endpoints unavailable".into())),
        };
        let (old, new) = tokio::try_join!(
            sync::login(&old_ep, Side::Old),
            sync::login(&new_ep, Side::New)
        )?;
        Ok((Conn { old, new }, permit))
    }

    /// Gives a pair back for reuse (only pairs that are in a known state).
    pub fn put(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((conn, Instant::now()));
        }
    }

    /// Drops the idle pairs (their logins end).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
