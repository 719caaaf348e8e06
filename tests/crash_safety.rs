//! Crash safety of `imapferry sync`: the process is killed with SIGKILL at several points while it
//! copies (chosen by watching NEW fill up), re-run each time, and at the end NEW holds exactly OLD's
//! mail: no message missing, none duplicated.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Dovecot, Layout, RawImap, assert_same_mail, snapshot};

const PW: &str = "crash-pw";

fn spawn_sync(old: &Dovecot, new: &Dovecot, state: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .args([
            "sync",
            "--host1",
            old.host(),
            "--port1",
            &old.port().to_string(),
            "--user1",
            "alice",
            "--password1",
            PW,
        ])
        .args([
            "--host2",
            new.host(),
            "--port2",
            &new.port().to_string(),
            "--user2",
            "alice",
            "--password2",
            PW,
        ])
        .args([
            "--nolog",
            "--nofoldersizes",
            "--state",
            state.to_str().unwrap(),
        ])
        .stdout(log_file(state))
        .stderr(log_file(state))
        .spawn()
        .expect("spawn imapferry")
}

/// Every run's output, appended next to the state file (shown when the final pass fails).
fn log_file(state: &std::path::Path) -> std::fs::File {
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(state.with_extension("log"))
        .expect("log file")
}

fn count(d: &Dovecot, folder: &str) -> u32 {
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login("alice", PW);
    imap.status(folder).0
}

#[test]
fn sigkill_during_copy_never_duplicates_or_loses() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::DotInbox);
    old.add_user("alice", PW);
    new.add_user("alice", PW);
    let total = 1200u32;
    {
        let mut o = RawImap::connect(old.host(), old.port());
        o.login("alice", PW);
        for i in 0..total as u64 {
            // A few exact duplicates and messages without identifying headers are in there too.
            let body = if i % 100 == 7 {
                common::message(i - 1, 3000)
            } else {
                common::message(i, 3000)
            };
            let body = if i % 150 == 3 {
                strip_identity(&body)
            } else {
                body
            };
            o.append(
                "INBOX",
                if i % 3 == 0 { &["\\Seen"] } else { &[] },
                None,
                &body,
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");

    let mut kills = 0;
    for share in [0.05, 0.25, 0.5, 0.75, 0.95] {
        let target = (total as f64 * share) as u32;
        let mut child = spawn_sync(&old, &new, &state);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("imapferry ended ({status}) before the kill point {target}");
            }
            if count(&new, "INBOX") >= target {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break;
            }
            assert!(Instant::now() < deadline, "no progress towards {target}");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            count(&new, "INBOX") <= total,
            "a run after a kill duplicated messages"
        );
    }
    assert_eq!(kills, 5);
    let status = spawn_sync(&old, &new, &state).wait().unwrap();
    assert!(
        status.success(),
        "final pass: {status}\n{}",
        std::fs::read_to_string(state.with_extension("log")).unwrap_or_default()
    );
    assert_eq!(
        count(&new, "INBOX"),
        total,
        "NEW must hold every OLD message exactly once"
    );
    assert_same_mail(&snapshot(&old, "alice", PW), &snapshot(&new, "alice", PW));
}

/// Removes Message-Id and Received lines, leaving a message only its whole header identifies.
fn strip_identity(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let kept: Vec<&str> = head
        .split("\r\n")
        .filter(|l| {
            !l.to_ascii_lowercase().starts_with("message-id:")
                && !l.to_ascii_lowercase().starts_with("received:")
        })
        .collect();
    format!("{}\r\n\r\n{body}", kept.join("\r\n")).into_bytes()
}
