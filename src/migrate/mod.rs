//! The migration inside the proxy (DESIGN.md §1–§2). A [`Migrator`] keeps one [`Account`] per
//! user, shared by all of that user's sessions: OLD access per the auth policy, the lazy per-folder
//! backfill (one owner per folder, bounded waits), live pickup of mail landing on OLD, and the
//! journal of user writes ([`Write`]) that is mirrored to OLD. It never imports the proxy.

mod account;
mod mirror;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tracing::warn;

pub use account::{Account, Watch};
pub use write::Write;

use crate::config::{self, Config, OldAuth};
use crate::imap::{ConnectOptions, TlsOptions};
use crate::secret::Secret;
use crate::store::{AccountKey, AccountState, Store, StoreError};
use crate::sync::{AuthMech, Endpoint, Options};

/// Timeout of one IMAP exchange with OLD or NEW.
const IMAP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How OLD is logged into for a user.
enum Policy {
    Same,
    Master {
        user: String,
        password: Secret,
    },
    /// NEW login → (OLD host, OLD user, OLD password).
    Accounts(HashMap<String, (String, String, Secret)>),
}

/// Every account the proxy has seen since it started.
pub struct Migrator {
    store: Arc<dyn Store>,
    old: ConnectOptions,
    new: ConnectOptions,
    policy: Policy,
    opts: Options,
    budget: Duration,
    accounts: DashMap<String, Arc<Account>>,
    stop: watch::Receiver<bool>,
}

fn connect_options(
    address: &str,
    security: config::Security,
    ca: Option<&std::path::Path>,
    verify: bool,
) -> Result<ConnectOptions, MigrateError> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| MigrateError::Config(format!("not host:port: {address}")))?;
    Ok(ConnectOptions {
        host: host.to_string(),
        port,
        security: match security {
            config::Security::None => crate::imap::Security::Plain,
            config::Security::Starttls => crate::imap::Security::StartTls,
            config::Security::Tls => crate::imap::Security::Tls,
        },
        tls: TlsOptions {
            verify,
            ca_file: ca.map(|p| p.to_path_buf()),
        },
        timeout: IMAP_TIMEOUT,
    })
}

impl Migrator {
    /// The migrator for `config`, or `None` when there is no `[old]` (a pure relay).
    /// `stop` turns true when the proxy shuts down.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<Migrator>, MigrateError> {
        let Some(old) = &config.old else {
            return Ok(None);
        };
        let invalid = |e: config::ValidationError| MigrateError::Config(e.to_string());
        let policy = match old.auth {
            OldAuth::Same => Policy::Same,
            OldAuth::Master => Policy::Master {
                user: old.master_user.clone().unwrap_or_default(),
                password: old
                    .master_password()
                    .map_err(invalid)?
                    .ok_or_else(|| MigrateError::Config("old.master_password_file".into()))?,
            },
            OldAuth::Accounts => {
                let path = old
                    .accounts
                    .as_ref()
                    .ok_or_else(|| MigrateError::Config("old.accounts".into()))?;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    MigrateError::Config(format!("old.accounts {}: {e}", path.display()))
                })?;
                let mut map = HashMap::new();
                for line in crate::loopfile::parse_file(&text) {
                    match line {
                        crate::loopfile::Line::Account(a) => {
                            map.insert(a.user2, (a.host1, a.user1, Secret::new(a.password1)));
                        }
                        crate::loopfile::Line::Malformed { number, reason } => {
                            warn!("old.accounts line {number} ignored: {reason}")
                        }
                        crate::loopfile::Line::Skip => {}
                    }
                }
                Policy::Accounts(map)
            }
        };
        let mapping = &config.mapping;
        let opts = Options {
            selection: mapping.selection().map_err(invalid)?,
            mapping: mapping.mapper_options(),
            sep1: mapping.sep1,
            sep2: mapping.sep2,
            prefix1: mapping.prefix1.clone(),
            prefix2: mapping.prefix2.clone(),
            max_delete_share: config.migration.max_delete_share,
            connections: 1,
            ..Options::default()
        };
        Ok(Some(Migrator {
            store,
            old: connect_options(&old.address, old.security, old.ca.as_deref(), old.verify)?,
            new: connect_options(
                &config.new.address,
                config.new.security,
                config.new.ca.as_deref(),
                config.new.verify,
            )?,
            policy,
            opts,
            budget: Duration::from_millis(config.migration.select_budget_ms),
            accounts: DashMap::new(),
            stop,
        }))
    }

    /// How long a SELECT waits for its backfill.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// OLD's endpoint for a NEW login, per the auth policy (`None`: the user has no OLD account).
    fn old_endpoint(&self, user: &str, password: &Secret) -> Option<Endpoint> {
        let mut connect = self.old.clone();
        let (user, password, authuser, auth) = match &self.policy {
            Policy::Same => (user.to_string(), password.clone(), None, AuthMech::Login),
            Policy::Master {
                user: admin,
                password,
            } => (
                user.to_string(),
                password.clone(),
                Some(admin.clone()),
                AuthMech::Plain,
            ),
            Policy::Accounts(map) => {
                let (host, old_user, old_password) = map.get(user)?;
                connect.host = host.clone();
                (
                    old_user.clone(),
                    old_password.clone(),
                    None,
                    AuthMech::Login,
                )
            }
        };
        Some(Endpoint {
            connect,
            user,
            password,
            authuser,
            auth,
        })
    }

    /// A user logged in to NEW with `password`: their account, its OLD folder tree mapped and
    /// created on NEW, INBOX's backfill started. `None` when
    /// the account has no OLD side or is retired: the session is then a plain relay.
    pub async fn login(&self, user: &str, password: &Secret) -> Option<Arc<Account>> {
        let old_ep = self.old_endpoint(user, password)?;
        let new_ep = Endpoint {
            connect: self.new.clone(),
            user: user.to_string(),
            password: password.clone(),
            authuser: None,
            auth: AuthMech::Login,
        };
        let key = AccountKey {
            old_host: old_ep.connect.host.clone(),
            old_user: old_ep.user.clone(),
            new_host: new_ep.connect.host.clone(),
            new_user: user.to_string(),
        };
        let id = match self.store.account(&key).await {
            Ok(id) => id,
            Err(e) => {
                warn!("{e}: {user} is relayed without migration");
                return None;
            }
        };
        if matches!(
            self.store.account_state(id).await,
            Ok(AccountState::Retired)
        ) {
            return None;
        }
        let account = self
            .accounts
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(Account::new(
                    id,
                    Arc::clone(&self.store),
                    old_ep.clone(),
                    new_ep.clone(),
                    self.opts.clone(),
                    self.stop.clone(),
                ))
            })
            .clone();
        account.set_endpoints(old_ep, new_ep);
        account.start().await;
        Some(account)
    }
}
