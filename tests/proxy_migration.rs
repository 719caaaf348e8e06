//! The migration proxy (issue 5) end to end: real Dovecot servers as OLD and NEW, the proxy in
//! front of NEW with `[old]` configured, and Python's imaplib as the mail client.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dovecot, Layout, Proxy, RawImap, Snapshot, snapshot};

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

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
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
    drop(proxy);
}
