//! The sweeper (issue 6): accounts nobody opens are imported, swept to `synced` and re-visited;
//! transient OLD failures back off, bad credentials fail only their account; a user's request
//! takes over the sweeper's copy; a SIGKILLed proxy resumes. Real Dovecot servers throughout.

mod common;
use common::state::account_summaries;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::accounts::{master_config, master_servers, seed, users};
use common::{Dovecot, ProxyProc, RawImap, assert_same_mail, snapshot, wait_until};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_imapferry"))
}

fn imapferry(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `GET path` on the admin listener, as JSON.
fn http_get_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut last = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            if let Some((_, json)) = body.split_once("\r\n\r\n") {
                if let Ok(v) = serde_json::from_str(json) {
                    return v;
                }
                last = body;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no JSON from {path}: {last}");
}

#[test]
fn fifty_imported_accounts_are_swept_to_synced_and_late_mail_follows() {
    let (old, new) = master_servers();
    let users = users(50);
    old.add_users(&users);
    new.add_users(&users);
    seed(&old, &users);
    let dir = tempfile::tempdir().unwrap();
    let conf = master_config(dir.path(), &old, &new, "accounts_in_parallel = 4");
    let conf = conf.to_str().unwrap();
    let logins = dir.path().join("logins.txt");
    let list: String = users.iter().map(|(u, _)| format!("{u}\n")).collect();
    std::fs::write(&logins, format!("# accounts of the first wave\n{list}")).unwrap();
    let logins = logins.to_str().unwrap();

    let out = imapferry(&["accounts", "import", logins, "--config", conf]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("50 added"), "{}", text(&out));
    let out = imapferry(&["accounts", "import", logins, "--config", conf]);
    assert!(
        text(&out).contains("0 added, 0 updated, 50 unchanged"),
        "{}",
        text(&out)
    );

    let out = imapferry(&["sweep", "--once", "--config", conf]);
    assert!(out.status.success(), "{}", text(&out));
    let state = dir.path().join("state.db");
    let all = account_summaries(&state);
    assert_eq!(all.len(), 50, "re-import duplicated accounts");
    for a in &all {
        assert_eq!(a.state, imapferry::store::AccountState::Synced, "{a:?}");
    }
    for (user, pw) in &users {
        assert_same_mail(&snapshot(&old, user, pw), &snapshot(&new, user, pw));
    }
    let out = imapferry(&["verify", "--all", "--config", conf]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("50 equal"), "{}", text(&out));

    // status, verify and (below) the admin API tell the same numbers.
    let counts = |v: &serde_json::Value| {
        (
            v["new_user"].as_str().unwrap_or_default().to_string(),
            v["messages_old"].as_u64(),
            v["messages_new"].as_u64(),
        )
    };
    let verified: Vec<_> = String::from_utf8_lossy(
        &imapferry(&["verify", "--all", "--json", "--config", conf]).stdout,
    )
    .lines()
    .map(|l| counts(&serde_json::from_str(l).unwrap()))
    .collect();
    let status: serde_json::Value =
        serde_json::from_slice(&imapferry(&["status", "--json", "--config", conf]).stdout).unwrap();
    let mut from_status: Vec<_> = status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(counts)
        .collect();
    let mut verified_sorted = verified.clone();
    verified_sorted.sort();
    from_status.sort();
    assert_eq!(verified_sorted.len(), 50);
    assert!(
        verified_sorted
            .iter()
            .all(|(_, o, n)| o.is_some() && o == n),
        "{verified_sorted:?}"
    );
    assert!(
        verified_sorted
            .iter()
            .map(|(_, o, _)| o.unwrap_or(0))
            .sum::<u64>()
            > 300
    );
    assert_eq!(from_status, verified_sorted);

    // Mail delivered to OLD for a synced account reaches NEW at the next revisit (the sweeper
    // inside the proxy, re-visiting every second).
    let (user, pw) = &users[7];
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(user, pw);
    c.append("INBOX", &[], None, &common::message(9_999, 1_000));
    c.logout();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = std::fs::read_to_string(dir.path().join("imapferry.toml"))
        .unwrap()
        .replace("[listen]\nimap = \"127.0.0.1:1\"\n", "")
        .replace(
            "[sweep]\n",
            &format!(
                "[admin]\nlisten = \"{admin}\"\nallow_without_token = true\n\
                 [sweep]\nenabled = true\nrevisit_secs = 1\n"
            ),
        );
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyProc::start(bin(), proxy_dir.path(), &config);
    let mut from_admin: Vec<_> = http_get_json(admin, "/accounts")
        .as_array()
        .unwrap()
        .iter()
        .map(counts)
        .collect();
    from_admin.sort();
    assert_eq!(
        from_admin, verified_sorted,
        "the admin API disagrees with verify"
    );
    wait_until("the late message on NEW", Duration::from_secs(30), || {
        snapshot(&new, user, pw).count("INBOX") == snapshot(&old, user, pw).count("INBOX")
    });
    drop(proxy);
    assert_same_mail(&snapshot(&old, user, pw), &snapshot(&new, user, pw));
}

#[test]
fn old_refusing_connections_backs_off_and_a_bad_password_fails_only_its_account() {
    let (mut old, new) = master_servers();
    let users = users(4);
    old.add_users(&users);
    new.add_users(&users);
    seed(&old, &users);
    // auth = "accounts": the loop file gives both passwords; u03's OLD password is wrong.
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.txt");
    let lines: String = users
        .iter()
        .map(|(u, pw)| {
            let old_pw = if u == "u03" {
                "not-the-password"
            } else {
                pw.as_str()
            };
            // Both forms of imapsync's loop file: 6 columns (CRLF) and 7 with the extra column.
            if u.ends_with(['0', '2']) {
                format!("127.0.0.1;{u};{old_pw};127.0.0.1;{u};{pw};\r\n")
            } else {
                format!("127.0.0.1;{u};{old_pw};127.0.0.1;{u};{pw};;\n")
            }
        })
        .collect();
    std::fs::write(&accounts, lines).unwrap();
    let conf = dir.path().join("imapferry.toml");
    std::fs::write(
        &conf,
        format!(
            "[listen]\nimap = \"127.0.0.1:1\"\n[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
             [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"accounts\"\naccounts = \"{}\"\n\
             [state]\npath = \"{}\"\n",
            new.port(),
            old.port(),
            accounts.display(),
            dir.path().join("state.db").display()
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let out = imapferry(&[
        "accounts",
        "import",
        accounts.to_str().unwrap(),
        "--config",
        conf,
    ]);
    assert!(text(&out).contains("4 added"), "{}", text(&out));

    old.kill_all();
    let sweep = Command::new(bin())
        .args(["sweep", "--once", "--config", conf])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    old.restart();
    let out = sweep.wait_with_output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("again in"),
        "no back-off while OLD was down:\n{all}"
    );
    let state = dir.path().join("state.db");
    for a in account_summaries(&state) {
        if a.key.new_user == "u03" {
            assert_eq!(a.state, imapferry::store::AccountState::Failed);
            let reason = a.reason.unwrap_or_default();
            assert!(reason.contains("Error login"), "{reason}");
            assert!(!reason.contains("not-the-password"));
        } else {
            assert_eq!(a.state, imapferry::store::AccountState::Synced, "{a:?}");
        }
    }
    for (user, pw) in &users[..3] {
        assert_same_mail(&snapshot(&old, user, pw), &snapshot(&new, user, pw));
    }
    assert!(
        !all.contains("not-the-password") && !all.contains("pw-1"),
        "{all}"
    );
}

/// Four accounts of about 2.5 MB each (a few large messages).
fn seed_large(old: &Dovecot, users: &[(String, String)]) -> u64 {
    let mut total = 0;
    for (i, (user, pw)) in users.iter().enumerate() {
        let mut c = RawImap::connect(old.host(), old.port());
        c.login(user, pw);
        for j in 0..5 {
            let m = common::message((i * 10 + j) as u64, 500_000);
            total += m.len() as u64;
            c.append("INBOX", &[], None, &m);
        }
        c.logout();
    }
    total
}

#[test]
fn the_bytes_per_second_ceiling_holds_on_average() {
    let (old, new) = master_servers();
    let users = users(4);
    old.add_users(&users);
    new.add_users(&users);
    let total = seed_large(&old, &users);
    let dir = tempfile::tempdir().unwrap();
    const CEILING: u64 = 1_500_000;
    let conf = master_config(
        dir.path(),
        &old,
        &new,
        &format!("accounts_in_parallel = 4\nmax_bytes_per_second = {CEILING}"),
    );
    let conf = conf.to_str().unwrap();
    let logins = dir.path().join("logins.txt");
    let list: String = users.iter().map(|(u, _)| format!("{u}\n")).collect();
    std::fs::write(&logins, list).unwrap();
    let out = imapferry(&[
        "accounts",
        "import",
        logins.to_str().unwrap(),
        "--config",
        conf,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let started = Instant::now();
    let out = imapferry(&["sweep", "--once", "--config", conf]);
    let wall = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out));
    // The sweeper's own measure: bytes copied over the time since it started.
    let report = text(&out);
    let rate: f64 = report
        .split("average copy rate ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in:\n{report}"));
    let ratio = rate / CEILING as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "average {rate} B/s against {CEILING}:\n{report}"
    );
    // From outside: the whole process (start-up included) never beat the ceiling.
    assert!(
        total as f64 / wall <= CEILING as f64 * 1.1,
        "{total} bytes in {wall:.2} s"
    );
    for (user, pw) in &users {
        assert_same_mail(&snapshot(&old, user, pw), &snapshot(&new, user, pw));
    }
}

fn proxy_config(conf: &Path) -> String {
    std::fs::read_to_string(conf)
        .unwrap()
        .replace("[listen]\nimap = \"127.0.0.1:1\"\n", "")
}

#[test]
fn a_user_opening_a_folder_takes_over_the_sweepers_slow_copy() {
    let (old, new) = master_servers();
    old.add_user("alice", "alicepw");
    new.add_user("alice", "alicepw");
    const N: usize = 1_500;
    let mut c = RawImap::connect(old.host(), old.port());
    c.login("alice", "alicepw");
    c.create("Big");
    for i in 0..N {
        c.append("Big", &[], None, &common::message(i as u64, 1_000));
    }
    c.logout();
    let dir = tempfile::tempdir().unwrap();
    // Alone, the sweeper would need about 30 s for Big.
    let conf = master_config(
        dir.path(),
        &old,
        &new,
        "enabled = true\nmax_bytes_per_second = 50000\n[migration]\nselect_budget_ms = 10000",
    );
    std::fs::write(dir.path().join("logins.txt"), "alice\n").unwrap();
    let out = imapferry(&[
        "accounts",
        "import",
        dir.path().join("logins.txt").to_str().unwrap(),
        "--config",
        conf.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyProc::start(bin(), proxy_dir.path(), &proxy_config(&conf));
    wait_until(
        "the sweeper to start copying Big",
        Duration::from_secs(20),
        || {
            let mut d = RawImap::connect(new.host(), new.port());
            d.login("alice", "alicepw");
            // Dovecot may list Big a moment before it opens: a refused EXAMINE is "not yet".
            let (untagged, _) = d.command("EXAMINE \"Big\"");
            d.logout();
            untagged.iter().any(|line| {
                let line = String::from_utf8_lossy(line);
                line.trim_end()
                    .strip_prefix("* ")
                    .and_then(|l| l.strip_suffix(" EXISTS"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 0)
            })
        },
    );
    let mut user = RawImap::connect("127.0.0.1", proxy.port);
    user.login("alice", "alicepw");
    let exists = user.select("Big");
    user.logout();
    assert_eq!(
        exists as usize,
        N,
        "the user waited behind the sweeper\n{}",
        proxy.log()
    );
    drop(proxy);
    let snap = snapshot(&new, "alice", "alicepw");
    assert_eq!(snap.count("Big"), N);
    assert_same_mail(&snapshot(&old, "alice", "alicepw"), &snap);
}

#[test]
fn a_proxy_killed_mid_sweep_resumes_without_duplicates() {
    let (old, new) = master_servers();
    let users = users(6);
    old.add_users(&users);
    new.add_users(&users);
    seed_large(&old, &users[..3]);
    seed(&old, &users[3..]);
    let dir = tempfile::tempdir().unwrap();
    let conf = master_config(
        dir.path(),
        &old,
        &new,
        "enabled = true\naccounts_in_parallel = 2\nmax_bytes_per_second = 1000000",
    );
    let list: String = users.iter().map(|(u, _)| format!("{u}\n")).collect();
    std::fs::write(dir.path().join("logins.txt"), list).unwrap();
    let out = imapferry(&[
        "accounts",
        "import",
        dir.path().join("logins.txt").to_str().unwrap(),
        "--config",
        conf.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let state = dir.path().join("state.db");
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyProc::start(bin(), proxy_dir.path(), &proxy_config(&conf));
    wait_until("the sweep to be under way", Duration::from_secs(20), || {
        account_summaries(&state).iter().any(|a| a.linked > 0)
    });
    std::thread::sleep(Duration::from_millis(800));
    drop(proxy); // SIGKILL in the middle of copying
    let unfinished = account_summaries(&state)
        .iter()
        .filter(|a| a.state != imapferry::store::AccountState::Synced)
        .count();
    assert!(unfinished > 0, "the sweep was already over");
    let fast = proxy_config(&conf).replace("max_bytes_per_second = 1000000", "");
    let proxy = ProxyProc::start(bin(), proxy_dir.path(), &fast);
    wait_until(
        "every account synced after the restart",
        Duration::from_secs(60),
        || {
            account_summaries(&state)
                .iter()
                .all(|a| a.state == imapferry::store::AccountState::Synced)
        },
    );
    drop(proxy);
    for (user, pw) in &users {
        assert_same_mail(&snapshot(&old, user, pw), &snapshot(&new, user, pw));
    }
}
