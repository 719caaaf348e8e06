//! The migration inside the proxy (DESIGN.md §1–§2). A [`Migrator`] keeps one [`Account`] per
//! account name (the normalised login), shared by all of that user's sessions and the sweeper:
//! OLD access per the auth policy ([`credentials`]), folder names ([`names`]), connections
//! ([`pool`]), the lazy per-folder backfill ([`backfill`]), live pickup by IDLE or polling
//! ([`pickup`]), the journal of user writes ([`journal`]) recorded ([`commit`]) and drained
//! ([`drain`]) by the mirror ([`mirror`]), the APPENDs' messages the proxy relayed
//! ([`relayed`]), whether a COPY was alone on NEW ([`alone`]), the lifecycle ([`lifecycle`]), and what all accounts hold open ([`gauges`]).
//! It never imports the proxy.

mod account;
mod alone;
mod backfill;
mod backoff;
mod caches;
mod commit;
mod credentials;
mod drain;
mod gauges;
mod intent;
mod journal;
mod lease;
mod lifecycle;
mod mirror;
mod names;
mod pickup;
mod pool;
mod reconcile;
mod relayed;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tracing::{info, warn};

pub use account::{Account, ErrorKind};
pub use backfill::{Need, Watch};
pub use caches::ClientCaches;
pub use credentials::Credentials;
pub use gauges::{Gauges, Held, JournalWait};
pub use intent::NotMarked;
pub use journal::{FlagOp, Write};
pub use names::normalise;
pub use reconcile::Reconciled;
pub use relayed::Appended;

use crate::config::{self, Config};
use crate::lock::Swap;
use crate::secret::Secret;
use crate::store::{AccountId, AccountKey, AccountState, Store, StoreError};
use crate::sync::{Endpoint, Options, SharedRate};
use lease::Lease;
use pickup::Policy;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engine's options for the proxy, its sweeper and `verify`: folder selection and names from
/// `[mapping]`, the deletion bound from `[migration]`, one connection pair per folder.
pub fn engine_options(config: &Config) -> Result<Options, config::ValidationError> {
    let mapping = &config.mapping;
    Ok(Options {
        selection: mapping.selection()?,
        mapping: mapping.mapper_options(),
        sep1: mapping.sep1,
        sep2: mapping.sep2,
        prefix1: mapping.prefix1.clone(),
        prefix2: mapping.prefix2.clone(),
        max_delete_share: config.migration.max_delete_share,
        connections: 1,
        ..Options::default()
    })
}

/// What a session gets for its user ([`Migrator::login`]).
pub enum Login {
    /// The account migrates: its state, shared by all its sessions.
    Migrating(Arc<Account>),
    /// The account is retired: nothing is migrated, but its folders' numbers are still
    /// translated (the clients' caches stay valid as long as they come through the proxy).
    Retired(Arc<ClientCaches>),
}

/// Every account the proxy has seen since it started.
pub struct Migrator {
    store: Arc<dyn Store>,
    /// Replaced whole by a reload (the accounts file, the master password file).
    credentials: Swap<Credentials>,
    opts: Options,
    budget: Duration,
    cache_wait: Duration,
    accounts: DashMap<String, Arc<Account>>,
    /// Size of `accounts` at which unused entries are dropped next.
    prune_at: AtomicUsize,
    shared: account::Shared,
}

/// Logged when `[migration] mirror_paused` takes effect.
const PAUSED: &str = "the mirror to OLD is paused ([migration] mirror_paused): users' writes are \
                      journaled and wait; nothing is written to OLD until it is resumed";

/// Accounts kept before the first pruning.
const PRUNE_FIRST: usize = 1024;

impl Migrator {
    /// The migrator for `config`, or `None` when there is no `[old]` (a pure relay).
    /// `stop` turns true when the proxy shuts down.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<Migrator>, MigrateError> {
        let Some(credentials) = Credentials::from_config(config)? else {
            return Ok(None);
        };
        let opts = engine_options(config).map_err(|e| MigrateError::Config(e.to_string()))?;
        if store.shared() {
            tokio::spawn(stay_alive(Arc::clone(&store), stop.clone()));
        }
        let pickup = Policy::new(&config.migration, |n| credentials.name(n));
        let gauges = Arc::new(Gauges::default());
        if config.migration.mirror_paused {
            warn!("{PAUSED}");
        }
        Ok(Some(Migrator {
            store: Arc::clone(&store),
            credentials: Swap::new(credentials),
            opts,
            budget: Duration::from_millis(config.migration.select_budget_ms),
            cache_wait: Duration::from_secs(config.migration.keep_client_caches_wait_secs),
            accounts: DashMap::new(),
            prune_at: AtomicUsize::new(PRUNE_FIRST),
            shared: account::Shared {
                // Always there, so a reload can set ceilings the start did not have.
                rate: Some(Arc::new(SharedRate::new(
                    config.sweep.max_bytes_per_second,
                    config.sweep.max_messages_per_second,
                ))),
                interactive: Arc::new(AtomicUsize::new(0)),
                pickup: Arc::new(Swap::new(pickup)),
                keep: Arc::new(AtomicU64::new(config.migration.idle_connections_secs)),
                mirror_paused: Arc::new(AtomicBool::new(config.migration.mirror_paused)),
                gauges: Arc::clone(&gauges),
                journal: account::JournalPolicy {
                    attempts: config.migration.mirror_attempts.max(1),
                    retry: Duration::from_secs(config.migration.mirror_retry_secs.max(1)),
                    keep: Duration::from_secs(
                        u64::from(config.migration.journal_keep_days) * 86_400,
                    ),
                },
                committer: commit::Committer::start(Arc::clone(&store), gauges),
                relayed: Arc::default(),
                keep_client_caches: config.migration.keep_client_caches,
                stop,
            },
        }))
    }

    /// How long a SELECT waits for its backfill.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// How long a folder that keeps client caches may take to be ready to show.
    pub fn cache_wait(&self) -> Duration {
        self.cache_wait
    }

    /// A user logged in to NEW with `password`: their account, its OLD folder tree mapped and
    /// created on NEW, INBOX's backfill started. A retired account whose folders keep client
    /// caches gets its maps alone. `None` when the account has no OLD side or is retired: the
    /// session is then a plain relay.
    pub async fn login(&self, typed: &str, password: &Secret) -> Option<Login> {
        let (key, old_ep, new_ep) = self.credentials.get().for_login(typed, password)?;
        let name = key.new_user.clone();
        let relayed = |why: &dyn std::fmt::Display| {
            warn!("{why}: {name} is relayed without migration");
            None
        };
        let (id, state) = match self.store.find_account_state(&key).await {
            Ok(Some(found)) => found,
            Ok(None) if self.credentials.get().needs_import() => {
                info!(account = %name, "not an imported account: relayed to NEW without migration");
                return None;
            }
            Ok(None) => match self.store.account(&key).await {
                Ok(id) => (id, AccountState::Pending),
                Err(e) => return relayed(&e),
            },
            Err(e) => return relayed(&e),
        };
        if state == AccountState::Retired {
            if !self.shared.keep_client_caches {
                return None;
            }
            return match ClientCaches::stored(&*self.store, id).await {
                Ok(caches) => Some(Login::Retired(Arc::new(caches))),
                Err(e) => relayed(&format_args!("{e}: its UID maps were not read")),
            };
        }
        let account = self.account(id, &name, (old_ep.clone(), new_ep.clone()));
        account.set_endpoints(old_ep, new_ep);
        account.start().await;
        Some(Login::Migrating(account))
    }

    /// The account's shared state, created with these endpoints on first use.
    fn account(&self, id: AccountId, user: &str, endpoints: (Endpoint, Endpoint)) -> Arc<Account> {
        self.prune();
        self.accounts
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(Account::new(
                    id,
                    user,
                    Arc::clone(&self.store),
                    endpoints,
                    self.opts.clone(),
                    &self.shared,
                ))
            })
            .clone()
    }

    /// Forgets accounts nothing uses any more (no session, no backfill, no journal worker: the
    /// map holds the only reference), so memory and the passwords held for OLD do not pile up.
    /// Runs when the map has doubled since the last time.
    fn prune(&self) {
        let at = self.prune_at.load(Ordering::Relaxed);
        if self.accounts.len() < at {
            return;
        }
        self.accounts.retain(|_, a| Arc::strong_count(a) > 1);
        let next = (self.accounts.len() * 2).max(PRUNE_FIRST);
        self.prune_at.store(next, Ordering::Relaxed);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The credentials in force (replaced by [`Migrator::reload`]).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.get()
    }

    /// A reload's share: the credentials sources read again from `config` (the accounts file,
    /// the master password file) and the sweeper's copy ceilings. All or nothing: a file that
    /// cannot be read changes nothing. Accounts already open keep their endpoints until their
    /// next login or sweep.
    pub fn reload(&self, config: &Config) -> Result<(), MigrateError> {
        let credentials = Credentials::from_config(config)?
            .ok_or_else(|| MigrateError::Config("[old] is gone: restart to remove it".into()))?;
        let pickup = Policy::new(&config.migration, |n| credentials.name(n));
        self.credentials.set(Arc::new(credentials));
        self.shared.pickup.set(Arc::new(pickup));
        self.shared
            .keep
            .store(config.migration.idle_connections_secs, Ordering::SeqCst);
        let paused = config.migration.mirror_paused;
        let was_paused = self.shared.mirror_paused.swap(paused, Ordering::SeqCst);
        match (was_paused, paused) {
            (false, true) => warn!("{PAUSED}"),
            (true, false) => info!("the mirror to OLD resumes: the journal's entries are replayed"),
            _ => {}
        }
        // Live pickup sees the new settings now, not at its next IDLE renewal; a resumed mirror
        // replays what waits now.
        for account in self.accounts.iter() {
            account.pickup_wake.notify_one();
            if was_paused && !paused {
                account.wake.notify_one();
            }
        }
        if let Some(rate) = &self.shared.rate {
            rate.set_ceilings(
                config.sweep.max_bytes_per_second,
                config.sweep.max_messages_per_second,
            );
        }
        Ok(())
    }

    /// What the migration holds open now (engine connections, live pickup by mode).
    pub fn held(&self) -> Held {
        Held {
            mirror_paused: self.shared.mirror_paused.load(Ordering::SeqCst),
            store: self.store.operations(),
            ..self.shared.gauges.snapshot()
        }
    }

    /// How long users' writes waited for their journal commits so far.
    pub fn journal_waits(&self) -> JournalWait {
        self.shared.gauges.journal_waits()
    }

    /// The sweeper's global copy totals (messages, bytes, since when), if ceilings are set.
    pub fn sweep_rate(&self) -> Option<&SharedRate> {
        self.shared.rate.as_deref().filter(|r| r.has_ceilings())
    }

    /// Brings OLD in line with NEW for one account (`imapferry reconcile`), with the
    /// configuration's credentials.
    pub async fn reconcile(&self, id: AccountId, key: &AccountKey) -> Result<Reconciled, String> {
        let endpoints = self.credentials.get().for_account(key)?;
        self.account(id, &key.new_user, endpoints)
            .reconcile()
            .await
            .map_err(|e| e.to_string())
    }

    /// Sweeps one account without its user (credentials from the configuration), sharing the
    /// state of any session the user has open. Returns the messages and bytes copied.
    /// `seen`: the account's state when the sweeper chose it. `Ok(None)`: another proxy of the
    /// fleet sweeps the account now (it holds the claim), or has just brought it to `synced`.
    pub async fn sweep(
        &self,
        id: AccountId,
        key: &AccountKey,
        seen: AccountState,
    ) -> Result<Option<(u64, u64)>, (ErrorKind, String)> {
        let endpoints = self
            .credentials
            .get()
            .for_account(key)
            .map_err(|why| (ErrorKind::Other, why))?;
        let claim = Lease::try_take(&self.store, format!("sweep:{id}"))
            .await
            .map_err(|e| (ErrorKind::Store, e.to_string()))?;
        let Some(_claim) = claim else {
            return Ok(None);
        };
        let now = self.store.account_state(id).await;
        if seen != AccountState::Synced && now.is_ok_and(|s| s == AccountState::Synced) {
            return Ok(None);
        }
        self.account(id, &key.new_user, endpoints)
            .sweep()
            .await
            .map(Some)
    }
}

/// In a shared store: this process's `process:` lease, held until `stop`, so that the other
/// proxies of the fleet take its write-ahead marks for a live process's (see `intent.rs`).
async fn stay_alive(store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    loop {
        match lease::keep_alive(&store).await {
            Ok(alive) => {
                let _alive = alive;
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
            Err(e) => warn!("{e}: this proxy's liveness is not recorded yet; again in 5 s"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn unused_accounts_are_forgotten_used_ones_kept() {
        let text = "[listen]\nimap = \"127.0.0.1:1\"\n[new]\naddress = \"127.0.0.1:2\"\nsecurity = \"none\"\n\
                    [old]\naddress = \"127.0.0.1:3\"\nsecurity = \"none\"\n";
        let config = config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_memory().await.unwrap());
        let (_stop, stop_rx) = watch::channel(false);
        let m = Migrator::new(&config, store, stop_rx).unwrap().unwrap();
        let endpoints = |u: &str| {
            let (_, old, new) = m
                .credentials
                .get()
                .for_login(u, &Secret::new("pw"))
                .unwrap();
            (old, new)
        };
        let held = m.account(1, "held", endpoints("held"));
        for i in 0..PRUNE_FIRST + 10 {
            let user = format!("u{i}");
            let _ = m.account(i as AccountId + 2, &user, endpoints(&user));
        }
        // The map reached PRUNE_FIRST once: everything but the account still in use was dropped.
        assert!(m.accounts.len() < 20, "{}", m.accounts.len());
        assert!(m.accounts.contains_key("held"));
        assert!(Arc::ptr_eq(&held, &m.account(1, "held", endpoints("held"))));
    }
}
