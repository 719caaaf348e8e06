//! One account's migration state, shared by all of the user's sessions and the sweeper: its
//! folder names ([`Names`]), connection pool, folders ([`backfill`](super::backfill)), journal
//! and mirror ([`drain`](super::drain)) and lifecycle ([`lifecycle`](super::lifecycle)), and the
//! worker that keeps the journal draining (and live pickup running) while it is used.

use super::commit::Committer;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Mutex, Notify, watch};
use tracing::{Instrument, debug};

use super::alone::Alone;
use super::backfill::{Folder, RECONCILE_WAIT};
use super::backoff::Backoff;
use super::caches::ClientCaches;
use super::gauges::Gauges;
use super::intent::Intents;
use super::mirror;
use super::names::Names;
use super::pickup::Policy;
use super::pool::Pool;
use super::relayed::Relayed;
use crate::config::LivePickup;
use crate::imap::ImapError;
use crate::lock::{self, Poisoned, Swap};
use crate::store::{AccountId, Store};
use crate::sync::{self, Endpoint, Options, SyncError};

/// Takes the wake-up left in `wake` while its task was busy; `true` if there was one. The
/// round about to start reads what it announced (journal entries, live pickup's folders and
/// settings). Left in place, it would start another round at once for what is seen already:
/// a drain that finds nothing, an IDLE ended (a DONE and an IDLE more for OLD).
pub(super) fn take_wake(wake: &Notify) -> bool {
    let woken = std::pin::pin!(wake.notified());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    woken.poll(&mut cx).is_ready()
}

/// How often the worker looks at the journal (and whether live pickup should run).
pub(crate) const LIVE_POLL: Duration = Duration::from_secs(2);
/// How long a woken worker lets the user's writes gather before it mirrors them: nobody waits
/// for OLD, and writes mirrored together share the drain's reads, connection and marks.
const GATHER: Duration = Duration::from_millis(100);
/// Longest a login waits for OLD's folder tree to be created on NEW (LIST and CREATEs: cheap,
/// unless OLD does not answer).
const PREPARE_WAIT: Duration = Duration::from_secs(10);
/// Back-off while OLD (or NEW) cannot be reached.
const REACH_FIRST: Duration = Duration::from_secs(2);
const REACH_MAX: Duration = Duration::from_secs(60);

/// What the migrator shares with every account.
pub(crate) struct Shared {
    /// The sweeper's global rate ceilings.
    pub rate: Option<Arc<sync::SharedRate>>,
    pub interactive: Arc<AtomicUsize>,
    /// `[migration]`'s live pickup settings, as the last reload set them.
    pub pickup: Arc<Swap<Policy>>,
    /// `[migration] idle_connections_secs`, as the last reload set it.
    pub keep: Arc<AtomicU64>,
    /// `[migration] mirror_paused`, as the last reload set it.
    pub mirror_paused: Arc<AtomicBool>,
    pub gauges: Arc<Gauges>,
    pub journal: JournalPolicy,
    /// The journal's group commit.
    pub committer: Arc<Committer>,
    /// Messages of clients' APPENDs waiting for the mirror.
    pub relayed: Arc<Relayed>,
    /// `[migration] keep_client_caches`.
    pub keep_client_caches: bool,
    pub stop: watch::Receiver<bool>,
}

/// How the journal is drained and kept (`[migration]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct JournalPolicy {
    /// Refusals of one entry before it is parked.
    pub attempts: u32,
    /// First retry delay after a refusal (doubling).
    pub retry: Duration,
    /// Mirrored entries are deleted after this.
    pub keep: Duration,
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

/// Counts a session of the account while it lives.
pub struct Presence(Arc<Account>);

impl Drop for Presence {
    fn drop(&mut self) {
        if self.0.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.stop_lingering();
        }
        self.0.wake.notify_one();
    }
}

pub struct Account {
    pub(crate) id: AccountId,
    pub(crate) store: Arc<dyn Store>,
    pub(super) opts: Options,
    /// `opts` with the sweeper's shared rate ceilings, for backfills a sweep starts.
    pub(super) sweep_opts: Options,
    /// Interactive backfills being waited for, all accounts together (the sweeper yields to them).
    pub(super) interactive: Arc<AtomicUsize>,
    /// The account's name (the normalised login).
    pub(super) name: String,
    /// Live pickup's settings, shared with the migrator (reloadable).
    pub(super) pickup: Arc<Swap<Policy>>,
    /// Wakes live pickup: the selected folders or the settings changed.
    pub(super) pickup_wake: Arc<Notify>,
    pub(super) pickup_running: AtomicBool,
    /// OLD folders the mirror deleted or renamed, counted: live pickup selects its folder
    /// again after one.
    pub(super) restructured: AtomicU64,
    /// The last failure since the last success (for the sweeper), with its kind. Recovered
    /// when poisoned ([`Account::last_error`]).
    pub(super) last_error: StdMutex<Option<(ErrorKind, String)>>,
    /// Messages and bytes copied from OLD by this proxy.
    copied: (AtomicU64, AtomicU64),
    /// OLD's folder names; a poisoned lock is an error ([`Account::names`]).
    pub(super) names: StdMutex<Names>,
    pub(super) folders: DashMap<String, Arc<Folder>>,
    pub(super) pool: Pool,
    pub(super) prepare_lock: Mutex<()>,
    pub(super) mirror_lock: Mutex<()>,
    /// The folder pairs the mirror read, kept between its drains (see [`mirror::Pairs`]).
    pub(super) pairs: mirror::Pairs,
    /// Held while the account's state is worked out and written, so that a later update never
    /// writes what it read before an earlier one.
    pub(super) state_lock: Mutex<()>,
    pub(super) wake: Notify,
    sessions: AtomicUsize,
    worker: AtomicBool,
    /// While OLD (or NEW) cannot be reached: every step that needs them waits. Recovered when
    /// poisoned ([`Account::reach`]).
    pub(super) reach: StdMutex<Backoff>,
    /// Seen retired: no more backfill, pickup or mirror, ever (only an explicit un-retire, which
    /// a new login notices, changes that).
    pub(super) retired: AtomicBool,
    /// Journal entries not yet on OLD (for back-pressure; the store has the truth).
    pub(super) pending: super::drain::Pending,
    /// The next entry to mirror may have reached OLD already: no entry a replay could repeat has
    /// been mirrored and marked since this process took the account on (a predecessor may have
    /// died mid-entry, behind entries whose marks waited for their batch), or the last attempt
    /// failed midway. See [`mirror::apply`](super::mirror::apply).
    pub(super) careful: AtomicBool,
    /// Entries up to this id are replayed with care too: a reconcile may have done them on OLD
    /// from what NEW showed it (see `Account::reconcile_settled` in `reconcile`).
    pub(super) careful_through: AtomicI64,
    /// The id of the last entry this process journaled.
    pub(super) last_journaled: AtomicI64,
    pub(super) journal: JournalPolicy,
    /// Nothing is written to OLD while set (`[migration] mirror_paused`): entries wait.
    pub(super) mirror_paused: Arc<AtomicBool>,
    pub(super) committer: Arc<Committer>,
    pub(super) relayed: Arc<Relayed>,
    /// Writes NEW accepted that could not be journaled, and how many of them the last automatic
    /// reconcile covered; whether that recovery runs (one at a time, see
    /// `Account::recover_when_writable` in `drain`).
    pub(super) unjournaled: (AtomicU64, AtomicU64),
    pub(super) recovering: AtomicBool,
    /// Its last attempt failed (the store or OLD refused): nothing waits for it meanwhile.
    pub(super) recovery_stuck: AtomicBool,
    /// The write-ahead mark ([`intent`](super::intent)).
    pub(super) intents: Intents,
    /// Whether a COPY was alone on NEW ([`alone`](super::alone)).
    pub(super) alone: Alone,
    /// The numbers each folder shows its clients ([`caches`](super::caches)).
    pub(super) caches: Arc<ClientCaches>,
    pub(super) stop: watch::Receiver<bool>,
}

impl Account {
    pub(crate) fn new(
        id: AccountId,
        name: &str,
        store: Arc<dyn Store>,
        endpoints: (Endpoint, Endpoint),
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
            name: name.to_string(),
            pickup: Arc::clone(&shared.pickup),
            pickup_wake: Arc::new(Notify::new()),
            pickup_running: AtomicBool::new(false),
            restructured: AtomicU64::new(0),
            last_error: StdMutex::new(None),
            copied: (AtomicU64::new(0), AtomicU64::new(0)),
            names: StdMutex::new(Names::default()),
            folders: DashMap::new(),
            pool: Pool::new(
                endpoints,
                Arc::clone(&shared.keep),
                Arc::clone(&shared.gauges),
                shared.stop.clone(),
            ),
            prepare_lock: Mutex::new(()),
            mirror_lock: Mutex::new(()),
            pairs: mirror::Pairs::default(),
            state_lock: Mutex::new(()),
            wake: Notify::new(),
            sessions: AtomicUsize::new(0),
            worker: AtomicBool::new(false),
            reach: StdMutex::new(Backoff::new(REACH_FIRST, REACH_MAX)),
            retired: AtomicBool::new(false),
            pending: Default::default(),
            careful: AtomicBool::new(true),
            careful_through: AtomicI64::new(0),
            last_journaled: AtomicI64::new(0),
            journal: shared.journal,
            mirror_paused: Arc::clone(&shared.mirror_paused),
            committer: Arc::clone(&shared.committer),
            relayed: Arc::clone(&shared.relayed),
            unjournaled: (AtomicU64::new(0), AtomicU64::new(0)),
            recovering: AtomicBool::new(false),
            recovery_stuck: AtomicBool::new(false),
            intents: Intents::default(),
            alone: Alone::default(),
            caches: Arc::new(ClientCaches::new(shared.keep_client_caches)),
            stop: shared.stop.clone(),
        }
    }

    /// OLD's folder names. A poisoned lock is an error: a panic in the middle of a rename's
    /// bookkeeping can leave names half-changed, and a write mirrored under a wrong name loses it.
    pub(super) fn names(&self) -> Result<MutexGuard<'_, Names>, Poisoned> {
        lock::lock(&self.names, "the account's folder names")
    }

    /// The back-off while OLD cannot be reached, recovered from a poisoned lock: every critical
    /// section is one call of [`Backoff`]'s, which leaves it whole, and it is read by getters
    /// (`unreachable`) that have no error to return.
    pub(super) fn reach(&self) -> MutexGuard<'_, Backoff> {
        lock::recover(&self.reach, "the account's back-off")
    }

    /// The last failure, recovered from a poisoned lock: it is only ever replaced whole, by
    /// recorders ([`Account::failed`]) that have no error to return.
    pub(super) fn last_error(&self) -> MutexGuard<'_, Option<(ErrorKind, String)>> {
        lock::recover(&self.last_error, "the account's last failure")
    }

    /// The latest credentials (a user may change their password during the migration).
    pub(crate) fn set_endpoints(&self, old: Endpoint, new: Endpoint) {
        self.pool.set_endpoints(old, new);
    }

    /// A new session of this account: the journal drains, OLD's tree is created on NEW (the
    /// login waits for it, at most [`PREPARE_WAIT`]), and INBOX's backfill starts.
    pub(crate) async fn start(self: &Arc<Self>) {
        self.reach().retry_now(); // a login is a good moment to try OLD again
        self.retired.store(false, Ordering::SeqCst);
        self.check_mark().await;
        self.count_pending().await;
        self.remember_names().await;
        self.load_uid_maps().await;
        let me = Arc::clone(self);
        let prepared = tokio::spawn(
            async move {
                // A poisoned lock (logged) leaves the account to fail the sessions' writes.
                if me.prepare().await.is_ok() {
                    me.spawn_worker();
                    me.login_head_start();
                }
            }
            .in_current_span(),
        );
        let _ = tokio::time::timeout(PREPARE_WAIT, prepared).await;
    }

    /// Whether a session of the account is open.
    pub(super) fn has_sessions(&self) -> bool {
        self.sessions.load(Ordering::SeqCst) > 0
    }

    /// Counts a session until the returned value is dropped.
    pub fn enter(self: &Arc<Self>) -> Presence {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        self.spawn_worker();
        Presence(Arc::clone(self))
    }

    /// One sweep of the whole account (the sweeper): OLD's tree on NEW, the journal mirrored,
    /// then every folder brought up to date in turn, yielding between folders while users wait
    /// for backfills. Returns the messages and bytes copied, or the failure that stopped it.
    pub async fn sweep(self: &Arc<Self>) -> Result<(u64, u64), (ErrorKind, String)> {
        let before = self.copied_totals();
        *self.last_error() = None;
        self.reach().retry_now(); // the sweeper has its own back-off per host
        if self.is_retired().await {
            return Ok((0, 0));
        }
        let poisoned = |e: Poisoned| (ErrorKind::Other, e.to_string());
        self.check_mark().await;
        self.count_pending().await;
        self.prepare().await.map_err(poisoned)?;
        self.check()?;
        self.drain_journal().await;
        self.check()?;
        if !self.reconciled_within(RECONCILE_WAIT).await {
            return Err((
                ErrorKind::Unavailable,
                "OLD waits for a reconcile with NEW (a write may be missing from the journal)"
                    .into(),
            ));
        }
        let folders: Vec<String> = (self.names().map_err(poisoned)?)
            .pairs()
            .map(|(new, _)| new.to_string())
            .collect();
        for folder in folders {
            while self.interactive.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(mut done) = self.backfill(&folder, true).map_err(poisoned)? {
                let _ = done.wait_for(|d| *d).await;
            }
            self.check()?;
        }
        self.update_state().await;
        let after = self.copied_totals();
        Ok((after.0 - before.0, after.1 - before.1))
    }

    pub(super) fn count_copied(&self, messages: u64, bytes: u64) {
        self.copied.0.fetch_add(messages, Ordering::SeqCst);
        self.copied.1.fetch_add(bytes, Ordering::SeqCst);
    }

    fn copied_totals(&self) -> (u64, u64) {
        (
            self.copied.0.load(Ordering::SeqCst),
            self.copied.1.load(Ordering::SeqCst),
        )
    }

    /// The failure recorded since the sweep started, if any.
    fn check(&self) -> Result<(), (ErrorKind, String)> {
        match self.last_error().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Folder names from the store's folder pairs while OLD's tree is not mapped (see
    /// [`Names::remember`]). A poisoned lock is left for the next user of the names to fail on.
    async fn remember_names(&self) {
        if self.names().map_or(true, |n| n.prepared) {
            return;
        }
        match self.store.folder_pairs(self.id).await {
            Ok(pairs) => {
                if let Ok(mut n) = self.names() {
                    n.remember(pairs.into_iter().map(|p| (p.old_name, p.new_name)));
                }
            }
            Err(e) => tracing::warn!("{e}: folder names not read from the store"),
        }
    }

    /// The OLD name of NEW folder `new`; `Ok(None)`: not on OLD.
    pub(crate) fn old_name(&self, new: &str) -> Result<Option<String>, Poisoned> {
        Ok(self.names()?.old_of(new).map(str::to_string))
    }

    /// The OLD name for a folder created on NEW: NEW's prefix and separator swapped for OLD's.
    pub(crate) fn reverse_name(&self, new: &str) -> Result<Option<String>, Poisoned> {
        Ok(self.names()?.reverse(new))
    }

    /// (OLD, NEW) hierarchy separators, once the tree is mapped. A getter sessions call without
    /// an error to return, so a poisoned lock is read anyway: the separators are set whole, in
    /// one assignment, with the tree.
    pub(crate) fn separators(&self) -> Option<(char, char)> {
        let names = lock::read_anyway(&self.names, "the account's folder names");
        Some((names.old_sep()?, names.new_sep()?))
    }

    pub(crate) fn add_name(&self, new: &str, old: &str) -> Result<(), Poisoned> {
        self.names()?.insert(new, old);
        Ok(())
    }

    fn spawn_worker(self: &Arc<Self>) {
        if !self.worker.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).worker_loop().in_current_span());
        }
    }

    /// While sessions are open or the journal is not empty: drain the journal every
    /// [`LIVE_POLL`] or [`GATHER`] after being woken, and start live pickup
    /// ([`pickup`](super::pickup)) where a reload turned it on.
    async fn worker_loop(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        loop {
            let woken = tokio::select! {
                () = tokio::time::sleep(LIVE_POLL) => false,
                () = self.wake.notified() => true,
                _ = stop.wait_for(|s| *s) => break,
            };
            if woken {
                tokio::select! {
                    () = tokio::time::sleep(GATHER) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            take_wake(&self.wake); // the drain reads every entry journaled until now
            self.drain_journal().await; // reads whether the account was retired
            if self.is_retired_now() {
                break;
            }
            if self.pickup_mode() == LivePickup::Off {
                debug!("live pickup is off");
            } else {
                self.spawn_pickup();
            }
            let pending = self.pending.get();
            if !self.has_sessions() && pending == 0 {
                break;
            }
        }
        self.pool.clear();
        self.worker.store(false, Ordering::SeqCst);
        // A session that arrived while the loop was ending found the flag still set.
        if self.has_sessions() && !*self.stop.borrow() {
            self.spawn_worker();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::Side;

    /// A wake-up left while nobody waited is taken once; one that comes after still wakes.
    #[tokio::test]
    async fn a_wake_up_left_while_busy_is_taken_once() {
        let wake = Notify::new();
        assert!(!take_wake(&wake));
        wake.notify_one();
        assert!(take_wake(&wake));
        assert!(!take_wake(&wake));
        let waiting = tokio::spawn(async move {
            wake.notify_one();
            wake.notified().await;
        });
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a later wake-up is kept")
            .unwrap();
    }

    /// A write journaled while the worker gathers entries starts no drain of its own: the
    /// drain under way reads it, and the next one waits for the next wake-up or [`LIVE_POLL`].
    /// (Before: its wake-up, left behind, started a drain that found nothing 100 ms later.)
    #[tokio::test]
    async fn a_write_journaled_while_the_worker_gathers_starts_no_drain_of_its_own() {
        let acct = crate::migrate::mirror::tests::account().await;
        tokio::time::pause(); // after the store is open: its pool has timeouts of its own
        let _session = acct.enter(); // the worker
        tokio::task::yield_now().await; // ... waits for a wake-up
        let before = acct.store.operations().reads;
        acct.wake.notify_one();
        tokio::task::yield_now().await; // ... gathers
        acct.wake.notify_one();
        // With nothing counted as pending, each drain is one read (whether the account retired).
        let drained = async |n| {
            for _ in 0..10_000 {
                if acct.store.operations().reads >= before + n {
                    return tokio::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("{:?} (reads before: {before})", acct.store.operations());
        };
        let first = drained(1).await;
        let second = drained(2).await;
        assert!(
            second - first >= LIVE_POLL - GATHER,
            "a second drain {:?} after the first",
            second - first
        );
    }

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
