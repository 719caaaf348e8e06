//! Exercises the shared test harness (tests/common) itself: every Dovecot layout starts, seeds and
//! reads back; capabilities and namespaces are what tests rely on; TLS, quota, restart and kill work.

mod common;

use std::process::{Command, Stdio};

use common::seed::{ARCHIV_RU, ENTWUERFE, FAMILY, KEYWORDS, NIHONGO};
use common::*;

const USER: &str = "alice";
const PW: &str = "alicepw";

/// Seeds `d` and checks the snapshot against what the seed reports.
fn seed_and_check(d: &Dovecot, spec: &SeedSpec) -> Snapshot {
    let summary = seed_account(d, USER, PW, spec);
    let snap = snapshot(d, USER, PW);
    let counts: Vec<(&String, usize)> = snap.folders.iter().map(|(k, v)| (k, v.len())).collect();
    let expected: Vec<(&String, usize)> = summary.counts.iter().map(|(k, v)| (k, *v)).collect();
    assert_eq!(counts, expected, "folders and message counts");
    assert_eq!(snap.subscribed, summary.subscribed, "subscriptions");
    assert_eq!(snap.total(), summary.messages);

    for keyword in KEYWORDS {
        assert!(snap.with_flag(keyword) > 0, "keyword {keyword} missing");
    }
    assert!(
        snap.with_flag("\\Deleted") >= 2,
        "\\Deleted messages must survive (not expunged)"
    );
    assert!(snap.with_flag("\\Draft") >= 2);
    for folder in [
        ENTWUERFE,
        ARCHIV_RU,
        NIHONGO,
        FAMILY,
        "Projects/2024/Q1",
        "Empty",
    ] {
        assert!(snap.folders.contains_key(folder), "folder {folder} missing");
    }
    assert_eq!(snap.count("Empty"), 0);
    assert!(snap.subscribed.contains(ENTWUERFE) && !snap.subscribed.contains(NIHONGO));

    let inbox = &snap.folders["INBOX"];
    assert!(
        inbox.windows(2).any(|w| w[0] == w[1]),
        "byte-identical duplicate missing"
    );
    assert!(
        inbox.iter().any(|m| m.size >= spec.big_attachment),
        "big attachment missing"
    );
    let years: std::collections::BTreeSet<String> = inbox
        .iter()
        .map(|m| seed::imap_date(m.internaldate, 0)[7..11].to_string())
        .collect();
    assert!(
        years.len() >= 4,
        "INTERNALDATEs should spread over years: {years:?}"
    );
    snap
}

fn assert_caps(caps: &[String], want: &[&str], absent: &[&str]) {
    for c in want {
        assert!(
            caps.iter().any(|x| x.eq_ignore_ascii_case(c)),
            "{c} missing from {caps:?}"
        );
    }
    for c in absent {
        assert!(
            !caps.iter().any(|x| x.eq_ignore_ascii_case(c)),
            "{c} must not be advertised: {caps:?}"
        );
    }
}

#[test]
fn slash_and_dot_inbox_hold_the_same_mail() {
    let slash = Dovecot::start(Layout::Slash);
    let dot = Dovecot::start(Layout::DotInbox);
    let a = seed_and_check(&slash, &SeedSpec::small());
    let b = seed_and_check(&dot, &SeedSpec::small());
    assert_same_mail(&a, &b);

    // Server-side names follow each layout.
    let mut imap = RawImap::connect(dot.host(), dot.port());
    imap.login(USER, PW);
    let names: Vec<String> = imap.list().into_iter().map(|(_, _, n)| n).collect();
    assert!(
        names.contains(&"INBOX.Projects.2024.Q1".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&format!("INBOX.{ENTWUERFE}")), "{names:?}");
    let (untagged, tagged) = imap.raw("NAMESPACE");
    assert!(tagged.starts_with("OK"));
    assert!(
        untagged
            .iter()
            .any(|l| l.starts_with(r#"* NAMESPACE (("INBOX." ".")) "#)),
        "{untagged:?}"
    );

    // The full server offers what Reduced hides.
    let mut imap = RawImap::connect(slash.host(), slash.port());
    imap.login(USER, PW);
    let caps = imap.capabilities();
    assert_caps(
        &caps,
        &[
            "UIDPLUS",
            "CONDSTORE",
            "QRESYNC",
            "MOVE",
            "LITERAL+",
            "MULTIAPPEND",
        ],
        &[],
    );

    // A flag change on one side shows up as a readable diff.
    let inbox = imap.uid_fetch_all("INBOX");
    let target = inbox
        .iter()
        .find(|m| !m.flags.contains("\\Flagged"))
        .unwrap();
    imap.uid_store("INBOX", target.uid, "+FLAGS", &["\\Flagged"]);
    let sent_uid = imap.uid_fetch_all("Sent")[0].uid;
    imap.uid_expunge("Sent", sent_uid);
    let changed = snapshot(&slash, USER, PW);
    let report =
        std::panic::catch_unwind(|| assert_same_mail(&changed, &b)).expect_err("must differ");
    let report = report.downcast_ref::<String>().unwrap();
    assert!(
        report.contains("folder \"INBOX\"") && report.contains("flags left"),
        "{report}"
    );
    assert!(
        report.contains("folder \"Sent\"") && report.contains("only in right"),
        "{report}"
    );
}

/// A session killed mid-sync leaves its maildir's `dovecot-uidlist.lock`, empty if it had not
/// written its PID yet; Dovecot would then make every session of that folder wait 2 minutes
/// after the restart. `kill_all` removes what the killed processes left.
#[test]
fn a_restart_after_kill_all_is_not_held_by_a_killed_sessions_lock() {
    let mut d = Dovecot::start(Layout::Slash);
    d.add_user(USER, PW);
    let mut c = RawImap::connect(d.host(), d.port());
    c.login(USER, PW);
    c.append("INBOX", &[], None, &message(1, 500));
    c.logout_and_wait();
    let lock = d
        .dir()
        .join("home")
        .join(USER)
        .join("Maildir/dovecot-uidlist.lock");
    std::fs::write(&lock, "").expect("write the lock a killed session leaves");
    d.kill_all();
    d.restart();
    let mut c = RawImap::connect(d.host(), d.port());
    c.login(USER, PW);
    // Well short of Dovecot's 2 minutes, well above its usual few milliseconds.
    c.set_read_timeout(std::time::Duration::from_secs(20));
    assert_eq!(c.examine("INBOX"), 1);
}

#[test]
fn reduced_layout_hides_extensions() {
    let d = Dovecot::start(Layout::Reduced);
    let snap = seed_and_check(
        &d,
        &SeedSpec {
            dotted_names: true,
            ..SeedSpec::small()
        },
    );
    assert!(snap.folders.contains_key("v1.2 release"));
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login(USER, PW);
    assert_caps(
        &imap.capabilities(),
        &["IMAP4rev1", "SPECIAL-USE", "NAMESPACE", "IDLE"],
        &[
            "UIDPLUS",
            "CONDSTORE",
            "QRESYNC",
            "MOVE",
            "LITERAL+",
            "MULTIAPPEND",
        ],
    );
}

#[test]
fn seeding_helpers_are_deterministic() {
    assert_eq!(mutf7("Entwürfe"), ENTWUERFE);
    assert_eq!(mutf7("Архив"), ARCHIV_RU);
    assert_eq!(mutf7("日本語"), NIHONGO);
    assert_eq!(mutf7("Family & Friends"), FAMILY);
    assert_eq!(message(7, 5000), message(7, 5000));
    let big = message(8, 200_000);
    assert!(
        big.len() > 150_000 && big.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'),
        "CRLF only"
    );
    assert_eq!(
        seed::parse_imap_date("05-Mar-2015 10:00:00 +0100"),
        1_425_546_000
    );
    assert_eq!(
        seed::imap_date(1_425_546_000, 60),
        "05-Mar-2015 10:00:00 +0100"
    );
    let mut rng = seed::Rng::new(3);
    let sizes: Vec<usize> = (0..1000)
        .map(|_| lognormal_size(&mut rng, 8000, 1.0, 10_000_000))
        .collect();
    let median = {
        let mut s = sizes.clone();
        s.sort();
        s[500]
    };
    assert!((5000..13000).contains(&median), "median {median}");
}

/// Runs `openssl s_client` and returns its stdout + stderr.
fn s_client(args: &[&str]) -> String {
    let ca = ca_pem();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-CAfile",
            ca.to_str().unwrap(),
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ])
        .args(["-ign_eof", "-crlf"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a LOGOUT\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn tls_listeners_use_the_dev_certificate() {
    let d = Dovecot::start_with(DovecotOptions {
        layout: Layout::DotInbox,
        tls: true,
        ..Default::default()
    });
    let imaps = format!("127.0.0.1:{}", d.imaps_port().expect("imaps port"));
    let out = s_client(&["-connect", &imaps]);
    assert!(
        out.contains("* OK") && out.contains("Verify return code: 0 (ok)"),
        "{out}"
    );
    let plain = format!("127.0.0.1:{}", d.port());
    let out = s_client(&["-connect", &plain, "-starttls", "imap"]);
    assert!(
        out.contains("Verify return code: 0 (ok)") && out.contains("a OK"),
        "{out}"
    );
    // Plain LOGIN stays allowed on the non-TLS port.
    seed_and_check(
        &d,
        &SeedSpec {
            folder_messages: 1,
            inbox_messages: 2,
            ..SeedSpec::small()
        },
    );
}

#[test]
fn quota_restart_and_kill() {
    let mut d = Dovecot::start_with(DovecotOptions {
        quota_kb: Some(100),
        ..Default::default()
    });
    d.add_user("bob", "bobpw");
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login("bob", "bobpw");
    let uid = imap.append(
        "INBOX",
        &["\\Seen"],
        Some("01-Feb-2020 12:00:00 +0000"),
        &message(1, 60_000),
    );
    assert_eq!(uid, Some(1));
    let err = imap
        .try_append("INBOX", &[], None, &message(2, 60_000))
        .expect_err("over quota");
    assert!(err.contains("OVERQUOTA"), "{err}");
    imap.logout();

    d.kill();
    assert!(
        std::net::TcpStream::connect((d.host(), d.port())).is_err(),
        "killed server still accepts"
    );
    d.restart();
    d.add_user("carol", "carolpw"); // passwd-file is re-read without a restart
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login("carol", "carolpw");
    imap.logout();
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login("bob", "bobpw");
    let (messages, uidnext, _) = imap.status("INBOX");
    assert_eq!((messages, uidnext), (1, 2));
    let (_, tagged) = imap.raw("GETQUOTAROOT INBOX");
    assert!(tagged.starts_with("OK"), "{tagged}");
    imap.logout();
    d.stop();
    assert!(!d.is_running());
}

/// Users added while the server runs can log in at once, however quickly they follow each other.
#[test]
fn users_added_in_quick_succession_can_log_in() {
    let d = Dovecot::start(Layout::Slash);
    for i in 0..4 {
        let user = format!("quick{i}");
        d.add_user(&user, "pw");
        let mut imap = RawImap::connect(d.host(), d.port());
        imap.login(&user, "pw");
    }
}

/// A snapshot reads each folder with `UID FETCH`; another session changing a flag meanwhile
/// makes the server announce it with a FETCH of its own (only UID and FLAGS), which is not a
/// message (a snapshot of the fault test once took it for one with no INTERNALDATE and
/// panicked).
#[test]
fn a_fetch_of_messages_ignores_another_sessions_flag_updates() {
    let d = Dovecot::start(Layout::Slash);
    d.add_user(USER, PW);
    let mut writer = RawImap::connect(d.host(), d.port());
    writer.login(USER, PW);
    for i in 0..3 {
        writer.append("INBOX", &[], None, &message(i, 500));
    }
    let mut reader = RawImap::connect(d.host(), d.port());
    reader.login(USER, PW);
    assert_eq!(reader.examine("INBOX"), 3);
    writer.uid_store("INBOX", 2, "+FLAGS", &["\\Flagged"]);
    let msgs = reader.uid_fetch("1:*");
    let summary: Vec<(u32, bool, bool)> = msgs
        .iter()
        .map(|m| (m.uid, m.internaldate.is_empty(), m.body.is_empty()))
        .collect();
    assert_eq!(
        summary,
        [(1, false, false), (2, false, false), (3, false, false)]
    );
    assert!(msgs[1].flags.contains("\\Flagged"));
}
