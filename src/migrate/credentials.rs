//! Which account a login is, and where its logins come from — never from the state store: the
//! user's own login (the proxy), an OLD or NEW master user (SASL PLAIN with authzid = the user),
//! or an imapsync loop file naming OLD's host, user and password and NEW's password for each NEW
//! login. Every key is built here, from the login's normalised name (`new.username_format`).

use std::collections::HashMap;
use std::time::Duration;

use tracing::warn;

use super::MigrateError;
use crate::config::{self, Config, OldAuth};
use crate::imap::{ConnectOptions, TlsOptions};
use crate::login::LoginFormat;
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
    /// Account name (a normalised NEW login) → its loop-file line (`auth = "accounts"`).
    accounts: HashMap<String, Entry>,
    format: LoginFormat,
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
        let format = config.new.login_format().map_err(invalid)?;
        let mut accounts = HashMap::new();
        if let Some(path) = &old.accounts {
            let text = std::fs::read_to_string(path).map_err(|e| {
                MigrateError::Config(format!("old.accounts {}: {e}", path.display()))
            })?;
            for line in loopfile::parse_file(&text) {
                match line {
                    Line::Account(a) => {
                        accounts.insert(
                            format.apply(&a.user2),
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
            format,
        }))
    }

    /// The account name of a login as typed (`new.username_format`): one NEW mailbox, one name.
    pub fn name(&self, typed: &str) -> String {
        self.format.apply(typed)
    }

    /// The account key of NEW login `name` whose OLD side is `old_user` at `old_host`.
    pub fn key(&self, old_host: &str, old_user: &str, name: &str) -> AccountKey {
        AccountKey {
            old_host: old_host.to_string(),
            old_user: old_user.to_string(),
            new_host: self.new.host.clone(),
            new_user: name.to_string(),
        }
    }

    /// With `auth = "master"` OLD is opened only for accounts someone imported (`accounts
    /// import`): the master user could open any OLD mailbox, so a typed name alone is not enough.
    pub fn needs_import(&self) -> bool {
        matches!(self.policy, OldPolicy::Master { .. })
    }

    /// The account, OLD and NEW of a user who just logged in to NEW as `typed` with `password`
    /// (the proxy). `None`: the login has no OLD account (not in the accounts file).
    pub fn for_login(
        &self,
        typed: &str,
        password: &Secret,
    ) -> Option<(AccountKey, Endpoint, Endpoint)> {
        let name = self.name(typed);
        let new = login_endpoint(self.new.clone(), &name, password);
        let old = match &self.policy {
            OldPolicy::Same => login_endpoint(self.old.clone(), &name, password),
            OldPolicy::Master {
                user: admin,
                password,
            } => master_endpoint(self.old.clone(), &name, admin, password),
            OldPolicy::Accounts => {
                let e = self.accounts.get(&name)?;
                let mut connect = self.old.clone();
                connect.host = e.old_host.clone();
                login_endpoint(connect, &e.old_user, &e.old_password)
            }
        };
        let key = self.key(&old.connect.host, &old.user, &name);
        Some((key, old, new))
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
