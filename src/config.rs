//! The proxy's TOML configuration (`imapferry proxy --config FILE`): one struct per section, unknown
//! keys rejected, defaults filled in, then [`Config::validate`] checks what serde cannot (TLS files
//! parse, regexes compile, auth combinations). No secret lives in the file except the optional admin
//! token, which is a [`Secret`]; the OLD master password is read from a separate file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use tokio_rustls::rustls::ServerConfig;

use crate::cidr::Cidr;
use crate::login::LoginFormat;
use crate::mapping::{MapperOptions, PerlSubst, Selection, perl_regex};
use crate::secret::Secret;
use crate::store::Location;
use crate::tls::TlsError;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    /// The proxy's own certificate; needed by `listen.imaps` and for STARTTLS on `listen.imap`.
    #[serde(default)]
    pub tls: Option<Tls>,
    pub new: New,
    /// OLD, for the migration proxy; without it the proxy is a transparent relay to NEW.
    #[serde(default)]
    pub old: Option<Old>,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub mapping: Mapping,
    #[serde(default)]
    pub migration: Migration,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub sweep: Sweep,
}

/// `[listen]`: where mail clients connect.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Plain IMAP; STARTTLS is offered when `[tls]` is set.
    #[serde(default)]
    pub imap: Option<SocketAddr>,
    /// Implicit TLS (IMAPS); needs `[tls]`.
    #[serde(default)]
    pub imaps: Option<SocketAddr>,
    /// Expect a PROXY protocol v1/v2 header on every accepted connection.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The only sources a PROXY protocol header is taken from (the load balancers): CIDR blocks
    /// or addresses. Required with `proxy_protocol`; a connection from anywhere else is closed.
    #[serde(default)]
    pub proxy_protocol_from: Vec<Cidr>,
    /// Accept LOGIN/AUTHENTICATE before STARTTLS on `imap` when `[tls]` is set. Off: the proxy
    /// advertises LOGINDISABLED until TLS. Without `[tls]` there is nothing to upgrade to, so plain
    /// logins are accepted whatever this says.
    #[serde(default)]
    pub plaintext_login: bool,
}

/// `[tls]`: the proxy's certificate chain and private key, PEM files; with `[[tls.names]]`
/// entries, the certificate is chosen by the name the client asks for (SNI) and this one is
/// the default (no SNI, or a name no entry lists).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub names: Vec<TlsName>,
}

/// `[[tls.names]]`: a certificate for these names (`imap.example.com`, or `*.example.com` for
/// one label).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsName {
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    /// The server configuration: every certificate and key file read now.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let entries: Vec<crate::tls::sni::Entry<'_>> = self
            .names
            .iter()
            .map(|n| crate::tls::sni::Entry {
                names: &n.names,
                cert: &n.cert,
                key: &n.key,
            })
            .collect();
        crate::tls::server_config_with_names(&self.cert, &self.key, &entries)
    }
}

/// How a leg to an upstream server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    None,
    Starttls,
    Tls,
}

/// `[new]`: the server users are moving to; it checks every login.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct New {
    /// `host:port`.
    pub address: String,
    pub security: Security,
    /// Verify NEW's certificate with this CA file instead of the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Verify NEW's certificate (on by default; turning it off is an explicit opt-out).
    #[serde(default = "yes")]
    pub verify: bool,
    /// A NEW master user (SASL PLAIN with authzid = the user) for work without the user's own
    /// login: sweeps and `verify` of accounts nobody logs into.
    #[serde(default)]
    pub master_user: Option<String>,
    #[serde(default)]
    pub master_password_file: Option<PathBuf>,
    /// How a typed login becomes the account's name, as NEW normalises it (Dovecot's
    /// `auth_username_format`): `%Lu` by default, so `User2` and `USER2` are one account.
    #[serde(default = "default_username_format")]
    pub username_format: String,
}

fn default_username_format() -> String {
    "%Lu".into()
}

impl New {
    /// The parsed `username_format`.
    pub fn login_format(&self) -> Result<LoginFormat, ValidationError> {
        LoginFormat::parse(&self.username_format).map_err(|message| ValidationError::Invalid {
            key: "new.username_format",
            message,
        })
    }

    /// Reads NEW's master password, without its trailing newline.
    pub fn master_password(&self) -> Result<Option<Secret>, ValidationError> {
        self.master_password_file
            .as_deref()
            .map(|p| read_secret_file("new.master_password_file", p))
            .transpose()
    }
}

/// Reads a file holding only a password, byte for byte (a trailing newline is ignored).
fn read_secret_file(key: &'static str, path: &Path) -> Result<Secret, ValidationError> {
    let bytes = std::fs::read(path).map_err(|e| ValidationError::File {
        key,
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    let password = &bytes[..end];
    if password.is_empty() {
        return Err(ValidationError::File {
            key,
            path: path.to_path_buf(),
            message: "the file is empty".into(),
        });
    }
    Ok(Secret::from_bytes(password))
}

/// `[sweep]`: background completion of accounts nobody opens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Run the sweeper inside `imapferry proxy` (`imapferry sweep` always runs it).
    #[serde(default)]
    pub enabled: bool,
    /// Accounts swept at the same time.
    #[serde(default = "default_sweep_accounts")]
    pub accounts_in_parallel: usize,
    /// Connections the sweeper opens to one OLD host at most (all accounts together).
    #[serde(default = "default_sweep_connections")]
    pub connections_per_host: usize,
    /// Global copy ceilings of the sweeper (all accounts together); none by default.
    #[serde(default)]
    pub max_bytes_per_second: Option<u64>,
    #[serde(default)]
    pub max_messages_per_second: Option<f64>,
    /// Daily window `HH:MM-HH:MM` (local time, may wrap midnight) outside which the sweeper
    /// starts nothing new; none = always.
    #[serde(default)]
    pub window: Option<String>,
    /// Synced (not retired) accounts are looked at again after this many seconds.
    #[serde(default = "default_revisit_secs")]
    pub revisit_secs: u64,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            enabled: false,
            accounts_in_parallel: default_sweep_accounts(),
            connections_per_host: default_sweep_connections(),
            max_bytes_per_second: None,
            max_messages_per_second: None,
            window: None,
            revisit_secs: default_revisit_secs(),
        }
    }
}

fn default_sweep_accounts() -> usize {
    4
}

fn default_sweep_connections() -> usize {
    8
}

fn default_revisit_secs() -> u64 {
    3600
}

/// A daily time window `HH:MM-HH:MM` as minutes after midnight (start, end); `end < start`
/// wraps midnight.
pub fn parse_window(text: &str) -> Option<(u32, u32)> {
    let minutes = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = text.split_once('-')?;
    Some((minutes(a)?, minutes(b)?))
}

/// How the proxy logs in to OLD for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OldAuth {
    /// The client's own login and password.
    Same,
    /// SASL PLAIN as `master_user` with authzid = the user.
    Master,
    /// An imapsync-style accounts file maps the NEW login to OLD's host, user and password.
    Accounts,
}

/// `[old]`: the server users are leaving.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Old {
    /// `host:port`.
    pub address: String,
    pub security: Security,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default = "default_auth")]
    pub auth: OldAuth,
    #[serde(default)]
    pub master_user: Option<String>,
    /// A file holding only the master password (a trailing newline is ignored).
    #[serde(default)]
    pub master_password_file: Option<PathBuf>,
    #[serde(default)]
    pub accounts: Option<PathBuf>,
}

impl Old {
    /// Reads the master password from `master_password_file`, without its trailing newline.
    pub fn master_password(&self) -> Result<Option<Secret>, ValidationError> {
        self.master_password_file
            .as_deref()
            .map(|p| read_secret_file("old.master_password_file", p))
            .transpose()
    }
}

/// `[state]`: where the state store lives (links, tombstones, journal): an SQLite file (`path`,
/// `imapferry.db` by default) or a PostgreSQL database that a fleet of proxies shares (`url`,
/// whose password comes from `password_file` or `IMAPFERRY_STATE_PASSWORD`, never the URL).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl State {
    /// The store these settings name; reads the password file.
    pub fn location(&self) -> Result<Location, ValidationError> {
        let location = match (&self.path, &self.url) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::Invalid {
                    key: "state.url",
                    message: "set state.path (an SQLite file) or state.url, not both".into(),
                });
            }
            (_, Some(url)) => {
                let password = self
                    .password_file
                    .as_deref()
                    .map(|p| read_secret_file("state.password_file", p))
                    .transpose()?;
                Location::parse(url, password).map_err(|e| ValidationError::Invalid {
                    key: "state.url",
                    message: e.to_string(),
                })?
            }
            (path, None) => Location::File(
                path.clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_PATH)),
            ),
        };
        if self.password_file.is_some() && matches!(location, Location::File(_)) {
            return Err(ValidationError::Unused {
                key: "state.password_file",
                because: "state.url names a PostgreSQL database",
            });
        }
        Ok(location)
    }
}

/// `[admin]`: the HTTP endpoint: `/health`, `/metrics` and the JSON API over the state store.
/// The API can retire accounts, so it is locked unless said otherwise ([`Admin::validate`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Requests (all but `/health`) must carry `Authorization: Bearer TOKEN`. Required unless
    /// `allow_without_token`; never empty; never printed.
    #[serde(default, deserialize_with = "secret_opt")]
    pub token: Option<Secret>,
    /// Serve without a token. Only with a loopback `listen`: on any other address everyone who
    /// reaches the port could retire accounts.
    #[serde(default)]
    pub allow_without_token: bool,
    /// A name the `Host` header may carry besides the address the connection arrived on (and
    /// `localhost` on loopback): `admin.example.net` (any port) or `admin.example.net:8443`.
    /// Other names are refused, so a web page cannot reach the API by DNS rebinding.
    #[serde(default)]
    pub host: Option<String>,
    /// A connection must send a complete request head within this many seconds of opening, and
    /// of its last response on a kept-alive connection; else it is closed.
    #[serde(default = "default_admin_header_timeout_secs")]
    pub header_timeout_secs: u64,
}

impl Admin {
    /// The token rule (a token, or an explicit `allow_without_token` on loopback; never an empty
    /// token), the `host` name's form and the timeout's range.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match (&self.token, self.allow_without_token) {
            (Some(token), false) => {
                let t = token.expose();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ValidationError::Invalid {
                        key: "admin.token",
                        message: "must be non-empty printable ASCII without spaces (a long \
                                  random string, e.g. from `openssl rand -hex 32`)"
                            .into(),
                    });
                }
            }
            (Some(_), true) => {
                return Err(ValidationError::Unused {
                    key: "admin.allow_without_token",
                    because: "admin.token is not set",
                });
            }
            (None, true) if !self.listen.ip().to_canonical().is_loopback() => {
                return Err(ValidationError::Invalid {
                    key: "admin.allow_without_token",
                    message: format!(
                        "only with a loopback admin.listen (127.0.0.1, [::1]), not {}: set \
                         admin.token instead",
                        self.listen.ip()
                    ),
                });
            }
            (None, true) => {}
            (None, false) => {
                return Err(ValidationError::Invalid {
                    key: "admin.token",
                    message: "required: the admin API can retire accounts. Set a token \
                              (clients send `Authorization: Bearer TOKEN`), or, with a loopback \
                              admin.listen, allow_without_token = true"
                        .into(),
                });
            }
        }
        if let Some(host) = &self.host
            && (host.is_empty()
                || !host.bytes().all(|b| b.is_ascii_graphic())
                || host.contains(['/', '@', '?', '#']))
        {
            return Err(ValidationError::Invalid {
                key: "admin.host",
                message: format!(
                    "{host:?}: expected a host name, optionally with :port (admin.example.net)"
                ),
            });
        }
        positive("admin.header_timeout_secs", self.header_timeout_secs)
    }
}

/// Prometheus sends its request as soon as it connects; 10 s is ample on any network an admin
/// port belongs on, and frees the slots of idle connections soon.
fn default_admin_header_timeout_secs() -> u64 {
    10
}

/// `[mapping]`: folder selection and naming, with the `imapferry sync` options' meaning.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// `--folder`: only these OLD folders (exact names).
    #[serde(default)]
    pub folder: Vec<String>,
    /// `--include`: add the OLD folders matching these regexes.
    #[serde(default)]
    pub include: Vec<String>,
    /// `--exclude`: skip the folders matching these regexes.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `--regextrans2`: Perl substitutions applied to the NEW name, in order.
    #[serde(default)]
    pub regextrans2: Vec<String>,
    /// `--automap`: map special folders by special-use attributes, then by name.
    #[serde(default)]
    pub automap: bool,
    /// `--sep1`/`--sep2`: hierarchy separators (default: from NAMESPACE).
    #[serde(default)]
    pub sep1: Option<char>,
    #[serde(default)]
    pub sep2: Option<char>,
    /// `--prefix1`/`--prefix2`: personal namespace prefixes (default: from NAMESPACE).
    #[serde(default)]
    pub prefix1: Option<String>,
    #[serde(default)]
    pub prefix2: Option<String>,
}

impl Mapping {
    /// The folder selection (`folder`, `include`, `exclude`), regexes compiled.
    pub fn selection(&self) -> Result<Selection, ValidationError> {
        let compile = |key: &'static str, list: &[String]| {
            list.iter()
                .map(|v| {
                    perl_regex(v).map_err(|e| ValidationError::Regex {
                        key,
                        value: v.clone(),
                        message: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Selection {
            folders: self.folder.clone(),
            include: compile("mapping.include", &self.include)?,
            exclude: compile("mapping.exclude", &self.exclude)?,
        })
    }

    /// The folder-name translation options.
    pub fn mapper_options(&self) -> MapperOptions {
        MapperOptions {
            automap: self.automap,
            regextrans2: self.regextrans2.clone(),
            ..MapperOptions::default()
        }
    }
}

/// `[migration]`: the lazy backfill and the deletion safety bound.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// Longest a SELECT/EXAMINE waits for its folder's backfill before it goes to NEW anyway.
    #[serde(default = "default_select_budget_ms")]
    pub select_budget_ms: u64,
    /// Largest share (0..=1) of a folder's messages that deletions seen on OLD may remove on NEW
    /// in one pass; above it nothing is deleted and the folder is reported.
    #[serde(default = "default_max_delete_share")]
    pub max_delete_share: f64,
    /// Journal entries mirrored to OLD are kept this many days for audit, then deleted.
    #[serde(default = "default_journal_keep_days")]
    pub journal_keep_days: u32,
    /// Times OLD may refuse a journal entry (retried with a back-off from `mirror_retry_secs`,
    /// doubling) before it is parked and the account marked diverged.
    #[serde(default = "default_mirror_attempts")]
    pub mirror_attempts: u32,
    #[serde(default = "default_mirror_retry_secs")]
    pub mirror_retry_secs: u64,
    /// Nothing is written to OLD (journal replay, the proxy's own reconcile) while true: the
    /// users' writes are journaled and wait, for OLD's maintenance. Reloadable: false again
    /// replays what waits.
    #[serde(default)]
    pub mirror_paused: bool,
    /// How new mail on OLD reaches the folders open sessions have selected (live pickup), for
    /// every account but those in `live_pickup_for`. Reloadable: once the MX points at NEW, "off"
    /// leaves it to the next SELECT and the sweeper's revisits.
    #[serde(default)]
    pub live_pickup: LivePickup,
    /// Per account (its name as the proxy normalises logins): a mode other than `live_pickup`.
    #[serde(default)]
    pub live_pickup_for: BTreeMap<String, LivePickup>,
    /// Polling asks OLD again this long after a change, doubling while nothing changes up to
    /// `live_pickup_max_secs`, which is also the longest a change the mirror's own writes may
    /// account for waits for its check. 0 turns live pickup off for every account (as it
    /// always did).
    #[serde(default = "default_live_pickup_secs")]
    pub live_pickup_secs: u64,
    #[serde(default = "default_live_pickup_max_secs")]
    pub live_pickup_max_secs: u64,
    /// An account's engine connections (backfills, the mirror, polling) unused this long are
    /// logged out. Reloadable.
    #[serde(default = "default_idle_connections_secs")]
    pub idle_connections_secs: u64,
    /// Show clients OLD's UIDVALIDITY and UIDs in the folders copied from OLD, so the caches
    /// their mail clients made on OLD stay valid (README "Client caches").
    #[serde(default)]
    pub keep_client_caches: bool,
    /// With `keep_client_caches`: longest a SELECT, EXAMINE or STATUS of such a folder waits for
    /// its backfill before the client is told `NO [UNAVAILABLE]` and tries again.
    #[serde(default = "default_keep_client_caches_wait_secs")]
    pub keep_client_caches_wait_secs: u64,
}

/// `[migration] live_pickup`: how new mail on OLD reaches open sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LivePickup {
    /// IDLE (RFC 2177) on OLD where it offers it; polling where it does not.
    #[default]
    Idle,
    /// STATUS on OLD on an adaptive schedule (see `live_pickup_secs`).
    Poll,
    /// None: the next SELECT and the sweeper's revisits copy.
    Off,
}

impl LivePickup {
    pub fn as_str(self) -> &'static str {
        match self {
            LivePickup::Idle => "idle",
            LivePickup::Poll => "poll",
            LivePickup::Off => "off",
        }
    }
}

fn default_live_pickup_secs() -> u64 {
    2
}

fn default_live_pickup_max_secs() -> u64 {
    60
}

fn default_idle_connections_secs() -> u64 {
    30
}

fn default_keep_client_caches_wait_secs() -> u64 {
    30
}

impl Migration {
    /// Equal but for what a reload may change.
    pub fn same_but_reloadable(&self, other: &Migration) -> bool {
        Migration {
            live_pickup: other.live_pickup,
            live_pickup_for: other.live_pickup_for.clone(),
            live_pickup_secs: other.live_pickup_secs,
            live_pickup_max_secs: other.live_pickup_max_secs,
            idle_connections_secs: other.idle_connections_secs,
            mirror_paused: other.mirror_paused,
            ..self.clone()
        } == *other
    }
}

fn default_journal_keep_days() -> u32 {
    7
}

fn default_mirror_attempts() -> u32 {
    5
}

fn default_mirror_retry_secs() -> u64 {
    2
}

impl Default for Migration {
    fn default() -> Self {
        Migration {
            select_budget_ms: default_select_budget_ms(),
            max_delete_share: default_max_delete_share(),
            journal_keep_days: default_journal_keep_days(),
            mirror_attempts: default_mirror_attempts(),
            mirror_retry_secs: default_mirror_retry_secs(),
            mirror_paused: false,
            live_pickup: LivePickup::default(),
            live_pickup_for: BTreeMap::new(),
            live_pickup_secs: default_live_pickup_secs(),
            live_pickup_max_secs: default_live_pickup_max_secs(),
            idle_connections_secs: default_idle_connections_secs(),
            keep_client_caches: false,
            keep_client_caches_wait_secs: default_keep_client_caches_wait_secs(),
        }
    }
}

/// `[limits]`: bounds that keep one client from exhausting the proxy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest command line (octets, literals excluded).
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Largest literal accepted before login (octets).
    #[serde(default = "default_max_literal_before_login")]
    pub max_literal_before_login: u32,
    /// Simultaneous connections from one client address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// Simultaneous client connections in total.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// An authenticated connection silent this long is closed with `* BYE`.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Time from accept to a successful login.
    #[serde(default = "default_login_timeout_secs")]
    pub login_timeout_secs: u64,
    /// A client (or NEW) that takes longer than this to accept a write is disconnected: it is
    /// never buffered for without limit.
    #[serde(default = "default_write_timeout_secs")]
    pub write_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_length: default_max_line_length(),
            max_literal_before_login: default_max_literal_before_login(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_connections: default_max_connections(),
            idle_timeout_secs: default_idle_timeout_secs(),
            login_timeout_secs: default_login_timeout_secs(),
            write_timeout_secs: default_write_timeout_secs(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// One JSON object per event instead of text lines.
    #[serde(default)]
    pub json: bool,
    /// What is logged, in `RUST_LOG` syntax (`info`, `warn,imapferry=debug`). Set, it wins over
    /// `RUST_LOG` and a reload applies a change; unset, `RUST_LOG` decides (`warn` without it).
    #[serde(default)]
    pub level: Option<String>,
    /// Also write every event as one JSON object per line to this file (appended; opened again
    /// at each reload, so logrotate can move it away and reload the proxy).
    #[serde(default)]
    pub json_file: Option<PathBuf>,
}

impl Log {
    /// The parsed `level`, if set.
    pub fn filter(&self) -> Result<Option<tracing_subscriber::EnvFilter>, ValidationError> {
        self.level
            .as_deref()
            .map(|level| {
                tracing_subscriber::EnvFilter::builder()
                    .parse(level)
                    .map_err(|e| ValidationError::Invalid {
                        key: "log.level",
                        message: format!("{level:?}: {e}"),
                    })
            })
            .transpose()
    }
}

/// The state file when `[state]` names none.
const DEFAULT_STATE_PATH: &str = "imapferry.db";

fn yes() -> bool {
    true
}
fn default_auth() -> OldAuth {
    OldAuth::Same
}
fn default_select_budget_ms() -> u64 {
    2000
}
fn default_max_delete_share() -> f64 {
    0.10
}
/// Dovecot's `imap_max_line_length`: the proxy never refuses a line NEW would take, and long UID
/// sets (`UID STORE 1,3,5,...`) fit.
fn default_max_line_length() -> usize {
    65536
}
/// Before login a literal can only carry a user name or a password; 8 KiB is ample for those and
/// keeps unauthenticated memory small.
fn default_max_literal_before_login() -> u32 {
    8192
}
/// Room for an office behind one NAT address (each mail client keeps several connections),
/// while one address cannot take the whole proxy.
fn default_max_connections_per_ip() -> u32 {
    100
}
/// Each client connection also holds one to NEW, so 5,000 means about 10,000 descriptors
/// (raise `ulimit -n`); at under 64 KB per idle connection it stays well below 1 GB.
fn default_max_connections() -> u32 {
    5000
}
/// RFC 9051 §5.4: the inactivity autologout timer must be at least 30 minutes, and clients
/// re-issue IDLE every 29 minutes; one spare minute.
fn default_idle_timeout_secs() -> u64 {
    1860
}
/// Enough for a slow mobile TLS handshake and a login round trip; a connection that has not
/// logged in by then only holds a slot.
fn default_login_timeout_secs() -> u64 {
    60
}
/// A mobile client on a poor link still takes a 128 KiB write within a minute.
fn default_write_timeout_secs() -> u64 {
    60
}

fn secret_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

/// What is wrong with a parsed configuration; [`ValidationError::key`] names the key.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("[listen]: set imap or imaps (or both)")]
    NoListener,
    #[error("{key} needs a [tls] section with cert and key")]
    NeedsTls { key: &'static str },
    #[error("{key}: {source}")]
    Tls {
        key: &'static str,
        #[source]
        source: TlsError,
    },
    #[error("{key} = {path:?}: {message}")]
    File {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{key} is required when {because}")]
    Missing {
        key: &'static str,
        because: &'static str,
    },
    #[error("{key} is only used when {because}")]
    Unused {
        key: &'static str,
        because: &'static str,
    },
    #[error("{key} = {value}: {expected}")]
    OutOfRange {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{key} = {value:?}: expected host:port")]
    Address { key: &'static str, value: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{key} '{value}' is not a usable regex: {message}")]
    Regex {
        key: &'static str,
        value: String,
        message: String,
    },
}

impl ValidationError {
    /// The dotted key (`old.master_user`) or section (`listen`) at fault.
    pub fn key(&self) -> &'static str {
        match self {
            ValidationError::NoListener => "listen",
            ValidationError::NeedsTls { key }
            | ValidationError::Tls { key, .. }
            | ValidationError::File { key, .. }
            | ValidationError::Missing { key, .. }
            | ValidationError::Unused { key, .. }
            | ValidationError::OutOfRange { key, .. }
            | ValidationError::Address { key, .. }
            | ValidationError::Regex { key, .. }
            | ValidationError::Invalid { key, .. } => key,
        }
    }
}

/// A configuration file that cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type, a missing key or an unknown key (the message names it).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: ValidationError,
    },
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `origin` names it in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Parse {
            path: origin.to_owned(),
            line,
            column,
            message: e.message().trim_end().to_string(),
        }
    })?;
    config.validate().map_err(|source| ConfigError::Invalid {
        path: origin.to_owned(),
        source,
    })?;
    Ok(config)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn check_address(key: &'static str, value: &str) -> Result<(), ValidationError> {
    let bad = || ValidationError::Address {
        key,
        value: value.to_string(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(bad());
    }
    Ok(())
}

fn check_ca(key: &'static str, ca: Option<&Path>) -> Result<(), ValidationError> {
    match ca {
        Some(path) => crate::tls::read_certs(path)
            .map(|_| ())
            .map_err(|source| ValidationError::Tls { key, source }),
        None => Ok(()),
    }
}

fn check_readable(key: &'static str, path: &Path) -> Result<(), ValidationError> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| ValidationError::File {
            key,
            path: path.to_owned(),
            message: e.to_string(),
        })
}

fn positive(key: &'static str, value: u64) -> Result<(), ValidationError> {
    if value == 0 {
        return Err(ValidationError::OutOfRange {
            key,
            value: "0".into(),
            expected: "must be greater than 0",
        });
    }
    Ok(())
}

impl Config {
    /// Checks everything serde cannot: listeners and TLS (the PEM files are read and must
    /// parse), upstream addresses, OLD's auth combinations and files, mapping regexes, ranges.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.state.location()?;
        if self.listen.imap.is_none() && self.listen.imaps.is_none() {
            return Err(ValidationError::NoListener);
        }
        match (
            self.listen.proxy_protocol,
            self.listen.proxy_protocol_from.is_empty(),
        ) {
            // Without it, anyone reaching the port could claim any client address.
            (true, true) => {
                return Err(ValidationError::Missing {
                    key: "listen.proxy_protocol_from",
                    because: "listen.proxy_protocol = true (list the load balancers that send \
                              the header, e.g. [\"10.0.0.5/32\"]; a header from anyone else \
                              would let a client choose its own address)",
                });
            }
            (false, false) => {
                return Err(ValidationError::Unused {
                    key: "listen.proxy_protocol_from",
                    because: "listen.proxy_protocol = true",
                });
            }
            _ => {}
        }
        match &self.tls {
            Some(tls) => {
                tls.server_config().map_err(|source| {
                    let key = match source {
                        TlsError::Names(_) => "tls.names",
                        _ => "tls",
                    };
                    ValidationError::Tls { key, source }
                })?;
            }
            None if self.listen.imaps.is_some() => {
                return Err(ValidationError::NeedsTls {
                    key: "listen.imaps",
                });
            }
            None => {}
        }

        check_address("new.address", &self.new.address)?;
        check_ca("new.ca", self.new.ca.as_deref())?;
        self.new.login_format()?;

        if let Some(old) = &self.old {
            check_address("old.address", &old.address)?;
            check_ca("old.ca", old.ca.as_deref())?;
            self.validate_old_auth(old)?;
        }

        for v in &self.mapping.regextrans2 {
            let mut probe = v.clone();
            for var in ["h1_prefix", "h2_prefix", "h1_sep", "h2_sep"] {
                probe = probe
                    .replace(&format!("${{{var}}}"), "P")
                    .replace(&format!("${var}"), "P");
            }
            PerlSubst::parse(&probe).map_err(|e| ValidationError::Regex {
                key: "mapping.regextrans2",
                value: v.clone(),
                message: e.to_string(),
            })?;
        }
        self.mapping.selection()?;

        let share = self.migration.max_delete_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(ValidationError::OutOfRange {
                key: "migration.max_delete_share",
                value: share.to_string(),
                expected: "a share between 0 and 1 (0.10 = 10 %)",
            });
        }

        let m = &self.migration;
        positive("migration.idle_connections_secs", m.idle_connections_secs)?;
        positive(
            "migration.keep_client_caches_wait_secs",
            m.keep_client_caches_wait_secs,
        )?;
        if m.live_pickup_secs > 0 && m.live_pickup_max_secs < m.live_pickup_secs {
            return Err(ValidationError::OutOfRange {
                key: "migration.live_pickup_max_secs",
                value: m.live_pickup_max_secs.to_string(),
                expected: "at least migration.live_pickup_secs",
            });
        }

        let l = &self.limits;
        if l.max_line_length < 1000 {
            return Err(ValidationError::OutOfRange {
                key: "limits.max_line_length",
                value: l.max_line_length.to_string(),
                expected: "at least 1000 octets (RFC 2683 §3.2.1.5)",
            });
        }
        positive(
            "limits.max_literal_before_login",
            l.max_literal_before_login.into(),
        )?;
        positive(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip.into(),
        )?;
        positive("limits.max_connections", l.max_connections.into())?;
        positive("limits.idle_timeout_secs", l.idle_timeout_secs)?;
        positive("limits.login_timeout_secs", l.login_timeout_secs)?;
        positive("limits.write_timeout_secs", l.write_timeout_secs)?;

        match (&self.new.master_user, &self.new.master_password_file) {
            (Some(_), None) => {
                return Err(ValidationError::Missing {
                    key: "new.master_password_file",
                    because: "new.master_user is set",
                });
            }
            (None, Some(_)) => {
                return Err(ValidationError::Missing {
                    key: "new.master_user",
                    because: "new.master_password_file is set",
                });
            }
            (Some(_), Some(_)) => {
                self.new.master_password()?;
            }
            (None, None) => {}
        }
        if let Some(admin) = &self.admin {
            admin.validate()?;
        }
        self.log.filter()?;
        let sw = &self.sweep;
        positive("sweep.accounts_in_parallel", sw.accounts_in_parallel as u64)?;
        positive("sweep.connections_per_host", sw.connections_per_host as u64)?;
        positive("sweep.revisit_secs", sw.revisit_secs)?;
        if let Some(w) = &sw.window
            && parse_window(w).is_none()
        {
            return Err(ValidationError::OutOfRange {
                key: "sweep.window",
                value: w.clone(),
                expected: "HH:MM-HH:MM, e.g. 22:00-06:00",
            });
        }
        Ok(())
    }

    fn validate_old_auth(&self, old: &Old) -> Result<(), ValidationError> {
        const MASTER: &str = "old.auth = \"master\"";
        const ACCOUNTS: &str = "old.auth = \"accounts\"";
        let master = old.auth == OldAuth::Master;
        let accounts = old.auth == OldAuth::Accounts;
        match (&old.master_user, master) {
            (None, true) => {
                return Err(ValidationError::Missing {
                    key: "old.master_user",
                    because: MASTER,
                });
            }
            (Some(_), false) => {
                return Err(ValidationError::Unused {
                    key: "old.master_user",
                    because: MASTER,
                });
            }
            _ => {}
        }
        match (&old.master_password_file, master) {
            (None, true) => {
                return Err(ValidationError::Missing {
                    key: "old.master_password_file",
                    because: MASTER,
                });
            }
            (Some(_), true) => {
                old.master_password()?;
            }
            (Some(_), false) => {
                return Err(ValidationError::Unused {
                    key: "old.master_password_file",
                    because: MASTER,
                });
            }
            (None, false) => {}
        }
        match (&old.accounts, accounts) {
            (None, true) => Err(ValidationError::Missing {
                key: "old.accounts",
                because: ACCOUNTS,
            }),
            (Some(path), true) => check_readable("old.accounts", path),
            (Some(_), false) => Err(ValidationError::Unused {
                key: "old.accounts",
                because: ACCOUNTS,
            }),
            (None, false) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/localhost.pem");
    const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/localhost-key.pem");

    const MINIMAL: &str = "[listen]\nimap = \"127.0.0.1:1143\"\n[new]\naddress = \"127.0.0.1:21143\"\nsecurity = \"none\"\n";

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    fn invalid(text: &str) -> ValidationError {
        match parse_str(text) {
            Err(ConfigError::Invalid { source, .. }) => source,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn with_old(old: &str) -> String {
        format!("{MINIMAL}[old]\naddress = \"127.0.0.1:11143\"\nsecurity = \"none\"\n{old}")
    }

    #[test]
    fn defaults() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.listen.imap, Some("127.0.0.1:1143".parse().unwrap()));
        assert_eq!(c.listen.imaps, None);
        assert!(!c.listen.proxy_protocol);
        assert!(!c.listen.plaintext_login);
        assert!(c.tls.is_none() && c.old.is_none() && c.admin.is_none());
        assert!(c.new.verify);
        assert_eq!(c.new.ca, None);
        assert_eq!(
            c.state.location().unwrap(),
            Location::File(PathBuf::from("imapferry.db"))
        );
        assert_eq!(c.migration.select_budget_ms, 2000);
        assert_eq!(c.migration.max_delete_share, 0.10);
        assert_eq!(c.limits.max_line_length, 65536);
        assert_eq!(c.limits.max_literal_before_login, 8192);
        assert_eq!(c.limits.max_connections_per_ip, 100);
        assert_eq!(c.limits.max_connections, 5000);
        assert_eq!(c.limits.idle_timeout_secs, 1860);
        assert_eq!(c.limits.login_timeout_secs, 60);
        assert_eq!(c.limits.write_timeout_secs, 60);
        assert!(!c.log.json);
        assert!(!c.mapping.automap && c.mapping.regextrans2.is_empty());
        let old = parse_str(&with_old("")).unwrap().old.unwrap();
        assert_eq!(old.auth, OldAuth::Same);
        assert!(old.verify);
    }

    #[test]
    fn sweep_windows_and_new_master_user() {
        for (text, expected) in [
            ("22:00-06:00", Some((1320, 360))),
            ("9:30-17:00", Some((570, 1020))),
            ("24:00-01:00", None),
            ("22:00", None),
            ("a-b", None),
        ] {
            assert_eq!(parse_window(text), expected, "{text}");
        }
        let base =
            "[listen]\nimap = \"127.0.0.1:1\"\n[new]\naddress = \"h:1\"\nsecurity = \"none\"\n";
        let bad_window = format!("{base}[sweep]\nwindow = \"late\"\n");
        assert_eq!(invalid(&bad_window).key(), "sweep.window");
        let zero = format!("{base}[sweep]\naccounts_in_parallel = 0\n");
        assert_eq!(invalid(&zero).key(), "sweep.accounts_in_parallel");
        let half = base.replace(
            "security = \"none\"\n",
            "security = \"none\"\nmaster_user = \"admin\"\n",
        );
        assert_eq!(invalid(&half).key(), "new.master_password_file");
        let c = parse_str(base).unwrap();
        assert!(!c.sweep.enabled);
        assert_eq!(c.sweep.accounts_in_parallel, 4);
    }

    #[test]
    fn security_values() {
        for (word, expected) in [
            ("none", Security::None),
            ("starttls", Security::Starttls),
            ("tls", Security::Tls),
        ] {
            let text = MINIMAL.replace("\"none\"", &format!("\"{word}\""));
            assert_eq!(parse_str(&text).unwrap().new.security, expected);
        }
        let err = parse_str(&MINIMAL.replace("\"none\"", "\"ssl\"")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ssl") && msg.contains("starttls"), "{msg}");
    }

    #[test]
    fn unknown_key_rejected_with_its_name_and_line() {
        let text = MINIMAL.replace("[new]\n", "[new]\nadress = \"x:1\"\n");
        let err = parse_str(&text).unwrap_err();
        match &err {
            ConfigError::Parse { line, .. } => assert_eq!(*line, 4),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:4:"), "{msg}");
        assert!(msg.contains("adress"), "{msg}");

        let err = parse_str(&format!("{MINIMAL}[bogus]\nx = 1\n")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = parse_str(&format!("{MINIMAL}[limits]\nmax_lines = 1\n")).unwrap_err();
        assert!(err.to_string().contains("max_lines"), "{err}");
    }

    #[test]
    fn missing_required_key() {
        let err = parse_str("[listen]\nimap = \"127.0.0.1:1143\"\n").unwrap_err();
        assert!(err.to_string().contains("new"), "{err}");
        let err = parse_str(&MINIMAL.replace("security = \"none\"\n", "")).unwrap_err();
        assert!(err.to_string().contains("security"), "{err}");
    }

    #[test]
    fn listeners_and_tls() {
        let none = MINIMAL.replace("imap = \"127.0.0.1:1143\"\n", "");
        assert!(matches!(invalid(&none), ValidationError::NoListener));
        let imaps = MINIMAL.replace("imap =", "imaps =");
        let e = invalid(&imaps);
        assert_eq!(e.key(), "listen.imaps");
        assert!(e.to_string().contains("[tls]"), "{e}");

        let ok = format!("{imaps}[tls]\ncert = \"{CERT}\"\nkey = \"{KEY}\"\n");
        assert!(parse_str(&ok).unwrap().tls.is_some());

        let missing = format!("{imaps}[tls]\ncert = \"/nonexistent.pem\"\nkey = \"{KEY}\"\n");
        let e = invalid(&missing);
        assert_eq!(e.key(), "tls");
        assert!(e.to_string().contains("/nonexistent.pem"), "{e}");

        // A key file that holds a certificate, not a key.
        let swapped = format!("{imaps}[tls]\ncert = \"{CERT}\"\nkey = \"{CERT}\"\n");
        assert_eq!(invalid(&swapped).key(), "tls");

        let ca = MINIMAL.replace("security", "ca = \"/nonexistent-ca.pem\"\nsecurity");
        assert_eq!(invalid(&ca).key(), "new.ca");
    }

    /// `[[tls.names]]` (issue 16, item 2): every entry's files read, its names checked.
    #[test]
    fn tls_names() {
        let tls = format!("{MINIMAL}[tls]\ncert = \"{CERT}\"\nkey = \"{KEY}\"\n");
        let entry = |names: &str, cert: &str| {
            format!("{tls}[[tls.names]]\nnames = {names}\ncert = \"{cert}\"\nkey = \"{KEY}\"\n")
        };
        let ok = entry("[\"imap.example.com\", \"*.example.net\"]", CERT);
        let c = parse_str(&format!(
            "{ok}[[tls.names]]\nnames = [\"localhost\"]\ncert = \"{CERT}\"\nkey = \"{KEY}\"\n"
        ))
        .unwrap();
        let names = &c.tls.unwrap().names;
        assert_eq!(names.len(), 2);
        assert_eq!(names[0].names, ["imap.example.com", "*.example.net"]);
        // (names, certificate file, error key and words)
        let cases: &[(&str, &str, &str, &str)] = &[
            ("[]", CERT, "tls.names", "at least one name"),
            ("[\"*.net\"]", CERT, "tls.names", "*.net"),
            ("[\"a b\"]", CERT, "tls.names", "not a DNS name"),
            ("[\"a.example\", \"A.example\"]", CERT, "tls.names", "twice"),
            (
                "[\"a.example\"]",
                "/nonexistent.pem",
                "tls",
                "/nonexistent.pem",
            ),
        ];
        for (names, cert, key, words) in cases {
            let e = invalid(&entry(names, cert));
            assert_eq!(e.key(), *key, "{names}");
            assert!(e.to_string().contains(words), "{names}: {e}");
        }
        let err = parse_str(&format!("{tls}[[tls.names]]\ncert = \"{CERT}\"\n")).unwrap_err();
        assert!(err.to_string().contains("names"), "{err}");
    }

    #[test]
    fn proxy_protocol_needs_its_sources() {
        let on = MINIMAL.replace("[new]\n", "proxy_protocol = true\n[new]\n");
        let e = invalid(&on);
        assert_eq!(e.key(), "listen.proxy_protocol_from");
        assert!(e.to_string().contains("load balancers"), "{e}");
        let listed = on.replace(
            "proxy_protocol = true\n",
            "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"2001:db8::7\"]\n",
        );
        let c = parse_str(&listed).unwrap();
        assert_eq!(
            c.listen.proxy_protocol_from,
            [
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::7/128".parse().unwrap()
            ]
        );
        let unused = MINIMAL.replace("[new]\n", "proxy_protocol_from = [\"10.0.0.0/8\"]\n[new]\n");
        assert_eq!(invalid(&unused).key(), "listen.proxy_protocol_from");
        // A block that is not one is a parse error naming the line.
        let bad = listed.replace("10.0.0.0/8", "10.0.0.1/8");
        let err = parse_str(&bad).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 4, .. }), "{err:?}");
        assert!(err.to_string().contains("host bits"), "{err}");
    }

    #[test]
    fn addresses() {
        for bad in ["localhost", "localhost:", ":143", "host:99999", "host:0"] {
            let text = MINIMAL.replace("127.0.0.1:21143", bad);
            assert_eq!(invalid(&text).key(), "new.address", "{bad}");
        }
        for good in ["imap.example.com:993", "[::1]:143"] {
            let text = MINIMAL.replace("127.0.0.1:21143", good);
            assert!(parse_str(&text).is_ok(), "{good}");
        }
        // Listeners are socket addresses: serde rejects a host name.
        let err = parse_str(&MINIMAL.replace("127.0.0.1:1143", "localhost:1143")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn old_auth_combinations() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("master.secret");
        std::fs::write(&secret, "s3cret-pw\n").unwrap();
        let accounts = dir.path().join("accounts.txt");
        std::fs::write(&accounts, "").unwrap();
        let secret = secret.display();
        let accounts = accounts.display();

        let e = invalid(&with_old("auth = \"master\"\n"));
        assert!(
            matches!(
                e,
                ValidationError::Missing {
                    key: "old.master_user",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("old.master_user"));
        let e = invalid(&with_old("auth = \"master\"\nmaster_user = \"admin\"\n"));
        assert_eq!(e.key(), "old.master_password_file");
        let e = invalid(&with_old(
            "auth = \"master\"\nmaster_user = \"admin\"\nmaster_password_file = \"/nonexistent\"\n",
        ));
        assert!(matches!(e, ValidationError::File { .. }), "{e}");
        let c = parse_str(&with_old(&format!(
            "auth = \"master\"\nmaster_user = \"admin\"\nmaster_password_file = \"{secret}\"\n"
        )))
        .unwrap();
        let old = c.old.as_ref().unwrap();
        assert_eq!(old.auth, OldAuth::Master);
        assert_eq!(
            old.master_password().unwrap().unwrap().expose(),
            "s3cret-pw"
        );
        assert!(!format!("{c:?}").contains("s3cret-pw"));

        let e = invalid(&with_old("master_user = \"admin\"\n"));
        assert!(
            matches!(
                e,
                ValidationError::Unused {
                    key: "old.master_user",
                    ..
                }
            ),
            "{e}"
        );

        let e = invalid(&with_old("auth = \"accounts\"\n"));
        assert_eq!(e.key(), "old.accounts");
        let e = invalid(&with_old(
            "auth = \"accounts\"\naccounts = \"/nonexistent\"\n",
        ));
        assert!(
            matches!(
                e,
                ValidationError::File {
                    key: "old.accounts",
                    ..
                }
            ),
            "{e}"
        );
        let c = parse_str(&with_old(&format!(
            "auth = \"accounts\"\naccounts = \"{accounts}\"\n"
        )))
        .unwrap();
        assert_eq!(c.old.unwrap().auth, OldAuth::Accounts);
        let e = invalid(&with_old(&format!("accounts = \"{accounts}\"\n")));
        assert_eq!(e.key(), "old.accounts");

        let err = parse_str(&with_old("auth = \"root\"\n")).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn mapping_regexes() {
        let ok = format!(
            "{MINIMAL}[mapping]\nregextrans2 = ['s,\\[Gmail\\].,,', 's,^${{h1_prefix}},$h2_prefix,']\n\
             exclude = ['(?i)spam']\ninclude = ['^INBOX']\nfolder = ['INBOX']\nsep1 = '.'\n"
        );
        let c = parse_str(&ok).unwrap();
        assert_eq!(c.mapping.regextrans2.len(), 2);
        assert_eq!(c.mapping.sep1, Some('.'));
        let sel = c.mapping.selection().unwrap();
        assert_eq!(sel.exclude.len(), 1);
        assert_eq!(c.mapping.mapper_options().regextrans2.len(), 2);

        let e = invalid(&format!(
            "{MINIMAL}[mapping]\nregextrans2 = ['s,(unclosed,x,']\n"
        ));
        assert_eq!(e.key(), "mapping.regextrans2");
        assert!(e.to_string().contains("(unclosed"), "{e}");
        let e = invalid(&format!("{MINIMAL}[mapping]\nexclude = ['(unclosed']\n"));
        assert_eq!(e.key(), "mapping.exclude");
        let e = invalid(&format!("{MINIMAL}[mapping]\ninclude = ['[z-a]']\n"));
        assert_eq!(e.key(), "mapping.include");
        let err = parse_str(&format!("{MINIMAL}[mapping]\nsep1 = 'ab'\n")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    }

    #[test]
    fn live_pickup_modes() {
        let c = parse_str(MINIMAL).unwrap().migration;
        assert_eq!(c.live_pickup, LivePickup::Idle);
        assert_eq!(
            (
                c.live_pickup_secs,
                c.live_pickup_max_secs,
                c.idle_connections_secs
            ),
            (2, 60, 30)
        );
        let c = parse_str(&format!(
            "{MINIMAL}[migration]\nlive_pickup = \"poll\"\nlive_pickup_max_secs = 2\n\
             [migration.live_pickup_for]\n\"ann@example.org\" = \"off\"\nbob = \"idle\"\n"
        ))
        .unwrap()
        .migration;
        assert_eq!(c.live_pickup, LivePickup::Poll);
        assert_eq!(c.live_pickup_for["ann@example.org"], LivePickup::Off);
        assert_eq!(c.live_pickup_for["bob"], LivePickup::Idle);
        let err =
            parse_str(&format!("{MINIMAL}[migration]\nlive_pickup = \"push\"\n")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        for (text, key) in [
            ("live_pickup_max_secs = 1", "migration.live_pickup_max_secs"),
            (
                "idle_connections_secs = 0",
                "migration.idle_connections_secs",
            ),
        ] {
            let e = invalid(&format!("{MINIMAL}[migration]\n{text}\n"));
            assert_eq!(e.key(), key, "{text}");
        }
        // Off as before: the ceiling no longer matters.
        let text =
            format!("{MINIMAL}[migration]\nlive_pickup_secs = 0\nlive_pickup_max_secs = 0\n");
        assert!(parse_str(&text).is_ok());
        let (a, b) = (
            Migration::default(),
            Migration {
                idle_connections_secs: 5,
                ..Migration::default()
            },
        );
        assert!(a.same_but_reloadable(&b) && a != b);
    }

    #[test]
    fn ranges() {
        for share in ["-0.1", "1.5", "nan"] {
            let e = invalid(&format!(
                "{MINIMAL}[migration]\nmax_delete_share = {share}\n"
            ));
            assert_eq!(e.key(), "migration.max_delete_share", "{share}");
        }
        for share in ["0.0", "1.0", "0.25"] {
            let text = format!("{MINIMAL}[migration]\nmax_delete_share = {share}\n");
            assert!(parse_str(&text).is_ok(), "{share}");
        }
        let e = invalid(&format!("{MINIMAL}[limits]\nmax_line_length = 10\n"));
        assert_eq!(e.key(), "limits.max_line_length");
        let e = invalid(&format!("{MINIMAL}[limits]\nmax_connections = 0\n"));
        assert_eq!(e.key(), "limits.max_connections");
        let e = invalid(&format!("{MINIMAL}[limits]\nlogin_timeout_secs = 0\n"));
        assert_eq!(e.key(), "limits.login_timeout_secs");
        let err = parse_str(&format!("{MINIMAL}[limits]\nmax_connections = -1\n")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    }

    #[test]
    fn admin_token_never_printed() {
        let text = format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1:9143\"\ntoken = \"tok-XYZ\"\n");
        let c = parse_str(&text).unwrap();
        let admin = c.admin.as_ref().unwrap();
        assert_eq!(admin.token.as_ref().unwrap().expose(), "tok-XYZ");
        let debug = format!("{c:?} {c:#?}");
        assert!(
            !debug.contains("tok-XYZ") && debug.contains("MASKED"),
            "{debug}"
        );
    }

    /// The admin endpoint is locked unless said otherwise (issue 12, item 4).
    #[test]
    fn admin_token_rules() {
        let admin = |keys: &str| format!("{MINIMAL}[admin]\n{keys}");
        // (keys of [admin], the key an error names, or None when valid)
        let cases: [(&str, Option<&str>); 16] = [
            ("listen = \"127.0.0.1:9143\"\ntoken = \"t0k\"\n", None),
            ("listen = \"0.0.0.0:9143\"\ntoken = \"t0k\"\n", None),
            ("listen = \"127.0.0.1:9143\"\n", Some("admin.token")),
            ("listen = \"0.0.0.0:9143\"\n", Some("admin.token")),
            (
                "listen = \"127.0.0.1:9143\"\ntoken = \"\"\n",
                Some("admin.token"),
            ),
            (
                "listen = \"127.0.0.1:9143\"\ntoken = \"a b\"\n",
                Some("admin.token"),
            ),
            (
                "listen = \"127.0.0.1:9143\"\nallow_without_token = true\n",
                None,
            ),
            (
                "listen = \"127.9.9.9:9143\"\nallow_without_token = true\n",
                None,
            ),
            (
                "listen = \"[::1]:9143\"\nallow_without_token = true\n",
                None,
            ),
            (
                "listen = \"[::ffff:127.0.0.1]:9143\"\nallow_without_token = true\n",
                None,
            ),
            (
                "listen = \"0.0.0.0:9143\"\nallow_without_token = true\n",
                Some("admin.allow_without_token"),
            ),
            (
                "listen = \"[::]:9143\"\nallow_without_token = true\n",
                Some("admin.allow_without_token"),
            ),
            (
                "listen = \"127.0.0.1:9143\"\ntoken = \"t\"\nallow_without_token = true\n",
                Some("admin.allow_without_token"),
            ),
            (
                "listen = \"0.0.0.0:9143\"\ntoken = \"t\"\nhost = \"admin.example:8443\"\n",
                None,
            ),
            (
                "listen = \"0.0.0.0:9143\"\ntoken = \"t\"\nhost = \"http://admin\"\n",
                Some("admin.host"),
            ),
            (
                "listen = \"0.0.0.0:9143\"\ntoken = \"t\"\nheader_timeout_secs = 0\n",
                Some("admin.header_timeout_secs"),
            ),
        ];
        for (keys, error) in cases {
            match error {
                None => {
                    parse_str(&admin(keys)).unwrap_or_else(|e| panic!("{keys}: {e}"));
                }
                Some(key) => assert_eq!(invalid(&admin(keys)).key(), key, "{keys}"),
            }
        }
        let e = invalid(&admin("listen = \"0.0.0.0:9143\"\n")).to_string();
        assert!(
            e.contains("required") && e.contains("allow_without_token"),
            "{e}"
        );
        let e = invalid(&admin("listen = \"127.0.0.1:9143\"\ntoken = \"\"\n")).to_string();
        assert!(e.contains("non-empty"), "{e}");
        let c = parse_str(&admin("listen = \"127.0.0.1:9143\"\ntoken = \"t\"\n")).unwrap();
        let a = c.admin.unwrap();
        assert_eq!(
            (a.header_timeout_secs, a.host, a.allow_without_token),
            (10, None, false)
        );
    }

    #[test]
    fn load_names_the_file() {
        let err = load(Path::new("/nonexistent/imapferry.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string().contains("/nonexistent/imapferry.toml"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[listen]\nimap = \n").unwrap();
        let err = load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:2:", path.display())), "{msg}");

        std::fs::write(&path, MINIMAL.replace("imap =", "imaps =")).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains("listen.imaps"),
            "{msg}"
        );
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }
}
