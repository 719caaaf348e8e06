//! OLD stays a faithful mirror through the migration proxy (issue 11): folders named any way a
//! client can name them, structure changes of folders never opened, APPEND then RENAME, Courier
//! as OLD, one OLD error not hiding other folders. Every test ends with OLD equal to NEW once the
//! journal is empty.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cli::*;
use common::*;

const USER: &str = "mia";
const PW: &str = "Mia-pw-3kQ";

/// OLD and NEW with one user, and the proxy migrating between them (a process, so tests can
/// restart it), its state file in `dir`.
struct Setup<O: ImapServer> {
    old: O,
    new: Dovecot,
    dir: tempfile::TempDir,
    proxy: Option<ProxyProc>,
    /// Extra keys of `[old]`, `[new]` and `[migration]`.
    extra: [String; 3],
}

impl<O: ImapServer> Setup<O> {
    fn start(old: O, new: Dovecot) -> Setup<O> {
        Setup::start_with(old, new, Default::default())
    }

    fn start_with(old: O, new: Dovecot, extra: [String; 3]) -> Setup<O> {
        old.add_user(USER, PW);
        new.add_user(USER, PW);
        let mut s = Setup {
            old,
            new,
            dir: tempfile::tempdir().unwrap(),
            proxy: None,
            extra,
        };
        s.restart_proxy();
        s
    }

    fn config(&self) -> String {
        self.dir.path().join("proxy.toml").display().to_string()
    }

    /// `imapferry ARGS` with this setup's configuration.
    fn imapferry(&self, args: &[&str]) -> Outcome {
        let mut all = strings(args);
        all.extend(strings(&["--config", &self.config()]));
        run_at(&binary(), self.dir.path(), &all, &[])
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    fn restart_proxy(&mut self) {
        self.proxy = None;
        let [old_extra, new_extra, migration] = &self.extra;
        let config = format!(
            "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n{new_extra}\n\
             [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n{old_extra}\n\
             [state]\npath = \"{}\"\n[migration]\nselect_budget_ms = 10000\n{migration}\n",
            self.new.port(),
            self.old.port(),
            self.state().display()
        );
        self.proxy = Some(ProxyProc::start(&binary(), self.dir.path(), &config));
    }

    fn client(&self) -> RawImap {
        let mut c = RawImap::connect("127.0.0.1", self.proxy.as_ref().unwrap().port);
        c.login(USER, PW);
        c
    }

    fn direct_old(&self) -> RawImap {
        let mut c = RawImap::connect(self.old.host(), self.old.port());
        c.login(USER, PW);
        c
    }

    fn log(&self) -> String {
        self.proxy.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    /// Waits until the journal is empty (every entry mirrored to OLD), then checks OLD equals
    /// NEW: folders, bytes, flags, dates and subscriptions.
    fn assert_mirrored(&self) {
        let start = Instant::now();
        loop {
            let summaries = summaries(&self.state());
            let pending: u64 = summaries.iter().map(|a| a.pending_journal).sum();
            let parked: u64 = summaries.iter().map(|a| a.parked_journal).sum();
            assert_eq!(
                parked,
                0,
                "parked journal entries: {summaries:?}\n{}",
                self.log()
            );
            if pending == 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the journal did not drain: {summaries:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_same_mail(
            &snapshot(&self.old, USER, PW),
            &snapshot(&self.new, USER, PW),
        );
    }
}

fn summaries(state: &std::path::Path) -> Vec<imapferry::store::AccountSummary> {
    use imapferry::store::{SqliteStore, Store};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = SqliteStore::open_existing(state).await.unwrap();
        let summaries = store.account_summaries().await.unwrap();
        store.close().await;
        summaries
    })
}

fn fill(c: &mut RawImap, folder: &str, first: u64, n: u64) {
    for i in first..first + n {
        c.append(folder, &["\\Seen"], None, &message(i, 900));
    }
}

/// `SELECT INBOX`, then `SELECT {1+}\r\nA`, then `UID MOVE 1 B`: the move is A's, on OLD too.
/// Every command that names a folder does so by literal here.
#[test]
fn folders_named_by_literals_are_mirrored_where_the_user_acted() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    for f in ["A", "B"] {
        old.create(f);
    }
    fill(&mut old, "INBOX", 0, 2);
    fill(&mut old, "A", 10, 2);
    old.logout();

    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 2);
    let (_, ok) = c.command("SELECT {1+}\r\nA");
    assert!(ok.starts_with("OK"), "{ok}");
    let (_, ok) = c.command("UID MOVE 1 {1+}\r\nB");
    assert!(ok.starts_with("OK"), "{ok}");
    let (_, ok) = c.command("UID STORE 2 +FLAGS.SILENT (\\Flagged)");
    assert!(ok.starts_with("OK"), "{ok}");
    for cmd in [
        "CREATE {4+}\r\nNew1",
        "RENAME {4+}\r\nNew1 {4+}\r\nNew2",
        "SUBSCRIBE {4+}\r\nNew2",
    ] {
        let (_, ok) = c.command(cmd);
        assert!(ok.starts_with("OK"), "{cmd}: {ok}");
    }
    c.logout();
    s.assert_mirrored();
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(
        (on_old.count("INBOX"), on_old.count("A"), on_old.count("B")),
        (2, 1, 1)
    );
    assert_eq!(on_old.with_flag("\\Flagged"), 1);
    assert!(on_old.folders.contains_key("New2") && on_old.subscribed.contains("New2"));
}

/// `CREATE "foo/"` then `DELETE foo`, and the DELETE of a folder nobody opened: OLD loses both,
/// and neither comes back on NEW after a proxy restart.
#[test]
fn deleted_folders_stay_deleted() {
    let mut s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    old.create("Unopened");
    fill(&mut old, "Unopened", 0, 3);
    old.logout();

    let mut c = s.client();
    for cmd in ["CREATE \"foo/\"", "DELETE foo", "DELETE Unopened"] {
        let (_, ok) = c.command(cmd);
        assert!(ok.starts_with("OK"), "{cmd}: {ok}");
    }
    c.logout();
    s.assert_mirrored();
    let on_old = snapshot(&s.old, USER, PW);
    assert!(!on_old.folders.contains_key("foo") && !on_old.folders.contains_key("Unopened"));

    s.restart_proxy();
    let mut c = s.client();
    let names: Vec<String> = c.list().into_iter().map(|(_, _, n)| n).collect();
    assert!(
        !names.iter().any(|n| n == "foo" || n == "Unopened"),
        "{names:?}"
    );
    c.logout();
    s.assert_mirrored();
}

/// APPEND into X, then RENAME X to Y before the mirror ran: the message reaches OLD, in Y.
#[test]
fn append_then_rename_reaches_old() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = s.client();
    c.create("X");
    // Both in one write, so the mirror cannot run between them.
    let (_, ok) = c.command(&format!(
        "APPEND X (\\Seen) {{{}+}}\r\n{}\r\nt9 RENAME X Y",
        message(1, 700).len(),
        String::from_utf8(message(1, 700)).unwrap()
    ));
    assert!(ok.starts_with("OK"), "{ok}");
    c.logout();
    s.assert_mirrored();
    assert_eq!(snapshot(&s.old, USER, PW).count("Y"), 1);
}

/// Courier as OLD refuses an APPEND to the mailbox its connection has EXAMINEd; the proxy's OLD
/// connection is in that state after a backfill. Saving to INBOX and to Sent through the proxy
/// still reaches OLD.
#[test]
fn courier_as_old_gets_what_the_user_saves() {
    let old = Courier::start();
    let s = Setup::start(old, Dovecot::start(Layout::DotInbox));
    let mut old = s.direct_old();
    // The folders Dovecot (NEW) makes by itself exist on OLD too, so both trees compare.
    for f in ["Drafts", "Sent", "Trash", "Junk", "Archive"] {
        old.create(&format!("INBOX.{f}"));
    }
    for f in ["Drafts", "Sent", "Trash"] {
        old.subscribe(&format!("INBOX.{f}"));
    }
    fill(&mut old, "INBOX", 0, 3);
    fill(&mut old, "INBOX.Sent", 10, 2);
    old.logout();

    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 3);
    c.append("INBOX", &["\\Seen"], None, &message(100, 800));
    assert_eq!(c.select("INBOX.Sent"), 2);
    c.append("INBOX.Sent", &["\\Seen"], None, &message(101, 800));
    c.logout();
    s.assert_mirrored();
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("INBOX"), on_old.count("Sent")), (4, 3));
}

/// One OLD folder that cannot be backfilled (it vanished on OLD after the tree was mapped) does
/// not hide the others: Archive and Sent, opened next, show their mail.
#[test]
fn one_failing_folder_does_not_hide_the_others() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    old.create("Doomed");
    fill(&mut old, "Archive", 0, 3);
    fill(&mut old, "Sent", 10, 2);
    old.logout();

    let mut c = s.client();
    // The tree is mapped at login; Doomed then disappears from OLD behind the proxy's back.
    let mut old = s.direct_old();
    old.exec("DELETE Doomed");
    old.logout();
    assert_eq!(c.select("Doomed"), 0);
    assert_eq!(c.select("Archive"), 3, "{}", s.log());
    assert_eq!(c.select("Sent"), 2, "{}", s.log());
    c.logout();
    let status = run_at(
        &binary(),
        s.dir.path(),
        &strings(&[
            "status",
            "--config",
            s.dir.path().join("proxy.toml").to_str().unwrap(),
        ]),
        &[],
    );
    assert!(
        status.stdout.contains("folder Doomed:"),
        "{}",
        status.stdout
    );
}

/// A journal entry OLD will never take (its folder vanished on OLD behind the proxy) is retried,
/// then parked: the account is `diverged`, `status` says why, and `imapferry reconcile` brings
/// OLD back in line with NEW (the folder and its flags come back from NEW) and clears it.
#[test]
fn a_parked_entry_diverges_the_account_until_reconcile() {
    let master = ("migrator".to_string(), "Master-pw-1".to_string());
    let with_master = || {
        Dovecot::start_with(DovecotOptions {
            master: Some(master.clone()),
            ..Default::default()
        })
    };
    let (old, new) = (with_master(), with_master());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("master.secret");
    std::fs::write(&secret, &master.1).unwrap();
    let login = format!(
        "master_user = \"{}\"\nmaster_password_file = \"{}\"",
        master.0,
        secret.display()
    );
    let s = Setup::start_with(
        old,
        new,
        [
            format!("auth = \"master\"\n{login}"),
            login,
            "mirror_attempts = 1\nmirror_retry_secs = 1".into(),
        ],
    );
    let logins = s.dir.path().join("logins.txt");
    std::fs::write(&logins, format!("{USER}\n")).unwrap();
    s.imapferry(&["accounts", "import", logins.to_str().unwrap()])
        .assert_code(0);
    let mut old = s.direct_old();
    old.create("A");
    fill(&mut old, "A", 0, 3);
    old.logout();

    let mut c = s.client();
    assert_eq!(c.select("A"), 3);
    let mut old = s.direct_old();
    old.exec("DELETE A");
    old.logout();
    let (_, ok) = c.command("UID STORE 2 +FLAGS (\\Flagged)");
    assert!(ok.starts_with("OK"), "{ok}");
    c.logout();

    let start = Instant::now();
    let diverged = loop {
        let a = summaries(&s.state()).remove(0);
        if a.state == imapferry::store::AccountState::Diverged {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{a:?}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(diverged.parked_journal, 1);
    let reason = diverged.reason.unwrap_or_default();
    assert!(
        reason.contains("(flags) could not be applied to OLD"),
        "{reason}"
    );
    let status = s.imapferry(&["status", USER]);
    assert!(status.stdout.contains("diverged"), "{}", status.stdout);

    let fixed = s.imapferry(&["reconcile", USER]);
    fixed.assert_code(0);
    assert!(
        fixed.stdout.contains("3 copied back from NEW"),
        "{}",
        fixed.stdout
    );
    let a = summaries(&s.state()).remove(0);
    assert_eq!(
        (a.state, a.parked_journal),
        (imapferry::store::AccountState::Partial, 0)
    );
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("A"), on_old.with_flag("\\Flagged")), (3, 1));
    s.assert_mirrored();
}
