//! The admin endpoint on `[admin] listen`: a minimal HTTP/1.1 server (one request per connection,
//! bounded request size, timeouts, a bounded number of connections). `GET /metrics` (Prometheus
//! text from [`Metrics`], plus accounts by state from the store and the sweeper's counters),
//! `GET /health`, and a JSON API over the state store and the sweeper: `/overview`, `/accounts`,
//! `/accounts/{user}`, `POST /accounts/{user}/prioritise|retire`, `/sweep`,
//! `POST /sweep/pause|resume`. With `[admin] token` every route but `/health` needs
//! `Authorization: Bearer TOKEN`. Routes live in [`Admin::route`].
//!
//! The decisions `imapferry status` and `imapferry retire` share with the API live here too (the
//! CLI sits above the proxy): [`find_user`], [`retire_decision`] and [`Overview`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::instrument::WithSubscriber;
use tracing::{debug, info, warn};

use super::metrics::{self, Metrics};
use super::session;
use crate::config::Config;
use crate::secret::Secret;
use crate::store::{AccountState, AccountSummary, SqliteStore, Store, StoreError};
use crate::sweep::Control;

/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A connection gets this long to send its request and read the response (store reads included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;

const JSON: &str = "application/json";

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string (still percent-encoded).
    pub path: String,
    /// The query string without `?` (empty without one).
    pub query: String,
    /// The bearer token of an `Authorization: Bearer …` header.
    pub bearer: Option<Secret>,
}

/// A response; always sent with `Content-Length` and `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines (name, value).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// An `application/json` response (one line); 500 if `value` cannot be serialised.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_string(value) {
            Ok(mut body) => {
                body.push('\n');
                Response {
                    status,
                    content_type: JSON,
                    headers: Vec::new(),
                    body,
                }
            }
            Err(e) => Response::error(500, &format!("cannot serialise the response: {e}")),
        }
    }

    /// `{"error": message}` as JSON.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: body + "\n",
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Unknown",
        }
    }

    /// The bytes on the wire; `head_only` for HEAD requests.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request head larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("connection closed before a complete request")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Parses a request head (request line and header lines, CRLF or LF line ends).
pub fn parse_request(head: &[u8]) -> Result<Request, RequestError> {
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text.lines();
    let request_line = lines.next().ok_or(RequestError::Malformed("empty"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("method"));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(RequestError::Malformed("version"));
    }
    if !target.starts_with('/') {
        return Err(RequestError::Malformed("target"));
    }
    let target = target.split('#').next().unwrap_or(target);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut bearer = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(RequestError::Malformed("header line"))?;
        if name.trim().eq_ignore_ascii_case("authorization") {
            let value = value.trim();
            if let Some((scheme, token)) = value.split_once(' ')
                && scheme.eq_ignore_ascii_case("bearer")
            {
                bearer = Some(Secret::new(token.trim()));
            }
        }
    }
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        bearer,
    })
}

/// Decodes `%XX` escapes (a path segment: `+` stays `+`); `None` for a bad escape or bytes that
/// are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// True when the query string sets `name` to `1`, `true` or `yes` (or names it without a value).
fn query_flag(query: &str, name: &str) -> bool {
    query.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "1"));
        k == name && matches!(v, "1" | "true" | "yes")
    })
}

/// Compares without an early exit, so timing does not tell how much of a token was right.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// The accounts USER names: by NEW user; if none, by OLD user; if none, by OLD `user@host`.
/// Shared by `imapferry status`/`retire` and the admin API.
pub fn find_user<'a>(accounts: &'a [AccountSummary], user: &str) -> Vec<&'a AccountSummary> {
    let by = |f: &dyn Fn(&AccountSummary) -> bool| -> Vec<&'a AccountSummary> {
        accounts.iter().filter(|a| f(a)).collect()
    };
    let found = by(&|a| a.key.new_user == user);
    if !found.is_empty() {
        return found;
    }
    // Account names are normalised logins (lower case by default): `USER1` finds `user1`.
    let lower = user.to_lowercase();
    let found = by(&|a| a.key.new_user.to_lowercase() == lower);
    if !found.is_empty() {
        return found;
    }
    let found = by(&|a| a.key.old_user == user);
    if !found.is_empty() {
        return found;
    }
    by(&|a| old_login(a) == user)
}

/// OLD `user@host`, as `imapferry status` shows it.
pub fn old_login(a: &AccountSummary) -> String {
    format!("{}@{}", a.key.old_user, a.key.old_host)
}

fn plural<'s>(n: u64, one: &'s str, many: &'s str) -> &'s str {
    if n == 1 { one } else { many }
}

/// What retiring an account would do (DESIGN.md §1): the rule of `imapferry retire` and of
/// `POST /accounts/{user}/retire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireDecision {
    /// Nothing to do.
    AlreadyRetired,
    /// Retire it. `reason` (recorded with the state) is set when `force` overrode `problems`.
    Retire {
        reason: Option<String>,
        problems: Vec<String>,
    },
    /// Not without force: why.
    Refused { problems: Vec<String> },
}

/// Retiring needs the account `synced` with an empty journal; `force` retires anyway and the
/// returned reason says from what.
pub fn retire_decision(account: &AccountSummary, force: bool) -> RetireDecision {
    if account.state == AccountState::Retired {
        return RetireDecision::AlreadyRetired;
    }
    let mut problems = Vec::new();
    if account.state != AccountState::Synced {
        problems.push(format!(
            "it is {} (folders synced {}/{}), not synced",
            account.state.as_str(),
            account.folders_synced,
            account.folders
        ));
    }
    if account.pending_journal > 0 {
        problems.push(format!(
            "{} journal {} not mirrored to OLD yet",
            account.pending_journal,
            plural(account.pending_journal, "entry is", "entries are")
        ));
    }
    if account.message_errors > 0 {
        problems.push(format!(
            "{} {} not copied (imapferry status {} lists {})",
            account.message_errors,
            plural(account.message_errors, "message was", "messages were"),
            account.key.new_user,
            plural(account.message_errors, "it", "them")
        ));
    }
    if problems.is_empty() {
        return RetireDecision::Retire {
            reason: None,
            problems,
        };
    }
    if !force {
        return RetireDecision::Refused { problems };
    }
    let mut reason = format!(
        "retired with --force from {} with {} pending journal {}",
        account.state.as_str(),
        account.pending_journal,
        plural(account.pending_journal, "entry", "entries"),
    );
    if account.message_errors > 0 {
        reason += &format!(
            " and {} {} not copied",
            account.message_errors,
            plural(account.message_errors, "message", "messages")
        );
    }
    RetireDecision::Retire {
        reason: Some(reason),
        problems,
    }
}

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
    pub folders: Vec<crate::store::FolderSummary>,
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

/// The state store the admin API reads, for a proxy configuration with `[admin]`: with `[old]`
/// the proxy's state file (created as the migration creates it); without, only an existing one
/// (the admin never creates a state file). `None` without `[admin]`, or when there is no state
/// file or it cannot be opened (logged): the API then answers 503.
pub async fn open_store(config: &Config) -> Option<Arc<dyn Store>> {
    config.admin.as_ref()?;
    let path = &config.state.path;
    let opened = if config.old.is_some() {
        SqliteStore::open(path).await
    } else {
        SqliteStore::open_existing(path).await
    };
    match opened {
        Ok(store) => Some(Arc::new(store)),
        Err(StoreError::Missing(_)) => {
            info!(
                "admin: no state file at {}: the account API is off",
                path.display()
            );
            None
        }
        Err(e) => {
            warn!("admin: the account API is off: {e}");
            None
        }
    }
}

/// What the admin endpoint serves.
pub struct Admin {
    metrics: Arc<Metrics>,
    token: Option<Secret>,
    store: Option<Arc<dyn Store>>,
    sweep: Option<Arc<Control>>,
}

/// The methods a route allows, for 405's `Allow`.
const GET: &str = "GET, HEAD";
const POST: &str = "POST";

impl Admin {
    /// `store`: where accounts are read (and retired); `sweep`: the running sweeper's switches.
    /// Routes that need a missing one answer 503.
    pub fn new(
        metrics: Arc<Metrics>,
        token: Option<Secret>,
        store: Option<Arc<dyn Store>>,
        sweep: Option<Arc<Control>>,
    ) -> Admin {
        Admin {
            metrics,
            token,
            store,
            sweep,
        }
    }

    /// Answers a request: the token check, then [`Admin::route`].
    pub async fn handle(&self, request: &Request) -> Response {
        // Load balancers' health checks rarely send credentials; "ok" tells nothing.
        let public = request.path == "/health";
        if let Some(token) = &self.token
            && !public
        {
            let presented = request.bearer.as_ref().map_or("", Secret::expose);
            if !same_secret(presented, token.expose()) {
                let mut r = Response::text(401, "unauthorized\n");
                r.headers
                    .push(("WWW-Authenticate", "Bearer realm=\"imapferry\"".into()));
                return r;
            }
        }
        self.route(&request.method, &request.path, &request.query)
            .await
    }

    /// The routes, for an authorised request. HEAD is answered like GET (the body is dropped on
    /// the wire).
    pub async fn route(&self, method: &str, path: &str, query: &str) -> Response {
        let allowed = match method {
            "GET" | "HEAD" => GET,
            "POST" => POST,
            _ => "",
        };
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let route_allows = match segments.as_slice() {
            ["health" | "metrics" | "overview" | "accounts" | "sweep"] | ["accounts", _] => GET,
            ["accounts", _, "prioritise" | "prioritize" | "retire"]
            | ["sweep", "pause" | "resume"] => POST,
            _ => return Response::error(404, "not found"),
        };
        if allowed != route_allows {
            let mut r = Response::error(405, "method not allowed");
            r.headers.push(("Allow", route_allows.into()));
            return r;
        }
        match segments.as_slice() {
            ["health"] => Response::text(200, "ok\n"),
            ["metrics"] => self.metrics_text().await,
            ["overview"] => match self.accounts().await {
                Ok((_, accounts)) => Response::json(200, &Overview::of(&accounts)),
                Err(r) => r,
            },
            ["accounts"] => match self.accounts().await {
                Ok((_, accounts)) => Response::json(200, &accounts),
                Err(r) => r,
            },
            ["accounts", user] => self.account(user).await,
            ["accounts", user, "retire"] => self.retire(user, query_flag(query, "force")).await,
            ["accounts", user, _] => self.prioritise(user).await,
            ["sweep"] => match &self.sweep {
                Some(c) => Response::json(200, &c.stats()),
                None => no_sweeper(),
            },
            ["sweep", action] => match &self.sweep {
                Some(c) => {
                    if *action == "pause" {
                        c.pause();
                    } else {
                        c.resume();
                    }
                    Response::json(200, &c.stats())
                }
                None => no_sweeper(),
            },
            _ => Response::error(404, "not found"),
        }
    }

    async fn metrics_text(&self) -> Response {
        let mut text = self.metrics.render();
        if let Some(store) = &self.store {
            match store.account_summaries().await {
                Ok(accounts) => {
                    let counts = StateCounts::of(&accounts)
                        .all()
                        .map(|(s, n)| (s.as_str(), n));
                    let sum = |f: fn(&AccountSummary) -> u64| accounts.iter().map(f).sum();
                    text.push_str(&metrics::render_accounts(
                        &counts,
                        sum(|a| a.message_errors),
                        (sum(|a| a.pending_journal), sum(|a| a.parked_journal)),
                    ));
                }
                Err(e) => warn!("admin: /metrics without account counts: {e}"),
            }
        }
        if let Some(sweep) = &self.sweep {
            text.push_str(&metrics::render_sweep(&sweep.stats()));
        }
        let mut r = Response::text(200, text);
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r
    }

    /// The store and every account summary, or the error response.
    async fn accounts(&self) -> Result<(&Arc<dyn Store>, Vec<AccountSummary>), Response> {
        let Some(store) = &self.store else {
            return Err(Response::error(
                503,
                "no state store (the proxy has no [old] section and no state file exists)",
            ));
        };
        match store.account_summaries().await {
            Ok(accounts) => Ok((store, accounts)),
            Err(e) => Err(store_error(&e)),
        }
    }

    /// The one account `raw` (a percent-encoded path segment) names, or the error response.
    async fn lookup(&self, raw: &str) -> Result<(&Arc<dyn Store>, AccountSummary), Response> {
        let Some(user) = percent_decode(raw) else {
            return Err(Response::error(
                400,
                "bad percent-encoding in the user name",
            ));
        };
        let (store, accounts) = self.accounts().await?;
        match find_user(&accounts, &user)[..] {
            [] => Err(Response::error(404, &format!("no account '{user}'"))),
            [one] => Ok((store, one.clone())),
            ref many => {
                let matches: Vec<String> = many.iter().map(|a| old_login(a)).collect();
                Err(Response::json(
                    409,
                    &serde_json::json!({
                        "error": format!(
                            "'{user}' matches {} accounts; name one as OLD user@host",
                            many.len()
                        ),
                        "matches": matches,
                    }),
                ))
            }
        }
    }

    async fn account(&self, raw: &str) -> Response {
        let (store, account) = match self.lookup(raw).await {
            Ok(found) => found,
            Err(r) => return r,
        };
        match AccountDetail::load(&**store, account).await {
            Ok(detail) => Response::json(200, &detail),
            Err(e) => store_error(&e),
        }
    }

    async fn prioritise(&self, raw: &str) -> Response {
        let Some(sweep) = &self.sweep else {
            return no_sweeper();
        };
        let (_, account) = match self.lookup(raw).await {
            Ok(found) => found,
            Err(r) => return r,
        };
        sweep.prioritise(account.id);
        Response::json(
            202,
            &serde_json::json!({ "prioritised": true, "account": account }),
        )
    }

    async fn retire(&self, raw: &str, force: bool) -> Response {
        let (store, account) = match self.lookup(raw).await {
            Ok(found) => found,
            Err(r) => return r,
        };
        let who = format!("{} (OLD {})", account.key.new_user, old_login(&account));
        match retire_decision(&account, force) {
            RetireDecision::AlreadyRetired => Response::json(
                200,
                &serde_json::json!({
                    "retired": true, "changed": false, "forced": false,
                    "message": format!("{who} is already retired; nothing changed"),
                    "account": account,
                }),
            ),
            RetireDecision::Refused { problems } => Response::json(
                409,
                &serde_json::json!({
                    "error": format!(
                        "not retiring {who}: {}; finish the migration first, or use ?force=1",
                        problems.join(", and ")
                    ),
                    "problems": problems,
                }),
            ),
            RetireDecision::Retire { reason, problems } => {
                match store.retire(account.id, reason.as_deref()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Response::json(
                            409,
                            &serde_json::json!({
                                "error": format!("not retiring {who}: it changed meanwhile"),
                                "problems": ["a new journal entry or backfill since it was looked at"],
                            }),
                        );
                    }
                    Err(e) => return store_error(&e),
                }
                info!(user = %account.key.new_user, forced = reason.is_some(), "admin: account retired");
                let mut account = account;
                account.state = AccountState::Retired;
                if let Some(r) = &reason {
                    account.reason = Some(r.clone());
                }
                Response::json(
                    200,
                    &serde_json::json!({
                        "retired": true, "changed": true, "forced": reason.is_some(),
                        "reason": reason, "problems": problems, "account": account,
                    }),
                )
            }
        }
    }
}

fn no_sweeper() -> Response {
    Response::error(503, "sweeper not running")
}

fn store_error(e: &StoreError) -> Response {
    warn!("admin: {e}");
    Response::error(500, &e.to_string())
}

/// End of the request head in `buf` (after the empty line), if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() >= MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(RequestError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(mut tcp: TcpStream, admin: &Admin) -> io::Result<()> {
    let (response, head_only) = match read_head(&mut tcp).await {
        Ok(head) => match parse_request(&head) {
            Ok(request) => (admin.handle(&request).await, request.method == "HEAD"),
            Err(e) => (Response::text(400, format!("{e}\n")), false),
        },
        Err(RequestError::TooLarge) => (Response::text(431, "request too large\n"), false),
        Err(RequestError::Closed) => return Ok(()),
        Err(RequestError::Io(e)) => return Err(e),
        Err(e) => (Response::text(400, format!("{e}\n")), false),
    };
    tcp.write_all(&response.to_bytes(head_only)).await?;
    tcp.shutdown().await
}

/// Serves admin requests on `listener` until `stop` turns true (or the future is dropped).
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = session::stopped(&mut stop) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    debug!(%peer, "admin: too many connections");
                    continue;
                };
                let admin = Arc::clone(&admin);
                let task = async move {
                    let _permit = permit;
                    match tokio::time::timeout(REQUEST_TIMEOUT, connection(tcp, &admin)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(%peer, "admin connection: {e}"),
                        Err(_) => debug!(%peer, "admin connection timed out"),
                    }
                };
                tokio::spawn(task.with_current_subscriber());
            }
            Err(e) => {
                warn!("admin accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AccountKey;

    fn req(head: &str) -> Request {
        parse_request(head.as_bytes()).unwrap()
    }

    #[test]
    fn parses_requests() {
        let r =
            req("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nauthorization:  bearer s3cret \r\n\r\n");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.bearer.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{r:?}").contains("s3cret"));
        let r = req("HEAD /health HTTP/1.0\n\n");
        assert_eq!((r.method.as_str(), r.bearer), ("HEAD", None));
        assert_eq!(r.query, "");
        let r = req("POST /accounts/a%40b/retire?force=1#frag HTTP/1.1\r\n\r\n");
        assert_eq!(
            (r.path.as_str(), r.query.as_str()),
            ("/accounts/a%40b/retire", "force=1")
        );
        for bad in [
            "",
            "GET\r\n\r\n",
            "GET /x\r\n\r\n",
            "get /x HTTP/1.1\r\n\r\n",
            "GET x HTTP/1.1\r\n\r\n",
            "GET /x SPDY/3\r\n\r\n",
            "GET /x HTTP/1.1 extra\r\n\r\n",
            "GET /x HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_request(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn percent_decoding_and_flags() {
        // (input, decoded)
        let cases: [(&str, Option<&str>); 7] = [
            ("alice", Some("alice")),
            ("joe%40old.example", Some("joe@old.example")),
            ("a%2Fb+c", Some("a/b+c")),
            ("J%C3%BCrgen", Some("Jürgen")),
            ("bad%4", None),
            ("bad%zz", None),
            ("%FF", None),
        ];
        for (input, decoded) in cases {
            assert_eq!(percent_decode(input).as_deref(), decoded, "{input}");
        }
        assert!(query_flag("force=1", "force"));
        assert!(query_flag("x=2&force=true", "force"));
        assert!(query_flag("force", "force"));
        assert!(!query_flag("force=0", "force"));
        assert!(!query_flag("", "force"));
        assert!(!query_flag("forced=1", "force"));
    }

    async fn status(admin: &Admin, head: &str) -> u16 {
        admin.handle(&req(head)).await.status
    }

    #[tokio::test]
    async fn routes_and_tokens() {
        let metrics = Arc::new(Metrics::new());
        metrics.login_failure();
        let open = Admin::new(Arc::clone(&metrics), None, None, None);
        let r = open.handle(&req("GET /metrics HTTP/1.1\r\n\r\n")).await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("imapferry_login_failures_total 1\n"));
        assert!(!r.body.contains("imapferry_accounts"), "no store, no gauge");
        assert!(
            !r.body.contains("imapferry_sweep"),
            "no sweeper, no counters"
        );
        assert_eq!(open.route("GET", "/health", "").await.body, "ok\n");
        assert_eq!(open.route("GET", "/nope", "").await.status, 404);
        assert_eq!(open.route("POST", "/metrics", "").await.status, 405);
        let r = open.route("GET", "/sweep/pause", "").await;
        assert_eq!((r.status, r.headers[0].1.as_str()), (405, "POST"));
        // Without a store or a sweeper: 503, as JSON.
        for (method, path) in [
            ("GET", "/accounts"),
            ("GET", "/accounts/alice"),
            ("GET", "/overview"),
            ("POST", "/accounts/alice/retire"),
            ("GET", "/sweep"),
            ("POST", "/sweep/pause"),
            ("POST", "/sweep/resume"),
            ("POST", "/accounts/alice/prioritise"),
        ] {
            let r = open.route(method, path, "").await;
            assert_eq!((r.status, r.content_type), (503, JSON), "{method} {path}");
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert!(v["error"].is_string(), "{}", r.body);
        }
        assert!(
            open.route("GET", "/sweep", "")
                .await
                .body
                .contains("sweeper not running")
        );
        let locked = Admin::new(metrics, Some(Secret::new("t0ken")), None, None);
        assert_eq!(status(&locked, "GET /metrics HTTP/1.1\r\n\r\n").await, 401);
        assert_eq!(
            status(
                &locked,
                "GET /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n"
            )
            .await,
            401
        );
        assert_eq!(
            status(
                &locked,
                "GET /metrics HTTP/1.1\r\nAuthorization: Bearer t0ken\r\n\r\n"
            )
            .await,
            200
        );
        assert_eq!(
            status(
                &locked,
                "GET /metrics HTTP/1.1\r\nAuthorization: Basic t0ken\r\n\r\n"
            )
            .await,
            401
        );
        assert_eq!(status(&locked, "GET /nope HTTP/1.1\r\n\r\n").await, 401);
        assert_eq!(status(&locked, "GET /accounts HTTP/1.1\r\n\r\n").await, 401);
        assert_eq!(
            status(&locked, "POST /sweep/pause HTTP/1.1\r\n\r\n").await,
            401
        );
        assert_eq!(status(&locked, "GET /health HTTP/1.1\r\n\r\n").await, 200);
        let wire = locked
            .handle(&req("GET /metrics HTTP/1.1\r\n\r\n"))
            .await
            .to_bytes(false);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{wire}");
        assert!(wire.contains("WWW-Authenticate: Bearer"), "{wire}");
        assert!(!wire.contains("t0ken"));
    }

    fn key(new_user: &str, old_user: &str, old_host: &str) -> AccountKey {
        AccountKey {
            old_host: old_host.into(),
            old_user: old_user.into(),
            new_host: "new".into(),
            new_user: new_user.into(),
        }
    }

    fn summary(id: i64, new_user: &str, old_user: &str, old_host: &str) -> AccountSummary {
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

    #[test]
    fn user_matching() {
        let accounts = [
            summary(1, "joe", "joseph", "old1"),
            summary(2, "joseph", "jo", "old1"),
            summary(3, "ann", "ann", "old1"),
            summary(4, "ann", "ann", "old2"),
        ];
        // (USER, expected ids)
        let cases: [(&str, &[i64]); 8] = [
            ("joe", &[1]),
            ("JOE", &[1]), // account names are normalised logins
            ("Joseph", &[2]),
            ("joseph", &[2]), // NEW user first
            ("jo", &[2]),     // then OLD user
            ("ann", &[3, 4]),
            ("ann@old2", &[4]), // then OLD user@host
            ("nobody", &[]),
        ];
        for (user, ids) in cases {
            let got: Vec<i64> = find_user(&accounts, user).iter().map(|a| a.id).collect();
            assert_eq!(got, ids, "{user}");
        }
    }

    #[test]
    fn retire_rule() {
        let with = |state, journal, force| {
            let mut a = summary(1, "joe", "joe", "old");
            a.state = state;
            a.folders = 3;
            a.folders_synced = 2;
            a.pending_journal = journal;
            retire_decision(&a, force)
        };
        use AccountState::*;
        assert_eq!(with(Retired, 3, false), RetireDecision::AlreadyRetired);
        assert_eq!(
            with(Synced, 0, false),
            RetireDecision::Retire {
                reason: None,
                problems: vec![]
            }
        );
        assert_eq!(
            with(Synced, 1, false),
            RetireDecision::Refused {
                problems: vec!["1 journal entry is not mirrored to OLD yet".into()]
            }
        );
        assert_eq!(
            with(Partial, 2, false),
            RetireDecision::Refused {
                problems: vec![
                    "it is partial (folders synced 2/3), not synced".into(),
                    "2 journal entries are not mirrored to OLD yet".into()
                ]
            }
        );
        for state in [Pending, Partial, Failed] {
            assert!(matches!(
                with(state, 0, false),
                RetireDecision::Refused { .. }
            ));
        }
        let RetireDecision::Retire {
            reason: Some(reason),
            problems,
        } = with(Failed, 1, true)
        else {
            panic!("force retires");
        };
        assert_eq!(
            reason,
            "retired with --force from failed with 1 pending journal entry"
        );
        assert_eq!(problems.len(), 2);
        // A synced account with a message not copied is not done either.
        let mut a = summary(1, "joe", "joe", "old");
        (a.state, a.message_errors) = (Synced, 2);
        assert_eq!(
            retire_decision(&a, false),
            RetireDecision::Refused {
                problems: vec![
                    "2 messages were not copied (imapferry status joe lists them)".into()
                ]
            }
        );
        let RetireDecision::Retire {
            reason: Some(reason),
            ..
        } = retire_decision(&a, true)
        else {
            panic!("force retires");
        };
        assert!(
            reason.ends_with("0 pending journal entries and 2 messages not copied"),
            "{reason}"
        );
    }

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

    #[tokio::test]
    async fn the_api_over_a_store() {
        let store = SqliteStore::open_memory().await.unwrap();
        let joe = store.account(&key("joe", "joe", "old")).await.unwrap();
        let pair = store.folder_pair(joe, "INBOX", "INBOX").await.unwrap();
        store
            .save_pair_state(
                pair.id,
                Some(crate::store::MailboxState {
                    messages: 2,
                    ..Default::default()
                }),
                None,
                1,
                crate::store::Phase::Partial,
            )
            .await
            .unwrap();
        store
            .set_account_state(joe, AccountState::Partial, None)
            .await
            .unwrap();
        let ann = store.account(&key("ann@x", "ann", "old")).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let control = Arc::new(Control::new());
        let admin = Admin::new(
            Arc::new(Metrics::new()),
            None,
            Some(Arc::clone(&store)),
            Some(Arc::clone(&control)),
        );
        let json = |r: &Response| -> serde_json::Value {
            assert_eq!(r.content_type, JSON);
            serde_json::from_str(&r.body).unwrap()
        };
        let r = admin.route("GET", "/accounts", "").await;
        let v = json(&r);
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["new_user"], "joe");
        assert_eq!(v[1]["state"], "partial");
        assert_eq!(v[1]["messages_old"], 2);

        let r = admin.route("GET", "/accounts/joe", "").await;
        let v = json(&r);
        assert_eq!(r.status, 200);
        assert_eq!(v["account"]["id"], joe);
        assert_eq!(v["folders"][0]["old_name"], "INBOX");
        assert_eq!(v["folders"][0]["phase"], "partial");
        assert_eq!(v["folders"][0]["old"]["messages"], 2);
        let r = admin.route("GET", "/accounts/ann%40x", "").await;
        assert_eq!(
            (r.status, json(&r)["account"]["id"].clone()),
            (200, ann.into())
        );
        assert_eq!(admin.route("GET", "/accounts/nobody", "").await.status, 404);
        assert_eq!(admin.route("GET", "/accounts/a%zz", "").await.status, 400);
        assert_eq!(
            json(&admin.route("GET", "/overview", "").await)["accounts"],
            2
        );

        // Retire: refused while partial, forced with ?force=1, then already retired.
        let r = admin.route("POST", "/accounts/joe/retire", "").await;
        assert_eq!(r.status, 409, "{}", r.body);
        assert!(json(&r)["error"].as_str().unwrap().contains("partial"));
        let r = admin.route("POST", "/accounts/joe/retire", "force=1").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(json(&r)["forced"], true);
        assert_eq!(
            store.account_state(joe).await.unwrap(),
            AccountState::Retired
        );
        let r = admin.route("POST", "/accounts/joe/retire", "").await;
        assert_eq!((r.status, json(&r)["changed"].clone()), (200, false.into()));

        // The sweeper's switches.
        let r = admin
            .route("POST", "/accounts/ann%40x/prioritise", "")
            .await;
        assert_eq!(r.status, 202);
        assert_eq!(control.take_priority(&[]), Some(ann));
        let r = admin.route("POST", "/sweep/pause", "").await;
        assert_eq!(json(&r)["paused"], true);
        assert!(control.is_paused());
        assert_eq!(
            json(&admin.route("GET", "/sweep", "").await)["paused"],
            true
        );
        admin.route("POST", "/sweep/resume", "").await;
        assert!(!control.is_paused());
        control.update(|s| {
            s.messages_copied = 12;
            *s.errors.entry("login".into()).or_default() += 1;
        });

        let m = admin.route("GET", "/metrics", "").await.body;
        for line in [
            "imapferry_accounts{state=\"pending\"} 1",
            "imapferry_accounts{state=\"retired\"} 1",
            "imapferry_accounts{state=\"failed\"} 0",
            "imapferry_sweep_messages_copied_total 12",
            "imapferry_sweep_bytes_copied_total 0",
            "imapferry_sweep_queue_length 0",
            "imapferry_sweep_errors_total{kind=\"login\"} 1",
        ] {
            assert!(m.lines().any(|l| l == line), "{line}\n{m}");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(same_secret("", ""));
        for (a, b) in [("abc", "abd"), ("abc", "ab"), ("ab", "abc"), ("", "a")] {
            assert!(!same_secret(a, b), "{a} {b}");
        }
    }

    #[test]
    fn head_responses_have_no_body() {
        let r = Response::text(200, "ok\n");
        let wire = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(
            wire.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{wire}"
        );
    }
}
