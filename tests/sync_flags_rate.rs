//! Flag rewrites (`--regexflag`, `--filterbuggyflags`), imapsync's host1-wins `--resyncflags`,
//! the APPEND date (`--idatefromheader`, `--nosyncinternaldates`) and the copy rate limit, against
//! real Dovecot servers.

mod common;

use std::collections::BTreeSet;

use common::seed::parse_imap_date;
use common::{Dovecot, Layout, RawImap};
use imapferry::store::{SqliteStore, Store};
use imapferry::sync::{DateSource, Endpoint, Event, Observer, Options, Report, sync_account};

const PW: &str = "secret-pw";

fn endpoint(d: &Dovecot) -> Endpoint {
    common::engine_endpoint(d, "alice", PW)
}

use common::Print;

async fn pass(store: &dyn Store, old: &Dovecot, new: &Dovecot, opts: &Options) -> Report {
    pass_with(store, old, new, opts, &Print).await
}

async fn pass_with(
    store: &dyn Store,
    old: &Dovecot,
    new: &Dovecot,
    opts: &Options,
    observer: &dyn Observer,
) -> Report {
    let report = sync_account(store, &endpoint(old), &endpoint(new), opts, observer)
        .await
        .expect("sync pass");
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    report
}

/// Two servers, alice on both, and a state store.
async fn setup(old: Layout, new: Layout) -> (Dovecot, Dovecot, SqliteStore, tempfile::TempDir) {
    let (o, n) = (Dovecot::start(old), Dovecot::start(new));
    o.add_user("alice", PW);
    n.add_user("alice", PW);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    (o, n, store, dir)
}

fn login(d: &Dovecot) -> RawImap {
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login("alice", PW);
    imap
}

/// `n` messages in OLD's INBOX, all `\Seen`.
fn seed_seen(o: &mut RawImap, n: u64) {
    for i in 0..n {
        o.append("INBOX", &["\\Seen"], None, &common::message(i, 900));
    }
}

fn message_id(m: &common::Msg) -> String {
    let text = String::from_utf8_lossy(&m.body);
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .unwrap_or("")
        .to_string()
}

/// INBOX of `d`, keyed by Message-Id line.
fn inbox(d: &Dovecot) -> Vec<common::Msg> {
    login(d).uid_fetch_all("INBOX")
}

fn copy_of<'a>(on_new: &'a [common::Msg], m: &common::Msg) -> &'a common::Msg {
    on_new
        .iter()
        .find(|n| message_id(n) == message_id(m))
        .expect("copy on NEW")
}

fn set(flags: &[&str]) -> BTreeSet<String> {
    flags.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regexflag_keeps_a_keyword_off_new() {
    let (old, new, store, _dir) = setup(Layout::Slash, Layout::Slash).await;
    let mut o = login(&old);
    let variants: [&[&str]; 4] = [
        &["$Label1", "\\Seen"],
        &["$Label1", "$Label2"],
        &["$Label2"],
        &[],
    ];
    for (i, flags) in variants.iter().enumerate() {
        o.append("INBOX", flags, None, &common::message(i as u64, 900));
    }
    let opts = Options {
        regexflag: vec!["s/\\$Label1//g".to_string()],
        // Dovecot refuses bogus backslash flags, so this only shows the filter leaves real ones be.
        filter_buggy_flags: true,
        ..Options::default()
    };
    let first = pass(&store, &old, &new, &opts).await;
    assert_eq!(first.stats.messages_transferred, 4);
    let old_msgs = inbox(&old);
    let new_msgs = inbox(&new);
    let expected: [&[&str]; 4] = [&["\\Seen"], &["$Label2"], &["$Label2"], &[]];
    for (m, want) in old_msgs.iter().zip(expected) {
        assert_eq!(copy_of(&new_msgs, m).flags, set(want), "{}", message_id(m));
    }

    // OLD tags a linked message with $Label1 and \Flagged: only \Flagged reaches NEW.
    o.uid_store(
        "INBOX",
        old_msgs[2].uid,
        "+FLAGS",
        &["$Label1", "\\Flagged"],
    );
    let second = pass(&store, &old, &new, &opts).await;
    assert_eq!(second.stats.messages_transferred, 0);
    let new_msgs = inbox(&new);
    assert_eq!(
        copy_of(&new_msgs, &old_msgs[2]).flags,
        set(&["$Label2", "\\Flagged"])
    );
    assert!(
        new_msgs.iter().all(|m| !m.flags.contains("$Label1")),
        "$Label1 never reaches NEW"
    );
}

/// OLD without CONDSTORE, so the account loop looks at the folder on every pass (with a CONDSTORE
/// OLD, a folder whose OLD side is unchanged is skipped before flags are compared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resyncflags_makes_host1_win() {
    let (old, new, store, _dir) = setup(Layout::Reduced, Layout::Slash).await;
    let mut o = login(&old);
    seed_seen(&mut o, 3);
    pass(&store, &old, &new, &Options::default()).await;
    let old_msgs = inbox(&old);
    let new_msgs = inbox(&new);
    let (n0, n1) = (
        copy_of(&new_msgs, &old_msgs[0]).uid,
        copy_of(&new_msgs, &old_msgs[1]).uid,
    );
    // The user marks one message unread on NEW and tags another.
    let mut n = login(&new);
    n.uid_store("INBOX", n0, "-FLAGS", &["\\Seen"]);
    n.uid_store("INBOX", n1, "+FLAGS", &["$Mine"]);

    // Default: the three-way merge keeps the user's changes.
    let merged = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(merged.stats.flags_updated, 0);
    let after = inbox(&new);
    assert_eq!(copy_of(&after, &old_msgs[0]).flags, set(&[]));
    assert_eq!(
        copy_of(&after, &old_msgs[1]).flags,
        set(&["$Mine", "\\Seen"])
    );

    // --resyncflags: NEW gets OLD's flags back, even though nothing changed since the last pass.
    let resync = Options {
        resync_flags_host1_wins: true,
        ..Options::default()
    };
    let report = pass(&store, &old, &new, &resync).await;
    assert_eq!(report.stats.flags_updated, 2);
    let after = inbox(&new);
    for m in &old_msgs {
        assert_eq!(
            copy_of(&after, m).flags,
            set(&["\\Seen"]),
            "{}",
            message_id(m)
        );
    }

    // Converged: neither mode changes anything now.
    assert_eq!(
        pass(&store, &old, &new, &resync).await.stats.flags_updated,
        0
    );
    assert_eq!(
        pass(&store, &old, &new, &Options::default())
            .await
            .stats
            .flags_updated,
        0
    );
}

fn dated(id: &str, date: Option<&str>) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: {id}\r\nMessage-Id: <{id}@test>\r\n"
    );
    if let Some(d) = date {
        m.push_str(&format!("Date: {d}\r\n"));
    }
    m.push_str("\r\nbody\r\n");
    m.into_bytes()
}

const OLD_IDATE: &str = "01-Jan-2020 00:00:00 +0000";

/// OLD: one message with a good Date header, one with a bad one, one without; all with an
/// INTERNALDATE unlike their header.
fn seed_dated(old: &Dovecot) {
    let mut o = login(old);
    for (id, date) in [
        ("good", Some("Tue, 05 Mar 2024 14:07:09 +0100 (CET)")),
        ("bad", Some("the day before yesterday")),
        ("none", None),
    ] {
        o.append("INBOX", &[], Some(OLD_IDATE), &dated(id, date));
    }
}

fn idate_of(msgs: &[common::Msg], id: &str) -> i64 {
    let m = msgs
        .iter()
        .find(|m| message_id(m).contains(&format!("<{id}@test>")))
        .expect("message");
    parse_imap_date(&m.internaldate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internaldate_sources() {
    let old_idate = parse_imap_date(OLD_IDATE);

    // --idatefromheader: the Date header's instant; OLD's INTERNALDATE where it is unusable.
    let (old, new, store, _dir) = setup(Layout::Slash, Layout::Slash).await;
    seed_dated(&old);
    let opts = Options {
        dates: DateSource::Header,
        ..Options::default()
    };
    pass(&store, &old, &new, &opts).await;
    let msgs = inbox(&new);
    assert_eq!(
        idate_of(&msgs, "good"),
        parse_imap_date("05-Mar-2024 13:07:09 +0000")
    );
    assert_eq!(idate_of(&msgs, "bad"), old_idate);
    assert_eq!(idate_of(&msgs, "none"), old_idate);

    // Default: OLD's INTERNALDATE.
    let (old, new, store, _dir) = setup(Layout::Slash, Layout::Slash).await;
    seed_dated(&old);
    pass(&store, &old, &new, &Options::default()).await;
    let msgs = inbox(&new);
    for id in ["good", "bad", "none"] {
        assert_eq!(idate_of(&msgs, id), old_idate, "{id}");
    }

    // --nosyncinternaldates: NEW stamps the time of the copy.
    let (old, new, store, _dir) = setup(Layout::Slash, Layout::Slash).await;
    seed_dated(&old);
    let opts = Options {
        dates: DateSource::None,
        ..Options::default()
    };
    pass(&store, &old, &new, &opts).await;
    let msgs = inbox(&new);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for id in ["good", "bad", "none"] {
        assert!(
            (idate_of(&msgs, id) - now).abs() < 3600,
            "{id}: INTERNALDATE is the time of the copy"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_messages_per_second_slows_the_copy() {
    let (old, new, store, _dir) = setup(Layout::Slash, Layout::Slash).await;
    let mut o = login(&old);
    for i in 0..30u64 {
        o.append("INBOX", &[], None, &common::message(i, 400));
    }
    let opts = Options {
        max_messages_per_second: Some(20.0),
        ..Options::default()
    };
    // The pacing itself is tested with paused time (sync::rate); here the limited pass copies
    // everything.
    let report = pass(&store, &old, &new, &opts).await;
    assert_eq!(report.stats.messages_transferred, 30);
    assert_eq!(inbox(&new).len(), 30);
}

/// `imapferry sync ARGS` in a scratch directory: exit code and all output.
fn cli(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imapferry"))
        .arg("sync")
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run imapferry");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn cli_options_are_checked_at_parse() {
    for args in [
        &["--regexflag", "s/(//"][..],
        &["--regexflag", "m/x/"],
        &["--maxbytespersecond", "lots"],
        &["--maxmessagespersecond", "-1"],
        &["--idatefromheader=1"],
    ] {
        let (code, text) = cli(args);
        assert_eq!(code, 64, "{args:?}: {text}");
    }
    let (code, help) = cli(&["--help"]);
    assert_eq!(code, 0, "{help}");
    for name in [
        "--[no]filterbuggyflags",
        "--regexflag S///",
        "--[no]resyncflags",
        "--[no]syncinternaldates",
        "--[no]idatefromheader",
        "--maxbytespersecond BYTES",
        "--maxmessagespersecond N",
    ] {
        assert!(help.contains(name), "--help lacks {name}:\n{help}");
    }
}

/// Plays the user on NEW in the middle of a pass: when the pass reports an event of the given
/// kind, the user STOREs on NEW once (`(uid, op, flags)`), as a mail client through the proxy
/// would while a live-pickup pass runs.
struct UserOnNew {
    host: String,
    port: u16,
    on_expunged: std::sync::Mutex<Option<(u32, &'static str, Vec<&'static str>)>>,
    on_flags: std::sync::Mutex<Option<(u32, &'static str, Vec<&'static str>)>>,
    /// On the first message copied: `(op, flags)` on its copy.
    on_copied: std::sync::Mutex<Option<(&'static str, Vec<&'static str>)>>,
}

impl UserOnNew {
    fn new(d: &Dovecot) -> UserOnNew {
        UserOnNew {
            host: d.host().to_string(),
            port: d.port(),
            on_expunged: Default::default(),
            on_flags: Default::default(),
            on_copied: Default::default(),
        }
    }
}

impl Observer for UserOnNew {
    fn event(&self, event: Event) {
        let action = match event {
            Event::Expunged { .. } => self.on_expunged.lock().unwrap().take(),
            Event::FlagsUpdated { .. } => self.on_flags.lock().unwrap().take(),
            Event::Copied {
                new_uid: Some(uid), ..
            } => (self.on_copied.lock().unwrap().take()).map(|(op, flags)| (uid, op, flags)),
            _ => None,
        };
        if let Some((uid, op, flags)) = action {
            let mut user = RawImap::connect(&self.host, self.port);
            user.login("alice", PW);
            user.uid_store("INBOX", uid, op, &flags);
            user.logout();
        }
    }
}

/// A pass that follows OLD's flags must not undo what the user does on NEW while it runs: a
/// STORE made after the pass read NEW and before it wrote there wins (the pass's STORE is
/// conditional on what it read), and one made after the pass wrote NEW but before it recorded
/// NEW's state is seen by the next pass as the user's (the recorded watermark does not hide it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_never_undoes_a_store_the_user_made_during_it() {
    let (old, new, store, _dir) = setup(Layout::Slash, Layout::Slash).await;
    let mut o = login(&old);
    // Twelve messages: one expunge stays under the 10 % deletion bound.
    seed_seen(&mut o, 12);
    pass(&store, &old, &new, &Options::default()).await;
    pass(&store, &old, &new, &Options::default()).await;
    let m = inbox(&old);
    let copies = inbox(&new);
    let on_new = |i: usize| copy_of(&copies, &m[i]).uid;

    // OLD changes: m0 and m1 lose \Seen, m4 is expunged, a new message arrives.
    o.uid_store("INBOX", m[0].uid, "-FLAGS", &["\\Seen"]);
    o.uid_store("INBOX", m[1].uid, "-FLAGS", &["\\Seen"]);
    o.uid_expunge("INBOX", m[4].uid);
    o.append("INBOX", &[], None, &common::message(12, 900));
    // Meanwhile the user: once the pass has read NEW (it reports the expunge), sets m0's flags;
    // once it has written m1's (it reports the flag update), marks m2 unread.
    let user = UserOnNew::new(&new);
    *user.on_expunged.lock().unwrap() = Some((on_new(0), "FLAGS", vec!["\\Seen", "\\Answered"]));
    *user.on_flags.lock().unwrap() = Some((on_new(2), "-FLAGS", vec!["\\Seen"]));
    pass_with(&store, &old, &new, &Options::default(), &user).await;
    assert!(
        user.on_expunged.lock().unwrap().is_none(),
        "the pass reported its expunge"
    );
    assert!(
        user.on_flags.lock().unwrap().is_none(),
        "the pass reported its flag update"
    );
    let after = inbox(&new);
    let flags_of = |msgs: &[common::Msg], i: usize| copy_of(msgs, &m[i]).flags.clone();
    assert_eq!(
        flags_of(&after, 0),
        set(&["\\Seen", "\\Answered"]),
        "the user's STORE stands"
    );
    assert_eq!(flags_of(&after, 1), set(&[]), "OLD's change reached NEW");

    // OLD flags m2 (say, the mirror of an earlier write): the user's later unread mark stays.
    o.uid_store("INBOX", m[2].uid, "+FLAGS", &["\\Flagged"]);
    pass(&store, &old, &new, &Options::default()).await;
    let last = inbox(&new);
    assert!(
        !flags_of(&last, 2).contains("\\Seen"),
        "the user's -\\Seen made during the earlier pass was undone: {:?}",
        flags_of(&last, 2)
    );
    assert_eq!(flags_of(&last, 0), set(&["\\Seen", "\\Answered"]));
}

/// The same during a folder's first pass, which reads NEW without CONDSTORE: the user marks
/// the first copy unread while the rest are still being copied. When OLD later flags that
/// message, the user's unread mark stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_pass_leaves_the_next_one_what_the_user_changed_during_it() {
    let (old, new, store, _dir) = setup(Layout::Slash, Layout::Slash).await;
    let mut o = login(&old);
    seed_seen(&mut o, 20);
    let user = UserOnNew::new(&new);
    *user.on_copied.lock().unwrap() = Some(("-FLAGS", vec!["\\Seen"]));
    pass_with(&store, &old, &new, &Options::default(), &user).await;
    assert!(
        user.on_copied.lock().unwrap().is_none(),
        "the pass reported a copy"
    );
    let unread: Vec<common::Msg> = inbox(&new)
        .into_iter()
        .filter(|m| !m.flags.contains("\\Seen"))
        .collect();
    assert_eq!(unread.len(), 1, "the user's mark");
    let m = inbox(&old);
    let first = m
        .iter()
        .find(|o| message_id(o) == message_id(&unread[0]))
        .expect("on OLD");

    o.uid_store("INBOX", first.uid, "+FLAGS", &["\\Flagged"]);
    pass(&store, &old, &new, &Options::default()).await;
    let flags = copy_of(&inbox(&new), first).flags.clone();
    assert!(
        !flags.contains("\\Seen"),
        "the user's -\\Seen made during the first pass was undone: {flags:?}"
    );
}
