//! One account's migration state, shared by all of the user's sessions: OLD↔NEW folder names, a
//! small pool of engine connection pairs, each folder's backfill (one owner, the others wait on
//! it), live pickup for the folders sessions have selected, and the worker that drains the journal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, watch};
use tracing::{Instrument, debug, info, warn};

use super::mirror;
use super::write::Write;
use crate::imap::{Client, ImapError, Side};
use crate::mapping;
use crate::store::{AccountId, AccountState, Phase, Store};
use crate::sync::{self, Endpoint, Options, Quiet, SyncError};

/// How often the worker looks at selected folders (live pickup) and at the journal.
const LIVE_POLL: Duration = Duration::from_secs(2);
/// A folder checked this recently is not checked again for a SELECT.
const FRESH: Duration = Duration::from_secs(1);
/// Connection pairs per account (backfills and the mirror).
const CONNECTIONS: usize = 2;
/// Pooled connections older than this are dropped rather than reused.
const IDLE_MAX: Duration = Duration::from_secs(60);
/// Longest a login waits for OLD's folder tree to be created on NEW (LIST and CREATEs: cheap,
/// unless OLD does not answer).
const PREPARE_WAIT: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A logged-in pair of engine connections.
pub(crate) struct Conn {
    pub old: Client,
    pub new: Client,
}

/// OLD and NEW names of the account's folders (NEW → OLD), and each side's namespace.
#[derive(Default)]
struct Names {
    prepared: bool,
    new_to_old: BTreeMap<String, String>,
    sides: Option<(mapping::Side, mapping::Side)>,
}

/// One NEW folder's coordination state.
#[derive(Default)]
pub(crate) struct Folder {
    /// Held by whoever works on the pair (a backfill or the mirror).
    pub lock: Mutex<()>,
    /// The backfill in progress, if any: waiters watch it turn true.
    running: StdMutex<Option<watch::Receiver<bool>>>,
    checked: StdMutex<Option<Instant>>,
    watchers: AtomicUsize,
}

impl Folder {
    fn fresh(&self) -> bool {
        self.checked
            .lock()
            .ok()
            .and_then(|c| *c)
            .is_some_and(|t| t.elapsed() < FRESH)
    }
}

/// Keeps a folder under live pickup while a session has it selected.
pub struct Watch(Arc<Folder>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a session of the account while it lives.
pub struct Presence(Arc<Account>);

impl Drop for Presence {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

pub struct Account {
    pub(crate) id: AccountId,
    pub(crate) store: Arc<dyn Store>,
    opts: Options,
    endpoints: StdMutex<(Endpoint, Endpoint)>,
    names: StdMutex<Names>,
    folders: DashMap<String, Arc<Folder>>,
    idle: StdMutex<Vec<(Conn, Instant)>>,
    permits: Arc<Semaphore>,
    prepare_lock: Mutex<()>,
    mirror_lock: Mutex<()>,
    wake: Notify,
    sessions: AtomicUsize,
    worker: AtomicBool,
    backoff: StdMutex<Backoff>,
    stop: watch::Receiver<bool>,
}

impl Account {
    pub(crate) fn new(
        id: AccountId,
        store: Arc<dyn Store>,
        old: Endpoint,
        new: Endpoint,
        opts: Options,
        stop: watch::Receiver<bool>,
    ) -> Account {
        Account {
            id,
            store,
            opts,
            endpoints: StdMutex::new((old, new)),
            names: StdMutex::new(Names::default()),
            folders: DashMap::new(),
            idle: StdMutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(CONNECTIONS)),
            prepare_lock: Mutex::new(()),
            mirror_lock: Mutex::new(()),
            wake: Notify::new(),
            sessions: AtomicUsize::new(0),
            worker: AtomicBool::new(false),
            backoff: StdMutex::new(Backoff {
                until: None,
                delay: BACKOFF_FIRST,
            }),
            stop,
        }
    }

    /// The latest credentials (a user may change their password during the migration).
    pub(crate) fn set_endpoints(&self, old: Endpoint, new: Endpoint) {
        if let Ok(mut e) = self.endpoints.lock() {
            *e = (old, new);
        }
    }

    /// A new session of this account: the journal drains, OLD's tree is created on NEW (the
    /// login waits for it, at most [`PREPARE_WAIT`]), and INBOX's backfill starts.
    pub(crate) async fn start(self: &Arc<Self>) {
        if let Ok(mut b) = self.backoff.lock() {
            b.until = None; // a login is a good moment to try OLD again
        }
        let me = Arc::clone(self);
        let prepared = tokio::spawn(
            async move {
                me.prepare().await;
                me.spawn_worker();
                let _ = me.backfill("INBOX");
            }
            .in_current_span(),
        );
        let _ = tokio::time::timeout(PREPARE_WAIT, prepared).await;
    }

    /// Counts a session until the returned value is dropped.
    pub fn enter(self: &Arc<Self>) -> Presence {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        self.spawn_worker();
        Presence(Arc::clone(self))
    }

    /// Keeps `folder` (a NEW name) under live pickup until the returned value is dropped.
    pub fn watch(self: &Arc<Self>, folder: &str) -> Watch {
        let f = self.folder(folder);
        f.watchers.fetch_add(1, Ordering::SeqCst);
        Watch(f)
    }

    /// Brings `folder` (a NEW name) up to date from OLD, waiting at most `wait`; the backfill
    /// goes on in the background after that. Folders OLD does not have return at once.
    pub async fn ensure(self: &Arc<Self>, folder: &str, wait: Duration) {
        if let Some(mut done) = self.backfill(folder) {
            let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        }
    }

    /// Records a write NEW accepted; it is committed before this returns, then mirrored.
    pub async fn record(&self, write: Write) {
        // Names follow NEW at once, so nothing re-creates a renamed or deleted folder meanwhile.
        match &write {
            Write::Rename { from, to } => self.rename_names(from, to),
            Write::Delete { folder } => {
                if let Ok(mut n) = self.names.lock() {
                    n.new_to_old.remove(folder);
                }
            }
            _ => {}
        }
        match self
            .store
            .journal_append(self.id, write.kind(), &write.to_json())
            .await
        {
            Ok(id) => debug!(id, kind = write.kind(), "journaled"),
            Err(e) => warn!("{e}: {} not journaled, OLD will miss it", write.kind()),
        }
        self.wake.notify_one();
    }

    pub(crate) fn folder(&self, name: &str) -> Arc<Folder> {
        Arc::clone(self.folders.entry(name.to_string()).or_default().value())
    }

    pub(crate) fn old_name(&self, new: &str) -> Option<String> {
        self.names.lock().ok()?.new_to_old.get(new).cloned()
    }

    /// The OLD name for a folder created on NEW: NEW's prefix and separator swapped for OLD's.
    pub(crate) fn reverse_name(&self, new: &str) -> Option<String> {
        let names = self.names.lock().ok()?;
        let (old_side, new_side) = names.sides.as_ref()?;
        Some(mapping::map_name(new, new_side, old_side))
    }

    /// (OLD, NEW) hierarchy separators, once the tree is mapped.
    pub(crate) fn separators(&self) -> Option<(char, char)> {
        let names = self.names.lock().ok()?;
        let (old, new) = names.sides.as_ref()?;
        Some((old.sep, new.sep))
    }

    pub(crate) fn add_name(&self, new: &str, old: &str) {
        if let Ok(mut n) = self.names.lock() {
            n.new_to_old.insert(new.to_string(), old.to_string());
        }
    }

    /// `from` and the folders below it now live under `to` on NEW.
    fn rename_names(&self, from: &str, to: &str) {
        let Ok(mut n) = self.names.lock() else { return };
        let sep = n.sides.as_ref().map_or('/', |(_, new)| new.sep);
        let under: Vec<String> = n
            .new_to_old
            .keys()
            .filter(|new| {
                new.strip_prefix(from)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(sep))
            })
            .cloned()
            .collect();
        let moved: Vec<(String, String)> = under
            .into_iter()
            .filter_map(|new| {
                let old = n.new_to_old.remove(&new)?;
                Some((format!("{to}{}", &new[from.len()..]), old))
            })
            .collect();
        n.new_to_old.extend(moved);
    }

    fn backing_off(&self) -> bool {
        self.backoff
            .lock()
            .ok()
            .and_then(|b| b.until)
            .is_some_and(|t| Instant::now() < t)
    }

    /// A pair of logged-in connections (pooled), with the permit that bounds them.
    pub(crate) async fn conn(&self) -> Result<(Conn, OwnedSemaphorePermit), SyncError> {
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

    pub(crate) fn put(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((conn, Instant::now()));
        }
    }

    /// OLD (or NEW) failed: back off before the next attempt; bad OLD credentials fail the account.
    pub(crate) async fn failed(&self, e: &SyncError) {
        warn!("migration: {e}");
        if let Ok(mut b) = self.backoff.lock() {
            b.until = Some(Instant::now() + b.delay);
            b.delay = (b.delay * 2).min(BACKOFF_MAX);
        }
        if let SyncError::Imap(ImapError::Login {
            side: Side::Old, ..
        }) = e
        {
            let reason = e.to_string();
            if let Err(e) = self
                .store
                .set_account_state(self.id, AccountState::Failed, Some(&reason))
                .await
            {
                warn!("{e}");
            }
        }
    }

    fn succeeded(&self) {
        if let Ok(mut b) = self.backoff.lock() {
            b.until = None;
            b.delay = BACKOFF_FIRST;
        }
    }

    /// Maps OLD's tree and creates it on NEW, once per account (again after a failure).
    async fn prepare(&self) {
        let _one = self.prepare_lock.lock().await;
        if self.names.lock().is_ok_and(|n| n.prepared) || self.backing_off() {
            return;
        }
        // Pending writes first: a folder deleted or renamed on NEW must be gone on OLD before
        // OLD's tree is mapped again.
        self.drain_journal().await;
        let result = async {
            let (mut conn, _permit) = self.conn().await?;
            let tree = sync::prepare_tree(&mut conn.old, &mut conn.new, &self.opts, &Quiet).await?;
            self.put(conn);
            Ok::<_, SyncError>(tree)
        }
        .await;
        match result {
            Ok(tree) => {
                info!(folders = tree.pairs.len(), "OLD folder tree mapped on NEW");
                self.succeeded();
                if let Ok(mut n) = self.names.lock() {
                    n.prepared = true;
                    n.new_to_old = tree.pairs.into_iter().map(|(o, n)| (n, o)).collect();
                    n.sides = Some((tree.old_side, tree.new_side));
                }
                let _ = self.store.touch_account(self.id).await;
            }
            Err(e) => self.failed(&e).await,
        }
    }

    /// Starts (or joins) the backfill of a NEW folder; `None` when there is nothing to wait for.
    pub(crate) fn backfill(self: &Arc<Self>, folder: &str) -> Option<watch::Receiver<bool>> {
        let old_name = self.old_name(folder)?;
        if self.backing_off() {
            return None;
        }
        let f = self.folder(folder);
        let rx = {
            let mut running = f.running.lock().ok()?;
            if let Some(rx) = running.as_ref().filter(|rx| !*rx.borrow()) {
                return Some(rx.clone());
            }
            if f.fresh() {
                return None;
            }
            let (tx, rx) = watch::channel(false);
            *running = Some(rx.clone());
            tokio::spawn(
                Arc::clone(self)
                    .run_backfill(Arc::clone(&f), old_name, folder.to_string(), tx)
                    .in_current_span(),
            );
            rx
        };
        Some(rx)
    }

    async fn run_backfill(
        self: Arc<Self>,
        f: Arc<Folder>,
        old_name: String,
        new_name: String,
        done: watch::Sender<bool>,
    ) {
        // The mirror goes first, so OLD already has the user's writes when it is read.
        self.drain_journal().await;
        let result = {
            let _owner = f.lock.lock().await;
            self.sync_folder(&old_name, &new_name).await
        };
        match result {
            Ok(()) => {
                if let Ok(mut c) = f.checked.lock() {
                    *c = Some(Instant::now());
                }
            }
            Err(e) => self.failed(&e).await,
        }
        if let Ok(mut r) = f.running.lock() {
            *r = None;
        }
        let _ = done.send(true);
        self.update_state().await;
    }

    async fn sync_folder(&self, old_name: &str, new_name: &str) -> Result<(), SyncError> {
        let span = tracing::info_span!("backfill", folder = %new_name);
        async {
            let pair = self.store.folder_pair(self.id, old_name, new_name).await?;
            let (mut conn, _permit) = self.conn().await?;
            let report = sync::sync_pair(
                &*self.store,
                &mut conn.old,
                &mut conn.new,
                &pair,
                &self.opts,
                &Quiet,
            )
            .await?;
            self.put(conn);
            self.succeeded();
            for e in &report.errors {
                warn!("{e}");
            }
            if report.stats.messages_transferred > 0 {
                info!(copied = report.stats.messages_transferred, "backfilled");
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Mirrors every pending journal entry to OLD, in order. A lost connection stops it (the
    /// entry stays pending); an entry OLD refuses is logged and skipped.
    pub(crate) async fn drain_journal(&self) {
        if self.backing_off() {
            return;
        }
        let _one = self.mirror_lock.lock().await;
        loop {
            let entries = match self.store.journal_pending(self.id, 64).await {
                Ok(e) if e.is_empty() => return,
                Ok(e) => e,
                Err(e) => return warn!("{e}"),
            };
            let (mut conn, _permit) = match self.conn().await {
                Ok(c) => c,
                Err(e) => return self.failed(&e).await,
            };
            for entry in entries {
                match mirror::apply(self, &mut conn, &entry).await {
                    Ok(()) => debug!(id = entry.id, kind = %entry.kind, "mirrored to OLD"),
                    Err(SyncError::Imap(e)) if e.is_fatal() => {
                        return self.failed(&SyncError::Imap(e)).await;
                    }
                    Err(SyncError::Store(e)) => return warn!("{e}"),
                    Err(e) => warn!(
                        id = entry.id,
                        kind = %entry.kind,
                        "journal entry not mirrored to OLD: {e}"
                    ),
                }
                if let Err(e) = self.store.journal_done(entry.id).await {
                    return warn!("{e}");
                }
            }
            self.put(conn);
        }
    }

    /// pending → partial → synced as folders complete; a failed account recovers here.
    async fn update_state(&self) {
        let mapped: Vec<String> = match self.names.lock() {
            Ok(n) if n.prepared => n.new_to_old.values().cloned().collect(),
            _ => return,
        };
        let (Ok(pairs), Ok(pending), Ok(current)) = (
            self.store.folder_pairs(self.id).await,
            self.store.journal_pending_count(self.id).await,
            self.store.account_state(self.id).await,
        ) else {
            return;
        };
        let synced = mapped.iter().all(|old| {
            pairs
                .iter()
                .any(|p| &p.old_name == old && p.phase == Phase::Synced)
        });
        let state = if synced && pending == 0 {
            AccountState::Synced
        } else if pairs.iter().any(|p| p.phase != Phase::New) {
            AccountState::Partial
        } else {
            AccountState::Pending
        };
        if current != state && current != AccountState::Retired {
            let _ = self.store.set_account_state(self.id, state, None).await;
        }
        let _ = self.store.touch_account(self.id).await;
    }

    fn spawn_worker(self: &Arc<Self>) {
        if !self.worker.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).worker_loop().in_current_span());
        }
    }

    /// While sessions are open or the journal is not empty: drain the journal and check the
    /// selected folders on OLD (live pickup), every [`LIVE_POLL`] or when woken.
    async fn worker_loop(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(LIVE_POLL) => {}
                () = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.drain_journal().await;
            let watched: Vec<String> = self
                .folders
                .iter()
                .filter(|e| e.value().watchers.load(Ordering::SeqCst) > 0)
                .map(|e| e.key().clone())
                .collect();
            for name in watched {
                let _ = self.backfill(&name);
            }
            let pending = self.store.journal_pending_count(self.id).await.unwrap_or(0);
            if self.sessions.load(Ordering::SeqCst) == 0 && pending == 0 {
                break;
            }
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        self.worker.store(false, Ordering::SeqCst);
        // A session that arrived while the loop was ending found the flag still set.
        if self.sessions.load(Ordering::SeqCst) > 0 && !*self.stop.borrow() {
            self.spawn_worker();
        }
    }
}
