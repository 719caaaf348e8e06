//! Where an account's logins come from — never from the state store: the user's own login (the
//! proxy), an OLD or NEW master user (SASL PLAIN with authzid = the user), or an imapsync loop file
//! naming OLD's host, user and password and NEW's password for each NEW login.

use std::collections::HashMap;
use std::time::Duration;

use tracing::warn;

use super::MigrateError;
use crate::config::{self, Config, OldAuth};
use crate::imap::{ConnectOptions, TlsOptions};
use crate::loopfile::{self, Line};
use crate::secret::Secret;
use crate::store::AccountKey;
use crate::sync::{AuthMech, Endpoint};

/// Timeout of one IMAP exchange with OLD or NEW.
const IMAP_TIMEOUT: Duration = Duration::from_secs(120);

/// One account line of the loop file.
struct Entry {
    old_host: String,
    old_user: String,
    old_password: Secret,
    new_password: Secret,
}

/// How OLD is logged into.
enum OldPolicy {
    Same,
    Master { user: String, password: Secret },
    Accounts,
}

pub struct Credentials {
    old: ConnectOptions,
    new: ConnectOptions,
    policy: OldPolicy,
    new_master: Option<(String, Secret)>,
    /// NEW login → its loop-file line (`auth = "accounts"`).
    accounts: HashMap<String, Entry>,
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

fn master_endpoint(connect: ConnectOptions, user: &str, admin: &str, pw: &Secret) -> Endpoint {
    Endpoint {
        connect,
        user: user.to_string(),
        password: pw.clone(),
        authuser: Some(admin.to_string()),
        auth: AuthMech::Plain,
    }
}

fn login_endpoint(connect: ConnectOptions, user: &str, password: &Secret) -> Endpoint {
    Endpoint {
        connect,
        user: user.to_string(),
        password: password.clone(),
        authuser: None,
        auth: AuthMech::Login,
    }
}

impl Credentials {
    /// The sources `config` names; `None` without `[old]`.
    pub fn from_config(config: &Config) -> Result<Option<Credentials>, MigrateError> {
        let Some(old) = &config.old else {
            return Ok(None);
        };
        let invalid = |e: config::ValidationError| MigrateError::Config(e.to_string());
        let policy = match old.auth {
            OldAuth::Same => OldPolicy::Same,
            OldAuth::Master => OldPolicy::Master {
                user: old.master_user.clone().unwrap_or_default(),
                password: old
                    .master_password()
                    .map_err(invalid)?
                    .ok_or_else(|| MigrateError::Config("old.master_password_file".into()))?,
            },
            OldAuth::Accounts => OldPolicy::Accounts,
        };
        let mut accounts = HashMap::new();
        if let Some(path) = &old.accounts {
            let text = std::fs::read_to_string(path).map_err(|e| {
                MigrateError::Config(format!("old.accounts {}: {e}", path.display()))
            })?;
            for line in loopfile::parse_file(&text) {
                match line {
                    Line::Account(a) => {
                        accounts.insert(
                            a.user2,
                            Entry {
                                old_host: a.host1,
                                old_user: a.user1,
                                old_password: Secret::new(a.password1),
                                new_password: Secret::new(a.password2),
                            },
                        );
                    }
                    Line::Malformed { number, reason } => {
                        warn!("old.accounts line {number} ignored: {reason}")
                    }
                    Line::Skip => {}
                }
            }
        }
        let new_master = match (&config.new.master_user, config.new.master_password()) {
            (Some(user), Ok(Some(pw))) => Some((user.clone(), pw)),
            (_, Err(e)) => return Err(invalid(e)),
            _ => None,
        };
        Ok(Some(Credentials {
            old: connect_options(&old.address, old.security, old.ca.as_deref(), old.verify)?,
            new: connect_options(
                &config.new.address,
                config.new.security,
                config.new.ca.as_deref(),
                config.new.verify,
            )?,
            policy,
            new_master,
            accounts,
        }))
    }

    /// The account key of a NEW login (OLD host and user per the policy).
    pub fn key(&self, old: &Endpoint, new_user: &str) -> AccountKey {
        AccountKey {
            old_host: old.connect.host.clone(),
            old_user: old.user.clone(),
            new_host: self.new.host.clone(),
            new_user: new_user.to_string(),
        }
    }

    /// OLD and NEW for a user who just logged in to NEW with `password` (the proxy). `None`:
    /// the user has no OLD account (not in the accounts file).
    pub fn for_login(&self, user: &str, password: &Secret) -> Option<(Endpoint, Endpoint)> {
        let new = login_endpoint(self.new.clone(), user, password);
        let old = match &self.policy {
            OldPolicy::Same => login_endpoint(self.old.clone(), user, password),
            OldPolicy::Master {
                user: admin,
                password,
            } => master_endpoint(self.old.clone(), user, admin, password),
            OldPolicy::Accounts => {
                let e = self.accounts.get(user)?;
                let mut connect = self.old.clone();
                connect.host = e.old_host.clone();
                login_endpoint(connect, &e.old_user, &e.old_password)
            }
        };
        Some((old, new))
    }

    /// OLD and NEW for an account without its user (sweeps, `verify`); the error says what is
    /// missing.
    pub fn for_account(&self, key: &AccountKey) -> Result<(Endpoint, Endpoint), String> {
        let entry = self.accounts.get(&key.new_user);
        let mut old_connect = self.old.clone();
        old_connect.host = key.old_host.clone();
        let old = match (&self.policy, entry) {
            (OldPolicy::Master { user, password }, _) => {
                master_endpoint(old_connect, &key.old_user, user, password)
            }
            (OldPolicy::Accounts, Some(e)) => {
                login_endpoint(old_connect, &e.old_user, &e.old_password)
            }
            (OldPolicy::Accounts, None) => {
                return Err(format!("{} is not in old.accounts", key.new_user));
            }
            (OldPolicy::Same, _) => {
                return Err(
                    "no OLD password: old.auth = \"same\" waits for the user's login".into(),
                );
            }
        };
        let mut new_connect = self.new.clone();
        new_connect.host = key.new_host.clone();
        let new = match (&self.new_master, entry) {
            (Some((admin, pw)), _) => master_endpoint(new_connect, &key.new_user, admin, pw),
            (None, Some(e)) => login_endpoint(new_connect, &key.new_user, &e.new_password),
            (None, None) => {
                return Err(
                    "no NEW password: set new.master_user or list the account in old.accounts"
                        .into(),
                );
            }
        };
        Ok((old, new))
    }

    /// The default OLD and NEW hosts (for keys of imported logins).
    pub fn hosts(&self) -> (&str, &str) {
        (&self.old.host, &self.new.host)
    }
}
