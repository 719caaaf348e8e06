//! Command lines from an ISP's imapsync runbook, run end to end through the binary against real
//! Dovecot servers, each checked for the mailboxes it leaves behind.

mod common;

use std::process::Command;

use common::{Dovecot, Layout, RawImap};

const PW: &str = "runbook-pw";

struct Run {
    code: i32,
    stdout: String,
}

fn imapferry(
    old: &Dovecot,
    new: &Dovecot,
    user: &str,
    extra: &[&str],
    cwd: &std::path::Path,
) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .current_dir(cwd)
        .args([
            "sync",
            "--host1",
            old.host(),
            "--port1",
            &old.port().to_string(),
            "--user1",
            user,
            "--password1",
            PW,
        ])
        .args([
            "--host2",
            new.host(),
            "--port2",
            &new.port().to_string(),
            "--user2",
            user,
            "--password2",
            PW,
        ])
        .args(extra)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn login(d: &Dovecot, user: &str) -> RawImap {
    let mut i = RawImap::connect(d.host(), d.port());
    i.login(user, PW);
    i
}

fn count(d: &Dovecot, user: &str, folder: &str) -> usize {
    login(d, user).uid_fetch_all(folder).len()
}

fn names(d: &Dovecot, user: &str) -> Vec<String> {
    login(d, user)
        .list()
        .into_iter()
        .map(|(_, _, n)| n)
        .collect()
}

/// A message dated `days_ago` days back, with a Message-Id (or none).
fn mail(id: &str, days_ago: i64, with_id: bool) -> Vec<u8> {
    let date = (chrono::Local::now() - chrono::Duration::days(days_ago)).to_rfc2822();
    let id_line = if with_id {
        format!("Message-Id: <{id}@runbook>\r\n")
    } else {
        String::new()
    };
    format!("Date: {date}\r\n{id_line}Subject: {id}\r\nFrom: x@y\r\n\r\nbody of {id}\r\n")
        .into_bytes()
}

#[test]
fn runbook_command_lines() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    let users = [
        "mirror", "move", "minage", "excl", "sizes", "dups", "shared",
    ];
    for u in users {
        old.add_user(u, PW);
        new.add_user(u, PW);
    }
    for u in users {
        let mut o = login(&old, u);
        o.append("INBOX", &[], None, &mail("today", 0, true));
        o.append("INBOX", &[], None, &mail("lastyear", 400, true));
        o.append("INBOX", &[], None, &mail("noid", 400, false));
        o.create("Backups");
        o.append("Backups", &[], None, &mail("backup", 10, true));
        o.create("Spam Folder");
        o.append("Spam Folder", &[], None, &mail("spam", 10, true));
        o.create("Empty");
    }
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();

    // The strict pre-cutover mirror: --subscribeall --delete2 --delete2folders --addheader.
    let mut n = login(&new, "mirror");
    n.append("INBOX", &[], None, &mail("onlynew", 1, true));
    n.create("OnlyOnNew");
    let r = imapferry(
        &old,
        &new,
        "mirror",
        &[
            "--subscribeall",
            "--delete2",
            "--delete2folders",
            "--addheader",
        ],
        cwd,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        count(&new, "mirror", "INBOX"),
        3,
        "OLD's three, NEW's own one deleted"
    );
    assert!(!names(&new, "mirror").contains(&"OnlyOnNew".to_string()));
    let subscribed: Vec<String> = login(&new, "mirror")
        .lsub()
        .into_iter()
        .map(|(_, _, n)| n)
        .collect();
    assert!(
        subscribed.contains(&"Backups".to_string()) && subscribed.contains(&"Empty".to_string()),
        "{subscribed:?}"
    );
    let noid = login(&new, "mirror")
        .uid_fetch_all("INBOX")
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.body).contains("body of noid"))
        .unwrap();
    assert!(noid.body.starts_with(b"Message-Id: <"), "--addheader");
    // The same without deletions, again: nothing to do.
    let r = imapferry(
        &old,
        &new,
        "mirror",
        &["--subscribeall", "--addheader"],
        cwd,
    );
    assert!(
        r.stdout
            .contains("Messages transferred                    : 0"),
        "{}",
        r.stdout
    );

    // --folder INBOX --noexpungeaftereach --skipemptyfolders --maxage 1 --delete1: today's mail moves.
    let r = imapferry(
        &old,
        &new,
        "move",
        &[
            "--folder",
            "INBOX",
            "--noexpungeaftereach",
            "--skipemptyfolders",
            "--maxage",
            "1",
            "--delete1",
        ],
        cwd,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(count(&new, "move", "INBOX"), 1);
    assert_eq!(
        count(&old, "move", "INBOX"),
        2,
        "only the recent message left OLD"
    );
    assert!(
        r.stdout
            .contains("Messages deleted on host1               : 1"),
        "{}",
        r.stdout
    );

    // --minage 365 --delete1: last year's mail moves, today's stays.
    let r = imapferry(
        &old,
        &new,
        "minage",
        &["--folder", "INBOX", "--minage", "365", "--delete1"],
        cwd,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(count(&new, "minage", "INBOX"), 2);
    assert_eq!(count(&old, "minage", "INBOX"), 1);

    // The exclude list.
    let r = imapferry(
        &old,
        &new,
        "excl",
        &["--exclude", "^Backups", "--exclude", "(?i)spam"],
        cwd,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    let got = names(&new, "excl");
    assert!(
        !got.contains(&"Backups".to_string()) && !got.contains(&"Spam Folder".to_string()),
        "{got:?}"
    );
    assert_eq!(count(&new, "excl", "INBOX"), 3);

    // --justfoldersizes: the table, nothing copied.
    let r = imapferry(&old, &new, "sizes", &["--justfoldersizes"], cwd);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("Exiting because of --justfoldersizes")
            && r.stdout.contains("Host1 Nb messages:"),
        "{}",
        r.stdout
    );
    assert_eq!(count(&new, "sizes", "INBOX"), 0);

    // --useheader Message-Id --delete2duplicates removes duplicates another tool left on NEW.
    let mut n = login(&new, "dups");
    n.append("INBOX", &[], None, &mail("today", 0, true));
    n.append("INBOX", &[], None, &mail("today", 0, true));
    let r = imapferry(
        &old,
        &new,
        "dups",
        &[
            "--folder",
            "INBOX",
            "--useheader",
            "Message-Id",
            "--delete2duplicates",
        ],
        cwd,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        count(&new, "dups", "INBOX"),
        3,
        "one copy of each OLD message"
    );

    // --subfolder2 … --delete2 --delete2foldersonly /…/: everything goes under one NEW folder;
    // only folders under it that OLD does not have are deleted, the rest of NEW is left alone.
    let mut n = login(&new, "shared");
    n.create("FromOld/Obsolete");
    n.create("Personal");
    let r = imapferry(
        &old,
        &new,
        "shared",
        &[
            "--subfolder2",
            "FromOld",
            "--delete2",
            "--delete2foldersonly",
            "/^FromOld/",
        ],
        cwd,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    let got = names(&new, "shared");
    assert!(
        got.contains(&"FromOld/Backups".to_string()) && got.contains(&"FromOld/INBOX".to_string()),
        "{got:?}"
    );
    assert!(!got.contains(&"FromOld/Obsolete".to_string()), "{got:?}");
    assert!(
        got.contains(&"Personal".to_string()),
        "outside the subfolder nothing is deleted: {got:?}"
    );
    assert_eq!(count(&new, "shared", "FromOld/INBOX"), 3);

    // --delete1 with --delete2 is refused before anything runs.
    let r = imapferry(&old, &new, "dups", &["--delete1", "--delete2"], cwd);
    assert_eq!(r.code, 64);
}

/// Gives `user`'s INBOX messages on `d` (a `/` layout server) a bogus backslash "system flag", as
/// some old servers report: Dovecot refuses such flags over IMAP, so the keyword file is edited
/// and the index rebuilt, after which FETCH FLAGS shows `\X-EON-HAS-ATTACHMENT`.
fn plant_bogus_flag(d: &Dovecot, user: &str) {
    let maildir = d.dir().join("home").join(user).join("Maildir");
    let kw = maildir.join("dovecot-keywords");
    let text = std::fs::read_to_string(&kw).unwrap();
    std::fs::write(&kw, text.replace("$tobebogus", "\\X-EON-HAS-ATTACHMENT")).unwrap();
    for entry in std::fs::read_dir(&maildir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("dovecot.index")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[test]
fn bogus_flags_cost_the_flag_never_the_message() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    for u in ["plain", "filtered"] {
        old.add_user(u, PW);
        new.add_user(u, PW);
        let mut o = login(&old, u);
        o.append(
            "INBOX",
            &["$tobebogus", "\\Seen"],
            None,
            &mail("bogus", 3, true),
        );
        o.logout();
        plant_bogus_flag(&old, u);
        let flags = &login(&old, u).uid_fetch_all("INBOX")[0].flags;
        assert!(flags.contains("\\X-EON-HAS-ATTACHMENT"), "{flags:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    // imapsync loses the message unless told --filterbuggyflags (NEW answers BAD to the flag).
    // imapferry never sends a flag NEW is known to refuse: the message arrives without it, the
    // run warns and counts it, and exits 0.
    let r = imapferry(&old, &new, "plain", &["--nofoldersizes"], dir.path());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "Host2 folder INBOX cannot store flag \\X-EON-HAS-ATTACHMENT of msg INBOX/1 (not a system flag of RFC 3501): dropped"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("Flags host2 could not store (dropped)") && l.ends_with(": 1")),
        "{}",
        r.stdout
    );
    let copies = login(&new, "plain").uid_fetch_all("INBOX");
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].flags.iter().cloned().collect::<Vec<_>>(),
        vec!["\\Seen".to_string()]
    );
    // --filterbuggyflags keeps imapsync's meaning: the flag is removed before NEW sees it, quietly.
    let r = imapferry(
        &old,
        &new,
        "filtered",
        &["--nofoldersizes", "--filterbuggyflags"],
        dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(!r.stdout.contains("cannot store flag"), "{}", r.stdout);
    let copies = login(&new, "filtered").uid_fetch_all("INBOX");
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].flags.iter().cloned().collect::<Vec<_>>(),
        vec!["\\Seen".to_string()]
    );
}

/// The folder-size table's numbers for `[folder]` on host `n` (1 or 2), in the first table
/// (`first`: before the pass) or the last: (size, messages, biggest).
fn size_row(stdout: &str, n: u8, folder: &str, first: bool) -> (u64, u64, u64) {
    let prefix = format!("Host{n} folder");
    let mut rows = stdout
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!("[{folder}]")));
    let line = if first { rows.next() } else { rows.next_back() };
    let line = line.unwrap_or_else(|| panic!("no {prefix} [{folder}] row in\n{stdout}"));
    let after = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (after("Size:"), after("Messages:"), after("Biggest:"))
}

/// imapsync's folder-size tables, before and after every pass, are right after changes on either
/// side: a folder measured before is reused only while STATUS shows the same UIDVALIDITY,
/// UIDNEXT and count (the commands are in `sync::sizes`' and the engine's dialogue tests).
#[test]
fn folder_size_tables_follow_changes_on_both_sides() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user("sz", PW);
    new.add_user("sz", PW);
    let dir = tempfile::tempdir().unwrap();
    let mut o = login(&old, "sz");
    o.create("Sent");
    let inbox: Vec<Vec<u8>> = (0..3)
        .map(|i| common::message(i, 1_000 + 3_000 * i as usize))
        .collect();
    let sent: Vec<Vec<u8>> = (3..5).map(|i| common::message(i, 500)).collect();
    for m in &inbox {
        o.append("INBOX", &[], None, m);
    }
    for m in &sent {
        o.append("Sent", &[], None, m);
    }
    let totals = |msgs: &[Vec<u8>]| -> (u64, u64, u64) {
        let sizes = msgs.iter().map(|m| m.len() as u64);
        (
            sizes.clone().sum(),
            msgs.len() as u64,
            sizes.max().unwrap_or(0),
        )
    };

    let r = imapferry(&old, &new, "sz", &[], dir.path());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(size_row(&r.stdout, 1, "INBOX", true), totals(&inbox));
    assert_eq!(size_row(&r.stdout, 2, "INBOX", false), totals(&inbox));
    assert_eq!(size_row(&r.stdout, 2, "Sent", false), totals(&sent));

    // Nothing changed: the same tables.
    let r = imapferry(&old, &new, "sz", &[], dir.path());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(size_row(&r.stdout, 1, "INBOX", true), totals(&inbox));
    assert_eq!(size_row(&r.stdout, 2, "Sent", true), totals(&sent));

    // A bigger message on OLD; the user deletes one of Sent on NEW.
    let mut inbox = inbox;
    inbox.push(common::message(9, 20_000));
    o.append("INBOX", &[], None, &inbox[3]);
    let mut n = login(&new, "sz");
    n.select("Sent");
    n.exec("STORE 1 +FLAGS.SILENT (\\Deleted)");
    n.exec("EXPUNGE");
    let r = imapferry(&old, &new, "sz", &[], dir.path());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(size_row(&r.stdout, 1, "INBOX", true), totals(&inbox));
    assert_eq!(size_row(&r.stdout, 2, "INBOX", true), totals(&inbox[..3]));
    assert_eq!(size_row(&r.stdout, 2, "Sent", true), totals(&sent[1..]));
    assert_eq!(size_row(&r.stdout, 2, "INBOX", false), totals(&inbox));
    assert_eq!(size_row(&r.stdout, 1, "Sent", false), totals(&sent));
}
