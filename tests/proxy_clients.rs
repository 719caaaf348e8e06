//! Real mail clients through the transparent proxy (`proxy::server::serve`) in front of a real
//! Dovecot as NEW (issue 4's acceptance): `curl imap://` and `mbsync` (isync) each complete a full
//! session — list, select, fetch, store, append, expunge — over STARTTLS and over implicit TLS, and
//! mbsync's local Maildir ends up equal to the mailbox on NEW. Skipped only when the binary is
//! missing (scripts/install-deps.sh installs both).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::maildir::{maildir_files, normalize};
use common::*;

/// A proxy with a plain (STARTTLS) and an implicit-TLS listener in front of NEW at `new_port`.
fn start_proxy(new_port: u16) -> Proxy {
    let certs = certs_dir();
    let text = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n[new]\naddress = \"127.0.0.1:{new_port}\"\nsecurity = \"none\"\n",
        certs.join("localhost.pem"),
        certs.join("localhost-key.pem"),
    );
    Proxy::start_with(&text, true)
}

fn msg(i: u32, subject: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject} {i}\r\nMessage-ID: <m{i}.{subject}@example.org>\r\n\r\nbody of {subject} {i}\r\n"
    )
    .into_bytes()
}

/// A Dovecot NEW with `user` holding 3 messages in INBOX and 2 in "Work".
fn seeded_new(user: &str, pw: &str) -> Dovecot {
    let new = Dovecot::start(Layout::Slash);
    new.add_user(user, pw);
    let mut c = RawImap::connect(new.host(), new.port());
    c.login(user, pw);
    for i in 1..=3 {
        c.append("INBOX", &[], None, &msg(i, "inbox"));
    }
    c.create("Work");
    c.subscribe("Work");
    for i in 1..=2 {
        c.append("Work", &[], None, &msg(i, "work"));
    }
    c.logout();
    new
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fetch_new(new: &Dovecot, user: &str, pw: &str, mailbox: &str) -> Vec<Msg> {
    let mut c = RawImap::connect(new.host(), new.port());
    c.login(user, pw);
    let msgs = c.uid_fetch_all(mailbox);
    c.logout();
    msgs
}

#[test]
fn curl_full_session_over_implicit_tls_and_starttls() {
    require("curl");
    for (starttls, user) in [(false, "carol"), (true, "cody")] {
        let pw = "secretpw";
        let new = seeded_new(user, pw);
        let proxy = start_proxy(new.port());
        let base = if starttls {
            format!("imap://127.0.0.1:{}", proxy.port)
        } else {
            format!("imaps://127.0.0.1:{}", proxy.tls_port)
        };
        let curl = |args: &[&str], url: &str| {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--max-time", "60", "--cacert"])
                .arg(ca_pem())
                .args(["-u", &format!("{user}:{pw}")]);
            if starttls {
                cmd.arg("--ssl-reqd");
            }
            cmd.args(args).arg(url);
            run(&mut cmd)
        };
        let what = if starttls { "STARTTLS" } else { "implicit TLS" };

        // LIST
        let list = String::from_utf8(curl(&[], &format!("{base}/"))).unwrap();
        assert!(
            list.contains("INBOX") && list.contains("Work"),
            "{what}: {list}"
        );

        // SELECT + FETCH
        let body = curl(&[], &format!("{base}/INBOX;UID=1"));
        assert_eq!(body, msg(1, "inbox"), "{what}");

        // STORE
        curl(
            &["-X", "UID STORE 1 +FLAGS (\\Flagged)"],
            &format!("{base}/INBOX"),
        );
        let msgs = fetch_new(&new, user, pw, "INBOX");
        assert!(msgs[0].flags.contains("\\Flagged"), "{what}: {msgs:?}");

        // APPEND
        let dir = tempfile::tempdir().unwrap();
        let upload = dir.path().join("upload.eml");
        let appended = msg(9, "curl");
        std::fs::write(&upload, &appended).unwrap();
        curl(&["-T", upload.to_str().unwrap()], &format!("{base}/INBOX"));
        let msgs = fetch_new(&new, user, pw, "INBOX");
        assert_eq!(msgs.len(), 4, "{what}: {msgs:?}");
        assert_eq!(msgs[3].body, appended, "{what}");

        // EXPUNGE (after marking UID 2 deleted)
        curl(
            &["-X", "UID STORE 2 +FLAGS (\\Deleted)"],
            &format!("{base}/INBOX"),
        );
        curl(&["-X", "EXPUNGE"], &format!("{base}/INBOX"));
        let msgs = fetch_new(&new, user, pw, "INBOX");
        let uids: Vec<u32> = msgs.iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![1, 3, 4], "{what}: {msgs:?}");
        assert!(msgs[0].flags.contains("\\Flagged"), "{what}");
    }
}

/// Runs `mbsync -a` with `SSLType` `tls` (IMAPS or STARTTLS; isync 1.4 spells it SSLType). Host is
/// "localhost" because isync 1.4 matches only DNS names of the certificate, not its IP address.
fn mbsync(dir: &Path, port: u16, tls: &str, user: &str, pw: &str) {
    let mail = dir.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let rc = dir.join(format!("mbsyncrc-{tls}"));
    let text = format!(
        "IMAPAccount new\nHost localhost\nPort {port}\nUser {user}\nPass {pw}\nSSLType {tls}\nCertificateFile {ca}\n\n\
         IMAPStore new-remote\nAccount new\n\n\
         MaildirStore local\nPath {mail}/\nInbox {mail}/INBOX\nSubFolders Verbatim\n\n\
         Channel all\nFar :new-remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n",
        ca = ca_pem().display(),
        mail = mail.display(),
    );
    std::fs::write(&rc, text).unwrap();
    run(Command::new("mbsync").arg("-c").arg(&rc).arg("-a"));
}

/// Asserts that the local Maildir holds as many messages per folder as NEW, with the same bodies.
fn assert_local_equals_new(new: &Dovecot, user: &str, pw: &str, mail: &Path, what: &str) {
    for folder in ["INBOX", "Work"] {
        let remote: Vec<Vec<u8>> = fetch_new(new, user, pw, folder)
            .iter()
            .map(|m| normalize(&m.body))
            .collect();
        let local: Vec<Vec<u8>> = maildir_files(&mail.join(folder))
            .iter()
            .map(|f| normalize(&std::fs::read(f).unwrap()))
            .collect();
        assert_eq!(local.len(), remote.len(), "{what}: {folder} count");
        let count = |v: &[Vec<u8>]| {
            let mut m = BTreeMap::new();
            for b in v {
                *m.entry(b.clone()).or_insert(0) += 1;
            }
            m
        };
        assert_eq!(count(&local), count(&remote), "{what}: {folder} bodies");
    }
}

#[test]
fn mbsync_syncs_through_the_proxy_over_implicit_tls_and_starttls() {
    require("mbsync");
    let (user, pw) = ("mona", "monapw");
    let new = seeded_new(user, pw);
    let proxy = start_proxy(new.port());
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");

    // 1. Download everything over implicit TLS.
    mbsync(dir.path(), proxy.tls_port, "IMAPS", user, pw);
    assert_local_equals_new(&new, user, pw, &mail, "after IMAPS download");
    assert_eq!(maildir_files(&mail.join("INBOX")).len(), 3);
    assert_eq!(maildir_files(&mail.join("Work")).len(), 2);

    // 2. A new local message is APPENDed through the proxy (STARTTLS).
    let local_msg = b"From: c@example.org\nTo: b@example.org\nSubject: made locally\nMessage-ID: <local1@example.org>\n\nwritten into the maildir\n";
    std::fs::write(
        mail.join("INBOX/new/1700000000.imapferrytest.localhost"),
        local_msg,
    )
    .unwrap();
    mbsync(dir.path(), proxy.port, "STARTTLS", user, pw);
    let inbox = fetch_new(&new, user, pw, "INBOX");
    assert_eq!(inbox.len(), 4, "{inbox:?}");
    assert!(
        inbox
            .iter()
            .any(|m| normalize(&m.body) == local_msg.to_vec()),
        "{inbox:?}"
    );
    assert_local_equals_new(&new, user, pw, &mail, "after STARTTLS upload");

    // 3. A message trashed locally is expunged on NEW (Expunge Both), over STARTTLS then IMAPS.
    let victim = maildir_files(&mail.join("INBOX"))
        .into_iter()
        .find(|f| {
            std::fs::read(f)
                .map(|b| normalize(&b) == normalize(&msg(2, "inbox")))
                .unwrap_or(false)
        })
        .expect("local copy of inbox 2");
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    let (base, flags) = name.split_once(":2,").unwrap_or((&name, ""));
    let mut flags: Vec<char> = flags.chars().chain(['T']).collect();
    flags.sort();
    flags.dedup();
    let trashed = mail
        .join("INBOX/cur")
        .join(format!("{base}:2,{}", flags.iter().collect::<String>()));
    std::fs::rename(&victim, &trashed).unwrap();
    mbsync(dir.path(), proxy.port, "STARTTLS", user, pw);
    let inbox = fetch_new(&new, user, pw, "INBOX");
    assert_eq!(inbox.len(), 3, "{inbox:?}");
    assert!(
        !inbox
            .iter()
            .any(|m| normalize(&m.body) == normalize(&msg(2, "inbox"))),
        "{inbox:?}"
    );
    assert_local_equals_new(&new, user, pw, &mail, "after STARTTLS expunge");

    // A last run over implicit TLS finds nothing to change.
    mbsync(dir.path(), proxy.tls_port, "IMAPS", user, pw);
    assert_local_equals_new(&new, user, pw, &mail, "after final IMAPS run");
}
