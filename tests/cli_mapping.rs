//! imapsync's folder options end to end through the binary against real Dovecot servers:
//! `--regextrans2` (Gmail-style renames), `--automap`, `--f1f2`, `--subfolder2`, `--folderrec`,
//! `--subfolder1` (and exit 21 when it does not exist), and a bad `--regextrans2` (exit 64).

mod common;

use std::process::Command;

use common::{Dovecot, Layout, RawImap};

const PW: &str = "map-pw";

fn sync(old: &Dovecot, new: &Dovecot, user2: &str, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .current_dir(dir.path())
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
            user2,
            "--password2",
            PW,
        ])
        .args(["--nofoldersizes"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn folders(d: &Dovecot, user: &str) -> Vec<(String, usize)> {
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login(user, PW);
    let mut out: Vec<(String, usize)> = imap
        .list()
        .into_iter()
        .map(|(_, _, name)| name)
        .map(|name| {
            let n = imap.examine(&name) as usize;
            (name, n)
        })
        .collect();
    out.sort();
    out
}

fn has(list: &[(String, usize)], name: &str, count: usize) -> bool {
    list.iter().any(|(n, c)| n == name && *c == count)
}

#[test]
fn folder_options_map_names_as_imapsync() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::DotInbox);
    old.add_user("alice", PW);
    for user in ["gmail", "auto", "sub", "rec"] {
        new.add_user(user, PW);
    }
    let mut o = RawImap::connect(old.host(), old.port());
    o.login("alice", PW);
    for (folder, n) in [
        ("[Gmail]/E-mails enviados", 2),
        ("Sent Items", 1),
        ("Deleted Items", 1),
        ("Projects/2024", 2),
        ("Projects/Old", 1),
        ("Other", 1),
    ] {
        o.create(folder);
        for i in 0..n {
            o.append(
                folder,
                &[],
                None,
                &common::message(i + folder.len() as u64 * 10, 800),
            );
        }
    }

    // Gmail renames, as in the issue: [Gmail]/E-mails enviados -> Sent.
    let (code, out) = sync(
        &old,
        &new,
        "gmail",
        &[
            "--regextrans2",
            "s,\\[Gmail\\].,,",
            "--regextrans2",
            "s,E-mails enviados,Sent,",
            "--folder",
            "[Gmail]/E-mails enviados",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        has(&folders(&new, "gmail"), "INBOX.Sent", 2),
        "{:?}",
        folders(&new, "gmail")
    );

    // --automap: "Sent Items" and "Deleted Items" land in NEW's \Sent and \Trash folders;
    // --f1f2 overrides everything for "Other".
    let (code, out) = sync(
        &old,
        &new,
        "auto",
        &[
            "--automap",
            "--f1f2",
            "Other=INBOX.Elsewhere",
            "--folder",
            "Sent Items",
            "--folder",
            "Deleted Items",
            "--folder",
            "Other",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let f = folders(&new, "auto");
    assert!(
        has(&f, "INBOX.Sent", 1) && has(&f, "INBOX.Trash", 1) && has(&f, "INBOX.Elsewhere", 1),
        "{f:?}"
    );

    // --subfolder2: everything under one NEW folder.
    let (code, out) = sync(
        &old,
        &new,
        "sub",
        &[
            "--subfolder2",
            "FromOld",
            "--folder",
            "INBOX",
            "--folder",
            "Other",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let f = folders(&new, "sub");
    assert!(f.iter().any(|(n, _)| n == "INBOX.FromOld.Other"), "{f:?}");

    // --folderrec Projects: the folder and its children, nothing else.
    let (code, out) = sync(&old, &new, "rec", &["--folderrec", "Projects"]);
    assert_eq!(code, 0, "{out}");
    let f = folders(&new, "rec");
    assert!(
        has(&f, "INBOX.Projects.2024", 2) && has(&f, "INBOX.Projects.Old", 1),
        "{f:?}"
    );
    assert!(!f.iter().any(|(n, _)| n.contains("Other")), "{f:?}");

    // --subfolder1 naming a folder OLD does not have: imapsync's exit 21.
    let (code, out) = sync(&old, &new, "rec", &["--subfolder1", "NoSuchFolder"]);
    assert_eq!(code, 21, "{out}");

    // A --regextrans2 that cannot compile: usage error before anything runs.
    let (code, _) = sync(&old, &new, "rec", &["--regextrans2", "s/a/b/e"]);
    assert_eq!(code, 64);
}
