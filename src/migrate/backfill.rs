//! Backfill: one NEW folder brought up to date from OLD, with one owner at a time (the others
//! wait on it, at most their budget), which folders sessions have selected and the passes live
//! pickup ([`pickup`](super::pickup)) starts for them, and the
//! per-folder coordination the mirror needs (its reads of NEW wait for the user's own changes to
//! the folder). A folder that cannot be backfilled is retried with its own back-off; it never
//! stops the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex as StdMutex, MutexGuard as StdMutexGuard};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::account::{Account, ErrorKind};
use super::backoff::Backoff;
use super::lease::{Lease, holder};
use crate::config::LivePickup;
use crate::lock::{Poisoned, recover};
use crate::store::{MailboxState, PairId, StoreError};
use crate::sync::{self, Event, Observer, Options, OwnChanges, SyncError};
use crate::uidmap::Shown;

/// A folder checked this recently (or left by its last session this recently, live pickup
/// having watched it until then) is not checked again for a SELECT.
const FRESH: Duration = Duration::from_secs(1);
/// A complete folder a command used this recently stays under live pickup, as a selected one
/// is: its next SELECT or STATUS asks OLD nothing, the pickup's poll does.
const LINGER: Duration = Duration::from_secs(120);
/// A login starts INBOX's check (a head start for the client's SELECT) unless INBOX was checked
/// this recently. Skipping it delays no message: the SELECT checks again after [`FRESH`].
const LOGIN_FRESH: Duration = Duration::from_secs(60);
/// A folder whose backfill failed (not a connection failure) is tried again after this, doubling.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest the mirror waits for the user's change of a folder before reading it anyway.
const CHANGE_WAIT: Duration = Duration::from_secs(10);
/// Longest a backfill waits for the reconcile the account needs first (see
/// [`Account::unsure`]); a SELECT waits for the backfill within its budget as usual.
pub(super) const RECONCILE_WAIT: Duration = Duration::from_secs(30);

/// Longest a backfill waits for another process of the fleet that works on the folder.
const FLEET_WAIT: Duration = Duration::from_secs(600);
/// Longest the mirror waits for it before leaving the entry for the next drain.
pub(super) const MIRROR_WAIT: Duration = Duration::from_secs(60);

/// Held while working on a folder pair: this process's lock of the folder, then, in a fleet, the
/// folder's lease, so that no other proxy works on it meanwhile.
pub(crate) struct Owner<'f> {
    _local: MutexGuard<'f, ()>,
    _lease: Lease,
}

/// One NEW folder's coordination state.
pub(crate) struct Folder {
    /// Held by whoever works on the pair (a backfill or the mirror).
    pub lock: Mutex<()>,
    /// The backfill in progress, if any: waiters watch it turn true.
    ///
    /// This and the next two are recovered from a poisoned lock ([`crate::lock::recover`]):
    /// each critical section assigns, takes or updates the value in one step, so it is whole,
    /// and their getters and the end of a backfill have no error to return.
    running: StdMutex<Option<Running>>,
    /// When the folder was last known current: a pass over it ended, or live pickup stopped
    /// watching it. `None` once live pickup saw OLD change.
    checked: StdMutex<Option<Instant>>,
    /// A pass over it succeeded since this process started: it is filled, and later passes
    /// only bring what OLD got since (see [`Need`]).
    complete: AtomicBool,
    /// After a failed backfill: when to try again, and why it failed.
    retry: StdMutex<(Backoff, Option<String>)>,
    watchers: AtomicUsize,
    /// When a command last needed the folder (see [`LINGER`]). Recovered as `running` is.
    used: StdMutex<Option<Instant>>,
    /// A check live pickup asked for waits to start (see [`Account::pick_up`]).
    picking: AtomicBool,
    /// When the last check live pickup asked for started. Recovered as `running` is.
    picked: StdMutex<Option<Instant>>,
    /// The user's CREATE/DELETE/RENAME of this folder that NEW has not answered yet.
    changing: watch::Sender<usize>,
    /// Held by the mirror while it reads this folder on NEW; a change starts only between reads.
    reads: Mutex<()>,
    /// The mirror's changes to OLD's folder since the pair's recorded state, while all of them
    /// are known (see [`OwnChanges`]). Recovered from a poisoned lock, as `running` is.
    own_old: StdMutex<Option<OwnChanges>>,
}

impl Default for Folder {
    fn default() -> Self {
        Folder {
            lock: Mutex::new(()),
            running: StdMutex::new(None),
            checked: StdMutex::new(None),
            complete: AtomicBool::new(false),
            retry: StdMutex::new((Backoff::new(RETRY_FIRST, RETRY_MAX), None)),
            watchers: AtomicUsize::new(0),
            used: StdMutex::new(None),
            picking: AtomicBool::new(false),
            picked: StdMutex::new(None),
            changing: watch::Sender::new(0),
            reads: Mutex::new(()),
            own_old: StdMutex::new(None),
        }
    }
}

impl Folder {
    fn running(&self) -> StdMutexGuard<'_, Option<Running>> {
        recover(&self.running, "a folder's running backfill")
    }

    fn checked(&self) -> StdMutexGuard<'_, Option<Instant>> {
        recover(&self.checked, "a folder's last check")
    }

    fn retry(&self) -> StdMutexGuard<'_, (Backoff, Option<String>)> {
        recover(&self.retry, "a folder's backfill retry")
    }

    /// The mirror's changes to OLD's folder of `pair` since its recorded state, if all known.
    pub(super) fn own_old(&self, pair: PairId) -> Option<OwnChanges> {
        self.own_changes().clone().filter(|o| o.pair == pair)
    }

    /// Notes a change the mirror made to OLD's folder of `pair` (held by the caller).
    pub(super) fn note_own(&self, pair: PairId, change: impl FnOnce(&mut OwnChanges)) {
        if let Some(own) = self.own_changes().as_mut().filter(|o| o.pair == pair) {
            change(own);
        }
    }

    /// Whether OLD's folder in state `now` may show the mirror's own changes alone (see
    /// [`OwnChanges::may_explain`]); `false` while they are not all known.
    pub(super) fn own_may_explain(&self, now: &MailboxState) -> bool {
        (self.own_changes().as_ref()).is_some_and(|o| o.may_explain(now))
    }

    /// Sets what is known of the mirror's changes to OLD's folder (`None`: not all of them).
    pub(super) fn set_own_old(&self, own: Option<OwnChanges>) {
        *self.own_changes() = own;
    }

    fn own_changes(&self) -> StdMutexGuard<'_, Option<OwnChanges>> {
        recover(&self.own_old, "a folder's own changes to OLD")
    }

    fn used(&self) -> StdMutexGuard<'_, Option<Instant>> {
        recover(&self.used, "a folder's last use")
    }

    fn picked(&self) -> StdMutexGuard<'_, Option<Instant>> {
        recover(&self.picked, "a folder's last pickup")
    }

    /// Complete and used within [`LINGER`] (while the account has sessions).
    fn lingering(&self) -> bool {
        self.complete.load(Ordering::SeqCst) && self.used().is_some_and(|t| t.elapsed() < LINGER)
    }

    fn fresh(&self) -> bool {
        self.checked_within(FRESH)
    }

    fn checked_within(&self, age: Duration) -> bool {
        self.checked().is_some_and(|t| t.elapsed() < age)
    }

    fn retry_later(&self) -> bool {
        self.retry().0.waiting(Instant::now())
    }

    /// Why the last backfill failed, while it is to be retried.
    pub fn failure(&self) -> Option<String> {
        self.retry().1.clone()
    }

    /// Waits until no change of this folder by the user is in flight on NEW, then holds off new
    /// ones while the guard lives. Dovecot answers a DELETE or CREATE that races another
    /// session's EXAMINE of the same folder with "Mailbox was deleted under us" or
    /// `[SERVERBUG]`: the mirror must not be that other session.
    pub async fn read_new(&self) -> MutexGuard<'_, ()> {
        let mut settled = self.changing.subscribe();
        // Bounded: a session that vanished between its change and NEW's answer never settles.
        let until = Instant::now() + CHANGE_WAIT;
        loop {
            let guard = self.reads.lock().await;
            if *settled.borrow_and_update() == 0 || Instant::now() >= until {
                return guard;
            }
            drop(guard);
            let _ = tokio::time::timeout_at(until, settled.wait_for(|n| *n == 0)).await;
        }
    }

    /// How many reads wait in [`Folder::read_new`] (a test's event).
    #[cfg(test)]
    pub(crate) fn reads_waiting(&self) -> usize {
        self.changing.receiver_count()
    }

    /// No change of this folder by the user is in flight on NEW.
    fn settled(&self) -> bool {
        *self.changing.borrow() == 0
    }

    /// The user's change of this folder (CREATE, DELETE, RENAME; an EXPUNGE, CLOSE or MOVE out
    /// of it) goes to NEW now, after any mirror read.
    pub async fn begin_change(&self) {
        let _between_reads = self.reads.lock().await;
        self.changing.send_modify(|n| *n += 1);
    }

    /// NEW answered that change.
    pub fn end_change(&self) {
        self.changing.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A backfill pass's view of the user: messages missing from NEW are the user's deletions, and
/// NEW's unlinked messages are not the user's, only once every write of theirs has reached OLD
/// (none in flight on NEW, none in the journal). Before that the mirror does it: a tombstone
/// would leave OLD's copy behind, and an APPEND or COPY on NEW the journal does not hold yet
/// must stay below the adoption watermark (see `Plan::unlinked_new_from`).
struct UserWrites<'a> {
    acct: &'a Account,
    folder: &'a Folder,
    /// In a fleet: entries other proxies journaled waited for OLD when the pass began.
    elsewhere: bool,
}

impl Observer for UserWrites<'_> {
    fn event(&self, _: Event) {}

    fn new_settled(&self, _: &str) -> bool {
        self.folder.settled()
            && !self.elsewhere
            && !self.acct.writes_in_flight()
            && self.acct.pending.get() == 0
            && !self.acct.unsure()
    }

    fn own_changes(&self, _: &str) -> Option<OwnChanges> {
        self.folder.own_changes().clone()
    }

    fn old_recorded(&self, _: &str, pair: PairId, old: Option<MailboxState>) {
        self.folder
            .set_own_old(old.and_then(|base| OwnChanges::since(pair, base)));
    }

    fn wants_uid_map(&self, folder: &str) -> bool {
        self.acct.wants_uid_map(folder)
    }

    fn uid_map(&self, folder: &str, shown: Shown) {
        self.acct.caches.decide(folder, shown);
    }

    fn modseq_offset(&self, folder: &str) -> Option<u64> {
        self.acct.uid_map_of(folder).map(|m| m.modseq_offset())
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
    /// Running until its task ends: finished (`done` is true) or aborted (the sender is gone).
    fn active(&self) -> bool {
        !*self.done.borrow() && self.done.has_changed().is_ok()
    }
}

/// Keeps a folder under live pickup while a session has it selected.
pub struct Watch(Arc<Account>, Arc<Folder>);

impl Drop for Watch {
    fn drop(&mut self) {
        let Watch(acct, f) = self;
        if acct.has_sessions() {
            *f.used() = Some(Instant::now());
        }
        if f.watchers.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Live pickup watched it until now: it is as current as a pass that ends now.
            if acct.covers_watched() {
                let mut checked = f.checked();
                if checked.is_some() {
                    *checked = Some(Instant::now());
                }
            }
            // A folder that lingers stays on live pickup's list: nothing to tell it.
            if !acct.keeps(f) {
                acct.pickup_wake.notify_one();
            }
        }
    }
}

/// What a command needs of the folder it names (see [`Account::ensure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// SELECT or EXAMINE: the client is shown its messages, and those OLD has must be there.
    Contents,
    /// STATUS, or the target of an APPEND, COPY or MOVE: the folder must have been filled once
    /// (so OLD's messages come before the user's); what OLD got since may follow.
    Filled,
}

impl Account {
    /// Waits for `folder` (`name`, a NEW name): its lock in this process, then its lease, up to
    /// `wait` while another process holds it ([`StoreError::Busy`] after that).
    pub(crate) async fn own<'f>(
        &self,
        folder: &'f Folder,
        name: &str,
        wait: Duration,
    ) -> Result<Owner<'f>, StoreError> {
        let local = folder.lock.lock().await;
        let lease_name = format!("folder:{}:{name}", self.id);
        match Lease::take_within(&self.store, lease_name.clone(), wait).await? {
            Some(lease) => Ok(Owner {
                _local: local,
                _lease: lease,
            }),
            None => Err(StoreError::Busy(lease_name)),
        }
    }

    pub(crate) fn folder(&self, name: &str) -> Arc<Folder> {
        if let Some(f) = self.folders.get(name) {
            return Arc::clone(f.value());
        }
        Arc::clone(self.folders.entry(name.to_string()).or_default().value())
    }

    /// Keeps `folder` (a NEW name) under live pickup until the returned value is dropped.
    pub fn watch(self: &Arc<Self>, folder: &str) -> Watch {
        let f = self.folder(folder);
        let kept = self.keeps(&f);
        f.watchers.fetch_add(1, Ordering::SeqCst);
        if !kept {
            self.pickup_wake.notify_one();
        }
        self.spawn_pickup();
        Watch(Arc::clone(self), f)
    }

    /// Whether live pickup brings OLD's changes to the folders sessions have selected now.
    fn covers_watched(&self) -> bool {
        self.pickup_mode() != LivePickup::Off && !self.unreachable()
    }

    /// Live pickup saw `folder` (a NEW name) change on OLD: a pass that starts after now brings
    /// the change. One already running may have read OLD before it, so it is waited for (at
    /// most [`CHANGE_WAIT`]), and the freshness shortcut does not apply. The checks live
    /// pickup starts for a folder are `live_pickup_secs` apart: a burst of changes (the
    /// mirror's own writes, mostly) costs one; changes seen meanwhile join the next.
    pub(super) fn pick_up(self: &Arc<Self>, folder: &str) {
        let f = self.folder(folder);
        if f.picking.swap(true, Ordering::SeqCst) {
            return;
        }
        let running = f
            .running()
            .as_ref()
            .filter(|r| r.active())
            .map(|r| r.done.clone());
        let not_before = f.picked().map(|t| t + self.pickup.get().first);
        let (me, folder) = (Arc::clone(self), folder.to_string());
        tokio::spawn(
            async move {
                if let Some(mut done) = running {
                    let _ = tokio::time::timeout(CHANGE_WAIT, done.wait_for(|d| *d)).await;
                }
                if let Some(t) = not_before {
                    tokio::time::sleep_until(t).await;
                }
                f.picking.store(false, Ordering::SeqCst);
                *f.picked() = Some(Instant::now());
                *f.checked() = None;
                me.backfill_in_background(&folder);
            }
            .in_current_span(),
        );
    }

    /// NEW folders live pickup keeps current, and when the first of those no session has
    /// selected stops lingering.
    pub(crate) fn kept(&self) -> (Vec<String>, Option<Instant>) {
        let mut until: Option<Instant> = None;
        let mut kept = Vec::new();
        for e in self.folders.iter().filter(|e| self.keeps(e.value())) {
            let selected = e.value().watchers.load(Ordering::SeqCst) > 0;
            if !selected && let Some(used) = *e.value().used() {
                let end = used + LINGER;
                until = Some(until.map_or(end, |u| u.min(end)));
            }
            kept.push(e.key().clone());
        }
        (kept, until)
    }

    /// Whether live pickup keeps `f`: a session has it selected, or it lingers.
    fn keeps(&self, f: &Folder) -> bool {
        f.watchers.load(Ordering::SeqCst) > 0 || (self.has_sessions() && f.lingering())
    }

    /// A command needed `f`: once complete, it lingers under live pickup (see [`LINGER`]).
    fn note_use(self: &Arc<Self>, f: &Folder) {
        let was = self.keeps(f);
        *f.used() = Some(Instant::now());
        if !was && self.keeps(f) {
            self.pickup_wake.notify_one();
            self.spawn_pickup();
        }
    }

    /// The account's last session ended, and with it live pickup: the folders it kept
    /// lingering are as current as a check that ends now (as a deselected folder is).
    pub(super) fn stop_lingering(&self) {
        let covered = self.covers_watched();
        for e in self.folders.iter() {
            let f = e.value();
            if f.lingering() && covered {
                let mut checked = f.checked();
                if checked.is_some() {
                    *checked = Some(Instant::now());
                }
            }
            *f.used() = None;
        }
        self.pickup_wake.notify_one();
    }

    /// Brings `folder` (a NEW name) up to date from OLD as far as `need` asks, waiting at most
    /// `wait`; the backfill goes on in the background after that. Folders OLD does not have
    /// return at once; a folder that cannot be backfilled now is answered with what NEW has and
    /// tried again later.
    ///
    /// Once a folder is complete, OLD is not asked about it while live pickup keeps it (a
    /// session has it selected, or a command used it within [`LINGER`]) or it was checked
    /// within [`FRESH`]. Otherwise only a SELECT waits, and only for a folder with no journal
    /// entry waiting: the check then never waits behind the mirror. Other commands, and a
    /// folder whose entries OLD has yet to get, start the check in the background: what OLD
    /// got since arrives as new mail, as it does by live pickup.
    ///
    /// A poisoned lock (logged) is answered like a folder that cannot be backfilled now; the
    /// session fails at its next write, whose journaling needs the same names.
    pub async fn ensure(self: &Arc<Self>, folder: &str, wait: Duration, need: Need) {
        let f = self.folder(folder);
        self.bring_up_to_date(&f, folder, wait, need).await;
        self.note_use(&f);
    }

    async fn bring_up_to_date(
        self: &Arc<Self>,
        f: &Folder,
        folder: &str,
        wait: Duration,
        need: Need,
    ) {
        if f.complete.load(Ordering::SeqCst) {
            // Kept current by live pickup: selected, or lingering and not seen changed since
            // (live pickup's change clears `checked` until the check it starts ends).
            let kept =
                f.watchers.load(Ordering::SeqCst) > 0 || (self.keeps(f) && f.checked().is_some());
            if (kept && self.covers_watched()) || f.fresh() {
                return;
            }
            let waits = need == Need::Contents
                && match self.journal_names(folder).await {
                    Ok(named) => !named,
                    Err(e) => {
                        warn!(folder, "{e}: the folder's check goes on in the background");
                        false
                    }
                };
            if !waits {
                return self.backfill_in_background(folder);
            }
        }
        match self.backfill(folder, false) {
            Ok(Some(mut done)) => {
                self.interactive.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
                self.interactive.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(None) => {}
            Err(e) => warn!(folder, "not backfilled: {e}"),
        }
    }

    /// A login's head start: INBOX's check, unless it ran less than [`LOGIN_FRESH`] ago (a
    /// client logging in again and again, or opening several connections at once, costs OLD
    /// and NEW one STATUS, not one a login).
    pub(super) fn login_head_start(self: &Arc<Self>) {
        if !self.folder("INBOX").checked_within(LOGIN_FRESH) {
            self.backfill_in_background("INBOX");
        }
    }

    /// Starts the backfill of `folder` (a NEW name) without waiting for it.
    pub(super) fn backfill_in_background(self: &Arc<Self>, folder: &str) {
        if let Err(e) = self.backfill(folder, false) {
            warn!(folder, "not backfilled: {e}");
        }
    }

    /// Starts (or joins) the backfill of a NEW folder; `None` when there is nothing to wait for.
    /// `sweep`: started by the sweeper (its rate ceilings apply; no freshness shortcut).
    pub(crate) fn backfill(
        self: &Arc<Self>,
        folder: &str,
        sweep: bool,
    ) -> Result<Option<watch::Receiver<bool>>, Poisoned> {
        let Some(old_name) = self.old_name(folder)? else {
            return Ok(None);
        };
        if self.unreachable() || self.is_retired_now() {
            return Ok(None);
        }
        let f = self.folder(folder);
        if f.retry_later() && !sweep {
            return Ok(None);
        }
        let mut running = f.running();
        if let Some(r) = running.as_ref().filter(|r| r.active()) {
            // Interactive first: a user's request takes over the sweeper's (rate-limited) copy.
            let take_over = r.sweep && !sweep && r.copying.load(Ordering::SeqCst);
            if !take_over {
                return Ok(Some(r.done.clone()));
            }
            debug!(folder, "a user's request takes over the sweeper's backfill");
            r.abort.abort();
        } else if f.fresh() && !sweep {
            return Ok(None);
        }
        self.pool.gauges().backfill();
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
        Ok(Some(rx))
    }

    async fn run_backfill(
        self: Arc<Self>,
        f: Arc<Folder>,
        (old_name, new_name): (String, String),
        done: watch::Sender<bool>,
        sweep: bool,
        copying: Arc<AtomicBool>,
    ) {
        if !self.reconciled_within(RECONCILE_WAIT).await {
            // OLD's messages without a link may be ones the user moved on NEW: the reconcile
            // that is on its way matches them first. The folder is tried again at its next use.
            debug!(folder = %new_name, "not backfilled while OLD waits for a reconcile");
            *f.running() = None;
            let _ = done.send(true);
            return;
        }
        // The mirror goes first where this folder has entries waiting, so OLD already has the
        // user's writes when it is read; a folder with writes still waiting for OLD is not read
        // from it (the pass could bring back what the user moved or deleted). Entries of other
        // folders do not hold it up.
        if !matches!(self.journal_names(&new_name).await, Ok(false)) {
            self.drain_journal().await;
        }
        let result = match self.journal_names(&new_name).await {
            Ok(true) => {
                // Not a failure: the user's writes go first. The folder is tried again after
                // the back-off's pause; the mirror reports entries OLD keeps refusing.
                let wait = f.retry().0.fail(Instant::now());
                debug!(folder = %new_name, "not backfilled while journal entries for it wait for OLD; again in {wait:?}");
                *f.running() = None;
                let _ = done.send(true);
                return;
            }
            Ok(false) if self.is_retired().await => Ok(()),
            Ok(false) => {
                // In a fleet another proxy may be filling this folder: its copies are seen by
                // this pass once it is done, never made twice.
                let _owner = match self.own(&f, &new_name, FLEET_WAIT).await {
                    Ok(owner) => owner,
                    Err(e) => {
                        warn!(folder = %new_name, "not backfilled now: {e}");
                        *f.running() = None;
                        let _ = done.send(true);
                        return;
                    }
                };
                copying.store(true, Ordering::SeqCst);
                let opts = if sweep { &self.sweep_opts } else { &self.opts };
                let r = self.sync_folder(&f, &old_name, &new_name, opts).await;
                copying.store(false, Ordering::SeqCst);
                r
            }
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                *f.checked() = Some(Instant::now());
                f.complete.store(true, Ordering::SeqCst);
                let mut retry = f.retry();
                retry.0.succeed();
                retry.1 = None;
            }
            Err(e) if ErrorKind::of(&e).is_transient() || ErrorKind::of(&e) == ErrorKind::Login => {
                self.failed(&e).await
            }
            Err(e) => {
                if ErrorKind::of(&e) == ErrorKind::Store {
                    // Copies NEW took may have no link: the user could move one before the
                    // next pass adopts it, and the pass would copy it again.
                    self.reconcile_soon(format!("a backfill's state was not saved: {e}"));
                }
                // This folder only: the account and its other folders go on.
                let wait = {
                    let mut retry = f.retry();
                    retry.1 = Some(e.to_string());
                    retry.0.fail(Instant::now())
                };
                warn!(folder = %new_name, "backfill: {e}; again in {wait:?}");
                self.note_folder_failure(&new_name, &e.to_string()).await;
            }
        }
        *f.running() = None;
        let _ = done.send(true);
        self.update_state().await;
    }

    /// With a shared store: whether another process may have written to NEW for this account
    /// what OLD does not have yet, i.e. it has journal entries pending or holds a write mark
    /// (a write NEW may have done and it has not journaled yet). A pass then takes no message
    /// missing from NEW for the user's deletion.
    async fn writes_elsewhere(&self) -> Result<bool, StoreError> {
        if !self.store.shared() {
            return Ok(false);
        }
        if self.store.journal_pending_count(self.id).await? > 0 {
            return Ok(true);
        }
        let marks = self.store.writes_in_flight(self.id).await?;
        Ok(marks.iter().any(|(h, _)| h != holder()))
    }

    async fn sync_folder(
        &self,
        folder: &Folder,
        old_name: &str,
        new_name: &str,
        opts: &Options,
    ) -> Result<(), SyncError> {
        let span = tracing::info_span!("backfill", folder = %new_name);
        async {
            let mut reading = self.alone.passing();
            let pair = self.store.folder_pair(self.id, old_name, new_name).await?;
            let elsewhere = self.writes_elsewhere().await?;
            let (mut conn, _permit) = self.pool.get().await?;
            let report = sync::sync_pair(
                &*self.store,
                &mut conn.old,
                &mut conn.new,
                &pair,
                opts,
                &UserWrites {
                    acct: self,
                    folder,
                    elsewhere,
                },
            )
            .await?;
            self.pool.put(conn);
            self.reached();
            let stats = &report.stats;
            if stats.flags_updated == 0 && stats.messages_adopted == 0 {
                reading.changed_nothing();
            }
            self.count_copied(
                report.stats.messages_transferred,
                report.stats.bytes_transferred,
            );
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write the user sent to NEW and the proxy has not journaled yet (an APPEND: NEW holds
    /// the message, unlinked) leaves the user unsettled, as one waiting in the journal does.
    #[tokio::test]
    async fn a_write_in_flight_leaves_the_user_unsettled() {
        let acct = crate::migrate::mirror::tests::account().await;
        let folder = acct.folder("Trash");
        let settled = || {
            let view = UserWrites {
                acct: &acct,
                folder: &folder,
                elsewhere: false,
            };
            view.new_settled("Trash")
        };
        assert!(settled());
        acct.intend().await.unwrap();
        assert!(!settled());
        acct.intent_over(true);
        assert!(settled());
    }

    /// A folder whose journal entries still wait for OLD is not read from OLD, and that is a
    /// deferral: the account does not show it as a failed folder, and the folder waits the
    /// back-off's pause before it is tried again.
    #[tokio::test]
    async fn a_folder_waiting_for_the_mirror_is_deferred_not_failed() {
        let acct = crate::migrate::mirror::tests::account().await;
        crate::migrate::mirror::tests::appended_to_a(&acct).await;
        acct.count_pending().await; // as a login does; OLD cannot be reached, so it waits
        let mut done = acct
            .backfill("A", false)
            .unwrap()
            .expect("a backfill starts");
        done.wait_for(|d| *d).await.unwrap();
        assert!(!acct.folder("A").complete.load(Ordering::SeqCst));
        assert!(acct.folder("A").retry_later(), "tried again at once");
        let summary = acct.store.account_summaries().await.unwrap();
        assert_eq!(summary[0].reason, None, "{summary:?}");
    }

    /// Whether waiting entries name a folder: the store hands over those that hold its name,
    /// a page at a time, and they are read to be sure; LIKE's wildcards, quotes and another
    /// case tell apart (SQLite's LIKE does not: "INBOX" is found behind twenty "Inbox"); one
    /// that cannot be read holds its folder.
    #[tokio::test]
    async fn waiting_entries_name_exactly_their_folders() {
        use crate::migrate::journal::Write;
        let acct = crate::migrate::mirror::tests::account().await;
        let mut folders = vec!["50%_off", "say \"hi\\"];
        folders.extend(["Inbox"; 20]);
        folders.push("INBOX");
        for folder in folders {
            let create = Write::Create {
                folder: folder.into(),
            };
            crate::migrate::mirror::tests::journal(&acct, create).await;
        }
        // Unreadable, it may be a write to Broken.
        let broken = r#"{"kind":"nonsense","folder":"Broken"}"#;
        acct.store
            .journal_append(acct.id, "create", broken)
            .await
            .unwrap();
        acct.count_pending().await;
        for (folder, want) in [
            ("Broken", true),
            ("50%_off", true),
            ("50 percent off", false),
            ("say \"hi\\", true),
            ("say", false),
            ("Inbox", true),
            ("INBOX", true),
            ("inbox", false),
        ] {
            assert_eq!(acct.journal_names(folder).await.unwrap(), want, "{folder}");
        }
    }

    /// Logins in a row check INBOX on OLD once a minute, not once a login.
    #[tokio::test]
    async fn logins_check_inbox_once_a_minute() {
        let acct = crate::migrate::mirror::tests::account().await;
        tokio::time::pause(); // after the store is open: its pool has timeouts of its own
        acct.names()
            .unwrap()
            .remember([("INBOX".to_string(), "INBOX".to_string())]);
        let inbox = acct.folder("INBOX");
        // The check started is stopped before it runs: its failure to reach OLD (real time,
        // against the paused clock) would make the account wait before the next login's.
        let started = || inbox.running().take().map(|r| r.abort.abort()).is_some();
        acct.login_head_start();
        assert!(started(), "the first login checks INBOX");
        *inbox.checked() = Some(Instant::now());
        tokio::time::advance(Duration::from_secs(59)).await;
        acct.login_head_start();
        assert!(!started(), "INBOX was checked 59 s ago");
        tokio::time::advance(Duration::from_secs(2)).await;
        acct.login_head_start();
        assert!(started(), "INBOX was checked 61 s ago");
    }
}
