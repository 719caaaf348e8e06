//! The engine against real Dovecot servers: a full copy in every layout pair, a second pass that
//! changes nothing, three-way flag merge, tombstones, new mail, OLD expunges and their safety bound,
//! and adoption of copies made by another tool.

mod common;

use common::{Dovecot, Layout, RawImap, SeedSpec, assert_same_mail, seed_account, snapshot};
use imapferry::imap::Side;
use imapferry::store::{SqliteStore, Store};
use imapferry::sync::{
    Endpoint, Event, Observer, Options, Quiet, Report, login, sync_account, sync_pair,
};

const PW: &str = "secret-pw";

fn endpoint(d: &Dovecot, user: &str) -> Endpoint {
    common::engine_endpoint(d, user, PW)
}

use common::Print;

async fn pass(store: &dyn Store, old: &Dovecot, new: &Dovecot, opts: &Options) -> Report {
    let report = sync_account(
        store,
        &endpoint(old, "alice"),
        &endpoint(new, "alice"),
        opts,
        &Print,
    )
    .await
    .expect("sync pass");
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    report
}

fn pair(old: Layout, new: Layout) -> (Dovecot, Dovecot) {
    let (o, n) = (Dovecot::start(old), Dovecot::start(new));
    n.add_user("alice", PW);
    (o, n)
}

/// OLD (`/` layout) with `messages` messages in alice's INBOX, copied to NEW by a first pass:
/// both servers, a connection to OLD, the state's directory and store.
async fn synced_inbox(
    messages: u64,
) -> (Dovecot, Dovecot, RawImap, tempfile::TempDir, SqliteStore) {
    let (old, new) = pair(Layout::Slash, Layout::Slash);
    old.add_user("alice", PW);
    let mut o = RawImap::connect(old.host(), old.port());
    o.login("alice", PW);
    for i in 0..messages {
        o.append("INBOX", &[], None, &common::message(i, 800));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    pass(&store, &old, &new, &Options::default()).await;
    (old, new, o, dir, store)
}

async fn full_copy_then_quiet_second_pass(old_layout: Layout, new_layout: Layout) {
    let (old, new) = pair(old_layout, new_layout);
    let seeded = seed_account(&old, "alice", PW, &SeedSpec::small());
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();

    let first = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        first.stats.messages_transferred as usize, seeded.messages,
        "{old_layout:?} -> {new_layout:?}"
    );
    let (o, n) = (snapshot(&old, "alice", PW), snapshot(&new, "alice", PW));
    assert_same_mail(&o, &n);
    assert_eq!(o.subscribed, n.subscribed, "subscriptions");

    let second = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(second.stats.messages_transferred, 0, "second pass copied");
    assert_eq!(second.stats.flags_updated, 0, "second pass changed flags");
    assert_eq!(second.stats.messages_deleted_on_new, 0);
    assert_same_mail(&n, &snapshot(&new, "alice", PW));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_to_courier_prefix() {
    full_copy_then_quiet_second_pass(Layout::Slash, Layout::DotInbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_prefix_to_slash() {
    full_copy_then_quiet_second_pass(Layout::DotInbox, Layout::Slash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_reduced_capability_server() {
    full_copy_then_quiet_second_pass(Layout::Slash, Layout::Reduced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_reduced_capability_server() {
    full_copy_then_quiet_second_pass(Layout::Reduced, Layout::DotInbox).await;
}

/// Messages of a folder as (uid, subject-ish first line, flags), via the independent test client.
fn messages(d: &Dovecot, folder: &str) -> Vec<common::Msg> {
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login("alice", PW);
    imap.uid_fetch_all(folder)
}

fn message_id(m: &common::Msg) -> String {
    let text = String::from_utf8_lossy(&m.body);
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .unwrap_or("")
        .to_string()
}

async fn later_passes_follow_each_side(old_layout: Layout, new_layout: Layout) {
    let (old, new) = pair(old_layout, new_layout);
    let inbox_old = "INBOX";
    let mut o = RawImap::connect(old.host(), old.port());
    old.add_user("alice", PW);
    o.login("alice", PW);
    for i in 0..20u64 {
        let flags: &[&str] = if i % 2 == 0 { &["\\Seen"] } else { &[] };
        o.append(inbox_old, flags, None, &common::message(i, 1500));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    pass(&store, &old, &new, &Options::default()).await;

    let old_msgs = messages(&old, inbox_old);
    let new_msgs = messages(&new, "INBOX");
    let on_new = |m: &common::Msg| {
        new_msgs
            .iter()
            .find(|n| message_id(n) == message_id(m))
            .expect("copy on NEW")
            .uid
    };
    // OLD: flag message 1, unflag... ; NEW: the user reads message 3 and tags message 5; deletes message 7.
    let (m1, m3, m5, m7) = (&old_msgs[1], &old_msgs[3], &old_msgs[5], &old_msgs[7]);
    o.uid_store(inbox_old, m1.uid, "+FLAGS", &["\\Flagged"]);
    o.uid_store(inbox_old, old_msgs[0].uid, "-FLAGS", &["\\Seen"]);
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    n.uid_store("INBOX", on_new(m3), "+FLAGS", &["\\Seen"]);
    n.uid_store("INBOX", on_new(m5), "+FLAGS", &["$Important"]);
    n.uid_expunge("INBOX", on_new(m7));
    // A true conflict: message 9 is unread on both; OLD marks it read, NEW flags... NEW removes
    // nothing but adds \Seen then removes it again is no change; use \Answered: OLD adds, NEW adds too.
    o.append(
        inbox_old,
        &["\\Answered"],
        None,
        &common::message(100, 1200),
    );

    let report = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        report.stats.messages_transferred, 1,
        "only the new OLD message is copied"
    );

    let after = messages(&new, "INBOX");
    let find = |m: &common::Msg| after.iter().find(|n| message_id(n) == message_id(m));
    assert!(
        find(m1).unwrap().flags.contains("\\Flagged"),
        "a flag set on OLD reaches NEW"
    );
    assert!(
        !find(&old_msgs[0]).unwrap().flags.contains("\\Seen"),
        "a flag removed on OLD is removed on NEW"
    );
    assert!(
        find(m3).unwrap().flags.contains("\\Seen"),
        "a flag set on NEW only stays"
    );
    assert!(
        find(m5).unwrap().flags.contains("$Important"),
        "a keyword set on NEW only stays"
    );
    assert!(
        find(m7).is_none(),
        "a message deleted on NEW is not copied back"
    );
    let new_mail = find(&common::Msg {
        uid: 0,
        flags: Default::default(),
        internaldate: String::new(),
        body: common::message(100, 1200),
    });
    assert!(
        new_mail.unwrap().flags.contains("\\Answered"),
        "new OLD mail is copied with its flags"
    );
    assert_eq!(after.len(), 20, "20 + 1 new - 1 deleted");

    // And a third pass after all that changes nothing.
    let third = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        (third.stats.messages_transferred, third.stats.flags_updated),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_passes_follow_each_side_condstore() {
    later_passes_follow_each_side(Layout::Slash, Layout::DotInbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_passes_follow_each_side_without_condstore_or_uidplus() {
    later_passes_follow_each_side(Layout::Reduced, Layout::Reduced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_expunges_reach_new_within_the_bound() {
    let (old, new, mut o, _dir, store) = synced_inbox(30).await;

    // 2 of 30 (under 10 %): mirrored on NEW.
    let msgs = messages(&old, "INBOX");
    o.uid_expunge("INBOX", msgs[0].uid);
    o.uid_expunge("INBOX", msgs[1].uid);
    let report = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(report.stats.messages_deleted_on_new, 2);
    assert_eq!(messages(&new, "INBOX").len(), 28);

    // 10 more (36 % of what is left): the pass refuses and says so; nothing is deleted.
    for m in &msgs[2..12] {
        o.uid_expunge("INBOX", m.uid);
    }
    let report = sync_account(
        &store,
        &endpoint(&old, "alice"),
        &endpoint(&new, "alice"),
        &Options::default(),
        &Quiet,
    )
    .await
    .unwrap();
    assert_eq!(report.stats.messages_deleted_on_new, 0);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("stopping this folder")),
        "{:?}",
        report.errors
    );
    assert_eq!(messages(&new, "INBOX").len(), 28);

    // With a higher bound the same pass goes through.
    let opts = Options {
        max_delete_share: 0.5,
        ..Options::default()
    };
    let report = pass(&store, &old, &new, &opts).await;
    assert_eq!(report.stats.messages_deleted_on_new, 10);
    assert_eq!(messages(&new, "INBOX").len(), 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_an_account_copied_by_another_tool() {
    let (old, new) = pair(Layout::DotInbox, Layout::Slash);
    seed_account(&old, "alice", PW, &SeedSpec::small());
    // "Another tool" copied INBOX already (same bytes, same flags), without any state of ours.
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    let inbox = messages(&old, "INBOX");
    for m in &inbox {
        let flags: Vec<&str> = m.flags.iter().map(String::as_str).collect();
        n.append("INBOX", &flags, Some(&m.internaldate), &m.body);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let report = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        report.stats.messages_adopted as usize,
        inbox.len(),
        "every INBOX message adopted"
    );
    assert_same_mail(&snapshot(&old, "alice", PW), &snapshot(&new, "alice", PW));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uidvalidity_change_on_old_re_identifies_instead_of_copying_again() {
    let (old, new) = pair(Layout::Slash, Layout::DotInbox);
    old.add_user("alice", PW);
    let mut o = RawImap::connect(old.host(), old.port());
    o.login("alice", PW);
    o.create("Box");
    for i in 0..12u64 {
        o.append("Box", &[], None, &common::message(i, 900));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    pass(&store, &old, &new, &Options::default()).await;

    // The folder is rebuilt on OLD (as a server migration or a restore does): same mail, new
    // UIDVALIDITY, new UIDs.
    let msgs = messages(&old, "Box");
    o.exec("DELETE Box");
    o.create("Box");
    for m in &msgs {
        let flags: Vec<&str> = m.flags.iter().map(String::as_str).collect();
        o.append("Box", &flags, Some(&m.internaldate), &m.body);
    }
    let report = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        report.stats.messages_transferred, 0,
        "nothing is copied again"
    );
    assert_eq!(
        report.stats.messages_adopted, 12,
        "every message is re-identified by key"
    );
    assert_eq!(messages(&new, "INBOX.Box").len(), 12);
}

/// A message with the given Date header and size (about `size` bytes).
fn dated(id: &str, date: &str, size: usize) -> Vec<u8> {
    let mut m =
        format!("Date: {date}\r\nMessage-Id: <{id}@test>\r\nSubject: {id}\r\n\r\n").into_bytes();
    while m.len() < size {
        m.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_and_folder_selection() {
    use imapferry::sync::MessageSelection;
    let (old, new) = pair(Layout::Slash, Layout::Slash);
    old.add_user("alice", PW);
    new.add_user("bob", PW);
    let mut o = RawImap::connect(old.host(), old.port());
    o.login("alice", PW);
    let now = chrono::Local::now().to_rfc2822();
    o.append("INBOX", &[], None, &dated("recent-small", &now, 500));
    o.append("INBOX", &[], None, &dated("recent-big", &now, 50_000));
    o.append(
        "INBOX",
        &["\\Flagged"],
        None,
        &dated("old-small", "Mon, 01 Jan 2018 10:00:00 +0000", 500),
    );
    o.append(
        "INBOX",
        &[],
        None,
        &dated("old-big", "Mon, 01 Jan 2018 10:00:00 +0000", 50_000),
    );
    o.create("Empty");
    o.create("Full");
    o.append("Full", &[], None, &dated("full-1", &now, 500));
    let dir = tempfile::tempdir().unwrap();
    let ids = |d: &Dovecot, f: &str| -> Vec<String> {
        let mut v: Vec<String> = messages(d, f).iter().map(message_id).collect();
        v.sort();
        v
    };

    // --justfolders --skipemptyfolders --subscribeall: folders, no messages, no empty folder.
    let store = SqliteStore::open(&dir.path().join("a.db")).await.unwrap();
    let opts = Options {
        just_folders: true,
        skip_empty_folders: true,
        subscribe_all: true,
        ..Options::default()
    };
    let report = pass(&store, &old, &new, &opts).await;
    assert_eq!(report.stats.messages_transferred, 0);
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    let names: Vec<String> = n.list().into_iter().map(|(_, _, name)| name).collect();
    assert!(
        names.contains(&"Full".to_string()) && !names.contains(&"Empty".to_string()),
        "{names:?}"
    );
    let subscribed: Vec<String> = n.lsub().into_iter().map(|(_, _, name)| name).collect();
    assert!(
        subscribed.contains(&"Full".to_string()),
        "--subscribeall: {subscribed:?}"
    );
    assert!(messages(&new, "Full").is_empty());

    // --maxage 1 --maxsize 10000: the recent small message only; the recent big one is skipped.
    let messages_sel = MessageSelection {
        maxage: Some(1.0),
        maxsize: Some(10_000),
        ..Default::default()
    };
    let opts = Options {
        messages: messages_sel,
        selection: inbox_only(),
        ..Options::default()
    };
    let report = pass(&store, &old, &new, &opts).await;
    assert_eq!(ids(&new, "INBOX"), vec!["Message-Id: <recent-small@test>"]);
    assert_eq!(
        report.stats.messages_skipped, 1,
        "the big recent message is counted as skipped"
    );

    // --minage 365: the old ones (whatever their size) join; nothing is copied twice.
    let opts = Options {
        messages: MessageSelection {
            minage: Some(365.0),
            ..Default::default()
        },
        selection: inbox_only(),
        ..Options::default()
    };
    pass(&store, &old, &new, &opts).await;
    assert_eq!(
        ids(&new, "INBOX"),
        vec![
            "Message-Id: <old-big@test>",
            "Message-Id: <old-small@test>",
            "Message-Id: <recent-small@test>"
        ]
    );

    // --search FLAGGED on a fresh account state: only the flagged message.
    let store = SqliteStore::open(&dir.path().join("b.db")).await.unwrap();
    let bob = |d: &Dovecot| endpoint(d, "bob");
    let opts = Options {
        messages: MessageSelection {
            search: Some("FLAGGED".into()),
            ..Default::default()
        },
        selection: inbox_only(),
        ..Options::default()
    };
    let report = sync_account(&store, &endpoint(&old, "alice"), &bob(&new), &opts, &Print)
        .await
        .unwrap();
    assert_eq!(report.stats.messages_transferred, 1);
}

fn inbox_only() -> imapferry::mapping::Selection {
    imapferry::mapping::Selection {
        folders: vec!["INBOX".into()],
        ..Default::default()
    }
}

/// An observer whose user still has writes on their way to OLD (the migration proxy's view while
/// a MOVE or EXPUNGE is in flight or journaled but not mirrored).
struct Unsettled;

impl Observer for Unsettled {
    fn event(&self, event: Event) {
        Print.event(event)
    }

    fn new_settled(&self, _: &str) -> bool {
        false
    }
}

/// A linked message missing from NEW is a tombstone only once the caller says the user's writes
/// there are settled: before that it stays linked (the journal's move or expunge finds its link)
/// and is not copied again.
#[tokio::test]
async fn a_deletion_on_new_waits_until_the_caller_says_it_is_settled() {
    use imapferry::store::AccountKey;
    let (old, new, mut o, _dir, store) = synced_inbox(5).await;
    let gone = messages(&new, "INBOX")[2].uid;
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    n.uid_expunge("INBOX", gone);
    // New mail on OLD, so the pass looks at the folder (an unchanged one is skipped).
    o.append("INBOX", &[], None, &common::message(10, 800));

    let key = AccountKey {
        old_host: old.host().to_string(),
        old_user: "alice".into(),
        new_host: new.host().to_string(),
        new_user: "alice".into(),
    };
    let account = store.account(&key).await.unwrap();
    let inbox = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
    let (ep_old, ep_new) = (endpoint(&old, "alice"), endpoint(&new, "alice"));
    let report = sync_account(&store, &ep_old, &ep_new, &Options::default(), &Unsettled)
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert_eq!(
        report.stats.messages_transferred, 1,
        "only the new mail is copied"
    );
    assert_eq!(store.tombstones(inbox.id).await.unwrap(), Vec::<u32>::new());
    assert_eq!(store.links(inbox.id).await.unwrap().len(), 6);
    assert_eq!(messages(&new, "INBOX").len(), 5);

    o.append("INBOX", &[], None, &common::message(11, 800));
    let report = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(report.stats.messages_transferred, 1);
    assert_eq!(store.tombstones(inbox.id).await.unwrap().len(), 1);
    assert_eq!(store.links(inbox.id).await.unwrap().len(), 6);
    assert_eq!(messages(&new, "INBOX").len(), 6);
}

/// A message the user put on NEW (an APPEND through the proxy) is unlinked until the mirror
/// puts it on OLD and links it. A pass meanwhile (the user's writes not settled) records its
/// adoption watermark below that message, so that if the mirror is cut off between OLD's copy
/// and the link, the next pass adopts OLD's copy instead of copying it back to NEW. (It used to
/// record NEW's UIDNEXT, and the message came back to NEW a second time: found by the fault run.)
#[tokio::test]
async fn a_pass_before_the_mirror_links_a_users_append_leaves_it_to_adoption() {
    let (old, new, mut o, _dir, store) = synced_inbox(5).await;
    let users = common::message(20, 900);
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    n.append("INBOX", &[], None, &users);
    // New mail on OLD, so the pass looks at the folder.
    o.append("INBOX", &[], None, &common::message(10, 800));
    let (ep_old, ep_new) = (endpoint(&old, "alice"), endpoint(&new, "alice"));
    let report = sync_account(&store, &ep_old, &ep_new, &Options::default(), &Unsettled)
        .await
        .unwrap();
    assert_eq!(report.stats.messages_transferred, 1, "only OLD's new mail");

    // The mirror's APPEND reached OLD; its link did not (the proxy was killed).
    o.append("INBOX", &[], None, &users);
    let report = pass(&store, &old, &new, &Options::default()).await;
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert_eq!(report.stats.messages_transferred, 0);
    assert_eq!(report.stats.messages_adopted, 1);
    assert_eq!(messages(&new, "INBOX").len(), 7);
}

/// A pass over a folder the user has just renamed (or deleted) on NEW, before the mirror has
/// done it on OLD, leaves NEW's tree alone: the folder is not created again under its old name.
/// (The proxy's backfill raced the user's RENAME this way, and the user's next CREATE of that
/// name failed with `[ALREADYEXISTS]`: found by CI.)
#[tokio::test]
async fn a_pass_does_not_bring_back_a_folder_the_user_just_renamed() {
    let (old, new, mut o, _dir, store) = synced_inbox(0).await;
    o.create("Tmp");
    o.append("Tmp", &[], None, &common::message(1, 800));
    pass(&store, &old, &new, &Options::default()).await;
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    n.exec("RENAME Tmp Kept");
    o.append("Tmp", &[], None, &common::message(2, 800));

    let account = store.account_summaries().await.unwrap()[0].id;
    let pair = store.folder_pair(account, "Tmp", "Tmp").await.unwrap();
    let (mut oc, mut nc) = (
        login(&endpoint(&old, "alice"), Side::Old).await.unwrap(),
        login(&endpoint(&new, "alice"), Side::New).await.unwrap(),
    );
    let report = sync_pair(
        &store,
        &mut oc,
        &mut nc,
        &pair,
        &Options::default(),
        &Unsettled,
    )
    .await
    .unwrap();
    assert_eq!(report.stats.messages_transferred, 0);
    let names: Vec<String> = n.list().into_iter().map(|(_, _, name)| name).collect();
    assert!(!names.contains(&"Tmp".to_string()), "{names:?}");
    assert!(names.contains(&"Kept".to_string()), "{names:?}");
}

/// The links of every folder pair of the only account in `store`.
async fn all_links(store: &dyn Store) -> Vec<Vec<imapferry::store::Link>> {
    let account = store.account_summaries().await.unwrap()[0].id;
    let mut all = Vec::new();
    for pair in store.folder_pairs(account).await.unwrap() {
        all.push(store.links(pair.id).await.unwrap());
    }
    all
}

/// A state file of the release before link runs (schema version 7, one row per link) converts on
/// open and the engine carries on: the same links, and a pass after the conversion changes
/// nothing. The old file is made from a synced one by writing its runs back as one row per link
/// and dropping what migrations 8 to 13 added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_message_state_file_converts_and_the_next_pass_changes_nothing() {
    let (old, new) = pair(Layout::Slash, Layout::Slash);
    let seeded = seed_account(&old, "alice", PW, &SeedSpec::small());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let first = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(first.stats.messages_transferred as usize, seeded.messages);
    let before = all_links(&store).await;
    let linked: usize = before.iter().map(Vec::len).sum();
    assert!(linked >= seeded.messages / 2, "{linked} links");
    store.close().await;

    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "WITH RECURSIVE each (pair_id, old_uid, new_uid, old_flags, new_flags, rest) AS (\
             SELECT pair_id, old_start, new_start, old_flags, new_flags, length - 1 FROM link_runs \
             UNION ALL SELECT pair_id, old_uid + 1, new_uid + 1, old_flags, new_flags, rest - 1 \
             FROM each WHERE rest > 0) \
         INSERT INTO links (pair_id, old_uid, new_uid, old_flags, new_flags, ident) \
         SELECT pair_id, old_uid, new_uid, old_flags, new_flags, NULL FROM each; \
         DROP TABLE link_runs; \
         ALTER TABLE folder_pairs DROP COLUMN retired_tombstones; \
         DROP TABLE folder_sizes; \
         DROP TABLE uid_maps; \
         DROP TABLE append_keys; \
         DROP TABLE pair_epochs; \
         DELETE FROM schema_version WHERE version >= 8;",
    )
    .unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM links", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        rows as usize, linked,
        "one row per link, as version 7 kept them"
    );
    drop(db);

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(all_links(&store).await, before);
    let second = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        second.stats.messages_transferred, 0,
        "copied after the conversion"
    );
    assert_eq!(
        second.stats.flags_updated, 0,
        "changed flags after the conversion"
    );
    assert_eq!(second.stats.messages_deleted_on_new, 0);
    assert_eq!(all_links(&store).await, before);
    assert_same_mail(&snapshot(&old, "alice", PW), &snapshot(&new, "alice", PW));
    store.close().await;
}

/// With CONDSTORE on both sides a synced folder keeps no base flags (DESIGN.md §4a): its links
/// are one run whatever the messages' flags, and a later pass learns from each side's
/// HIGHESTMODSEQ which side changed a message. Changed on OLD only, NEW follows OLD; on NEW only,
/// NEW keeps it; on both, NEW wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_condstore_on_both_sides_flags_follow_the_side_that_changed_them() {
    let (old, new) = pair(Layout::Slash, Layout::Slash);
    old.add_user("alice", PW);
    let mut o = RawImap::connect(old.host(), old.port());
    o.login("alice", PW);
    let kinds: [&[&str]; 4] = [&["\\Seen"], &[], &["\\Seen", "\\Flagged"], &["$Label1"]];
    for i in 0..60u64 {
        o.append(
            "INBOX",
            kinds[i as usize % 4],
            None,
            &common::message(i, 900),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).await.unwrap();
    pass(&store, &old, &new, &Options::default()).await;
    let runs = || async {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.query_row("SELECT COUNT(*) FROM link_runs", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap()
    };
    let links = all_links(&store).await.concat();
    assert_eq!(links.len(), 60);
    assert!(links.iter().all(|l| !l.has_base()), "{:?}", &links[..2]);
    assert_eq!(runs().await, 1, "60 messages of four flag kinds in one run");

    let old_msgs = messages(&old, "INBOX");
    let new_msgs = messages(&new, "INBOX");
    let on_new = |i: usize| {
        new_msgs
            .iter()
            .find(|n| message_id(n) == message_id(&old_msgs[i]))
            .expect("copy on NEW")
            .uid
    };
    let mut n = RawImap::connect(new.host(), new.port());
    n.login("alice", PW);
    // 1: OLD flags it. 2: OLD marks it unread. 5: NEW reads it. 4: both: OLD flags it, NEW
    // tags it.
    o.uid_store("INBOX", old_msgs[1].uid, "+FLAGS", &["\\Flagged"]);
    o.uid_store("INBOX", old_msgs[2].uid, "-FLAGS", &["\\Seen"]);
    n.uid_store("INBOX", on_new(5), "+FLAGS", &["\\Seen"]);
    o.uid_store("INBOX", old_msgs[4].uid, "+FLAGS", &["\\Flagged"]);
    n.uid_store("INBOX", on_new(4), "+FLAGS", &["$Work"]);

    let second = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        (
            second.stats.messages_transferred,
            second.stats.flags_updated
        ),
        (0, 2)
    );
    let after = messages(&new, "INBOX");
    let flags = |i: usize| {
        let m = after.iter().find(|m| m.uid == on_new(i)).unwrap();
        m.flags.iter().cloned().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(flags(1), "\\Flagged", "changed on OLD: NEW follows");
    assert_eq!(
        flags(2),
        "\\Flagged",
        "a flag removed on OLD is removed on NEW"
    );
    assert_eq!(flags(5), "\\Seen", "changed on NEW: NEW keeps it");
    assert_eq!(flags(4), "$Work \\Seen", "changed on both: NEW wins");
    assert!(
        all_links(&store)
            .await
            .concat()
            .iter()
            .all(|l| !l.has_base())
    );
    assert_eq!(runs().await, 1);

    let third = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(
        (third.stats.messages_transferred, third.stats.flags_updated),
        (0, 0)
    );
    store.close().await;
}
