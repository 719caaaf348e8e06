//! Exercises the Courier-IMAP harness (tests/common/courier.rs): real logins through imaplogin and
//! a private authdaemond, Maildir++ naming, APPEND round trips, restart and kill, and a seeded
//! account; and pins down the Courier behaviours a migration from it has to cope with.

mod common;

use std::collections::BTreeSet;

use common::seed::parse_imap_date;
use common::*;

const MSG: &[u8] = b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n\
Subject: round trip\r\nMessage-Id: <rt-1@example.org>\r\nDate: Thu, 05 Mar 2015 10:00:00 +0100\r\n\
\r\nHello Courier.\r\n";

fn login(c: &Courier, user: &str, pw: &str) -> RawImap {
    let mut imap = RawImap::connect(c.host(), c.port());
    imap.login(user, pw);
    imap
}

/// Tagged lines of other tags that `RawImap::collect` filed among the untagged ones.
fn stray_tagged(untagged: &[String], tag: &str) -> Vec<String> {
    untagged
        .iter()
        .filter(|l| l.starts_with(&format!("{tag} ")))
        .cloned()
        .collect()
}

#[test]
fn logins_names_and_append_round_trip() {
    let c = Courier::start();
    c.add_user("alice", "alicepw");

    // LOGIN; a wrong password is refused (imaplogin sleeps a fixed 5 s first) and the same
    // connection may try again.
    let mut imap = RawImap::connect(c.host(), c.port());
    assert!(
        imap.greeting.contains("Courier-IMAP ready"),
        "{}",
        imap.greeting
    );
    let (_, tagged) = imap.raw("LOGIN alice wrong");
    assert_eq!(tagged, "NO Login failed.");
    let (_, tagged) = imap.raw("LOGIN alice alicepw");
    assert_eq!(tagged, "OK LOGIN Ok.");

    // What Courier advertises, before and after login alike:
    //   IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA
    //   IDLE ACL ACL2=UNION ENABLE UTF8=ACCEPT
    // UIDPLUS yes; no MOVE, CONDSTORE, QRESYNC, LITERAL+, MULTIAPPEND, SASL-IR, SPECIAL-USE,
    // LIST-EXTENDED, UNSELECT, and no AUTH=PLAIN (Courier offers it only after STARTTLS).
    let want = "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT \
                QUOTA IDLE ACL ACL2=UNION ENABLE UTF8=ACCEPT";
    assert_eq!(imap.capabilities().join(" "), want);
    assert!(imap.greeting.contains(&format!("[CAPABILITY {want}]")));
    let (_, tagged) = imap.raw("UNSELECT");
    assert!(tagged.starts_with("NO"), "UNSELECT: {tagged}");

    // A second user, added while the server runs and alice is logged in, can log in at once,
    // also with AUTHENTICATE PLAIN (initial response; works though AUTH=PLAIN is not advertised).
    c.add_user("bob", "bobpw");
    let mut bob = RawImap::connect(c.host(), c.port());
    let (_, tagged) = bob.raw("AUTHENTICATE PLAIN AGJvYgBib2Jwdw=="); // "\0bob\0bobpw"
    assert_eq!(tagged, "OK LOGIN Ok.");

    // Maildir++ naming: personal namespace "INBOX." with "." (plus Courier's shared ones).
    let (untagged, _) = imap.raw("NAMESPACE");
    assert_eq!(
        untagged,
        [r##"* NAMESPACE (("INBOX." ".")) NIL (("#shared." ".")("shared." "."))"##]
    );
    assert_eq!((c.sep(), c.prefix()), ('.', "INBOX."));
    assert_eq!(c.mailbox_name("Work/2024"), "INBOX.Work.2024");

    // CREATE, SUBSCRIBE, LIST, LSUB.
    imap.create(&c.mailbox_name("Work"));
    imap.create(&c.mailbox_name("Work/2024"));
    imap.subscribe("INBOX");
    imap.subscribe(&c.mailbox_name("Work/2024"));
    let list: BTreeSet<(Option<char>, String)> =
        imap.list().into_iter().map(|(_, d, n)| (d, n)).collect();
    let names = ["INBOX", "INBOX.Work", "INBOX.Work.2024"];
    assert_eq!(list, names.map(|n| (Some('.'), n.to_string())).into());
    // LSUB "*" also lists the unsubscribed parent INBOX.Work, marked `\Noselect` (Dovecot does
    // so only for "%"): a subscription list copied by name would subscribe it on NEW.
    let lsub: BTreeSet<(String, bool)> = imap
        .lsub()
        .into_iter()
        .map(|(attrs, _, n)| (n, attrs.iter().any(|a| a == "\\Noselect")))
        .collect();
    let want = [
        ("INBOX", false),
        ("INBOX.Work", true),
        ("INBOX.Work.2024", false),
    ];
    assert_eq!(lsub, want.map(|(n, b)| (n.to_string(), b)).into());
    // Each user has their own Maildir.
    assert_eq!(bob.list().len(), 1, "bob sees only his INBOX");
    assert!(c.maildir("alice").join(".Work.2024/cur").is_dir());

    // APPEND with flags, keywords and an INTERNALDATE; UID FETCH gives back the same bytes,
    // flags and date (Courier answers dates in its own zone, hence the comparison in UTC).
    let date = "05-Mar-2015 10:00:00 +0100";
    let flags = ["\\Seen", "\\Flagged", "$Label1", "NonJunk"];
    let uid = imap.append("INBOX.Work", &flags, Some(date), MSG);
    assert_eq!(uid, Some(1), "APPENDUID");
    let msgs = imap.uid_fetch_all("INBOX.Work");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, MSG);
    assert_eq!(msgs[0].flags, flags.map(String::from).into());
    assert_eq!(
        parse_imap_date(&msgs[0].internaldate),
        parse_imap_date(date)
    );
    bob.logout();
    imap.logout();
}

#[test]
fn courier_behaviours_a_migration_must_cope_with() {
    let c = Courier::start();
    c.add_user("alice", "alicepw");

    // Commands pipelined behind a successful LOGIN are lost: imaplogin has read them when it execs
    // imapd. Here "x1 NOOP" goes out in the same write as the LOGIN and is never answered.
    let mut imap = RawImap::connect(c.host(), c.port());
    let (_, tagged) = imap.raw("LOGIN alice alicepw\r\nx1 NOOP");
    assert_eq!(tagged, "OK LOGIN Ok.");
    let (untagged, tagged) = imap.raw("NOOP");
    assert!(tagged.starts_with("OK"), "{tagged}");
    assert_eq!(stray_tagged(&untagged, "x1"), Vec::<String>::new());

    // APPEND to the mailbox this connection has EXAMINEd is refused before the literal is sent
    // (no "+" continuation):  `NO Current box is selected READ-ONLY.`
    imap.create("INBOX.Archive");
    imap.examine("INBOX.Archive");
    let refused = imap.try_append("INBOX.Archive", &["\\Seen"], None, MSG);
    assert_eq!(
        refused,
        Err("NO Current box is selected READ-ONLY.".to_string())
    );
    // Other mailboxes still take APPENDs, and so does this one once SELECTed (or after CLOSE).
    assert_eq!(imap.try_append("INBOX", &[], None, MSG), Ok(Some(1)));
    imap.select("INBOX.Archive");
    assert_eq!(
        imap.try_append("INBOX.Archive", &[], None, MSG),
        Ok(Some(1))
    );
    imap.examine("INBOX.Archive");
    imap.exec("CLOSE");
    assert_eq!(
        imap.try_append("INBOX.Archive", &[], None, MSG),
        Ok(Some(2))
    );

    // INTERNALDATEs after 2038-01-19 are kept (64-bit time_t; the date is the file's mtime), and
    // so is one second after the epoch; the epoch itself (0) silently becomes the arrival time.
    imap.create("INBOX.Dates");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let before = now();
    for date in [
        "19-Jan-2038 03:14:08 +0000",
        "01-Jan-2040 00:00:00 +0000",
        "01-Jan-1970 00:00:01 +0000",
        "01-Jan-1970 00:00:00 +0000",
    ] {
        imap.append("INBOX.Dates", &[], Some(date), MSG);
    }
    let after = now();
    let dates: Vec<i64> = imap
        .uid_fetch_all("INBOX.Dates")
        .iter()
        .map(|m| parse_imap_date(&m.internaldate))
        .collect();
    assert_eq!(dates[..3], [2_147_483_648, 2_208_988_800, 1]);
    assert!(
        (before..=after).contains(&dates[3]),
        "epoch became {}",
        dates[3]
    );
    // Dates before 1970 are refused, also before the literal:
    //   `NO Error in IMAP command received by server.`
    // and the session goes on.
    for date in ["01-Jan-1960 00:00:00 +0000", "31-Dec-1969 23:59:59 +0000"] {
        let refused = imap.try_append("INBOX", &[], Some(date), MSG);
        assert_eq!(
            refused,
            Err("NO Error in IMAP command received by server.".to_string()),
            "{date}"
        );
    }
    let (_, tagged) = imap.raw("NOOP");
    assert!(tagged.starts_with("OK"), "{tagged}");
    assert_eq!(imap.status("INBOX.Dates").0, 4);
    imap.logout();
}

#[test]
fn seeded_account_reads_back_like_dovecot_dot_inbox() {
    let courier = Courier::start();
    let dovecot = Dovecot::start(Layout::DotInbox);
    let spec = SeedSpec::small();
    let summary = seed_account(&courier, "carol", "carolpw", &spec);
    let snap = snapshot(&courier, "carol", "carolpw");
    let counts: Vec<(&String, usize)> = snap.folders.iter().map(|(k, v)| (k, v.len())).collect();
    let expected: Vec<(&String, usize)> = summary.counts.iter().map(|(k, v)| (k, *v)).collect();
    assert_eq!(counts, expected, "folders and message counts");
    assert_eq!(snap.subscribed, summary.subscribed, "subscriptions");
    for keyword in seed::KEYWORDS {
        assert!(snap.with_flag(keyword) > 0, "keyword {keyword} missing");
    }
    assert!(snap.with_flag("\\Deleted") >= 2);

    // The same seed on Dovecot with Courier's naming holds the same mail: Courier is ready to be
    // an OLD server in migration tests.
    seed_account(&dovecot, "carol", "carolpw", &spec);
    assert_same_mail(&snap, &snapshot(&dovecot, "carol", "carolpw"));
}

#[test]
fn restart_keeps_mail_and_kill_all_cuts_clients() {
    let mut c = Courier::start();
    c.add_user("alice", "alicepw");
    let mut imap = login(&c, "alice", "alicepw");
    imap.append("INBOX", &["\\Seen"], None, MSG);
    imap.logout();

    c.restart();
    let mut imap = login(&c, "alice", "alicepw");
    assert_eq!(imap.status("INBOX").0, 1, "mail survives a restart");

    // kill_all: the open session dies with the server and the port is closed.
    c.kill_all();
    assert!(!c.is_running());
    let (untagged, tagged) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| imap.raw("NOOP")))
            .map_or((vec![], "connection lost".to_string()), |r| r);
    assert!(!tagged.starts_with("OK"), "{untagged:?} {tagged}");
    assert!(std::net::TcpStream::connect((c.host(), c.port())).is_err());

    c.restart();
    let mut imap = login(&c, "alice", "alicepw");
    assert_eq!(imap.status("INBOX").0, 1);
    imap.logout();
    c.stop();
    assert!(!c.is_running());
}
