//! OLD stays a faithful mirror through the migration proxy (issue 11): folders named any way a
//! client can name them, structure changes of folders never opened, APPEND then RENAME, Courier
//! as OLD, one OLD error not hiding other folders. Every test ends with OLD equal to NEW once the
//! journal is empty.

mod common;
use common::seed::Rng;
use common::state::{account_summaries, folder_summaries};

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
        let filter = std::env::var("PROXY_LOG").unwrap_or_else(|_| "info".into());
        self.restart_proxy_logging(&filter);
    }

    /// [`Setup::restart_proxy`] with the log filter `filter` (`RUST_LOG` syntax).
    fn restart_proxy_logging(&mut self, filter: &str) {
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
        self.proxy = Some(ProxyProc::start_logging(
            &binary(),
            self.dir.path(),
            &config,
            filter,
        ));
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
    /// NEW: folders, bytes, flags, dates and subscriptions. (What once made the drain wait
    /// two minutes here was a maildir lock left by the SIGKILLed OLD; `Dovecot::kill_all` now
    /// removes it.)
    fn assert_mirrored(&self) {
        self.wait_drained();
        let report = mail_diff(
            &snapshot(&self.old, USER, PW),
            &snapshot(&self.new, USER, PW),
        );
        assert!(
            report.is_empty(),
            "OLD (left) and NEW (right) differ:\n{report}\n{}",
            self.log()
        );
    }

    /// Waits until the journal is empty (every entry mirrored to OLD), none parked.
    fn wait_drained(&self) {
        let start = Instant::now();
        loop {
            let summaries = account_summaries(&self.state());
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
                start.elapsed() < Duration::from_secs(180),
                "the journal did not drain: {summaries:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
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

/// The destination UID of the `COPYUID` response code (`OK [COPYUID 7 1 151] ...`) in a
/// COPY's tagged answer or a MOVE's untagged one.
fn copied_to((untagged, tagged): (Vec<Vec<u8>>, String)) -> u32 {
    let untagged = untagged
        .iter()
        .map(|u| String::from_utf8_lossy(u).to_string());
    [tagged.clone()]
        .into_iter()
        .chain(untagged.filter_map(|u| u.strip_prefix("* ").map(String::from)))
        .find_map(|line| {
            line.strip_prefix("OK [COPYUID ")?
                .split([' ', ']'])
                .nth(2)?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no COPYUID: {tagged}"))
}

/// Dovecot acts on a command once it has its arguments, before the line's CRLF: a command
/// naming its destination by a literal must reach NEW only after the proxy has filled that
/// folder from OLD and set the write-ahead mark. Each copy lands above OLD's mail and is
/// journaled (OLD needs no reconcile), whether the literal is LITERAL+, synchronising, or
/// the line's end comes in a later segment. A literal after a command's last argument is
/// refused: NEW would act on the command before the proxy has seen it.
#[test]
fn a_command_naming_its_folder_by_literal_waits_for_that_folder() {
    const N: u64 = 150;
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    for f in ["A", "B", "C", "D"] {
        old.create(f);
    }
    fill(&mut old, "A", 0, 3);
    for f in ["B", "C", "D"] {
        fill(&mut old, f, 100, N);
    }
    old.logout();

    let mut c = s.client();
    assert_eq!(c.select("A"), 3);
    let answer = c.command("UID COPY 1 {1+}\r\nB");
    assert_eq!(copied_to(answer), N as u32 + 1, "LITERAL+");
    let tag = c.start("UID MOVE 2 {1}");
    c.continuation(&tag).unwrap();
    c.write_raw(b"C\r\n");
    assert_eq!(
        copied_to(c.answer(&tag)),
        N as u32 + 1,
        "synchronising literal"
    );
    let tag = c.start("UID COPY 3 {1+}");
    c.write_raw(b"D");
    // A slow client: the line's end in a segment of its own.
    std::thread::sleep(Duration::from_millis(200));
    c.write_raw(b"\r\n");
    assert_eq!(copied_to(c.answer(&tag)), N as u32 + 1, "CRLF sent later");
    // A literal after a complete command: NEW would act before the proxy saw the command.
    let tag = c.start("CREATE Extra {1}");
    let refused = c.continuation(&tag).unwrap_err();
    assert!(refused.starts_with("BAD"), "{refused}");
    c.logout();
    let mut c = s.client();
    let tag = c.start("DELETE B junk {1+}");
    c.write_raw(b"x\r\n");
    let bye = c.tagged_or_bye(&tag);
    assert!(bye.starts_with("* BYE"), "{bye}");

    s.assert_mirrored();
    let on_old = snapshot(&s.old, USER, PW);
    let counts = ["A", "B", "C", "D"].map(|f| on_old.count(f));
    let n = N as usize;
    assert_eq!(counts, [2, n + 1, n + 1, n + 1]);
    assert!(!on_old.folders.contains_key("Extra"));
    assert!(!s.log().contains("diverges"), "{}", s.log());
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

/// The messages of a client's APPENDs reach OLD as the proxy relayed them to NEW, without the
/// mirror reading them back (up to 64 KiB each); where the client gave no INTERNALDATE the proxy
/// gave NEW one, which OLD gets too. A larger message is read back from NEW.
#[test]
fn appended_messages_reach_old_as_the_proxy_relayed_them() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = s.client();
    c.create("Outbox");
    // The first APPEND a process mirrors is replayed with care, read from NEW (see
    // `a_replayed_append_is_not_appended_twice`).
    c.append("Outbox", &[], None, &message(0, 1_000));
    s.assert_mirrored();
    s.new.commands(true);
    let dated = Some("01-Feb-2024 10:00:00 +0100");
    for (i, flags, date, size) in [
        (1, &["\\Seen"][..], None, 3_000),
        (2, &["$Label", "\\Flagged"][..], dated, 40_000),
        (3, &[][..], None, 100_000),
    ] {
        let uid = c.append("Outbox", flags, date, &message(i, size));
        assert!(uid.is_some(), "APPENDUID for message {i}");
    }
    c.logout();
    s.wait_drained();
    let examined = s.new.commands(false).get("EXAMINE").copied();
    assert_eq!(
        examined,
        Some(1),
        "NEW examined once, for the message over 64 KiB\n{}",
        s.log()
    );
    s.assert_mirrored();
    assert_eq!(snapshot(&s.old, USER, PW).count("Outbox"), 4);
}

/// One client copying and moving messages whose flags it changed: each COPY and MOVE was alone
/// on NEW (no other write of the account in flight), so NEW's copies have the flags the journal
/// gives their sources, and the mirror copies and moves on OLD without reading NEW. OLD ends as
/// NEW though a source's flags changed after its COPY (NEW's copy never got that) and a copy's
/// after its MOVE.
#[test]
fn copies_a_client_made_alone_reach_old_without_reading_new() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = opened(&s, &[("B", 0), ("INBOX", 4)]);
    // The first COPY a process mirrors is replayed with care, which reads NEW (and so the
    // stamps of the COPYs journaled meanwhile no longer hold).
    c.exec("UID COPY 4 B");
    s.assert_mirrored();
    s.new.commands(true);
    c.exec("UID STORE 1 -FLAGS (\\Seen)");
    c.exec("UID STORE 2 +FLAGS (\\Flagged $Later)");
    c.exec("UID COPY 1:2 B");
    c.exec("UID STORE 1 +FLAGS (\\Seen)");
    c.exec("UID STORE 2 -FLAGS (\\Flagged)");
    c.exec("UID MOVE 3 B");
    c.exec("UID COPY 4 INBOX");
    c.logout();
    s.wait_drained();
    let examined = s.new.commands(false).get("EXAMINE").copied().unwrap_or(0);
    assert_eq!(examined, 0, "NEW was not examined\n{}", s.log());
    s.assert_mirrored();
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("INBOX"), on_old.count("B")), (4, 4));
}

/// Courier-IMAP as OLD, Dovecot with Courier's layout as NEW; the folders Dovecot makes by
/// itself exist on OLD too, so both trees compare.
fn with_courier() -> Setup<Courier> {
    let s = Setup::start(Courier::start(), Dovecot::start(Layout::DotInbox));
    let mut old = s.direct_old();
    for f in ["Drafts", "Sent", "Trash", "Junk", "Archive"] {
        old.create(&format!("INBOX.{f}"));
    }
    for f in ["Drafts", "Sent", "Trash"] {
        old.subscribe(&format!("INBOX.{f}"));
    }
    old.logout();
    s
}

/// Courier as OLD refuses an APPEND to the mailbox its connection has EXAMINEd; the proxy's OLD
/// connection is in that state after a backfill. Saving to INBOX and to Sent through the proxy
/// still reaches OLD.
#[test]
fn courier_as_old_gets_what_the_user_saves() {
    let s = with_courier();
    let mut old = s.direct_old();
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
    // Without `keep_client_caches`: with it, a folder whose copy keeps failing is not shown at
    // all (NO [UNAVAILABLE], tests/proxy_uids.rs), where this shows NEW's empty folder.
    let s = Setup::start_with(
        Dovecot::start(Layout::Slash),
        Dovecot::start(Layout::Slash),
        [
            String::new(),
            String::new(),
            "keep_client_caches = false".into(),
        ],
    );
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
    let (s, _secret) = with_master(Layout::Slash, "mirror_attempts = 1\nmirror_retry_secs = 1");
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
        let a = account_summaries(&s.state()).remove(0);
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

    reconciled(&s, 3);
    let a = account_summaries(&s.state()).remove(0);
    assert_eq!(
        (a.state, a.parked_journal),
        (imapferry::store::AccountState::Partial, 0)
    );
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("A"), on_old.with_flag("\\Flagged")), (3, 1));
    s.assert_mirrored();
}

/// A client that sends writes and goes without waiting for their answers (a phone losing its
/// network): NEW's answers are still read and the writes journaled, so the mirror takes them
/// to OLD and the account needs no reconcile. Before, the session ended with the client and
/// NEW's answers were never read: the account was marked for a reconcile.
#[test]
fn writes_whose_client_left_before_the_answers_are_journaled() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = opened(&s, &[("INBOX", 3)]);
    c.write_raw(b"w1 UID STORE 2 +FLAGS (\\Flagged)\r\nw2 UID COPY 2 INBOX\r\n");
    drop(c);
    // With `auth = "same"` the mirror reaches OLD while the user is logged in.
    let again = s.client();
    let start = Instant::now();
    while snapshot(&s.old, USER, PW).with_flag("\\Flagged") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "OLD did not get the writes\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.assert_mirrored();
    again.logout();
    let log = s.log();
    assert!(!log.contains("before NEW answered"), "{log}");
}

/// A COPY and a MOVE of messages OLD has linked are mirrored without a warning: no part of
/// them is an APPEND (a COPY appends to OLD only sources it has no link for; once it called
/// the append with none, which warned that an APPEND without APPENDUID is not mirrored).
#[test]
fn copies_of_linked_messages_are_mirrored_without_a_warning() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = opened(&s, &[("B", 0), ("INBOX", 2)]);
    c.exec("UID COPY 1 B");
    c.exec("UID MOVE 2 B");
    c.logout();
    s.assert_mirrored();
    let log = s.log();
    assert!(!log.contains(" WARN "), "{log}");
}

/// The mirror keeps the folder pairs it read between drains. A pair deleted and made again by
/// another process (a reconcile, a pass) behind the proxy's back gets a new id: the kept one
/// would name no links, and the next STORE would reach nothing on OLD, silently. The pair
/// epoch read with the journal makes the mirror read the pair again.
#[test]
fn a_pair_made_again_behind_the_proxys_back_is_read_again() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = opened(&s, &[("Work", 3)]);
    c.uid_store("Work", 1, "+FLAGS", &["\\Flagged"]);
    s.assert_mirrored();
    let state = s.state();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use imapferry::store::{SqliteStore, Store};
        let store = SqliteStore::open(&state).await.unwrap();
        let account = store.account_summaries().await.unwrap()[0].id;
        let pairs = store.folder_pairs(account).await.unwrap();
        let work = pairs.iter().find(|p| p.new_name == "Work").unwrap();
        let links = store.links(work.id).await.unwrap();
        store.delete_pair(work.id).await.unwrap();
        // (SQLite would give the freed id to the next pair made: another folder's takes it.)
        store.folder_pair(account, "Other", "Other").await.unwrap();
        let (old, new) = (&work.old_name, &work.new_name);
        let again = store.folder_pair(account, old, new).await.unwrap();
        assert_ne!(again.id, work.id);
        store.add_links(again.id, &links).await.unwrap();
        // As it was: no pass has cause to look at the folder again (and mend OLD by itself).
        let (old, new, from) = (work.old, work.new, work.adopt_from);
        let saved = store.save_pair_state(again.id, old, new, from, work.phase);
        saved.await.unwrap();
        store.close().await;
    });
    c.uid_store("Work", 2, "+FLAGS", &["\\Answered"]);
    s.assert_mirrored();
    c.logout();
}

/// `[migration] mirror_paused` (OLD's maintenance): the user's writes are answered and journaled,
/// OLD gets none of them, the proxy's own reconcile refuses to write to it; the reload that
/// resumes the mirror replays them all.
#[test]
fn writes_made_while_the_mirror_is_paused_reach_old_once_it_resumes() {
    let paused = "mirror_paused = true";
    let (mut s, _secret) = with_master(Layout::Slash, paused);
    s.restart_proxy_logging("info,imapferry::migrate=debug");
    let mut c = opened(&s, &[("B", 0), ("INBOX", 3)]);
    c.exec("UID STORE 1 +FLAGS.SILENT (\\Flagged)");
    c.exec("UID COPY 1 B");
    c.exec("UID MOVE 2 B");
    // The mirror's worker, woken by the writes, found them waiting and left them.
    let start = Instant::now();
    while !s
        .log()
        .lines()
        .any(|l| l.contains("the mirror is paused") && l.contains("waiting=3"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the mirror did not look at the journal\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(
        (
            on_old.count("INBOX"),
            on_old.count("B"),
            on_old.with_flag("\\Flagged")
        ),
        (3, 0, 0),
        "OLD was written while the mirror was paused"
    );
    assert_eq!(account_summaries(&s.state())[0].pending_journal, 3);
    c.logout();
    let reconcile = s.imapferry(&["reconcile", USER]);
    reconcile.assert_code(1);
    assert!(
        reconcile.all().contains("mirror_paused"),
        "{}",
        reconcile.all()
    );

    let text = std::fs::read_to_string(s.config()).unwrap();
    std::fs::write(s.config(), text.replace(paused, "mirror_paused = false")).unwrap();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &s.proxy.as_ref().unwrap().pid().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    s.assert_mirrored();
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(
        (
            on_old.count("INBOX"),
            on_old.count("B"),
            on_old.with_flag("\\Flagged")
        ),
        (2, 2, 2)
    );
    let log = s.log();
    assert!(log.contains("changed: migration.mirror_paused"), "{log}");
}

/// OLD (in `old_layout`) and NEW with a master user the proxy logs in with (`auth = "master"`),
/// so `imapferry reconcile` can log in too; the user imported; `migration`: more keys of
/// `[migration]`. The directory returned holds the master password's file.
fn with_master(old_layout: Layout, migration: &str) -> (Setup<Dovecot>, tempfile::TempDir) {
    let master = ("migrator".to_string(), "Master-pw-1".to_string());
    let start = |layout| {
        Dovecot::start_with(DovecotOptions {
            layout,
            master: Some(master.clone()),
            ..Default::default()
        })
    };
    let (old, new) = (start(old_layout), start(Layout::Slash));
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
            migration.into(),
        ],
    );
    let logins = s.dir.path().join("logins.txt");
    std::fs::write(&logins, format!("{USER}\n")).unwrap();
    s.imapferry(&["accounts", "import", logins.to_str().unwrap()])
        .assert_code(0);
    (s, dir)
}

/// `imapferry reconcile` against an OLD without UIDPLUS: what it copies from NEW to OLD is
/// found by identity key and linked, so the user's later deletion reaches OLD's copy too.
/// Before, it stayed unlinked: OLD kept it, and the next pass copied it back to NEW.
#[test]
fn without_uidplus_what_reconcile_copies_to_old_goes_with_the_users_deletion() {
    let (s, _secret) = with_master(Layout::Reduced, "");
    opened(&s, &[("INBOX", 2)]).logout();
    // Mail NEW got behind the proxy's back.
    let mut new = RawImap::connect(s.new.host(), s.new.port());
    new.login(USER, PW);
    let uid = new.append("INBOX", &[], None, &message(60, 900)).unwrap();
    reconciled(&s, 1);
    let mut c = s.client();
    c.select("INBOX");
    c.uid_expunge("INBOX", uid);
    c.logout();
    s.assert_mirrored();
    assert_eq!(new.status("INBOX").0, 2, "the deleted message came back");
}

/// `imapferry reconcile` killed after OLD stored what it appended from NEW and before it heard
/// OLD's answer: the folder's next pass adopts OLD's copy by identity key and links it to NEW's,
/// rather than copying it to NEW a second time. The message came to NEW behind the proxy's back,
/// and a pass for mail OLD got since has moved the adoption watermark past it.
#[test]
fn a_reconcile_killed_after_olds_append_leaves_no_second_copy_on_new() {
    let (s, _secret) = with_master(Layout::Slash, "");
    let mut c = opened(&s, &[("INBOX", 2)]);
    let (mut new, mut old) = on_new_behind_a_pass(&s, &mut c, "INBOX", &message(60, 900));

    reconcile_killed_at(&s, "APPEND");
    assert_eq!(new.status("INBOX").0, 4);
    assert_eq!(old.status("INBOX").0, 4, "OLD stored the APPEND");
    old.logout();
    // The folder's next pass (it is under live pickup, and selected again) links it.
    next_pass_of(&s, c, "INBOX", 5);
    assert_eq!(new.status("INBOX").0, 4, "a second copy on NEW");
}

/// As above, for the reconcile's other write to OLD that a link follows: a MOVE of OLD's
/// unlinked message to the folder NEW has it in (the user's move the journal lost). Cut off
/// after OLD's MOVE, the next pass of the destination adopts the moved message.
#[test]
fn a_reconcile_killed_after_olds_move_leaves_no_second_copy_on_new() {
    let (mut s, _secret) = with_master(Layout::Slash, "");
    let mut c = opened(&s, &[("INBOX", 1), ("B", 1)]);
    let moving = message(60, 900);
    let (mut new, mut old) = on_new_behind_a_pass(&s, &mut c, "B", &moving);
    c.logout();
    // With the proxy stopped, OLD's INBOX gets the message NEW has in B (the lost move).
    s.proxy = None;
    old.append("INBOX", &[], Some(DATE), &moving).unwrap();

    reconcile_killed_at(&s, "MOVE");
    assert_eq!(old.status("B").0, 3, "OLD did the MOVE");
    old.logout();
    s.restart_proxy();
    next_pass_of(&s, s.client(), "B", 4);
    assert_eq!(new.status("B").0, 3, "a second copy on NEW");
}

/// And for a linked message OLD lost, which the reconcile copies back from NEW: cut off after
/// OLD's APPEND, NEW's message keeps its UID (the next pass adopts OLD's copy). Before, its
/// link still named OLD's lost message, so the next pass took it as deleted on OLD: it would
/// delete NEW's message and copy OLD's back under another UID (here, half of the folder, it
/// stopped at the deletion limit instead).
#[test]
fn a_reconcile_killed_after_copying_back_leaves_news_message_as_it_was() {
    let (mut s, _secret) = with_master(Layout::Slash, "");
    opened(&s, &[("INBOX", 2)]).logout();
    s.proxy = None;
    let mut old = s.direct_old();
    old.uid_expunge("INBOX", 1);
    old.logout();

    reconcile_killed_at(&s, "APPEND");
    let mut old = s.direct_old();
    assert_eq!(old.status("INBOX").0, 2, "OLD stored the APPEND");
    old.logout();
    s.restart_proxy();
    next_pass_of(&s, s.client(), "INBOX", 4);
    let mut new = RawImap::connect(s.new.host(), s.new.port());
    new.login(USER, PW);
    let uids: Vec<u32> = new.uid_fetch_all("INBOX").iter().map(|m| m.uid).collect();
    assert_eq!(uids, [1, 2]);
}

/// The internal date of messages put on both sides by hand, so they compare equal.
const DATE: &str = "01-Dec-2026 10:00:00 +0000";

/// NEW gets `msg` in folder `name` behind the proxy's back, and OLD another message there;
/// the client selects the folder and the pass that follows moves the adoption watermark past
/// NEW's message. Returns logged-in connections to NEW and OLD.
fn on_new_behind_a_pass(
    s: &Setup<Dovecot>,
    c: &mut RawImap,
    name: &str,
    msg: &[u8],
) -> (RawImap, RawImap) {
    let mut new = RawImap::connect(s.new.host(), s.new.port());
    new.login(USER, PW);
    let uid = new.append(name, &[], Some(DATE), msg).unwrap();
    let mut old = s.direct_old();
    fill(&mut old, name, 61, 1);
    c.select(name);
    wait_until(
        "a pass that saw NEW's message",
        Duration::from_secs(30),
        || folder(&s.state(), name).pair.adopt_from > uid,
    );
    (new, old)
}

/// Client `c` selects folder `name` and waits for a pass that saw OLD's UIDNEXT at `uidnext`
/// or past; then OLD must equal NEW.
fn next_pass_of(s: &Setup<Dovecot>, mut c: RawImap, name: &str, uidnext: u32) {
    c.select(name);
    let start = Instant::now();
    loop {
        let pair = folder(&s.state(), name).pair;
        if pair.old.is_some_and(|o| o.uidnext >= uidnext) {
            break;
        }
        let waited = start.elapsed();
        assert!(waited < Duration::from_secs(30), "{pair:?}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    c.logout();
    s.assert_mirrored();
}

/// The summary of the state file's folder `name` (its NEW name).
fn folder(state: &std::path::Path, name: &str) -> imapferry::store::FolderSummary {
    folder_summaries(state)
        .into_iter()
        .find(|f| f.pair.new_name == name)
        .unwrap()
}

/// Runs `imapferry reconcile` for the user with OLD behind a [`Cutoff`] at `command`, and
/// kills it (SIGKILL) once OLD has answered that command.
fn reconcile_killed_at(s: &Setup<Dovecot>, command: &'static str) {
    let cutoff = Cutoff::start(s.old.host(), s.old.port(), command);
    let config = std::fs::read_to_string(s.config()).unwrap().replace(
        &format!("127.0.0.1:{}", s.old.port()),
        &format!("127.0.0.1:{}", cutoff.port),
    );
    let cut_config = s.dir.path().join("cut.toml");
    std::fs::write(&cut_config, config).unwrap();
    let mut reconcile = std::process::Command::new(binary())
        .args(["reconcile", USER, "--config", cut_config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answer = cutoff.wait_answered(Duration::from_secs(30));
    eprintln!("OLD's answer, kept from the reconcile: {answer}");
    reconcile.kill().unwrap();
    reconcile.wait().unwrap();
}

/// Runs `imapferry reconcile` for the user: it succeeds and copies `copied` messages from NEW.
fn reconciled(s: &Setup<Dovecot>, copied: u32) {
    let fixed = s.imapferry(&["reconcile", USER]);
    fixed.assert_code(0);
    let said = format!("{copied} copied from NEW");
    assert!(fixed.stdout.contains(&said), "{}", fixed.stdout);
}

/// The backfill never takes `\Recent` from the user: new mail copied from OLD is recent in the
/// user's first SELECT through the proxy, as it would be on OLD. NEW here lacks UNSELECT (and
/// UIDPLUS, MULTIAPPEND, ...), the case where a pass that SELECTs NEW read-write keeps it
/// selected while it appends.
#[test]
fn the_backfill_leaves_recent_to_the_user() {
    let s = Setup::start(
        Dovecot::start(Layout::Slash),
        Dovecot::start(Layout::Reduced),
    );
    let mut old = s.direct_old();
    fill(&mut old, "INBOX", 0, 2);
    old.logout();
    let mut c = s.client();
    let (untagged, ok) = c.raw("SELECT INBOX");
    assert!(ok.starts_with("OK"), "{ok}");
    assert!(untagged.iter().any(|l| l == "* 2 RECENT"), "{untagged:?}");
    // The live pickup keeps copying without taking it either: the session sees it arrive as
    // recent, as it would on OLD.
    let mut old = s.direct_old();
    fill(&mut old, "INBOX", 10, 1);
    old.logout();
    let untagged = wait_for(&mut c, "INBOX", 3, &|| s.log());
    assert!(untagged.iter().any(|l| l == "* 3 RECENT"), "{untagged:?}");
    c.logout();
}

/// NOOPs in `folder` until it holds `n` messages (the live pickup copies OLD's new mail).
/// Returns the untagged responses of the NOOP that saw it.
fn wait_for(c: &mut RawImap, folder: &str, n: u32, log: &dyn Fn() -> String) -> Vec<String> {
    let start = Instant::now();
    loop {
        let (untagged, _) = c.raw("NOOP");
        if untagged.iter().any(|l| l == &format!("* {n} EXISTS")) {
            return untagged;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{folder} never reached {n}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A write the state store cannot commit within 5 s is not confirmed: the client gets `* BYE`
/// instead of the tagged OK (NEW has the write); as soon as the store takes writes again the
/// account is marked diverged and the proxy reconciles OLD with NEW by itself.
#[test]
fn a_write_that_cannot_be_journaled_is_never_confirmed() {
    use std::io::{BufRead, BufReader, Write};
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    fill(&mut old, "INBOX", 0, 1);
    old.logout();
    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 1);
    // A first write puts the account's write-ahead mark in the store (it stays while writes
    // follow within seconds, and cannot be cleared while the file is held).
    let (_, ok) = c.command("UID STORE 1 +FLAGS (\\Answered)");
    assert!(ok.starts_with("OK"), "{ok}");
    // Held longer than the two commits a session may wait for (the one running when it asks,
    // then its own, 5 s each): a commit started while the file was held, and which would get
    // the lock before its 5 s ran out, would confirm the write.
    let mut holder = hold_state(&s.state(), 12);
    let mut raw =
        std::net::TcpStream::connect(("127.0.0.1", s.proxy.as_ref().unwrap().port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(raw.try_clone().unwrap());
    let mut lines = Vec::new();
    let mut read = |lines: &mut Vec<String>| {
        let mut l = String::new();
        let n = reader.read_line(&mut l).unwrap();
        lines.push(l.trim_end().to_string());
        n
    };
    read(&mut lines);
    raw.write_all(
        format!("a LOGIN {USER} {PW}\r\nb SELECT INBOX\r\nc UID STORE 1 +FLAGS (\\Flagged)\r\n")
            .as_bytes(),
    )
    .unwrap();
    while read(&mut lines) > 0 {}
    assert!(lines.iter().any(|l| l.starts_with("* BYE")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("c OK")), "{lines:?}");
    // The BYE came after the bounded wait for the store (not at once, for another reason).
    let log = s.log();
    assert!(
        log.contains("did not commit the journal entry within 5 s: timed out"),
        "{log}"
    );
    holder.wait().unwrap();
    // NEW has the write; once the store takes writes again the account is marked diverged and
    // OLD is reconciled with NEW by the proxy itself: it gets the flag, the account leaves
    // `diverged`.
    assert_eq!(snapshot(&s.new, USER, PW).with_flag("\\Flagged"), 1);
    let start = Instant::now();
    while !s.log().contains("OLD reconciled with NEW by itself")
        || snapshot(&s.old, USER, PW).with_flag("\\Flagged") != 1
    {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", s.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        s.log()
            .contains("OLD diverges from NEW: a flags NEW accepted could not be journaled")
    );
    assert_ne!(
        account_summaries(&s.state())[0].state,
        imapferry::store::AccountState::Diverged
    );
    c.logout();
}

/// Another writer holds the state file for `secs` seconds (or until killed).
fn hold_state(state: &std::path::Path, secs: u32) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\n\
             c=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); \
             time.sleep(int(sys.argv[2])); c.execute('COMMIT')",
        ])
        .arg(state)
        .arg(secs.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    holder
}

/// A MOVE NEW did while the state file was held, so its journal entry never committed: OLD's
/// copy keeps a link to a NEW message that is gone, and NEW's copy in Trash has none. Either
/// way the proxy learns of it (`kill`: it is killed while it waits for the store, and the next
/// one finds the write-ahead mark; else the journal's commit times out), the reconcile moves
/// OLD's copy to Trash, where NEW has it, and links it: OLD equals NEW, and no later pass
/// copies the message again.
fn a_move_the_journal_lost(kill: bool) {
    let mut s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    old.create("Trash");
    fill(&mut old, "INBOX", 0, 2);
    old.logout();
    let mut c = s.client();
    // Trash is copied (and, with `keep_client_caches`, its numbers decided) before the store
    // is held: the MOVE goes to NEW at once.
    assert_eq!(c.select("Trash"), 0);
    assert_eq!(c.select("INBOX"), 2);
    let (_, ok) = c.command("UID STORE 2 +FLAGS (\\Answered)");
    assert!(ok.starts_with("OK"), "{ok}");
    let hold = 60;
    let mut holder = hold_state(&s.state(), hold);
    let tag = c.start("UID MOVE 1 Trash");
    let start = Instant::now();
    while snapshot(&s.new, USER, PW).count("Trash") != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(hold.into()),
            "{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if kill {
        s.proxy = None; // SIGKILL while the entry waits for the store
        holder.kill().unwrap();
        holder.wait().unwrap();
        s.restart_proxy();
        let c = s.client(); // the login looks at the mark
        c.logout();
    } else {
        let answer = c.tagged_or_bye(&tag);
        assert!(answer.starts_with("* BYE"), "{answer}");
        holder.kill().unwrap();
        holder.wait().unwrap();
    }
    let start = Instant::now();
    while !s.log().contains("OLD reconciled with NEW by itself") {
        assert!(start.elapsed() < Duration::from_secs(40), "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.log();
    assert!(log.contains("moved_on_old: 1"), "{log}");
    if kill {
        assert!(log.contains("stopped with writes in flight"), "{log}");
    }
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("INBOX"), on_old.count("Trash")), (1, 1));
    // Passes over both folders copy nothing again.
    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 1);
    assert_eq!(c.select("Trash"), 1);
    c.logout();
    s.assert_mirrored();
}

#[test]
fn a_move_cut_off_by_a_kill_before_its_journal_reaches_old() {
    a_move_the_journal_lost(true);
}

#[test]
fn a_move_whose_journal_entry_failed_is_moved_on_old_by_the_reconcile() {
    a_move_the_journal_lost(false);
}

/// A write whose write-ahead mark the store cannot take in time never reaches NEW: the client
/// gets `* BYE` instead (the mark is set only when no write is in flight and none was lately).
#[test]
fn a_write_is_not_sent_to_new_when_its_mark_cannot_be_stored() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    fill(&mut old, "INBOX", 0, 1);
    old.logout();
    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 1);
    let mut holder = hold_state(&s.state(), 30);
    let tag = c.start("UID STORE 1 +FLAGS (\\Flagged)");
    let answer = c.tagged_or_bye(&tag);
    assert!(answer.starts_with("* BYE"), "{answer}");
    let log = s.log();
    assert!(
        log.contains("did not record the write-ahead mark: timed out"),
        "{log}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(snapshot(&s.new, USER, PW).with_flag("\\Flagged"), 0);
    s.assert_mirrored();
}

/// Retiring an account stops migration work in its open sessions at once: OLD's new mail is no
/// longer copied and the user's writes no longer reach OLD; the account stays retired.
#[test]
fn retire_reaches_open_sessions() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    fill(&mut old, "INBOX", 0, 2);
    old.logout();
    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 2);
    s.imapferry(&["retire", USER, "--force"]).assert_code(0);
    let mut old = s.direct_old();
    fill(&mut old, "INBOX", 10, 1);
    old.logout();
    let (_, ok) = c.command("UID STORE 1 +FLAGS (\\Flagged)");
    assert!(ok.starts_with("OK"), "{ok}");
    // Three pickup rounds: nothing arrives, nothing is mirrored, nothing journaled.
    for _ in 0..3 {
        let (untagged, _) = c.raw("NOOP");
        assert!(!untagged.iter().any(|l| l == "* 3 EXISTS"), "{untagged:?}");
        std::thread::sleep(imapferry_live_poll());
    }
    c.logout();
    assert_eq!(snapshot(&s.new, USER, PW).count("INBOX"), 2);
    assert_eq!(snapshot(&s.old, USER, PW).with_flag("\\Flagged"), 0);
    let a = account_summaries(&s.state()).remove(0);
    assert_eq!(
        (a.state, a.pending_journal),
        (imapferry::store::AccountState::Retired, 0)
    );
}

/// The proxy's live-pickup period (2 s).
fn imapferry_live_poll() -> Duration {
    Duration::from_secs(2)
}

/// A STORE over a huge UID range costs bytes in the journal, not megabytes, and mirrored entries
/// are purged (here at once: `journal_keep_days = 0`).
#[test]
fn the_journal_stays_small() {
    let s = Setup::start_with(
        Dovecot::start(Layout::Slash),
        Dovecot::start(Layout::Slash),
        [String::new(), String::new(), "journal_keep_days = 0".into()],
    );
    let mut old = s.direct_old();
    fill(&mut old, "INBOX", 0, 3);
    old.logout();
    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 3);
    for i in 0..100 {
        let op = if i % 2 == 0 { "+" } else { "-" };
        let (_, ok) = c.command(&format!("UID STORE 1:99998 {op}FLAGS.SILENT (\\Flagged)"));
        assert!(ok.starts_with("OK"), "{ok}");
    }
    let (_, ok) = c.command("UID STORE 1:99998 +FLAGS.SILENT (\\Flagged)");
    assert!(ok.starts_with("OK"), "{ok}");
    c.logout();
    s.assert_mirrored();
    assert_eq!(snapshot(&s.old, USER, PW).with_flag("\\Flagged"), 3);
    let rows: u64 = {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
                 print(c.execute('select count(*), coalesce(max(length(payload)),0) from journal').fetchone())",
            ])
            .arg(s.state())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let nums: Vec<u64> = text
            .trim_matches(|c: char| !c.is_ascii_digit())
            .split(", ")
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(nums[1] < 300, "a journal entry of {} bytes", nums[1]);
        nums[0]
    };
    assert_eq!(rows, 0, "mirrored entries were not purged");
}

/// Live pickup under load: while two CPU hogs run beside the servers and the proxy, mail
/// delivered to OLD during an open session (NOOP and SELECT every second, as a phone does)
/// appears within 5 s, 20 times out of 20.
#[test]
fn live_pickup_keeps_up_under_load() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let mut c = s.client();
    let mut expected = c.select("INBOX");
    let mut slowest = Duration::ZERO;
    for round in 0..20u64 {
        let mut old = s.direct_old();
        fill(&mut old, "INBOX", 100 * round, 5);
        old.logout();
        expected += 5;
        let start = Instant::now();
        loop {
            let (untagged, ok) = c.raw(if start.elapsed().as_millis() % 2000 < 1000 {
                "NOOP"
            } else {
                "SELECT INBOX"
            });
            assert!(ok.starts_with("OK"), "{ok}");
            if untagged
                .iter()
                .any(|l| l == &format!("* {expected} EXISTS"))
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "round {round}: OLD's new mail did not appear within 5 s\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(1000));
        }
        slowest = slowest.max(start.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    eprintln!("slowest pickup under load: {slowest:?}");
    c.logout();
    s.assert_mirrored();
}

/// The mirror's reads of NEW never race the user's DELETE, RENAME or CREATE of the same folder
/// (Dovecot answers the user "Mailbox was deleted under us" or `[SERVERBUG]` when they do): a
/// client that saves into a folder and deletes or renames it right away sees every command
/// succeed, and OLD follows.
#[test]
fn the_mirror_stays_out_of_the_users_way() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    // An APPEND and, in the same write, the DELETE of its folder: the mirror wakes for the
    // APPEND while the DELETE is on its way to NEW.
    {
        use std::io::{BufRead, BufReader, Write};
        let stream =
            std::net::TcpStream::connect(("127.0.0.1", s.proxy.as_ref().unwrap().port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (mut w, mut r) = (stream.try_clone().unwrap(), BufReader::new(stream));
        let mut tagged = |tag: &str| {
            let mut line = String::new();
            loop {
                line.clear();
                assert!(r.read_line(&mut line).unwrap() > 0, "closed before {tag}");
                if line.starts_with(&format!("{tag} ")) {
                    return line.trim_end().to_string();
                }
            }
        };
        w.write_all(format!("l LOGIN {USER} {PW}\r\n").as_bytes())
            .unwrap();
        assert!(tagged("l").starts_with("l OK"));
        for round in 0..25u64 {
            let body = String::from_utf8(message(100 + round, 600)).unwrap();
            w.write_all(
                format!(
                    "c{round} CREATE Burst\r\na{round} APPEND Burst (\\Seen) {{{}+}}\r\n{body}\r\nd{round} DELETE Burst\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
            for tag in [
                format!("c{round}"),
                format!("a{round}"),
                format!("d{round}"),
            ] {
                let line = tagged(&tag);
                assert!(
                    line.starts_with(&format!("{tag} OK")),
                    "round {round}: {line}"
                );
            }
        }
    }
    let mut c = s.client();
    for round in 0..25u64 {
        let name = format!("Tmp{}", round % 3);
        let cmds = [
            format!("CREATE {name}"),
            format!("SELECT {name}"),
            format!(
                "APPEND {name} (\\Seen) {{{}+}}\r\n{}",
                message(round, 600).len(),
                String::from_utf8(message(round, 600)).unwrap()
            ),
            "UID STORE 1:* +FLAGS (\\Flagged)".to_string(),
            "CLOSE".to_string(),
            if round % 2 == 0 {
                format!("DELETE {name}")
            } else {
                format!("RENAME {name} Kept{round}")
            },
        ];
        for cmd in &cmds {
            let (untagged, ok) = c.raw(cmd);
            assert!(
                ok.starts_with("OK"),
                "round {round}: {}: {ok} {untagged:?}",
                cmd.lines().next().unwrap_or_default()
            );
        }
    }
    c.logout();
    s.assert_mirrored();
    // Live pickup's view of a folder the mirror renamed or deleted was read anew: OLD's
    // Dovecot found no index "corrupted" (a new folder under the old name, seen through the
    // old view). Before, it did in most runs, and once in ~20 under load the mirror's next
    // DELETE of that folder was lost.
    let log = s.old.log();
    assert!(!log.contains("Corrupted"), "{log}");
}

/// A folder renamed and created again under its name is read anew by the mirror: X is mirrored
/// (the mirror's connection to NEW had X selected), X renamed to Y, X created again and a
/// message appended to it with X's first UID again. OLD's new X must get that message, not the
/// one now in Y, and at once: reusing the old selection (tried as a saving of EXAMINEs) read
/// the renamed folder, which Dovecot refuses by closing the connection, costing the mirror its
/// back-off.
#[test]
fn a_folder_renamed_and_created_again_is_read_anew() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = s.client();
    c.exec("CREATE X");
    assert_eq!(c.append("X", &["\\Seen"], None, &message(1, 600)), Some(1));
    s.assert_mirrored();
    c.exec("RENAME X Y");
    c.exec("CREATE X");
    assert_eq!(c.append("X", &[], None, &message(2, 600)), Some(1));
    c.logout();
    s.assert_mirrored();
    let log = s.log();
    assert!(!log.contains(" WARN "), "{log}");
}

/// A folder that is complete never waits behind the mirror (issue 14): OLD hangs (its
/// processes stopped) while the mirror has the user's flag change to carry there. A SELECT of
/// INBOX while it is selected (live pickup watches it), a STATUS of Work, and a SELECT of INBOX
/// a while after leaving it (its entry waits for OLD, so a check would too) answer at once from
/// NEW, where before each waited the SELECT budget (8.5 of 10 s) for a check that drained the
/// journal first. Once OLD is back, the change reaches it.
#[test]
fn a_complete_folder_does_not_wait_for_the_mirror() {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    old.create("Work");
    fill(&mut old, "INBOX", 0, 3);
    fill(&mut old, "Work", 10, 2);
    old.logout();
    let mut c = s.client();
    assert_eq!(c.select("Work"), 2);
    assert_eq!(c.select("INBOX"), 3);
    s.old.freeze(true);
    let (_, ok) = c.command("UID STORE 1 +FLAGS (\\Flagged)");
    assert!(ok.starts_with("OK"), "{ok}");
    // Past the freshness of the passes above: each SELECT would check OLD again.
    std::thread::sleep(Duration::from_millis(1100));
    let quick = |c: &mut RawImap, cmd: &str| {
        let start = Instant::now();
        let (_, ok) = c.raw(cmd);
        assert!(ok.starts_with("OK"), "{cmd}: {ok}");
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{cmd} waited {:?} for a hanging OLD\n{}",
            start.elapsed(),
            s.log()
        );
    };
    quick(&mut c, "SELECT INBOX");
    quick(&mut c, "STATUS Work (MESSAGES)");
    quick(&mut c, "UNSELECT");
    std::thread::sleep(Duration::from_millis(1100));
    quick(&mut c, "SELECT INBOX");
    s.old.freeze(false);
    c.logout();
    s.assert_mirrored();
    assert_eq!(snapshot(&s.old, USER, PW).with_flag("\\Flagged"), 1);
}

/// OLD is away while the user works in INBOX (`writes`): the proxy, restarted meanwhile, holds
/// no OLD connection, so every entry waits in the journal until OLD is back and is mirrored
/// after all of them were journaled. Then OLD must equal NEW.
fn while_old_is_away(writes: impl FnOnce(&mut RawImap)) -> Setup<Dovecot> {
    while_old_is_away_with(&[("B", 0), ("INBOX", 3)], writes)
}

/// [`while_old_is_away`] with OLD's folders and how many messages each holds (`INBOX` last:
/// the writes start with it selected).
fn while_old_is_away_with(
    folders: &[(&str, u64)],
    writes: impl FnOnce(&mut RawImap),
) -> Setup<Dovecot> {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    away(s, folders, writes)
}

/// An OLD server the tests can kill and start again.
trait Restartable: ImapServer {
    fn kill_all(&mut self);
    fn restart(&mut self);
}

impl Restartable for Dovecot {
    fn kill_all(&mut self) {
        Dovecot::kill_all(self)
    }
    fn restart(&mut self) {
        Dovecot::restart(self)
    }
}

impl Restartable for Courier {
    fn kill_all(&mut self) {
        Courier::kill_all(self)
    }
    fn restart(&mut self) {
        Courier::restart(self)
    }
}

/// [`while_old_is_away_with`] on setup `s` (the folders by their names on OLD and NEW alike).
fn away<O: Restartable>(
    mut s: Setup<O>,
    folders: &[(&str, u64)],
    writes: impl FnOnce(&mut RawImap),
) -> Setup<O> {
    opened(&s, folders).logout();
    s.old.kill_all();
    s.restart_proxy();
    let mut c = s.client();
    c.select("INBOX");
    writes(&mut c);
    s.old.restart();
    c.logout();
    s.assert_mirrored();
    s
}

/// OLD's `folders` created (but INBOX) and filled, each opened through the proxy (so synced):
/// the client, with the last one selected.
fn opened<O: ImapServer>(s: &Setup<O>, folders: &[(&str, u64)]) -> RawImap {
    let mut old = s.direct_old();
    let mut first = 0;
    for (folder, n) in folders {
        if *folder != "INBOX" {
            old.create(folder);
        }
        fill(&mut old, folder, first, *n);
        first += n;
    }
    old.logout();
    let mut c = s.client();
    for (folder, n) in folders {
        assert_eq!(u64::from(c.select(folder)), *n);
    }
    c
}

/// Runs `each` with an RNG of each seed from 1 to `MIRROR_SEEDS` (default `seeds`).
fn for_seeds(seeds: u64, mut each: impl FnMut(&mut Rng)) {
    let seeds = std::env::var("MIRROR_SEEDS").map_or(seeds, |n| n.parse().unwrap());
    for seed in 1..=seeds {
        eprintln!("seed {seed}");
        each(&mut Rng::new(seed));
    }
}

/// Writes made while OLD has been down since the proxy started (its folder tree could not be
/// mapped at login) reach OLD once it is back: the journal names OLD's folders from the store.
#[test]
fn writes_made_while_old_was_down_since_the_proxy_started_reach_old() {
    let s = while_old_is_away(|c| {
        c.exec("UID STORE 1 +FLAGS.SILENT (\\Flagged)");
        c.exec("UID STORE 2 +FLAGS.SILENT (\\Deleted)");
        c.exec("UID EXPUNGE 2");
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(
        (on_old.count("INBOX"), on_old.with_flag("\\Flagged")),
        (2, 1)
    );
}

/// A delete, then a move out of the same folder, both before the mirror ran: the delete's
/// mirror leaves the moved message alone (it is in B on NEW, not deleted), and the move takes it
/// to B on OLD too.
#[test]
fn a_delete_mirrored_after_a_later_move_keeps_the_moved_message() {
    let s = while_old_is_away(|c| {
        c.exec("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
        c.exec("UID EXPUNGE 1");
        c.exec("UID MOVE 2 B");
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("INBOX"), on_old.count("B")), (1, 1));
}

/// An APPEND, then a move of the appended message, both before the mirror ran: the message
/// reaches OLD, in B.
#[test]
fn an_append_moved_before_it_was_mirrored_reaches_old() {
    let s = while_old_is_away(|c| {
        let uid = c
            .append("INBOX", &["\\Seen"], None, &message(10, 900))
            .unwrap();
        c.exec(&format!("UID MOVE {uid} B"));
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("INBOX"), on_old.count("B")), (3, 1));
}

/// A delete, then a copy of another message of the same folder and the deletion of that
/// original, all before the mirror ran (found by examples/stress_bench): the first delete's
/// mirror sees the copied message gone from NEW, but the copy still needs it on OLD, so it is
/// left for the later delete, after the copy reached OLD. (Before, it was expunged on OLD at
/// once, and the copy found nothing to copy: OLD lacked B's message.)
#[test]
fn a_delete_mirrored_before_a_later_copy_keeps_the_copied_message() {
    let s = while_old_is_away(|c| {
        c.exec("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
        c.exec("UID EXPUNGE 1");
        c.exec("UID COPY 2 B");
        c.exec("UID STORE 2 +FLAGS.SILENT (\\Deleted)");
        c.exec("UID EXPUNGE 2");
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("INBOX"), on_old.count("B")), (1, 1));
}

/// An APPEND, then a copy of the appended message and its deletion, all before the mirror ran:
/// the copy reaches OLD, in B.
#[test]
fn an_append_copied_then_deleted_before_it_was_mirrored_reaches_old_as_its_copy() {
    let s = while_old_is_away(|c| {
        let uid = c
            .append("INBOX", &["\\Seen"], None, &message(10, 900))
            .unwrap();
        c.exec(&format!("UID COPY {uid} B"));
        c.exec(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"));
        c.exec(&format!("UID EXPUNGE {uid}"));
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!((on_old.count("INBOX"), on_old.count("B")), (3, 1));
}

/// A STORE by sequence number (the mirror reads NEW's flags back), then a move of that message,
/// both before the mirror ran: the flag reaches OLD with the message, in B.
#[test]
fn a_flag_set_before_a_move_follows_the_message_on_old() {
    let s = while_old_is_away(|c| {
        c.exec("STORE 1 +FLAGS (\\Flagged)");
        c.exec("UID MOVE 1 B");
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(on_old.with_flag("\\Flagged"), 1);
}

/// Runs SQL on the (stopped) proxy's state file.
fn edit_state(state: &std::path::Path, sql: &str) {
    on_state(
        state,
        "c=sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()",
        sql,
    );
}

/// Rows of `sql` in the state file, one line each, columns separated by `|`.
fn query_state(state: &std::path::Path, sql: &str) -> Vec<String> {
    let rows = on_state(
        state,
        "for r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):\n print('|'.join(map(str, r)))",
        sql,
    );
    rows.lines().map(String::from).collect()
}

/// Runs a Python `script` (sqlite3 and sys imported) with the state file and `sql` as its
/// arguments; its output.
fn on_state(state: &std::path::Path, script: &str, sql: &str) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", &format!("import sqlite3,sys\n{script}")])
        .arg(state)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The proxy was killed after OLD took a mirrored write and before the journal recorded it
/// (`forget` undoes in the state file what the mirror recorded): the restarted proxy mirrors
/// the entry again, and OLD must not get it twice.
fn replayed_after_a_kill(writes: impl FnOnce(&mut RawImap), forget: &str) -> Setup<Dovecot> {
    let mut s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    old.create("B");
    fill(&mut old, "INBOX", 0, 2);
    old.logout();
    let mut c = s.client();
    assert_eq!(c.select("B"), 0);
    assert_eq!(c.select("INBOX"), 2);
    writes(&mut c);
    c.logout();
    s.assert_mirrored();
    s.proxy = None; // SIGKILL
    edit_state(&s.state(), forget);
    s.restart_proxy();
    s.client().logout(); // the login drains the journal
    s.assert_mirrored();
    s
}

/// An APPEND mirrored again: its link was committed (only the journal missed it) ...
#[test]
fn a_replayed_append_is_not_appended_twice() {
    let s = replayed_after_a_kill(
        |c| {
            c.append("B", &["\\Seen"], None, &message(20, 900));
        },
        "UPDATE journal SET done = 0 WHERE kind = 'append';",
    );
    assert_eq!(snapshot(&s.old, USER, PW).count("B"), 1);
}

/// ... or not even that (OLD answered, then the process died): the copy on OLD is found by
/// size and identity and linked.
#[test]
fn a_replayed_append_finds_its_unlinked_copy_on_old() {
    let s = replayed_after_a_kill(
        |c| {
            c.append("B", &[], None, &message(21, 40_000));
        },
        "UPDATE journal SET done = 0 WHERE kind = 'append';
         DELETE FROM links WHERE pair_id IN (SELECT id FROM folder_pairs WHERE new_name = 'B');
         DELETE FROM link_runs WHERE pair_id IN (SELECT id FROM folder_pairs WHERE new_name = 'B');",
    );
    assert_eq!(snapshot(&s.old, USER, PW).count("B"), 1);
}

/// ... also behind entries whose marks wait for their batch's end: a flag change mirrored and
/// not marked comes first in the replay, and the APPEND after it is still replayed with care.
/// (The first entry replayed used to end the care: the APPEND went to OLD a second time, and
/// the next pass copied the first copy back to NEW. Found by the fault run.)
#[test]
fn an_append_replayed_behind_unmarked_flags_finds_its_copy_on_old() {
    let s = replayed_after_a_kill(
        |c| {
            c.exec("UID STORE 1 +FLAGS.SILENT (\\Flagged)");
            c.append("B", &[], None, &message(23, 900));
        },
        "UPDATE journal SET done = 0 WHERE kind IN ('flags', 'append');
         DELETE FROM links WHERE pair_id IN (SELECT id FROM folder_pairs WHERE new_name = 'B');
         DELETE FROM link_runs WHERE pair_id IN (SELECT id FROM folder_pairs WHERE new_name = 'B');",
    );
    assert_eq!(snapshot(&s.old, USER, PW).count("B"), 1);
    assert_eq!(snapshot(&s.new, USER, PW).count("B"), 1);
}

/// A RENAME mirrored again finds OLD's folder renamed already: done, not refused (which would
/// park the entry and diverge the account).
#[test]
fn a_replayed_rename_is_done_already() {
    let s = replayed_after_a_kill(
        |c| {
            c.exec("RENAME B C");
        },
        "UPDATE journal SET done = 0 WHERE kind = 'rename';
         UPDATE folder_pairs SET old_name = 'B', new_name = 'B' WHERE new_name = 'C';",
    );
    let on_old = snapshot(&s.old, USER, PW);
    assert!(on_old.folders.contains_key("C") && !on_old.folders.contains_key("B"));
}

/// The proxy was killed after OLD took a batch of flag changes, an expunge, a new folder and a
/// subscription, before their batch was marked done (the drain marks such entries a batch at a
/// time): replayed in order, they leave OLD as NEW, with nothing refused or parked.
#[test]
fn a_batch_replayed_after_a_kill_changes_nothing_twice() {
    let s = replayed_after_a_kill(
        |c| {
            c.exec("UID STORE 1 +FLAGS.SILENT (\\Flagged)");
            c.exec("UID STORE 2 +FLAGS.SILENT (\\Deleted)");
            c.exec("UID EXPUNGE 2");
            c.exec("UID STORE 1 -FLAGS.SILENT (\\Seen)");
            c.exec("CREATE C");
            c.exec("SUBSCRIBE C");
        },
        "UPDATE journal SET done = 0 WHERE kind IN ('flags', 'expunge', 'create', 'subscribe');",
    );
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(
        (
            on_old.count("INBOX"),
            on_old.with_flag("\\Flagged"),
            on_old.with_flag("\\Seen")
        ),
        (1, 1, 0)
    );
    assert!(on_old.subscribed.contains("C"), "{:?}", on_old.subscribed);
}

/// OLD's INBOX with `n` unread messages.
fn with_unread(n: u64) -> Setup<Dovecot> {
    let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut old = s.direct_old();
    for i in 0..n {
        old.append("INBOX", &[], None, &message(i, 900));
    }
    old.logout();
    s
}

/// A STORE, and a FETCH of a body, by sequence number after the client fetched the UIDs (as
/// real clients do after a SELECT): journaled with the UIDs Dovecot's responses gave them, so
/// the mirror writes those messages without reading the folder; an EXPUNGE in between
/// renumbers, and is journaled with the UID Dovecot reported gone. OLD ends as NEW.
#[test]
fn sequence_numbers_are_journaled_as_uids() {
    let s = with_unread(4);
    let mut c = s.client();
    assert_eq!(c.select("INBOX"), 4);
    c.exec("FETCH 1:* (UID FLAGS)");
    c.exec("STORE 2:3 +FLAGS (\\Flagged)");
    c.exec("STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.exec("EXPUNGE");
    c.exec("FETCH 3 (UID BODY[])");
    c.logout();
    s.assert_mirrored();
    let uids = query_state(
        &s.state(),
        "SELECT json_extract(payload, '$.uids') FROM journal WHERE kind = 'flags' ORDER BY id",
    );
    assert_eq!(uids, ["2:3", "1", "4"]);
    let expunged = query_state(
        &s.state(),
        "SELECT json_extract(payload, '$.uids') FROM journal WHERE kind = 'expunge'",
    );
    assert_eq!(expunged, ["1"]);
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(
        (
            on_old.count("INBOX"),
            on_old.with_flag("\\Flagged"),
            on_old.with_flag("\\Seen")
        ),
        (3, 2, 1)
    );
}

/// Reading a message marks it read: a FETCH of a body without `.PEEK` (`BODY[]`, `RFC822`,
/// `BINARY[]`, by UID or sequence number) sets `\Seen` on NEW, and the mirror sets it on OLD.
/// The same FETCH in an EXAMINEd folder changes nothing, on either side.
#[test]
fn reading_a_message_marks_it_read_on_old_too() {
    let s = with_unread(5);
    let mut c = s.client();
    c.examine("INBOX");
    c.exec("FETCH 5 BODY[]");
    c.select("INBOX");
    c.exec("UID FETCH 1 (UID BODY[])");
    c.exec("FETCH 2 RFC822");
    c.exec("FETCH 3 (BODY[TEXT]<0.10>)");
    c.exec("FETCH 4 BODY.PEEK[]");
    c.logout();
    s.assert_mirrored();
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(
        on_old.with_flag("\\Seen"),
        3,
        "read by BODY[], RFC822 and BODY[TEXT]"
    );
}

/// A STORE by sequence number is mirrored with the flags NEW holds when the mirror runs, which
/// may include a later change; a COPY journaled between them must still give OLD's copy the
/// flags NEW's copy has (here: no `\Deleted`, which only the source got after the copy).
#[test]
fn a_copy_between_a_sequence_store_and_a_later_change_keeps_the_copys_flags() {
    let s = while_old_is_away(|c| {
        c.exec("STORE 1 -FLAGS (\\Deleted)");
        c.exec("UID COPY 2 B");
        c.exec("UID STORE 2 +FLAGS (\\Deleted)");
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(on_old.with_flag("\\Deleted"), 1, "only the source");
}

/// A message the mirror reads from NEW for an earlier entry (an APPEND of over 64 KiB) where a
/// later MOVE took it, copied from there alone on NEW, and flagged after the COPY: the read
/// puts on OLD the flag NEW's copy never got, though it names the folder the message was
/// appended to, not the one it was copied from. The MOVE out of the folder read is mirrored
/// reading NEW's copy, which counts as a read of its destination, so the COPY from there reads
/// NEW's copy too, and OLD's copy ends without the flag, as NEW's.
#[test]
fn a_copy_after_a_read_that_followed_a_move_reads_news_copy() {
    let s = while_old_is_away_with(&[("B", 0), ("C", 0), ("INBOX", 1)], |c| {
        let uid = c.append("INBOX", &[], None, &message(50, 100_000));
        c.exec(&format!("UID MOVE {} B", uid.expect("APPENDUID")));
        c.exec("SELECT B");
        c.exec("UID COPY 1 C");
        c.exec("UID STORE 1 +FLAGS (\\Flagged)");
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(on_old.with_flag("\\Flagged"), 1, "only the source");
}

/// Random writes of every kind the journal knows for messages (flags added, removed and
/// replaced, by UID and by sequence number, reads that set `\Seen`, COPY, MOVE, APPEND,
/// EXPUNGE, CLOSE) among three folders, all journaled before the mirror runs, so each entry is
/// mirrored with NEW holding the later ones' results already: OLD must end equal to NEW.
/// `MIRROR_SEEDS=N` runs seeds 1 to N instead of eight (without its fix, the eighth finds the
/// copy-of-a-copy bug of the test after these).
#[test]
fn random_writes_made_while_old_was_away_all_reach_old() {
    for_seeds(8, |rng| {
        while_old_is_away_with(&[("B", 4), ("C", 2), ("INBOX", 6)], |c| {
            random_writes(c, rng, 40, ["INBOX", "B", "C"])
        });
    });
}

/// [`random_writes_made_while_old_was_away_all_reach_old`] with an OLD that has no UIDPLUS,
/// MOVE, CONDSTORE, LITERAL+ or MULTIAPPEND: its copies are found by identity key (the
/// proxy takes no COPYUID it did not ask for), moves are COPY and EXPUNGE.
#[test]
fn random_writes_made_while_a_reduced_old_was_away_all_reach_it() {
    for_seeds(8, |rng| {
        let s = Setup::start(
            Dovecot::start(Layout::Reduced),
            Dovecot::start(Layout::Slash),
        );
        away(s, &[("B", 4), ("C", 2), ("INBOX", 6)], |c| {
            random_writes(c, rng, 40, ["INBOX", "B", "C"])
        });
    });
}

/// [`random_writes_made_while_old_was_away_all_reach_old`] with the mirror running meanwhile,
/// OLD hanging (SIGSTOP) now and then for a few commands: each entry is mirrored with NEW
/// holding some of the later ones' results, a different number each time. 20 seeds (about a
/// minute): without its fix, the copy-of-a-copy bug showed by the fourteenth.
#[test]
fn random_writes_with_old_hanging_now_and_then_all_reach_old() {
    for_seeds(20, |rng| {
        let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
        let mut c = opened(&s, &[("B", 4), ("C", 2), ("INBOX", 6)]);
        let mut frozen = false;
        random_writes_with(&mut c, rng, 40, ["INBOX", "B", "C"], |rng| {
            if rng.chance(0.2) {
                frozen = !frozen;
                s.old.freeze(frozen);
            }
        });
        s.old.freeze(false);
        c.logout();
        s.assert_mirrored();
    });
}

/// [`random_writes_made_while_old_was_away_all_reach_old`] with the mirror keeping up: after a
/// first COPY mirrored (the first a process mirrors is replayed with care, which reads NEW),
/// each COPY and MOVE was alone on NEW and is mirrored without reading NEW's copies (see
/// `copies_a_client_made_alone_reach_old_without_reading_new`), whatever the writes around it.
#[test]
fn random_writes_while_the_mirror_keeps_up_all_reach_old() {
    for_seeds(8, |rng| {
        let s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
        let mut c = opened(&s, &[("B", 4), ("C", 2), ("INBOX", 6)]);
        c.exec("UID COPY 1 C");
        s.assert_mirrored();
        random_writes(&mut c, rng, 40, ["INBOX", "B", "C"]);
        c.logout();
        s.assert_mirrored();
    });
}

/// [`random_writes_made_while_old_was_away_all_reach_old`] with Courier-IMAP as OLD: no MOVE
/// (OLD copies, then expunges), no CONDSTORE (the mirror's changes are not told apart by
/// modseq).
#[test]
fn random_writes_made_while_courier_was_away_all_reach_it() {
    for_seeds(8, |rng| {
        let folders = ["INBOX", "INBOX.B", "INBOX.C"];
        away(
            with_courier(),
            &[("INBOX.B", 4), ("INBOX.C", 2), ("INBOX", 6)],
            |c| random_writes(c, rng, 40, folders),
        );
    });
}

/// `steps` random commands of [`random_writes_made_while_old_was_away_all_reach_old`] among
/// `folders`, INBOX (the first) selected first.
fn random_writes(c: &mut RawImap, rng: &mut Rng, steps: usize, folders: [&str; 3]) {
    random_writes_with(c, rng, steps, folders, |_| {});
}

/// [`random_writes`], calling `between` before each command.
fn random_writes_with(
    c: &mut RawImap,
    rng: &mut Rng,
    steps: usize,
    folders: [&str; 3],
    mut between: impl FnMut(&mut Rng),
) {
    const FLAGS: [&str; 4] = ["\\Seen", "\\Flagged", "\\Deleted", "$Label"];
    let mut selected = folders[0];
    let mut appended = 1_000;
    for _ in 0..steps {
        between(rng);
        let uids = search_uids(c, "ALL");
        let some = |rng: &mut Rng, uids: &[u32]| -> Vec<u32> {
            let mut picked: Vec<u32> = uids.iter().copied().filter(|_| rng.chance(0.3)).collect();
            if picked.is_empty() && !uids.is_empty() {
                picked.push(*rng.pick(uids));
            }
            picked
        };
        let set = |uids: &[u32]| {
            let items: Vec<String> = uids.iter().map(u32::to_string).collect();
            items.join(",")
        };
        let other = *rng.pick(
            &folders
                .into_iter()
                .filter(|f| *f != selected)
                .collect::<Vec<_>>(),
        );
        let picked = some(rng, &uids);
        let flag = *rng.pick(&FLAGS);
        let sign = if rng.chance(0.6) { "+" } else { "-" };
        let seq = rng.below(uids.len().max(1) as u64) + 1;
        let command = match rng.below(12) {
            _ if uids.is_empty() => {
                appended += 1;
                c.append(selected, &[], None, &message(appended, 700));
                continue;
            }
            0 | 1 => format!("UID STORE {} {sign}FLAGS ({flag})", set(&picked)),
            2 => format!("STORE {seq} {sign}FLAGS.SILENT ({flag})"),
            3 => {
                let flags: Vec<&str> = FLAGS.into_iter().filter(|_| rng.chance(0.4)).collect();
                format!("UID STORE {} FLAGS ({})", set(&picked), flags.join(" "))
            }
            4 => format!("UID COPY {} {other}", set(&picked)),
            5 => format!("UID MOVE {} {other}", set(&picked)),
            6 => {
                appended += 1;
                let flags: Vec<&str> = FLAGS.into_iter().filter(|_| rng.chance(0.3)).collect();
                let to = if rng.chance(0.5) { selected } else { other };
                c.append(to, &flags, None, &message(appended, 700));
                continue;
            }
            7 => {
                let deleted = search_uids(c, "DELETED");
                if deleted.is_empty() || rng.chance(0.5) {
                    "EXPUNGE".to_string()
                } else {
                    format!("UID EXPUNGE {}", set(&some(rng, &deleted)))
                }
            }
            8 => format!("UID FETCH {} BODY[]", set(&picked)),
            9 => format!("FETCH {seq} BODY[]"),
            10 => {
                c.exec("CLOSE");
                format!("SELECT {selected}")
            }
            _ => {
                selected = other;
                format!("SELECT {selected}")
            }
        };
        c.exec(&command);
    }
}

/// `UID SEARCH criteria` in the selected folder.
fn search_uids(c: &mut RawImap, criteria: &str) -> Vec<u32> {
    c.exec(&format!("UID SEARCH {criteria}"))
        .iter()
        .map(|line| String::from_utf8_lossy(line).to_string())
        .filter_map(|line| line.strip_prefix("* SEARCH").map(String::from))
        .flat_map(|rest| {
            rest.split_ascii_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A copy of a copy, both mirrored after a later change to the first copy (found by the stress
/// benchmark's mirror check, a `\Deleted` on OLD only): mirroring the first COPY (and MOVE)
/// gives OLD's copies the flags NEW's copies have by then, `\Deleted` included, and their links
/// must say so. Otherwise the second COPY, trusting the links, copies the `\Deleted` along to a
/// copy NEW made before that change.
#[test]
fn a_copy_of_a_copy_mirrored_after_a_change_to_the_first_keeps_news_flags() {
    let s = while_old_is_away(|c| {
        // Appended through the proxy: their links keep the base flags the copies inherit.
        for _ in 0..2 {
            c.append("INBOX", &[], None, &message(10, 900)).unwrap();
        }
        c.exec("UID COPY 4 B");
        c.exec("UID MOVE 5 B");
        c.select("B");
        c.exec("UID COPY 1:2 INBOX");
        c.exec("UID STORE 1:2 +FLAGS (\\Deleted)");
    });
    let on_old = snapshot(&s.old, USER, PW);
    assert_eq!(on_old.with_flag("\\Deleted"), 2, "only B's two");
}

/// The proxy killed while OLD was about to store the mirror's APPEND (OLD frozen with the
/// command in its socket), after the user had deleted the message on NEW: the restarted
/// proxy's replay finds OLD's copy by the identity key kept before the APPEND, and the user's
/// EXPUNGE then removes it from OLD. Before, OLD kept the message with no link (the replay
/// looked for NEW's, gone), and the next pass would have copied it back to NEW.
#[test]
fn an_append_old_stored_as_the_proxy_died_goes_with_the_users_expunge() {
    let mut s = Setup::start(Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    let mut c = opened(&s, &[("INBOX", 2)]);
    // One APPEND mirrored first: until one is, the mirror of a fresh process replays with care
    // (it looks for OLD's copy before it appends), and would wait on frozen OLD before its
    // APPEND.
    c.append("INBOX", &[], None, &message(99, 900));
    s.assert_mirrored();
    s.old.freeze(true);
    let body = message(100, 900);
    let uid = c.append("INBOX", &[], None, &body).expect("APPENDUID");
    wait_until(
        "OLD's socket to hold the mirror's APPEND",
        Duration::from_secs(30),
        || unread_bytes(s.old.port()) >= body.len(),
    );
    c.uid_expunge("INBOX", uid);
    s.proxy.as_mut().unwrap().kill();
    s.old.freeze(false);
    wait_until("OLD to store the APPEND", Duration::from_secs(30), || {
        s.direct_old().status("INBOX").0 == 4
    });
    s.restart_proxy();
    s.client().logout();
    s.assert_mirrored();
    let mut new = RawImap::connect(s.new.host(), s.new.port());
    new.login(USER, PW);
    assert_eq!(new.status("INBOX").0, 3, "the deleted message came back");
}

/// Bytes received and not yet read by the processes of the established loopback TCP
/// connections whose local port is `port` (`/proc/net/tcp`'s `rx_queue`): what a frozen
/// server has been sent.
fn unread_bytes(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (queues, state) = (cols.get(4)?, cols.get(3)?);
            (cols.get(1) == Some(&local.as_str()) && *state == "01").then_some(())?;
            usize::from_str_radix(queues.split(':').nth(1)?, 16).ok()
        })
        .sum()
}

/// OLD without UIDPLUS (no COPYUID, no APPENDUID): the mirror's copies and appended messages
/// on OLD are found by their identity keys and linked, so the user's later deletion of NEW's
/// reaches OLD's. Before, OLD's stayed unlinked: OLD kept them, and the next pass of the folder
/// copied them back to NEW, where the user had deleted them.
#[test]
fn without_uidplus_olds_copies_go_with_the_users_deletions() {
    let s = Setup::start(
        Dovecot::start(Layout::Reduced),
        Dovecot::start(Layout::Slash),
    );
    let mut c = opened(&s, &[("B", 1), ("INBOX", 3)]);
    c.exec("UID COPY 1:2 B");
    c.exec("UID MOVE 3 B");
    c.append("B", &["\\Seen"], None, &message(50, 900));
    s.assert_mirrored();
    c.select("B");
    c.exec("UID STORE 2:* +FLAGS.SILENT (\\Deleted)");
    c.exec("EXPUNGE");
    s.assert_mirrored();
    c.select("INBOX");
    let mut new = RawImap::connect(s.new.host(), s.new.port());
    new.login(USER, PW);
    assert_eq!(new.status("B").0, 1, "deleted copies came back");
}
