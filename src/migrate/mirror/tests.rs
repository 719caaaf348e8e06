//! The mirror against recorded OLD and NEW dialogues: what it sends to each side for a journal
//! entry, and that it leaves NEW alone where the entry says enough.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::{MirrorError, apply};
use crate::imap::script::{Step, gated_step, pipelined_step, serve, step};
use crate::imap::uidset::Ranges;
use crate::imap::{Client, Security, Side};
use crate::mapping;
use crate::migrate::account::{Account, JournalPolicy, Shared};
use crate::migrate::drain::RecordError;
use crate::migrate::journal::{Entry, FlagOp, Write};
use crate::migrate::pool::Conn;
use crate::secret::Secret;
use crate::store::{AccountKey, JournalEntry, Link, NO_BASE, PairId, SqliteStore, Store};
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
pub(crate) async fn account() -> Arc<Account> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_memory().await.unwrap());
    let key = AccountKey {
        old_host: "old".into(),
        old_user: "u".into(),
        new_host: "new".into(),
        new_user: "u".into(),
    };
    let id = store.account(&key).await.unwrap();
    // The proxy's stop, never given: a dropped sender would read as stopped to every loop.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    Box::leak(Box::new(stop));
    let shared = Shared {
        rate: None,
        interactive: Arc::new(AtomicUsize::new(0)),
        pickup: Arc::new(crate::lock::Swap::new(crate::migrate::pickup::Policy::new(
            &Default::default(),
            str::to_string,
        ))),
        keep: Arc::new(std::sync::atomic::AtomicU64::new(30)),
        mirror_paused: Default::default(),
        gauges: Default::default(),
        journal: JournalPolicy {
            attempts: 5,
            retry: Duration::from_secs(1),
            keep: Duration::from_secs(60),
        },
        committer: crate::migrate::commit::Committer::start(Arc::clone(&store), Default::default()),
        relayed: Default::default(),
        keep_client_caches: false,
        stop: stopped,
    };
    let acct = Account::new(
        id,
        "u",
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

/// The pair `INBOX.A` / `A` and the journaled APPEND of NEW's UID 7 there.
pub(crate) async fn appended_to_a(acct: &Account) -> JournalEntry {
    append_to_a_of(acct, vec![7]).await
}

/// The pair `INBOX.A` / `A` and a journaled APPEND of NEW's `uids` there.
async fn append_to_a_of(acct: &Account, uids: Vec<u32>) -> JournalEntry {
    acct.store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    let validity = (!uids.is_empty()).then_some(9);
    let append = Write::Append {
        folder: "A".into(),
        uids,
        validity,
    };
    journal(acct, append).await
}

/// The mirror's APPEND of `body` to OLD's `INBOX.A` (`\Seen`, NEW's date).
fn append_to_a(body: &str) -> String {
    format!(
        "APPEND \"INBOX.A\" (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {{{}+}}",
        body.len()
    )
}

/// NEW's answer to the mirror's read of message `uid` (`body`, `\Seen`).
fn fetched(uid: u32, body: &str) -> String {
    format!(
        "* 1 FETCH (UID {uid} FLAGS (\\Seen) INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" BODY[] {{{}}}\r\n{body})\r\n$tag OK\r\n",
        body.len()
    )
}

/// Journals `write` as the proxy would (OLD names of its time); returns the stored entry.
pub(crate) async fn journal(acct: &Account, write: Write) -> JournalEntry {
    let old = acct.names.lock().unwrap().journal(&write);
    let payload = Entry {
        write: write.clone(),
        old: Some(old),
        alone: None,
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

/// Journals an EXPUNGE (or CLOSE) in A that names no UIDs.
async fn expunge_in_a(acct: &Account) -> JournalEntry {
    let write = Write::Expunge {
        folder: "A".into(),
        uids: None,
    };
    journal(acct, write).await
}

/// Runs `entry` against the two dialogues; returns the mirror's answer and what each side got.
async fn mirror(
    acct: &Account,
    entry: &JournalEntry,
    old: Vec<Step>,
    new: Vec<Step>,
) -> (Result<(), MirrorError>, Vec<String>, Vec<String>) {
    mirror_with(acct, entry, false, old, new).await
}

/// [`mirror`], `careful` saying whether an earlier attempt may have reached OLD.
async fn mirror_with(
    acct: &Account,
    entry: &JournalEntry,
    careful: bool,
    old: Vec<Step>,
    new: Vec<Step>,
) -> (Result<(), MirrorError>, Vec<String>, Vec<String>) {
    let (old_opts, old_task) = serve("IMAP4rev1 UIDPLUS LITERAL+", old).await;
    let (new_opts, new_task) = serve("IMAP4rev1 UIDPLUS LITERAL+", new).await;
    let mut conn = Conn::uncounted(
        Client::connect(&old_opts, Side::Old).await.unwrap(),
        Client::connect(&new_opts, Side::New).await.unwrap(),
    );
    let replay = super::Replay::from(entry.clone());
    let result = apply(acct, &mut conn, &replay, careful, &super::Pairs::default()).await;
    drop(conn);
    // The links are written with the entry's mark, as the drain does.
    let result = match result {
        Ok(links) => {
            let store = &acct.store;
            let missing = store.journal_mirrored(&[entry.id], &links).await.unwrap();
            assert!(missing.is_empty(), "no journal entry {missing:?}");
            Ok(())
        }
        Err(e) => Err(e),
    };
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

/// An APPEND NEW answered without APPENDUID (a NEW without UIDPLUS) names no message the mirror
/// could read: OLD lacks it until a reconcile, and the account says so.
#[tokio::test]
async fn an_append_without_appenduid_diverges_the_account() {
    let acct = account().await;
    let entry = append_to_a_of(&acct, Vec::new()).await;
    let (result, old, new) = mirror(&acct, &entry, vec![], vec![]).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(old.is_empty() && new.is_empty(), "{old:?} {new:?}");
    let state = acct.store.account_state(acct.id).await.unwrap();
    assert_eq!(state, crate::store::AccountState::Diverged);
}

/// An entry whose text cannot be read can never apply (the drain parks it and the account
/// diverges): no flag run takes it, and the mirror says so without a word to either side.
#[tokio::test]
async fn an_unreadable_entry_can_never_apply() {
    let acct = account().await;
    let id = (acct.store)
        .journal_append(acct.id, "flags", "{\"kind\":\"flags\",\"folder\":")
        .await
        .unwrap();
    let entry = acct.store.journal_pending(acct.id, 10).await.unwrap()[0].clone();
    assert_eq!(entry.id, id);
    assert!(super::flag_run(&[super::Replay::from(entry.clone())]).is_empty());
    let (result, old, new) = mirror(&acct, &entry, vec![], vec![]).await;
    let Err(MirrorError::Never(why)) = result else {
        panic!("{result:?}");
    };
    assert!(
        why.starts_with(&format!("unreadable journal entry {id}: ")),
        "{why}"
    );
    assert!(old.is_empty() && new.is_empty(), "{old:?} {new:?}");
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

/// Folder A (`INBOX.A` on OLD), its NEW UIDs 1–3 linked to OLD's 10–12.
async fn linked_a(acct: &Account) -> crate::store::FolderPair {
    let pair = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    acct.store
        .add_links(pair.id, &[link(10, 1), link(11, 2), link(12, 3)])
        .await
        .unwrap();
    pair
}

#[tokio::test]
async fn a_store_with_its_uids_is_written_to_old_without_reading_new() {
    let acct = account().await;
    let pair = linked_a(&acct).await;
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

/// An EXPUNGE journaled with the UIDs NEW reported gone is mirrored from those alone: OLD
/// expunges their linked messages and NEW is not read; their links go with the entry's mark.
/// Without them (CLOSE), NEW's folder is compared with every link, and a linked message NEW
/// lacks goes too.
#[tokio::test]
async fn an_expunge_naming_its_uids_is_mirrored_without_reading_new() {
    let acct = account().await;
    let pair = linked_a(&acct).await;
    let named = journal(
        &acct,
        Write::Expunge {
            folder: "A".into(),
            uids: Ranges::parse("2,7", 10),
        },
    )
    .await;
    // OLD's side of expunging its message `uid`.
    let expunged = |uid: u32| {
        vec![
            step("SELECT \"INBOX.A\"", SELECTED),
            step(
                &format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"),
                "$tag OK\r\n",
            ),
            step(&format!("UID EXPUNGE {uid}"), "$tag OK\r\n"),
        ]
    };
    let before = acct.store.operations();
    let (result, old, new) = mirror(&acct, &named, expunged(11), vec![]).await;
    result.unwrap();
    assert_eq!(old.len(), 3, "{old:?}");
    assert!(new.is_empty(), "NEW was read: {new:?}");
    // The links go with the entry's mark: one write transaction.
    assert_eq!(acct.store.operations().writes - before.writes, 1);
    assert_eq!(linked_olds(&acct, pair.id).await, [10, 12]);

    // NEW has lost message 3 too (no entry named it): a CLOSE's entry finds it by reading NEW.
    let closed = expunge_in_a(&acct).await;
    let (result, _, new) = mirror(
        &acct,
        &closed,
        expunged(12),
        vec![
            step(
                "EXAMINE \"A\"",
                "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
            ),
            step("UID SEARCH ALL", "* SEARCH 1\r\n$tag OK\r\n"),
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(new.len(), 2, "{new:?}");
    assert_eq!(linked_olds(&acct, pair.id).await, [10]);
}

/// An EXPUNGE naming its UIDs waits, as one reading NEW does, until no change of its folder is
/// in flight on NEW: a MOVE out of the folder that NEW ran first (reported to the expunging
/// session as an EXPUNGE) and that is journaled meanwhile is seen, and OLD keeps the message
/// for that MOVE's mirror instead of expunging it.
#[tokio::test]
async fn an_expunge_naming_its_uids_waits_for_a_move_in_flight() {
    let acct = account().await;
    let pair = linked_a(&acct).await;
    let folder = acct.folder("A");
    folder.begin_change().await;
    let entry = journal(
        &acct,
        Write::Expunge {
            folder: "A".into(),
            uids: Ranges::parse("2", 10),
        },
    )
    .await;
    let mirrored = tokio::spawn({
        let acct = Arc::clone(&acct);
        async move { mirror(&acct, &entry, vec![], vec![]).await }
    });
    // The MOVE's session is answered once the mirror has got as far as it can.
    while folder.reads_waiting() == 0 && !mirrored.is_finished() {
        tokio::task::yield_now().await;
    }
    journal(
        &acct,
        Write::Copy {
            from: "A".into(),
            to: "B".into(),
            uids: vec![(2, 50)],
            moved: true,
        },
    )
    .await;
    folder.end_change();
    let (result, old, new) = mirrored.await.unwrap();
    result.unwrap();
    assert!(old.is_empty() && new.is_empty(), "{old:?} {new:?}");
    assert_eq!(linked_olds(&acct, pair.id).await, [10, 11, 12]);
}

/// The OLD UIDs the pair's links name.
async fn linked_olds(acct: &Account, pair: PairId) -> Vec<u32> {
    let links = acct.store.links(pair).await.unwrap();
    links.iter().map(|l| l.old_uid).collect()
}

fn flags_of(folder: &str, uids: Option<&str>, op: FlagOp, flag: &str) -> Write {
    Write::Flags {
        folder: folder.into(),
        uids: uids.map(|u| Ranges::parse(u, 10).unwrap()),
        flags: vec![flag.into()],
        replace: false,
        op: Some(op),
    }
}

/// Consecutive flag entries of one folder cost OLD one SELECT and their STOREs in order (equal
/// neighbours merged, all sent before the first answer is read), and NEW nothing; a write of
/// another kind or folder, or an entry without its UIDs, ends the run.
#[tokio::test]
async fn consecutive_flag_entries_of_a_folder_go_to_old_together() {
    let acct = account().await;
    let pair = linked_a(&acct).await;
    let mut entries = Vec::new();
    for write in [
        flags_of("A", Some("1"), FlagOp::Add, "\\Flagged"),
        flags_of("A", Some("2"), FlagOp::Add, "\\Flagged"),
        flags_of("A", Some("2:3"), FlagOp::Remove, "\\Seen"),
        flags_of("B", Some("1"), FlagOp::Add, "\\Seen"),
        flags_of("A", None, FlagOp::Add, "\\Seen"),
        Write::Expunge {
            folder: "A".into(),
            uids: None,
        },
    ] {
        entries.push(super::Replay::from(journal(&acct, write).await));
    }
    let ids = |run: &[super::FlagStore]| run.iter().map(|s| s.id).collect::<Vec<_>>();
    let run = super::flag_run(&entries);
    assert_eq!(ids(&run), [0, 1, 2].map(|i| entries[i].row.id));
    assert_eq!(ids(&super::flag_run(&entries[3..])), [entries[3].row.id]);
    assert!(
        super::flag_run(&entries[4..]).is_empty(),
        "no UIDs: NEW is read"
    );
    assert!(super::flag_run(&entries[5..]).is_empty());

    let (old_opts, old_task) = serve(
        "IMAP4rev1 UIDPLUS LITERAL+",
        vec![
            step("SELECT \"INBOX.A\"", SELECTED),
            step("UID STORE 10:11 +FLAGS.SILENT (\\Flagged)", "$tag OK\r\n"),
            step("UID STORE 11:12 -FLAGS.SILENT (\\Seen)", "$tag OK\r\n"),
        ],
    )
    .await;
    let (new_opts, new_task) = serve("IMAP4rev1", vec![]).await;
    let mut conn = Conn::uncounted(
        Client::connect(&old_opts, Side::Old).await.unwrap(),
        Client::connect(&new_opts, Side::New).await.unwrap(),
    );
    super::apply_flag_run(&acct, &mut conn, &run, &super::Pairs::default())
        .await
        .unwrap();
    drop(conn);
    assert_eq!(old_task.await.unwrap().unwrap().len(), 3);
    assert!(new_task.await.unwrap().unwrap().is_empty(), "NEW was read");
    let bases: BTreeMap<u32, (String, String)> = acct
        .store
        .links(pair.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.old_uid, (l.old_flags, l.new_flags)))
        .collect();
    let both = |f: &str| (f.to_string(), f.to_string());
    assert_eq!(bases[&10], both("\\Flagged \\Seen"));
    assert_eq!(bases[&11], both("\\Flagged"));
    assert_eq!(bases[&12], both(""));
}

/// The plan of a run: STOREs in order with equal neighbours merged, `FLAGS ()` kept, a flag OLD
/// cannot store named and left out, links without base flags left without.
#[test]
fn a_flag_run_plans_its_stores_in_order() {
    use crate::store::LinkFlags;
    use crate::sync::flags::PermanentFlags;
    let store = |id: i64, uids: &str, op: FlagOp, flags: &[&str]| super::FlagStore {
        id,
        folder: "A".into(),
        old: Some("INBOX.A".into()),
        uids: Ranges::parse(uids, 10).unwrap(),
        op,
        flags: flags.iter().map(|f| f.to_string()).collect(),
    };
    let no_base = Link {
        old_flags: NO_BASE.into(),
        new_flags: NO_BASE.into(),
        ..link(13, 4)
    };
    let links = [link(10, 1), link(11, 2), link(12, 3), no_base];
    let perm = PermanentFlags::parse("\\Seen \\Flagged");
    let plan = super::plan_flag_stores(
        &links,
        &[
            store(1, "1", FlagOp::Add, &["\\Flagged", "$Junk"]),
            store(2, "2:4", FlagOp::Add, &["\\Flagged"]),
            store(3, "3", FlagOp::Replace, &[]),
            store(4, "9", FlagOp::Remove, &["\\Seen"]),
        ],
        &perm,
    );
    let cmd = |uids: &[u32], item: &'static str, flags: &[&str]| {
        let flags = flags.iter().map(|f| f.to_string()).collect();
        (uids.to_vec(), item, flags)
    };
    assert_eq!(
        plan.commands,
        [
            cmd(&[10, 11, 12, 13], "+FLAGS.SILENT", &["\\Flagged"]),
            cmd(&[12], "FLAGS.SILENT", &[]),
        ]
    );
    let update = |uid: u32, old: &str, new: &str| LinkFlags {
        old_uid: uid,
        old_flags: old.into(),
        new_flags: new.into(),
    };
    assert_eq!(
        plan.updates,
        [
            update(10, "\\Flagged \\Seen", "$Junk \\Flagged \\Seen"),
            update(11, "\\Flagged \\Seen", "\\Flagged \\Seen"),
            update(12, "", ""),
        ]
    );
    assert_eq!(plan.dropped.len(), 1);
    assert_eq!(
        (plan.dropped[0].0, plan.dropped[0].1.as_str()),
        (1, "$Junk")
    );
}

#[tokio::test]
async fn an_append_is_read_where_a_later_rename_moved_it() {
    an_append_is_read_where_a_later_rename_moved_it_knowing(false).await;
}

/// The same, the RENAME known from the committer's recent moving writes: the journal is not
/// read (the entry is even marked mirrored there, so a read would not find it).
#[tokio::test]
async fn a_later_rename_this_process_committed_is_followed_without_reading_the_journal() {
    an_append_is_read_where_a_later_rename_moved_it_knowing(true).await;
}

async fn an_append_is_read_where_a_later_rename_moved_it_knowing(committed_here: bool) {
    let acct = account().await;
    let append = appended_to_a(&acct).await;
    let rename = Write::Rename {
        from: "A".into(),
        to: "B".into(),
    };
    if committed_here {
        let payload = Entry {
            write: rename,
            old: None,
            alone: None,
        };
        let committed = acct
            .committer
            .append(acct.id, "rename", payload.to_json().unwrap());
        let id = committed.await.unwrap().unwrap();
        acct.store.journal_done(&[id]).await.unwrap();
    } else {
        journal(&acct, rename).await;
    }
    let body = "Subject: hi\r\n\r\nbody\r\n";
    let (result, old, new) = mirror(
        &acct,
        &append,
        vec![step(
            &append_to_a(body),
            "$tag OK [APPENDUID 5 40] done\r\n",
        )],
        vec![
            // The EXAMINE and the FETCH in one round trip.
            pipelined_step(
                "EXAMINE \"B\"",
                "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
            ),
            step(
                "UID FETCH 7 (UID FLAGS INTERNALDATE BODY.PEEK[])",
                &fetched(7, body).replace("(\\Seen)", "(\\Seen \\Recent)"),
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
        alone: None,
    }
    .to_json()
    .unwrap();
    acct.store
        .journal_append(acct.id, "delete", &payload)
        .await
        .unwrap();
    let entry = acct.store.journal_pending(acct.id, 10).await.unwrap()[0].clone();
    poison_names(&acct);

    let written = acct
        .record(
            Write::Expunge {
                folder: "A".into(),
                uids: None,
            },
            None,
        )
        .await;
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

/// An account whose OLD message 10 in `INBOX.A` is linked by `source` to NEW's 1 in `A`, and
/// the journaled MOVE of NEW's 1 to INBOX (where it became 50).
async fn moved_to_inbox(source: Link) -> (Arc<Account>, crate::store::FolderPair, JournalEntry) {
    let (acct, src) = linked_source(source).await;
    let entry = journal(&acct, move_to_inbox()).await;
    (acct, src, entry)
}

/// An account whose OLD message 10 in `INBOX.A` is linked by `source` to NEW's 1 in `A`.
async fn linked_source(source: Link) -> (Arc<Account>, crate::store::FolderPair) {
    let acct = account().await;
    let src = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    acct.store.add_links(src.id, &[source]).await.unwrap();
    (acct, src)
}

/// NEW's 1 in A moved to INBOX, where it became 50.
fn move_to_inbox() -> Write {
    Write::Copy {
        from: "A".into(),
        to: "INBOX".into(),
        uids: vec![(1, 50)],
        moved: true,
    }
}

/// The INBOX pair of [`moved_to_inbox`]'s account (the MOVE's destination).
async fn inbox_pair(acct: &Account) -> crate::store::FolderPair {
    acct.store
        .folder_pair(acct.id, "INBOX", "INBOX")
        .await
        .unwrap()
}

/// A message's header as OLD and NEW serve it, and the identity key it is recognised by.
const MOVED_HEADER: &str = "Message-Id: <moved@example.org>\r\nSubject: m\r\n\r\n";

fn moved_key() -> String {
    crate::sync::adopt::message_key(MOVED_HEADER.as_bytes(), 100, &Options::default().identity)
}

fn header_fetch(uid: u32, header: &str) -> String {
    format!(
        "* 1 FETCH (UID {uid} RFC822.SIZE 100 FLAGS (\\Seen) BODY[HEADER] {{{}}}\r\n{header})\r\n",
        header.len()
    )
}

/// A MOVE mirrored on OLD first stores the message's identity key on its link (read from OLD
/// before it moves), and the link in the destination keeps it. The store is written twice: the
/// key and the destination's lowered adoption watermark before OLD moves the message (the
/// watermark is not read first), then the destination's link, the source's link gone and the
/// entry's mark in one transaction (as the drain writes them; each had one of its own).
#[tokio::test]
async fn a_move_keeps_the_identity_key_before_old_moves_the_message() {
    let (acct, src, entry) = moved_to_inbox(link(10, 1)).await;
    let dst = inbox_pair(&acct).await;
    let before = acct.store.operations();
    let (result, old, _) = mirror(
        &acct,
        &entry,
        // NEW's copy has the flags the link records for OLD's: OLD's copy is not read.
        old_moves_10(key_fetch("\\Seen"), vec![]),
        new_copy_flagged("\\Seen"),
    )
    .await;
    result.unwrap();
    assert_eq!(old.len(), 5, "{old:?}");
    let ops = acct.store.operations();
    assert_eq!(
        (ops.reads - before.reads, ops.writes - before.writes),
        (5, 2)
    );
    let links = acct.store.links(dst.id).await.unwrap();
    assert_eq!((links[0].old_uid, links[0].new_uid), (8, 50));
    assert_eq!(links[0].ident.as_deref(), Some(moved_key().as_str()));
    assert!(acct.store.links(src.id).await.unwrap().is_empty());
    let pending = acct.store.journal_pending(acct.id, 10).await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
}

/// A source link keeping no base (a pass forgot it): OLD's copy gets its source's flags, read
/// on OLD's selected source with the identity key, and NEW's copy has those: OLD's destination
/// is neither selected nor read.
#[tokio::test]
async fn a_copy_whose_source_has_news_flags_is_not_read_on_old() {
    let old = move_mirrored(
        Link {
            old_flags: NO_BASE.into(),
            new_flags: NO_BASE.into(),
            ..link(10, 1)
        },
        old_moves_10(key_fetch("\\Seen"), vec![]),
        "\\Seen",
    )
    .await;
    assert_eq!(old.len(), 5, "{old:?}");
}

/// A source link keeping no base, with its key already: only its flags are read, on OLD's
/// selected source; NEW's copy has another flag since, so OLD's copy takes it in the
/// destination.
#[tokio::test]
async fn a_copy_whose_source_differs_from_news_copy_takes_news_flags() {
    let old = move_mirrored(
        Link {
            old_flags: NO_BASE.into(),
            new_flags: NO_BASE.into(),
            ident: Some(moved_key()),
            ..link(10, 1)
        },
        old_moves_10(
            step(
                "UID FETCH 10 (UID FLAGS)",
                "* 1 FETCH (UID 10 FLAGS (\\Seen))\r\n$tag OK\r\n",
            ),
            vec![
                step("SELECT \"INBOX\"", SELECTED),
                step("UID STORE 8 +FLAGS.SILENT (\\Flagged)", "$tag OK\r\n"),
            ],
        ),
        "\\Seen \\Flagged",
    )
    .await;
    assert_eq!(old.len(), 7, "{old:?}");
}

/// A source link keeping its base, whose message someone else flagged on OLD since: NEW's
/// copy has the base's flags, so OLD's copy is left as OLD made it (the foreign keyword is the
/// next pass's to merge, not the mirror's to undo), though the key's FETCH showed it.
#[tokio::test]
async fn a_copy_keeps_a_change_someone_else_made_to_its_source_on_old() {
    let old = move_mirrored(
        link(10, 1),
        old_moves_10(key_fetch("\\Seen $Foreign"), vec![]),
        "\\Seen",
    )
    .await;
    assert_eq!(old.len(), 5, "{old:?}");
}

/// A MOVE journaled as a session does (in flight, `Account::record`) is mirrored without
/// reading NEW's copy only when it was alone on NEW (no other write of the account in flight
/// from its start to its journaling) and the mirror read none of its source folder's messages
/// on NEW since: NEW's copy then has the flags
/// OLD's source has, whether or not its link keeps a base, and OLD's copy gets them. Otherwise
/// NEW's copy is read, as a write another session did on NEW after the MOVE but journaled
/// before it, or a read of NEW that put on OLD's source what the user did after the MOVE,
/// would leave OLD's copy with flags NEW's never had.
#[tokio::test]
async fn a_move_is_read_on_new_unless_it_was_alone_and_nothing_read_new_since() {
    let no_base = || Link {
        old_flags: NO_BASE.into(),
        new_flags: NO_BASE.into(),
        ..link(10, 1)
    };
    // (case, the source's link, another write in flight, the folder read on NEW since, NEW read)
    let cases = [
        ("alone", link(10, 1), false, None, false),
        ("another write in flight", link(10, 1), true, None, true),
        ("a read of A since", link(10, 1), false, Some("A"), true),
        ("a read of B since", link(10, 1), false, Some("B"), false),
        ("alone, no base", no_base(), false, None, false),
        (
            "a read of A since, no base",
            no_base(),
            false,
            Some("A"),
            true,
        ),
    ];
    for (case, source, other, read, reads_new) in cases {
        let base = (source.old_flags.clone(), source.new_flags.clone());
        let (acct, _) = linked_source(source).await;
        if other {
            acct.alone.begin();
        }
        acct.alone.begin();
        acct.record(move_to_inbox(), None).await.unwrap();
        acct.alone.over();
        if let Some(folder) = read {
            drop(acct.alone.reading(folder));
        }
        let entry = acct.store.journal_pending(acct.id, 1).await.unwrap()[0].clone();
        let new = if reads_new {
            new_copy_flagged("\\Seen")
        } else {
            Vec::new()
        };
        let old = old_moves_10(key_fetch("\\Seen"), vec![]);
        let (result, _, new_seen) = mirror(&acct, &entry, old, new).await;
        result.unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(new_seen.len(), if reads_new { 2 } else { 0 }, "{case}");
        // The copy's link keeps its source's base (the flags both copies have), or none.
        let links = acct.store.links(inbox_pair(&acct).await.id).await.unwrap();
        let flags = (links[0].old_flags.clone(), links[0].new_flags.clone());
        assert_eq!(flags, base, "{case}");
    }
}

/// Mirrors [`moved_to_inbox`] of `source` against OLD's dialogue `old`, NEW's copy having
/// `new_flags`; returns what OLD got.
async fn move_mirrored(source: Link, old: Vec<Step>, new_flags: &str) -> Vec<String> {
    let (acct, _, entry) = moved_to_inbox(source).await;
    let (result, old, _) = mirror(&acct, &entry, old, new_copy_flagged(new_flags)).await;
    result.unwrap();
    old
}

/// OLD's side of [`moved_to_inbox`]: the source selected and `read` there, then (this OLD has
/// no MOVE) the COPY and the source expunged, then `after`.
fn old_moves_10(read: Step, after: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![
        step("SELECT \"INBOX.A\"", SELECTED),
        read,
        step("UID COPY 10 \"INBOX\"", "$tag OK [COPYUID 5 10 8] done\r\n"),
        step("UID STORE 10 +FLAGS.SILENT (\\Deleted)", "$tag OK\r\n"),
        step("UID EXPUNGE 10", "$tag OK\r\n"),
    ];
    steps.extend(after);
    steps
}

/// The identity-key FETCH of OLD's message 10 ([`MOVED_HEADER`]), which has `flags`.
fn key_fetch(flags: &str) -> Step {
    let answer = header_fetch(10, MOVED_HEADER).replace("(\\Seen)", &format!("({flags})"));
    step(
        "UID FETCH 10 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
        &format!("{answer}$tag OK\r\n"),
    )
}

/// NEW's side of [`moved_to_inbox`]: its copy 50 in INBOX has `flags`.
fn new_copy_flagged(flags: &str) -> Vec<Step> {
    vec![
        step(
            "EXAMINE \"INBOX\"",
            "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
        ),
        step(
            "UID FETCH 50 (UID FLAGS INTERNALDATE)",
            &format!(
                "* 1 FETCH (UID 50 FLAGS ({flags}) INTERNALDATE \"01-Jan-2024 10:00:00 +0000\")\r\n$tag OK\r\n"
            ),
        ),
    ]
}

/// The replay of a MOVE whose earlier attempt OLD had done (the proxy was killed before the link
/// was stored), when the user has deleted the message on NEW since: NEW's copy cannot be read, so
/// OLD's copy is found by the key the source link kept, linked to NEW's (gone) UID, and not moved
/// again; the later EXPUNGE then removes it from OLD, and no pass copies it back.
#[tokio::test]
async fn a_replayed_move_finds_olds_copy_by_key_when_news_is_gone() {
    let keyed = Link {
        ident: Some(moved_key()),
        ..link(10, 1)
    };
    let (acct, src, entry) = moved_to_inbox(keyed).await;
    journal(
        &acct,
        Write::Expunge {
            folder: "INBOX".into(),
            uids: None,
        },
    )
    .await;
    let other = "Message-Id: <other@example.org>\r\n\r\n";
    let (result, old, new) = mirror_with(
        &acct,
        &entry,
        true,
        vec![
            step(
                "EXAMINE \"INBOX\"",
                "* 2 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
            ),
            step("UID SEARCH ALL", "* SEARCH 7 8\r\n$tag OK\r\n"),
            step(
                "UID FETCH 7:8 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
                &format!(
                    "{}{}$tag OK\r\n",
                    header_fetch(7, other),
                    header_fetch(8, MOVED_HEADER)
                ),
            ),
            // The source goes if OLD still has it (nothing, if the earlier MOVE took it).
            step("SELECT \"INBOX.A\"", SELECTED),
            step("UID STORE 10 +FLAGS.SILENT (\\Deleted)", "$tag OK\r\n"),
            step("UID EXPUNGE 10", "$tag OK\r\n"),
        ],
        vec![
            step(
                "EXAMINE \"INBOX\"",
                "* 0 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
            ),
            step(
                "UID FETCH 50 (UID FLAGS INTERNALDATE BODY.PEEK[])",
                "$tag OK\r\n",
            ),
        ],
    )
    .await;
    result.unwrap();
    assert!(
        !old.iter().any(|c| c.contains("MOVE")),
        "moved twice: {old:?}"
    );
    assert_eq!(new.len(), 2, "{new:?}");
    let dst = inbox_pair(&acct).await;
    let links = acct.store.links(dst.id).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].old_uid, links[0].new_uid), (8, 50));
    assert!(acct.store.links(src.id).await.unwrap().is_empty());
}

/// A message of [`MOVED_HEADER`], 100 bytes as [`header_fetch`] says OLD's copy is (the
/// identity key counts the size).
fn keyed_body() -> String {
    format!("{MOVED_HEADER}{}\r\n", "x".repeat(51))
}

/// NEW's message 7 in A, read by the mirror: `body`, or gone (`None`).
fn new_reads_7(body: Option<&str>) -> Vec<Step> {
    let (exists, fetch) = match body {
        Some(body) => (1, fetched(7, body)),
        None => (0, "$tag OK\r\n".to_string()),
    };
    vec![
        step(
            "EXAMINE \"A\"",
            &format!("* {exists} EXISTS\r\n$tag OK [READ-ONLY] done\r\n"),
        ),
        step("UID FETCH 7 (UID FLAGS INTERNALDATE BODY.PEEK[])", &fetch),
    ]
}

/// OLD's `INBOX.A` searched for an unlinked message with [`keyed_body`]'s key: 40 has it.
fn old_finds_40_by_key() -> Vec<Step> {
    let other = "Message-Id: <other@example.org>\r\n\r\n";
    vec![
        step(
            "EXAMINE \"INBOX.A\"",
            "* 2 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
        ),
        step("UID SEARCH ALL", "* SEARCH 39 40\r\n$tag OK\r\n"),
        step(
            "UID FETCH 39:40 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
            &format!(
                "{}{}$tag OK\r\n",
                header_fetch(39, other),
                header_fetch(40, MOVED_HEADER)
            ),
        ),
    ]
}

/// The links of folder A (`INBOX.A` on OLD), as (OLD UID, NEW UID).
async fn links_of_a(acct: &Account) -> Vec<(u32, u32)> {
    let pair = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    let links = acct.store.links(pair.id).await.unwrap();
    links.iter().map(|l| (l.old_uid, l.new_uid)).collect()
}

/// The replay of an APPEND whose earlier attempt OLD had stored (the proxy was killed before the
/// link was), when the user has deleted the message on NEW since: NEW's message cannot be read,
/// so OLD's copy is found by the identity key kept before OLD got the APPEND and linked to NEW's
/// (gone) UID; the later EXPUNGE then removes it from OLD, and no pass copies it back to NEW.
#[tokio::test]
async fn a_replayed_append_finds_olds_copy_by_key_when_news_is_gone() {
    let acct = account().await;
    let append = appended_to_a(&acct).await;
    let body = keyed_body();
    let (old_append, arrived, _go) =
        gated_step(&append_to_a(&body), "$tag OK [APPENDUID 5 40] done\r\n");
    let first = tokio::spawn({
        let (acct, append) = (Arc::clone(&acct), append.clone());
        let new = new_reads_7(Some(&body));
        async move { mirror(&acct, &append, vec![old_append], new).await }
    });
    // OLD has the message; the proxy dies before it hears so.
    arrived.await.unwrap();
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    expunge_in_a(&acct).await;
    let (result, old, _) = mirror_with(
        &acct,
        &append,
        true,
        old_finds_40_by_key(),
        new_reads_7(None),
    )
    .await;
    result.unwrap();
    assert!(
        !old.iter().any(|c| c.starts_with("APPEND")),
        "appended again: {old:?}"
    );
    assert_eq!(links_of_a(&acct).await, [(40, 7)]);
}

/// OLD that gives no APPENDUID (no UIDPLUS): the mirror finds its copy by the identity key and
/// links it, so the user's deletion of NEW's message reaches OLD's (unlinked, the next pass
/// would have copied it back to NEW).
#[tokio::test]
async fn an_append_old_gives_no_uid_for_is_linked_by_its_key() {
    let acct = account().await;
    let append = appended_to_a(&acct).await;
    let body = keyed_body();
    let mut old = vec![step(&append_to_a(&body), "$tag OK done\r\n")];
    old.extend(old_finds_40_by_key());
    let (result, _, _) = mirror(&acct, &append, old, new_reads_7(Some(&body))).await;
    result.unwrap();
    assert_eq!(links_of_a(&acct).await, [(40, 7)]);
}

/// The replay of a MOVE whose earlier attempt OLD had done, NEW's copy still there: OLD's copy
/// in the destination (same size and identity key as NEW's, no link) is linked, not moved again,
/// and the source is expunged in case OLD's MOVE stopped between its copy and its expunge.
#[tokio::test]
async fn a_replayed_move_links_olds_copy_instead_of_moving_again() {
    let (acct, src, entry) = moved_to_inbox(link(10, 1)).await;
    let body = format!("{MOVED_HEADER}body\r\n");
    let n = body.len();
    let (result, old, _) = mirror_with(
        &acct,
        &entry,
        true,
        vec![
            step("EXAMINE \"INBOX\"", "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n"),
            step(
                &format!("UID SEARCH LARGER {} SMALLER {}", n - 1, n + 1),
                "* SEARCH 8\r\n$tag OK\r\n",
            ),
            step(
                "UID FETCH 8 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
                &format!("{}$tag OK\r\n", header_fetch(8, MOVED_HEADER)),
            ),
            // OLD's MOVE may have been cut between its copy and its expunge: the source goes.
            step("SELECT \"INBOX.A\"", SELECTED),
            step("UID STORE 10 +FLAGS.SILENT (\\Deleted)", "$tag OK\r\n"),
            step("UID EXPUNGE 10", "$tag OK\r\n"),
        ],
        vec![
            step("EXAMINE \"INBOX\"", "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n"),
            step(
                "UID FETCH 50 (UID FLAGS INTERNALDATE BODY.PEEK[])",
                &format!(
                    "* 1 FETCH (UID 50 FLAGS (\\Seen) INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" BODY[] {{{n}}}\r\n{body})\r\n$tag OK\r\n"
                ),
            ),
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(old.len(), 6, "{old:?}");
    assert!(
        !old.iter().any(|c| c.contains("MOVE")),
        "moved again: {old:?}"
    );
    let dst = inbox_pair(&acct).await;
    let links = acct.store.links(dst.id).await.unwrap();
    assert_eq!((links[0].old_uid, links[0].new_uid), (8, 50));
    assert!(acct.store.links(src.id).await.unwrap().is_empty());
}

/// The mirror reads an APPEND's message where the journal says it is; a MOVE journaled while it
/// reads (the user moved the message meanwhile) makes it read again where the MOVE took it,
/// instead of finding nothing and leaving OLD without the message.
#[tokio::test]
async fn an_append_moved_while_the_mirror_reads_it_is_read_again() {
    let acct = account().await;
    let append = appended_to_a(&acct).await;
    let body = "Subject: hi\r\n\r\nbody\r\n";
    // NEW's first FETCH finds nothing: the user's MOVE took the message to B meanwhile.
    let (first_fetch, arrived, go) = gated_step(
        "UID FETCH 7 (UID FLAGS INTERNALDATE BODY.PEEK[])",
        "$tag OK\r\n",
    );
    let mirror = tokio::spawn({
        let acct = Arc::clone(&acct);
        let append = append.clone();
        let append_step = step(&append_to_a(body), "$tag OK [APPENDUID 5 40] done\r\n");
        let new = vec![
            step(
                "EXAMINE \"A\"",
                "* 0 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
            ),
            first_fetch,
            step(
                "EXAMINE \"B\"",
                "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
            ),
            step(
                "UID FETCH 9 (UID FLAGS INTERNALDATE BODY.PEEK[])",
                &fetched(9, body),
            ),
        ];
        async move { mirror(&acct, &append, vec![append_step], new).await }
    });
    arrived.await.unwrap();
    journal(
        &acct,
        Write::Copy {
            from: "A".into(),
            to: "B".into(),
            uids: vec![(7, 9)],
            moved: true,
        },
    )
    .await;
    go.send(()).unwrap();
    let (result, old, new) = mirror.await.unwrap();
    result.unwrap();
    assert_eq!(new.len(), 4, "{new:?}");
    assert!(old[0].ends_with(body), "OLD never got the message: {old:?}");
    let pair = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    let links = acct.store.links(pair.id).await.unwrap();
    assert_eq!((links[0].old_uid, links[0].new_uid), (40, 7));
}

/// The replay of a MOVE whose copy in the destination is linked already while OLD still holds
/// the source (OLD's MOVE, a copy then an expunge, was cut between the two; or a reconcile
/// linked the copy): the source goes on OLD. Before, only its link was dropped: OLD kept a
/// message nothing linked, and the next pass of the source folder copied it to NEW, where the
/// user then had it twice.
#[tokio::test]
async fn a_replayed_move_whose_destination_is_linked_removes_olds_source() {
    let (acct, src, entry) = moved_to_inbox(link(10, 1)).await;
    let dst = inbox_pair(&acct).await;
    acct.store.add_links(dst.id, &[link(8, 50)]).await.unwrap();
    let (result, old, new) = mirror_with(
        &acct,
        &entry,
        true,
        vec![
            step("SELECT \"INBOX.A\"", SELECTED),
            step("UID STORE 10 +FLAGS.SILENT (\\Deleted)", "$tag OK\r\n"),
            step("UID EXPUNGE 10", "$tag OK\r\n"),
        ],
        vec![],
    )
    .await;
    result.unwrap();
    assert_eq!(old.len(), 3, "{old:?}");
    assert!(new.is_empty(), "{new:?}");
    let links = acct.store.links(dst.id).await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].old_uid, links[0].new_uid), (8, 50));
    assert!(acct.store.links(src.id).await.unwrap().is_empty());
}

/// An APPEND reaches OLD only once the destination's adoption watermark is at or below NEW's
/// UID: were the mirror cut off between OLD's copy and its link, the next pass adopts that copy
/// instead of copying it back to NEW (the user would have the message twice).
#[tokio::test]
async fn the_watermark_is_lowered_before_old_gets_an_append() {
    let acct = account().await;
    let pair = acct
        .store
        .folder_pair(acct.id, "INBOX.A", "A")
        .await
        .unwrap();
    // A pass left the watermark above the user's message.
    acct.store
        .save_pair_state(pair.id, None, None, 100, pair.phase)
        .await
        .unwrap();
    let append = appended_to_a(&acct).await;
    let body = "Subject: hi\r\n\r\nbody\r\n";
    let (old_append, arrived, go) =
        gated_step(&append_to_a(body), "$tag OK [APPENDUID 5 40] done\r\n");
    let mirror = tokio::spawn({
        let acct = Arc::clone(&acct);
        let new = vec![
            step(
                "EXAMINE \"A\"",
                "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
            ),
            step(
                "UID FETCH 7 (UID FLAGS INTERNALDATE BODY.PEEK[])",
                &fetched(7, body),
            ),
        ];
        async move { mirror(&acct, &append, vec![old_append], new).await }
    });
    arrived.await.unwrap();
    let watermark = |acct: Arc<Account>| async move {
        let pair = acct.store.folder_pair(acct.id, "INBOX.A", "A").await;
        pair.unwrap().adopt_from
    };
    assert_eq!(watermark(Arc::clone(&acct)).await, 7);
    go.send(()).unwrap();
    let (result, _, _) = mirror.await.unwrap();
    result.unwrap();
    let links = acct.store.links(pair.id).await.unwrap();
    assert_eq!((links[0].old_uid, links[0].new_uid), (40, 7));
}

/// Conditional STOREs: each message's condition is what is known of it (the modseq of the
/// mirror's last STORE on it, else the pair's recorded HIGHESTMODSEQ), one STORE per
/// condition; a message stored again waits for the next round, whose condition is the modseq
/// its first STORE got.
#[test]
fn conditional_stores_go_in_rounds_by_what_is_known() {
    use crate::store::MailboxState;
    use crate::sync::OwnChanges;
    let base = MailboxState {
        uidvalidity: 1,
        uidnext: 10,
        highestmodseq: 50,
        messages: 9,
    };
    let mut own = OwnChanges::since(1, base).unwrap();
    own.stored.insert(2, 57);
    let flag = |f: &str| vec![f.to_string()];
    let stores = vec![
        (vec![1, 2, 3], "+FLAGS.SILENT", flag("\\Seen")),
        (vec![4], "-FLAGS.SILENT", flag("\\Seen")),
        (vec![3], "-FLAGS.SILENT", flag("\\Flagged")),
        (vec![5], "+FLAGS.SILENT", flag("\\Flagged")),
    ];
    let (round, taken) = super::conditional_round(&stores, &own);
    assert_eq!(taken, 2, "UID 3 is stored again: the third STORE waits");
    assert_eq!(
        round,
        vec![
            (vec![1, 3], "+FLAGS.SILENT", flag("\\Seen"), 50),
            (vec![2], "+FLAGS.SILENT", flag("\\Seen"), 57),
            (vec![4], "-FLAGS.SILENT", flag("\\Seen"), 50),
        ]
    );
    own.stored.insert(3, 61);
    let (round, taken) = super::conditional_round(&stores[2..], &own);
    assert_eq!(taken, 2);
    assert_eq!(
        round,
        vec![
            (vec![3], "-FLAGS.SILENT", flag("\\Flagged"), 61),
            (vec![5], "+FLAGS.SILENT", flag("\\Flagged"), 50),
        ]
    );
}

/// The mirror's STOREs while the folder's changes are known: conditional, and the modseq each
/// message gets is noted. One someone else changed meanwhile is stored anyway (the whole round
/// again, plainly), and the folder's changes are no longer known: its next check runs a pass.
#[tokio::test]
async fn the_mirrors_stores_note_their_modseqs_until_someone_else_got_ahead() {
    use crate::migrate::backfill::Folder;
    use crate::store::MailboxState;
    use crate::sync::OwnChanges;
    let base = MailboxState {
        uidvalidity: 1,
        uidnext: 10,
        highestmodseq: 50,
        messages: 9,
    };
    let seen = vec!["\\Seen".to_string()];
    let stores = [(vec![1, 2], "+FLAGS.SILENT", seen)];
    let (opts, server) = serve(
        "IMAP4rev1 CONDSTORE",
        vec![
            step(
                "UID STORE 1:2 (UNCHANGEDSINCE 50) +FLAGS.SILENT (\\Seen)",
                "* 1 FETCH (UID 1 MODSEQ (51))\r\n* 2 FETCH (UID 2 MODSEQ (51))\r\n$tag OK\r\n",
            ),
            step(
                "UID STORE 1:2 (UNCHANGEDSINCE 51) +FLAGS.SILENT (\\Seen)",
                "* 1 FETCH (UID 1 MODSEQ (53))\r\n$tag OK [MODIFIED 2] changed\r\n",
            ),
            step("UID STORE 1:2 +FLAGS.SILENT (\\Seen)", "$tag OK\r\n"),
        ],
    )
    .await;
    let mut old = Client::connect(&opts, Side::Old).await.unwrap();
    let f = Folder::default();
    f.set_own_old(OwnChanges::since(7, base));
    super::store_on_old(&f, 7, &mut old, &stores).await.unwrap();
    let own = f.own_old(7).expect("known");
    assert_eq!(own.stored, [(1, 51), (2, 51)].into());
    super::store_on_old(&f, 7, &mut old, &stores).await.unwrap();
    assert_eq!(f.own_old(7), None);
    server.await.unwrap().unwrap();
}
