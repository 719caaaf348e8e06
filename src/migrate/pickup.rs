//! Live pickup (DESIGN.md §1.5): while sessions have folders selected, mail that lands on OLD
//! reaches them without a new SELECT. Per account, one OLD connection IDLEs (RFC 2177) on one
//! selected folder, INBOX first, where OLD offers IDLE; the other selected folders (all of them
//! with `live_pickup = "poll"`, or without IDLE) get a STATUS on a [`Schedule`]. A change starts
//! the folder's backfill, unless the mirror's own writes may account for it: that check waits
//! (see [`Watcher::look`]). The mode is per account and reloadable ([`Policy`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug};

use super::account::{Account, take_wake};
use super::gauges::{Asking, Counted};
use super::pool::OldConn;
use crate::config::{self, LivePickup};
use crate::imap::{MailboxInfo, MailboxStatus, Untagged};
use crate::store::MailboxState;
use crate::sync::SyncError;

/// IDLE is ended and started again this often (RFC 2177 asks for less than 29 minutes).
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);

/// `[migration]`'s live pickup settings, as the last reload set them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    mode: LivePickup,
    /// By account name (normalised as logins are).
    per_account: HashMap<String, LivePickup>,
    /// The first poll interval after a change (zero: live pickup is off for everyone).
    pub first: Duration,
    pub max: Duration,
}

impl Policy {
    /// `name` normalises the account names of `live_pickup_for` as logins are.
    pub fn new(m: &config::Migration, name: impl Fn(&str) -> String) -> Policy {
        Policy {
            mode: m.live_pickup,
            per_account: m
                .live_pickup_for
                .iter()
                .map(|(account, mode)| (name(account), *mode))
                .collect(),
            first: Duration::from_secs(m.live_pickup_secs),
            max: Duration::from_secs(m.live_pickup_max_secs.max(m.live_pickup_secs)),
        }
    }

    /// The mode of `account`: its own, else everyone's; `live_pickup_secs = 0` is off for all.
    pub fn mode_of(&self, account: &str) -> LivePickup {
        if self.first.is_zero() {
            return LivePickup::Off;
        }
        self.per_account.get(account).copied().unwrap_or(self.mode)
    }
}

/// When to poll next: `first` after a change, doubling while nothing changes, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    first: Duration,
    max: Duration,
    wait: Duration,
}

impl Schedule {
    pub fn new(first: Duration, max: Duration) -> Schedule {
        Schedule {
            first,
            max,
            wait: first,
        }
    }

    /// The current wait between two polls.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The wait before the next poll, after a poll that saw a change or not.
    pub fn after(&mut self, changed: bool) -> Duration {
        self.wait = if changed {
            self.first
        } else {
            (self.wait * 2).min(self.max)
        };
        self.wait
    }

    /// New bounds (a reload); the current wait stays within them.
    pub fn bound(&mut self, first: Duration, max: Duration) {
        self.first = first;
        self.max = max;
        self.wait = self.wait.clamp(first, max);
    }
}

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    Due,
    /// The selected folders or the settings changed.
    Wake,
    Stop,
}

/// Waits until `due`, a wake-up or the proxy's stop.
pub(crate) async fn until(due: Instant, wake: &Notify, stop: &mut watch::Receiver<bool>) -> Woken {
    tokio::select! {
        () = tokio::time::sleep_until(due) => Woken::Due,
        () = wake.notified() => Woken::Wake,
        _ = stop.wait_for(|s| *s) => Woken::Stop,
    }
}

/// A folder's state as STATUS or EXAMINE shows it.
fn state_of_status(s: MailboxStatus) -> MailboxState {
    MailboxState {
        uidvalidity: s.uidvalidity,
        uidnext: s.uidnext,
        highestmodseq: s.highestmodseq,
        messages: s.messages,
    }
}

fn state_of_info(i: &MailboxInfo) -> MailboxState {
    MailboxState {
        uidvalidity: i.uidvalidity,
        uidnext: i.uidnext,
        highestmodseq: i.highestmodseq,
        messages: i.exists,
    }
}

/// Whether OLD's folder changed between two looks (a modseq counts only when both have one).
fn changed(before: &MailboxState, now: &MailboxState) -> bool {
    before.uidvalidity != now.uidvalidity
        || before.uidnext != now.uidnext
        || before.messages != now.messages
        || (before.highestmodseq != 0
            && now.highestmodseq != 0
            && before.highestmodseq != now.highestmodseq)
}

/// A response during IDLE that says the folder changed: new mail, a deletion, changed flags.
fn is_change(u: &Untagged) -> bool {
    match u {
        Untagged::Exists(_) | Untagged::Expunge(_) | Untagged::Fetch(_) => true,
        Untagged::Other(text) => text
            .get(..8)
            .is_some_and(|w| w.eq_ignore_ascii_case("VANISHED")),
        _ => false,
    }
}

/// Whether a round goes on.
enum Flow {
    Go,
    Stop,
}

/// An IDLE under way.
struct Idling {
    tag: String,
    /// Its folder (OLD name).
    folder: String,
    /// It reported a change of the folder.
    changed: bool,
    /// When it is ended and started again.
    renew: Instant,
}

/// One account's live pickup while it runs.
struct Watcher {
    acct: Arc<Account>,
    conn: Option<OldConn>,
    /// Whether OLD offers IDLE (known once logged in).
    idle_offered: Option<bool>,
    /// The folder the connection has EXAMINEd for IDLE (OLD name), and
    /// [`Account::restructured`] then.
    examined: Option<(String, u64)>,
    /// The kept folders (NEW name, OLD name), INBOX first.
    folders: Vec<(String, String)>,
    /// When a lingering folder leaves `folders`.
    shrinks: Option<Instant>,
    /// Each polled folder's state at the last look, by OLD name.
    seen: HashMap<String, MailboxState>,
    /// Folders whose changes the mirror's own writes may account for, by OLD name: since when
    /// their check waits.
    deferred: HashMap<String, Instant>,
    /// The IDLE under way on `conn`: a wake-up that leaves its folder the first ends no IDLE.
    idling: Option<Idling>,
    /// IDLE reported a change of its folder, which a STATUS looks at next.
    idle_changed: bool,
    /// When IDLE's folder was last looked at by STATUS or EXAMINE.
    idle_looked: Instant,
    schedule: Schedule,
    due: Instant,
    counted: Option<(Asking, Counted)>,
    stop: watch::Receiver<bool>,
}

impl Account {
    /// Starts live pickup unless it runs already; it ends by itself when no folder is selected,
    /// its mode is off, the account retires or the proxy stops.
    pub(super) fn spawn_pickup(self: &Arc<Self>) {
        if self.pickup_mode() == LivePickup::Off
            || self.is_retired_now()
            || *self.stop.borrow()
            || self.kept().0.is_empty()
        {
            return;
        }
        if !self.pickup_running.swap(true, Ordering::SeqCst) {
            let policy = self.pickup.get();
            let watcher = Watcher {
                acct: Arc::clone(self),
                conn: None,
                idle_offered: None,
                examined: None,
                idling: None,
                folders: Vec::new(),
                shrinks: None,
                seen: HashMap::new(),
                deferred: HashMap::new(),
                idle_changed: false,
                idle_looked: Instant::now(),
                schedule: Schedule::new(policy.first, policy.max),
                due: Instant::now(),
                counted: None,
                stop: self.stop.clone(),
            };
            tokio::spawn(watcher.run().in_current_span());
        }
    }

    /// This account's live pickup mode now.
    pub(super) fn pickup_mode(&self) -> LivePickup {
        self.pickup.get().mode_of(&self.name)
    }

    /// The folders live pickup keeps that OLD has: (NEW name, OLD name), INBOX first (where
    /// new mail lands: IDLE watches it), then by name; and when the list next shrinks.
    fn watched_pairs(&self) -> (Vec<(String, String)>, Option<Instant>) {
        let (kept, until) = self.kept();
        let mut pairs: Vec<(String, String)> = kept
            .into_iter()
            .filter_map(|new| Some((new.clone(), self.old_name(&new).ok()??)))
            .collect();
        pairs.sort_by_key(|(new, _)| (!new.eq_ignore_ascii_case("INBOX"), new.clone()));
        (pairs, until)
    }
}

impl Watcher {
    async fn run(mut self) {
        loop {
            if *self.stop.borrow() || self.acct.is_retired_now() {
                break;
            }
            take_wake(&self.acct.pickup_wake); // what it announced is read below
            let policy = self.acct.pickup.get();
            let mode = policy.mode_of(&self.acct.name);
            let (folders, shrinks) = self.acct.watched_pairs();
            self.shrinks = shrinks;
            if mode == LivePickup::Off || folders.is_empty() {
                break;
            }
            self.schedule.bound(policy.first, policy.max);
            if folders != self.folders {
                // The user went to another folder: activity, so ask soon again.
                let kept = |old: &String| folders.iter().any(|(_, o)| o == old);
                self.seen.retain(|old, _| kept(old));
                self.deferred.retain(|old, _| kept(old));
                self.folders = folders;
                self.schedule = Schedule::new(policy.first, policy.max);
                self.due = Instant::now() + policy.first;
            }
            let idle = mode == LivePickup::Idle && self.idle_offered != Some(false);
            let round = if self.acct.unreachable() {
                self.wait_due().await
            } else if idle {
                self.idle_round().await
            } else {
                self.poll_round().await
            };
            match round {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => break,
                Err(e) => {
                    self.conn = None;
                    self.idling = None;
                    self.examined = None;
                    self.acct.failed(&e).await;
                    let wait = self.schedule.after(false);
                    debug!("live pickup: {e}; again in {wait:?}");
                    self.due = Instant::now() + wait;
                    if let Ok(Flow::Stop) = self.wait_due().await {
                        break;
                    }
                }
            }
        }
        self.counted = None;
        let stopped = *self.stop.borrow();
        if !stopped && let Err(e) = self.end_idle().await {
            debug!("live pickup: {e}");
            self.conn = None;
        }
        if let Some(conn) = self.conn.take()
            && !stopped
        {
            // Out of IDLE (a stop ends it without DONE): kept for the user's next login.
            self.acct.pool.put_old(conn);
        }
        self.acct.pickup_running.store(false, Ordering::SeqCst);
        // A folder selected while the loop was ending found the flag still set.
        if !stopped {
            self.acct.spawn_pickup();
        }
    }

    /// Counts this account in the gauges as IDLEing or polling.
    fn count(&mut self, asking: Asking) {
        if self.counted.as_ref().is_none_or(|(a, _)| *a != asking) {
            self.counted = Some((asking, self.acct.pool.gauges().pickup(asking)));
        }
    }

    async fn wait_due(&mut self) -> Result<Flow, SyncError> {
        let acct = Arc::clone(&self.acct);
        Ok(
            match until(self.due, &acct.pickup_wake, &mut self.stop).await {
                Woken::Stop => Flow::Stop,
                Woken::Due | Woken::Wake => Flow::Go,
            },
        )
    }

    /// The connection, out of IDLE.
    async fn connect(&mut self) -> Result<&mut OldConn, SyncError> {
        self.end_idle().await?;
        if self.conn.is_none() {
            let conn = self.acct.pool.old().await?;
            self.idle_offered = Some(conn.client.has("IDLE"));
            self.examined = None;
            self.conn = Some(conn);
        }
        // Just set when it was empty.
        self.conn
            .as_mut()
            .ok_or_else(|| SyncError::Options("no OLD connection".into()))
    }

    /// Whether `old` changed since the last look (the first look compares with what the last
    /// backfill recorded). A changed folder is compared with the store again next time, so a
    /// backfill that could not run is tried again.
    async fn observe(&mut self, old: &str, now: MailboxState) -> bool {
        let differs = match self.seen.get(old) {
            Some(before) => changed(before, &now),
            None => match self.acct.store.folder_pairs(self.acct.id).await {
                Ok(pairs) => pairs
                    .iter()
                    .find(|p| p.old_name == old)
                    .and_then(|p| p.old)
                    .is_none_or(|before| changed(&before, &now)),
                Err(e) => {
                    debug!("{e}: OLD's folder is taken as changed");
                    true
                }
            },
        };
        if differs {
            self.seen.remove(old);
        } else {
            self.seen.insert(old.to_string(), now);
        }
        differs
    }

    /// Looks at OLD's folder (NEW name `new`) in state `now`, and checks it when it changed
    /// ([`Self::observe`]). A change that the mirror's own writes may account for (its STATUS
    /// shows no message the mirror did not add, none gone that it did not expunge) waits: the
    /// folder is checked once it has waited `live_pickup_max_secs` (a flag someone else
    /// changed shows in no STATUS), not at every write of the mirror. Returns whether it
    /// changed.
    async fn look(&mut self, new: &str, old: &str, now: MailboxState) -> bool {
        let changed = self.observe(old, now).await;
        let own = changed && self.acct.folder(new).own_may_explain(&now);
        if own {
            self.seen.insert(old.to_string(), now);
            self.deferred
                .entry(old.to_string())
                .or_insert_with(Instant::now);
            if !self.waited(old) {
                return true;
            }
        } else if !changed && !self.waited(old) {
            return false;
        }
        self.deferred.remove(old);
        self.acct.pick_up(new);
        changed
    }

    /// Whether the check of `old` has waited `live_pickup_max_secs` for the mirror's writes.
    fn waited(&self, old: &str) -> bool {
        (self.deferred.get(old)).is_some_and(|since| since.elapsed() >= self.acct.pickup.get().max)
    }

    /// STATUS of `folders` on OLD; a changed one is backfilled. Sets when to poll next.
    async fn poll(&mut self, folders: &[(String, String)]) -> Result<(), SyncError> {
        let names: Vec<String> = folders.iter().map(|(_, old)| old.clone()).collect();
        let answers = self.connect().await?.client.status_many(&names).await?;
        let mut any = false;
        for ((new, old), answer) in folders.iter().zip(answers) {
            match answer {
                Ok(status) => any |= self.look(new, old, state_of_status(status)).await,
                // The folder went away on OLD: the next backfill or sweep sees it.
                Err(e) => debug!(folder = %old, "live pickup: {e}"),
            }
        }
        self.acct.reached();
        let wait = self.schedule.after(any);
        self.due = Instant::now() + wait;
        Ok(())
    }

    /// Polling only: waits until the next poll is due, then asks every selected folder. A
    /// connection that would wait longer than `[migration] idle_connections_secs` for the next
    /// poll is logged out now.
    async fn poll_round(&mut self) -> Result<Flow, SyncError> {
        self.end_idle().await?; // the mode became "poll"
        self.count(Asking::Poll);
        let acct = Arc::clone(&self.acct);
        let wake = self.shrinks.map_or(self.due, |s| s.min(self.due));
        match until(wake, &acct.pickup_wake, &mut self.stop).await {
            Woken::Stop => return Ok(Flow::Stop),
            Woken::Wake => return Ok(Flow::Go),
            Woken::Due if Instant::now() < self.due => return Ok(Flow::Go),
            Woken::Due => {}
        }
        let folders = self.folders.clone();
        self.poll(&folders).await?;
        if self.schedule.wait() >= self.acct.pool.keep()
            && let Some(conn) = self.conn.take()
        {
            conn.logout().await;
        }
        Ok(Flow::Go)
    }

    /// IDLE on the first selected folder until the next poll of the others is due, IDLE is due
    /// for renewal, or a change it reported is to be looked at: by a STATUS, at most once per
    /// `live_pickup_secs`, and when its check waited long enough ([`Self::look`]). A wake-up
    /// (the selection or the settings changed) or a lingering folder leaving the list ends the
    /// round but not the IDLE: the next round ends it only if its folder is no longer the first,
    /// or if the mirror deleted or renamed a folder of OLD since it was examined (it is examined
    /// anew).
    async fn idle_round(&mut self) -> Result<Flow, SyncError> {
        if self.idling.is_none() {
            self.connect().await?;
        }
        if self.idle_offered == Some(false) {
            return Ok(Flow::Go); // polled from the next round on
        }
        let folders = self.folders.clone();
        let Some(((target_new, target_old), others)) = folders.split_first() else {
            return Ok(Flow::Go);
        };
        let poll = !others.is_empty() && Instant::now() >= self.due;
        if poll {
            self.end_idle().await?; // what it reported is looked at first
        }
        // After a folder of OLD was deleted or renamed, its view may be of a folder gone, or
        // of another under the same name (Dovecot finds its index "corrupted"): read anew.
        let current = (
            target_old.clone(),
            self.acct.restructured.load(Ordering::SeqCst),
        );
        if self.examined.as_ref() != Some(&current) {
            let conn = self.connect().await?;
            let info = conn.client.select_with(target_old, true, false).await?;
            self.examined = Some(current);
            self.idle_changed = false;
            self.idle_looked = Instant::now();
            self.look(target_new, target_old, state_of_info(&info))
                .await;
        }
        if std::mem::take(&mut self.idle_changed) {
            self.idle_looked = Instant::now();
            let target = [target_old.clone()];
            let answer = self.connect().await?.client.status_many(&target).await?;
            match answer.into_iter().next() {
                Some(Ok(status)) => {
                    self.look(target_new, target_old, state_of_status(status))
                        .await;
                }
                Some(Err(e)) => debug!(folder = %target_old, "live pickup: {e}"),
                None => {}
            }
        }
        if poll {
            self.poll(others).await?;
        }
        self.count(Asking::Idle);
        if self.idling.is_none() {
            let (tag, before) = self.connect().await?.client.idle().await?;
            self.idling = Some(Idling {
                tag,
                folder: target_old.clone(),
                changed: before.iter().any(is_change),
                renew: Instant::now() + IDLE_RENEW,
            });
        }
        let policy = self.acct.pickup.get();
        let (Some(conn), Some(idling)) = (self.conn.as_mut(), self.idling.as_mut()) else {
            return Ok(Flow::Go);
        };
        let mut end = idling.renew;
        if !others.is_empty() {
            end = end.min(self.due);
        }
        if let Some(since) = self.deferred.get(target_old) {
            end = end.min(*since + policy.max);
        }
        // A change is looked at no sooner than `live_pickup_secs` after the last look: the
        // mirror's own writes change OLD all the time while the user writes.
        let look_at = self.idle_looked + policy.first;
        loop {
            let end = if idling.changed {
                end.min(look_at)
            } else {
                end
            };
            let wake = self.shrinks.map_or(end, |s| s.min(end));
            tokio::select! {
                ready = conn.client.idle_readable(wake) => {
                    if ready? {
                        idling.changed |= is_change(&conn.client.idle_response().await?);
                    } else if Instant::now() < end {
                        return Ok(Flow::Go); // a lingering folder leaves the list
                    } else {
                        break;
                    }
                }
                () = self.acct.pickup_wake.notified() => return Ok(Flow::Go),
                // Ends without DONE: the connection is dropped.
                () = async { drop(self.stop.wait_for(|s| *s).await) } => return Ok(Flow::Stop),
            }
        }
        self.end_idle().await?;
        Ok(Flow::Go)
    }

    /// Ends the IDLE under way, if any; a change it reported is looked at next
    /// ([`Self::idle_round`]).
    async fn end_idle(&mut self) -> Result<(), SyncError> {
        let (Some(idling), Some(conn)) = (self.idling.take(), self.conn.as_mut()) else {
            return Ok(());
        };
        let after = conn.client.idle_done(&idling.tag).await?;
        let changed = idling.changed || after.iter().any(is_change);
        if changed {
            debug!(folder = %idling.folder, "live pickup: OLD changed");
        }
        self.idle_changed = changed || self.waited(&idling.folder);
        self.acct.reached();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
