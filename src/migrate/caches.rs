//! Client caches (`[migration] keep_client_caches`): which numbers each folder of an account
//! shows its clients. A folder's UID map is decided by its first completed backfill (or read
//! from the store, where another proxy may have decided it), and never changes after; until
//! then the folder is not shown. Every session of the account reads the maps from here; a
//! retired account's sessions get its stored maps alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::account::Account;
use super::journal::{Entry, Write};
use super::names::renamed;
use crate::lock;
use crate::store::{AccountId, Store, StoreError};
use crate::uidmap::{Shown, UidMap};

/// The account's decided folders. `None` in `decided`: the folder shows NEW's numbers.
#[derive(Default)]
pub struct ClientCaches {
    on: bool,
    decided: StdMutex<HashMap<String, Option<Arc<UidMap>>>>,
    /// Counts decisions, so a waiting SELECT wakes when one is made.
    made: watch::Sender<u64>,
    loaded: tokio::sync::OnceCell<()>,
}

/// Folder names as the maps are keyed: INBOX in any case is INBOX.
fn key(folder: &str) -> String {
    if folder.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        folder.to_string()
    }
}

impl ClientCaches {
    pub(crate) fn new(on: bool) -> ClientCaches {
        ClientCaches {
            on,
            ..ClientCaches::default()
        }
    }

    fn decided(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<UidMap>>>> {
        lock::recover(&self.decided, "the account's UID maps")
    }

    /// The decision for `folder`: `None` while there is none.
    fn decision(&self, folder: &str) -> Option<Option<Arc<UidMap>>> {
        self.decided().get(&key(folder)).cloned()
    }

    /// The stored maps of `account` (a retired one's: nothing decides more).
    pub(crate) async fn stored(
        store: &dyn Store,
        account: AccountId,
    ) -> Result<ClientCaches, StoreError> {
        let caches = ClientCaches::new(true);
        for (folder, map) in store.uid_maps(account).await? {
            caches.decide(&folder, map);
        }
        Ok(caches)
    }

    /// The map `folder` (a NEW name) shows its clients, if it keeps their caches.
    pub fn uid_map(&self, folder: &str) -> Option<Arc<UidMap>> {
        self.decision(folder).flatten()
    }

    /// `folder` shows what `before` shows (it is `before`, renamed), unless it has a decision.
    fn follow_rename(&self, folder: &str, before: &str) -> bool {
        let Some(decision) = self.decision(before) else {
            return false;
        };
        self.decided().entry(key(folder)).or_insert(decision);
        self.made.send_modify(|n| *n += 1);
        true
    }

    /// Records a folder's decision (the store keeps the first one).
    pub(crate) fn decide(&self, folder: &str, shown: Shown) {
        let map = match shown {
            Shown::Old(map) => Some(Arc::new(map)),
            Shown::New => None,
        };
        let kept = map.is_some();
        let new = self.decided().insert(key(folder), map).is_none();
        if new {
            info!(folder, kept, "client caches decided");
            self.made.send_modify(|n| *n += 1);
        }
    }
}

impl Account {
    /// The account's maps, when its folders keep client caches.
    pub fn client_caches(&self) -> Option<Arc<ClientCaches>> {
        self.caches.on.then(|| Arc::clone(&self.caches))
    }

    /// The map of `folder` (a NEW name), if it keeps client caches.
    pub(super) fn uid_map_of(&self, folder: &str) -> Option<Arc<UidMap>> {
        self.caches.uid_map(folder)
    }

    /// Whether a pass over `folder` should decide its map.
    pub(super) fn wants_uid_map(&self, folder: &str) -> bool {
        self.caches.on && self.caches.decision(folder).is_none()
    }

    /// Reads the maps other passes (or proxies) stored, once per account.
    pub(super) async fn load_uid_maps(&self) {
        if !self.caches.on {
            return;
        }
        let loaded = self
            .caches
            .loaded
            .get_or_try_init(|| self.read_uid_maps())
            .await;
        if let Err(e) = loaded {
            // Each folder's next pass reads its own map from the store.
            warn!("UID maps not loaded: {e}");
        }
    }

    /// Takes in the stored decisions (a rename mirrored to OLD renamed its folder's pair), then
    /// follows the RENAMEs still in the journal back to the name `folder` had.
    async fn follow_renames(&self, folder: &str) -> Result<(), StoreError> {
        self.read_uid_maps().await?;
        if self.caches.decision(folder).is_some() {
            return Ok(());
        }
        let sep = self.separators().map_or('/', |(_, new)| new);
        // The RENAMEs alone: the flag changes a paused mirror lets pile up are not read.
        let renames = self
            .store
            .journal_pending_after(self.id, 0, &["rename"])
            .await?;
        let mut name = folder.to_string();
        for entry in renames.iter().rev() {
            if let Ok(Entry {
                write: Write::Rename { from, to },
                ..
            }) = Entry::from_json(&entry.payload)
                && let Some(before) = renamed(&name, &to, &from, sep)
            {
                name = before;
            }
        }
        if name != folder && self.caches.follow_rename(folder, &name) {
            info!(folder, before = %name, "client caches follow a rename not yet on OLD");
        }
        Ok(())
    }

    /// Takes in every decision stored for the account's folders, under their names now.
    async fn read_uid_maps(&self) -> Result<(), StoreError> {
        for (folder, map) in self.store.uid_maps(self.id).await? {
            self.caches.decide(&folder, map);
        }
        Ok(())
    }

    /// Whether `folder` (a NEW name) may be shown to a client now: its map is decided, or it
    /// keeps no cache (not from OLD, or the feature is off).
    pub fn shows_now(&self, folder: &str) -> bool {
        !self.caches.on
            || self.caches.decision(folder).is_some()
            || !matches!(self.old_name(folder), Ok(Some(_)))
    }

    /// Waits up to `wait` until `folder` (a NEW name) may be shown to a client: its map is
    /// decided, or it keeps no cache (not from OLD, or the feature is off). Backfills it
    /// meanwhile. `false`: not yet (the client is told to try again).
    pub async fn ready_to_show(self: &Arc<Self>, folder: &str, wait: Duration) -> bool {
        if self.shows_now(folder) {
            if self.caches.on && self.caches.decision(folder).is_none() {
                // Not from OLD as this proxy knows the tree: another proxy of the fleet may
                // have renamed a decided folder to this name.
                if let Err(e) = self.follow_renames(folder).await {
                    warn!(folder, "UID maps not read: {e}");
                }
            }
            return true;
        }
        let mut made = self.caches.made.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.caches.decision(folder).is_some() {
                return true;
            }
            let done = match self.backfill(folder, false) {
                Ok(Some(done)) => Some(done),
                Ok(None) => None,
                Err(e) => {
                    warn!(folder, "not backfilled: {e}");
                    return false;
                }
            };
            let wait_done = async {
                match done {
                    Some(mut d) => {
                        let _ = d.wait_for(|d| *d).await;
                    }
                    // Nothing running (OLD unreachable, the folder's back-off): look again soon.
                    None => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            };
            tokio::select! {
                () = wait_done => {}
                _ = made.changed() => {}
                () = tokio::time::sleep_until(deadline) => return self.caches.decision(folder).is_some(),
            }
        }
    }
}
