//! The operator's rules, shared by the command line and the admin API so both always agree: which
//! account a typed name means ([`find_user`]), the migration at a glance ([`Overview`]), when an
//! account may be retired ([`retire_decision`]), what an import line stands for ([`import_key`]).
//! Below `cli` and `proxy`; uses `store`, `config`, `loopfile` and `migrate`'s credentials.

mod import;
mod lookup;
mod overview;
mod retire;

use std::sync::Arc;

use tracing::{info, warn};

use crate::config::Config;
use crate::store::{self, Store, StoreError};

pub(crate) use import::{ImportAction, import_action, import_key};
pub(crate) use lookup::{find_user, old_login};
pub(crate) use overview::{AccountDetail, Overview, StateCounts, StatusReport};
pub(crate) use retire::{RetireDecision, retire_decision};

/// The state store the admin API reads, for a proxy configuration with `[admin]`: with `[old]`
/// the proxy's state file (created as the migration creates it); without, only an existing one
/// (the admin never creates a state file). `None` without `[admin]`, or when there is no state
/// file or it cannot be opened (logged): the API then answers 503.
pub(crate) async fn open_store(config: &Config) -> Option<Arc<dyn Store>> {
    config.admin.as_ref()?;
    let location = match config.state.location() {
        Ok(location) => location,
        Err(e) => {
            warn!("admin: the account API is off: {e}");
            return None;
        }
    };
    let opened = if config.old.is_some() {
        store::open(&location).await
    } else {
        store::open_existing(&location).await
    };
    match opened {
        Ok(store) => Some(store),
        Err(StoreError::Missing(_)) => {
            info!("admin: no state at {location}: the account API is off");
            None
        }
        Err(e) => {
            warn!("admin: the account API is off: {e}");
            None
        }
    }
}

/// `one` or `many` as `n` asks.
pub(crate) fn plural<'s>(n: u64, one: &'s str, many: &'s str) -> &'s str {
    if n == 1 { one } else { many }
}

/// Test fixtures shared by the rules' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::store::{AccountKey, AccountState, AccountSummary};

    pub(crate) fn key(new_user: &str, old_user: &str, old_host: &str) -> AccountKey {
        AccountKey {
            old_host: old_host.into(),
            old_user: old_user.into(),
            new_host: "new".into(),
            new_user: new_user.into(),
        }
    }

    /// A synced account with nothing counted.
    pub(crate) fn summary(
        id: i64,
        new_user: &str,
        old_user: &str,
        old_host: &str,
    ) -> AccountSummary {
        AccountSummary {
            id,
            key: key(new_user, old_user, old_host),
            state: AccountState::Synced,
            reason: None,
            last_activity: None,
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
}
