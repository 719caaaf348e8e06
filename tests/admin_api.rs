//! The admin API (issue 6, item 5) over a migration proxy in front of real Dovecot servers: a user
//! logs in through the proxy and opens INBOX, then `/accounts`, `/accounts/{user}` and `/overview`
//! report exactly what `imapferry status --json` reads from the same state file; retire answers
//! 409 while the account is partial and retires it once every folder is synced; the sweeper's
//! routes answer 503 without a sweeper and pause, resume and prioritise with one (`[sweep]
//! enabled`); `/metrics` counts accounts by state and shows the sweeper's counters; without
//! `[old]` the admin creates no state file. Safe by default (issue 12, items 4 and 6): a token is
//! required unless the endpoint is on loopback and says `allow_without_token`, an empty one is
//! refused at start; forged requests (no `X-Imapferry-Admin` on a POST, a foreign Host or Origin)
//! change nothing; idle connections cannot starve `/health`; a slow request head is dropped.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Dovecot, Layout, Proxy, RawImap, free_port, migration_config};
use serde_json::Value;

const USER: &str = "alice";
const PW: &str = "alice-admin-pw";
const TOKEN: &str = "tok-admin-71c3";

/// Sends `request` (a whole request head) on a new connection to the admin port; the response
/// as text (the connection is closed after it: `Connection: close`, or the proxy closes it).
fn exchange(port: u16, request: &str) -> String {
    try_exchange(port, request).unwrap_or_else(|e| panic!("{request:?}: {e}"))
}

fn try_exchange(port: u16, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    Ok(response)
}

/// (status, content type, body) of an HTTP response.
fn parse(response: &str) -> (u16, String, String) {
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
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// A request on the admin port as a well-behaved client sends it (`Host: localhost`, the
/// token when given, `X-Imapferry-Admin: 1` on POSTs): (status, content type, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let post = if method == "POST" {
        "X-Imapferry-Admin: 1\r\n"
    } else {
        ""
    };
    parse(&exchange(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}{post}Content-Length: 0\r\n\
             Connection: close\r\n\r\n"
        ),
    ))
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

    // Forged requests change nothing, token or not: a POST without X-Imapferry-Admin (a web
    // page cannot add it cross-site) gets 403; a Host that does not name the endpoint (DNS
    // rebinding) gets 421.
    let retire = |host: &str, extra: &str| {
        parse(&exchange(
            port,
            &format!(
                "POST /accounts/alice/retire?force=1 HTTP/1.1\r\nHost: {host}\r\n\
                 Authorization: Bearer {TOKEN}\r\n{extra}Content-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            ),
        ))
    };
    let (status, _, body) = retire("localhost", "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("X-Imapferry-Admin"), "{body}");
    let here = format!("127.0.0.1:{port}");
    for host in ["evil.example", &format!("evil.example:{port}"), "127.0.0.2"] {
        let (status, _, body) = retire(host, "X-Imapferry-Admin: 1\r\n");
        assert_eq!(status, 421, "{host}: {body}");
    }
    let (status, _, body) = retire(
        &here,
        "Origin: http://evil.example\r\nX-Imapferry-Admin: 1\r\n",
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        api(port, "GET", "/accounts/alice").1["account"]["state"],
        "partial"
    );
    let (status, _, _) = parse(&exchange(
        port,
        &format!(
            "GET /overview HTTP/1.1\r\nHost: {here}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n"
        ),
    ));
    assert_eq!(status, 200, "the endpoint's own address is a valid Host");

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
            "[state]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             allow_without_token = true\n",
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

/// A free loopback port.
/// `imapferry proxy ARG FILE` for a configuration whose `[admin]` section holds `admin`: its exit
/// code and stderr once it exits, or a panic if it is still running after 20 s (it started).
fn run_proxy(arg: &str, admin: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imapferry.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nimap = \"127.0.0.1:{}\"\n[new]\naddress = \"127.0.0.1:1\"\n\
             security = \"none\"\n[state]\npath = \"{}\"\n[admin]\n{admin}",
            free_port(),
            dir.path().join("state.db").display()
        ),
    )
    .unwrap();
    let stderr = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .args(["proxy", arg])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "the proxy started with [admin] {admin:?}: {}",
                std::fs::read_to_string(&stderr).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&stderr).unwrap(),
    )
}

/// Issue 12, item 4: without a token the admin API retired accounts for anyone. Now a token is
/// required, unless the endpoint is on loopback and the configuration says so; an empty token
/// is refused. The proxy does not start (exit 78, the key named).
#[test]
fn an_admin_endpoint_without_a_token_is_refused_at_start() {
    let port = free_port();
    // ([admin] keys, the key the error names, a word of the message)
    let cases = [
        // Not loopback (a TEST-NET address: nothing is ever bound there).
        ("listen = \"192.0.2.1:9143\"\n", "admin.token", "required"),
        (
            "listen = \"192.0.2.1:9143\"\nallow_without_token = true\n",
            "admin.allow_without_token",
            "loopback",
        ),
        // Loopback, but nobody said so.
        (
            &*format!("listen = \"127.0.0.1:{port}\"\n"),
            "admin.token",
            "allow_without_token",
        ),
        (
            &*format!("listen = \"127.0.0.1:{port}\"\ntoken = \"\"\n"),
            "admin.token",
            "non-empty",
        ),
        (
            &*format!("listen = \"127.0.0.1:{port}\"\ntoken = \" \"\n"),
            "admin.token",
            "non-empty",
        ),
    ];
    for (admin, key, word) in cases {
        for arg in ["--check-config", "--config"] {
            let (code, stderr) = run_proxy(arg, admin);
            assert_eq!(code, 78, "{arg} {admin:?}: {stderr}");
            assert!(
                stderr.contains(key) && stderr.contains(word),
                "{arg} {admin:?}: {stderr}"
            );
        }
    }
    // Loopback with the explicit switch starts (checked only here; it is served below).
    let (code, stderr) = run_proxy(
        "--check-config",
        &format!("listen = \"127.0.0.1:{port}\"\nallow_without_token = true\n"),
    );
    assert_eq!(code, 0, "{stderr}");
}

/// A state file with one pending account, `joe`.
fn state_with_joe(state: &Path) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use imapferry::store::{AccountKey, SqliteStore, Store};
        let store = SqliteStore::open(state).await.unwrap();
        store
            .account(&AccountKey {
                old_host: "old.example".into(),
                old_user: "joe".into(),
                new_host: "127.0.0.1".into(),
                new_user: "joe".into(),
            })
            .await
            .unwrap();
        store.close().await;
    });
}

/// Issue 12, item 4: a page open in the operator's browser could POST to a loopback admin port.
/// On loopback without a token (`allow_without_token`), the API works for a real client, while a
/// form posted from another site (no custom header, a foreign Origin) and a DNS-rebound name
/// (foreign Host, custom header and all) change nothing.
#[test]
fn loopback_without_a_token_refuses_what_a_browser_can_forge() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    state_with_joe(&state);
    let proxy = Proxy::start(
        1,
        &format!(
            "[state]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\nallow_without_token = true\n",
            state.display()
        ),
    );
    let port = proxy.admin_port;
    let (status, _, body) = http(port, "GET", "/accounts/joe", None);
    assert_eq!(status, 200, "{body}");

    let retire = |headers: &str| {
        parse(&exchange(
            port,
            &format!(
                "POST /accounts/joe/retire?force=1 HTTP/1.1\r\n{headers}\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        ))
    };
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    // (headers, status)
    let forged = [
        // A cross-site form: the browser names the endpoint and its own origin.
        (
            format!("Host: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n{form}"),
            403,
        ),
        // The same without Origin (a client that leaves it out).
        (format!("Host: 127.0.0.1:{port}\r\n{form}"), 403),
        (format!("Host: localhost:{port}\r\n{form}"), 403),
        // A rebound name is same-origin for the page, so it can add any header, but not Host.
        (
            format!(
                "Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n\
                 X-Imapferry-Admin: 1\r\n"
            ),
            421,
        ),
        (format!("X-Imapferry-Admin: 1\r\n{form}"), 421),
        // A page on another loopback port, with the custom header (a CORS preflight would stop
        // a browser; its Origin does here).
        (
            format!(
                "Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:8080\r\nX-Imapferry-Admin: 1\r\n"
            ),
            403,
        ),
    ];
    for (headers, status) in &forged {
        let (got, _, body) = retire(headers);
        assert_eq!(got, *status, "{headers:?}: {body}");
    }
    let (_, _, body) = http(port, "GET", "/accounts/joe", None);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["account"]["state"], "pending", "{v}");
    // GETs do not need the custom header, but a rebound name still cannot read them.
    let (status, _, _) = parse(&exchange(
        port,
        &format!(
            "GET /accounts HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
        ),
    ));
    assert_eq!(status, 421);

    // The real client.
    let (status, _, body) = retire(&format!(
        "Host: 127.0.0.1:{port}\r\nX-Imapferry-Admin: 1\r\n"
    ));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["changed"].clone(), v["forced"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(
        common::state::account_summaries(&state)[0].state.as_str(),
        "retired"
    );
}

/// True when the admin port closes a connection without an answer.
fn closed_without_answer(port: u16) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    match s.read_to_end(&mut response) {
        Ok(_) => response.is_empty(),
        // Closed with the request unread: a reset.
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// True when the server has closed `s` (it reads end of file; an open, quiet one times out).
fn closed(s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match s.peek(&mut [0; 1]) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Issue 12, item 6: 32 idle connections made `/health` unanswerable, so a load balancer took
/// the proxy out. Past the connection cap a small reserve answers `/health` (and only that);
/// past the reserve, connections are closed at once; freed slots serve again.
#[test]
fn idle_connections_do_not_starve_health() {
    use imapferry::proxy::admin::{HEALTH_RESERVE, MAX_CONNECTIONS};
    let proxy = Proxy::start(
        1,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nheader_timeout_secs = 600\n"
        ),
    );
    let port = proxy.admin_port;
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // The cap is reached: the API answers 503 (on a reserve connection), /health answers.
    let (status, _, body) = http(port, "GET", "/metrics", Some(TOKEN));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection limit"), "{body}");
    for _ in 0..3 {
        let (status, _, body) = http(port, "GET", "/health", None);
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
    // The reserve is bounded too. A /health connection above may still hold its reserve slot
    // for a moment after its answer was read; a reserve connection accepted then is closed at
    // once, which leaves a slot for the probe. So when the probe is answered, a reserve
    // connection must have been closed, and the reserve is filled again.
    let mut reserve: Vec<TcpStream> = Vec::new();
    for attempt in 1.. {
        reserve.retain(|s| !closed(s));
        while reserve.len() < HEALTH_RESERVE {
            reserve.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
        if closed_without_answer(port) {
            break;
        }
        let refused = reserve.iter().filter(|s| closed(s)).count();
        assert!(refused > 0, "the probe was answered beside a full reserve");
        assert!(attempt < 5, "the reserve never filled");
    }
    drop(reserve);
    drop(idle);
    let until = Instant::now() + Duration::from_secs(30);
    let metrics = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    // Until the proxy has seen the closes, a probe may still be refused or meet the reserve.
    loop {
        let answer = try_exchange(port, &metrics).unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200 ") {
            assert!(answer.contains("imapferry_connections_total"), "{answer}");
            break;
        }
        assert!(Instant::now() < until, "slots never freed: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request head that does not arrive within `[admin] header_timeout_secs` is dropped without
/// an answer, and a kept-alive connection that goes quiet is closed the same way.
#[test]
fn slow_and_idle_connections_are_closed() {
    let proxy = Proxy::start(
        1,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nheader_timeout_secs = 1\n"
        ),
    );
    let port = proxy.admin_port;
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let mut rest = String::new();
    slow.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "no answer to half a request");

    // Kept alive (no `Connection: close`): two answers, then the close at the timeout.
    let mut kept = TcpStream::connect(("127.0.0.1", port)).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut both = String::new();
    kept.read_to_string(&mut both).unwrap();
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
    assert!(both.ends_with("ok\n"), "{both}");
}
