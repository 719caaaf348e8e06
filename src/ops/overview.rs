//! The migration at a glance and one account in detail, computed from the store's account
//! summaries alone (no clock, no server): `imapferry status` (text and `--json`), `GET
//! /overview`, `GET /accounts/{user}` and the account gauges of `/metrics`.

use serde::Serialize;

use crate::store::{AccountState, AccountSummary, FolderSummary, Store, StoreError};

/// Accounts by lifecycle state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub pending: u64,
    pub partial: u64,
    pub synced: u64,
    pub retired: u64,
    pub failed: u64,
    pub diverged: u64,
}

impl StateCounts {
    pub fn of(accounts: &[AccountSummary]) -> StateCounts {
        let mut c = StateCounts::default();
        for a in accounts {
            *c.slot(a.state) += 1;
        }
        c
    }

    fn slot(&mut self, state: AccountState) -> &mut u64 {
        match state {
            AccountState::Pending => &mut self.pending,
            AccountState::Partial => &mut self.partial,
            AccountState::Synced => &mut self.synced,
            AccountState::Retired => &mut self.retired,
            AccountState::Failed => &mut self.failed,
            AccountState::Diverged => &mut self.diverged,
        }
    }

    /// Every state in lifecycle order with its count (zeros included).
    pub fn all(&self) -> [(AccountState, u64); 6] {
        [
            (AccountState::Pending, self.pending),
            (AccountState::Partial, self.partial),
            (AccountState::Synced, self.synced),
            (AccountState::Retired, self.retired),
            (AccountState::Failed, self.failed),
            (AccountState::Diverged, self.diverged),
        ]
    }
}

/// A failed account and why, for the overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedAccount {
    pub id: i64,
    pub new_user: String,
    pub old_user: String,
    pub old_host: String,
    pub reason: Option<String>,
}

/// The whole migration at a glance, from the account summaries alone (no clock, no server):
/// `imapferry status` (text and `--json`) and `GET /overview` compute it the same way.
///
/// - progress: `messages_done` = linked + tombstones (OLD messages that are on NEW or that the
///   user deleted there), at most `messages_old`, over `messages_old` (each folder's OLD count at
///   its last pass). Accounts with no completed folder pass and no counted message are
///   `accounts_not_counted`: their mail is not in the totals yet.
/// - throughput: messages linked in the accounts that recorded activity, over the span between
///   the earliest and the latest `last_activity` of those accounts (unknown under a minute).
/// - ETA: the counted messages still to do at that rate (0 when nothing is left and every
///   account is counted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub accounts: u64,
    pub by_state: StateCounts,
    pub accounts_not_counted: u64,
    pub folders: u64,
    pub folders_synced: u64,
    pub messages_old: u64,
    pub messages_new: u64,
    pub linked: u64,
    pub tombstones: u64,
    pub messages_done: u64,
    pub pending_journal: u64,
    /// OLD messages the last passes could not copy (each with its reason in the account's detail).
    pub message_errors: u64,
    /// `messages_done / messages_old` in percent (one decimal); 100 when every account is counted
    /// and has no message; `None`: unknown.
    pub progress_percent: Option<f64>,
    /// Unix seconds: the earliest and latest `last_activity`.
    pub activity_first: Option<i64>,
    pub activity_last: Option<i64>,
    pub messages_per_hour: Option<f64>,
    pub eta_seconds: Option<u64>,
    pub failed: Vec<FailedAccount>,
}

/// Shortest activity span the throughput is computed over.
const MIN_SPAN_SECS: i64 = 60;

impl Overview {
    pub fn of(accounts: &[AccountSummary]) -> Overview {
        let sum = |f: fn(&AccountSummary) -> u64| accounts.iter().map(f).sum::<u64>();
        let messages_old = sum(|a| a.messages_old);
        let linked = sum(|a| a.linked);
        let tombstones = sum(|a| a.tombstones);
        let messages_done = linked.saturating_add(tombstones).min(messages_old);
        let accounts_not_counted = accounts
            .iter()
            .filter(|a| a.messages_old == 0 && (a.folders == 0 || a.folders_synced < a.folders))
            .count() as u64;
        let progress_percent = if messages_old > 0 {
            Some((messages_done as f64 * 1000.0 / messages_old as f64).floor() / 10.0)
        } else if !accounts.is_empty() && accounts_not_counted == 0 {
            Some(100.0)
        } else {
            None
        };
        let active: Vec<&AccountSummary> = accounts
            .iter()
            .filter(|a| a.last_activity.is_some())
            .collect();
        let activity_first = active.iter().filter_map(|a| a.last_activity).min();
        let activity_last = active.iter().filter_map(|a| a.last_activity).max();
        let messages_per_hour = match (activity_first, activity_last) {
            (Some(first), Some(last)) if last - first >= MIN_SPAN_SECS => {
                let linked_active: u64 = active.iter().map(|a| a.linked).sum();
                Some(linked_active as f64 * 3600.0 / (last - first) as f64)
            }
            _ => None,
        };
        let remaining = messages_old - messages_done;
        let eta_seconds = if accounts.is_empty() {
            None
        } else if remaining == 0 && accounts_not_counted == 0 {
            Some(0)
        } else {
            messages_per_hour
                .filter(|r| *r > 0.0)
                .map(|r| (remaining as f64 * 3600.0 / r).ceil() as u64)
        };
        let failed = accounts
            .iter()
            .filter(|a| a.state == AccountState::Failed)
            .map(|a| FailedAccount {
                id: a.id,
                new_user: a.key.new_user.clone(),
                old_user: a.key.old_user.clone(),
                old_host: a.key.old_host.clone(),
                reason: a.reason.clone(),
            })
            .collect();
        Overview {
            accounts: accounts.len() as u64,
            by_state: StateCounts::of(accounts),
            accounts_not_counted,
            folders: sum(|a| a.folders),
            folders_synced: sum(|a| a.folders_synced),
            messages_old,
            messages_new: sum(|a| a.messages_new),
            linked,
            tombstones,
            messages_done,
            pending_journal: sum(|a| a.pending_journal),
            message_errors: sum(|a| a.message_errors),
            progress_percent,
            activity_first,
            activity_last,
            messages_per_hour,
            eta_seconds,
            failed,
        }
    }
}

/// One account with its folders and the messages its passes could not copy: `GET
/// /accounts/{user}` and `imapferry status --json USER`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountDetail {
    pub account: AccountSummary,
    pub folders: Vec<FolderSummary>,
    pub message_errors: Vec<MessageError>,
}

/// An OLD message the last pass over its folder ended with in error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageError {
    pub old_folder: String,
    pub old_uid: u32,
    pub reason: String,
}

impl AccountDetail {
    pub async fn load(
        store: &dyn Store,
        account: AccountSummary,
    ) -> Result<AccountDetail, StoreError> {
        let folders = store.folder_summaries(account.id).await?;
        let mut message_errors = Vec::new();
        for f in folders.iter().filter(|f| f.message_errors > 0) {
            for (old_uid, reason) in store.message_errors(f.pair.id).await? {
                message_errors.push(MessageError {
                    old_folder: f.pair.old_name.clone(),
                    old_uid,
                    reason,
                });
            }
        }
        Ok(AccountDetail {
            account,
            folders,
            message_errors,
        })
    }
}

/// The whole state: `imapferry status --json` (`GET /overview` and `GET /accounts` are its two
/// halves).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub overview: Overview,
    pub accounts: Vec<AccountSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fixtures::summary;

    #[test]
    fn overview_numbers() {
        assert_eq!(Overview::of(&[]).progress_percent, None);
        assert_eq!(Overview::of(&[]).eta_seconds, None);
        let mut a = summary(1, "a", "a", "old");
        (a.folders, a.folders_synced, a.messages_old, a.messages_new) = (4, 4, 100, 100);
        (a.linked, a.tombstones) = (95, 5);
        a.last_activity = Some(10_000);
        let mut b = summary(2, "b", "b", "old");
        b.state = AccountState::Partial;
        (b.folders, b.folders_synced, b.messages_old, b.linked) = (2, 1, 300, 105);
        b.last_activity = Some(10_000 + 1800);
        let mut c = summary(3, "c", "c", "old");
        c.state = AccountState::Pending;
        let mut d = summary(4, "d", "d", "old2");
        d.state = AccountState::Failed;
        d.reason = Some("LOGIN failed".into());
        let o = Overview::of(&[a.clone(), b.clone(), c.clone(), d.clone()]);
        assert_eq!(o.accounts, 4);
        assert_eq!(
            o.by_state,
            StateCounts {
                pending: 1,
                partial: 1,
                synced: 1,
                retired: 0,
                failed: 1,
                diverged: 0
            }
        );
        assert_eq!(o.accounts_not_counted, 2, "c and d have no folder pass");
        assert_eq!((o.messages_old, o.messages_done), (400, 205));
        assert_eq!(o.progress_percent, Some(51.2));
        // 200 linked between the first and the last activity, half an hour apart.
        assert_eq!(o.messages_per_hour, Some(400.0));
        assert_eq!(o.eta_seconds, Some(1755), "195 messages at 400/h");
        assert_eq!(o.failed.len(), 1);
        assert_eq!(
            (o.failed[0].new_user.as_str(), o.failed[0].reason.as_deref()),
            ("d", Some("LOGIN failed"))
        );
        // One active account: no span, no throughput.
        let o = Overview::of(&[a.clone()]);
        assert_eq!(
            (o.progress_percent, o.messages_per_hour),
            (Some(100.0), None)
        );
        assert_eq!(o.eta_seconds, Some(0), "nothing left");
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["by_state"]["synced"], 1);
        assert_eq!(v["messages_per_hour"], serde_json::Value::Null);
    }

    #[test]
    fn summaries_serialise_flat() {
        let mut a = summary(7, "joe", "joseph", "old.example");
        a.state = AccountState::Partial;
        a.last_activity = Some(1_795_000_000);
        let v = serde_json::to_value(&a).unwrap();
        for (field, value) in [
            ("id", serde_json::json!(7)),
            ("new_user", serde_json::json!("joe")),
            ("old_user", serde_json::json!("joseph")),
            ("old_host", serde_json::json!("old.example")),
            ("state", serde_json::json!("partial")),
            ("reason", serde_json::Value::Null),
            ("last_activity", serde_json::json!(1_795_000_000)),
            ("folders", serde_json::json!(0)),
            ("pending_journal", serde_json::json!(0)),
        ] {
            assert_eq!(v[field], value, "{field}: {v}");
        }
    }
}
