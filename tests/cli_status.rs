//! `imapferry status` and `imapferry retire` through the binary, on a state file written by real
//! `imapferry sync` runs between two Dovecot servers: account and folder tables with the seeded
//! counts, a partial account (deletion bound) and a pending journal entry both refuse `retire`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Dovecot, Layout, RawImap, SeedSpec, seed_account};
use imapferry::mapping::utf7_decode;
use imapferry::store::{AccountKey, SqliteStore, Store};

const PW: &str = "status-pw";

/// Runs the binary in `dir`; returns (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `imapferry sync` of one account with imapsync's options and `--state`; returns (exit code,
/// stdout, stderr).
fn sync(
    dir: &Path,
    old: &Dovecot,
    new: &Dovecot,
    user: &str,
    state: &Path,
) -> (i32, String, String) {
    let (old_port, new_port) = (old.port().to_string(), new.port().to_string());
    let state = state.to_str().unwrap();
    let args = [
        "sync",
        "--host1",
        old.host(),
        "--port1",
        &old_port,
        "--user1",
        user,
        "--password1",
        PW,
        "--host2",
        new.host(),
        "--port2",
        &new_port,
        "--user2",
        user,
        "--password2",
        PW,
        "--nofoldersizes",
        "--state",
        state,
    ];
    run(dir, &args)
}

/// A minimal proxy configuration whose [state] is `state`.
fn write_config(dir: &Path, new: &Dovecot, state: &Path) -> PathBuf {
    let path = dir.join("imapferry.toml");
    let text = format!(
        "[listen]\nimap = \"127.0.0.1:1143\"\n\
         [new]\naddress = \"{}:{}\"\nsecurity = \"none\"\n\
         [state]\npath = \"{}\"\n",
        new.host(),
        new.port(),
        state.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The cells of a table line: columns are separated by two or more spaces (names have single
/// spaces at most in this test).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// The data rows of the first table in `out` (up to a blank line), each as cells, header skipped.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .take_while(|l| !l.is_empty())
        .skip(1)
        .map(cells)
        .collect()
}

/// The account row of `user` in `imapferry status`'s output.
fn account_row(out: &str, user: &str) -> Vec<String> {
    rows(out)
        .into_iter()
        .find(|r| r[0] == user)
        .unwrap_or_else(|| panic!("no row for {user} in\n{out}"))
}

/// Parsed columns of an account row (reason left out).
#[derive(Debug, PartialEq)]
struct AccountRow<'a> {
    new_user: &'a str,
    old_login: &'a str,
    state: &'a str,
    folders: &'a str,
    old_msgs: u64,
    new_msgs: u64,
    linked: u64,
    errors: u64,
    journal: u64,
}

fn parse_account(r: &[String]) -> (AccountRow<'_>, &str, Option<&str>) {
    let n = |i: usize| -> u64 { r[i].parse().unwrap_or_else(|_| panic!("{r:?}")) };
    (
        AccountRow {
            new_user: &r[0],
            old_login: &r[1],
            state: &r[2],
            folders: &r[3],
            old_msgs: n(4),
            new_msgs: n(5),
            linked: n(6),
            errors: n(7),
            journal: n(8),
        },
        &r[9],
        r.get(10).map(String::as_str),
    )
}

#[test]
fn status_and_retire_on_real_state() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    for user in ["alice", "bob"] {
        new.add_user(user, PW);
    }
    let seeded = seed_account(&old, "alice", PW, &SeedSpec::small());
    old.add_user("bob", PW);
    let mut o = RawImap::connect(old.host(), old.port());
    o.login("bob", PW);
    for i in 0..10u64 {
        o.append("INBOX", &[], None, &common::message(100 + i, 1200));
    }

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("imapferry.db");
    let config = write_config(dir.path(), &new, &state);
    let config = config.to_str().unwrap();

    // No state file yet: exit 66 and nothing is created.
    let (code, _, err) = run(dir.path(), &["status", "--config", config]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("no state file"), "{err}");
    assert!(!state.exists());
    let (code, _, _) = run(dir.path(), &["retire", "alice", "--config", config]);
    assert_eq!(code, 66);
    assert!(!state.exists());

    assert_eq!(sync(dir.path(), &old, &new, "alice", &state).0, 0);
    assert_eq!(sync(dir.path(), &old, &new, "bob", &state).0, 0);
    // bob: 6 of 10 messages expunged on OLD is over the 10 % deletion bound: the next pass stops
    // that folder and the account stays partial.
    o.select("INBOX");
    o.exec("STORE 1:6 +FLAGS.SILENT (\\Deleted)");
    o.exec("EXPUNGE");
    assert_ne!(sync(dir.path(), &old, &new, "bob", &state).0, 0);

    // Every account.
    let (code, out, err) = run(dir.path(), &["status", "--config", config]);
    assert_eq!(code, 0, "{err}");
    let folders = seeded.counts.len();
    let m = seeded.messages as u64;
    let alice_row = account_row(&out, "alice");
    let (alice, last, reason) = parse_account(&alice_row);
    assert_eq!(
        alice,
        AccountRow {
            new_user: "alice",
            old_login: "alice@127.0.0.1",
            state: "synced",
            folders: &format!("{folders}/{folders}"),
            old_msgs: m,
            new_msgs: m,
            linked: m,
            errors: 0,
            journal: 0,
        },
        "\n{out}"
    );
    // Nothing but the proxy records activity.
    assert_eq!((last, reason), ("never", None), "\n{out}");
    let bob_row = account_row(&out, "bob");
    let (bob, _, reason) = parse_account(&bob_row);
    let (synced, total) = bob.folders.split_once('/').unwrap();
    assert_eq!(bob.state, "partial", "\n{out}");
    assert!(synced < total, "INBOX stopped:\n{out}");
    assert!(
        reason.is_some_and(|r| r.contains("stopping this folder")),
        "\n{out}"
    );
    let (alice_at, bob_at) = (out.find("\nalice ").unwrap(), out.find("\nbob ").unwrap());
    assert!(alice_at < bob_at, "ordered by NEW user:\n{out}");

    // One account's folders: every seeded folder, fully linked.
    let (code, out, err) = run(dir.path(), &["status", "alice", "--config", config]);
    assert_eq!(code, 0, "{err}");
    let mut tables = out.split("\n\n");
    let account_part = tables.next().unwrap();
    assert_eq!(account_row(account_part, "alice"), alice_row);
    let folder_part = tables.next().unwrap();
    let got: BTreeMap<String, Vec<String>> = rows(folder_part)
        .into_iter()
        .map(|r| (r[0].clone(), r))
        .collect();
    let expected: BTreeMap<String, Vec<String>> = seeded
        .counts
        .iter()
        .map(|(name, n)| {
            let shown = utf7_decode(name).unwrap();
            let row = [&shown, &shown, "synced"]
                .into_iter()
                .map(|s| s.to_string())
                .chain([n, n, n].map(|n| n.to_string()))
                .chain(["0", "0"].map(String::from))
                .collect();
            (shown, row)
        })
        .collect();
    assert_eq!(got, expected, "\n{out}");
    assert!(out.contains("Entwürfe"), "decoded names:\n{out}");

    // Unknown user.
    let (code, out, err) = run(dir.path(), &["status", "nobody", "--config", config]);
    assert_eq!((code, out.as_str()), (66, ""));
    assert!(err.contains("no account 'nobody'"), "{err}");

    // A partial account is not retired without --force.
    let (code, _, err) = run(dir.path(), &["retire", "bob", "--config", config]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("partial") && err.contains("--force"), "{err}");

    // A pending journal entry (written as the proxy writes it) blocks retire too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = AccountKey {
        old_host: old.host().into(),
        old_user: "alice".into(),
        new_host: new.host().into(),
        new_user: "alice".into(),
    };
    let (store, account, entry) = rt.block_on(async {
        let store = SqliteStore::open(&state).await.unwrap();
        let account = store.find_account(&key).await.unwrap().unwrap();
        let entry = store
            .journal_append(account, "store", "INBOX 1 +FLAGS (\\Seen)")
            .await
            .unwrap();
        store.touch_account(account).await.unwrap();
        (store, account, entry)
    });
    let (code, out, _) = run(dir.path(), &["status", "--config", config]);
    assert_eq!(code, 0);
    let row = account_row(&out, "alice");
    let (alice, last, _) = parse_account(&row);
    assert_eq!((alice.state, alice.journal), ("synced", 1), "\n{out}");
    assert!(last.ends_with(" UTC") && last.starts_with("20"), "{last}");
    let (code, _, err) = run(dir.path(), &["retire", "alice", "--config", config]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 journal entry is not mirrored"), "{err}");

    // Drained: retire succeeds, status shows it, a second retire changes nothing.
    rt.block_on(async {
        store.journal_done(&[entry]).await.unwrap();
        assert_eq!(store.journal_pending_count(account).await.unwrap(), 0);
        store.close().await;
    });
    let (code, out, err) = run(dir.path(), &["retire", "alice", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("retired alice (OLD alice@127.0.0.1)"),
        "{out}"
    );
    let (_, out, _) = run(dir.path(), &["status", "--config", config]);
    assert_eq!(
        parse_account(&account_row(&out, "alice")).0.state,
        "retired"
    );
    let (code, out, _) = run(dir.path(), &["retire", "alice", "--config", config]);
    assert_eq!(code, 0);
    assert!(out.contains("already retired"), "{out}");

    // --force retires the partial account and says so.
    let (code, out, err) = run(
        dir.path(),
        &["retire", "bob", "--config", config, "--force"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("--force from partial"), "{out}");
    let (_, out, _) = run(dir.path(), &["status", "bob", "--config", config]);
    assert_eq!(parse_account(&account_row(&out, "bob")).0.state, "retired");
}

/// Retired is final: `retire` shrinks the account to a summary (its tombstones go, their number
/// stays in `status`), and `imapferry sync` refuses the account instead of copying back the
/// message the user deleted on NEW while OLD still has it.
#[test]
fn a_retired_account_is_a_summary_that_sync_refuses() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user("alice", PW);
    new.add_user("alice", PW);
    let mut o = RawImap::connect(old.host(), old.port());
    o.login("alice", PW);
    for i in 0..6u64 {
        o.append("INBOX", &[], None, &common::message(200 + i, 900));
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("imapferry.db");
    let config = write_config(dir.path(), &new, &state);
    let config = config.to_str().unwrap();
    assert_eq!(sync(dir.path(), &old, &new, "alice", &state).0, 0);

    // The user deletes one message on NEW; the next pass (OLD has new mail, so it looks at the
    // folder) tombstones it, and OLD keeps its copy.
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    assert_eq!(n.select("INBOX"), 6);
    n.exec("STORE 2 +FLAGS.SILENT (\\Deleted)");
    n.exec("EXPUNGE");
    o.append("INBOX", &[], None, &common::message(206, 900));
    assert_eq!(sync(dir.path(), &old, &new, "alice", &state).0, 0);
    let inbox_row = |out: &str| {
        let folders = rows(out.split("\n\n").nth(1).unwrap());
        folders.into_iter().find(|r| r[0] == "INBOX").unwrap()
    };
    let (_, out, _) = run(dir.path(), &["status", "alice", "--config", config]);
    assert_eq!(inbox_row(&out)[6], "1", "one tombstone:\n{out}");
    let tombstone_rows = || -> i64 {
        let db = rusqlite::Connection::open(&state).unwrap();
        db.query_row("SELECT COUNT(*) FROM tombstones", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!(tombstone_rows(), 1);

    let (code, _, err) = run(dir.path(), &["retire", "alice", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tombstone_rows(), 0);
    let (_, out, _) = run(dir.path(), &["status", "alice", "--config", config]);
    assert_eq!(inbox_row(&out)[6], "1", "the count stays:\n{out}");

    let (code, out, err) = sync(dir.path(), &old, &new, "alice", &state);
    assert_eq!(code, 111, "{out}{err}");
    assert!(
        out.contains("Account alice (OLD alice@127.0.0.1) is retired"),
        "{out}{err}"
    );
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    assert_eq!(n.status("INBOX").0, 6, "the deleted message stays deleted");
    assert_eq!(o.status("INBOX").0, 7);
}

#[test]
fn usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    // (args, exit code)
    let cases: [(&[&str], i32); 7] = [
        (&["status"], 64),
        (&["status", "--config"], 64),
        (&["status", "a", "b", "--config", "c.toml"], 64),
        (&["retire", "--config", "c.toml"], 64),
        (&["retire", "joe", "--config", "c.toml", "--frob"], 64),
        (&["status", "--help"], 0),
        (&["retire", "--help"], 0),
    ];
    for (args, expected) in cases {
        let (code, out, err) = run(dir.path(), args);
        assert_eq!(code, expected, "{args:?}: {err}");
        // Help shows the command's usage line; an error says what is wrong and points to it.
        if expected == 0 {
            assert!(
                out.contains(&format!("Usage: imapferry {}", args[0])),
                "{out}"
            );
        } else {
            assert!(
                err.starts_with("error: ") && err.contains("--help"),
                "{err}"
            );
        }
    }
    // A configuration that does not load: EX_CONFIG, as `imapferry proxy`.
    let (code, _, _) = run(dir.path(), &["status", "--config", "missing.toml"]);
    assert_eq!(code, 78);
}
