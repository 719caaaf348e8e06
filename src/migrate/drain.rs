//! The journal's two ends for one account: [`Account::record`] commits a write NEW accepted
//! before the client hears of it (bounded in time; back-pressure when OLD falls behind), and
//! [`Account::drain_journal`] replays the entries on OLD in order. An entry is done only when
//! OLD has it; a refused one is retried with back-off and parked (the account `diverged`) when
//! it keeps being refused or can never apply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::account::Account;
use super::journal::{Entry, Write};
use super::lease::Lease;
use super::mirror::{self, MirrorError};
use super::pool::Conn;
use super::relayed::{Appended, Key};
use crate::lock::Poisoned;
use crate::store::{JournalEntry, LinkChange, StoreError};

/// Longest wait for the store to commit a journal entry before the client is told `* BYE`.
pub(crate) const COMMIT_WITHIN: Duration = Duration::from_secs(5);
/// Longest a session waits for the committer's answer about its entry: the commit running when
/// it asked, then its own, each bounded by [`COMMIT_WITHIN`]. The answer decides OK or `* BYE`;
/// a session that stopped waiting first could say BYE for an entry its commit then journaled.
/// This bound only guards against a committer that stopped answering.
const RECORD_WITHIN: Duration = Duration::from_secs(2 * COMMIT_WITHIN.as_secs() + 1);
/// Past this many entries waiting for OLD, a write waits for the mirror (back-pressure) ...
const HIGH_WATER: u64 = 5_000;
/// ... at most this long per write ...
const PRESSURE_WAIT: Duration = Duration::from_secs(5);
/// ... and past this many the account stops journaling and is marked diverged (OLD is
/// reconciled later) rather than growing the journal without bound.
const MAX_PENDING: u64 = 100_000;
/// Mirrored entries are purged at most this often (one process, all accounts).
const PURGE_EVERY_SECS: i64 = 60;

/// How many of the account's journal entries wait for OLD, as this process knows it: counted up
/// by its records and down by its mirror, and set from the store now and then (other processes'
/// entries, a restart). Setting it never loses an entry this process recorded while the store
/// was being read: a count too low would let a pass take a message the user moved for one they
/// deleted (`UserWrites::new_settled`).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    waiting: AtomicU64,
    /// Entries this process recorded, ever.
    recorded: AtomicU64,
}

impl Pending {
    pub(crate) fn get(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    fn journaled(&self) {
        self.recorded.fetch_add(1, Ordering::SeqCst);
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    fn mirrored(&self) {
        // Err: at 0 already, the count was set from the store after this entry was done.
        let _ = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Taken before the store is read for [`Pending::set`].
    fn mark(&self) -> u64 {
        self.recorded.load(Ordering::SeqCst)
    }

    /// `count` entries wait, as read from the store after `mark`: those recorded since may be
    /// missing from it and are added (counted twice at worst, which only keeps passes careful
    /// until the next count).
    fn set(&self, count: u64, mark: u64) {
        loop {
            let recorded = self.recorded.load(Ordering::SeqCst);
            self.waiting
                .store(count + (recorded - mark), Ordering::SeqCst);
            if self.recorded.load(Ordering::SeqCst) == recorded {
                return;
            }
        }
    }
}
/// Most entries one read of the journal brings to the drain.
const BATCH: u32 = 64;
static LAST_PURGE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// What the drain does after a batch of entries.
enum Next {
    /// Reads the next batch.
    More,
    /// Stops until it is woken: an entry waits for its retry time (the connection is kept).
    Wait,
    /// Stops: OLD or the store failed (the connection is dropped).
    Stop,
}

/// Whether an entry of `kind` is marked done as soon as OLD has it, rather than with the rest of
/// its batch. Replayed after the process died between OLD's answer and the mark, an APPEND or a
/// COPY would be made twice and a RENAME refused: at most one such entry may be on OLD unmarked,
/// the one [`mirror::apply`] replays with care (`careful`, which lasts through the entries before
/// it), so each is marked at once (with the batch's entries before it). Flags, expunges,
/// creates, deletes and subscriptions replayed in order change nothing twice: their marks wait
/// for the end of the batch, one commit for all, unless their mirror changed links (an
/// expunge's), which go with the mark at once.
fn marked_at_once(kind: &str) -> bool {
    matches!(kind, "append" | "copy" | "move" | "rename")
}

/// Why a write could not be journaled; the client must not hear OK from the proxy.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the journal entry could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the state store did not commit the journal entry within {secs} s: {why}", secs = COMMIT_WITHIN.as_secs())]
    NotCommitted { why: String },
    /// The folder names the entry needs are unusable: journaled without them, the write would
    /// never be mirrored.
    #[error(transparent)]
    Poisoned(#[from] Poisoned),
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Account {
    /// Journals a write NEW accepted, with the OLD names its folders have now. It is committed
    /// when this returns `Ok`; an `Err` means the client must be told `* BYE` instead of the OK
    /// (NEW has the write; OLD is reconciled as soon as the store takes writes again).
    /// `appended`: the message of an APPEND of one, as NEW got it, for the mirror to append to
    /// OLD without reading it back (never journaled).
    pub async fn record(
        self: &Arc<Self>,
        write: Write,
        appended: Option<Appended>,
    ) -> Result<(), RecordError> {
        // The store's retired check is in the append itself.
        if self.is_retired_now() {
            return Ok(());
        }
        let old = self.names()?.journal(&write);
        if let (
            Some(message),
            Write::Append {
                folder,
                uids,
                validity: Some(validity),
            },
        ) = (appended, &write)
            && let [uid] = uids[..]
        {
            // Kept first: the mirror may take the entry as soon as it is committed.
            let key = Key {
                account: self.id,
                folder: folder.clone(),
                validity: *validity,
                uid,
            };
            self.relayed.keep(key, message);
        }
        let kind = write.kind();
        // Not in a fleet: other proxies write to NEW for the account too (see `alone`).
        let alone = match &write {
            Write::Copy { from, .. } if !self.store.shared() => self.alone.stamp(from),
            _ => None,
        };
        let payload = Entry {
            write,
            old: Some(old),
            alone,
        }
        .to_json()?;
        if !self.pressure().await {
            self.diverge(&format!(
                "more than {MAX_PENDING} journal entries wait for OLD: a {kind} was not journaled"
            ))
            .await;
            return Ok(());
        }
        let started = Instant::now();
        let commit = self.committer.append(self.id, kind, payload);
        let committed = tokio::time::timeout(RECORD_WITHIN, commit).await;
        self.pool.gauges().journal_wait(started.elapsed());
        let why = match committed {
            Ok(Ok(None)) => {
                self.saw_retired();
                return Ok(());
            }
            Ok(Ok(Some(id))) => {
                debug!(id, kind, "journaled");
                self.last_journaled.fetch_max(id, Ordering::SeqCst);
                self.pending.journaled();
                self.wake.notify_one();
                return Ok(());
            }
            Ok(Err(why)) => why,
            Err(_) => "timed out".to_string(),
        };
        warn!("a {kind} NEW accepted could not be journaled: {why}");
        self.reconcile_soon(format!(
            "a {kind} NEW accepted could not be journaled ({why})"
        ));
        Err(RecordError::NotCommitted { why })
    }

    /// NEW may have a write OLD will never get through the journal (`reason`): the account
    /// diverges and OLD is reconciled with NEW by itself, as soon as the store takes writes
    /// again. Until then no pass copies (see [`Account::unsure`]).
    pub(crate) fn reconcile_soon(self: &Arc<Self>, reason: String) {
        self.unjournaled.0.fetch_add(1, Ordering::SeqCst);
        if !self.recovering.swap(true, Ordering::SeqCst) {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.recover_when_writable(&reason).await });
        }
    }

    /// After a write could not be journaled: marks the account diverged as soon as the store
    /// takes writes again, then brings OLD in line with NEW by itself (the reconcile an operator
    /// would run: NEW has the write, OLD lacks only what the journal lost). One recovery per
    /// account runs at a time, however many writes fail meanwhile; it goes again while a failure
    /// came after its reconcile started. While the store refuses, OLD is unreachable or the
    /// reconcile fails, the account stays diverged (`status` shows it and why) and the attempts
    /// go on with back-off until the proxy stops; `imapferry reconcile` does the same by hand.
    async fn recover_when_writable(self: Arc<Self>, reason: &str) {
        loop {
            self.recover(reason).await;
            self.recovering.store(false, Ordering::SeqCst);
            // A failure after the reconcile started, and before the flag was cleared, found the
            // flag set and started nothing.
            if !self.unsure() {
                return self.clear_mark_later();
            }
            if *self.stop.borrow() || self.recovering.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    async fn recover(&self, reason: &str) {
        let mut stop = self.stop.clone();
        let mut delay = Duration::from_millis(500);
        let mut wait = async |delay: &mut Duration| {
            let stopped = tokio::select! {
                _ = tokio::time::sleep(*delay) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            *delay = (*delay * 2).min(Duration::from_secs(30));
            stopped
        };
        loop {
            match self.store.mark_diverged(self.id, reason).await {
                Ok(_) => {
                    self.recovery_stuck.store(false, Ordering::SeqCst);
                    break warn!("OLD diverges from NEW: {reason}");
                }
                Err(e) => {
                    self.recovery_stuck.store(true, Ordering::SeqCst);
                    debug!("{e}: marking diverged again in {delay:?}");
                }
            }
            if wait(&mut delay).await {
                return;
            }
        }
        loop {
            let covers = self.unjournaled.0.load(Ordering::SeqCst);
            match self.reconcile().await {
                Ok(done) => {
                    self.unjournaled.1.fetch_max(covers, Ordering::SeqCst);
                    self.recovery_stuck.store(false, Ordering::SeqCst);
                    return info!(?done, "OLD reconciled with NEW by itself: {reason}");
                }
                Err(e) => {
                    self.recovery_stuck.store(true, Ordering::SeqCst);
                    warn!("{e}: OLD not reconciled yet; again in {delay:?}");
                }
            }
            if wait(&mut delay).await {
                return;
            }
        }
    }

    /// Back-pressure: past [`HIGH_WATER`] waiting entries a write waits (at most
    /// [`PRESSURE_WAIT`]) while the mirror makes progress; OLD being unreachable, or the mirror
    /// paused, never blocks the user. `false`: past [`MAX_PENDING`], nothing more is journaled.
    async fn pressure(&self) -> bool {
        let waiting = || self.pending.get();
        if waiting() >= MAX_PENDING {
            return false;
        }
        let until = tokio::time::Instant::now() + PRESSURE_WAIT;
        while waiting() >= HIGH_WATER
            && !self.unreachable()
            && !self.mirror_paused()
            && tokio::time::Instant::now() < until
        {
            self.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Re-reads how many entries wait for OLD (at a login or sweep).
    pub(super) async fn count_pending(&self) {
        let mark = self.pending.mark();
        match self.store.journal_pending_count(self.id).await {
            Ok(n) => self.pending.set(n, mark),
            Err(e) => warn!("{e}"),
        }
    }

    /// Whether entries still waiting for OLD name NEW folder `folder`.
    pub(super) async fn journal_names(&self, folder: &str) -> Result<bool, StoreError> {
        if self.pending.get() == 0 {
            return Ok(false);
        }
        // The entries whose text holds the name as the journal writes it, a few at a time
        // until one names the folder: a SELECT while many entries wait (a paused mirror) does
        // not read them all. One that cannot be read counts as naming it (the drain parks it
        // and says so): the folder is not read from OLD past a write it may hold.
        const PAGE: u32 = 16;
        let quoted = serde_json::Value::from(folder).to_string();
        let mut after = 0;
        loop {
            let page = (self.store)
                .journal_pending_holding(self.id, &quoted, after, PAGE)
                .await?;
            let names = page.iter().any(|e| {
                Entry::from_json(&e.payload).map_or(true, |e| e.write.folders().contains(&folder))
            });
            match page.last() {
                _ if names => return Ok(true),
                Some(last) if page.len() == PAGE as usize => after = last.id,
                _ => return Ok(false),
            }
        }
    }

    /// Whether `[migration] mirror_paused` keeps every write from OLD.
    pub(super) fn mirror_paused(&self) -> bool {
        self.mirror_paused.load(Ordering::SeqCst)
    }

    /// Mirrors the pending journal entries to OLD, in order. It stops at an entry OLD refused
    /// until its retry time, while OLD cannot be reached and while the mirror is paused (the
    /// entries wait).
    pub(crate) async fn drain_journal(&self) {
        if self.mirror_paused() {
            let waiting = self.pending.get();
            if waiting > 0 {
                debug!(
                    waiting,
                    "the mirror is paused: journal entries wait for OLD"
                );
            }
            return;
        }
        if self.is_retired_now() {
            return;
        }
        // This process alone writes an unshared journal, and counts what it writes: with
        // nothing counted, there is nothing to read (a login or sweep counts it again). The
        // account's state is read all the same, so that a retirement by another process
        // (`imapferry retire`) is seen; the journal's read below reads it too.
        if self.unreachable() || (!self.store.shared() && self.pending.get() == 0) {
            self.is_retired().await;
            return;
        }
        let _one = self.mirror_lock.lock().await;
        // In a fleet one proxy drains an account's journal at a time, entries of every proxy.
        let _drainer = match Lease::try_take(&self.store, format!("journal:{}", self.id)).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                // This proxy's worker keeps coming back while entries wait: it takes over if
                // the drainer dies (its lease expires).
                return self.count_pending().await;
            }
            Err(e) => return warn!("{e}"),
        };
        let journaled_before = self.last_journaled.load(Ordering::SeqCst);
        loop {
            let mark = self.pending.mark();
            let entries = match self.store.journal_to_mirror(self.id, BATCH).await {
                Ok(None) => return self.saw_retired(),
                Ok(Some(to)) => {
                    self.pairs.at_epoch(to.pairs_epoch);
                    to.entries
                }
                Err(e) => return warn!("{e}"),
            };
            if entries.is_empty() {
                self.pending.set(0, mark);
                return self.purge().await;
            }
            if entries[0].retry_at.is_some_and(|t| t > unix_now()) {
                return;
            }
            let (mut conn, _permit) = match self.pool.get().await {
                Ok(c) => c,
                Err(e) => return self.failed(&e).await,
            };
            // Read to the end: with no other process writing this journal, and none of this
            // one's sessions journaling since the read, nothing is left once these are done.
            let all = entries.len() < BATCH as usize && !self.store.shared();
            // Entries OLD has and the journal does not say so yet (see `marked_at_once`).
            let mut mirrored = Vec::new();
            let next = self
                .mirror_batch(&mut conn, entries, &mut mirrored, &self.pairs)
                .await;
            if let Err(e) = self.mark_done(&mut mirrored).await {
                // Replayed when the drain comes back; with care, in case.
                self.careful.store(true, Ordering::SeqCst);
                return warn!("{e}");
            }
            match next {
                Next::More if all && self.pending.mark() == mark => {
                    self.reached();
                    self.pool.put(conn);
                    // (An entry committed after the read and not counted yet wakes the
                    // worker when it is.)
                    self.pending.set(0, mark);
                    return self.purge().await;
                }
                // This process journaled more since the drain began: that waits for the next
                // drain (the worker is woken for it). A drain ends even while a user writes
                // faster than OLD takes the writes, so whoever waits for it (a folder's check,
                // a login's) is not held up meanwhile; entries of other processes, and those
                // of a quiet account, are drained to the end as before.
                Next::More if self.last_journaled.load(Ordering::SeqCst) > journaled_before => {
                    self.reached();
                    return self.pool.put(conn);
                }
                Next::More => {
                    self.reached();
                    self.pool.put(conn);
                }
                Next::Wait => return self.pool.put(conn),
                Next::Stop => return,
            }
        }
    }

    /// Mirrors `entries` in order on `conn`, until one of them stops the drain; the ids of
    /// those OLD now has and the journal does not mark yet are left in `mirrored`.
    async fn mirror_batch(
        &self,
        conn: &mut Conn,
        entries: Vec<JournalEntry>,
        mirrored: &mut Vec<i64>,
        pairs: &mirror::Pairs,
    ) -> Next {
        let entries: Vec<mirror::Replay> = entries.into_iter().map(Into::into).collect();
        let mut i = 0;
        while let Some(replay) = entries.get(i) {
            let entry = &replay.row;
            // Consecutive flag entries of a folder: their STOREs go to OLD together (after an
            // error they are mirrored one by one below, which replays nothing twice).
            let run = mirror::flag_run(&entries[i..]);
            if run.len() > 1 {
                let was_careful = self.careful.swap(true, Ordering::SeqCst);
                let result = mirror::apply_flag_run(self, conn, &run, pairs).await;
                self.careful.store(was_careful, Ordering::SeqCst);
                match result {
                    Ok(()) => {
                        debug!(entries = run.len(), "flag entries mirrored to OLD together");
                        mirrored.extend(run.iter().map(|s| s.id));
                        i += run.len();
                        continue;
                    }
                    Err(e) => debug!("flag entries mirrored one by one: {e}"),
                }
            }
            i += 1;
            if entry.retry_at.is_some_and(|t| t > unix_now()) {
                return Next::Wait;
            }
            let was_careful = self.careful.swap(true, Ordering::SeqCst);
            let careful = was_careful || entry.id <= self.careful_through.load(Ordering::SeqCst);
            let result = mirror::apply(self, conn, replay, careful, pairs).await;
            if matches!(entry.kind.as_str(), "delete" | "rename") {
                // Idle connections may have the folder selected: the server ends them. Live
                // pickup's selects its folder again.
                self.pool.clear();
                self.restructured.fetch_add(1, Ordering::SeqCst);
                self.pickup_wake.notify_one();
            }
            let parked = match result {
                Ok(links) => {
                    debug!(id = entry.id, kind = %entry.kind, "mirrored to OLD");
                    mirrored.push(entry.id);
                    // Recorded before the next entry starts, if it must be (with the links it
                    // made: nothing else writes them); when that fails, the caller tries again
                    // and says why, and the entry is replayed with care.
                    if !marked_at_once(&entry.kind) && links.is_empty() {
                        // Care lasts until an entry a replay could repeat is marked: the one
                        // in progress when a predecessor died may come after entries it had
                        // mirrored whose marks waited for their batch's end.
                        self.careful.store(was_careful, Ordering::SeqCst);
                        continue;
                    }
                    let recorded = self.mark_done_with(mirrored, links).await.is_ok();
                    self.careful.store(!recorded, Ordering::SeqCst);
                    if !recorded {
                        // Not marked without its links: replayed (with care), it finds
                        // OLD's side by identity key and links it.
                        mirrored.retain(|id| *id != entry.id);
                        return Next::Stop;
                    }
                    continue;
                }
                Err(MirrorError::Unreachable(e)) => {
                    self.failed(&e).await;
                    return Next::Stop;
                }
                Err(e @ (MirrorError::Store(_) | MirrorError::Keys(_))) => {
                    warn!("{e}");
                    return Next::Stop;
                }
                // The entry waits, as for an unreachable OLD, until the proxy restarts.
                Err(MirrorError::Poisoned(e)) => {
                    error!("the journal waits for OLD: {e}");
                    return Next::Stop;
                }
                Err(MirrorError::Refused(why)) => match self.refused(entry, &why).await {
                    Ok(true) => Ok(()),
                    Ok(false) => return Next::Wait,
                    Err(e) => Err(e),
                },
                Err(MirrorError::Never(why)) => self.park(entry, &why).await,
            };
            match parked {
                // Out of the queue.
                Ok(()) => self.pending.mirrored(),
                Err(e) => {
                    warn!("{e}");
                    return Next::Stop;
                }
            }
        }
        Next::More
    }

    /// Marks `mirrored` done, with the next group commit, and empties it.
    async fn mark_done(&self, mirrored: &mut Vec<i64>) -> Result<(), String> {
        self.mark_done_with(mirrored, Vec::new()).await
    }

    /// [`Self::mark_done`] with the `links` the last entry made: one transaction of its own
    /// writes both (without links, the marks go with the next group commit).
    async fn mark_done_with(
        &self,
        mirrored: &mut Vec<i64>,
        links: Vec<LinkChange>,
    ) -> Result<(), String> {
        if mirrored.is_empty() {
            return Ok(());
        }
        let commit = async {
            if links.is_empty() {
                return self.committer.mirrored(mirrored.clone()).await;
            }
            match self.store.journal_mirrored(mirrored, &links).await {
                Ok(missing) => match missing.first() {
                    Some(id) => Err(format!("no journal entry {id}")),
                    None => Ok(()),
                },
                Err(e) => Err(e.to_string()),
            }
        };
        match tokio::time::timeout(COMMIT_WITHIN, commit).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(format!("entries mirrored to OLD were not marked: {why}")),
            Err(_) => return Err("entries mirrored to OLD were not marked: timed out".into()),
        }
        for _ in mirrored.drain(..) {
            self.pending.mirrored();
        }
        Ok(())
    }

    /// OLD refused `entry`: tried again later (`Ok(false)`: the drain waits for it), or parked
    /// after `[migration] mirror_attempts` refusals (`Ok(true)`: the drain goes on).
    async fn refused(&self, entry: &JournalEntry, why: &str) -> Result<bool, StoreError> {
        let delay = (self.journal.retry.as_secs() as i64) << entry.attempts.min(5);
        let attempts = self
            .store
            .journal_retry(entry.id, why, unix_now() + delay)
            .await?;
        warn!(id = entry.id, kind = %entry.kind, attempts, "OLD refused a journal entry: {why}");
        if attempts < self.journal.attempts {
            return Ok(false);
        }
        self.park(entry, &format!("refused {attempts} times: {why}"))
            .await?;
        Ok(true)
    }

    /// Deletes mirrored entries older than `[migration] journal_keep_days` (all accounts), at
    /// most once a minute per process (every time when nothing is kept).
    async fn purge(&self) {
        let now = unix_now();
        let last = LAST_PURGE.load(Ordering::SeqCst);
        let keep = self.journal.keep.as_secs() as i64;
        if (keep > 0 && now - last < PURGE_EVERY_SECS)
            || LAST_PURGE
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        match self.store.journal_purge(now + 1 - keep).await {
            Ok(0) => {}
            Ok(n) => debug!(entries = n, "mirrored journal entries purged"),
            Err(e) => warn!("{e}: mirrored journal entries not purged"),
        }
    }

    /// `entry` can never apply: it leaves the queue with its reason, and the account diverges.
    async fn park(&self, entry: &JournalEntry, why: &str) -> Result<(), StoreError> {
        self.store.journal_park(entry.id, why).await?;
        // What a later COPY's sources have on OLD lacks it.
        self.alone.unsure();
        self.diverge(&format!(
            "journal entry {} ({}) could not be applied to OLD: {why}",
            entry.id, entry.kind
        ))
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Pending, marked_at_once};

    /// Every kind the journal writes (`Write::kind`): those whose replay could make a second
    /// copy on OLD, or be refused, are marked at once; the rest with their batch.
    #[test]
    fn entries_a_replay_could_repeat_are_marked_done_at_once() {
        for (kind, at_once) in [
            ("append", true),
            ("copy", true),
            ("move", true),
            ("rename", true),
            ("flags", false),
            ("expunge", false),
            ("create", false),
            ("delete", false),
            ("subscribe", false),
        ] {
            assert_eq!(marked_at_once(kind), at_once, "{kind}");
        }
    }

    /// An entry recorded while the store was being read is not lost when the count read is
    /// set (the store's answer may predate its commit).
    #[test]
    fn a_count_from_the_store_keeps_what_was_recorded_while_it_was_read() {
        let p = Pending::default();
        p.journaled();
        let mark = p.mark();
        p.journaled(); // committed after the store answered
        p.set(1, mark);
        assert_eq!(p.get(), 2);
        p.mirrored();
        p.mirrored();
        p.mirrored();
        assert_eq!(p.get(), 0);
        let mark = p.mark();
        p.set(0, mark);
        assert_eq!(p.get(), 0);
    }
}
