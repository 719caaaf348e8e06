//! imapsync's deletion and identity options through the engine, against real Dovecot servers:
//! `--delete2` (strict mirror), `--delete2duplicates`, `--delete2folders`, `--delete1`,
//! `--nosyncduplicates`, `--addheader`, and that `--dry` deletes nothing.

mod common;

use common::{Dovecot, Layout, RawImap};
use imapferry::store::SqliteStore;
use imapferry::sync::{Endpoint, FolderDeletion, Options, Quiet, Report, sync_account};

const PW: &str = "del-pw";

fn endpoint(d: &Dovecot, user: &str) -> Endpoint {
    common::engine_endpoint(d, user, PW)
}

async fn pass(store: &SqliteStore, old: &Dovecot, new: &Dovecot, opts: &Options) -> Report {
    let r = sync_account(
        store,
        &endpoint(old, "alice"),
        &endpoint(new, "alice"),
        opts,
        &Quiet,
    )
    .await
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r
}

fn imap(d: &Dovecot) -> RawImap {
    let mut i = RawImap::connect(d.host(), d.port());
    i.login("alice", PW);
    i
}

fn count(d: &Dovecot, folder: &str) -> usize {
    imap(d).uid_fetch_all(folder).len()
}

fn servers() -> (Dovecot, Dovecot, tempfile::TempDir) {
    let (old, new) = (Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash));
    old.add_user("alice", PW);
    new.add_user("alice", PW);
    (old, new, tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete2_mirrors_old_strictly_and_dry_changes_nothing() {
    let (old, new, dir) = servers();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    let mut o = imap(&old);
    for i in 0..5 {
        o.append("INBOX", &[], None, &common::message(i, 900));
    }
    let mut n = imap(&new);
    n.append("INBOX", &[], None, &common::message(100, 900)); // only on NEW
    n.append("INBOX", &[], None, &common::message(101, 900)); // only on NEW
    n.create("Stray");
    n.create("Stray/Child");
    n.create("KeepMe");

    // --dry: reports, deletes nothing.
    let dry = Options {
        dry: true,
        delete2: true,
        delete2_folders: Some(FolderDeletion::default()),
        ..Options::default()
    };
    let r = sync_account(
        &store,
        &endpoint(&old, "alice"),
        &endpoint(&new, "alice"),
        &dry,
        &Quiet,
    )
    .await
    .unwrap();
    assert_eq!(r.stats.messages_deleted_on_new, 2);
    assert_eq!(count(&new, "INBOX"), 2, "--dry must not delete");
    assert!(n.list().iter().any(|(_, _, name)| name == "Stray"));

    // --delete2 --delete2foldersbutnot /KeepMe/: NEW ends as OLD.
    let opts = Options {
        delete2: true,
        delete2_folders: Some(FolderDeletion {
            only: None,
            but_not: Some(regex::Regex::new("KeepMe").unwrap()),
        }),
        ..Options::default()
    };
    let r = pass(&store, &old, &new, &opts).await;
    assert_eq!(r.stats.messages_deleted_on_new, 2);
    assert_eq!(count(&new, "INBOX"), 5);
    let names: Vec<String> = imap(&new).list().into_iter().map(|(_, _, n)| n).collect();
    assert!(!names.iter().any(|n| n.starts_with("Stray")), "{names:?}");
    assert!(names.contains(&"KeepMe".to_string()), "{names:?}");
    // A second strict pass has nothing left to delete.
    assert_eq!(
        pass(&store, &old, &new, &opts)
            .await
            .stats
            .messages_deleted_on_new,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_options() {
    let (old, new, dir) = servers();
    let mut o = imap(&old);
    for _ in 0..3 {
        o.append("INBOX", &[], None, &common::message(7, 900)); // three exact duplicates
    }
    o.append("INBOX", &[], None, &common::message(8, 900));

    // --nosyncduplicates (imapsync's default): one copy of the three.
    let store = SqliteStore::open(&dir.path().join("a.db")).await.unwrap();
    let r = pass(
        &store,
        &old,
        &new,
        &Options {
            sync_duplicates: false,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(r.stats.duplicates_on_old, 2);
    assert_eq!(count(&new, "INBOX"), 2);

    // Another tool duplicated a message on NEW: --delete2duplicates removes the extra copy,
    // and the next pass does not bring it back.
    let mut n = imap(&new);
    n.append("INBOX", &[], None, &common::message(8, 900));
    let opts = Options {
        sync_duplicates: false,
        delete2_duplicates: true,
        ..Options::default()
    };
    let r = pass(&store, &old, &new, &opts).await;
    assert_eq!(r.stats.messages_deleted_on_new, 1);
    assert_eq!(count(&new, "INBOX"), 2);
    assert_eq!(
        pass(&store, &old, &new, &opts)
            .await
            .stats
            .messages_transferred,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete1_moves_and_a_later_pass_does_not_mirror_it_back() {
    let (old, new, dir) = servers();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    let mut o = imap(&old);
    for i in 0..4 {
        o.append("INBOX", &[], None, &common::message(i, 900));
    }
    let opts = Options {
        delete1: true,
        expunge1: true,
        ..Options::default()
    };
    let r = pass(&store, &old, &new, &opts).await;
    assert_eq!(r.stats.messages_transferred, 4);
    assert_eq!(r.stats.messages_deleted_on_old, 4);
    assert_eq!(count(&old, "INBOX"), 0, "moved off OLD");
    assert_eq!(count(&new, "INBOX"), 4);
    // A plain pass afterwards: OLD's emptiness is our own doing, NEW keeps everything.
    let r = pass(&store, &old, &new, &Options::default()).await;
    assert_eq!(r.stats.messages_deleted_on_new, 0);
    assert_eq!(count(&new, "INBOX"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addheader_gives_unidentified_messages_a_message_id() {
    let (old, new, dir) = servers();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    let mut o = imap(&old);
    let bare = b"From: a@b\r\nSubject: no id\r\n\r\nhello\r\n";
    o.append("INBOX", &[], None, bare);
    pass(
        &store,
        &old,
        &new,
        &Options {
            add_header: true,
            ..Options::default()
        },
    )
    .await;
    let copies = imap(&new).uid_fetch_all("INBOX");
    let uid = imap(&old).uid_fetch_all("INBOX")[0].uid;
    assert_eq!(copies.len(), 1);
    assert!(
        copies[0]
            .body
            .starts_with(format!("Message-Id: <{uid}@imapsync>\r\n").as_bytes()),
        "{}",
        String::from_utf8_lossy(&copies[0].body)
    );
    assert!(copies[0].body.ends_with(bare));
    // A fresh state (as after switching from imapsync) adopts the copy instead of copying again.
    let store2 = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    let r = pass(
        &store2,
        &old,
        &new,
        &Options {
            add_header: true,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        (r.stats.messages_transferred, r.stats.messages_adopted),
        (0, 1)
    );
}
