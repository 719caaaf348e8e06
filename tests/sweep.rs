//! The sweeper (issue 6): accounts nobody opens are imported, swept to `synced` and re-visited;
//! transient OLD failures back off, bad credentials fail only their account; a user's request
//! takes over the sweeper's copy; a SIGKILLed proxy resumes. Real Dovecot servers throughout.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Dovecot, DovecotOptions, ProxyProc, RawImap, assert_same_mail, snapshot};

const MASTER: (&str, &str) = ("admin", "adminpw");

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_imapferry"))
}

fn imapferry(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn master_servers() -> (Dovecot, Dovecot) {
    let opts = || DovecotOptions {
        master: Some((MASTER.0.into(), MASTER.1.into())),
        ..Default::default()
    };
    (Dovecot::start_with(opts()), Dovecot::start_with(opts()))
}

fn users(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("u{i:02}"), format!("pw-{i}")))
        .collect()
}

/// Mixed sizes: 0, 1, 3, 8 or 20 messages in INBOX (up to ~20 KB each), every third account also
/// an `Archive` folder.
fn seed(old: &Dovecot, users: &[(String, String)]) {
    for (i, (user, pw)) in users.iter().enumerate() {
        let mut c = RawImap::connect(old.host(), old.port());
        c.login(user, pw);
        let n = [0, 1, 3, 8, 20][i % 5];
        for j in 0..n {
            let id = (i * 100 + j) as u64;
            c.append(
                "INBOX",
                &["\\Seen"],
                None,
                &common::message(id, 800 + (j * 2_900) % 20_000),
            );
        }
        if i % 3 == 0 {
            c.create("Archive");
            for j in 0..2 {
                c.append(
                    "Archive",
                    &["\\Flagged"],
                    None,
                    &common::message((i * 100 + 50 + j) as u64, 1_500),
                );
            }
        }
        c.logout();
    }
}

/// A configuration with master users on both sides (no user password needed).
fn master_config(dir: &Path, old: &Dovecot, new: &Dovecot, sweep: &str) -> PathBuf {
    let secret = dir.join("master.secret");
    std::fs::write(&secret, format!("{}\n", MASTER.1)).unwrap();
    let text = format!(
        "[listen]\nimap = \"127.0.0.1:1\"\n\
         [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nmaster_user = \"{}\"\nmaster_password_file = \"{}\"\n\
         [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"master\"\nmaster_user = \"{}\"\nmaster_password_file = \"{}\"\n\
         [state]\npath = \"{}\"\n[sweep]\n{sweep}\n",
        new.port(),
        MASTER.0,
        secret.display(),
        old.port(),
        MASTER.0,
        secret.display(),
        dir.join("state.db").display()
    );
    let path = dir.join("imapferry.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn summaries(state: &Path) -> Vec<imapferry::store::AccountSummary> {
    use imapferry::store::{SqliteStore, Store};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SqliteStore::open_existing(state).await.unwrap();
        let s = store.account_summaries().await.unwrap();
        store.close().await;
        s
    })
}

#[test]
fn fifty_imported_accounts_are_swept_to_synced_and_late_mail_follows() {
    let (old, new) = master_servers();
    let users = users(50);
    old.add_users(&users);
    new.add_users(&users);
    seed(&old, &users);
    let dir = tempfile::tempdir().unwrap();
    let conf = master_config(dir.path(), &old, &new, "accounts_in_parallel = 4");
    let conf = conf.to_str().unwrap();
    let logins = dir.path().join("logins.txt");
    let list: String = users.iter().map(|(u, _)| format!("{u}\n")).collect();
    std::fs::write(&logins, format!("# accounts of the first wave\n{list}")).unwrap();
    let logins = logins.to_str().unwrap();

    let out = imapferry(&["accounts", "import", logins, "--config", conf]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("50 added"), "{}", text(&out));
    let out = imapferry(&["accounts", "import", logins, "--config", conf]);
    assert!(
        text(&out).contains("0 added, 0 updated, 50 unchanged"),
        "{}",
        text(&out)
    );

    let out = imapferry(&["sweep", "--once", "--config", conf]);
    assert!(out.status.success(), "{}", text(&out));
    let state = dir.path().join("state.db");
    let all = summaries(&state);
    assert_eq!(all.len(), 50, "re-import duplicated accounts");
    for a in &all {
        assert_eq!(a.state, imapferry::store::AccountState::Synced, "{a:?}");
    }
    for (user, pw) in &users {
        assert_same_mail(&snapshot(&old, user, pw), &snapshot(&new, user, pw));
    }

    // Mail delivered to OLD for a synced account reaches NEW at the next revisit (the sweeper
    // inside the proxy, re-visiting every second).
    let (user, pw) = &users[7];
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(user, pw);
    c.append("INBOX", &[], None, &common::message(9_999, 1_000));
    c.logout();
    let config = std::fs::read_to_string(dir.path().join("imapferry.toml"))
        .unwrap()
        .replace("[listen]\nimap = \"127.0.0.1:1\"\n", "")
        .replace("[sweep]\n", "[sweep]\nenabled = true\nrevisit_secs = 1\n");
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyProc::start(bin(), proxy_dir.path(), &config);
    wait_until("the late message on NEW", Duration::from_secs(30), || {
        snapshot(&new, user, pw).count("INBOX") == snapshot(&old, user, pw).count("INBOX")
    });
    drop(proxy);
    assert_same_mail(&snapshot(&old, user, pw), &snapshot(&new, user, pw));
}
