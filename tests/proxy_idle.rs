//! What an idle user costs OLD and NEW (issue 13, item 7), counted by the servers themselves
//! (`doveadm who`, `doveadm stats dump`): the engine's connections are logged out after
//! `[migration] idle_connections_secs`, leaving one OLD connection per account whose live pickup
//! IDLEs and none where it is off; live pickup by IDLE brings new OLD mail to an open session
//! without polling OLD; `live_pickup = "poll"` does it with STATUS.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// `/metrics` of the in-process proxy's admin endpoint.
fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// The value of one metric line (`name{labels}`), 0 when absent.
fn gauge(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Waits (at most a minute) until `done` holds; `what` says what the failure shows.
fn wait_until(what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < until, "never happened: {}", what());
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Setup {
    old: Dovecot,
    new: Dovecot,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

/// OLD and NEW with `users` (password "pw", one message in OLD's INBOX) and a proxy with
/// `migration` appended to its `[migration]` section, plus `more` sections.
fn setup(users: &[&str], migration: &str, more: &str) -> Setup {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    let pairs: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.to_string(), "pw".to_string()))
        .collect();
    old.add_users(&pairs);
    new.add_users(&pairs);
    for user in users {
        let mut o = RawImap::connect("127.0.0.1", old.port());
        o.login(user, "pw");
        o.append("INBOX", &[], None, &message(1, 600));
        o.logout();
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{migration}[admin]\nlisten = \"127.0.0.1:0\"\nallow_without_token = true\n{more}",
        migration_config(&old, &new, &dir.path().join("state.db"), 10_000)
    );
    let proxy = Proxy::start_with(&text, false);
    Setup {
        old,
        new,
        proxy,
        dir,
    }
}

impl Setup {
    /// A session of `user` through the proxy with INBOX selected.
    fn session(&self, user: &str) -> RawImap {
        let mut c = RawImap::connect("127.0.0.1", self.proxy.port);
        c.login(user, "pw");
        assert_eq!(c.select("INBOX"), 1);
        c
    }

    /// Whether the proxy's recorded state of OLD's `folder` is OLD's state now: a check of the
    /// folder ran since it last changed.
    fn checked(&self, user: &str, folder: &str) -> bool {
        let path = self.dir.path().join("state.db");
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let Ok(db) = rusqlite::Connection::open_with_flags(path, flags) else {
            return false;
        };
        let recorded = db.query_row(
            "SELECT old_messages, old_uidnext, old_highestmodseq FROM folder_pairs \
             WHERE new_name = ?1",
            [folder],
            |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
                Ok((n(0)?, n(1)?, n(2)?))
            },
        );
        recorded.ok() == Some(self.old.mailbox_status(user, folder))
    }
}

/// [`setup`] of `user` with live pickup in `mode` (`"idle"` or `"poll"`, at most `max_secs`
/// apart), and a session of theirs with INBOX selected, once the proxy reports the mode. OLD's
/// commands are counted from the session's start.
fn picking_up(user: &str, mode: &str, max_secs: u32) -> (Setup, RawImap) {
    picking_up_after(user, mode, max_secs, |_| {})
}

/// [`picking_up`], with `prepare` run on the servers before the session logs in.
fn picking_up_after(
    user: &str,
    mode: &str,
    max_secs: u32,
    prepare: impl FnOnce(&Setup),
) -> (Setup, RawImap) {
    let s = setup(
        &[user],
        &format!(
            "live_pickup = \"{mode}\"\nlive_pickup_secs = 1\nlive_pickup_max_secs = {max_secs}\n"
        ),
        "",
    );
    prepare(&s);
    s.old.commands(true);
    let c = s.session(user);
    let gauge_name = format!("imapferry_live_pickup_accounts{{mode=\"{mode}\"}}");
    let on = || gauge(&metrics(s.proxy.admin_port), &gauge_name) == 1;
    wait_until(|| metrics(s.proxy.admin_port), on);
    (s, c)
}

/// `d`'s IMAP commands whose name contains `what`, counted.
fn count(d: &Dovecot, what: &str) -> u64 {
    let seen = d.commands(false);
    seen.iter()
        .filter(|(k, _)| k.contains(what))
        .map(|(_, n)| n)
        .sum()
}

/// Three idle sessions each of ann (live pickup off) and bob (IDLE), engine connections kept
/// for one second: the servers end up with ann's three NEW sessions and nothing on OLD, and
/// bob's three NEW sessions plus one OLD connection IDLEing; `/metrics` says the same.
/// (Before: 1 OLD and 4 NEW connections per user, for as long as a session stayed open.)
#[test]
fn idle_users_hold_only_their_sessions_and_one_idle_on_old() {
    let s = setup(
        &["ann", "bob"],
        "idle_connections_secs = 1\n",
        "[migration.live_pickup_for]\nann = \"off\"\n",
    );
    let sessions: Vec<RawImap> = ["ann", "bob"]
        .iter()
        .flat_map(|u| (0..3).map(move |_| *u))
        .map(|u| s.session(u))
        .collect();
    let held = || {
        format!(
            "OLD {:?}, NEW {:?}\n{}",
            s.old.connections(),
            s.new.connections(),
            metrics(s.proxy.admin_port)
        )
    };
    let want = |server: &Dovecot, ann: usize, bob: usize| {
        server.connections_of("ann") == ann && server.connections_of("bob") == bob
    };
    wait_until(held, || want(&s.old, 0, 1) && want(&s.new, 3, 3));
    let m = metrics(s.proxy.admin_port);
    assert_eq!(
        gauge(&m, "imapferry_engine_connections{side=\"old\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        gauge(&m, "imapferry_engine_connections{side=\"new\"}"),
        0,
        "{m}"
    );
    assert_eq!(
        gauge(&m, "imapferry_live_pickup_accounts{mode=\"idle\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        gauge(&m, "imapferry_live_pickup_accounts{mode=\"poll\"}"),
        0,
        "{m}"
    );
    // Once the sessions are gone, so is bob's IDLE.
    for c in sessions {
        c.logout();
    }
    wait_until(held, || want(&s.old, 0, 0) && want(&s.new, 0, 0));
}

/// A user back soon after their last session ended finds live pickup's OLD connection kept
/// (`idle_connections_secs`): OLD logs in nobody for the new session's IDLE, so it saw no
/// LOGOUT in between.
#[test]
fn a_user_back_soon_finds_live_pickups_old_connection() {
    let (s, c) = picking_up("cy", "idle", 60);
    let idling = || {
        gauge(
            &metrics(s.proxy.admin_port),
            "imapferry_live_pickup_accounts{mode=\"idle\"}",
        )
    };
    let logouts = count(&s.old, "LOGOUT"); // the setup's own
    c.logout();
    wait_until(|| metrics(s.proxy.admin_port), || idling() == 0);
    let c = s.session("cy");
    // Counted as IDLEing once its connection is there (and its folder EXAMINEd).
    wait_until(|| metrics(s.proxy.admin_port), || idling() == 1);
    assert_eq!(
        count(&s.old, "LOGOUT"),
        logouts,
        "{:?}",
        s.old.commands(false)
    );
    c.logout();
}

/// With IDLE, new mail on OLD reaches the open session although OLD was never polled: from the
/// moment the IDLE runs until the session sees the message, OLD saw two STATUS, that look's and
/// the check's it started (the mirror's own writes would have made the look's wait, see
/// `the_mirrors_own_writes_start_no_checks`); and from the session's start it finished one
/// IDLE, the one the change ended. (Before: the wake-up the SELECT left for the pickup it
/// started ended the first IDLE at once, 2; each wake-up that came while the pickup was busy
/// cost OLD an IDLE and a DONE more.)
#[test]
fn new_old_mail_arrives_by_idle_without_polling() {
    let (s, mut c) = picking_up("cat", "idle", 1);
    let idles = |seen: &BTreeMap<String, u64>| seen.get("IDLE").copied().unwrap_or(0);
    let before = idles(&s.old.commands(true));
    let mut o = RawImap::connect("127.0.0.1", s.old.port());
    o.login("cat", "pw");
    o.append("INBOX", &[], None, &message(2, 700));
    o.logout();
    wait_until(
        || format!("{:?}", s.old.commands(false)),
        || c.raw("NOOP").0.iter().any(|l| l == "* 2 EXISTS"),
    );
    let seen = s.old.commands(false);
    assert_eq!(
        before + idles(&seen),
        1,
        "{before} before the change, then {seen:?}"
    );
    assert!(seen.get("STATUS").copied().unwrap_or(0) <= 2, "{seen:?}");
    let m = metrics(s.proxy.admin_port);
    assert_eq!(
        gauge(&m, "imapferry_live_pickup_accounts{mode=\"idle\"}"),
        1,
        "{m}"
    );
    c.logout();
}

/// A folder the user selects beside the one live pickup IDLEs on (INBOX) ends no IDLE of its
/// own: the IDLE goes on until the new folder's first poll is due, then one DONE, a STATUS of
/// it and the next IDLE. (Before: the selection ended the IDLE at once, and the IDLE started
/// after it ended again for the poll: an IDLE and a DONE more for OLD at each change of the
/// folders live pickup keeps.)
#[test]
fn a_folder_selected_beside_the_idle_one_ends_no_idle_of_its_own() {
    let (s, mut c) = picking_up_after("ida", "idle", 1, |s| {
        let mut o = RawImap::connect("127.0.0.1", s.old.port());
        o.login("ida", "pw");
        o.create("Work");
        o.logout();
    });
    assert_eq!(c.select("Work"), 0);
    let count = |what: &str| s.old.commands(false).get(what).copied().unwrap_or(0);
    let statuses = count("STATUS");
    wait_until(
        || format!("{:?}", s.old.commands(false)),
        || count("STATUS") > statuses,
    );
    assert_eq!(count("IDLE"), 1, "{:?}", s.old.commands(false));
    c.logout();
}

/// `live_pickup = "poll"`: the session gets the new OLD mail through STATUS polls, and OLD
/// never sees an IDLE.
#[test]
fn new_old_mail_arrives_by_polling_when_asked() {
    let (s, mut c) = picking_up("dan", "poll", 2);
    let mut o = RawImap::connect("127.0.0.1", s.old.port());
    o.login("dan", "pw");
    o.append("INBOX", &[], None, &message(2, 700));
    o.logout();
    wait_until(
        || format!("{:?}", s.old.commands(false)),
        || c.raw("NOOP").0.iter().any(|l| l == "* 2 EXISTS"),
    );
    let seen = s.old.commands(false);
    assert!(seen.get("STATUS").copied().unwrap_or(0) >= 1, "{seen:?}");
    assert_eq!(seen.get("IDLE"), None, "{seen:?}");
    c.logout();
}

/// `/metrics` counts the journal: one entry per write NEW accepted, and the commits that held
/// them (never more commits than entries; several sessions' writes may share one), and how long
/// each write waited for its commit; and the state store's operations, each commit a write
/// transaction among them.
#[test]
fn metrics_count_the_journals_entries_and_commits() {
    let s = setup(&["ann"], "", "");
    let mut sessions: Vec<RawImap> = (0..3).map(|_| s.session("ann")).collect();
    let writes = |m: &str| gauge(m, "imapferry_store_operations_total{kind=\"write\"}");
    let before = metrics(s.proxy.admin_port);
    for (i, c) in sessions.iter_mut().enumerate() {
        let (_, done) = c.command(&format!("STORE 1 +FLAGS (flag{i})"));
        assert!(done.contains("OK"), "{done}");
    }
    let m = metrics(s.proxy.admin_port);
    assert_eq!(gauge(&m, "imapferry_journal_entries_total"), 3, "{m}");
    let commits = gauge(&m, "imapferry_journal_commits_total");
    assert!((1..=3).contains(&commits), "{m}");
    // The logins read the accounts' state; the commits are write transactions.
    assert!(
        gauge(&m, "imapferry_store_operations_total{kind=\"read\"}") > 0,
        "{m}"
    );
    assert!(writes(&m) >= writes(&before) + commits, "{before}\n{m}");
    // Each write's wait for its commit is counted, in seconds.
    assert_eq!(gauge(&m, "imapferry_journal_wait_seconds_count"), 3, "{m}");
    let waited = m
        .lines()
        .find_map(|l| l.strip_prefix("imapferry_journal_wait_seconds_sum "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(waited.is_some_and(|w| w > 0.0 && w < 30.0), "{m}");
    for c in sessions {
        c.logout();
    }
}

/// The mirror's own writes to OLD start no pass: live pickup sees OLD change (the mirror's
/// STORE), and the check finds the change the mirror's own (one FETCH of what changed, no
/// SEARCH, nothing read on NEW). A change someone else makes on OLD still starts a pass and
/// reaches the session.
#[test]
fn the_mirrors_own_flag_change_starts_no_pass() {
    let (s, mut c) = picking_up("eve", "idle", 1);
    s.old.commands(true);
    s.new.commands(true);
    let (_, done) = c.command("UID STORE 1 +FLAGS (\\Flagged)");
    assert!(done.contains("OK"), "{done}");
    // The mirror STOREs on OLD; OLD's IDLE reports it, and the check that follows records it.
    wait_until(
        || format!("{:?}", s.old.commands(false)),
        || count(&s.old, "STORE") >= 1 && s.checked("eve", "INBOX"),
    );
    let (old_seen, new_seen) = (s.old.commands(false), s.new.commands(false));
    assert_eq!(count(&s.old, "SEARCH"), 0, "no pass on OLD: {old_seen:?}");
    assert_eq!(count(&s.new, "SEARCH"), 0, "no pass on NEW: {new_seen:?}");

    // Someone else's change on OLD is not the mirror's: a pass brings it to NEW.
    let mut o = RawImap::connect("127.0.0.1", s.old.port());
    o.login("eve", "pw");
    o.select("INBOX");
    let (_, done) = o.command("UID STORE 1 +FLAGS (\\Answered)");
    assert!(done.contains("OK"), "{done}");
    o.logout();
    wait_until(
        || format!("{:?}", s.old.commands(false)),
        || {
            c.raw("NOOP")
                .0
                .iter()
                .any(|l| l.contains("FETCH") && l.contains("\\Answered"))
        },
    );
    assert!(count(&s.old, "SEARCH") >= 1, "{:?}", s.old.commands(false));
    c.logout();
}

/// The mirror's APPEND to OLD and its MOVE out of the folder start no pass either: the check
/// counts what it added and expunged. OLD then holds what NEW holds.
#[test]
fn the_mirrors_own_append_and_move_start_no_pass() {
    let (s, mut c) = picking_up("fay", "idle", 1);
    let (_, done) = c.command("CREATE Archive");
    assert!(done.contains("OK"), "{done}");
    // Archive's first pass (it is filled once, before it takes the MOVE) is not counted.
    assert_eq!(c.select("Archive"), 0);
    assert_eq!(c.select("INBOX"), 1);
    wait_until(
        || format!("{:?}", s.old.commands(false)),
        || s.checked("fay", "Archive") && s.checked("fay", "INBOX"),
    );
    // The mirror's first APPEND after the proxy started is replayed with care (the process
    // before may have died in it): it SEARCHes OLD for its copy. Not counted either.
    c.append("INBOX", &[], None, &message(2, 700));
    let mirrored = |messages, uidnext| {
        let now = s.old.mailbox_status("fay", "INBOX");
        (now.0, now.1) == (messages, uidnext) && s.checked("fay", "INBOX")
    };
    wait_until(|| format!("{:?}", s.old.commands(false)), || mirrored(2, 3));
    s.old.commands(true);
    c.append("INBOX", &["\\Seen"], None, &message(3, 800));
    let (_, done) = c.command("UID MOVE 1 Archive");
    assert!(done.contains("OK"), "{done}");
    wait_until(|| format!("{:?}", s.old.commands(false)), || mirrored(2, 4));
    let seen = s.old.commands(false);
    assert!(count(&s.old, "MOVE") >= 1, "{seen:?}");
    assert_eq!(count(&s.old, "SEARCH"), 0, "no pass on OLD: {seen:?}");
    assert_eq!(s.old.mailbox_status("fay", "Archive").0, 1);
    c.logout();
}

/// A folder a session used lately stays under live pickup after the session leaves it: going
/// back to it asks OLD (and NEW) nothing, however long since its last check, and mail OLD
/// receives meanwhile still reaches NEW, by the pickup's poll, without any command naming it.
#[test]
fn a_folder_used_lately_is_kept_current_by_live_pickup() {
    let s = setup(
        &["gus"],
        "live_pickup = \"idle\"\nlive_pickup_secs = 1\nlive_pickup_max_secs = 1\n",
        "",
    );
    let old_session = || {
        let mut o = RawImap::connect("127.0.0.1", s.old.port());
        o.login("gus", "pw");
        o
    };
    let mut o = old_session();
    o.create("Work");
    o.append("Work", &[], None, &message(2, 700));
    o.logout();
    let mut c = s.session("gus");
    assert_eq!(c.select("Work"), 1);
    assert_eq!(c.select("INBOX"), 1);
    // Past the freshness of Work's check: without live pickup, going back checks it again.
    std::thread::sleep(Duration::from_millis(1500));
    let checks = || gauge(&metrics(s.proxy.admin_port), "imapferry_backfills_total");
    let before = checks();
    for _ in 0..3 {
        assert_eq!(c.select("Work"), 1);
        assert_eq!(c.select("INBOX"), 1);
    }
    assert_eq!(checks(), before, "{}", metrics(s.proxy.admin_port));

    // Mail that OLD gets meanwhile reaches NEW's Work without a command naming it.
    let mut o = old_session();
    o.append("Work", &[], None, &message(3, 800));
    o.logout();
    wait_until(
        || format!("{:?}", s.new.mailbox_status("gus", "Work")),
        || s.new.mailbox_status("gus", "Work").0 == 2,
    );
    assert_eq!(c.select("Work"), 2);
    c.logout();
}

/// A burst of changes on OLD costs live pickup two checks, not one a change: the checks it
/// starts for a folder are `live_pickup_secs` apart, and the changes seen meanwhile wait for
/// the next one, which brings them all.
#[test]
fn a_burst_of_changes_on_old_costs_two_checks() {
    let s = setup(
        &["hal"],
        "live_pickup = \"idle\"\nlive_pickup_secs = 8\nlive_pickup_max_secs = 8\n",
        "",
    );
    let mut c = s.session("hal");
    let checks = || gauge(&metrics(s.proxy.admin_port), "imapferry_backfills_total");
    let on = || {
        gauge(
            &metrics(s.proxy.admin_port),
            "imapferry_live_pickup_accounts{mode=\"idle\"}",
        )
    };
    wait_until(
        || metrics(s.proxy.admin_port),
        || on() == 1 && s.checked("hal", "INBOX"),
    );
    let before = checks();
    let mut o = RawImap::connect("127.0.0.1", s.old.port());
    o.login("hal", "pw");
    o.select("INBOX");
    for i in 0..10 {
        let (_, done) = o.command(&format!("STORE 1 +FLAGS (burst{i})"));
        assert!(done.contains("OK"), "{done}");
        std::thread::sleep(Duration::from_millis(500));
    }
    o.logout();
    wait_until(
        || format!("{:?}", s.old.commands(false)),
        || {
            c.raw("FETCH 1 FLAGS")
                .0
                .iter()
                .any(|l| l.contains("burst9"))
        },
    );
    let used = checks() - before;
    assert!((1..=2).contains(&used), "{used} checks for the burst");
    c.logout();
}

/// The mirror's own writes start no checks while a user writes: live pickup takes a change
/// whose STATUS shows only what the mirror did (UIDNEXT and count as its APPENDs, COPYs and
/// expunges make them) for the mirror's, and checks the folder after `live_pickup_max_secs`
/// instead of at once. Mail OLD gets from elsewhere meanwhile is picked up at once, and a flag
/// someone else changes on OLD reaches NEW by that later check.
#[test]
fn the_mirrors_own_writes_start_no_checks() {
    let (s, mut c) = picking_up("ivy", "idle", 20);
    let (_, done) = c.command("CREATE Work");
    assert!(done.contains("OK"), "{done}");
    let mut w = RawImap::connect("127.0.0.1", s.proxy.port);
    w.login("ivy", "pw");
    assert_eq!(w.select("Work"), 0);
    wait_until(
        || metrics(s.proxy.admin_port),
        || s.checked("ivy", "INBOX") && s.checked("ivy", "Work"),
    );
    // Each round APPENDs to INBOX (IDLE's folder) and Work (polled), flags what it appended,
    // and every third round expunges it again.
    let mut round = 0u64;
    let mut write = |c: &mut RawImap, folder: &str| {
        round += 1;
        let uid = c.append(folder, &[], None, &message(100 + round, 500));
        let uid = uid.expect("APPENDUID");
        c.exec(&format!("UID STORE {uid} +FLAGS (\\Seen)"));
        if round.is_multiple_of(3) {
            c.uid_expunge(folder, uid);
        }
    };
    let checks = || gauge(&metrics(s.proxy.admin_port), "imapferry_backfills_total");
    let before = checks();
    for _ in 0..12 {
        write(&mut c, "INBOX");
        write(&mut w, "Work");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mirrored = |folder: &str| {
        s.old.mailbox_status("ivy", folder).0 == s.new.mailbox_status("ivy", folder).0
    };
    wait_until(
        || metrics(s.proxy.admin_port),
        || mirrored("INBOX") && mirrored("Work"),
    );
    let used = checks() - before;
    assert!(used <= 1, "{used} checks for the mirror's own writes");

    // New mail on OLD is not the mirror's: it reaches the session at once.
    let mut o = RawImap::connect("127.0.0.1", s.old.port());
    o.login("ivy", "pw");
    o.append("INBOX", &["Elsewhere"], None, &message(1000, 700));
    let sent = Instant::now();
    let found = |c: &mut RawImap, keyword: &str| {
        let (untagged, ok) = c.raw(&format!("SEARCH KEYWORD {keyword}"));
        assert!(ok.starts_with("OK"), "{ok}");
        untagged
            .iter()
            .any(|l| l.starts_with("* SEARCH ") && l.len() > 9)
    };
    // The user goes on writing, at a pace OLD keeps up with: a folder's check lets the mirror
    // go first, so it waits while OLD is behind the user's writes there.
    while !found(&mut c, "Elsewhere") {
        write(&mut c, "INBOX");
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "OLD's new mail waited for the later check\n{}",
            metrics(s.proxy.admin_port)
        );
    }

    // A flag changed on OLD shows in no STATUS: the later check brings it.
    o.select("INBOX");
    let (_, done) = o.command("UID STORE 1 +FLAGS (Remote)");
    assert!(done.contains("OK"), "{done}");
    o.logout();
    wait_until(
        || metrics(s.proxy.admin_port),
        || {
            write(&mut c, "INBOX");
            found(&mut c, "Remote")
        },
    );
    c.logout();
    w.logout();
}
