//! The admin API (issue 6, item 5) over a migration proxy in front of real Dovecot servers: a user
//! logs in through the proxy and opens INBOX, then `/accounts`, `/accounts/{user}` and `/overview`
//! report exactly what `imapferry status --json` reads from the same state file; retire answers
//! 409 while the account is partial and retires it once every folder is synced; the sweeper's
//! routes answer 503 without a sweeper and pause, resume and prioritise with one (`[sweep]
//! enabled`); `/metrics` counts accounts by state and shows the sweeper's counters; the token
//! rules hold; without `[old]` the admin creates no state file.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Dovecot, Layout, Proxy, RawImap, migration_config};
use serde_json::Value;

const USER: &str = "alice";
const PW: &str = "alice-admin-pw";
const TOKEN: &str = "tok-admin-71c3";

/// An HTTP request on the admin port: (status, content type, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

/// A JSON request with the token; (status, JSON body). Panics unless the body is JSON.
fn api(port: u16, method: &str, path: &str) -> (u16, Value) {
    let (status, content_type, body) = http(port, method, path, Some(TOKEN));
    assert_eq!(content_type, "application/json", "{method} {path}: {body}");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, v)
}

/// `imapferry status --json --config CONFIG [USER]` as JSON.
fn status_json(dir: &Path, config: &Path, user: Option<&str>) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imapferry"));
    cmd.current_dir(dir)
        .args(["status", "--json", "--config"])
        .arg(config);
    cmd.args(user);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Polls `GET /accounts/alice` until `done` holds and two reads a second apart agree (the proxy
/// touches the account while it works); returns that detail.
fn settled(port: u16, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        let (status, v) = api(port, "GET", "/accounts/alice");
        if status == 200 && done(&v) && v == last {
            return v;
        }
        assert!(Instant::now() < until, "never settled: {v}");
        last = v;
        std::thread::sleep(Duration::from_millis(1000));
    }
}

fn folder<'a>(detail: &'a Value, name: &str) -> &'a Value {
    detail["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["old_name"] == name)
        .unwrap_or_else(|| panic!("no folder {name} in {detail}"))
}

/// The value of the sample line `name` (labels included), if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn admin_api_matches_status_and_retires() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user(USER, PW);
    new.add_user(USER, PW);
    // OLD: INBOX with 5 messages, Work with 2.
    let mut o = RawImap::connect(old.host(), old.port());
    o.login(USER, PW);
    o.create("Work");
    for i in 0..7u64 {
        let folder = if i < 5 { "INBOX" } else { "Work" };
        o.append(folder, &["\\Seen"], None, &common::message(i + 1, 1_500));
    }
    o.logout();

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let sections = format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
        migration_config(&old, &new, &state, 10000)
    );
    let config = dir.path().join("imapferry.toml");
    std::fs::write(
        &config,
        format!("[listen]\nimap = \"127.0.0.1:0\"\n{sections}"),
    )
    .unwrap();
    let proxy = Proxy::start_with(&sections, false);
    let port = proxy.admin_port;
    assert_ne!(port, 0);

    // The token rules: everything but /health needs it, POSTs included.
    assert_eq!(http(port, "GET", "/health", None).0, 200);
    for (method, path) in [
        ("GET", "/accounts"),
        ("GET", "/accounts/alice"),
        ("GET", "/overview"),
        ("GET", "/metrics"),
        ("GET", "/sweep"),
        ("POST", "/sweep/pause"),
        ("POST", "/accounts/alice/retire?force=1"),
    ] {
        assert_eq!(http(port, method, path, None).0, 401, "{method} {path}");
        assert_eq!(
            http(port, method, path, Some("tok-admin-71c")).0,
            401,
            "{method} {path}"
        );
    }

    // Nobody logged in yet: no account; the sweeper is not running.
    assert_eq!(api(port, "GET", "/accounts"), (200, Value::Array(vec![])));
    let (status, v) = api(port, "GET", "/accounts/alice");
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("alice"), "{v}");
    for (method, path) in [
        ("GET", "/sweep"),
        ("POST", "/sweep/pause"),
        ("POST", "/sweep/resume"),
        ("POST", "/accounts/alice/prioritise"),
    ] {
        let (status, v) = api(port, method, path);
        assert_eq!(status, 503, "{method} {path}: {v}");
        assert_eq!(v["error"], "sweeper not running");
    }
    assert_eq!(api(port, "GET", "/accounts").0, 200);
    assert_eq!(api(port, "POST", "/accounts").0, 405);

    // alice logs in through the proxy and opens INBOX (backfilled within the SELECT budget).
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, PW);
    assert_eq!(c.select("INBOX"), 5);
    c.logout();
    let detail = settled(port, |v| {
        v["account"]["state"] == "partial" && folder(v, "INBOX")["linked"] == 5
    });
    let account = &detail["account"];
    assert_eq!(account["new_user"], USER);
    assert_eq!(account["old_user"], USER);
    assert_eq!(account["old_host"], "127.0.0.1");
    // Folder pairs are recorded as folders are first backfilled: Work is mapped, not yet opened.
    assert_eq!(account["folders"], 1, "{detail}");
    assert_eq!(account["folders_synced"], 1, "{detail}");
    assert_eq!(account["linked"], 5, "{detail}");
    assert_eq!(account["pending_journal"], 0, "{detail}");
    assert!(account["last_activity"].is_i64(), "{detail}");
    assert_eq!(folder(&detail, "INBOX")["phase"], "synced");
    assert_eq!(folder(&detail, "INBOX")["old"]["messages"], 5);

    // The API and `imapferry status --json` agree on the same state file.
    let (_, accounts) = api(port, "GET", "/accounts");
    let (_, overview) = api(port, "GET", "/overview");
    let status = status_json(dir.path(), &config, None);
    assert_eq!(status["accounts"], accounts);
    assert_eq!(status["overview"], overview);
    assert_eq!(accounts[0], detail["account"]);
    assert_eq!(status_json(dir.path(), &config, Some(USER)), detail);
    assert_eq!(overview["by_state"]["partial"], 1);
    assert_eq!(overview["linked"], 5);
    assert_eq!(overview["failed"], Value::Array(vec![]));
    // Percent-encoded OLD user@host names the same account.
    assert_eq!(
        api(port, "GET", "/accounts/alice%40127.0.0.1"),
        (200, detail.clone())
    );

    // /metrics: accounts by state from the store.
    let (code, _, metrics) = http(port, "GET", "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    for (state, n) in [
        ("pending", 0.0),
        ("partial", 1.0),
        ("synced", 0.0),
        ("retired", 0.0),
        ("failed", 0.0),
    ] {
        let name = format!("imapferry_accounts{{state=\"{state}\"}}");
        assert_eq!(sample(&metrics, &name), Some(n), "{name}\n{metrics}");
    }
    assert!(
        !metrics.contains("imapferry_sweep_"),
        "no sweeper:\n{metrics}"
    );
    assert!(!metrics.contains(PW) && !metrics.contains(TOKEN));

    // Retire refuses a partial account, as `imapferry retire` does.
    let (status, v) = api(port, "POST", "/accounts/alice/retire");
    assert_eq!(status, 409, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("it is partial") && error.contains("?force=1"),
        "{v}"
    );
    assert_eq!(
        api(port, "GET", "/accounts/alice").1["account"]["state"],
        "partial"
    );

    // Opening every other folder (Work and the server's special-use folders) completes the
    // account; then retire succeeds.
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, PW);
    let (lines, tagged) = c.raw("LIST \"\" \"*\"");
    assert!(tagged.starts_with("OK"), "{tagged}");
    let names: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("* LIST "))
        .map(|l| l.rsplit(' ').next().unwrap().trim_matches('"').to_string())
        .collect();
    assert!(names.iter().any(|n| n == "Work"), "{names:?}");
    for name in names.iter().filter(|n| *n != "INBOX") {
        let n = c.select(name);
        assert_eq!(n, if name == "Work" { 2 } else { 0 }, "{name}");
    }
    c.logout();
    let detail = settled(port, |v| v["account"]["state"] == "synced");
    assert_eq!(detail["account"]["linked"], 7, "{detail}");
    assert_eq!(detail["account"]["folders"], names.len(), "{detail}");
    assert_eq!(folder(&detail, "Work")["linked"], 2, "{detail}");
    assert_eq!(
        status_json(dir.path(), &config, None)["overview"],
        api(port, "GET", "/overview").1
    );
    let (status, v) = api(port, "POST", "/accounts/alice/retire");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["changed"].clone(), v["forced"].clone()),
        (true.into(), false.into())
    );
    let (status, v) = api(port, "POST", "/accounts/alice/retire");
    assert_eq!((status, v["changed"].clone()), (200, false.into()));
    let status = status_json(dir.path(), &config, Some(USER));
    assert_eq!(status["account"]["state"], "retired");
    assert_eq!(status, api(port, "GET", "/accounts/alice").1);
    let (_, _, metrics) = http(port, "GET", "/metrics", Some(TOKEN));
    assert_eq!(
        sample(&metrics, "imapferry_accounts{state=\"retired\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "imapferry_accounts{state=\"partial\"}"),
        Some(0.0)
    );
}

#[test]
fn without_old_the_admin_creates_no_state_file() {
    let new = Dovecot::start(Layout::Slash);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("none.db");
    let proxy = Proxy::start(
        new.port(),
        &format!(
            "[state]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            state.display()
        ),
    );
    let (status, content_type, body) = http(proxy.admin_port, "GET", "/accounts", None);
    assert_eq!(
        (status, content_type.as_str()),
        (503, "application/json"),
        "{body}"
    );
    assert!(body.contains("no state store"), "{body}");
    assert_eq!(http(proxy.admin_port, "GET", "/sweep", None).0, 503);
    let (status, _, metrics) = http(proxy.admin_port, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(!metrics.contains("imapferry_accounts"), "{metrics}");
    assert!(!state.exists());
}

#[test]
fn with_a_sweeper_the_switches_work() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user(USER, PW);
    new.add_user(USER, PW);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let proxy = Proxy::start(
        new.port(),
        &format!(
            "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n[state]\npath = \"{}\"\n\
             [sweep]\nenabled = true\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n",
            old.port(),
            state.display()
        ),
    );
    let port = proxy.admin_port;
    let (status, v) = api(port, "GET", "/sweep");
    assert_eq!((status, v["paused"].clone()), (200, false.into()), "{v}");
    let (status, v) = api(port, "POST", "/sweep/pause");
    assert_eq!((status, v["paused"].clone()), (200, true.into()), "{v}");
    assert_eq!(api(port, "GET", "/sweep").1["paused"], true);
    let (_, _, metrics) = http(port, "GET", "/metrics", Some(TOKEN));
    assert_eq!(
        sample(&metrics, "imapferry_sweep_paused"),
        Some(1.0),
        "{metrics}"
    );
    for name in [
        "imapferry_sweep_messages_copied_total",
        "imapferry_sweep_bytes_copied_total",
        "imapferry_sweep_queue_length",
    ] {
        assert!(sample(&metrics, name).is_some(), "{name}\n{metrics}");
    }
    assert_eq!(http(port, "GET", "/sweep/pause", Some(TOKEN)).0, 405);

    // A login creates the account; prioritising it is accepted (what the sweeper then does is
    // tests/sweep.rs's business).
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, PW);
    c.select("INBOX");
    c.logout();
    assert_eq!(api(port, "POST", "/accounts/nobody/prioritise").0, 404);
    let (status, v) = api(port, "POST", "/accounts/alice/prioritise");
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["account"]["new_user"], USER);
    let (status, v) = api(port, "POST", "/sweep/resume");
    assert_eq!((status, v["paused"].clone()), (200, false.into()), "{v}");
}
