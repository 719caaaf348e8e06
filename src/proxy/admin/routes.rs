//! The admin endpoint's answers, independent of HTTP's wire: `/health`, `/metrics` (the
//! proxy's counters, accounts by state, the sweeper's counters) and the JSON API over the
//! operator's rules (`crate::ops`), the sweeper's switches and `POST /reload`. [`Admin::route`]
//! takes a request that `access` already let through.

use std::sync::Arc;

use percent_encoding::percent_decode_str;
use serde::Serialize;
use tracing::{info, warn};

use super::Admin;
use crate::ops::{
    AccountDetail, Overview, RetireDecision, StateCounts, find_user, old_login, retire_decision,
};
use crate::proxy::metrics;
use crate::proxy::reload::ReloadError;
use crate::store::{AccountState, AccountSummary, Store, StoreError};

pub(super) const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus' text exposition format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An answer, before it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    /// A `text/plain` response.
    pub(super) fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// An `application/json` response (one line); 500 if `value` cannot be serialised.
    fn json(status: u16, value: &impl Serialize) -> Response {
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
    pub(super) fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: body + "\n",
        }
    }
}

/// True when the query string sets `name` to `1`, `true` or `yes` (or names it without a value).
fn query_flag(query: &str, name: &str) -> bool {
    form_urlencoded::parse(query.as_bytes())
        .any(|(k, v)| k == name && matches!(v.as_ref(), "" | "1" | "true" | "yes"))
}

/// The methods a route allows, for 405's `Allow`.
const GET: &str = "GET, HEAD";
const POST: &str = "POST";

impl Admin {
    /// The routes, for a request `access` let through (`path` still percent-encoded, `query`
    /// without `?`). HEAD is answered like GET (the HTTP layer drops the body).
    pub(super) async fn route(&self, method: &str, path: &str, query: &str) -> Response {
        let allowed = match method {
            "GET" | "HEAD" => GET,
            "POST" => POST,
            _ => "",
        };
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let route_allows = match segments.as_slice() {
            ["health" | "metrics" | "overview" | "accounts" | "sweep"] | ["accounts", _] => GET,
            ["accounts", _, "prioritise" | "prioritize" | "retire"]
            | ["sweep", "pause" | "resume"]
            | ["reload"] => POST,
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
            ["reload"] => self.reload().await,
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

    /// `POST /reload`: 200 with what changed; 409 when a change needs a restart; 422 when the
    /// file is broken; 503 when the proxy cannot reload. The body says why.
    async fn reload(&self) -> Response {
        let Some(reloader) = &self.reload else {
            return Response::error(503, "this proxy cannot reload");
        };
        let reloader = Arc::clone(reloader);
        // It reads files: off the runtime's threads.
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(reloaded)) => Response::json(200, &reloaded),
            Ok(Err(e)) => {
                let status = match e {
                    ReloadError::NeedsRestart(_) => 409,
                    ReloadError::Config(_) | ReloadError::Apply(_) => 422,
                    ReloadError::NoFile | ReloadError::Poisoned(_) => 503,
                };
                Response::error(status, &e.to_string())
            }
            Err(e) => Response::error(500, &format!("the reload ended abnormally: {e}")),
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
        if let Some(migrator) = &self.migrator {
            text.push_str(&metrics::render_engine(
                &migrator.held(),
                &migrator.journal_waits(),
            ));
        }
        let mut r = Response::text(200, text);
        r.content_type = PROMETHEUS;
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
        let Ok(user) = percent_decode_str(raw).decode_utf8() else {
            return Err(Response::error(400, "the user name is not UTF-8"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fixtures::key;
    use crate::proxy::admin::tests::admin;
    use crate::proxy::metrics::Metrics;
    use crate::store::SqliteStore;
    use crate::sweep::Control;

    #[test]
    fn query_flags() {
        // (query, force)
        let cases = [
            ("force=1", true),
            ("x=2&force=true", true),
            ("force", true),
            ("force=yes", true),
            ("force=0", false),
            ("", false),
            ("forced=1", false),
            ("f%6Frce=1", true),
        ];
        for (query, force) in cases {
            assert_eq!(query_flag(query, "force"), force, "{query}");
        }
    }

    #[tokio::test]
    async fn routes_without_store_or_sweeper() {
        let metrics = Arc::new(Metrics::new());
        metrics.login_failure();
        let open = admin(Arc::clone(&metrics), None, None);
        let r = open.route("GET", "/metrics", "").await;
        assert_eq!((r.status, r.content_type), (200, PROMETHEUS));
        assert!(r.body.contains("imapferry_login_failures_total 1\n"));
        assert!(!r.body.contains("imapferry_accounts"), "no store, no gauge");
        assert!(
            !r.body.contains("imapferry_sweep"),
            "no sweeper, no counters"
        );
        assert_eq!(open.route("GET", "/health", "").await.body, "ok\n");
        assert_eq!(open.route("HEAD", "/health", "").await.status, 200);
        // (method, path, status, Allow)
        let cases = [
            ("GET", "/nope", 404, None),
            ("GET", "/accounts/a/b/c", 404, None),
            ("POST", "/metrics", 405, Some("GET, HEAD")),
            ("GET", "/sweep/pause", 405, Some("POST")),
            ("OPTIONS", "/accounts", 405, Some("GET, HEAD")),
            ("DELETE", "/accounts/alice/retire", 405, Some("POST")),
        ];
        for (method, path, status, allow) in cases {
            let r = open.route(method, path, "").await;
            assert_eq!(r.status, status, "{method} {path}");
            let got = r
                .headers
                .iter()
                .find(|(n, _)| *n == "Allow")
                .map(|(_, v)| v.as_str());
            assert_eq!(got, allow, "{method} {path}");
        }
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
        store
            .account(&key("Jürgen", "jurgen", "old"))
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let control = Arc::new(Control::new());
        let admin = admin(
            Arc::new(Metrics::new()),
            Some(Arc::clone(&store)),
            Some(Arc::clone(&control)),
        );
        let json = |r: &Response| -> serde_json::Value {
            assert_eq!(r.content_type, JSON);
            serde_json::from_str(&r.body).unwrap()
        };
        let r = admin.route("GET", "/accounts", "").await;
        let v = json(&r);
        assert_eq!(v.as_array().unwrap().len(), 3);
        let joe_json = v
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["new_user"] == "joe")
            .unwrap();
        assert_eq!(joe_json["state"], "partial");
        assert_eq!(joe_json["messages_old"], 2);

        let r = admin.route("GET", "/accounts/joe", "").await;
        let v = json(&r);
        assert_eq!(r.status, 200);
        assert_eq!(v["account"]["id"], joe);
        assert_eq!(v["folders"][0]["old_name"], "INBOX");
        assert_eq!(v["folders"][0]["phase"], "partial");
        assert_eq!(v["folders"][0]["old"]["messages"], 2);
        // User names are percent-decoded (a lone `%` stays as it is).
        // (path, status)
        let cases = [
            ("/accounts/ann%40x", 200),
            ("/accounts/ann@x", 200),
            ("/accounts/J%C3%BCrgen", 200),
            ("/accounts/j%C3%BCrgen", 200),
            ("/accounts/nobody", 404),
            ("/accounts/a%zz", 404),
            ("/accounts/%FF", 400),
        ];
        for (path, status) in cases {
            let r = admin.route("GET", path, "").await;
            assert_eq!(r.status, status, "{path}: {}", r.body);
        }
        let r = admin.route("GET", "/accounts/ann%40x", "").await;
        assert_eq!(json(&r)["account"]["id"], ann);
        assert!(
            json(&admin.route("GET", "/accounts/a%zz", "").await)["error"]
                .as_str()
                .unwrap()
                .contains("'a%zz'")
        );
        assert_eq!(
            json(&admin.route("GET", "/overview", "").await)["accounts"],
            3
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
            "imapferry_accounts{state=\"pending\"} 2",
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
}
