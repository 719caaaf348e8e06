//! An account's lifecycle as the proxy sees it: OLD's tree mapped onto NEW, reaching OLD (a
//! back-off while it cannot be reached, `failed` for bad credentials), the state moving from
//! `pending` to `synced`, and the two states only their own commands leave: `retired` (no more
//! work on OLD, in every open session at once) and `diverged` (OLD needs `imapferry reconcile`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::account::{Account, ErrorKind};
use crate::imap::{ImapError, Side};
use crate::lock::Poisoned;
use crate::store::{AccountState, Phase, Progress};
use crate::sync::{self, Quiet, SyncError};

/// How long a mapped OLD tree is trusted before a login or sweep maps it again.
const TREE_MAX_AGE: Duration = Duration::from_secs(300);

impl Account {
    /// Maps OLD's tree and creates it on NEW: at the first login or sweep, and again when the
    /// mapping is old (folders created on OLD meanwhile, e.g. by its webmail) — but not while
    /// user writes wait for OLD or are in flight, or the account is diverged: a folder the user
    /// deleted or renamed on NEW that OLD still has would come back.
    pub(super) async fn prepare(&self) -> Result<(), Poisoned> {
        let _one = self.prepare_lock.lock().await;
        let (prepared, fresh) = {
            let n = self.names()?;
            let fresh = n.mapped_at.is_some_and(|t| t.elapsed() < TREE_MAX_AGE);
            (n.prepared, fresh)
        };
        if fresh || self.unreachable() {
            return Ok(());
        }
        self.drain_journal().await;
        // Until the user's writes are all on OLD (none journaled, none in flight on NEW), a
        // folder missing from NEW may be their DELETE or RENAME: the tree is then only mapped,
        // the first time, and nothing is created.
        let settled = self.pending.get() == 0
            && !self.writes_in_flight()
            && !self.unsure()
            && self.store.account_state(self.id).await.ok() != Some(AccountState::Diverged);
        if prepared && !settled {
            return Ok(());
        }
        let result = async {
            let (mut conn, _permit) = self.pool.get().await?;
            let (old, new) = (&mut conn.old, &mut conn.new);
            let tree = if settled {
                let t = sync::prepare_tree(old, new, &self.opts, &Quiet).await?;
                (t.pairs, t.old_side, t.new_side)
            } else {
                let t = sync::read_tree(old, new, &self.opts).await?;
                (t.pairs, t.old_side, t.new_side)
            };
            self.pool.put(conn);
            Ok::<_, SyncError>(tree)
        }
        .await;
        match result {
            Ok((pairs, old_side, new_side)) => {
                info!(
                    folders = pairs.len(),
                    created = settled,
                    "OLD folder tree mapped"
                );
                self.reached();
                (self.names()?).set_tree(pairs, old_side, new_side, Instant::now());
                if let Err(e) = self.store.touch_account(self.id).await {
                    warn!("{e}");
                }
            }
            Err(e) => self.failed(&e).await,
        }
        Ok(())
    }

    /// While OLD (or NEW) cannot be reached, nothing that needs them is tried.
    pub(super) fn unreachable(&self) -> bool {
        self.reach().waiting(tokio::time::Instant::now())
    }

    pub(super) fn reached(&self) {
        self.reach().succeed();
    }

    /// A step failed. Connection-level failures back off the whole account (OLD is down);
    /// bad OLD credentials fail the account; the sweeper sees the last failure.
    pub(crate) async fn failed(&self, e: &SyncError) {
        let kind = ErrorKind::of(e);
        *self.last_error() = Some((kind, e.to_string()));
        if kind.is_transient() || kind == ErrorKind::Login {
            let wait = self.reach().fail(tokio::time::Instant::now());
            warn!("migration: {e}; tried again in {wait:?}");
        } else {
            warn!("migration: {e}");
        }
        if let SyncError::Imap(ImapError::Login {
            side: Side::Old, ..
        }) = e
            && kind == ErrorKind::Login
            && let Err(e) = self
                .store
                .set_account_state(self.id, AccountState::Failed, Some(&e.to_string()))
                .await
        {
            warn!("{e}");
        }
    }

    /// One folder could not be backfilled: the account shows why until it can.
    pub(super) async fn note_folder_failure(&self, folder: &str, why: &str) {
        let reason = format!("folder {folder}: {why}");
        if let Err(e) = self
            .store
            .set_account_state(self.id, AccountState::Partial, Some(&reason))
            .await
        {
            warn!("{e}");
        }
    }

    /// pending → partial → synced as folders complete; a failed account recovers here. Retired
    /// and diverged accounts keep their state (the store refuses to change it).
    pub(super) async fn update_state(&self) {
        let _one = self.state_lock.lock().await;
        let mapped: Vec<String> = match self.names() {
            Ok(n) if n.prepared => n.pairs().map(|(_, old)| old.to_string()).collect(),
            // Not mapped yet; a poisoned lock is logged where it is met (and fails a sweep).
            _ => return,
        };
        let Ok(Progress {
            pairs,
            pending,
            state: current,
        }) = self.store.account_progress(self.id).await
        else {
            return;
        };
        let synced = mapped.iter().all(|old| {
            pairs
                .iter()
                .any(|p| &p.old_name == old && p.phase == Phase::Synced)
        });
        let failing = self.folders.iter().find_map(|f| {
            f.value()
                .failure()
                .map(|why| format!("folder {}: {why}", f.key()))
        });
        let state = if synced && pending == 0 && failing.is_none() {
            AccountState::Synced
        } else if pairs.iter().any(|p| p.phase != Phase::New) {
            AccountState::Partial
        } else {
            AccountState::Pending
        };
        if (current != state || failing.is_some())
            && let Err(e) = self
                .store
                .set_account_state(self.id, state, failing.as_deref())
                .await
        {
            warn!("{e}");
        }
        if let Err(e) = self.store.touch_account(self.id).await {
            warn!("{e}");
        }
    }

    /// Retired (as far as this process has seen): a cheap check for hot paths.
    pub(super) fn is_retired_now(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Retired in the store (`imapferry retire` may have run in another process): from then on
    /// no backfill, pickup or mirror runs for this account in any open session.
    pub(crate) async fn is_retired(&self) -> bool {
        if self.is_retired_now() {
            return true;
        }
        let retired = self.store.account_state(self.id).await.ok() == Some(AccountState::Retired);
        if retired {
            self.saw_retired();
        }
        retired
    }

    /// The store says the account is retired: this process does no more migration work for it.
    pub(super) fn saw_retired(&self) {
        if !self.retired.swap(true, Ordering::SeqCst) {
            info!("account retired: no more migration work");
        }
    }

    /// OLD no longer mirrors the user: the account waits for `imapferry reconcile`.
    pub(crate) async fn diverge(&self, reason: &str) {
        warn!("OLD diverges from NEW: {reason}");
        if let Err(e) = self.store.mark_diverged(self.id, reason).await {
            warn!("{e}: the account could not be marked diverged");
        }
    }
}
