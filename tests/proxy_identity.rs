//! One mailbox is one account, whatever the client types (issue 11): the account is keyed by the
//! normalised login (`new.username_format`, `%Lu` by default, as Dovecot), so spellings of one
//! login share one account, one backfill, and one lifecycle.

mod common;
use common::state::account_summaries;

use std::sync::{Arc, Barrier};

use common::cli::*;
use common::*;

const PW: &str = "Pw-identity-8q";

fn fill_inbox(d: &Dovecot, user: &str, first: u64, n: u64) {
    let mut c = RawImap::connect(d.host(), d.port());
    c.login(user, PW);
    for i in first..first + n {
        c.append("INBOX", &["\\Seen"], None, &message(i, 1_200));
    }
    c.logout();
}

#[test]
fn spellings_of_one_login_are_one_account() {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    let users = [
        ("user1".to_string(), PW.to_string()),
        ("user2".into(), PW.into()),
    ];
    old.add_users(&users);
    new.add_users(&users);
    fill_inbox(&old, "user2", 0, 30);
    fill_inbox(&old, "user1", 100, 5);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let proxy = ProxyProc::start(
        &binary(),
        dir.path(),
        &migration_config(&old, &new, &state, 20000),
    );

    // Three first logins at once, spelled as a phone, a laptop and a webmail might.
    let start = Arc::new(Barrier::new(3));
    let sessions: Vec<_> = ["user2", "User2", "USER2"]
        .into_iter()
        .map(|login| {
            let start = Arc::clone(&start);
            let port = proxy.port;
            std::thread::spawn(move || {
                let mut c = RawImap::connect("127.0.0.1", port);
                start.wait();
                c.login(login, PW);
                let n = c.select("INBOX");
                c.logout();
                n
            })
        })
        .collect();
    for s in sessions {
        assert_eq!(s.join().unwrap(), 30);
    }
    let on_new = snapshot(&new, "user2", PW);
    assert_eq!(on_new.count("INBOX"), 30, "INBOX backfilled more than once");
    let accounts = account_summaries(&state);
    let names: Vec<&str> = accounts.iter().map(|a| a.key.new_user.as_str()).collect();
    assert_eq!(names, ["user2"]);

    // A retired account stays retired under every spelling: no new account, no backfill.
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("user1", PW);
    assert_eq!(c.select("INBOX"), 5);
    c.logout();
    let config = dir.path().join("proxy.toml");
    let retire = run_at(
        &binary(),
        dir.path(),
        &strings(&[
            "retire",
            "USER1",
            "--force",
            "--config",
            config.to_str().unwrap(),
        ]),
        &[],
    );
    retire.assert_code(0);
    fill_inbox(&old, "user1", 200, 2);
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login("USER1", PW);
    assert_eq!(c.select("INBOX"), 5, "a retired account was migrated again");
    c.logout();
    let accounts = account_summaries(&state);
    let mut names: Vec<(&str, &str)> = accounts
        .iter()
        .map(|a| (a.key.new_user.as_str(), a.state.as_str()))
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], ("user1", "retired"));
    assert_eq!(names[1].0, "user2");
    drop(proxy);
    let mut on_old = snapshot(&old, "user2", PW);
    let mut on_new = snapshot(&new, "user2", PW);
    // Only INBOX was opened: the other folders wait for their first SELECT or a sweep.
    on_old.folders.retain(|f, _| f == "INBOX");
    on_new.folders.retain(|f, _| f == "INBOX");
    assert_same_mail(&on_old, &on_new);
}
