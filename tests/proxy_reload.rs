//! Reloading a running `imapferry proxy` process (issue 16, item 1): SIGHUP, `POST /reload` and
//! `imapferry proxy --reload` put renewed certificates and changed limits in force for new
//! connections while an IDLE session keeps running; a broken file or a change that needs a
//! restart is refused with the reason and the old configuration keeps serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::certs::{Issued, issue};
use common::tlsimap::TlsImap;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_imapferry");
const TOKEN: &str = "reload-t0k";

/// One reloadable proxy process in front of a Dovecot NEW, with implicit TLS and the admin API.
struct Setup {
    new: Dovecot,
    proxy: ProxyProc,
    dir: tempfile::TempDir,
    imaps: u16,
    admin: u16,
}

impl Setup {
    fn start(cert: &Issued) -> Setup {
        let new = Dovecot::start(Layout::Slash);
        new.add_user("joe", "pw");
        let dir = tempfile::tempdir().unwrap();
        let (imaps, admin) = (free_port(), free_port());
        let text = Setup::text(&new, dir.path(), imaps, admin, cert, "");
        let proxy = ProxyProc::start(Path::new(BIN), dir.path(), &text);
        let setup = Setup {
            new,
            proxy,
            dir,
            imaps,
            admin,
        };
        // Both listeners are bound before the proxy serves either: the plain one answering
        // means the implicit-TLS one is there too.
        setup
    }

    /// The configuration after `[listen] imap` (which `ProxyProc` writes first).
    fn text(
        new: &Dovecot,
        dir: &Path,
        imaps: u16,
        admin: u16,
        cert: &Issued,
        extra: &str,
    ) -> String {
        format!(
            "imaps = \"127.0.0.1:{imaps}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
             [state]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
             {extra}",
            cert.cert.display(),
            cert.key.display(),
            new.port(),
            dir.join("imapferry.db").display(),
        )
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    /// Rewrites the configuration file (the proxy reads it at the next reload).
    fn rewrite(&self, cert: &Issued, extra: &str) {
        let text = Setup::text(
            &self.new,
            self.dir.path(),
            self.imaps,
            self.admin,
            cert,
            extra,
        );
        self.write(&format!(
            "[listen]\nimap = \"127.0.0.1:{}\"\n{text}",
            self.proxy.port
        ));
    }

    fn write(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Sends SIGHUP and waits for the `n`th reload outcome in the log.
    fn hangup(&self, n: usize) -> String {
        let out = Command::new("kill")
            .args(["-HUP", &self.proxy.pid().to_string()])
            .status()
            .unwrap();
        assert!(out.success());
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.proxy.log();
            let outcomes: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("reloaded") || l.contains("reload refused"))
                .collect();
            if outcomes.len() >= n {
                return outcomes[n - 1].to_string();
            }
            assert!(Instant::now() < until, "no reload in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `POST /reload` on the admin API: (status, body).
    fn post_reload(&self) -> (u16, String) {
        self.admin_request("POST", "/reload")
    }

    /// One request to the admin API, with the token (and the POST header): (status, body).
    fn admin_request(&self, method: &str, path: &str) -> (u16, String) {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            tcp,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {TOKEN}\r\n\
             X-Imapferry-Admin: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.admin
        )
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    /// `imapferry proxy --reload --config FILE`: (exit code, stdout + stderr).
    fn cli_reload(&self) -> (i32, String) {
        let out = Command::new(BIN)
            .args(["proxy", "--reload", "--config"])
            .arg(self.config_path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap(), text)
    }
}

/// The first line the proxy sends on a plain connection to `port`.
fn first_line(port: u16) -> String {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut line = String::new();
    BufReader::new(tcp).read_line(&mut line).unwrap();
    line
}

/// The issue's test: an IDLE session over TLS survives a SIGHUP reload that brings a renewed
/// certificate (written over the same files, as ACME clients do) and a lower per-address
/// limit; new connections get both, the idling session still receives NEW's EXISTS.
#[test]
fn idle_session_survives_a_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let first = issue(dir.path(), "first", &["localhost", "127.0.0.1"]);
    let renewed = issue(dir.path(), "renewed", &["localhost", "127.0.0.1"]);
    assert_ne!(first.der(), renewed.der());
    let s = Setup::start(&first);
    let first_der = first.der();

    let mut idle = TlsImap::connect(s.imaps, "localhost");
    assert_eq!(idle.peer_der(), first_der);
    idle.cmd("LOGIN joe pw");
    idle.cmd("SELECT INBOX");
    idle.send("i1 IDLE\r\n");
    assert!(idle.line().starts_with("+ "));

    // Renewal: the same paths get the new files; the per-address limit drops to two.
    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    s.rewrite(&first, "[limits]\nmax_connections_per_ip = 2\n");
    let outcome = s.hangup(1);
    assert!(outcome.contains("changed: limits"), "{outcome}");

    let mut fresh = TlsImap::connect(s.imaps, "localhost");
    assert_eq!(
        fresh.peer_der(),
        renewed.der(),
        "a new connection gets the renewed certificate"
    );
    // With the IDLE session and this one open, a third connection from this address is over
    // the reloaded limit.
    let third = first_line(s.proxy.port);
    assert!(
        third.contains("Too many connections from your address"),
        "{third}"
    );

    // The IDLE session kept running: NEW's new message reaches it, and it ends normally.
    let mut direct = RawImap::connect("127.0.0.1", s.new.port());
    direct.login("joe", "pw");
    direct.append("INBOX", &[], None, b"Subject: after reload\r\n\r\nhi\r\n");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let line = idle.line();
        if line.contains("EXISTS") {
            break;
        }
        assert!(Instant::now() < until, "no EXISTS in the IDLE session");
    }
    idle.send("DONE\r\n");
    let done = loop {
        let line = idle.line();
        if line.starts_with("i1 ") {
            break line;
        }
    };
    assert!(done.starts_with("i1 OK"), "{done}");
    assert_eq!(idle.peer_der(), first_der);
    let noop = idle.cmd("NOOP");
    assert!(noop.last().unwrap().contains("OK"), "{noop:?}");
    fresh.cmd("LOGOUT");
}

/// A broken file changes nothing and says why, through each way of asking: SIGHUP (log), the
/// admin API (its answer) and `imapferry proxy --reload` (its output and exit code).
#[test]
fn broken_config_is_refused_and_the_old_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let cert = issue(dir.path(), "cert", &["localhost"]);
    let s = Setup::start(&cert);
    let good = std::fs::read_to_string(s.config_path()).unwrap();

    s.write(&good.replace("[new]", "[new\n"));
    let outcome = s.hangup(1);
    assert!(
        outcome.contains("reload refused") && outcome.contains("proxy.toml"),
        "{outcome}"
    );

    let (status, body) = s.post_reload();
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("proxy.toml") && body.contains("unchanged"),
        "{body}"
    );

    let (code, text) = s.cli_reload();
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("nothing was sent"), "{text}");

    // A file that parses but fails validation (a key file that is not a key).
    s.write(&good.replace(
        &cert.key.display().to_string(),
        &cert.cert.display().to_string(),
    ));
    let (status, body) = s.post_reload();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("tls"), "{body}");

    // The old configuration still serves: TLS with the certificate, logins.
    let mut c = TlsImap::connect(s.imaps, "localhost");
    assert_eq!(c.peer_der(), cert.der());
    c.cmd("LOGIN joe pw");
    c.cmd("LOGOUT");

    // The fixed file reloads.
    s.write(&good);
    let (code, text) = s.cli_reload();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("reloaded"), "{text}");
}

/// Changes only a restart applies are refused with their names; the listeners stay where they
/// were, and the refusal leaves the running configuration (not the file) as the base.
#[test]
fn listen_address_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = issue(dir.path(), "cert", &["localhost"]);
    let s = Setup::start(&cert);
    let good = std::fs::read_to_string(s.config_path()).unwrap();
    let other = free_port();
    let moved = good.replace(&format!(":{}\"", s.proxy.port), &format!(":{other}\""));
    assert_ne!(moved, good);
    s.write(&moved.replace("[admin]", "[sweep]\nrevisit_secs = 5\n[admin]"));
    let (status, body) = s.post_reload();
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("listen cannot change without a restart"),
        "{body}"
    );

    let (code, text) = s.cli_reload();
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("listen"), "{text}");

    let outcome = s.hangup(3);
    assert!(
        outcome.contains("reload refused") && outcome.contains("listen"),
        "{outcome}"
    );

    // Still on the old port, not on the new one.
    assert!(first_line(s.proxy.port).starts_with("* OK"));
    TlsImap::connect(s.imaps, "localhost").cmd("LOGIN joe pw");
    assert!(TcpStream::connect(("127.0.0.1", other)).is_err());

    // Back to the running listeners, the same file reloads, naming what changed.
    s.write(&good.replace("[admin]", "[sweep]\nrevisit_secs = 5\n[admin]"));
    let (status, body) = s.post_reload();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sweep"), "{body}");
}

/// The accounts file is read again by a reload: a user it did not list was relayed to NEW
/// only; listed after the reload, their next login migrates their OLD mail.
#[test]
fn accounts_file_change_applies_at_the_next_login() {
    let old = Dovecot::start(Layout::Slash);
    old.add_user("legacy_ann", "oldann");
    let new = Dovecot::start(Layout::Slash);
    new.add_user("ann", "newann");
    let mut c = RawImap::connect("127.0.0.1", old.port());
    c.login("legacy_ann", "oldann");
    for i in 0..2 {
        c.append("INBOX", &[], None, &common::message(i, 600));
    }
    c.logout();

    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.txt");
    std::fs::write(
        &accounts,
        "# host1;user1;password1;host2;user2;password2;\n",
    )
    .unwrap();
    let admin = free_port();
    let text = format!(
        "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"accounts\"\n\
         accounts = \"{}\"\n[state]\npath = \"{}\"\n[migration]\nselect_budget_ms = 20000\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n",
        new.port(),
        old.port(),
        accounts.display(),
        dir.path().join("state.db").display(),
    );
    let proxy = ProxyProc::start(Path::new(BIN), dir.path(), &text);

    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("ann", "newann");
    assert_eq!(c.select("INBOX"), 0, "ann is not in the accounts file yet");
    c.logout();

    std::fs::write(
        &accounts,
        "127.0.0.1;legacy_ann;oldann;127.0.0.1;ann;newann;\n",
    )
    .unwrap();
    let s = Setup {
        new,
        proxy,
        dir,
        imaps: 0,
        admin,
    };
    let (status, body) = s.post_reload();
    assert_eq!(status, 200, "{body}");

    let mut c = RawImap::connect("127.0.0.1", s.proxy.port);
    c.login("ann", "newann");
    assert_eq!(c.select("INBOX"), 2, "ann's OLD mail after the reload");
    c.logout();
}

/// `[sweep]` settings reach the running sweeper: a window that excludes the present holds every
/// sweep back; the reload that lifts it lets the imported account be swept to `synced`.
#[test]
fn sweep_settings_reach_the_running_sweeper() {
    let old = Dovecot::start(Layout::Slash);
    old.add_user("legacy_ann", "oldann");
    let new = Dovecot::start(Layout::Slash);
    new.add_user("ann", "newann");
    let mut c = RawImap::connect("127.0.0.1", old.port());
    c.login("legacy_ann", "oldann");
    c.append("INBOX", &[], None, &common::message(1, 600));
    c.logout();

    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.txt");
    std::fs::write(
        &accounts,
        "127.0.0.1;legacy_ann;oldann;127.0.0.1;ann;newann;\n",
    )
    .unwrap();
    let admin = free_port();
    let hour = chrono::Local::now()
        .format("%H")
        .to_string()
        .parse::<u32>()
        .unwrap();
    // Two to three hours from now: closed for the whole test.
    let closed = format!("{:02}:00-{:02}:00", (hour + 2) % 24, (hour + 3) % 24);
    let (new_port, state, listed) = (new.port(), dir.path().join("state.db"), accounts.clone());
    let text = move |window: &str| {
        format!(
            "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
             [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"accounts\"\n\
             accounts = \"{}\"\n[state]\npath = \"{}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
             [sweep]\nenabled = true\n{window}",
            new_port,
            old.port(),
            listed.display(),
            state.display(),
        )
    };
    let closed_text = text(&format!("window = \"{closed}\"\n"));
    std::fs::write(
        dir.path().join("import.toml"),
        format!("[listen]\nimap = \"127.0.0.1:1\"\n{closed_text}"),
    )
    .unwrap();
    let import = Command::new(BIN)
        .args(["accounts", "import"])
        .arg(&accounts)
        .arg("--config")
        .arg(dir.path().join("import.toml"))
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    let proxy = ProxyProc::start(Path::new(BIN), dir.path(), &closed_text);
    let s = Setup {
        new,
        proxy,
        dir,
        imaps: 0,
        admin,
    };
    let (_, sweep) = s.admin_request("GET", "/sweep");
    assert!(sweep.contains("\"accounts_swept\":0"), "{sweep}");

    let open_text = format!(
        "[listen]\nimap = \"127.0.0.1:{}\"\n{}",
        s.proxy.port,
        text("")
    );
    s.write(&open_text);
    let (status, body) = s.post_reload();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sweep"), "{body}");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, account) = s.admin_request("GET", "/accounts/ann");
        if account.contains("\"state\":\"synced\"") {
            break;
        }
        assert!(
            Instant::now() < until,
            "ann never synced:\n{account}\n{}",
            s.proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `[migration] live_pickup_secs = 0` (the runbook's "turn live pickup down" after the MX move)
/// leaves new OLD mail for the next SELECT while a session has the folder selected; a reload
/// that turns it on again brings the mail to that same session.
#[test]
fn live_pickup_is_turned_off_and_on_by_a_reload() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    for server in [&old, &new] {
        server.add_user("mia", "pw");
    }
    let mut o = RawImap::connect("127.0.0.1", old.port());
    o.login("mia", "pw");
    o.append("INBOX", &[], None, &common::message(1, 600));
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let (new_port, old_port, state) = (new.port(), old.port(), dir.path().join("state.db"));
    let text = move |secs: u64| {
        format!(
            "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
             [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
             [state]\npath = \"{}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
             [migration]\nlive_pickup_secs = {secs}\n",
            new_port,
            old_port,
            state.display(),
        )
    };
    let proxy = ProxyProc::start_logging(Path::new(BIN), dir.path(), &text(0), "imapferry=debug");
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("mia", "pw");
    assert_eq!(c.select("INBOX"), 1);
    o.append("INBOX", &[], None, &common::message(2, 600));
    // Two of the account's worker rounds pass with pickup off: the session sees nothing new.
    let off = |log: &str| log.matches("live pickup is off").count();
    let until = Instant::now() + Duration::from_secs(30);
    let seen = off(&proxy.log());
    while off(&proxy.log()) < seen + 2 {
        assert!(Instant::now() < until, "{}", proxy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (untagged, _) = c.raw("NOOP");
    assert!(!untagged.iter().any(|l| l == "* 2 EXISTS"), "{untagged:?}");

    let s = Setup {
        new,
        proxy,
        dir,
        imaps: 0,
        admin,
    };
    s.write(&format!(
        "[listen]\nimap = \"127.0.0.1:{}\"\n{}",
        s.proxy.port,
        text(1)
    ));
    let (status, body) = s.post_reload();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("migration.live_pickup_secs"), "{body}");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (untagged, _) = c.raw("NOOP");
        if untagged.iter().any(|l| l == "* 2 EXISTS") {
            break;
        }
        assert!(Instant::now() < until, "{}", s.proxy.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    c.logout();
    o.logout();
}

/// What runs outside the serving task (the engine's own tasks, a reload on a blocking thread)
/// logs where `[log]` says, like the rest: at its `level`, to its `json_file`. Before, it went
/// to the process's default logger (`RUST_LOG`, stderr only): with `RUST_LOG=error` and a
/// `level` that asks for more, neither the account worker's lines nor the reload's outcome
/// were in any log.
#[test]
fn engine_tasks_and_reloads_log_where_the_configuration_says() {
    let (old, new) = (Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    old.add_user("mia", "pw");
    new.add_user("mia", "pw");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("log.json");
    let text = format!(
        "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [state]\npath = \"{}\"\n[migration]\nlive_pickup = \"off\"\n\
         [log]\nlevel = \"info,imapferry::migrate=debug\"\njson_file = \"{}\"\n",
        new.port(),
        old.port(),
        dir.path().join("state.db").display(),
        json.display()
    );
    let proxy = ProxyProc::start_logging(Path::new(BIN), dir.path(), &text, "error");
    let in_json = |what: &str| {
        let until = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&json).is_ok_and(|j| j.contains(what)) {
            assert!(
                Instant::now() < until,
                "no {what:?} in {}:\n{}\nstderr:\n{}",
                json.display(),
                std::fs::read_to_string(&json).unwrap_or_default(),
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(proxy.log().contains(what), "{}", proxy.log());
    };
    // The account's worker, a task of its own, says so at debug level each round.
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("mia", "pw");
    c.select("INBOX");
    in_json("live pickup is off");
    c.logout();
    let hangup = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    in_json("reloaded: certificates");
}
