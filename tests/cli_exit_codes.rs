//! The built binary against real Dovecot servers: imapsync's exit codes and log lines for login,
//! connection and TLS failures, usage errors, the `imapsync` name, and passwords never shown.

mod common;

use std::path::Path;

use common::cli::*;
use common::*;

const ALICE_PW: &str = "Alice-Pw-7f3k2Zq";
const BOB_PW: &str = "Bob-Pw-91xQm4Tt";
const WRONG_PW: &str = "Wrong-Pw-55hHq0";

/// Both sides on `d`: alice (OLD) to bob (NEW), with the given passwords and ports.
fn account(d: &Dovecot, pw1: &str, pw2: &str, port1: u16, port2: u16) -> Vec<String> {
    strings(&[
        "--host1",
        d.host(),
        "--port1",
        &port1.to_string(),
        "--user1",
        "alice",
        "--password1",
        pw1,
        "--host2",
        d.host(),
        "--port2",
        &port2.to_string(),
        "--user2",
        "bob",
        "--password2",
        pw2,
    ])
}

fn with<S: AsRef<str>>(mut args: Vec<String>, more: &[S]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.as_ref().to_string()));
    args
}

fn plain_server() -> Dovecot {
    let d = Dovecot::start(Layout::Slash);
    d.add_user("alice", ALICE_PW);
    d.add_user("bob", BOB_PW);
    d
}

#[test]
fn login_and_connection_failures_exit_like_imapsync() {
    let d = plain_server();
    let p = d.port();

    let ok = sync(&with(account(&d, ALICE_PW, BOB_PW, p, p), &["--justlogin"]));
    ok.assert_code(0);
    ok.assert_says("Host1: IMAP server [127.0.0.1] port [");
    ok.assert_says("Exiting because of --justlogin");
    ok.assert_says("Exiting with return value 0 (EX_OK: successful termination) 0/50 nb_errors/max_errors PID ");

    let bad1 = sync(&with(account(&d, WRONG_PW, BOB_PW, p, p), &["--justlogin"]));
    bad1.assert_code(161);
    bad1.assert_says("Host1 failure: Error login on [127.0.0.1] with user [alice] auth [LOGIN]");
    bad1.assert_says("The most frequent error is ERR_AUTHENTICATION_FAILURE_USER1. Check the credentials for alice.");
    bad1.assert_says("Exiting with return value 161 (EXIT_AUTHENTICATION_FAILURE_USER1) 1/50 nb_errors/max_errors PID");

    let bad2 = sync(&account(&d, ALICE_PW, WRONG_PW, p, p));
    bad2.assert_code(162);
    bad2.assert_says("Host2 failure: Error login on");
    bad2.assert_says("Exiting with return value 162 (EXIT_AUTHENTICATION_FAILURE_USER2)");

    // Both wrong: two errors listed, the tie goes to USER1.
    let both = sync(&account(&d, WRONG_PW, WRONG_PW, p, p));
    both.assert_code(161);
    both.assert_says("++++ Listing 2 errors encountered during the sync ( avoid this listing with --noerrorsdump ).");
    both.assert_says("Err 2/2: Host2 failure: Error login on");

    let down1 = sync(&account(&d, ALICE_PW, BOB_PW, closed_port(), p));
    down1.assert_code(101);
    down1.assert_says("Host1 failure: can not open imap connection on host1 [127.0.0.1]");
    down1.assert_says("Exiting with return value 101 (EXIT_CONNECTION_FAILURE_HOST1)");

    let down2 = sync(&account(&d, ALICE_PW, BOB_PW, p, closed_port()));
    down2.assert_code(102);
    down2.assert_says("Exiting with return value 102 (EXIT_CONNECTION_FAILURE_HOST2)");

    // This server has `ssl = no`: STARTTLS is refused before any login.
    let no_starttls = sync(&with(
        account(&d, ALICE_PW, BOB_PW, p, p),
        &["--tls1", "--justlogin"],
    ));
    no_starttls.assert_code(12);
    no_starttls.assert_says("Host1 failure: Can not go to tls encryption on host1 [127.0.0.1]");
    no_starttls.assert_says("The most frequent error is ERR_EXIT_TLS_FAILURE.");

    // Without user2 imapsync only connects.
    let connect = sync(&strings(&[
        "--host1",
        d.host(),
        "--port1",
        &p.to_string(),
        "--user1",
        "alice",
        "--host2",
        d.host(),
        "--port2",
        &p.to_string(),
    ]));
    connect.assert_code(0);
    connect.assert_says("Host1 banner: ");
    connect.assert_says("Exiting after a justconnect on host(s): 127.0.0.1 127.0.0.1");
    let refused = sync(&strings(&[
        "--justconnect",
        "--host1",
        d.host(),
        "--port1",
        &closed_port().to_string(),
    ]));
    refused.assert_code(10);

    for outcome in [&ok, &bad1, &bad2, &both, &down1, &down2, &no_starttls] {
        for secret in [ALICE_PW, BOB_PW, WRONG_PW] {
            assert!(
                !outcome.all().contains(secret),
                "a password leaked:\n{}",
                outcome.all()
            );
        }
        assert!(
            outcome.stdout.contains("--password1 MASKED")
                && outcome.stdout.contains("--password2 MASKED")
        );
    }
}

#[test]
fn passwords_never_appear_in_a_full_run() {
    let d = plain_server();
    let p = d.port();
    let mut imap = RawImap::connect(d.host(), p);
    imap.login("alice", ALICE_PW);
    for i in 0..3 {
        imap.append("INBOX", &["\\Seen"], None, &message(i, 500));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw2"), format!("{BOB_PW}\n")).unwrap();
    let args = strings(&[
        "sync",
        "--host1",
        d.host(),
        "--port1",
        &p.to_string(),
        "--user1",
        "alice",
        "--password1",
        ALICE_PW,
        "--host2",
        d.host(),
        "--port2",
        &p.to_string(),
        "--user2",
        "bob",
        "--passfile2",
        "pw2",
    ]);
    let full = run_at(&binary(), dir.path(), &args, &[]);
    assert!(
        full.stdout.contains("Exiting with return value"),
        "{}\n{}",
        full.stdout,
        full.stderr
    );
    assert!(full.log.contains("Exiting with return value"));
    assert!(
        dir.path()
            .join("LOG_imapsync")
            .join("imapferry-state.db")
            .exists(),
        "state file in the log dir"
    );

    // The same through the environment, and with the password as `--password1=...`.
    let env_run = run_at(
        &binary(),
        dir.path(),
        &with(
            strings(&["sync", "--justlogin", &format!("--password1={ALICE_PW}")]),
            &args[1..],
        ),
        &[("IMAPSYNC_PASSWORD2", BOB_PW)],
    );
    env_run.assert_code(0);
    assert!(env_run.stdout.contains("--password1=MASKED"));

    for outcome in [&full, &env_run] {
        assert!(
            !outcome.all().contains(ALICE_PW),
            "alice's password leaked:\n{}",
            outcome.all()
        );
        assert!(
            !outcome.all().contains(BOB_PW),
            "bob's password leaked:\n{}",
            outcome.all()
        );
    }
    // --showpasswords is the only way to see them.
    let shown = run_at(
        &binary(),
        dir.path(),
        &with(
            strings(&["sync", "--justlogin", "--showpasswords"]),
            &args[1..],
        ),
        &[],
    );
    shown.assert_code(0);
    assert!(shown.stdout.contains(ALICE_PW));
}

#[test]
fn tls_certificates_are_verified() {
    let d = Dovecot::start_with(DovecotOptions {
        tls: true,
        ..Default::default()
    });
    d.add_user("alice", ALICE_PW);
    d.add_user("bob", BOB_PW);
    let (plain, imaps) = (d.port(), d.imaps_port().expect("imaps port"));
    let logs = tempfile::tempdir().unwrap();
    let logdir = logs.path().to_str().unwrap().to_string();
    // Run from the crate root so the imapsync-style relative `SSL_ca_file=certs/ca.pem` resolves.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |extra: &[&str]| {
        let mut args = with(
            strings(&["sync", "--justlogin", "--logdir", &logdir]),
            extra,
        );
        args.extend(account(&d, ALICE_PW, BOB_PW, imaps, plain));
        let mut o = run_at(&binary(), root, &args, &[]);
        o.log = read_logs(logs.path());
        std::fs::remove_dir_all(logs.path()).ok();
        o
    };

    // Implicit TLS to a certificate signed by an unknown CA: the connection fails, as in imapsync.
    let untrusted = run(&["--ssl1"]);
    untrusted.assert_code(101);
    untrusted.assert_says("Host1 failure: can not open imap connection on host1");

    let trusted = run(&["--ssl1", "--sslargs1", "SSL_ca_file=certs/ca.pem"]);
    trusted.assert_code(0);
    trusted
        .assert_says("Host1: the server certificate is checked against the CA file certs/ca.pem");

    let unchecked = run(&["--ssl1", "--sslargs1", "SSL_verify_mode=0"]);
    unchecked.assert_code(0);

    // STARTTLS on host2 (plain port): an unknown CA fails the upgrade, exit 12.
    let starttls = run(&["--ssl1", "--sslargs1", "SSL_ca_file=certs/ca.pem", "--tls2"]);
    starttls.assert_code(12);
    starttls.assert_says("Host2 failure: Can not go to tls encryption on host2");
    let ca = ca_pem();
    let starttls_ok = run(&[
        "--ssl1",
        "--sslargs1",
        "SSL_ca_file=certs/ca.pem",
        "--tls2",
        "--sslargs2",
        &format!("SSL_ca_file={}", ca.display()),
    ]);
    starttls_ok.assert_code(0);
}

#[test]
fn usage_errors_exit_64_before_logging() {
    for args in [
        &["--frobnicate"][..],
        &["--pipemess"],
        &["--host1"],
        &["--port1", "x"],
        &["stray"],
        &["--include", "(bad"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = run_at(&binary(), dir.path(), &with(strings(&["sync"]), args), &[]);
        o.assert_code(64);
        assert!(
            !o.stdout.contains("Exiting with return value"),
            "{args:?}: {}",
            o.stdout
        );
        assert!(
            !dir.path().join("LOG_imapsync").exists(),
            "{args:?}: no log before the options are good"
        );
        assert!(!o.stderr.is_empty());
    }
    let o = sync(&strings(&[
        "--host1",
        "h",
        "--user1",
        "u",
        "--host2",
        "h",
        "--user2",
        "v",
        "--passfile1",
        "/nonexistent/pw",
    ]));
    o.assert_code(66);
    o.assert_says("Failure: file from parameter --passfile1 /nonexistent/pw does not exist or is not readable");
    o.assert_says("Exiting with return value 66 (EX_NOINPUT: cannot open input) 1/50 nb_errors/max_errors PID");

    let help = sync(&strings(&["--help"]));
    help.assert_code(0);
    assert!(help.stdout.contains("--sslargs1 K=V"));
}

#[test]
fn the_binary_answers_to_the_name_imapsync() {
    let d = plain_server();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("imapsync");
    std::os::unix::fs::symlink(binary(), &link).unwrap();

    let ok = run_at(
        &link,
        dir.path(),
        &with(
            account(&d, ALICE_PW, BOB_PW, d.port(), d.port()),
            &["--justlogin"],
        ),
        &[],
    );
    ok.assert_code(0);
    ok.assert_says("Exiting because of --justlogin");
    assert!(
        ok.stdout.contains(&format!("{} --host1", link.display()))
            || ok.stdout.contains("imapsync --host1")
    );

    let bad = run_at(
        &link,
        dir.path(),
        &with(
            account(&d, WRONG_PW, BOB_PW, d.port(), d.port()),
            &["--justlogin"],
        ),
        &[],
    );
    bad.assert_code(161);

    let unknown = run_at(&link, dir.path(), &strings(&["--pipemess"]), &[]);
    unknown.assert_code(64);
    assert!(unknown.stderr.contains("Unknown option: pipemess"));
}

#[test]
fn dry_run_then_overquota_on_new() {
    let old = Dovecot::start(Layout::Slash);
    old.add_user("alice", ALICE_PW);
    let new = Dovecot::start_with(DovecotOptions {
        quota_kb: Some(4),
        ..Default::default()
    });
    new.add_user("bob", BOB_PW);
    let mut imap = RawImap::connect(old.host(), old.port());
    imap.login("alice", ALICE_PW);
    for i in 0..6 {
        imap.append("INBOX", &[], None, &message(i, 3000));
    }
    let args = strings(&[
        "--host1",
        old.host(),
        "--port1",
        &old.port().to_string(),
        "--user1",
        "alice",
        "--password1",
        ALICE_PW,
        "--host2",
        new.host(),
        "--port2",
        &new.port().to_string(),
        "--user2",
        "bob",
        "--password2",
        BOB_PW,
        "--folder",
        "INBOX",
    ]);

    let dry = sync(&with(args.clone(), &["--dry"]));
    dry.assert_code(0);
    dry.assert_says("Messages transferred                    : 0 (could be 6 without dry mode)");

    // 4 KiB of quota for 6 messages of 3 kB: most appends fail with [OVERQUOTA].
    let full = sync(&args);
    full.assert_code(113);
    full.assert_says("could not append");
    full.assert_says(
        "The most frequent error is ERR_OVERQUOTA. The destination mailbox is 100% full",
    );
    full.assert_says("++++ Statistics");
    full.assert_says("Exiting with return value 113 (EXIT_OVERQUOTA)");

    // --errorsmax stops the pass at the first error, without statistics.
    let stopped = sync(&with(args, &["--errorsmax", "1"]));
    stopped.assert_code(113);
    stopped.assert_says("Maximum number of errors 1 reached ( you can change 1 to any value, for example 100 with --errorsmax 100 ). Exiting.");
    assert!(
        !stopped.stdout.contains("++++ Statistics"),
        "{}",
        stopped.stdout
    );
    stopped.assert_says("/1 nb_errors/max_errors PID");
}

#[test]
fn authuser_logs_in_with_a_master_user() {
    let d = Dovecot::start_with(common::DovecotOptions {
        master: Some(("admin".into(), "admin-pw".into())),
        ..Default::default()
    });
    d.add_user("alice", ALICE_PW);
    d.add_user("bob", BOB_PW);
    // OLD is reached as alice through the admin login (imapsync's --authuser1), NEW as bob.
    let args = with(
        account(&d, "admin-pw", BOB_PW, d.port(), d.port()),
        &["--authuser1", "admin", "--justlogin"],
    );
    let out = sync(&args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("admin-pw"),
        "the admin password must not be printed"
    );
    // The admin password alone, without --authuser1, is not alice's password.
    let out = sync(&with(
        account(&d, "admin-pw", BOB_PW, d.port(), d.port()),
        &["--justlogin"],
    ));
    assert_eq!(out.code, 161, "{}", out.stdout);
}
