//! The mirror against recorded OLD and NEW dialogues: what it sends to each side for a journal
//! entry, and that it leaves NEW alone where the entry says enough.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::{MirrorError, apply};
use crate::imap::script::{Step, serve, step};
use crate::imap::uidset::Ranges;
use crate::imap::{Client, Security, Side};
use crate::mapping;
use crate::migrate::account::{Account, JournalPolicy, Shared};
use crate::migrate::drain::RecordError;
use crate::migrate::journal::{Entry, FlagOp, Write};
use crate::migrate::pool::Conn;
use crate::secret::Secret;
use crate::store::{AccountKey, JournalEntry, Link, SqliteStore, Store};
use crate::sync::{AuthMech, Endpoint, Options};

fn endpoint() -> Endpoint {
    Endpoint {
        connect: crate::imap::ConnectOptions {
            host: "127.0.0.1".into(),
            port: 1,
            security: Security::Plain,
            tls: Default::default(),
            timeout: Duration::from_secs(5),
        },
        user: "u".into(),
        password: Secret::new("pw"),
        authuser: None,
        auth: AuthMech::Login,
    }
}

/// An account whose OLD uses `.` with `INBOX.` and NEW `/`, in an in-memory store.
async fn account() -> Arc<Account> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_memory().await.unwrap());
    let key = AccountKey {
        old_host: "old".into(),
        old_user: "u".into(),
        new_host: "new".into(),
        new_user: "u".into(),
    };
    let id = store.account(&key).await.unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let shared = Shared {
        rate: None,
        interactive: Arc::new(AtomicUsize::new(0)),
        journal: JournalPolicy {
            attempts: 5,
            retry: Duration::from_secs(1),
            keep: Duration::from_secs(60),
        },
        stop: stopped,
    };
    let acct = Account::new(
        id,
        store,
        (endpoint(), endpoint()),
        Options::default(),
        &shared,
    );
    acct.names.lock().unwrap().set_tree(
        vec![
            ("INBOX".into(), "INBOX".into()),
            ("INBOX.A".into(), "A".into()),
        ],
        mapping::Side {
            sep: '.',
            prefix: "INBOX.".into(),
        },
        mapping::Side {
            sep: '/',
            prefix: String::new(),
        },
        Instant::now(),
    );
    Arc::new(acct)
}

/// Journals `write` as the proxy would (OLD names of its time); returns the stored entry.
async fn journal(acct: &Account, write: Write) -> JournalEntry {
    let old = acct.names.lock().unwrap().journal(&write);
    let payload = Entry {
        write: write.clone(),
        old: Some(old),
    }
    .to_json()
    .unwrap();
    let id = acct
        .store
        .journal_append(acct.id, write.kind(), &payload)
        .await
        .unwrap();
    acct.store
        .journal_pending(acct.id, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == id)
        .unwrap()
}

/// Runs `entry` against the two dialogues; returns the mirror's answer and what each side got.
async fn mirror(
    acct: &Account,
    entry: &JournalEntry,
    old: Vec<Step>,
    new: Vec<Step>,
) -> (Result<(), MirrorError>, Vec<String>, Vec<String>) {
    let (old_opts, old_task) = serve("IMAP4rev1 UIDPLUS LITERAL+", old).await;
    let (new_opts, new_task) = serve("IMAP4rev1 UIDPLUS LITERAL+", new).await;
    let mut conn = Conn {
        old: Client::connect(&old_opts, Side::Old).await.unwrap(),
        new: Client::connect(&new_opts, Side::New).await.unwrap(),
    };
    let result = apply(acct, &mut conn, entry, false).await;
    drop(conn);
    let old_seen = old_task
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("OLD: {e}"));
    let new_seen = new_task
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("NEW: {e}"));
    (result, old_seen, new_seen)
}

fn link(old_uid: u32, new_uid: u32) -> Link {
    Link {
        old_uid,
        new_uid,
        old_flags: "\\Seen".into(),
        new_flags: "\\Seen".into(),
        ident: None,
    }
}

const SELECTED: &str =
    "* OK [PERMANENTFLAGS (\\Seen \\Flagged \\*)] x\r\n* 3 EXISTS\r\n$tag OK [READ-WRITE] done\r\n";

#[tokio::test]
async fn a_store_with_its_uids_is_written_to_old_without_reading_new() {
    let acct = account().await;
    let pair = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    acct.store
        .add_links(pair.id, &[link(10, 1), link(11, 2), link(12, 3)])
        .await
        .unwrap();
    let entry = journal(
        &acct,
        Write::Flags {
            folder: "A".into(),
            uids: Some(Ranges::parse("1:2", 10).unwrap()),
            flags: vec!["\\Flagged".into()],
            replace: false,
            op: Some(FlagOp::Add),
        },
    )
    .await;
    let (result, old, new) = mirror(
        &acct,
        &entry,
        vec![
            step("SELECT \"INBOX.A\"", SELECTED),
            step("UID STORE 10:11 +FLAGS.SILENT (\\Flagged)", "$tag OK\r\n"),
        ],
        vec![],
    )
    .await;
    result.unwrap();
    assert_eq!(old.len(), 2);
    assert!(new.is_empty(), "NEW was read: {new:?}");
    let bases: BTreeMap<u32, String> = acct
        .store
        .links(pair.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.old_uid, l.old_flags))
        .collect();
    assert_eq!(bases[&10], "\\Flagged \\Seen");
    assert_eq!(bases[&12], "\\Seen");
}

#[tokio::test]
async fn an_append_is_read_where_a_later_rename_moved_it() {
    let acct = account().await;
    acct.store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    let append = journal(
        &acct,
        Write::Append {
            folder: "A".into(),
            uids: vec![7],
        },
    )
    .await;
    journal(
        &acct,
        Write::Rename {
            from: "A".into(),
            to: "B".into(),
        },
    )
    .await;
    let body = "Subject: hi\r\n\r\nbody\r\n";
    let (result, old, new) = mirror(
        &acct,
        &append,
        vec![step(
            &format!("APPEND \"INBOX.A\" (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {{{}+}}", body.len()),
            "$tag OK [APPENDUID 5 40] done\r\n",
        )],
        vec![
            step("EXAMINE \"B\"", "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n"),
            step(
                "UID FETCH 7 (UID FLAGS INTERNALDATE BODY.PEEK[])",
                &format!(
                    "* 1 FETCH (UID 7 FLAGS (\\Seen \\Recent) INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" BODY[] {{{}}}\r\n{body})\r\n$tag OK\r\n",
                    body.len()
                ),
            ),
        ],
    )
    .await;
    result.unwrap();
    assert!(old[0].ends_with(body), "{old:?}");
    assert_eq!(new.len(), 2);
    let pair = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    let links = acct.store.links(pair.id).await.unwrap();
    assert_eq!((links[0].old_uid, links[0].new_uid), (40, 7));
}

#[tokio::test]
async fn a_folder_nobody_opened_is_deleted_on_old_by_its_old_name() {
    let acct = account().await;
    let entry = journal(&acct, Write::Delete { folder: "A".into() }).await;
    let (result, old, new) = mirror(
        &acct,
        &entry,
        vec![step("DELETE \"INBOX.A\"", "$tag OK\r\n")],
        vec![],
    )
    .await;
    result.unwrap();
    assert_eq!(old, ["DELETE \"INBOX.A\""]);
    assert!(new.is_empty());
}

#[tokio::test]
async fn what_old_refuses_comes_back_as_refused_and_nothing_is_marked() {
    let acct = account().await;
    let pair = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    acct.store.add_links(pair.id, &[link(10, 1)]).await.unwrap();
    let entry = journal(
        &acct,
        Write::Flags {
            folder: "A".into(),
            uids: Some(Ranges::parse("1", 10).unwrap()),
            flags: vec!["\\Seen".into()],
            replace: false,
            op: Some(FlagOp::Remove),
        },
    )
    .await;
    let (result, _, _) = mirror(
        &acct,
        &entry,
        vec![step(
            "SELECT \"INBOX.A\"",
            "$tag NO [NONEXISTENT] Mailbox doesn't exist\r\n",
        )],
        vec![],
    )
    .await;
    assert!(
        matches!(result, Err(MirrorError::Refused(ref why)) if why.contains("doesn't exist")),
        "{result:?}"
    );
    // The link's base is as it was: nothing pretends OLD has the change.
    let l = acct.store.links(pair.id).await.unwrap().remove(0);
    assert_eq!(l.old_flags, "\\Seen");
}

#[tokio::test]
async fn a_rename_of_inbox_can_never_apply() {
    let acct = account().await;
    let entry = journal(
        &acct,
        Write::Rename {
            from: "INBOX".into(),
            to: "Old mail".into(),
        },
    )
    .await;
    let (result, old, _) = mirror(&acct, &entry, vec![], vec![]).await;
    assert!(matches!(result, Err(MirrorError::Never(_))), "{result:?}");
    assert!(old.is_empty());
}

/// Poisons the lock around `acct`'s folder names, as a panic in the middle of a rename's
/// bookkeeping would.
fn poison_names(acct: &Arc<Account>) {
    let held = Arc::clone(acct);
    let panicked = std::thread::spawn(move || {
        let _names = held.names.lock().unwrap();
        panic!("a panic while the folder names are held");
    })
    .join();
    assert!(panicked.is_err() && acct.names.is_poisoned());
}

/// Issue 12 (poisoned locks): poisoned folder names were read as "no OLD names": a write was
/// journaled without them (so never mirrored), an older entry was taken as "not on OLD" and
/// dropped, and a sweep or backfill silently did nothing. Now each fails with the error naming
/// the lock, and nothing is journaled or marked done.
#[tokio::test]
async fn poisoned_folder_names_fail_instead_of_skipping() {
    let acct = account().await;
    // An entry of an earlier version, without OLD names: the mirror needs the account's.
    let payload = Entry {
        write: Write::Delete { folder: "A".into() },
        old: None,
    }
    .to_json()
    .unwrap();
    acct.store
        .journal_append(acct.id, "delete", &payload)
        .await
        .unwrap();
    let entry = acct.store.journal_pending(acct.id, 10).await.unwrap()[0].clone();
    poison_names(&acct);

    let written = acct.record(Write::Expunge { folder: "A".into() }).await;
    assert!(
        matches!(written, Err(RecordError::Poisoned(_))),
        "{written:?}"
    );
    let pending = acct.store.journal_pending(acct.id, 10).await.unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the write was journaled without its names"
    );

    let (result, old, _) = mirror(&acct, &entry, vec![], vec![]).await;
    assert!(
        matches!(result, Err(MirrorError::Poisoned(_))),
        "{result:?}"
    );
    assert!(old.is_empty(), "{old:?}");

    let swept = acct.sweep().await.unwrap_err();
    assert!(swept.1.contains("folder names"), "{swept:?}");
    assert!(acct.backfill("A", false).is_err());
    // A getter of what is set whole still answers, and the lock stays an error for the rest.
    assert_eq!(acct.separators(), Some(('.', '/')));
    assert!(acct.old_name("A").is_err());
}
