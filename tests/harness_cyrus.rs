//! Exercises the Cyrus IMAP harness (tests/common/cyrus.rs): a user added while the server runs
//! logs in at once and has an INBOX, Cyrus's `INBOX.` + `.` naming, nested folders, APPEND round
//! trips with flags and INTERNALDATE, and independent instances side by side.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::seed::parse_imap_date;
use common::*;

fn message(n: u32) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n\
         Subject: round trip {n}\r\nMessage-Id: <rt-{n}@example.org>\r\n\
         Date: Thu, 05 Mar 2015 10:00:00 +0100\r\n\r\nHello Cyrus, number {n}.\r\n\
         A line with trailing space \r\n\tand a tab.\r\n"
    )
    .into_bytes()
}

#[test]
fn login_nested_folder_and_append_round_trip() {
    let started = Instant::now();
    let c = Cyrus::start();
    println!("Cyrus::start() took {:?}", started.elapsed());
    let pid = c.root_pid().expect("running");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}/stat")).exists(),
        "root pid {pid} is not a live process"
    );
    c.add_user("alice", "alice pw");

    let mut imap = RawImap::connect(c.host(), c.port());
    println!("greeting: {}", imap.greeting);
    let (_, tagged) = imap.raw("LOGIN alice wrong");
    assert!(tagged.starts_with("NO"), "wrong password: {tagged}");
    imap.login("alice", "alice pw");
    println!("CAPABILITY after login: {}", imap.capabilities().join(" "));

    // The classic Cyrus namespace: personal `INBOX.` with `.`; others' under `user.`.
    let (untagged, _) = imap.raw("NAMESPACE");
    assert_eq!(
        untagged,
        [r#"* NAMESPACE (("INBOX." ".")) (("user." ".")) (("" "."))"#]
    );
    assert_eq!((c.sep(), c.prefix()), ('.', "INBOX."));
    assert_eq!(imap.select("INBOX"), 0, "add_user created an empty INBOX");

    let folder = c.mailbox_name("Projects/2024");
    assert_eq!(folder, "INBOX.Projects.2024");
    imap.create(&folder);
    let names: BTreeSet<(Option<char>, String)> = imap
        .list()
        .into_iter()
        .map(|(_, delim, name)| (delim, name))
        .collect();
    for want in ["INBOX", "INBOX.Projects", "INBOX.Projects.2024"] {
        assert!(
            names.contains(&(Some('.'), want.to_string())),
            "{want} not listed: {names:?}"
        );
    }

    let appends: [(&[&str], &str); 3] = [
        (&["\\Seen"], "05-Mar-2015 10:00:00 +0100"),
        (
            &["\\Flagged", "\\Answered", "$Label1"],
            "31-Dec-1999 23:59:59 -0800",
        ),
        (&[], "01-Jul-2024 12:30:00 +0000"),
    ];
    let mut uids = Vec::new();
    for (n, (flags, date)) in (1..).zip(appends) {
        uids.push(imap.append(&folder, flags, Some(date), &message(n)));
    }
    assert_eq!(uids, [Some(1), Some(2), Some(3)], "APPENDUIDs");

    let msgs = imap.uid_fetch_all(&folder);
    assert_eq!(msgs.len(), 3);
    for ((n, (flags, date)), msg) in (1..).zip(appends).zip(&msgs) {
        assert_eq!(msg.uid, n);
        assert_eq!(msg.body, message(n), "body of message {n} byte for byte");
        let want: BTreeSet<String> = flags.iter().map(|f| f.to_string()).collect();
        assert_eq!(msg.flags, want, "flags of message {n}");
        assert_eq!(
            parse_imap_date(&msg.internaldate),
            parse_imap_date(date),
            "INTERNALDATE of message {n}: {} for {date}",
            msg.internaldate
        );
    }
    imap.logout();
    assert!(
        c.log().contains("alice plaintext User logged in"),
        "syslog lines reach cyrus.log:\n{}",
        c.log()
    );
}

#[test]
fn instances_are_independent_and_drop_frees_the_port() {
    let a = Cyrus::start();
    let b = Cyrus::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.add_user("carol", "on-a");
    b.add_user("carol", "on-b");

    let mut on_a = RawImap::connect(a.host(), a.port());
    let (_, tagged) = on_a.raw("LOGIN carol on-b");
    assert!(tagged.starts_with("NO"), "b's password on a: {tagged}");
    on_a.login("carol", "on-a");
    on_a.create(&a.mailbox_name("Only on A"));

    // Re-adding a user replaces the password; the mailboxes stay.
    b.add_user("carol", "new-b");
    let mut on_b = RawImap::connect(b.host(), b.port());
    let (_, tagged) = on_b.raw("LOGIN carol on-b");
    assert!(tagged.starts_with("NO"), "old password on b: {tagged}");
    on_b.login("carol", "new-b");
    let names: Vec<String> = on_b.list().into_iter().map(|(_, _, n)| n).collect();
    assert_eq!(names, ["INBOX"], "b sees nothing of a");
    on_b.logout();
    on_a.logout();

    let (host, port) = (a.host().to_string(), a.port());
    drop(a);
    assert!(
        std::net::TcpStream::connect((host.as_str(), port)).is_err(),
        "port {port} still open after drop"
    );
}
