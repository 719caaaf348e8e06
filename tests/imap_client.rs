//! The IMAP client against real Dovecot servers: implicit TLS and STARTTLS with certificate checks
//! (dev CA, system roots, explicit opt-out), LOGIN and AUTHENTICATE PLAIN, streaming a large body
//! both ways byte for byte, and the fallbacks on a server without UIDPLUS, MOVE, LITERAL+ and
//! MULTIAPPEND.

mod common;

use std::time::Duration;

use common::{Dovecot, DovecotOptions, Layout, RawImap, ca_pem};
use imapferry::imap::{
    AppendMsg, Body, Client, ConnectOptions, ImapError, Security, Side, TlsOptions,
};
use imapferry::secret::Secret;

const PW: &str = "client-pw";

fn opts(port: u16, security: Security, tls: TlsOptions) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".into(),
        port,
        security,
        tls,
        timeout: Duration::from_secs(20),
    }
}

fn dev_ca() -> TlsOptions {
    TlsOptions {
        verify: true,
        ca_file: Some(ca_pem()),
    }
}

#[tokio::test]
async fn tls_modes_and_certificate_checks() {
    let d = Dovecot::start_with(DovecotOptions {
        tls: true,
        ..DovecotOptions::default()
    });
    d.add_user("alice", PW);
    let imaps = d.imaps_port().unwrap();

    let mut c = Client::connect(&opts(imaps, Security::Tls, dev_ca()), Side::Old)
        .await
        .expect("implicit TLS with the dev CA");
    c.login("alice", &Secret::new(PW)).await.unwrap();
    let mut c = Client::connect(&opts(d.port(), Security::StartTls, dev_ca()), Side::New)
        .await
        .expect("STARTTLS with the dev CA");
    assert!(
        !c.has("STARTTLS"),
        "capabilities are re-read after STARTTLS"
    );
    c.authenticate_plain(None, "alice", &Secret::new(PW))
        .await
        .expect("AUTHENTICATE PLAIN");

    // The system roots do not know the dev CA: verification fails unless switched off explicitly.
    let err = Client::connect(
        &opts(imaps, Security::Tls, TlsOptions::default()),
        Side::Old,
    )
    .await
    .err()
    .expect("must fail");
    assert!(matches!(err, ImapError::Connect { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("Host1 failure: can not open imap connection"),
        "{err}"
    );
    let err = Client::connect(
        &opts(d.port(), Security::StartTls, TlsOptions::default()),
        Side::New,
    )
    .await
    .err()
    .expect("must fail");
    assert!(matches!(err, ImapError::Tls { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("Host2 failure: Can not go to tls encryption"),
        "{err}"
    );
    let insecure = TlsOptions {
        verify: false,
        ca_file: None,
    };
    Client::connect(&opts(imaps, Security::Tls, insecure), Side::Old)
        .await
        .expect("explicit opt-out");
}

/// The CA bundle is read once per trust setting: new connections keep working after the file
/// is gone (nothing re-reads and re-parses it per connection).
#[tokio::test]
async fn the_ca_bundle_is_read_once_not_at_every_connection() {
    let d = Dovecot::start_with(DovecotOptions {
        tls: true,
        ..DovecotOptions::default()
    });
    d.add_user("carol", PW);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(ca_pem(), &ca).unwrap();
    let tls = TlsOptions {
        verify: true,
        ca_file: Some(ca.clone()),
    };
    let imaps = d.imaps_port().unwrap();
    let mut first = Client::connect(&opts(imaps, Security::Tls, tls.clone()), Side::Old)
        .await
        .expect("first connection reads the CA");
    first.login("carol", &Secret::new(PW)).await.unwrap();
    std::fs::remove_file(&ca).unwrap();
    for security in [Security::Tls, Security::StartTls] {
        let port = if security == Security::Tls {
            imaps
        } else {
            d.port()
        };
        let mut c = Client::connect(&opts(port, security, tls.clone()), Side::Old)
            .await
            .unwrap_or_else(|e| panic!("{security:?} after the CA file is gone: {e}"));
        c.login("carol", &Secret::new(PW)).await.unwrap();
    }
}

#[tokio::test]
async fn login_failure_and_refused_connection_say_which_side() {
    let d = Dovecot::start(Layout::Slash);
    d.add_user("alice", PW);
    let mut c = Client::connect(
        &opts(d.port(), Security::Plain, TlsOptions::default()),
        Side::New,
    )
    .await
    .unwrap();
    let Err(err) = c.login("alice", &Secret::new("wrong")).await else {
        panic!("a wrong password was accepted");
    };
    let text = err.to_string();
    assert!(
        text.starts_with(
            "Host2 failure: Error login on [127.0.0.1] with user [alice] auth [LOGIN]:"
        ),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the password must not appear: {text}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(
        &opts(closed, Security::Plain, TlsOptions::default()),
        Side::Old,
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .starts_with("Host1 failure: can not open imap connection on host1 [127.0.0.1]"),
        "{err}"
    );
}

/// A message of `len` bytes with a recognisable pattern, 8-bit bytes included (no NUL or bare CR/LF,
/// which IMAP servers may rewrite).
fn big_message(len: usize) -> Vec<u8> {
    let mut m = b"Message-Id: <big@test>\r\nSubject: big\r\n\r\n".to_vec();
    let mut i = 0u32;
    while m.len() < len {
        m.extend_from_slice(format!("line {i:08} ").as_bytes());
        m.push((i % 220 + 32) as u8);
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    m
}

/// A plain connection to `d`, logged in as alice.
async fn logged_in(d: &Dovecot, side: Side) -> Client {
    let plain = opts(d.port(), Security::Plain, TlsOptions::default());
    let mut c = Client::connect(&plain, side).await.unwrap();
    c.login("alice", &Secret::new(PW)).await.unwrap();
    c
}

async fn fallbacks_and_streaming(layout: Layout) {
    let d = Dovecot::start(layout);
    d.add_user("alice", PW);
    let mut c = logged_in(&d, Side::New).await;
    let reduced = layout == Layout::Reduced;
    assert_eq!(c.has("UIDPLUS"), !reduced);
    c.create(&d.mailbox_name("Dest")).await.unwrap();

    // A 6 MB body goes out through a spool file and comes back identical.
    let big = big_message(6 << 20);
    let mut spooled = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut spooled, &big).unwrap();
    let body = Body::File {
        file: spooled,
        len: big.len() as u64,
    };
    let small = Body::Mem(b"Subject: s\r\n\r\nsmall\r\n".to_vec());
    let flags = vec!["\\Seen".to_string(), "$Label1".to_string()];
    let msgs = [
        AppendMsg {
            flags: &flags,
            internaldate: Some("01-Feb-2024 10:00:00 +0100"),
            body: &body,
        },
        AppendMsg {
            flags: &[],
            internaldate: None,
            body: &small,
        },
    ];
    if c.has("MULTIAPPEND") {
        let tag = c.send_append("INBOX", &msgs).await.unwrap();
        c.wait(&tag, |_| {})
            .await
            .unwrap()
            .ok(Side::New, "APPEND")
            .unwrap();
    } else {
        for m in &msgs {
            let tag = c
                .send_append("INBOX", std::slice::from_ref(m))
                .await
                .unwrap();
            c.wait(&tag, |_| {})
                .await
                .unwrap()
                .ok(Side::New, "APPEND")
                .unwrap();
        }
    }
    c.select("INBOX", false).await.unwrap();
    let mut got = Vec::new();
    c.uid_fetch(&[1], "UID FLAGS BODY.PEEK[]", "", |f| got.push(f))
        .await
        .unwrap();
    let fetched = got.pop().unwrap();
    assert!(
        matches!(fetched.body, Some(Body::File { .. })),
        "a large body is spooled, not held in memory"
    );
    assert!(
        fetched.body.unwrap().to_vec().unwrap() == big,
        "bytes survive the round trip"
    );
    assert!(fetched.flags.unwrap().contains(&"$Label1".to_string()));

    // Expunge exactly UID 2 while UID 1 carries \Deleted: UID 1 must survive (the fallback
    // without UIDPLUS unmarks it around a plain EXPUNGE) and keep its \Deleted flag.
    c.uid_store(&[1], "+FLAGS.SILENT", &["\\Deleted".to_string()])
        .await
        .unwrap();
    c.uid_expunge(&[2]).await.unwrap();
    assert_eq!(c.uid_search("ALL").await.unwrap(), vec![1]);
    assert_eq!(c.uid_search("DELETED").await.unwrap(), vec![1]);
    c.uid_store(&[1], "-FLAGS.SILENT", &["\\Deleted".to_string()])
        .await
        .unwrap();

    // MOVE, or COPY + expunge without it.
    c.uid_move(&[1], &d.mailbox_name("Dest")).await.unwrap();
    assert!(c.uid_search("ALL").await.unwrap().is_empty());
    let mut raw = RawImap::connect(d.host(), d.port());
    raw.login("alice", PW);
    let moved = raw.uid_fetch_all(&d.mailbox_name("Dest"));
    assert_eq!(moved.len(), 1);
    assert!(moved[0].body == big);
}

#[tokio::test]
async fn full_capability_server() {
    fallbacks_and_streaming(Layout::DotInbox).await;
}

#[tokio::test]
async fn reduced_capability_server_fallbacks() {
    fallbacks_and_streaming(Layout::Reduced).await;
}

#[tokio::test]
async fn master_user_logs_in_as_the_user() {
    let d = Dovecot::start_with(DovecotOptions {
        master: Some(("admin".into(), "admin-pw".into())),
        ..DovecotOptions::default()
    });
    d.add_user("alice", PW);
    let mut raw = RawImap::connect(d.host(), d.port());
    raw.login("alice", PW);
    raw.create("OnlyAlice");

    // authzid = alice, authcid = admin, the admin's password: the session is alice's.
    let mut c = Client::connect(
        &opts(d.port(), Security::Plain, TlsOptions::default()),
        Side::Old,
    )
    .await
    .unwrap();
    c.authenticate_plain(Some("alice"), "admin", &Secret::new("admin-pw"))
        .await
        .expect("master login");
    let names: Vec<String> = c
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"OnlyAlice".to_string()), "{names:?}");

    let mut c = Client::connect(
        &opts(d.port(), Security::Plain, TlsOptions::default()),
        Side::Old,
    )
    .await
    .unwrap();
    let Err(err) = c
        .authenticate_plain(Some("alice"), "admin", &Secret::new("wrong"))
        .await
    else {
        panic!("a wrong master password was accepted");
    };
    assert!(
        err.to_string()
            .contains("Error login on [127.0.0.1] with user [alice] auth [PLAIN]"),
        "{err}"
    );
}

/// A mailbox the connection has selected read-write is not opened again for each write (the
/// mirror's STORE per journal entry): a NOOP brings its view up to date, so a message another
/// connection added meanwhile takes the STORE, and its PERMANENTFLAGS are those of the SELECT.
/// Once the view holds that message, the next write to it needs no NOOP.
#[tokio::test]
async fn a_writable_selection_is_kept_and_brought_up_to_date() {
    let d = Dovecot::start(Layout::Slash);
    d.add_user("alice", PW);
    let mut c = logged_in(&d, Side::Old).await;
    let first = c.writable_flags("INBOX", &[]).await.unwrap();
    assert!(
        first.as_ref().is_some_and(|f| f.iter().any(|f| f == "\\*")),
        "{first:?}"
    );
    let mut other = RawImap::connect("127.0.0.1", d.port());
    other.login("alice", PW);
    let uid = other
        .append("INBOX", &[], None, &common::message(1, 500))
        .unwrap();
    other.logout();
    d.commands(true);
    assert_eq!(c.writable_flags("INBOX", &[uid]).await.unwrap(), first);
    c.uid_store(&[uid], "+FLAGS.SILENT", &["\\Flagged".to_string()])
        .await
        .unwrap();
    assert_eq!(c.writable_flags("INBOX", &[uid]).await.unwrap(), first);
    let seen = d.commands(false);
    assert_eq!(seen.get("SELECT").copied().unwrap_or(0), 0, "{seen:?}");
    assert_eq!(seen.get("NOOP"), Some(&1), "{seen:?}");
    let mut check = RawImap::connect("127.0.0.1", d.port());
    check.login("alice", PW);
    check.select("INBOX");
    let (lines, _) = check.raw("UID FETCH 1:* (FLAGS)");
    assert!(lines.iter().any(|l| l.contains("\\Flagged")), "{lines:?}");
    check.logout();
}

#[tokio::test]
async fn pipelined_commands_leave_in_one_write() {
    let d = Dovecot::start(Layout::Slash);
    d.add_user("alice", PW);
    let mut other = RawImap::connect("127.0.0.1", d.port());
    other.login("alice", PW);
    let uids: Vec<u32> = (1..=3)
        .map(|i| (other.append("INBOX", &[], None, &common::message(i, 300))).unwrap())
        .collect();
    other.logout();
    let mut c = logged_in(&d, Side::Old).await;
    c.select("INBOX", false).await.unwrap();
    let flags = ["\\Seen", "\\Flagged", "\\Answered"];
    let stores: Vec<(Vec<u32>, &str, Vec<String>)> = (uids.iter().zip(flags))
        .map(|(uid, flag)| (vec![*uid], "+FLAGS.SILENT", vec![flag.to_string()]))
        .collect();
    let before = c.writes();
    c.uid_stores(&stores).await.unwrap();
    assert_eq!(c.writes() - before, 1, "three STOREs, one write");

    let before = c.writes();
    let mut read = Vec::new();
    c.examine_and_fetch("INBOX", &uids, "UID FLAGS", |f| {
        let flags = f.flags.unwrap_or_default().into_iter();
        read.push((f.uid, flags.filter(|f| f != "\\Recent").collect()))
    })
    .await
    .unwrap();
    assert_eq!(
        c.writes() - before,
        1,
        "the EXAMINE and its FETCH, one write"
    );
    read.sort();
    let want: Vec<(Option<u32>, Vec<String>)> = (uids.iter().zip(flags))
        .map(|(uid, flag)| (Some(*uid), vec![flag.to_string()]))
        .collect();
    assert_eq!(read, want, "each STORE took effect");
}
