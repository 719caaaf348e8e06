//! Work that one process of a fleet does at a time (a folder's backfill or mirror, an account's
//! journal drain or sweep): a lease row in the shared store, renewed while the work runs and given
//! up when it ends; a holder that dies loses it when it expires. On a store that one process owns
//! (SQLite) every lease is granted at once, without a store write.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::store::{Store, StoreError};

/// How long a lease lasts without renewal: how long the fleet waits for a dead holder's work.
pub(crate) const TTL: Duration = Duration::from_secs(15);
/// The holder renews this often, so a renewal can fail twice before the lease lapses.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a process waiting for a lease asks again.
const POLL: Duration = Duration::from_millis(200);

/// A lease this process holds; dropping it gives it up.
pub(crate) struct Lease {
    held: Option<Held>,
}

struct Held {
    store: Arc<dyn Store>,
    name: String,
    renewer: JoinHandle<()>,
}

impl Lease {
    /// Takes `name` if it is free (or expired, or already ours); `None` when another process
    /// holds it.
    pub(crate) async fn try_take(
        store: &Arc<dyn Store>,
        name: String,
    ) -> Result<Option<Lease>, StoreError> {
        if !store.shared() {
            return Ok(Some(Lease { held: None }));
        }
        let now = unix_millis();
        if !store
            .take_lease(&name, holder(), now, now + millis(TTL))
            .await?
        {
            return Ok(None);
        }
        let renewer = tokio::spawn(renew(Arc::clone(store), name.clone()));
        debug!(lease = %name, "lease taken");
        Ok(Some(Lease {
            held: Some(Held {
                store: Arc::clone(store),
                name,
                renewer,
            }),
        }))
    }

    /// Takes `name`, waiting up to `wait` while another process holds it; `None` if it still does.
    pub(crate) async fn take_within(
        store: &Arc<dyn Store>,
        name: String,
        wait: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lease) = Self::try_take(store, name.clone()).await? {
                return Ok(Some(lease));
            }
            if tokio::time::Instant::now() + POLL > until {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        held.renewer.abort();
        // Released in the background; if that fails, the lease expires by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = held.store.release_lease(&held.name, holder()).await {
                    warn!(lease = %held.name, "lease not released (it expires in {TTL:?}): {e}");
                }
            });
        }
    }
}

/// Renews the lease every [`RENEW_EVERY`] until aborted; says so when it has been lost (another
/// process may then do the same work: the links make a second copy of a message unlikely, the
/// log says why if one is made).
async fn renew(store: Arc<dyn Store>, name: String) {
    let mut renewed = unix_millis();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let now = unix_millis();
        match store
            .take_lease(&name, holder(), now, now + millis(TTL))
            .await
        {
            Ok(true) => renewed = now,
            Ok(false) => return warn!(lease = %name, "lease taken over by another process"),
            Err(e) if now - renewed > millis(TTL) => {
                warn!(lease = %name, "lease lapsed, not renewed for {TTL:?}: {e}");
            }
            Err(e) => warn!(lease = %name, "lease not renewed: {e}"),
        }
    }
}

/// The lease that says a process is alive, renewed for as long as it runs (see [`keep_alive`]).
fn process_lease(holder: &str) -> String {
    format!("process:{holder}")
}

/// Whether `other` (a holder) is alive: its process lease is unexpired.
pub(crate) async fn alive(store: &Arc<dyn Store>, other: &str) -> Result<bool, StoreError> {
    store.lease_held(&process_lease(other), unix_millis()).await
}

/// Says this process is alive, in a shared store, until the returned lease is dropped.
pub(crate) async fn keep_alive(store: &Arc<dyn Store>) -> Result<Option<Lease>, StoreError> {
    Lease::try_take(store, process_lease(holder())).await
}

/// This process as a lease holder: unique in the fleet and across restarts.
pub(crate) fn holder() -> &'static str {
    static HOLDER: OnceLock<String> = OnceLock::new();
    HOLDER.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!("{host}:{}:{}", std::process::id(), unix_millis())
    })
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
