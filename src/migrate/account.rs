//! One account's migration state, shared by all of the user's sessions: OLD↔NEW folder names, a
//! small pool of engine connection pairs, each folder's backfill (one owner, the others wait on
//! it), live pickup for the folders sessions have selected, and the worker that drains the journal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
/// How long a mapped OLD tree is trusted before a login or sweep maps it again.
const TREE_MAX_AGE: Duration = Duration::from_secs(300);
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the migrator shares with every account.
pub(crate) struct Shared {
    /// The sweeper's global rate ceilings.
    pub rate: Option<Arc<sync::SharedRate>>,
    pub interactive: Arc<AtomicUsize>,
    pub stop: watch::Receiver<bool>,
}

/// How a migration step failed, for back-off and accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused or lost.
    Connect,
    Timeout,
    /// `NO [UNAVAILABLE]`, `[THROTTLED]`, `[INUSE]`: the server asks to come back later.
    Unavailable,
    /// Bad credentials: permanent.
    Login,
    /// Another tagged NO/BAD.
    Refused,
    Store,
    Other,
}

impl ErrorKind {
    pub fn of(e: &SyncError) -> ErrorKind {
        match e {
            SyncError::Imap(ImapError::Connect { .. } | ImapError::Tls { .. })
            | SyncError::Imap(ImapError::Io { .. } | ImapError::Closed { .. }) => {
                ErrorKind::Connect
            }
            SyncError::Imap(ImapError::Timeout { .. }) => ErrorKind::Timeout,
            SyncError::Imap(ImapError::Login { text, .. }) if transient_code(text) => {
                ErrorKind::Unavailable
            }
            SyncError::Imap(ImapError::Login { .. }) => ErrorKind::Login,
            SyncError::Imap(ImapError::Refused { text, code, .. })
                if transient_code(text) || code.as_deref().is_some_and(transient_code) =>
            {
                ErrorKind::Unavailable
            }
            SyncError::Imap(ImapError::Refused { .. }) => ErrorKind::Refused,
            SyncError::Store(_) => ErrorKind::Store,
            _ => ErrorKind::Other,
        }
    }

    /// Worth retrying later (with back-off) rather than failing the account.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Unavailable
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Login => "login",
            ErrorKind::Refused => "refused",
            ErrorKind::Store => "store",
            ErrorKind::Other => "other",
        }
    }
}

fn transient_code(text: &str) -> bool {
    let t = text.to_ascii_uppercase();
    ["UNAVAILABLE", "THROTTLED", "INUSE"]
        .iter()
        .any(|c| t.contains(c))
}

/// A logged-in pair of engine connections.
pub(crate) struct Conn {
    pub old: Client,
    pub new: Client,
}

/// OLD and NEW names of the account's folders (NEW → OLD), and each side's namespace.
#[derive(Default)]
struct Names {
    prepared: bool,
    /// When OLD's tree was last mapped: a later login or sweep maps it again after
    /// [`TREE_MAX_AGE`] (folders created on OLD meanwhile, e.g. by its webmail).
    mapped_at: Option<Instant>,
    new_to_old: BTreeMap<String, String>,
    sides: Option<(mapping::Side, mapping::Side)>,
}

/// One NEW folder's coordination state.
#[derive(Default)]
pub(crate) struct Folder {
    /// Held by whoever works on the pair (a backfill or the mirror).
    pub lock: Mutex<()>,
    /// The backfill in progress, if any: waiters watch it turn true.
    running: StdMutex<Option<Running>>,
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

/// A backfill in progress.
struct Running {
    done: watch::Receiver<bool>,
    /// Started by the sweeper: a user's request may take it over.
    sweep: bool,
    /// Past the journal, copying: aborting it loses nothing (links are committed per APPEND and
    /// an unlinked copy is adopted by the next pass, as after a crash).
    copying: Arc<AtomicBool>,
    abort: tokio::task::AbortHandle,
}

impl Running {
    fn active(&self) -> bool {
        !*self.done.borrow()
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
    /// `opts` with the sweeper's shared rate ceilings, for backfills a sweep starts.
    sweep_opts: Options,
    /// Interactive backfills being waited for, all accounts together (the sweeper yields to them).
    interactive: Arc<AtomicUsize>,
    /// The last failure since the last success (for the sweeper), with its kind.
    last_error: StdMutex<Option<(ErrorKind, String)>>,
    /// Messages and bytes copied from OLD by this proxy.
    copied: (AtomicU64, AtomicU64),
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
        (old, new): (Endpoint, Endpoint),
        opts: Options,
        shared: &Shared,
    ) -> Account {
        let mut sweep_opts = opts.clone();
        sweep_opts.shared_rate = shared.rate.clone();
        Account {
            id,
            store,
            opts,
            sweep_opts,
            interactive: Arc::clone(&shared.interactive),
            last_error: StdMutex::new(None),
            copied: (AtomicU64::new(0), AtomicU64::new(0)),
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
            stop: shared.stop.clone(),
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
                let _ = me.backfill("INBOX", false);
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
        if let Some(mut done) = self.backfill(folder, false) {
            self.interactive.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
            self.interactive.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// One sweep of the whole account (the sweeper): OLD's tree on NEW, the journal mirrored,
    /// then every folder brought up to date in turn, yielding between folders while users wait
    /// for backfills. Returns the messages and bytes copied, or the failure that stopped it.
    pub async fn sweep(self: &Arc<Self>) -> Result<(u64, u64), (ErrorKind, String)> {
        let before = self.copied_totals();
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
        if let Ok(mut b) = self.backoff.lock() {
            b.until = None; // the sweeper has its own back-off per host
        }
        self.prepare().await;
        self.check()?;
        self.drain_journal().await;
        self.check()?;
        let folders: Vec<String> = match self.names.lock() {
            Ok(n) => n.new_to_old.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        for folder in folders {
            while self.interactive.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(mut done) = self.backfill(&folder, true) {
                let _ = done.wait_for(|d| *d).await;
            }
            self.check()?;
        }
        self.update_state().await;
        let after = self.copied_totals();
        Ok((after.0 - before.0, after.1 - before.1))
    }

    fn copied_totals(&self) -> (u64, u64) {
        (
            self.copied.0.load(Ordering::SeqCst),
            self.copied.1.load(Ordering::SeqCst),
        )
    }

    /// The failure recorded since the sweep started, if any.
    fn check(&self) -> Result<(), (ErrorKind, String)> {
        match self.last_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => Err(e),
            None => Ok(()),
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
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((ErrorKind::of(e), e.to_string()));
        }
        if let Ok(mut b) = self.backoff.lock() {
            b.until = Some(Instant::now() + b.delay);
            b.delay = (b.delay * 2).min(BACKOFF_MAX);
        }
        if let SyncError::Imap(ImapError::Login {
            side: Side::Old, ..
        }) = e
            && ErrorKind::of(e) == ErrorKind::Login
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
        let fresh = |n: &Names| n.mapped_at.is_some_and(|t| t.elapsed() < TREE_MAX_AGE);
        if self.names.lock().is_ok_and(|n| fresh(&n)) || self.backing_off() {
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
                    n.mapped_at = Some(Instant::now());
                    n.new_to_old = tree.pairs.into_iter().map(|(o, n)| (n, o)).collect();
                    n.sides = Some((tree.old_side, tree.new_side));
                }
                let _ = self.store.touch_account(self.id).await;
            }
            Err(e) => self.failed(&e).await,
        }
    }

    /// Starts (or joins) the backfill of a NEW folder; `None` when there is nothing to wait for.
    /// `sweep`: started by the sweeper (its rate ceilings apply; no freshness shortcut).
    pub(crate) fn backfill(
        self: &Arc<Self>,
        folder: &str,
        sweep: bool,
    ) -> Option<watch::Receiver<bool>> {
        let old_name = self.old_name(folder)?;
        if self.backing_off() {
            return None;
        }
        let f = self.folder(folder);
        let mut running = f.running.lock().ok()?;
        if let Some(r) = running.as_ref().filter(|r| r.active()) {
            // Interactive first: a user's request takes over the sweeper's (rate-limited) copy.
            let take_over = r.sweep && !sweep && r.copying.load(Ordering::SeqCst);
            if !take_over {
                return Some(r.done.clone());
            }
            debug!(folder, "a user's request takes over the sweeper's backfill");
            r.abort.abort();
        } else if f.fresh() && !sweep {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        let copying = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(
            Arc::clone(self)
                .run_backfill(
                    Arc::clone(&f),
                    (old_name, folder.to_string()),
                    tx,
                    sweep,
                    Arc::clone(&copying),
                )
                .in_current_span(),
        );
        *running = Some(Running {
            done: rx.clone(),
            sweep,
            copying,
            abort: task.abort_handle(),
        });
        Some(rx)
    }

    async fn run_backfill(
        self: Arc<Self>,
        f: Arc<Folder>,
        (old_name, new_name): (String, String),
        done: watch::Sender<bool>,
        sweep: bool,
        copying: Arc<AtomicBool>,
    ) {
        // The mirror goes first, so OLD already has the user's writes when it is read.
        self.drain_journal().await;
        let result = {
            let _owner = f.lock.lock().await;
            copying.store(true, Ordering::SeqCst);
            let opts = if sweep { &self.sweep_opts } else { &self.opts };
            let r = self.sync_folder(&old_name, &new_name, opts).await;
            copying.store(false, Ordering::SeqCst);
            r
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

    async fn sync_folder(
        &self,
        old_name: &str,
        new_name: &str,
        opts: &Options,
    ) -> Result<(), SyncError> {
        let span = tracing::info_span!("backfill", folder = %new_name);
        async {
            let pair = self.store.folder_pair(self.id, old_name, new_name).await?;
            let (mut conn, _permit) = self.conn().await?;
            let report = sync::sync_pair(
                &*self.store,
                &mut conn.old,
                &mut conn.new,
                &pair,
                opts,
                &Quiet,
            )
            .await?;
            self.put(conn);
            self.succeeded();
            self.copied
                .0
                .fetch_add(report.stats.messages_transferred, Ordering::SeqCst);
            self.copied
                .1
                .fetch_add(report.stats.bytes_transferred, Ordering::SeqCst);
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
                let _ = self.backfill(&name, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        let refused = |text: &str, code: Option<&str>| {
            SyncError::Imap(ImapError::Refused {
                side: Side::Old,
                command: "SELECT".into(),
                status: "NO",
                text: text.into(),
                code: code.map(str::to_string),
            })
        };
        let login = |text: &str| {
            SyncError::Imap(ImapError::Login {
                side: Side::Old,
                host: "h".into(),
                user: "u".into(),
                mech: "LOGIN",
                text: text.into(),
            })
        };
        let io = SyncError::Imap(ImapError::Io {
            side: Side::Old,
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        });
        for (e, kind, transient) in [
            (
                refused("[UNAVAILABLE] try later", None),
                ErrorKind::Unavailable,
                true,
            ),
            (refused("busy", Some("INUSE")), ErrorKind::Unavailable, true),
            (
                refused("[NONEXISTENT] no such mailbox", None),
                ErrorKind::Refused,
                false,
            ),
            (login("[AUTHENTICATIONFAILED] bad"), ErrorKind::Login, false),
            (
                login("[UNAVAILABLE] auth down"),
                ErrorKind::Unavailable,
                true,
            ),
            (io, ErrorKind::Connect, true),
            (SyncError::Options("x".into()), ErrorKind::Other, false),
        ] {
            assert_eq!(ErrorKind::of(&e), kind, "{e}");
            assert_eq!(kind.is_transient(), transient, "{e}");
        }
    }
}
