//! `imapferry batch` against real Dovecot servers: an imapsync loop file with good accounts, a
//! wrong password and an unreachable host, run two at a time; the failures file replays exactly
//! the failed lines, and every account leaves its own imapsync-named log.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const WRONG_PW: &str = "Wrong-Pw-55hHq0";

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imapferry"))
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn old_pw(i: usize) -> String {
    format!("Old-Pw-{i}x7Q")
}

fn new_pw(i: usize) -> String {
    format!("New-Pw-{i}k2Z")
}

/// Appends `n` messages to INBOX of `user` on `d`.
fn seed_inbox(d: &Dovecot, user: &str, pw: &str, first: u64, n: u64) {
    let mut c = RawImap::connect(d.host(), d.port());
    c.login(user, pw);
    for i in first..first + n {
        c.append("INBOX", &["\\Seen"], None, &message(i, 2000));
    }
    c.logout();
}

fn batch(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(binary())
        .arg("batch")
        .args(args)
        .current_dir(cwd)
        .env_remove("IMAPSYNC_PASSWORD1")
        .env_remove("IMAPSYNC_PASSWORD2")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run imapferry batch");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The log files below `dir`, sorted, with their contents.
fn logs(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// imapsync's default log name: `YYYY_MM_DD_HH_MM_SS_mmm_<user1>_<user2>.txt`.
fn is_imapsync_log_name(name: &str, user1: &str, user2: &str) -> bool {
    let Some(rest) = name.strip_suffix(&format!("_{user1}_{user2}.txt")) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    parts.len() == 7
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
        && parts[0].len() == 4
        && parts[6].len() == 3
}

#[test]
fn batch_runs_accounts_in_parallel_and_replays_failures() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    let counts = [3u64, 2, 4, 5];
    // Every user first: the passwd-file is re-read on mtime changes, so no login in between.
    for i in 0..counts.len() {
        old.add_user(&format!("old{i}"), &old_pw(i));
        new.add_user(&format!("new{i}"), &new_pw(i));
    }
    for (i, n) in counts.iter().enumerate() {
        seed_inbox(&old, &format!("old{i}"), &old_pw(i), 100 * i as u64, *n);
    }
    let (p1, p2) = (old.port(), new.port());
    let line = |i: usize, pw1: &str, port1: u16| {
        format!(
            "{h};old{i};{pw1};{h};new{i};{pw2};--port1 {port1}  --port2 {p2};",
            h = old.host(),
            pw2 = new_pw(i)
        )
    };
    let good0 = line(0, &old_pw(0), p1);
    let wrong_pw = line(1, WRONG_PW, p1);
    let unreachable = line(2, &old_pw(2), closed_port());
    let good3 = line(3, &old_pw(3), p1);
    let file_text = format!(
        "# host1;user1;password1;host2;user2;password2;extra;\r\n{good0}\r\n\r\n{wrong_pw}\r\n{unreachable}\r\n{good3}\r\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), &file_text).unwrap();

    let (code, stdout, stderr) = batch(dir.path(), &["file.txt", "--jobs", "2", "--nofoldersizes"]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");

    // The good accounts are complete on NEW.
    for i in [0usize, 3] {
        let snap = snapshot(&new, &format!("new{i}"), &new_pw(i));
        assert_eq!(snap.count("INBOX"), counts[i] as usize, "new{i}");
    }
    for i in [1usize, 2] {
        assert_eq!(snapshot(&new, &format!("new{i}"), &new_pw(i)).total(), 0);
    }

    // Exactly the two bad lines, byte for byte (without the CR), in file order.
    let failures = std::fs::read_to_string(dir.path().join("file_failures.txt")).unwrap();
    assert_eq!(failures, format!("{wrong_pw}\n{unreachable}\n"));

    // The summary table names every account with its exit code and copied messages.
    for (i, code, name) in [
        (0, 0, "EX_OK"),
        (1, 161, "EXIT_AUTHENTICATION_FAILURE_USER1"),
        (2, 101, "EXIT_CONNECTION_FAILURE_HOST1"),
        (3, 0, "EX_OK"),
    ] {
        let row = stdout
            .lines()
            .rev()
            .find(|l| l.contains(&format!("old{i} → new{i}")))
            .unwrap_or_else(|| panic!("no row for old{i}:\n{stdout}"));
        assert!(row.contains(&format!("{code} {name}")), "{row}");
        if code == 0 {
            let n = counts[i].to_string();
            assert!(row.split_whitespace().any(|w| w == n), "{row}");
        }
    }
    for secret in [WRONG_PW, &old_pw(0), &new_pw(0)] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }

    // One imapsync-named log per account; only the wrong password says "Error login".
    let log_dir = dir.path().join("LOG_imapsync");
    let first_logs = logs(&log_dir);
    assert_eq!(first_logs.len(), 4, "{first_logs:?}");
    for i in 0..4 {
        let (u1, u2) = (format!("old{i}"), format!("new{i}"));
        assert_eq!(
            first_logs
                .iter()
                .filter(|(n, _)| is_imapsync_log_name(n, &u1, &u2))
                .count(),
            1,
            "{first_logs:?}"
        );
    }
    let grep = Command::new("grep")
        .args(["-R", "-l", "Error login", "LOG_imapsync"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let hits = String::from_utf8_lossy(&grep.stdout).into_owned();
    assert_eq!(hits.lines().count(), 1, "{hits}");
    assert!(hits.trim_end().ends_with("_old1_new1.txt"), "{hits}");

    // Feeding the failures file back fails the same two lines again.
    let (code, stdout, stderr) = batch(
        dir.path(),
        &["file_failures.txt", "--jobs", "2", "--nofoldersizes"],
    );
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let again = std::fs::read_to_string(dir.path().join("file_failures_failures.txt")).unwrap();
    assert_eq!(again, failures);
    assert_eq!(logs(&log_dir).len(), 6);
}

#[test]
fn batch_usage_and_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, _) = batch(dir.path(), &[]);
    assert_eq!(code, 64);
    let (code, _, _) = batch(dir.path(), &["missing.txt"]);
    assert_eq!(code, 66);
    std::fs::write(dir.path().join("f.txt"), "h1;u1;p1;h2;u2;p2;;\n").unwrap();
    let (code, _, stderr) = batch(dir.path(), &["f.txt", "--frobnicate"]);
    assert_eq!(code, 64, "{stderr}");

    // A line with fewer than 6 columns is reported with its number and not run.
    std::fs::write(dir.path().join("m.txt"), "# c\nh1;u1;p1;h2;u2\n").unwrap();
    let (code, stdout, stderr) = batch(dir.path(), &["m.txt", "--failures", "out.txt"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("line 2 is malformed"), "{stderr}");
    assert!(stdout.contains("0 accounts"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        ""
    );
    assert!(!dir.path().join("LOG_imapsync").exists());
}

/// imapsync's documented 6-column form (`h1;u1;p1;h2;u2;p2;`, read by every `sync_loop_unix.sh`
/// as `while IFS=';' read h1 u1 p1 h2 u2 p2 fake`), with and without the trailing `;`, CRLF, runs
/// like the 7-column form; options on the command line apply to every line.
#[test]
fn six_column_loop_file_runs() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    for i in 0..2 {
        old.add_user(&format!("old{i}"), &old_pw(i));
        new.add_user(&format!("new{i}"), &new_pw(i));
    }
    for i in 0..2 {
        seed_inbox(&old, &format!("old{i}"), &old_pw(i), 10 * i as u64, 3);
    }
    let h = old.host();
    let text = format!(
        "{h};old0;{};{h};new0;{};\r\n{h};old1;{};{h};new1;{}\r\n",
        old_pw(0),
        new_pw(0),
        old_pw(1),
        new_pw(1)
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), text).unwrap();
    let (p1, p2) = (old.port().to_string(), new.port().to_string());
    let (code, stdout, stderr) = batch(
        dir.path(),
        &[
            "file.txt",
            "--port1",
            &p1,
            "--port2",
            &p2,
            "--nofoldersizes",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("2 accounts"), "{stdout}");
    for i in 0..2 {
        let snap = snapshot(&new, &format!("new{i}"), &new_pw(i));
        assert_eq!(snap.count("INBOX"), 3, "new{i}");
    }
}

/// The runbook's greps over a batch's log directory find exactly the failing accounts: a wrong
/// password (`Error login`), an over-quota NEW (`EXIT_OVERQUOTA`) and an unreachable host (a
/// non-zero `Exiting with return value`).
#[test]
fn log_greps_find_exactly_the_failing_accounts() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    let full = Dovecot::start_with(DovecotOptions {
        quota_kb: Some(8),
        ..Default::default()
    });
    for user in ["okone", "oktwo", "badpw", "quota", "gone"] {
        old.add_user(user, "pw1");
        new.add_user(user, "pw2");
        full.add_user(user, "pw2");
        seed_inbox(&old, user, "pw1", 0, 6);
    }
    let line = |user: &str, pw1: &str, port2: u16| {
        format!(
            "127.0.0.1;{user};{pw1};127.0.0.1;{user};pw2;--port1 {} --port2 {port2};",
            old.port()
        )
    };
    let text = [
        line("okone", "pw1", new.port()),
        line("oktwo", "pw1", new.port()),
        line("badpw", "not-the-password", new.port()),
        line("quota", "pw1", full.port()),
        line("gone", "pw1", closed_port()),
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.txt"), text + "\n").unwrap();
    let (code, stdout, stderr) = batch(
        dir.path(),
        &["accounts.txt", "--jobs", "4", "--nofoldersizes"],
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");

    let grep = |args: &[&str]| -> Vec<String> {
        let out = Command::new("grep")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let owner = |path: &str| {
        ["okone", "oktwo", "badpw", "quota", "gone"]
            .into_iter()
            .find(|u| path.contains(&format!("_{u}_{u}.txt")))
            .unwrap_or("?")
            .to_string()
    };
    let owners = |lines: Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = lines.iter().map(|l| owner(l)).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(
        owners(grep(&["-R", "-l", "EXIT_OVERQUOTA", "LOG_imapsync"])),
        vec!["quota"]
    );
    assert_eq!(
        owners(grep(&["-R", "-l", "Error login", "LOG_imapsync"])),
        vec!["badpw"]
    );
    let nonzero: Vec<String> = grep(&["-R", "Exiting with return value", "LOG_imapsync"])
        .into_iter()
        .filter(|l| !l.contains("return value 0 "))
        .collect();
    assert_eq!(owners(nonzero), vec!["badpw", "gone", "quota"]);
    // A runbook's "critical errors" egrep (login, quota, connection) finds the same three.
    let critical = grep(&[
        "-R",
        "-l",
        "-E",
        "Error login|EXIT_OVERQUOTA|EXIT_CONNECTION_FAILURE",
        "LOG_imapsync",
    ]);
    assert_eq!(owners(critical), vec!["badpw", "gone", "quota"]);
    let failures = std::fs::read_to_string(dir.path().join("accounts_failures.txt")).unwrap();
    assert_eq!(failures.lines().count(), 3, "{failures}");
}
