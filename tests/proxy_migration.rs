//! The migration proxy (issue 5) end to end: real Dovecot servers as OLD and NEW, the proxy in
//! front of NEW with `[old]` configured, and Python's imaplib as the mail client.

mod common;
use common::state::account_summaries;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Dovecot, DovecotOptions, Layout, Proxy, ProxyProc, RawImap, Snapshot, snapshot, wait_until,
};

const USER: &str = "alice";
const PW: &str = "alicepw";

fn servers(old_layout: Layout, new_layout: Layout) -> (Dovecot, Dovecot) {
    let old = Dovecot::start(old_layout);
    let new = Dovecot::start(new_layout);
    old.add_user(USER, PW);
    new.add_user(USER, PW);
    (old, new)
}

/// The proxy in front of `new`, migrating from `old`, state in `state`.
fn proxy(old: &Dovecot, new: &Dovecot, state: &Path, extra: &str) -> Proxy {
    Proxy::start(
        new.port(),
        &format!(
            "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n{extra}\n\
             [state]\npath = \"{}\"\n[migration]\nselect_budget_ms = 5000\n",
            old.port(),
            state.display()
        ),
    )
}

/// OLD's account: INBOX with 30 read messages, `Work` (3) and `Work/Projects` (2), all subscribed.
fn seed_old(old: &Dovecot) {
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    for path in ["Work", "Work/Projects"] {
        let name = old.mailbox_name(path);
        c.create(&name);
        c.subscribe(&name);
    }
    let mut i = 0;
    for (path, n) in [("INBOX", 30), ("Work", 3), ("Work/Projects", 2)] {
        for _ in 0..n {
            i += 1;
            c.append(
                &old.mailbox_name(path),
                &["\\Seen"],
                None,
                &common::message(i, 2_000),
            );
        }
    }
    c.logout();
}

fn subjects(snap: &Snapshot, path: &str) -> Vec<String> {
    snap.folders
        .get(path)
        .map(|msgs| msgs.iter().map(|m| m.subject.clone()).collect())
        .unwrap_or_default()
}

/// Every message of every folder appears once (the seed gives each a distinct body).
fn assert_no_duplicates(snap: &Snapshot) {
    for (path, msgs) in &snap.folders {
        let mut digests: Vec<u64> = msgs.iter().map(|m| m.digest).collect();
        digests.sort_unstable();
        let before = digests.len();
        digests.dedup();
        assert_eq!(
            before,
            digests.len(),
            "duplicates in {path}: {:?}",
            subjects(snap, path)
        );
    }
}

fn sync_cli(old: &Dovecot, new: &Dovecot, state: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .args([
            "sync",
            "--host1",
            "127.0.0.1",
            "--port1",
            &old.port().to_string(),
        ])
        .args(["--user1", USER, "--password1", PW])
        .args(["--host2", "127.0.0.1", "--port2", &new.port().to_string()])
        .args(["--user2", USER, "--password2", PW, "--nolog"])
        .arg("--state")
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sync failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name)
}

#[test]
fn cutover_story_through_the_proxy() {
    let (old, new) = servers(Layout::Slash, Layout::DotInbox);
    seed_old(&old);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let proxy = proxy(&old, &new, &state, "");

    let sub = new.mailbox_name("Work/Projects");
    let (fresh, renamed) = (new.mailbox_name("Fresh"), new.mailbox_name("Renamed"));
    let mut child = Command::new("python3")
        .arg(script("cutover.py"))
        .args([
            "127.0.0.1",
            &proxy.port.to_string(),
            USER,
            PW,
            &sub,
            &fresh,
            &renamed,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok);
    assert_eq!(
        ready.as_deref(),
        Some("READY"),
        "{:?}",
        child.wait_with_output()
    );
    // Mail still landing on OLD while the user has INBOX open.
    let mut direct = RawImap::connect(old.host(), old.port());
    direct.login(USER, PW);
    for i in 1001..=1005 {
        direct.append("INBOX", &[], None, &common::message(i, 1_500));
    }
    let result = lines.next().and_then(Result::ok).unwrap_or_default();
    let status = child.wait().unwrap();
    assert!(status.success(), "client failed: {result}");
    assert!(result.contains("\"first\": 30"), "{result}");
    assert!(
        result.contains("\"exists\": 23"),
        "new OLD mail not seen live: {result}"
    );
    for name in [new.mailbox_name("Work"), sub.clone()] {
        assert!(
            result.contains(&format!("\"{name}\"")),
            "{name} not listed: {result}"
        );
    }

    // OLD mirrors every action once the journal has drained.
    wait_until("OLD to mirror the session", Duration::from_secs(30), || {
        let s = snapshot(&old, USER, PW);
        s.count("INBOX") == 23
            && s.count("Work/Projects") == 12
            && s.folders.contains_key("Renamed")
    });
    let old_snap = snapshot(&old, USER, PW);
    assert!(
        !old_snap.folders.contains_key("Fresh"),
        "{:?}",
        old_snap.folders.keys()
    );
    let flagged = |s: &Snapshot| {
        s.folders["INBOX"]
            .iter()
            .filter(|m| m.flags.contains("\\Flagged"))
            .count()
    };
    let unseen = |s: &Snapshot| {
        s.folders["INBOX"]
            .iter()
            .filter(|m| !m.flags.contains("\\Seen"))
            .count()
    };
    assert_eq!(flagged(&old_snap), 2);
    assert_eq!(unseen(&old_snap), 1 + 5);

    // imapferry sync over the account with the proxy's state, twice, while the proxy runs:
    // nothing the user did is undone, nothing is duplicated, the 5 new messages are there once.
    let before = snapshot(&new, USER, PW);
    assert_eq!(before.count("INBOX"), 23);
    assert_eq!(before.count("Work/Projects"), 12);
    assert_no_duplicates(&before);
    sync_cli(&old, &new, &state);
    sync_cli(&old, &new, &state);
    let mut after = snapshot(&new, USER, PW);
    // `Work` was never opened through the proxy: the sync command fills it, nothing else changes.
    assert_eq!(after.folders.remove("Work").map(|m| m.len()), Some(3));
    let mut before = before;
    before.folders.remove("Work");
    common::assert_same_mail(&before, &after);
    assert_eq!(flagged(&after), 2);
    for i in 1001..=1005 {
        let subject = format!("Message {i}");
        let n = after.folders["INBOX"]
            .iter()
            .filter(|m| m.subject.contains(&subject))
            .count();
        assert_eq!(n, 1, "{subject}");
    }
    // OLD stayed a faithful mirror: with the journal empty, both hold the same mail, flags,
    // dates, folders and subscriptions.
    common::assert_same_mail(&snapshot(&old, USER, PW), &snapshot(&new, USER, PW));
    drop(proxy);
}

#[test]
fn two_connections_select_the_same_unmigrated_folder_at_once() {
    let (old, new) = servers(Layout::DotInbox, Layout::Slash);
    let big = old.mailbox_name("Big");
    {
        let mut c = RawImap::connect(old.host(), old.port());
        c.login(USER, PW);
        c.create(&big);
        for i in 0..400 {
            c.append(&big, &[], None, &common::message(i, 1_200));
        }
        c.logout();
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let proxy = proxy(&old, &new, &state, "");
    let port = proxy.port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let sessions: Vec<_> = (0..2)
        .map(|_| {
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = RawImap::connect("127.0.0.1", port);
                c.login(USER, PW);
                barrier.wait();
                let exists = c.select("Big");
                c.logout();
                exists
            })
        })
        .collect();
    for s in sessions {
        assert_eq!(
            s.join().unwrap(),
            400,
            "a session did not see the whole folder"
        );
    }
    let snap = snapshot(&new, USER, PW);
    assert_eq!(snap.count("Big"), 400);
    assert_no_duplicates(&snap);
    drop(proxy);
}

fn proxy_config(old: &Dovecot, new: &Dovecot, state: &Path, old_extra: &str) -> String {
    format!(
        "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n{old_extra}\n\
         [state]\npath = \"{}\"\n[migration]\nselect_budget_ms = 2000\n",
        new.port(),
        old.port(),
        state.display()
    )
}

#[test]
fn old_down_mid_session_then_journal_survives_kill_9_and_drains() {
    let (mut old, new) = servers(Layout::Slash, Layout::Slash);
    seed_old(&old);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    // The move below goes into a folder never copied while OLD is down: without
    // `keep_client_caches` only (with it, such a folder waits for OLD: tests/proxy_uids.rs).
    let config = format!(
        "{}keep_client_caches = false\n",
        proxy_config(&old, &new, &state, "")
    );
    let proxy = ProxyProc::start(
        Path::new(env!("CARGO_BIN_EXE_imapferry")),
        dir.path(),
        &config,
    );

    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, PW);
    assert_eq!(c.select("INBOX"), 30);
    old.kill_all(); // sessions included: OLD is gone for the proxy too
    // The user keeps working on NEW while OLD is gone.
    c.exec("UID STORE 1:3 +FLAGS (\\Flagged)");
    c.exec("UID MOVE 4:8 Work/Projects");
    assert_eq!(c.select("INBOX"), 25);
    c.logout();
    let pending = account_summaries(&state)[0].pending_journal;
    assert!(pending >= 2, "journal entries: {pending}\n{}", proxy.log());

    drop(proxy); // SIGKILL: nothing in the journal may be lost
    old.restart();
    let proxy = ProxyProc::start(
        Path::new(env!("CARGO_BIN_EXE_imapferry")),
        dir.path(),
        &config,
    );
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, PW);
    wait_until(
        "the journal to drain to OLD",
        Duration::from_secs(30),
        || {
            let s = snapshot(&old, USER, PW);
            s.count("INBOX") == 25 && s.count("Work/Projects") == 7 && s.with_flag("\\Flagged") == 3
        },
    );
    // Opening the destination now backfills OLD's two older messages there; the five moved
    // ones are linked by the mirrored MOVE and are not copied back.
    assert_eq!(c.select("Work/Projects"), 7);
    c.logout();
    let new_snap = snapshot(&new, USER, PW);
    assert_eq!(new_snap.count("INBOX"), 25);
    assert_eq!(new_snap.count("Work/Projects"), 7);
    assert_no_duplicates(&new_snap);
    wait_until("no pending journal entry", Duration::from_secs(10), || {
        account_summaries(&state)[0].pending_journal == 0
    });
    assert!(!proxy.log().contains(PW), "a password reached the log");
}

#[test]
fn accounts_and_master_policies_reach_the_right_old_account() {
    let master = ("migrator".to_string(), "masterpw".to_string());
    let old = Dovecot::start_with(DovecotOptions {
        master: Some(master.clone()),
        ..Default::default()
    });
    let new = Dovecot::start(Layout::Slash);
    for (user, pw) in [("legacy_bob", "oldbob"), ("carol", "carolold"), (USER, PW)] {
        old.add_user(user, pw);
    }
    for (user, pw) in [("bob", "newbob"), ("carol", "carolnew"), (USER, "alicenew")] {
        new.add_user(user, pw);
    }
    let mut c = RawImap::connect(old.host(), old.port());
    c.login("legacy_bob", "oldbob");
    for i in 0..4 {
        c.append("INBOX", &[], None, &common::message(i, 900));
    }
    c.logout();
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    for i in 10..13 {
        c.append("INBOX", &[], None, &common::message(i, 900));
    }
    c.logout();

    // auth = "accounts": bob's NEW login picks legacy_bob on OLD; carol's OLD password is wrong.
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.txt");
    std::fs::write(
        &accounts,
        "# host1;user1;password1;host2;user2;password2;extra;\n\
         127.0.0.1;legacy_bob;oldbob;127.0.0.1;bob;newbob;;\n\
         127.0.0.1;carol;WRONG-old-secret;127.0.0.1;carol;carolnew;;\n",
    )
    .unwrap();
    let state = dir.path().join("state.db");
    let extra = format!("auth = \"accounts\"\naccounts = \"{}\"", accounts.display());
    let proxy = ProxyProc::start(
        Path::new(env!("CARGO_BIN_EXE_imapferry")),
        dir.path(),
        &proxy_config(&old, &new, &state, &extra),
    );
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("bob", "newbob");
    assert_eq!(c.select("INBOX"), 4, "bob does not see legacy_bob's mail");
    c.logout();
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("carol", "carolnew");
    assert_eq!(c.select("INBOX"), 0);
    c.append("INBOX", &[], None, &common::message(99, 700));
    assert_eq!(c.select("INBOX"), 1, "carol cannot work on NEW");
    c.logout();
    wait_until(
        "carol's account to be failed",
        Duration::from_secs(10),
        || {
            account_summaries(&state).iter().any(|a| {
                a.key.new_user == "carol" && a.state == imapferry::store::AccountState::Failed
            })
        },
    );
    let carol = account_summaries(&state)
        .into_iter()
        .find(|a| a.key.new_user == "carol")
        .unwrap();
    let reason = carol.reason.unwrap_or_default();
    assert!(
        reason.contains("Error login") && reason.contains("carol"),
        "{reason}"
    );
    let log = proxy.log();
    assert!(log.contains("Error login"), "{log}");
    for secret in ["WRONG-old-secret", "carolnew", "newbob", "oldbob"] {
        assert!(
            !log.contains(secret) && !reason.contains(secret),
            "{secret} leaked"
        );
    }
    drop(proxy);

    // auth = "master": the NEW login's user on OLD, through OLD's master user, but only for an
    // account someone imported: a typed name alone never opens an OLD mailbox.
    let secret = dir.path().join("master.secret");
    std::fs::write(&secret, format!("{}\n", master.1)).unwrap();
    let state = dir.path().join("state-master.db");
    let extra = format!(
        "auth = \"master\"\nmaster_user = \"{}\"\nmaster_password_file = \"{}\"",
        master.0,
        secret.display()
    );
    let proxy = ProxyProc::start(
        Path::new(env!("CARGO_BIN_EXE_imapferry")),
        dir.path(),
        &proxy_config(&old, &new, &state, &extra),
    );
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, "alicenew");
    assert_eq!(
        c.select("INBOX"),
        0,
        "OLD opened for a login nobody imported"
    );
    c.logout();
    assert!(
        proxy.log().contains("not an imported account"),
        "{}",
        proxy.log()
    );
    let logins = dir.path().join("logins.txt");
    std::fs::write(&logins, "Alice\n").unwrap();
    let import = Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .args(["accounts", "import"])
        .arg(&logins)
        .arg("--config")
        .arg(dir.path().join("proxy.toml"))
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("ALICE", "alicenew");
    assert_eq!(
        c.select("INBOX"),
        3,
        "alice does not see her OLD mail via the master user"
    );
    c.logout();
    let accounts = account_summaries(&state);
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].key.new_user, USER);
}

#[test]
fn select_past_its_budget_proceeds_and_the_rest_arrives_as_new_mail() {
    let (old, new) = servers(Layout::Slash, Layout::Slash);
    const N: u32 = 2_000;
    {
        let mut c = RawImap::connect(old.host(), old.port());
        c.login(USER, PW);
        c.create("Big");
        for i in 0..N {
            c.append("Big", &[], None, &common::message(u64::from(i), 1_000));
        }
        c.logout();
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    // A budget far shorter than copying 2,000 messages takes. A partial view is what this tests:
    // with `keep_client_caches` a folder is shown only once complete (tests/proxy_uids.rs).
    let proxy = Proxy::start(
        new.port(),
        &format!(
            "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n[state]\npath = \"{}\"\n\
             [migration]\nselect_budget_ms = 1\nkeep_client_caches = false\n",
            old.port(),
            state.display()
        ),
    );
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, PW);
    let first = c.select("Big");
    assert!(
        first < N,
        "the SELECT waited for the whole backfill ({first})"
    );
    // Same session, no reconnect: NOOP reports the messages as they arrive.
    let mut exists = first;
    wait_until(
        "the folder to complete in the open session",
        Duration::from_secs(60),
        || {
            for line in c.exec("NOOP") {
                let text = String::from_utf8_lossy(&line).to_string();
                if let Some(n) = text
                    .strip_prefix("* ")
                    .and_then(|t| t.strip_suffix(" EXISTS\r\n").or(t.strip_suffix(" EXISTS")))
                {
                    exists = n.trim().parse().unwrap_or(exists);
                }
            }
            exists == N
        },
    );
    c.logout();
    let snap = snapshot(&new, USER, PW);
    assert_eq!(snap.count("Big"), N as usize);
    assert_no_duplicates(&snap);
}
