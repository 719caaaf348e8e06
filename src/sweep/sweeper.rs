//! The sweep loop: picks accounts (prioritised, then pending, partial, and synced ones due for a
//! revisit), sweeps a few at a time within the per-host connection bound and the daily window,
//! backs off per OLD host on transient failures and fails accounts on permanent ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Timelike;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use super::Control;
use crate::config::{self, parse_window};
use crate::migrate::{ErrorKind, Migrator};
use crate::store::{AccountId, AccountKey, AccountState, AccountSummary};

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the loop looks for work when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// An account another proxy of the fleet was sweeping is looked at again after this.
const CLAIMED_WAIT: Duration = Duration::from_secs(15);

/// Completes when `stop` turns true; the watch borrow ends inside, so callers stay `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// When the loop stops on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Until shutdown, re-visiting synced accounts.
    Forever,
    /// Until no pending or partial account is left to try (`imapferry sweep --once`).
    Once,
}

/// `now` (minutes after midnight) is inside the window `(start, end)`; `end < start` wraps.
pub fn in_window(now: u32, (start, end): (u32, u32)) -> bool {
    if start <= end {
        (start..end).contains(&now)
    } else {
        now >= start || now < end
    }
}

/// Sweep order: prioritised first, then pending, partial, and synced accounts not looked at for
/// `revisit` seconds; failed ones only when prioritised; retired and diverged ones never (a
/// diverged account waits for `imapferry reconcile`: a sweep could bring back from OLD what the
/// user deleted on NEW).
pub fn pick(
    accounts: &[AccountSummary],
    prioritised: Option<AccountId>,
    busy: &HashSet<AccountId>,
    blocked: &dyn Fn(&AccountSummary) -> bool,
    now: i64,
    revisit: Option<u64>,
) -> (Option<AccountSummary>, u64) {
    let rank = |a: &AccountSummary| -> Option<u8> {
        if matches!(a.state, AccountState::Retired | AccountState::Diverged) {
            return None;
        }
        if Some(a.id) == prioritised {
            return Some(0);
        }
        match a.state {
            AccountState::Pending => Some(1),
            AccountState::Partial => Some(2),
            AccountState::Synced => {
                let due = revisit?;
                let last = a.last_activity.unwrap_or(0);
                (now - last >= due as i64).then_some(3)
            }
            AccountState::Retired | AccountState::Failed | AccountState::Diverged => None,
        }
    };
    let mut queue: Vec<(u8, &AccountSummary)> = accounts
        .iter()
        .filter(|a| !busy.contains(&a.id))
        .filter_map(|a| Some((rank(a)?, a)))
        .collect();
    queue.sort_by_key(|(r, a)| (*r, a.last_activity.unwrap_or(0), a.id));
    let len = queue.len() as u64;
    let next = queue
        .into_iter()
        .find(|(_, a)| !blocked(a))
        .map(|(_, a)| a.clone());
    (next, len)
}

/// What a sweep task returns: the account and the copied (messages, bytes) or the failure.
type Swept = (
    AccountId,
    AccountKey,
    Result<Option<(u64, u64)>, (ErrorKind, String)>,
);

struct HostBackoff {
    until: Instant,
    delay: Duration,
}

/// Runs the sweeper until `stop` turns true (or, with [`Mode::Once`], until nothing is left).
pub async fn run(
    migrator: Arc<Migrator>,
    mut cfg: config::Sweep,
    control: Arc<Control>,
    mode: Mode,
    mut stop: watch::Receiver<bool>,
) {
    let store = Arc::clone(migrator.store());
    let mut window = cfg.window.as_deref().and_then(parse_window);
    let mut running: HashMap<AccountId, String> = HashMap::new();
    let mut backoff: HashMap<String, HostBackoff> = HashMap::new();
    // Accounts tried in this run of a `Once` sweep that did not complete.
    let mut tried: HashSet<AccountId> = HashSet::new();
    // Accounts that failed for a reason a retry soon would not fix: not before this instant.
    let mut later: HashMap<AccountId, Instant> = HashMap::new();
    let mut tasks: JoinSet<Swept> = JoinSet::new();
    // Which account each task sweeps, for a task that panics.
    let mut sweeping: HashMap<tokio::task::Id, (AccountId, String)> = HashMap::new();
    loop {
        let stopping = *stop.borrow();
        if stopping {
            break;
        }
        if let Some(reloaded) = control.take_settings() {
            info!("sweep: reloaded settings in force");
            window = reloaded.window.as_deref().and_then(parse_window);
            cfg = reloaded;
        }
        let now_local = chrono::Local::now();
        let open = window.is_none_or(|w| in_window(now_local.hour() * 60 + now_local.minute(), w));
        let mut started = false;
        if !control.is_paused() && open && running.len() < cfg.accounts_in_parallel {
            let accounts = match store.account_summaries().await {
                Ok(a) => a,
                Err(e) => {
                    warn!("sweep: {e}");
                    Vec::new()
                }
            };
            let busy: HashSet<AccountId> = running.keys().copied().collect();
            let per_host = |host: &str| running.values().filter(|h| h.as_str() == host).count();
            let blocked = |a: &AccountSummary| {
                backoff
                    .get(&a.key.old_host)
                    .is_some_and(|b| Instant::now() < b.until)
                    || per_host(&a.key.old_host) >= cfg.connections_per_host
                    || (mode == Mode::Once && tried.contains(&a.id))
                    || later.get(&a.id).is_some_and(|t| Instant::now() < *t)
            };
            let prioritised = control.take_priority(&busy.iter().copied().collect::<Vec<_>>());
            let revisit = (mode == Mode::Forever).then_some(cfg.revisit_secs);
            let (next, queue) = pick(
                &accounts,
                prioritised,
                &busy,
                &blocked,
                chrono::Utc::now().timestamp(),
                revisit,
            );
            control.update(|s| {
                s.queue = queue;
                s.running = running.len() as u64;
            });
            if let Some(a) = next {
                started = true;
                running.insert(a.id, a.key.old_host.clone());
                let m = Arc::clone(&migrator);
                let span = info_span!("sweep", account = %a.key.new_user);
                let (id, user) = (a.id, a.key.new_user.clone());
                let task = tasks.spawn(
                    async move {
                        info!("sweeping");
                        let r = m.sweep(a.id, &a.key, a.state).await;
                        (a.id, a.key, r)
                    }
                    .instrument(span),
                );
                sweeping.insert(task.id(), (id, user));
            } else if mode == Mode::Once && running.is_empty() {
                let waiting = accounts.iter().any(|a| {
                    matches!(a.state, AccountState::Pending | AccountState::Partial)
                        && !tried.contains(&a.id)
                });
                if !waiting {
                    break;
                }
            }
        }
        if started {
            continue;
        }
        tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, key, result) = match done {
                    Ok((task, swept)) => {
                        sweeping.remove(&task);
                        swept
                    }
                    // A sweep that panicked (a poisoned lock's origin): said, and its account is
                    // no longer counted as running.
                    Err(e) => {
                        if let Some((id, user)) = sweeping.remove(&e.id()) {
                            error!(account = %user, "sweep task ended abnormally: {e}");
                            running.remove(&id);
                            tried.insert(id);
                            later.insert(id, Instant::now() + Duration::from_secs(cfg.revisit_secs));
                        }
                        continue;
                    }
                };
                running.remove(&id);
                match result {
                    Ok(None) => {
                        info!(account = %key.new_user, "sweep: another proxy sweeps (or swept) this account");
                        tried.insert(id);
                        later.insert(id, Instant::now() + CLAIMED_WAIT);
                    }
                    Ok(Some((messages, bytes))) => {
                        info!(account = %key.new_user, messages, bytes, "swept");
                        if let Some(b) = backoff.get_mut(&key.old_host) {
                            b.delay = BACKOFF_FIRST;
                        }
                        let state = store.account_state(id).await.ok();
                        if mode == Mode::Once && state != Some(AccountState::Synced) {
                            tried.insert(id);
                        }
                        control.update(|s| {
                            s.accounts_swept += 1;
                            s.messages_copied += messages;
                            s.bytes_copied += bytes;
                        });
                    }
                    Err((kind, why)) => {
                        control.update(|s| *s.errors.entry(kind.as_str().into()).or_default() += 1);
                        if kind.is_transient() {
                            let b = backoff.entry(key.old_host.clone()).or_insert(HostBackoff {
                                until: Instant::now(),
                                delay: BACKOFF_FIRST,
                            });
                            warn!(account = %key.new_user, "sweep: {why}; OLD {} again in {:?}", key.old_host, b.delay);
                            b.until = Instant::now() + b.delay;
                            b.delay = (b.delay * 2).min(BACKOFF_MAX);
                        } else {
                            warn!(account = %key.new_user, "sweep failed: {why}");
                            // Bad credentials fail the account; anything else keeps its state
                            // with the reason, and is tried again at the next revisit.
                            let state = match kind {
                                ErrorKind::Login => Some(AccountState::Failed),
                                _ => store.account_state(id).await.ok(),
                            };
                            if let Some(state) = state
                                && let Err(e) = store.set_account_state(id, state, Some(&why)).await
                            {
                                warn!("{e}");
                            }
                            tried.insert(id);
                            later.insert(id, Instant::now() + Duration::from_secs(cfg.revisit_secs));
                        }
                    }
                }
            }
            () = tokio::time::sleep(TICK) => {}
            () = control.wake.notified() => {}
            () = stopped(&mut stop) => break,
        }
    }
    // Passes are crash-safe: aborting them mid-copy loses nothing.
    tasks.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AccountKey;

    fn account(id: AccountId, state: AccountState, last: Option<i64>) -> AccountSummary {
        AccountSummary {
            id,
            key: AccountKey {
                old_host: "old".into(),
                old_user: format!("u{id}"),
                new_host: "new".into(),
                new_user: format!("u{id}"),
            },
            state,
            reason: None,
            last_activity: last,
            folders: 0,
            folders_synced: 0,
            messages_old: 0,
            messages_new: 0,
            linked: 0,
            tombstones: 0,
            pending_journal: 0,
            parked_journal: 0,
            message_errors: 0,
        }
    }

    #[test]
    fn windows() {
        for (now, window, inside) in [
            (600, (540, 1020), true),
            (1020, (540, 1020), false),
            (1380, (1320, 360), true),
            (100, (1320, 360), true),
            (700, (1320, 360), false),
        ] {
            assert_eq!(in_window(now, window), inside, "{now} {window:?}");
        }
    }

    #[test]
    fn order_pending_partial_then_due_revisits() {
        use AccountState::*;
        let accounts = vec![
            account(1, Synced, Some(1_000)),
            account(2, Partial, Some(50)),
            account(3, Pending, None),
            account(4, Retired, None),
            account(5, Failed, None),
            account(6, Synced, Some(9_990)),
        ];
        let none = HashSet::new();
        let never = |_: &AccountSummary| false;
        let id = |r: (Option<AccountSummary>, u64)| (r.0.map(|a| a.id), r.1);
        assert_eq!(
            id(pick(&accounts, None, &none, &never, 10_000, Some(3_600))),
            (Some(3), 3)
        );
        assert_eq!(
            id(pick(&accounts, Some(5), &none, &never, 10_000, None)),
            (Some(5), 3)
        );
        // Retired and diverged accounts are never swept, prioritised or not.
        let mut with_diverged = accounts.clone();
        with_diverged.push(account(7, Diverged, None));
        for refused in [4, 7] {
            assert_eq!(
                id(pick(
                    &with_diverged,
                    Some(refused),
                    &none,
                    &never,
                    10_000,
                    None
                )),
                (Some(3), 2)
            );
        }
        let busy: HashSet<AccountId> = [3].into();
        assert_eq!(
            id(pick(&accounts, None, &busy, &never, 10_000, None)),
            (Some(2), 1)
        );
        let blocked = |a: &AccountSummary| a.id == 2;
        assert_eq!(
            id(pick(&accounts, None, &busy, &blocked, 10_000, Some(3_600))),
            (Some(1), 2)
        );
    }
}
