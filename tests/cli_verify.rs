//! `imapferry verify` through the binary, against two Dovecot servers with master users and a
//! state file written by real `imapferry sync` runs: equal after a sync, exactly the damage done on
//! NEW afterwards (one message deleted, one flag changed), `--all`, `--json`, unknown users and an
//! account without credentials.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Dovecot, DovecotOptions, Layout, RawImap, SeedSpec, seed_account};

const PW: &str = "verify-pw";
const MASTER: (&str, &str) = ("admin", "adminpw");

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

/// `imapferry sync` of one account with the users' own passwords and `--state`.
fn sync(dir: &Path, old: &Dovecot, new: &Dovecot, user: &str, state: &Path) -> i32 {
    let (old_port, new_port) = (old.port().to_string(), new.port().to_string());
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
        state.to_str().unwrap(),
    ];
    let (code, out, err) = run(dir, &args);
    assert_eq!(code, 0, "sync {user}:\n{out}\n{err}");
    code
}

fn master_server() -> Dovecot {
    Dovecot::start_with(DovecotOptions {
        layout: Layout::Slash,
        master: Some((MASTER.0.into(), MASTER.1.into())),
        ..Default::default()
    })
}

/// A proxy configuration over `state`. `master`: OLD and NEW reached through their master users
/// (verify's credentials); otherwise `old.auth = "same"` (no password without the user).
fn write_config(
    dir: &Path,
    name: &str,
    old: &Dovecot,
    new: &Dovecot,
    state: &Path,
    master: bool,
) -> PathBuf {
    let secret = dir.join("master.secret");
    std::fs::write(&secret, format!("{}\n", MASTER.1)).unwrap();
    let (new_master, old_auth) = if master {
        (
            format!(
                "master_user = \"{}\"\nmaster_password_file = \"{}\"\n",
                MASTER.0,
                secret.display()
            ),
            format!(
                "auth = \"master\"\nmaster_user = \"{}\"\nmaster_password_file = \"{}\"\n",
                MASTER.0,
                secret.display()
            ),
        )
    } else {
        (String::new(), "auth = \"same\"\n".to_string())
    };
    let path = dir.join(name);
    let text = format!(
        "[listen]\nimap = \"127.0.0.1:1143\"\n\
         [new]\naddress = \"{}:{}\"\nsecurity = \"none\"\n{new_master}\
         [old]\naddress = \"{}:{}\"\nsecurity = \"none\"\n{old_auth}\
         [state]\npath = \"{}\"\n",
        new.host(),
        new.port(),
        old.host(),
        old.port(),
        state.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The cells of a table line (columns are separated by two or more spaces).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// The folder rows of `verify`'s output: (OLD folder, cells), the header left out.
fn folder_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip_while(|l| !l.starts_with("OLD folder"))
        .skip(1)
        .take_while(|l| !l.starts_with("  ") && !l.contains(": "))
        .map(cells)
        .collect()
}

#[test]
fn verify_after_sync_and_after_damage_on_new() {
    let old = master_server();
    let new = master_server();
    let seeded = seed_account(&old, "alice", PW, &SeedSpec::small());
    old.add_user("bob", PW);
    {
        let mut o = RawImap::connect(old.host(), old.port());
        o.login("bob", PW);
        for i in 0..5u64 {
            o.append("INBOX", &["\\Seen"], None, &common::message(500 + i, 900));
        }
        o.logout();
    }
    for user in ["alice", "bob"] {
        new.add_user(user, PW);
    }

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("imapferry.db");
    let config = write_config(dir.path(), "master.toml", &old, &new, &state, true);
    let config = config.to_str().unwrap();

    // No state file: 66, and none is created.
    let (code, _, err) = run(dir.path(), &["verify", "alice", "--config", config]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("no state file"), "{err}");
    assert!(!state.exists());

    sync(dir.path(), &old, &new, "alice", &state);
    sync(dir.path(), &old, &new, "bob", &state);

    // Right after the sync: every folder equal, exit 0.
    let (code, out, err) = run(dir.path(), &["verify", "alice", "--config", config]);
    assert_eq!(code, 0, "{out}\n{err}");
    let rows = folder_rows(&out);
    assert_eq!(rows.len(), seeded.counts.len(), "{out}");
    for row in &rows {
        assert_eq!(row.last().map(String::as_str), Some("equal"), "{out}");
        assert_eq!(row[2], row[3], "message counts: {out}");
        assert_eq!(row[4], row[5], "bytes: {out}");
    }
    assert!(!out.contains("DIFFERENT"), "{out}");
    let total: usize = rows.iter().map(|r| r[2].parse::<usize>().unwrap()).sum();
    assert_eq!(total, seeded.messages, "{out}");
    assert!(out.contains("Entwürfe"), "decoded names:\n{out}");
    let summary = out.lines().last().unwrap();
    assert!(
        summary.starts_with("alice (OLD alice@127.0.0.1, synced): equal: "),
        "{out}"
    );
    assert!(
        summary.contains(&format!("{0}/{0} messages", seeded.messages)),
        "{summary}"
    );
    for secret in [PW, MASTER.1] {
        assert!(!out.contains(secret) && !err.contains(secret), "leaked");
    }

    // --all over both accounts.
    let (code, out, err) = run(dir.path(), &["verify", "--all", "--config", config]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("bob (OLD bob@127.0.0.1, synced): equal: "),
        "{out}"
    );
    assert!(
        out.ends_with("verified 2 accounts: 2 equal, 0 different, 0 could not be verified\n"),
        "{out}"
    );

    // --json: one object per account, numbers as counted on the servers.
    let (code, out, err) = run(
        dir.path(),
        &["verify", "--all", "--json", "--config", config],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 2, "{out}");
    let alice = objects.iter().find(|o| o["new_user"] == "alice").unwrap();
    assert_eq!(alice["result"], "equal");
    assert_eq!(alice["messages_old"], seeded.messages as u64);
    assert_eq!(alice["messages_new"], seeded.messages as u64);
    assert_eq!(alice["missing"], 0);
    assert_eq!(alice["folders_total"], seeded.counts.len());
    assert_eq!(
        alice["folders"].as_array().unwrap().len(),
        seeded.counts.len()
    );
    let bob = objects.iter().find(|o| o["new_user"] == "bob").unwrap();
    assert_eq!(
        (bob["result"].clone(), bob["messages_new"].clone()),
        ("equal".into(), 5.into())
    );

    // Damage on NEW, directly: one message of Projects deleted, another one's \Flagged toggled.
    let projects = new.mailbox_name("Projects");
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    let msgs = n.uid_fetch_all(&projects);
    assert_eq!(msgs.len(), 3);
    let (first, last) = (&msgs[0], &msgs[2]);
    let op = if first.flags.contains("\\Flagged") {
        "-FLAGS"
    } else {
        "+FLAGS"
    };
    n.uid_store(&projects, first.uid, op, &["\\Flagged"]);
    n.uid_expunge(&projects, last.uid);
    n.logout();

    let (code, out, err) = run(dir.path(), &["verify", "alice", "--config", config]);
    assert_eq!(code, 1, "{out}\n{err}");
    let rows = folder_rows(&out);
    let different: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r.last().map(String::as_str) != Some("equal"))
        .collect();
    assert_eq!(different.len(), 1, "{out}");
    let row = different[0];
    assert_eq!(row[0], "Projects", "{out}");
    assert_eq!(row[1], "Projects", "{out}");
    // OLD msgs, NEW msgs, …, missing, extra, flags, result.
    assert_eq!((row[2].as_str(), row[3].as_str()), ("3", "2"), "{out}");
    assert_eq!(&row[6..], ["1", "0", "1", "DIFFERENT"], "{out}");
    assert!(
        out.contains("  Projects: missing on NEW: OLD UID 3\n"),
        "{out}"
    );
    assert!(
        out.contains("  Projects: flags differ: OLD UID 1 ("),
        "{out}"
    );
    let summary = out.lines().last().unwrap();
    assert!(
        summary.contains("DIFFERENT: 1 of ")
            && summary.contains("1 missing on NEW, 0 extra on NEW, 1 flag difference"),
        "{summary}"
    );
    let (code, out, _) = run(
        dir.path(),
        &["verify", "alice", "--json", "--config", config],
    );
    assert_eq!(code, 1);
    let alice: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(alice["result"], "different");
    assert_eq!(
        (alice["missing"].clone(), alice["flag_differences"].clone()),
        (1.into(), 1.into())
    );
    let folder = alice["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["old_name"] == "Projects")
        .unwrap();
    assert_eq!(folder["missing_old_uids"], serde_json::json!([3]));
    assert_eq!(folder["flags"][0]["old_uid"], 1);

    // --all: one account differs, so the run fails; bob is still equal.
    let (code, out, _) = run(dir.path(), &["verify", "--all", "--config", config]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bob (OLD bob@127.0.0.1, synced): equal: "),
        "{out}"
    );
    assert!(
        out.ends_with("verified 2 accounts: 1 equal, 1 different, 0 could not be verified\n"),
        "{out}"
    );

    // Unknown user.
    let (code, out, err) = run(dir.path(), &["verify", "nobody", "--config", config]);
    assert_eq!((code, out.as_str()), (66, ""), "{err}");
    assert!(err.contains("no account 'nobody'"), "{err}");

    // old.auth = "same": no OLD password without the user's login.
    let same = write_config(dir.path(), "same.toml", &old, &new, &state, false);
    let same = same.to_str().unwrap();
    let (code, out, err) = run(dir.path(), &["verify", "bob", "--config", same]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.starts_with("bob (OLD bob@127.0.0.1, synced): cannot verify: no OLD password"),
        "{out}"
    );
    let (code, out, _) = run(dir.path(), &["verify", "--all", "--config", same]);
    assert_eq!(code, 1);
    assert!(
        out.ends_with("verified 0 accounts: 0 equal, 0 different, 2 could not be verified\n"),
        "{out}"
    );
}

#[test]
fn usage_and_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    // (args, exit code)
    let cases: [(&[&str], i32); 7] = [
        (&["verify"], 64),
        (&["verify", "--config", "c.toml"], 64),
        (&["verify", "joe", "--all", "--config", "c.toml"], 64),
        (&["verify", "a", "b", "--config", "c.toml"], 64),
        (&["verify", "--all", "--frob", "--config", "c.toml"], 64),
        (&["verify", "--help"], 0),
        (&["verify", "--all", "--config", "missing.toml"], 78),
    ];
    for (args, expected) in cases {
        let (code, out, err) = run(dir.path(), args);
        assert_eq!(code, expected, "{args:?}: {err}");
        match expected {
            0 => assert!(out.contains("Usage: imapferry verify"), "{out}"),
            64 => assert!(
                err.starts_with("error: ") && err.contains("--help"),
                "{err}"
            ),
            _ => {}
        }
    }
    // A valid configuration without [old]: nothing to verify against.
    let path = dir.path().join("no-old.toml");
    std::fs::write(
        &path,
        "[listen]\nimap = \"127.0.0.1:1143\"\n[new]\naddress = \"127.0.0.1:1\"\n\
         security = \"none\"\n[state]\npath = \"state.db\"\n",
    )
    .unwrap();
    let (code, _, err) = run(
        dir.path(),
        &["verify", "--all", "--config", path.to_str().unwrap()],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no [old] section"), "{err}");
}
