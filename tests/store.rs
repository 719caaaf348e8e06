//! The store test suite, run against both backends: every behaviour of the [`Store`] trait on an
//! SQLite file and on a database of a private PostgreSQL (tests/common/postgres.rs). A test is an
//! `async fn(Backend)`; [`both!`] makes a `sqlite::` and a `postgres::` test of each.

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::Postgres;
use imapferry::secret::Secret;
use imapferry::store::{
    self, AccountKey, AccountState, AccountSummary, Adoption, AppendKey, Link, LinkChange,
    LinkFlags, Location, MailboxState, NO_BASE, NewEntry, PairId, Phase, Store, StoreError,
};
use imapferry::uidmap::{Shown, UidMap, runs_of};

/// One store under test: a file in a temporary directory, or the database of a private
/// PostgreSQL. Kept alive for the whole test.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Backend {
        Backend::Postgres(Postgres::start())
    }

    fn location(&self) -> Location {
        match self {
            Backend::Sqlite(dir) => Location::File(dir.path().join("imapferry.db")),
            Backend::Postgres(pg) => {
                Location::parse(&pg.url(), Some(Secret::new(common::postgres::PASSWORD))).unwrap()
            }
        }
    }

    /// Opens (and creates) the store; again after a close, the same state.
    async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.location()).await.unwrap()
    }

    /// Runs `sql` (statements separated by `;`) on the store's database, behind its back.
    async fn execute(&self, sql: &str) {
        match self {
            Backend::Sqlite(dir) => {
                let db = rusqlite::Connection::open(dir.path().join("imapferry.db")).unwrap();
                db.execute_batch(sql).unwrap();
            }
            Backend::Postgres(pg) => {
                pg.psql(sql);
            }
        }
    }

    /// The rows of `table` in the store's database: how compact the links are.
    async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self {
            Backend::Sqlite(dir) => {
                let db = rusqlite::Connection::open(dir.path().join("imapferry.db")).unwrap();
                db.query_row(&sql, [], |row| row.get(0)).unwrap()
            }
            Backend::Postgres(pg) => pg.psql(&sql).parse().unwrap(),
        }
    }
}

/// For each test function, a `#[tokio::test]` on each backend.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::postgres()).await })*
        }
    };
}

both!(
    account_get_or_create_is_idempotent,
    folder_pair_get_or_create_and_rename,
    pair_state_round_trip,
    links_add_replace_update_remove,
    tombstone_moves_links_to_tombstones,
    reset_pair_forgets_everything,
    retire_is_conditional_unless_forced,
    a_retired_account_shrinks_to_a_summary,
    the_write_ahead_mark_survives_a_reopen_until_cleared,
    retired_and_diverged_are_left_only_by_their_own_commands,
    refused_entries_are_retried_then_parked,
    append_keys_stay_with_their_entry,
    journal_order_done_and_counts,
    mirrored_entries_are_marked_with_their_links,
    pending_entries_holding_a_text,
    entries_of_several_accounts_commit_together,
    find_and_touch_account,
    rename_pair_keeps_links_and_tombstones,
    delete_pair_removes_links_and_tombstones,
    the_pair_epoch_counts_deletions_and_renames,
    summaries_count_progress,
    progress_is_the_pairs_pending_entries_and_state,
    new_state_survives_reopen,
    ten_thousand_links,
    migrations_run_once_when_stores_open_together,
    a_lease_has_one_holder_until_it_expires,
    a_lease_is_held_until_it_expires,
    appends_in_order_extend_one_run,
    one_link_joins_and_splits_the_runs_beside_it,
    flag_updates_removals_and_tombstones_split_runs,
    a_linked_uid_added_again_replaces_its_link,
    out_of_order_adds_join_into_runs,
    a_link_with_an_identity_key_is_kept_per_message,
    summaries_count_the_links_of_runs,
    links_behave_as_a_map_of_old_uids,
    per_message_links_convert_to_runs_on_open,
    forgotten_bases_join_runs_and_later_writes_keep_theirs,
    links_by_new_uid_read_only_the_named_part,
    the_first_uid_map_frozen_stays,
    uid_maps_are_the_accounts_by_new_name,
    a_reset_or_removed_folder_loses_its_uid_map,
    a_renamed_folder_and_a_retired_account_keep_their_uid_maps,
    a_version_10_store_gains_uid_maps_on_open,
    a_maps_modseq_offset_only_goes_up,
);

fn key(user: &str) -> AccountKey {
    AccountKey {
        old_host: "old.example".into(),
        old_user: user.into(),
        new_host: "new.example".into(),
        new_user: user.into(),
    }
}

fn link(old_uid: u32, new_uid: u32, flags: &str) -> Link {
    Link {
        old_uid,
        new_uid,
        old_flags: flags.into(),
        new_flags: flags.into(),
        ident: None,
    }
}

async fn pair(store: &dyn Store) -> PairId {
    let account = store.account(&key("alice")).await.unwrap();
    store
        .folder_pair(account, "INBOX", "INBOX")
        .await
        .unwrap()
        .id
}

/// Unix seconds.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn account_get_or_create_is_idempotent(b: Backend) {
    let store = b.open().await;
    let a = store.account(&key("alice")).await.unwrap();
    let b = store.account(&key("bob")).await.unwrap();
    assert_ne!(a, b);
    assert_eq!(store.account(&key("alice")).await.unwrap(), a);
    assert_eq!(store.account_state(a).await.unwrap(), AccountState::Pending);

    store
        .set_account_state(a, AccountState::Failed, Some("bad password"))
        .await
        .unwrap();
    assert_eq!(store.account_state(a).await.unwrap(), AccountState::Failed);
    assert_eq!(store.account(&key("alice")).await.unwrap(), a);
    let summaries = store.account_summaries().await.unwrap();
    let reason = summaries.iter().find(|s| s.id == a).unwrap().reason.clone();
    assert_eq!(reason.as_deref(), Some("bad password"));
    store
        .set_account_state(a, AccountState::Synced, None)
        .await
        .unwrap();
    assert_eq!(store.account_state(a).await.unwrap(), AccountState::Synced);
    assert_eq!(store.account_state(b).await.unwrap(), AccountState::Pending);

    assert!(matches!(
        store.account_state(999).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store
            .set_account_state(999, AccountState::Synced, None)
            .await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn folder_pair_get_or_create_and_rename(b: Backend) {
    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let other = store.account(&key("bob")).await.unwrap();

    let sent = store
        .folder_pair(account, "Sent", "INBOX.Sent")
        .await
        .unwrap();
    assert_eq!(sent.account, account);
    assert_eq!(sent.old_name, "Sent");
    assert_eq!(sent.new_name, "INBOX.Sent");
    assert_eq!(sent.old, None);
    assert_eq!(sent.new, None);
    assert_eq!(sent.adopt_from, 1);
    assert_eq!(sent.phase, Phase::New);
    assert_eq!(
        store
            .folder_pair(account, "Sent", "INBOX.Sent")
            .await
            .unwrap(),
        sent
    );

    let renamed = store
        .folder_pair(account, "Sent", "Sent Items")
        .await
        .unwrap();
    assert_eq!(renamed.id, sent.id);
    assert_eq!(renamed.new_name, "Sent Items");

    let inbox = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
    let bobs = store.folder_pair(other, "INBOX", "INBOX").await.unwrap();
    assert_ne!(inbox.id, sent.id);
    assert_ne!(inbox.id, bobs.id);

    let all = store.folder_pairs(account).await.unwrap();
    assert_eq!(all, vec![inbox, renamed]);
    assert_eq!(store.folder_pairs(other).await.unwrap(), vec![bobs]);

    // The account must exist.
    assert!(store.folder_pair(12345, "INBOX", "INBOX").await.is_err());
}

async fn pair_state_round_trip(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let old = MailboxState {
        uidvalidity: u32::MAX,
        uidnext: 4_000_000_000,
        highestmodseq: i64::MAX as u64,
        messages: 12,
    };
    let new = MailboxState {
        uidvalidity: 7,
        uidnext: 13,
        highestmodseq: 0,
        messages: 11,
    };

    store
        .save_pair_state(pair, Some(old), Some(new), 13, Phase::Synced)
        .await
        .unwrap();
    let got = &store
        .folder_pairs(store.account(&key("alice")).await.unwrap())
        .await
        .unwrap()[0];
    assert_eq!(
        (got.old, got.new, got.adopt_from, got.phase),
        (Some(old), Some(new), 13, Phase::Synced)
    );

    let state = || async {
        let got = store
            .folder_pair(got.account, "INBOX", "INBOX")
            .await
            .unwrap();
        (got.old, got.new, got.adopt_from, got.phase)
    };
    store
        .save_pair_state(pair, None, Some(new), 5, Phase::Partial)
        .await
        .unwrap();
    assert_eq!(state().await, (None, Some(new), 5, Phase::Partial));

    store
        .save_pair_state(pair, Some(old), None, 1, Phase::New)
        .await
        .unwrap();
    assert_eq!(state().await, (Some(old), None, 1, Phase::New));

    // The watermark only goes down, and nothing else changes.
    store
        .save_pair_state(pair, Some(old), None, 5, Phase::New)
        .await
        .unwrap();
    for (from, want) in [(3, 3), (4, 3), (1, 1)] {
        store.lower_adoption(pair, from).await.unwrap();
        assert_eq!(
            state().await,
            (Some(old), None, want, Phase::New),
            "lowered to {from}"
        );
    }
    // So it does with the mirror's keys, in their commit, and with its links.
    let lower = |from| Adoption { pair, from };
    let account = store.account(&key("alice")).await.unwrap();
    let other = store.folder_pair(account, "A", "A").await.unwrap().id;
    let linked = |old_uid| Link {
        old_uid,
        new_uid: old_uid,
        old_flags: String::new(),
        new_flags: String::new(),
        ident: Some(format!("k{old_uid}")),
    };
    store
        .save_pair_state(pair, Some(old), None, 20, Phase::New)
        .await
        .unwrap();
    for (lowered, want) in [(&[lower(30)][..], 20), (&[lower(12), lower(9)], 9)] {
        store.journal_commit(&[], &[], &[], lowered).await.unwrap();
        assert_eq!(state().await, (Some(old), None, want, Phase::New));
    }
    for (from, want, links) in [(8, 8, 1), (10, 8, 2)] {
        let with = [linked(from)];
        (store.add_links_lowering(other, &with, lower(from)).await).unwrap();
        assert_eq!(state().await, (Some(old), None, want, Phase::New));
        assert_eq!(store.links(other).await.unwrap().len(), links);
    }
    (store.add_links_lowering(other, &[], lower(6)).await).unwrap();
    assert_eq!(state().await, (Some(old), None, 6, Phase::New));

    let too_big = MailboxState {
        highestmodseq: u64::MAX,
        ..old
    };
    assert!(matches!(
        store
            .save_pair_state(pair, Some(too_big), None, 1, Phase::New)
            .await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.save_pair_state(999, None, None, 1, Phase::New).await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn links_add_replace_update_remove(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    assert!(store.links(pair).await.unwrap().is_empty());
    store.add_links(pair, &[]).await.unwrap();

    store
        .add_links(
            pair,
            &[
                link(3, 30, "\\Seen"),
                link(1, 10, ""),
                link(u32::MAX, u32::MAX, ""),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.links(pair).await.unwrap(),
        vec![
            link(1, 10, ""),
            link(3, 30, "\\Seen"),
            link(u32::MAX, u32::MAX, "")
        ]
    );

    // Replace by old_uid; a duplicate in one batch keeps the last.
    store
        .add_links(
            pair,
            &[
                link(3, 31, "\\Flagged"),
                link(2, 20, ""),
                link(2, 21, "$Junk"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.links(pair).await.unwrap(),
        vec![
            link(1, 10, ""),
            link(2, 21, "$Junk"),
            link(3, 31, "\\Flagged"),
            link(u32::MAX, u32::MAX, "")
        ]
    );

    store
        .update_link_flags(
            pair,
            &[
                LinkFlags {
                    old_uid: 1,
                    old_flags: "\\Seen".into(),
                    new_flags: "\\Answered \\Seen".into(),
                },
                LinkFlags {
                    old_uid: 99,
                    old_flags: "x".into(),
                    new_flags: "y".into(),
                },
            ],
        )
        .await
        .unwrap();
    let links = store.links(pair).await.unwrap();
    assert_eq!(
        links[0],
        Link {
            old_uid: 1,
            new_uid: 10,
            old_flags: "\\Seen".into(),
            new_flags: "\\Answered \\Seen".into(),
            ident: None,
        }
    );
    assert_eq!(links[1], link(2, 21, "$Junk"));
    assert_eq!(links.len(), 4);

    store.remove_links(pair, &[2, u32::MAX, 77]).await.unwrap();
    let uids: Vec<u32> = store
        .links(pair)
        .await
        .unwrap()
        .iter()
        .map(|l| l.old_uid)
        .collect();
    assert_eq!(uids, vec![1, 3]);

    // Links are per pair.
    let account = store.account(&key("alice")).await.unwrap();
    let other = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    assert!(store.links(other).await.unwrap().is_empty());
    store.remove_links(other, &[1, 3]).await.unwrap();
    assert_eq!(store.links(pair).await.unwrap().len(), 2);

    // The pair must exist.
    assert!(store.add_links(999, &[link(1, 1, "")]).await.is_err());
}

async fn tombstone_moves_links_to_tombstones(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    store
        .add_links(pair, &[link(1, 10, ""), link(2, 20, ""), link(3, 30, "")])
        .await
        .unwrap();

    store.tombstone(pair, &[2, 5, 2]).await.unwrap();
    let uids: Vec<u32> = store
        .links(pair)
        .await
        .unwrap()
        .iter()
        .map(|l| l.old_uid)
        .collect();
    assert_eq!(uids, vec![1, 3]);
    assert_eq!(store.tombstones(pair).await.unwrap(), vec![2, 5]);

    // Idempotent.
    store.tombstone(pair, &[2]).await.unwrap();
    assert_eq!(store.tombstones(pair).await.unwrap(), vec![2, 5]);

    store.remove_tombstones(pair, &[5, 6]).await.unwrap();
    assert_eq!(store.tombstones(pair).await.unwrap(), vec![2]);

    // A new link supersedes a tombstone.
    store.add_links(pair, &[link(2, 22, "")]).await.unwrap();
    assert!(store.tombstones(pair).await.unwrap().is_empty());
    assert_eq!(store.links(pair).await.unwrap()[1], link(2, 22, ""));
}

async fn reset_pair_forgets_everything(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let account = store.account(&key("alice")).await.unwrap();
    let other = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    let state = MailboxState {
        uidvalidity: 1,
        uidnext: 5,
        highestmodseq: 9,
        messages: 4,
    };
    for p in [pair, other] {
        store
            .add_links(p, &[link(1, 1, ""), link(2, 2, "")])
            .await
            .unwrap();
        store.tombstone(p, &[2]).await.unwrap();
        store
            .save_pair_state(p, Some(state), Some(state), 3, Phase::Synced)
            .await
            .unwrap();
    }

    store.reset_pair(pair).await.unwrap();
    let got = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
    assert_eq!(
        (got.old, got.new, got.adopt_from, got.phase),
        (None, None, 1, Phase::New)
    );
    assert!(store.links(pair).await.unwrap().is_empty());
    assert!(store.tombstones(pair).await.unwrap().is_empty());

    // The other pair is untouched.
    let kept = store.folder_pair(account, "Sent", "Sent").await.unwrap();
    assert_eq!(
        (kept.old, kept.new, kept.adopt_from, kept.phase),
        (Some(state), Some(state), 3, Phase::Synced)
    );
    assert_eq!(store.links(other).await.unwrap(), vec![link(1, 1, "")]);
    assert_eq!(store.tombstones(other).await.unwrap(), vec![2]);

    assert!(matches!(
        store.reset_pair(999).await,
        Err(StoreError::Corrupt(_))
    ));
}

/// An account's progress (what its lifecycle state follows from) is what the separate reads
/// say: its pairs, its entries waiting for OLD, its state; an unknown account is an error.
async fn progress_is_the_pairs_pending_entries_and_state(b: Backend) {
    let store = b.open().await;
    let a = store.account(&key("alice")).await.unwrap();
    let p = store.account_progress(a).await.unwrap();
    assert_eq!(
        (p.pairs.len(), p.pending, p.state),
        (0, 0, AccountState::Pending)
    );
    let pair = store.folder_pair(a, "INBOX.A", "A").await.unwrap();
    store.folder_pair(a, "INBOX", "INBOX").await.unwrap();
    store
        .set_account_state(a, AccountState::Partial, None)
        .await
        .unwrap();
    let done = store.journal_append(a, "flags", "{}").await.unwrap();
    store.journal_append(a, "flags", "{}").await.unwrap();
    store.journal_done(&[done]).await.unwrap();
    let p = store.account_progress(a).await.unwrap();
    assert_eq!(p.pairs, store.folder_pairs(a).await.unwrap());
    assert!(p.pairs.contains(&pair));
    assert_eq!((p.pending, p.state), (1, AccountState::Partial));
    assert!(matches!(
        store.account_progress(a + 1000).await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn retire_is_conditional_unless_forced(b: Backend) {
    let store = b.open().await;
    let a = store.account(&key("alice")).await.unwrap();
    // pending: refused
    assert!(!store.retire(a, None).await.unwrap());
    store
        .set_account_state(a, AccountState::Synced, None)
        .await
        .unwrap();
    let entry = store.journal_append(a, "flags", "{}").await.unwrap();
    // synced, but a journal entry is pending: refused
    assert!(!store.retire(a, None).await.unwrap());
    assert_eq!(store.account_state(a).await.unwrap(), AccountState::Synced);
    store.journal_done(&[entry]).await.unwrap();
    assert!(store.retire(a, None).await.unwrap());
    assert_eq!(store.account_state(a).await.unwrap(), AccountState::Retired);
    let b = store.account(&key("bob")).await.unwrap();
    let waiting = store.journal_append(b, "flags", "{}").await.unwrap();
    let to_mirror = store.journal_to_mirror(b, 10).await.unwrap();
    assert_eq!(to_mirror.map(|t| t.entries[0].id), Some(waiting));
    assert!(store.retire(b, Some("forced from pending")).await.unwrap());
    // The mirror's read of a retired account's journal: nothing more goes to OLD.
    assert_eq!(store.journal_to_mirror(b, 10).await.unwrap(), None);
    let bob = store
        .account_summaries()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == b)
        .unwrap();
    assert_eq!(bob.state, AccountState::Retired);
    assert_eq!(bob.reason.as_deref(), Some("forced from pending"));
}

/// Retired is final: tombstones (counted), mirrored journal entries and base flags go in the
/// retiring transaction; the links stay as runs, and what a forced retire left undone stays.
async fn a_retired_account_shrinks_to_a_summary(b: Backend) {
    let store = b.open().await;
    let a = store.account(&key("alice")).await.unwrap();
    let inbox = store.folder_pair(a, "INBOX", "INBOX").await.unwrap().id;
    let sent = store.folder_pair(a, "Sent", "Sent").await.unwrap().id;
    // Flags of three kinds (a run each), and every third message deleted on NEW.
    let links: Vec<Link> = (1..=300u32)
        .map(|uid| {
            link(
                uid,
                uid,
                ["", "\\Seen", "\\Flagged"][(uid as usize / 100) % 3],
            )
        })
        .collect();
    store.add_links(inbox, &links).await.unwrap();
    let gone: Vec<u32> = (1..=300).filter(|u| u % 3 == 0).collect();
    store.tombstone(inbox, &gone).await.unwrap();
    store
        .add_links(sent, &links_of(1..=20, 0, "\\Seen"))
        .await
        .unwrap();
    store.tombstone(sent, &[21, 22]).await.unwrap();
    for _ in 0..5 {
        let entry = store.journal_append(a, "flags", "{}").await.unwrap();
        store.journal_done(&[entry]).await.unwrap();
    }
    // Another account keeps everything.
    let bob = store.account(&key("bob")).await.unwrap();
    let bob_inbox = store.folder_pair(bob, "INBOX", "INBOX").await.unwrap().id;
    store
        .add_links(bob_inbox, &links_of(1..=10, 0, ""))
        .await
        .unwrap();
    store.tombstone(bob_inbox, &[11]).await.unwrap();
    let bob_entry = store.journal_append(bob, "flags", "{}").await.unwrap();
    store.journal_done(&[bob_entry]).await.unwrap();

    let before = store.account_summaries().await.unwrap();
    let alice_before = before.iter().find(|s| s.id == a).unwrap().clone();
    assert_eq!((alice_before.linked, alice_before.tombstones), (220, 102));
    assert_eq!(b.rows("tombstones").await, 103);
    store
        .set_account_state(a, AccountState::Synced, None)
        .await
        .unwrap();
    assert!(store.retire(a, None).await.unwrap());

    // The summary: the same counts, from a few rows.
    let after = store.account_summaries().await.unwrap();
    let alice = after.iter().find(|s| s.id == a).unwrap();
    assert_eq!(alice.state, AccountState::Retired);
    assert_eq!(
        (alice.linked, alice.tombstones, alice.folders),
        (220, 102, 2)
    );
    let folders = store.folder_summaries(a).await.unwrap();
    let counts: Vec<(u64, u64)> = folders.iter().map(|f| (f.linked, f.tombstones)).collect();
    assert_eq!(counts, vec![(200, 100), (20, 2)]);
    // bob's one tombstone and one journal entry are all that is left of either.
    assert_eq!(b.rows("tombstones").await, 1);
    assert_eq!(b.rows("journal").await, 1);
    // The UID map: every link, without base flags, one run per stretch of consecutive OLD UIDs.
    let map = store.links(inbox).await.unwrap();
    let want: Vec<(u32, u32)> = links
        .iter()
        .filter(|l| l.old_uid % 3 != 0)
        .map(|l| (l.old_uid, l.new_uid))
        .collect();
    assert_eq!(
        map.iter()
            .map(|l| (l.old_uid, l.new_uid))
            .collect::<Vec<_>>(),
        want
    );
    assert!(map.iter().all(|l| !l.has_base()));
    // INBOX: runs 1-2, 4-5, … (100), Sent: one; bob: one.
    assert_eq!(b.rows("link_runs").await, 100 + 1 + 1);
    // No pass may read what is gone.
    assert!(matches!(
        store.tombstones(inbox).await,
        Err(StoreError::Retired(_))
    ));
    assert_eq!(store.tombstones(bob_inbox).await.unwrap(), vec![11]);

    // A forced retire keeps what was left undone: the pending entry, the message in error.
    let carol = store.account(&key("carol")).await.unwrap();
    let carol_inbox = store.folder_pair(carol, "INBOX", "INBOX").await.unwrap().id;
    store
        .set_message_errors(carol_inbox, &[(7, "could not be fetched".into())])
        .await
        .unwrap();
    let pending = store.journal_append(carol, "flags", "{}").await.unwrap();
    assert!(store.retire(carol, Some("forced")).await.unwrap());
    let carol_left = store.account_summaries().await.unwrap();
    let carol_left = carol_left.iter().find(|s| s.id == carol).unwrap();
    assert_eq!(
        (carol_left.pending_journal, carol_left.message_errors),
        (1, 1)
    );
    assert_eq!(
        store.journal_pending(carol, 10).await.unwrap()[0].id,
        pending
    );
    // Retiring again changes nothing.
    assert!(!store.retire(a, None).await.unwrap());
    assert!(!store.retire(a, Some("forced")).await.unwrap());
    store.close().await;
}

async fn the_write_ahead_mark_survives_a_reopen_until_cleared(b: Backend) {
    let store = b.open().await;
    let (a, bob) = (
        store.account(&key("alice")).await.unwrap(),
        store.account(&key("bob")).await.unwrap(),
    );
    assert!(store.writes_in_flight(a).await.unwrap().is_empty());
    store.mark_writes_in_flight(a, "p1", true).await.unwrap();
    store.mark_writes_in_flight(a, "p2", true).await.unwrap();
    // Setting it again keeps the first time.
    let first = store.writes_in_flight(a).await.unwrap();
    store.mark_writes_in_flight(a, "p1", true).await.unwrap();
    assert_eq!(store.writes_in_flight(a).await.unwrap(), first);
    store.close().await;
    // What processes that died with writes in flight leave behind: their marks, on the account.
    let store = b.open().await;
    let marks = store.writes_in_flight(a).await.unwrap();
    let holders: Vec<&str> = marks.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(holders.len(), 2);
    assert!(
        holders.contains(&"p1") && holders.contains(&"p2"),
        "{marks:?}"
    );
    assert!(marks.iter().all(|(_, since)| (now() - since).abs() < 60));
    assert!(store.writes_in_flight(bob).await.unwrap().is_empty());
    // One process's clear leaves the other's mark.
    store.mark_writes_in_flight(a, "p1", false).await.unwrap();
    let left = store.writes_in_flight(a).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, "p2");
    store.mark_writes_in_flight(a, "p2", false).await.unwrap();
    assert!(store.writes_in_flight(a).await.unwrap().is_empty());
}

/// A lease is held until it expires: what says a process is alive.
async fn a_lease_is_held_until_it_expires(b: Backend) {
    let store = b.open().await;
    assert!(!store.lease_held("process:p1", 1_000).await.unwrap());
    assert!(
        store
            .take_lease("process:p1", "p1", 1_000, 16_000)
            .await
            .unwrap()
    );
    assert!(store.lease_held("process:p1", 16_000).await.unwrap());
    assert!(!store.lease_held("process:p1", 16_001).await.unwrap());
    assert!(!store.lease_held("process:p2", 2_000).await.unwrap());
}

async fn retired_and_diverged_are_left_only_by_their_own_commands(b: Backend) {
    use AccountState::*;
    let store = b.open().await;
    let a = store.account(&key("alice")).await.unwrap();
    assert!(store.retire(a, Some("forced")).await.unwrap());
    // A failed OLD login or a pass's end never moves a retired account.
    for state in [Failed, Synced, Partial, Pending] {
        assert!(!store.set_account_state(a, state, Some("x")).await.unwrap());
        assert_eq!(store.account_state(a).await.unwrap(), Retired);
    }
    assert!(!store.mark_diverged(a, "x").await.unwrap());
    // Diverged: only reconcile clears it.
    let a = store.account(&key("bob")).await.unwrap();
    assert!(store.set_account_state(a, Partial, None).await.unwrap());
    assert!(
        store
            .mark_diverged(a, "journal entry 3 parked")
            .await
            .unwrap()
    );
    assert!(!store.set_account_state(a, Synced, None).await.unwrap());
    assert_eq!(store.account_state(a).await.unwrap(), Diverged);
    assert!(store.clear_diverged(a, Partial).await.unwrap());
    assert!(!store.clear_diverged(a, Partial).await.unwrap());
    assert!(store.set_account_state(a, Synced, None).await.unwrap());
    assert!(store.set_account_state(999, Synced, None).await.is_err());
}

async fn refused_entries_are_retried_then_parked(b: Backend) {
    let store = b.open().await;
    let a = store.account(&key("alice")).await.unwrap();
    let first = store.journal_append(a, "flags", "{}").await.unwrap();
    let second = store.journal_append(a, "append", "{}").await.unwrap();
    assert_eq!(
        store
            .journal_retry(first, "NO [NONEXISTENT]", 42)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.journal_retry(first, "NO again", 43).await.unwrap(), 2);
    let pending = store.journal_pending(a, 10).await.unwrap();
    assert_eq!(pending[0].attempts, 2);
    assert_eq!(pending[0].reason.as_deref(), Some("NO again"));
    assert_eq!(pending[0].retry_at, Some(43));
    store.journal_park(first, "refused 2 times").await.unwrap();
    assert_eq!(store.journal_pending_count(a).await.unwrap(), 1);
    let parked = store.journal_parked(a).await.unwrap();
    assert_eq!((parked.len(), parked[0].id), (1, first));
    let summary = store.account_summaries().await.unwrap().remove(0);
    assert_eq!((summary.pending_journal, summary.parked_journal), (1, 1));
    // Only mirrored entries are purged, and only old enough ones.
    store.journal_done(&[second]).await.unwrap();
    assert_eq!(store.journal_purge(0).await.unwrap(), 0);
    assert_eq!(store.journal_purge(i64::MAX).await.unwrap(), 1);
    assert_eq!(store.journal_parked(a).await.unwrap().len(), 1);
    // A parked entry blocks retire, forced or not the journal says so.
    store
        .set_account_state(a, AccountState::Synced, None)
        .await
        .unwrap();
    assert!(!store.retire(a, None).await.unwrap());
}

/// The keys the mirror keeps before OLD gets an APPEND: committed with the journal, read back
/// by entry, replaced when kept again (a replay), gone with their entry.
async fn append_keys_stay_with_their_entry(b: Backend) {
    let store = b.open().await;
    let a = store.account(&key("alice")).await.unwrap();
    let entry = store.journal_append(a, "append", "{}").await.unwrap();
    let other = store.journal_append(a, "append", "{}").await.unwrap();
    let key = |new_uid, ident: &str| AppendKey {
        entry,
        new_uid,
        ident: ident.into(),
    };
    let keys = [key(9, "k9"), key(7, "k7"), key(9, "k9")];
    store.journal_commit(&[], &[], &keys, &[]).await.unwrap();
    let kept = vec![(7, "k7".to_string()), (9, "k9".to_string())];
    assert_eq!(store.append_keys(entry).await.unwrap(), kept);
    assert!(store.append_keys(other).await.unwrap().is_empty());
    store
        .journal_commit(&[], &[], &[key(7, "k7")], &[])
        .await
        .unwrap();
    assert_eq!(store.append_keys(entry).await.unwrap(), kept);
    // Keys of an entry that is gone are dropped; the rest of the commit stands.
    let gone = AppendKey {
        entry: other + 1000,
        ..key(1, "k1")
    };
    let entry_of_a_session = NewEntry {
        account: a,
        kind: "flags",
        payload: "{}",
    };
    let committed = store
        .journal_commit(&[entry_of_a_session], &[], &[gone], &[])
        .await
        .unwrap();
    assert!(committed.ids[0].is_some());
    assert!(store.append_keys(other + 1000).await.unwrap().is_empty());
    // Purged with their entry once it is mirrored.
    store.journal_done(&[entry]).await.unwrap();
    assert_eq!(store.journal_purge(i64::MAX).await.unwrap(), 1);
    assert!(store.append_keys(entry).await.unwrap().is_empty());
    assert_eq!(b.rows("append_keys").await, 0);
}

/// An entry the mirror did is marked in one transaction with the links it made and took away,
/// in order (a MOVE: linked in the destination, unlinked in the source); an id that names no
/// entry comes back.
async fn mirrored_entries_are_marked_with_their_links(b: Backend) {
    let store = b.open().await;
    let alice = store.account(&key("alice")).await.unwrap();
    let src = store.folder_pair(alice, "A", "A").await.unwrap().id;
    let dst = store.folder_pair(alice, "B", "B").await.unwrap().id;
    store
        .add_links(src, &[link(10, 1, "\\Seen")])
        .await
        .unwrap();
    let entry = store.journal_append(alice, "move", "{}").await.unwrap();
    let changes = [
        LinkChange {
            pair: dst,
            added: vec![link(20, 5, "\\Seen")],
            removed: Vec::new(),
        },
        LinkChange {
            pair: src,
            added: Vec::new(),
            removed: vec![10],
        },
    ];
    let before = store.operations().writes;
    let missing = store
        .journal_mirrored(&[entry, entry + 100], &changes)
        .await;
    assert_eq!(missing.unwrap(), [entry + 100]);
    assert_eq!(store.operations().writes, before + 1);
    assert!(store.journal_pending(alice, 10).await.unwrap().is_empty());
    assert!(store.links(src).await.unwrap().is_empty());
    assert_eq!(store.links(dst).await.unwrap(), [link(20, 5, "\\Seen")]);
}

async fn journal_order_done_and_counts(b: Backend) {
    let store = b.open().await;
    let alice = store.account(&key("alice")).await.unwrap();
    let bob = store.account(&key("bob")).await.unwrap();
    assert!(store.journal_pending(alice, 10).await.unwrap().is_empty());
    assert_eq!(store.journal_pending_count(alice).await.unwrap(), 0);

    // (account, kind, payload), appended in this order.
    let appends = [
        (alice, "store", "1 +FLAGS (\\Seen)"),
        (bob, "create", "Projects"),
        (alice, "expunge", "2"),
        (alice, "move", "{\"to\": \"Archive\"}"),
    ];
    let mut ids = Vec::new();
    for (account, kind, payload) in appends {
        ids.push(store.journal_append(account, kind, payload).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    let pending = store.journal_pending(alice, 10).await.unwrap();
    let got: Vec<(i64, &str, &str)> = pending
        .iter()
        .map(|e| (e.id, e.kind.as_str(), e.payload.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[0], "store", "1 +FLAGS (\\Seen)"),
            (ids[2], "expunge", "2"),
            (ids[3], "move", "{\"to\": \"Archive\"}"),
        ]
    );
    assert!(pending.iter().all(|e| (now() - e.created).abs() < 60));
    assert_eq!(store.journal_pending(alice, 2).await.unwrap(), pending[..2]);
    assert!(store.journal_pending(alice, 0).await.unwrap().is_empty());
    // After an entry, of some kinds: alice's, not bob's.
    for (after, kinds, want) in [
        (0, vec!["move", "create"], vec![ids[3]]),
        (
            ids[0],
            vec!["store", "expunge", "move"],
            vec![ids[2], ids[3]],
        ),
        (ids[2], vec!["expunge"], vec![]),
        (0, vec![], vec![]),
    ] {
        let got: Vec<i64> = store
            .journal_pending_after(alice, after, &kinds)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(got, want, "after {after}, {kinds:?}");
    }

    // (entries marked done in one call, alice's pending ids after, alice's count, bob's count)
    let steps = [
        (vec![ids[2]], vec![ids[0], ids[3]], 2, 1),
        (vec![ids[2]], vec![ids[0], ids[3]], 2, 1), // twice is harmless
        // Several at once, of two accounts, one of them done already.
        (vec![ids[0], ids[2], ids[1]], vec![ids[3]], 1, 0),
        (vec![ids[3]], vec![], 0, 0),
    ];
    for (done, left, alice_count, bob_count) in steps {
        store.journal_done(&done).await.unwrap();
        let pending: Vec<i64> = store
            .journal_pending(alice, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(pending, left, "after {done:?}");
        assert_eq!(
            store.journal_pending_count(alice).await.unwrap(),
            alice_count
        );
        assert_eq!(store.journal_pending_count(bob).await.unwrap(), bob_count);
    }

    for missing in [vec![9999], vec![ids[3], 9999]] {
        assert!(
            matches!(
                store.journal_done(&missing).await,
                Err(StoreError::Corrupt(_))
            ),
            "{missing:?}"
        );
    }
    // The account must exist.
    assert!(store.journal_append(9999, "store", "").await.is_err());
}

/// The pending entries holding a text are those whose payload holds it, oldest first, of the
/// account and not done: LIKE's wildcards and escape in the text match only themselves.
async fn pending_entries_holding_a_text(b: Backend) {
    let store = b.open().await;
    let (alice, bob) = (
        store.account(&key("alice")).await.unwrap(),
        store.account(&key("bob")).await.unwrap(),
    );
    let payloads = [
        (alice, r#"{"folder":"A"}"#),
        (alice, r#"{"folder":"A/B"}"#),
        (alice, r#"{"folder":"50%_off"}"#),
        (alice, r#"{"folder":"50 percent off"}"#),
        (alice, r#"{"folder":"say \"hi\\"}"#),
        (alice, r#"{"from":"X","to":"A"}"#),
        (bob, r#"{"folder":"A"}"#),
    ];
    let mut ids = Vec::new();
    for (account, payload) in payloads {
        ids.push(
            store
                .journal_append(account, "store", payload)
                .await
                .unwrap(),
        );
    }
    store.journal_done(&[ids[5]]).await.unwrap();
    let holding = |text: &'static str, after: i64, limit: u32| {
        let store = &store;
        async move {
            let found = store.journal_pending_holding(alice, text, after, limit);
            found
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<i64>>()
        }
    };
    let (a, a_open) = (r#""A""#, r#""A"#);
    assert_eq!(
        holding(a, 0, 9).await,
        vec![ids[0]],
        "not A/B, not done, not bob's"
    );
    assert_eq!(holding(a_open, 0, 9).await, vec![ids[0], ids[1]]);
    assert_eq!(holding(a_open, 0, 1).await, vec![ids[0]], "at most 1");
    assert_eq!(
        holding(a_open, ids[0], 9).await,
        vec![ids[1]],
        "after the first"
    );
    assert_eq!(holding(r#""50%_off""#, 0, 9).await, vec![ids[2]]);
    assert_eq!(holding(r#""say \"hi\\""#, 0, 9).await, vec![ids[4]]);
    assert_eq!(holding(r#""B""#, 0, 9).await, Vec::<i64>::new());
}

/// A group commit: entries of several accounts in one call keep their order; a retired
/// account's entry is not journaled (its place says so). Two stores committing the same accounts
/// in opposite orders at once both finish (PostgreSQL locks each account's journal).
async fn entries_of_several_accounts_commit_together(b: Backend) {
    let store = b.open().await;
    let [alice, bob, carol] = [key("alice"), key("bob"), key("carol")];
    let alice = store.account(&alice).await.unwrap();
    let bob = store.account(&bob).await.unwrap();
    let carol = store.account(&carol).await.unwrap();
    assert!(store.retire(carol, Some("forced")).await.unwrap());
    let entry = |account, payload| NewEntry {
        account,
        kind: "flags",
        payload,
    };
    let ids = store
        .journal_commit(
            &[
                entry(alice, "a1"),
                entry(bob, "b1"),
                entry(carol, "c1"),
                entry(alice, "a2"),
            ],
            &[],
            &[],
            &[],
        )
        .await
        .unwrap()
        .ids;
    assert!(ids[2].is_none(), "{ids:?}");
    let ids: Vec<i64> = [ids[0], ids[1], ids[3]].into_iter().flatten().collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let payloads = |account| {
        let store = Arc::clone(&store);
        async move {
            let pending = store.journal_pending(account, 10).await.unwrap();
            pending.into_iter().map(|e| e.payload).collect::<Vec<_>>()
        }
    };
    assert_eq!(payloads(alice).await, ["a1", "a2"]);
    assert_eq!(payloads(bob).await, ["b1"]);
    assert!(payloads(carol).await.is_empty());
    assert!(matches!(
        store.journal_append(carol, "flags", "c2").await,
        Err(StoreError::Retired(_))
    ));

    let other = b.open().await;
    let one = [entry(alice, "x"), entry(bob, "x")];
    let two = [entry(bob, "y"), entry(alice, "y")];
    let (one, two) = tokio::join!(
        store.journal_commit(&one, &[], &[], &[]),
        other.journal_commit(&two, &[], &[], &[])
    );
    assert_eq!(one.unwrap().ids.iter().flatten().count(), 2);
    assert_eq!(two.unwrap().ids.iter().flatten().count(), 2);
    assert_eq!(store.journal_pending_count(alice).await.unwrap(), 4);

    // Marks of mirrored entries share the commit; one naming no entry is counted, and the
    // rest of the commit stands.
    let committed = store
        .journal_commit(&[entry(bob, "b2")], &[ids[0], ids[2], 9999], &[], &[])
        .await
        .unwrap();
    assert_eq!(committed.missing, [9999]);
    // The two concurrent commits came in one order or the other, the same for both accounts.
    let (alice, bob) = (payloads(alice).await, payloads(bob).await);
    assert!(alice == ["x", "y"] || alice == ["y", "x"], "{alice:?}");
    assert_eq!(bob, ["b1", &alice[0], &alice[1], "b2"]);
}

async fn find_and_touch_account(b: Backend) {
    let store = b.open().await;
    assert_eq!(store.find_account(&key("alice")).await.unwrap(), None);
    let alice = store.account(&key("alice")).await.unwrap();
    // (key, expected)
    let cases = [
        (key("alice"), Some(alice)),
        (key("bob"), None),
        (
            AccountKey {
                new_user: "alice2".into(),
                ..key("alice")
            },
            None,
        ),
        (
            AccountKey {
                old_host: "elsewhere".into(),
                ..key("alice")
            },
            None,
        ),
    ];
    for (k, expected) in cases {
        assert_eq!(store.find_account(&k).await.unwrap(), expected, "{k:?}");
    }
    // find_account never creates.
    assert_eq!(store.account_summaries().await.unwrap().len(), 1);
    // A login's one read: the account and its state.
    for state in [AccountState::Pending, AccountState::Synced] {
        store.set_account_state(alice, state, None).await.unwrap();
        let found = store.find_account_state(&key("alice")).await.unwrap();
        assert_eq!(found, Some((alice, state)));
    }
    assert_eq!(store.find_account_state(&key("bob")).await.unwrap(), None);

    let last = |store: Arc<dyn Store>| async move {
        store.account_summaries().await.unwrap()[0].last_activity
    };
    assert_eq!(last(store.clone()).await, None);
    store.touch_account(alice).await.unwrap();
    let touched = last(store.clone()).await.unwrap();
    assert!((now() - touched).abs() < 60, "{touched}");
    assert!(matches!(
        store.touch_account(9999).await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn rename_pair_keeps_links_and_tombstones(b: Backend) {
    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let pair = store.folder_pair(account, "Work", "Work").await.unwrap();
    let other = store.folder_pair(account, "Sent", "Sent").await.unwrap();
    store
        .add_links(pair.id, &[link(1, 10, "\\Seen"), link(2, 20, "")])
        .await
        .unwrap();
    store.tombstone(pair.id, &[2, 3]).await.unwrap();

    // (old name, new name): renames in a row, including back and a no-op.
    let renames = [
        ("Projects", "INBOX.Projects"),
        ("Projects", "INBOX.Projects"),
        ("Archive/2024", "Archive.2024"),
        ("Work", "Work"),
    ];
    for (old_name, new_name) in renames {
        store
            .rename_pair(pair.id, old_name, new_name)
            .await
            .unwrap();
        // The engine finds the pair under its new OLD name.
        let got = store
            .folder_pair(account, old_name, new_name)
            .await
            .unwrap();
        assert_eq!(got.id, pair.id, "{old_name}");
        let pairs = store.folder_pairs(account).await.unwrap();
        let renamed = pairs.iter().find(|p| p.id == pair.id).unwrap();
        assert_eq!(
            (renamed.old_name.as_str(), renamed.new_name.as_str()),
            (old_name, new_name)
        );
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            store.links(pair.id).await.unwrap(),
            vec![link(1, 10, "\\Seen")]
        );
        assert_eq!(store.tombstones(pair.id).await.unwrap(), vec![2, 3]);
    }

    // Renaming onto another pair's OLD name is refused and changes nothing.
    assert!(store.rename_pair(pair.id, "Sent", "Sent").await.is_err());
    let sent = store.folder_pair(account, "Sent", "Sent").await.unwrap();
    assert_eq!(sent.id, other.id);
    assert!(matches!(
        store.rename_pair(9999, "x", "y").await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn delete_pair_removes_links_and_tombstones(b: Backend) {
    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let gone = store
        .folder_pair(account, "Trash", "Trash")
        .await
        .unwrap()
        .id;
    let kept = store
        .folder_pair(account, "INBOX", "INBOX")
        .await
        .unwrap()
        .id;
    for p in [gone, kept] {
        store
            .add_links(p, &[link(1, 1, ""), link(2, 2, "")])
            .await
            .unwrap();
        store.tombstone(p, &[2]).await.unwrap();
    }

    store.delete_pair(gone).await.unwrap();
    let names: Vec<String> = store
        .folder_pairs(account)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.old_name)
        .collect();
    assert_eq!(names, vec!["INBOX"]);
    // (pair, links left, tombstones left), looked up by the deleted pair's id.
    for (p, links, tombstones) in [(gone, 0, 0), (kept, 1, 1)] {
        assert_eq!(store.links(p).await.unwrap().len(), links, "pair {p}");
        assert_eq!(
            store.tombstones(p).await.unwrap().len(),
            tombstones,
            "pair {p}"
        );
    }
    // Idempotent; a pair of the same name starts afresh.
    store.delete_pair(gone).await.unwrap();
    store.delete_pair(9999).await.unwrap();
    let again = store.folder_pair(account, "Trash", "Trash").await.unwrap();
    assert_ne!(again.id, kept);
    assert_eq!(again.phase, Phase::New);
    assert!(store.links(again.id).await.unwrap().is_empty());
    assert!(store.tombstones(again.id).await.unwrap().is_empty());
}

async fn the_pair_epoch_counts_deletions_and_renames(b: Backend) {
    let store = b.open().await;
    let (alice, bob) = (
        store.account(&key("alice")).await.unwrap(),
        store.account(&key("bob")).await.unwrap(),
    );
    let epoch = async |account| {
        let to = store.journal_to_mirror(account, 1).await.unwrap();
        to.unwrap().pairs_epoch
    };
    assert_eq!(epoch(alice).await, 0);
    // A pair made, its links, the pair found as it is: the pairs a mirror kept stay right.
    let work = store.folder_pair(alice, "Work", "Work").await.unwrap();
    store.add_links(work.id, &[link(1, 1, "")]).await.unwrap();
    store.folder_pair(alice, "Work", "Work").await.unwrap();
    assert_eq!(epoch(alice).await, 0);
    // Each change of a pair's names, and its deletion, moves the epoch on.
    let mut was = 0;
    for change in ["renamed", "a new NEW name", "deleted"] {
        match change {
            "renamed" => store.rename_pair(work.id, "Projects", "Projects").await,
            "a new NEW name" => (store.folder_pair(alice, "Projects", "INBOX.Projects").await)
                .map(|p| assert_eq!(p.id, work.id)),
            _ => store.delete_pair(work.id).await,
        }
        .unwrap();
        let now = epoch(alice).await;
        assert!(now > was, "{change}: {now} after {was}");
        was = now;
    }
    // A pair made again under the deleted one's name does not; another account's is its own.
    store
        .folder_pair(alice, "Projects", "Projects")
        .await
        .unwrap();
    assert_eq!(epoch(alice).await, was);
    assert_eq!(epoch(bob).await, 0);
}

async fn summaries_count_progress(b: Backend) {
    let store = b.open().await;
    assert!(store.account_summaries().await.unwrap().is_empty());
    let state = |messages| MailboxState {
        uidvalidity: 1,
        uidnext: messages + 1,
        highestmodseq: 0,
        messages,
    };
    // Created out of order: summaries sort by new_user, then old_user.
    let zed = store
        .account(&AccountKey {
            old_user: "a-old".into(),
            ..key("zed")
        })
        .await
        .unwrap();
    let bob = store.account(&key("bob")).await.unwrap();
    let alice = store.account(&key("alice")).await.unwrap();
    let alice_b = store
        .account(&AccountKey {
            old_user: "b-alice".into(),
            ..key("alice")
        })
        .await
        .unwrap();

    // alice: INBOX synced (3 old, 4 new, 3 links, 1 tombstone), Sent partial (2 old,
    // 1 new, 1 link), Drafts never reconciled; two journal entries, one done.
    let inbox = store.folder_pair(alice, "INBOX", "INBOX").await.unwrap().id;
    let sent = store
        .folder_pair(alice, "Sent", "INBOX.Sent")
        .await
        .unwrap()
        .id;
    let drafts = store
        .folder_pair(alice, "Drafts", "Drafts")
        .await
        .unwrap()
        .id;
    store
        .add_links(inbox, &[link(1, 1, ""), link(2, 2, ""), link(3, 3, "")])
        .await
        .unwrap();
    store.tombstone(inbox, &[4]).await.unwrap();
    store
        .save_pair_state(inbox, Some(state(3)), Some(state(4)), 5, Phase::Synced)
        .await
        .unwrap();
    store.add_links(sent, &[link(7, 1, "")]).await.unwrap();
    store
        .save_pair_state(sent, Some(state(2)), Some(state(1)), 2, Phase::Partial)
        .await
        .unwrap();
    store.journal_append(alice, "store", "x").await.unwrap();
    let done = store.journal_append(alice, "store", "y").await.unwrap();
    store.journal_done(&[done]).await.unwrap();
    store.journal_append(bob, "create", "z").await.unwrap();
    store
        .set_account_state(alice, AccountState::Partial, None)
        .await
        .unwrap();
    store
        .set_account_state(bob, AccountState::Failed, Some("LOGIN failed on OLD"))
        .await
        .unwrap();
    store.touch_account(zed).await.unwrap();

    let got = store.account_summaries().await.unwrap();
    let row = |s: &AccountSummary| {
        (
            s.id,
            s.key.old_user.clone(),
            s.state,
            s.reason.clone(),
            s.last_activity.is_some(),
            [
                s.folders,
                s.folders_synced,
                s.messages_old,
                s.messages_new,
                s.linked,
                s.tombstones,
                s.pending_journal,
            ],
        )
    };
    let got: Vec<_> = got.iter().map(row).collect();
    let expected = vec![
        // (id, old_user, state, reason, active, [folders, synced, old, new, linked, tombstones, journal])
        (
            alice,
            "alice".to_string(),
            AccountState::Partial,
            None,
            false,
            [3, 1, 5, 5, 4, 1, 1],
        ),
        (
            alice_b,
            "b-alice".to_string(),
            AccountState::Pending,
            None,
            false,
            [0; 7],
        ),
        (
            bob,
            "bob".to_string(),
            AccountState::Failed,
            Some("LOGIN failed on OLD".to_string()),
            false,
            [0, 0, 0, 0, 0, 0, 1],
        ),
        (
            zed,
            "a-old".to_string(),
            AccountState::Pending,
            None,
            true,
            [0; 7],
        ),
    ];
    assert_eq!(got, expected);

    let folders = store.folder_summaries(alice).await.unwrap();
    let got: Vec<_> = folders
        .iter()
        .map(|f| {
            (
                f.pair.id,
                f.pair.old_name.as_str(),
                f.pair.phase,
                f.linked,
                f.tombstones,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (drafts, "Drafts", Phase::New, 0, 0),
            (inbox, "INBOX", Phase::Synced, 3, 1),
            (sent, "Sent", Phase::Partial, 1, 0),
        ]
    );
    // The pair is the one folder_pairs returns.
    assert_eq!(
        folders.iter().map(|f| f.pair.clone()).collect::<Vec<_>>(),
        store.folder_pairs(alice).await.unwrap()
    );
    assert!(store.folder_summaries(bob).await.unwrap().is_empty());
    assert!(store.folder_summaries(9999).await.unwrap().is_empty());
}

async fn new_state_survives_reopen(b: Backend) {
    // A missing store is not created by open_existing.
    for _ in 0..2 {
        assert!(matches!(
            store::open_existing(&b.location()).await.map(|_| ()),
            Err(StoreError::Missing(_))
        ));
    }

    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let pair = store.folder_pair(account, "Work", "Work").await.unwrap().id;
    let gone = store.folder_pair(account, "Old", "Old").await.unwrap().id;
    store.add_links(pair, &[link(1, 1, "")]).await.unwrap();
    store.add_links(gone, &[link(1, 1, "")]).await.unwrap();
    store
        .rename_pair(pair, "Projects", "Projects")
        .await
        .unwrap();
    store.delete_pair(gone).await.unwrap();
    let first = store.journal_append(account, "store", "a").await.unwrap();
    let second = store.journal_append(account, "expunge", "b").await.unwrap();
    store.journal_done(&[first]).await.unwrap();
    store.touch_account(account).await.unwrap();
    store
        .set_account_state(account, AccountState::Failed, Some("why"))
        .await
        .unwrap();
    let summaries = store.account_summaries().await.unwrap();
    let folders = store.folder_summaries(account).await.unwrap();
    // No close: a crash leaves the WAL behind.
    drop(store);

    let store = store::open_existing(&b.location()).await.unwrap();
    assert_eq!(
        store.find_account(&key("alice")).await.unwrap(),
        Some(account)
    );
    assert_eq!(store.account_summaries().await.unwrap(), summaries);
    assert_eq!(store.folder_summaries(account).await.unwrap(), folders);
    assert_eq!(summaries[0].reason.as_deref(), Some("why"));
    assert!(summaries[0].last_activity.is_some());
    assert_eq!((summaries[0].folders, summaries[0].linked), (1, 1));
    assert_eq!(folders[0].pair.old_name, "Projects");
    let pending = store.journal_pending(account, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].id, pending[0].kind.as_str()),
        (second, "expunge")
    );
    // Ids keep growing after a restart.
    assert!(store.journal_append(account, "x", "").await.unwrap() > second);
    store.close().await;
}

async fn ten_thousand_links(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let links: Vec<Link> = (1..=10_000u32)
        .map(|uid| Link {
            old_uid: uid,
            new_uid: uid + 100_000,
            old_flags: if uid % 3 == 0 {
                "\\Seen".into()
            } else {
                String::new()
            },
            new_flags: format!("\\Seen ${uid}"),
            // The identity key is optional and round-trips when present.
            ident: (uid % 2 == 0).then(|| format!("key{uid}")),
        })
        .collect();

    let started = std::time::Instant::now();
    store.add_links(pair, &links).await.unwrap();
    eprintln!("add_links: 10000 links in {:?}", started.elapsed());

    let started = std::time::Instant::now();
    let read = store.links(pair).await.unwrap();
    eprintln!("links: read 10000 links in {:?}", started.elapsed());
    assert_eq!(read, links);

    let updates: Vec<LinkFlags> = links
        .iter()
        .map(|l| LinkFlags {
            old_uid: l.old_uid,
            old_flags: "\\Deleted".into(),
            new_flags: String::new(),
        })
        .collect();
    let started = std::time::Instant::now();
    store.update_link_flags(pair, &updates).await.unwrap();
    eprintln!("update_link_flags: 10000 links in {:?}", started.elapsed());
    let read = store.links(pair).await.unwrap();
    assert_eq!(read.len(), 10_000);
    assert!(
        read.iter()
            .all(|l| l.old_flags == "\\Deleted" && l.new_flags.is_empty())
    );

    let uids: Vec<u32> = (1..=10_000u32).filter(|u| u % 2 == 0).collect();
    let started = std::time::Instant::now();
    store.tombstone(pair, &uids).await.unwrap();
    eprintln!("tombstone: 5000 links in {:?}", started.elapsed());
    assert_eq!(store.tombstones(pair).await.unwrap(), uids);
    assert_eq!(store.links(pair).await.unwrap().len(), 5_000);

    let started = std::time::Instant::now();
    store
        .remove_links(pair, &(1..=10_000u32).collect::<Vec<_>>())
        .await
        .unwrap();
    eprintln!("remove_links: 10000 uids in {:?}", started.elapsed());
    assert!(store.links(pair).await.unwrap().is_empty());
    store.close().await;
}

/// Stores opened at the same moment on an empty store (proxies starting together) all open: one
/// of them migrates, the others wait for it (without the lock, their `CREATE TABLE`s collide),
/// and all of them work on the same state.
async fn migrations_run_once_when_stores_open_together(b: Backend) {
    let location = b.location();
    let opening: Vec<_> = (0..6)
        .map(|_| {
            let location = location.clone();
            tokio::spawn(async move { store::open(&location).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opening {
        stores.push(open.await.unwrap().unwrap());
    }
    let account = stores[0].account(&key("alice")).await.unwrap();
    for s in &stores {
        assert_eq!(s.find_account(&key("alice")).await.unwrap(), Some(account));
    }
    for s in stores {
        s.close().await;
    }
}

/// A lease is taken by one holder; another gets it only once it is released or has expired; the
/// holder renews it. Concurrent takers of a free lease: exactly one wins.
async fn a_lease_has_one_holder_until_it_expires(b: Backend) {
    let store = b.open().await;
    let (t, ttl) = (1_000_000, 15_000);
    assert!(
        store
            .take_lease("folder:1:INBOX", "a", t, t + ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease("folder:1:INBOX", "b", t + 1, t + 1 + ttl)
            .await
            .unwrap()
    );
    // Other names are independent.
    assert!(
        store
            .take_lease("folder:1:Sent", "b", t, t + ttl)
            .await
            .unwrap()
    );
    // The holder renews; the renewal moves the expiry.
    assert!(
        store
            .take_lease("folder:1:INBOX", "a", t + 10_000, t + 10_000 + ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease("folder:1:INBOX", "b", t + ttl + 1, t + 2 * ttl)
            .await
            .unwrap()
    );
    // Expired (its holder stopped renewing): another takes it over.
    let later = t + 10_000 + ttl + 1;
    assert!(
        store
            .take_lease("folder:1:INBOX", "b", later, later + ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease("folder:1:INBOX", "a", later, later + ttl)
            .await
            .unwrap()
    );
    // A release by a former holder changes nothing; the holder's own frees it.
    store.release_lease("folder:1:INBOX", "a").await.unwrap();
    assert!(
        !store
            .take_lease("folder:1:INBOX", "c", later, later + ttl)
            .await
            .unwrap()
    );
    store.release_lease("folder:1:INBOX", "b").await.unwrap();
    assert!(
        store
            .take_lease("folder:1:INBOX", "c", later, later + ttl)
            .await
            .unwrap()
    );

    let racing: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .take_lease("sweep:7", &format!("node{i}"), t, t + ttl)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for r in racing {
        winners += usize::from(r.await.unwrap());
    }
    assert_eq!(winners, 1);
}

/// `link(old, new, flags)` for each OLD UID of `olds`, NEW UIDs `shift` above.
/// A mirror entry reads the links of the NEW UIDs it names: the overlapping part of a run,
/// per-message links inside the ranges, nothing outside them, each link once.
async fn links_by_new_uid_read_only_the_named_part(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    // OLD 1..=100 -> NEW 1001..=1100 (one run), OLD 200 -> NEW 5 and 300 -> NEW 2000 (keyed).
    store
        .add_links(pair, &links_of(1..=100, 1000, ""))
        .await
        .unwrap();
    store
        .add_links(pair, &[keyed(200, 5, "", "a"), keyed(300, 2000, "", "b")])
        .await
        .unwrap();
    let news = |links: Vec<Link>| links.iter().map(|l| l.new_uid).collect::<Vec<_>>();
    let all = store.links(pair).await.unwrap();
    // More ranges than a read names one by one: read as their span, then cut to them.
    let many: Vec<Range> = (0..40).map(|i| (1001 + 2 * i, 1001 + 2 * i)).collect();
    let odd: Vec<u32> = many.iter().map(|r| r.0).collect();
    // (NEW UID ranges, the NEW UIDs of the links read, by OLD UID)
    let table: [(&[Range], Vec<u32>); 11] = [
        (&[(1001, 1001)], vec![1001]),
        (&[(1099, 1200)], vec![1099, 1100]),
        (&[(990, 1002)], vec![1001, 1002]),
        (&[(1, 10)], vec![5]),
        (&[(1101, 1999)], vec![]),
        (&[], vec![]),
        (&[(0, u32::MAX)], news(all.clone())),
        // One run, two parts of it; three ranges (padded to four by repeating the last).
        (&[(1001, 1002), (1050, 1050)], vec![1001, 1002, 1050]),
        (&[(5, 5), (1100, 1100), (2000, 2000)], vec![1100, 5, 2000]), // by OLD UID
        (&[(1, 4), (6, 1000), (1101, 1999)], vec![]),
        (&many, odd),
    ];
    for (ranges, want) in table {
        let got = store.links_by_new(pair, ranges).await.unwrap();
        assert_eq!(news(got.clone()), want, "{ranges:?}");
        for l in &got {
            assert!(all.contains(l), "{l:?} as links() has it");
        }
    }
    assert_eq!(all.len(), 102);
}

/// NEW UIDs `lo..=hi`.
type Range = (u32, u32);

fn links_of(olds: impl IntoIterator<Item = u32>, shift: u32, flags: &str) -> Vec<Link> {
    olds.into_iter()
        .map(|uid| link(uid, uid + shift, flags))
        .collect()
}

fn keyed(old_uid: u32, new_uid: u32, flags: &str, ident: &str) -> Link {
    Link {
        ident: Some(ident.into()),
        ..link(old_uid, new_uid, flags)
    }
}

/// The engine's way: one `add_links` per APPEND, ascending OLD UIDs to ascending NEW UIDs.
/// A pair reconciled with both sides' HIGHESTMODSEQ keeps no base flags: runs that differed only
/// in their flags become one, per-message links lose theirs too, and what is written later (a
/// flag update by the mirror, a copy) keeps its own base until the next forgetting.
async fn forgotten_bases_join_runs_and_later_writes_keep_theirs(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let mut links: Vec<Link> = (1..=300u32)
        .map(|uid| link(uid, uid + 10, ["", "\\Seen", "\\Flagged"][uid as usize % 3]))
        .collect();
    // A gap on NEW, and a link with an identity key.
    links.push(link(301, 400, "\\Seen"));
    links.push(Link {
        ident: Some("k".into()),
        ..link(302, 401, "\\Seen")
    });
    store.add_links(pair, &links).await.unwrap();
    assert_eq!(b.rows("link_runs").await, 301);

    store.forget_link_bases(pair).await.unwrap();
    let bare = |l: &Link| Link {
        old_flags: NO_BASE.into(),
        new_flags: NO_BASE.into(),
        ..l.clone()
    };
    let want: Vec<Link> = links.iter().map(bare).collect();
    assert_eq!(store.links(pair).await.unwrap(), want);
    assert!(want.iter().all(|l| !l.has_base()));
    assert_eq!((b.rows("link_runs").await, b.rows("links").await), (2, 1));
    // Again: nothing to do.
    store.forget_link_bases(pair).await.unwrap();
    assert_eq!(store.links(pair).await.unwrap(), want);

    // The mirror stores a base for one message; a copy appends with its flags.
    store
        .update_link_flags(
            pair,
            &[LinkFlags {
                old_uid: 150,
                old_flags: "\\Seen".into(),
                new_flags: "\\Seen".into(),
            }],
        )
        .await
        .unwrap();
    store.add_links(pair, &[link(303, 402, "")]).await.unwrap();
    let got = store.links(pair).await.unwrap();
    let based: Vec<u32> = got
        .iter()
        .filter(|l| l.has_base())
        .map(|l| l.old_uid)
        .collect();
    assert_eq!(based, vec![150, 303]);
    assert_eq!(b.rows("link_runs").await, 5);
    store.forget_link_bases(pair).await.unwrap();
    assert!(
        store
            .links(pair)
            .await
            .unwrap()
            .iter()
            .all(|l| !l.has_base())
    );
    // 1–300, 301 and 303 (302 is kept per message, so 303 does not continue 301).
    assert_eq!(b.rows("link_runs").await, 3);
    store.close().await;
}

/// A single link written between two runs is read with both neighbours: one that fills the
/// gap joins them, one with other flags stands between them, and removing it splits them again.
async fn one_link_joins_and_splits_the_runs_beside_it(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let mut both = links_of(1..=5, 10, "");
    both.extend(links_of(7..=9, 10, ""));
    store.add_links(pair, &both).await.unwrap();
    assert_eq!(b.rows("link_runs").await, 2);
    store.add_links(pair, &[link(6, 16, "")]).await.unwrap();
    assert_eq!(
        b.rows("link_runs").await,
        1,
        "the gap filled with the same flags"
    );
    for (uid, flags, runs, what) in [
        (6, "\\Seen", 3, "other flags between them"),
        (6, "", 1, "the same flags again"),
        (1, "\\Seen", 2, "the first link, other flags"),
    ] {
        let update = LinkFlags {
            old_uid: uid,
            old_flags: flags.into(),
            new_flags: flags.into(),
        };
        store.update_link_flags(pair, &[update]).await.unwrap();
        assert_eq!(b.rows("link_runs").await, runs, "{what}");
    }
    store.remove_links(pair, &[6]).await.unwrap();
    assert_eq!(b.rows("link_runs").await, 3, "removed");
    let mut want = vec![link(1, 11, "\\Seen")];
    want.extend(links_of(2..=5, 10, ""));
    want.extend(links_of(7..=9, 10, ""));
    assert_eq!(store.links(pair).await.unwrap(), want);
    store.close().await;
}

async fn appends_in_order_extend_one_run(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    for uid in 1..=500 {
        store
            .add_links(pair, &[link(uid, uid + 1000, "\\Seen")])
            .await
            .unwrap();
    }
    assert_eq!(
        store.links(pair).await.unwrap(),
        links_of(1..=500, 1000, "\\Seen")
    );
    assert_eq!((b.rows("link_runs").await, b.rows("links").await), (1, 0));

    // Other flags, a gap on NEW, a gap on OLD: a new run each.
    store.add_links(pair, &[link(501, 1501, "")]).await.unwrap();
    store.add_links(pair, &[link(502, 1510, "")]).await.unwrap();
    store.add_links(pair, &[link(510, 1511, "")]).await.unwrap();
    store.add_links(pair, &[link(511, 1512, "")]).await.unwrap();
    let mut want = links_of(1..=500, 1000, "\\Seen");
    want.extend([
        link(501, 1501, ""),
        link(502, 1510, ""),
        link(510, 1511, ""),
        link(511, 1512, ""),
    ]);
    assert_eq!(store.links(pair).await.unwrap(), want);
    assert_eq!(b.rows("link_runs").await, 4);

    // A batch in order, as a pass without UIDPLUS-free adoption commits it, is one run too.
    let account = store.account(&key("alice")).await.unwrap();
    let sent = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    store
        .add_links(sent, &links_of(1..=2000, 7, ""))
        .await
        .unwrap();
    assert_eq!(store.links(sent).await.unwrap(), links_of(1..=2000, 7, ""));
    assert_eq!(b.rows("link_runs").await, 5);
    // A tombstoned OLD UID that is linked again (an append) is no longer a tombstone.
    store.tombstone(sent, &[2001]).await.unwrap();
    store
        .add_links(sent, &[link(2001, 2008, "")])
        .await
        .unwrap();
    assert!(store.tombstones(sent).await.unwrap().is_empty());
    assert_eq!(store.links(sent).await.unwrap(), links_of(1..=2001, 7, ""));
    assert_eq!(b.rows("link_runs").await, 5);
    store.close().await;
}

async fn flag_updates_removals_and_tombstones_split_runs(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    store
        .add_links(pair, &links_of(1..=10, 100, ""))
        .await
        .unwrap();
    let flags = |old_uid, flags: &str| LinkFlags {
        old_uid,
        old_flags: flags.into(),
        new_flags: flags.into(),
    };

    store
        .update_link_flags(pair, &[flags(5, "\\Seen"), flags(42, "\\Seen")])
        .await
        .unwrap();
    let mut want = links_of(1..=10, 100, "");
    want[4] = link(5, 105, "\\Seen");
    assert_eq!(store.links(pair).await.unwrap(), want);
    assert_eq!(b.rows("link_runs").await, 3);
    // Back to the flags of its neighbours: one run again.
    store
        .update_link_flags(pair, &[flags(5, "")])
        .await
        .unwrap();
    assert_eq!(store.links(pair).await.unwrap(), links_of(1..=10, 100, ""));
    assert_eq!(b.rows("link_runs").await, 1);
    // Only one side's flags differ: still a run of its own.
    store
        .update_link_flags(
            pair,
            &[LinkFlags {
                old_uid: 10,
                old_flags: String::new(),
                new_flags: "\\Flagged".into(),
            }],
        )
        .await
        .unwrap();
    let got = store.links(pair).await.unwrap();
    assert_eq!(
        (got[9].old_flags.as_str(), got[9].new_flags.as_str()),
        ("", "\\Flagged")
    );
    assert_eq!(b.rows("link_runs").await, 2);

    store.remove_links(pair, &[3]).await.unwrap();
    store.tombstone(pair, &[7, 8, 20]).await.unwrap();
    let olds: Vec<u32> = store
        .links(pair)
        .await
        .unwrap()
        .iter()
        .map(|l| l.old_uid)
        .collect();
    assert_eq!(olds, vec![1, 2, 4, 5, 6, 9, 10]);
    let news: Vec<u32> = store
        .links(pair)
        .await
        .unwrap()
        .iter()
        .map(|l| l.new_uid)
        .collect();
    assert_eq!(news, vec![101, 102, 104, 105, 106, 109, 110]);
    assert_eq!(store.tombstones(pair).await.unwrap(), vec![7, 8, 20]);
    // 1-2, 4-6, 9, 10 (other flags).
    assert_eq!(b.rows("link_runs").await, 4);

    // Removing whole runs leaves no empty one behind.
    store
        .remove_links(pair, &(1..=10).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(store.links(pair).await.unwrap().is_empty());
    assert_eq!(b.rows("link_runs").await, 0);
    store.close().await;
}

async fn a_linked_uid_added_again_replaces_its_link(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    store
        .add_links(pair, &links_of(1..=5, 100, ""))
        .await
        .unwrap();
    // OLD 3 is copied again (its NEW copy was lost): the new NEW UID replaces the old one.
    store.add_links(pair, &[link(3, 900, "")]).await.unwrap();
    let mut want = links_of(1..=5, 100, "");
    want[2] = link(3, 900, "");
    assert_eq!(store.links(pair).await.unwrap(), want);
    assert_eq!(b.rows("link_runs").await, 3);
    // The same append twice changes nothing; the first NEW UID back makes one run again.
    store.add_links(pair, &[link(3, 900, "")]).await.unwrap();
    assert_eq!(store.links(pair).await.unwrap(), want);
    store.add_links(pair, &[link(3, 103, "")]).await.unwrap();
    assert_eq!(store.links(pair).await.unwrap(), links_of(1..=5, 100, ""));
    assert_eq!(b.rows("link_runs").await, 1);
    // The last link added again with the next NEW UID (not an extension of its own run).
    store.add_links(pair, &[link(5, 106, "")]).await.unwrap();
    let mut want = links_of(1..=4, 100, "");
    want.push(link(5, 106, ""));
    assert_eq!(store.links(pair).await.unwrap(), want);
    store.close().await;
}

async fn out_of_order_adds_join_into_runs(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    for uid in [5, 3, 9, 4, 1, 2, 8, 6, 7] {
        store
            .add_links(pair, &[link(uid, uid + 50, "")])
            .await
            .unwrap();
    }
    assert_eq!(store.links(pair).await.unwrap(), links_of(1..=9, 50, ""));
    assert_eq!(b.rows("link_runs").await, 1);
    // Descending NEW UIDs (a folder copied backwards) are runs of one.
    let account = store.account(&key("alice")).await.unwrap();
    let other = store.folder_pair(account, "Old", "Old").await.unwrap().id;
    let backwards: Vec<Link> = (1..=20).map(|uid| link(uid, 100 - uid, "")).collect();
    store.add_links(other, &backwards).await.unwrap();
    assert_eq!(store.links(other).await.unwrap(), backwards);
    assert_eq!(b.rows("link_runs").await, 21);
    store.close().await;
}

/// An identity key is kept per message (in `links`); the same OLD UID linked without one goes
/// back into a run.
async fn a_link_with_an_identity_key_is_kept_per_message(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    store
        .add_links(pair, &links_of(1..=5, 10, ""))
        .await
        .unwrap();
    store
        .add_links(pair, &[keyed(3, 13, "", "key3")])
        .await
        .unwrap();
    // The next append after a keyed link, in the engine's way.
    store
        .add_links(pair, &[keyed(6, 16, "", "key6")])
        .await
        .unwrap();
    store.add_links(pair, &[link(7, 17, "")]).await.unwrap();
    let mut want = links_of(1..=7, 10, "");
    want[2] = keyed(3, 13, "", "key3");
    want[5] = keyed(6, 16, "", "key6");
    assert_eq!(store.links(pair).await.unwrap(), want);
    assert_eq!((b.rows("link_runs").await, b.rows("links").await), (3, 2));

    // Flags of a keyed link change in place.
    store
        .update_link_flags(
            pair,
            &[LinkFlags {
                old_uid: 3,
                old_flags: "\\Seen".into(),
                new_flags: "\\Seen".into(),
            }],
        )
        .await
        .unwrap();
    want[2] = keyed(3, 13, "\\Seen", "key3");
    assert_eq!(store.links(pair).await.unwrap(), want);

    // Linked again without a key: back into the run.
    store.add_links(pair, &[link(3, 13, "")]).await.unwrap();
    want[2] = link(3, 13, "");
    assert_eq!(store.links(pair).await.unwrap(), want);
    assert_eq!((b.rows("link_runs").await, b.rows("links").await), (2, 1));
    // A keyed link over a run's link, then tombstoned and removed.
    store
        .add_links(pair, &[keyed(4, 14, "", "key4")])
        .await
        .unwrap();
    store.tombstone(pair, &[6]).await.unwrap();
    store.remove_links(pair, &[4]).await.unwrap();
    let olds: Vec<(u32, Option<String>)> = store
        .links(pair)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.old_uid, l.ident))
        .collect();
    assert_eq!(
        olds,
        vec![(1, None), (2, None), (3, None), (5, None), (7, None)]
    );
    assert_eq!(b.rows("links").await, 0);
    assert_eq!(store.tombstones(pair).await.unwrap(), vec![6]);
    store.close().await;
}

async fn summaries_count_the_links_of_runs(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let account = store.account(&key("alice")).await.unwrap();
    let sent = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    store
        .add_links(pair, &links_of(1..=1000, 0, ""))
        .await
        .unwrap();
    store
        .add_links(pair, &[keyed(1001, 1001, "", "k"), link(2000, 5, "\\Seen")])
        .await
        .unwrap();
    store
        .add_links(sent, &links_of(1..=30, 3, "\\Seen"))
        .await
        .unwrap();
    store.tombstone(pair, &[500, 501]).await.unwrap();
    store
        .update_link_flags(
            pair,
            &[LinkFlags {
                old_uid: 10,
                old_flags: "x".into(),
                new_flags: "y".into(),
            }],
        )
        .await
        .unwrap();
    let summary = store
        .account_summaries()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == account)
        .unwrap();
    assert_eq!((summary.linked, summary.tombstones), (1000 + 30, 2));
    let folders: Vec<(String, u64, u64)> = store
        .folder_summaries(account)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.pair.old_name, f.linked, f.tombstones))
        .collect();
    assert_eq!(
        folders,
        vec![("INBOX".into(), 1000, 2), ("Sent".into(), 30, 0)]
    );
    store.close().await;
}

/// One write to the links of a pair, for the model test.
#[derive(Clone, Debug)]
enum Op {
    /// The engine's APPEND: the OLD UID after the highest linked one, the NEW UID after the
    /// highest one, `flags`.
    Append(bool),
    Add(Vec<Link>),
    Flags(Vec<LinkFlags>),
    Remove(Vec<u32>),
    Tombstone(Vec<u32>),
}

fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let uid = 1u32..40;
    let flags = prop_oneof![Just(String::new()), Just("\\Seen".to_string())];
    let one_link = (
        uid.clone(),
        1u32..60,
        flags.clone(),
        flags.clone(),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(old_uid, new_uid, old_flags, new_flags, keyed)| Link {
            old_uid,
            new_uid,
            old_flags,
            new_flags,
            ident: keyed.then(|| format!("key{old_uid}")),
        });
    let update =
        (uid.clone(), flags.clone(), flags).prop_map(|(old_uid, old_flags, new_flags)| LinkFlags {
            old_uid,
            old_flags,
            new_flags,
        });
    // A run of links, as a pass commits a batch.
    let batch = (uid.clone(), 1u32..60, 1u32..12).prop_map(|(old, new, len)| {
        (0..len)
            .map(|i| link(old + i, new + i, ""))
            .collect::<Vec<_>>()
    });
    prop_oneof![
        4 => proptest::bool::weighted(0.8).prop_map(Op::Append),
        2 => proptest::collection::vec(one_link, 1..4).prop_map(Op::Add),
        1 => batch.prop_map(Op::Add),
        2 => proptest::collection::vec(update, 1..6).prop_map(Op::Flags),
        1 => proptest::collection::vec(uid.clone(), 1..6).prop_map(Op::Remove),
        1 => proptest::collection::vec(uid, 1..4).prop_map(Op::Tombstone),
    ]
}

/// Random sequences of writes give the links and tombstones of a plain map of OLD UIDs.
async fn links_behave_as_a_map_of_old_uids(b: Backend) {
    use proptest::strategy::{Strategy, ValueTree};
    use std::collections::{BTreeMap, BTreeSet};

    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cases = proptest::collection::vec(op_strategy(), 1..40);
    for case in 0..40 {
        let ops = cases.new_tree(&mut runner).unwrap().current();
        let pair = store
            .folder_pair(account, &format!("F{case}"), &format!("F{case}"))
            .await
            .unwrap()
            .id;
        let mut model: BTreeMap<u32, Link> = BTreeMap::new();
        let mut tombstones: BTreeSet<u32> = BTreeSet::new();
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Append(same_flags) => {
                    let old_uid = model.keys().max().map_or(1, |u| u + 1);
                    let new_uid = model.values().map(|l| l.new_uid).max().map_or(1, |u| u + 1);
                    let flags = if *same_flags { "" } else { "\\Seen" };
                    let l = link(old_uid, new_uid, flags);
                    store
                        .add_links(pair, std::slice::from_ref(&l))
                        .await
                        .unwrap();
                    tombstones.remove(&old_uid);
                    model.insert(old_uid, l);
                }
                Op::Add(links) => {
                    store.add_links(pair, links).await.unwrap();
                    for l in links {
                        tombstones.remove(&l.old_uid);
                        model.insert(l.old_uid, l.clone());
                    }
                }
                Op::Flags(updates) => {
                    store.update_link_flags(pair, updates).await.unwrap();
                    for u in updates {
                        if let Some(l) = model.get_mut(&u.old_uid) {
                            l.old_flags = u.old_flags.clone();
                            l.new_flags = u.new_flags.clone();
                        }
                    }
                }
                Op::Remove(uids) => {
                    store.remove_links(pair, uids).await.unwrap();
                    for u in uids {
                        model.remove(u);
                    }
                }
                Op::Tombstone(uids) => {
                    store.tombstone(pair, uids).await.unwrap();
                    for u in uids {
                        model.remove(u);
                        tombstones.insert(*u);
                    }
                }
            }
            let want: Vec<Link> = model.values().cloned().collect();
            assert_eq!(
                store.links(pair).await.unwrap(),
                want,
                "case {case}, after step {step} of {ops:#?}"
            );
        }
        assert_eq!(
            store.tombstones(pair).await.unwrap(),
            tombstones.into_iter().collect::<Vec<_>>(),
            "case {case}: {ops:#?}"
        );
    }
    store.close().await;
}

/// A store written by schema version 7 (one row per link) is converted on open: the same links,
/// now as runs, with the keyed ones kept per message; opening it again changes nothing.
async fn per_message_links_convert_to_runs_on_open(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let account = store.account(&key("alice")).await.unwrap();
    let sent = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    store.tombstone(pair, &[4]).await.unwrap();
    store.close().await;
    // Back to version 7: migration 8 only adds `link_runs` (and converts), 9 a column, 10, 11
    // and 13 a table each, 12 an index of `link_runs`, so without them and their rows the
    // database is what version 7 wrote (a later migration must be undone here too). Then links
    // as version 7 stored them.
    let mut want = links_of(1..=3, 10, "\\Seen");
    want.extend(links_of(5..=300, 10, "\\Seen"));
    want[100] = link(102, 112, "");
    want[150] = keyed(152, 162, "\\Seen", "key152");
    want.extend(links_of(301..=310, 500, "\\Seen"));
    want.push(link(u32::MAX, u32::MAX, ""));
    let want_sent: Vec<Link> = (1..=50).map(|uid| link(uid, 200 - uid, "")).collect();
    let mut sql = "DROP TABLE link_runs; ALTER TABLE folder_pairs DROP COLUMN retired_tombstones; \
                   DROP TABLE folder_sizes; DROP TABLE uid_maps; DROP TABLE append_keys; \
                   DROP TABLE pair_epochs; DELETE FROM schema_version WHERE version >= 8;"
        .to_owned();
    for (p, links) in [(pair, &want), (sent, &want_sent)] {
        for l in links.iter() {
            sql.push_str(&format!(
                "INSERT INTO links (pair_id, old_uid, new_uid, old_flags, new_flags, ident) \
                 VALUES ({p}, {}, {}, '{}', '{}', {});",
                l.old_uid,
                l.new_uid,
                l.old_flags,
                l.new_flags,
                l.ident
                    .as_ref()
                    .map_or("NULL".to_owned(), |k| format!("'{k}'"))
            ));
        }
    }
    b.execute(&sql).await;

    let store = b.open().await;
    assert_eq!(store.links(pair).await.unwrap(), want);
    assert_eq!(store.links(sent).await.unwrap(), want_sent);
    assert_eq!(store.tombstones(pair).await.unwrap(), vec![4]);
    // INBOX: 1-3, 5-101, 102, 103-151, 153-300, 301-310, u32::MAX; 152 keyed. Sent: 50 runs of one.
    assert_eq!(
        (b.rows("link_runs").await, b.rows("links").await),
        (7 + 50, 1)
    );
    let summary = &store.folder_summaries(account).await.unwrap();
    assert_eq!(
        summary.iter().map(|f| f.linked).collect::<Vec<_>>(),
        vec![want.len() as u64, 50]
    );
    // The converted state carries on: the next append extends the last run.
    store
        .add_links(pair, &[link(311, 811, "\\Seen")])
        .await
        .unwrap();
    assert_eq!(b.rows("link_runs").await, 57);
    store.close().await;
    let store = b.open().await;
    want.insert(want.len() - 1, link(311, 811, "\\Seen"));
    assert_eq!(store.links(pair).await.unwrap(), want);
    store.close().await;
}

/// A folder showing OLD's numbers through a UID map: NEW 1..=3 shown from `first` (below 18)
/// on, NEW 5..=6 as 20..=21, NEW UIDs from 8 on from 100.
fn uid_map(uidvalidity: u32, first: u32) -> Shown {
    let links = [(1, first), (2, first + 1), (3, first + 2), (5, 20), (6, 21)];
    Shown::Old(UidMap::new(uidvalidity, 5, 1 << 40, &runs_of(links).unwrap(), (8, 100)).unwrap())
}

/// The first map frozen for a pair is the pair's: a later freeze (another proxy's, built from
/// other links) gets it back, and it survives a reopen. Concurrent freezes all get one map.
async fn the_first_uid_map_frozen_stays(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    let (first, second) = (uid_map(777, 10), uid_map(888, 11));
    assert_ne!(first, second);
    assert_eq!(store.uid_map(pair).await.unwrap(), None);
    assert_eq!(store.freeze_uid_map(pair, &first).await.unwrap(), first);
    assert_eq!(store.uid_map(pair).await.unwrap(), Some(first.clone()));
    assert_eq!(store.freeze_uid_map(pair, &second).await.unwrap(), first);
    assert_eq!(store.uid_map(pair).await.unwrap(), Some(first.clone()));
    // A map without runs below its tail, and the largest numbers a column holds.
    let account = store.account(&key("alice")).await.unwrap();
    let sent = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    let bare =
        Shown::Old(UidMap::new(u32::MAX, u32::MAX, (1 << 63) - 1, &[], (u32::MAX, 1)).unwrap());
    assert_eq!(store.freeze_uid_map(sent, &bare).await.unwrap(), bare);
    // A 64-bit MODSEQ offset has no column, and a missing pair no map.
    let wide = Shown::Old(UidMap::new(1, 1, 1 << 63, &[], (1, 1)).unwrap());
    assert!(matches!(
        store.freeze_uid_map(pair, &wide).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.freeze_uid_map(9999, &first).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(store.uid_map(9999).await.unwrap(), None);
    store.close().await;

    let store = b.open().await;
    assert_eq!(store.uid_map(pair).await.unwrap(), Some(first.clone()));
    assert_eq!(store.uid_map(sent).await.unwrap(), Some(bare));
    // Proxies freezing a new folder's map at the same moment: one map wins, for all of them.
    let drafts = store
        .folder_pair(account, "Drafts", "Drafts")
        .await
        .unwrap()
        .id;
    let freezes: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let map = uid_map(i, 10);
            tokio::spawn(async move { store.freeze_uid_map(drafts, &map).await })
        })
        .collect();
    let mut got = Vec::new();
    for freeze in freezes {
        got.push(freeze.await.unwrap().unwrap());
    }
    let stored = store.uid_map(drafts).await.unwrap().unwrap();
    assert!(got.iter().all(|m| *m == stored), "{got:?}");
    assert_eq!(b.rows("uid_maps").await, 3);
    // A folder decided to show NEW's numbers shows them for good: its clients cache those.
    let junk = store.folder_pair(account, "Junk", "Junk").await.unwrap().id;
    assert_eq!(
        store.freeze_uid_map(junk, &Shown::New).await.unwrap(),
        Shown::New
    );
    assert_eq!(
        store.freeze_uid_map(junk, &uid_map(1, 10)).await.unwrap(),
        Shown::New
    );
    store.close().await;
    let store = b.open().await;
    assert_eq!(store.uid_map(junk).await.unwrap(), Some(Shown::New));
    let listed = store.uid_maps(account).await.unwrap();
    assert!(
        listed.contains(&("Junk".to_owned(), Shown::New)),
        "{listed:?}"
    );
    store.close().await;
}

/// An account's maps come with their pairs' NEW names, and only that account's.
async fn uid_maps_are_the_accounts_by_new_name(b: Backend) {
    let store = b.open().await;
    let alice = store.account(&key("alice")).await.unwrap();
    let bob = store.account(&key("bob")).await.unwrap();
    let work = store
        .folder_pair(alice, "Work", "INBOX.Work")
        .await
        .unwrap();
    let inbox = store.folder_pair(alice, "INBOX", "INBOX").await.unwrap();
    // A pair without a map is not listed.
    store
        .folder_pair(alice, "Sent", "INBOX.Sent")
        .await
        .unwrap();
    let bobs = store.folder_pair(bob, "INBOX", "INBOX").await.unwrap();
    store
        .freeze_uid_map(work.id, &uid_map(1, 10))
        .await
        .unwrap();
    store
        .freeze_uid_map(inbox.id, &uid_map(2, 10))
        .await
        .unwrap();
    store
        .freeze_uid_map(bobs.id, &uid_map(3, 10))
        .await
        .unwrap();

    assert_eq!(
        store.uid_maps(alice).await.unwrap(),
        vec![
            ("INBOX".to_owned(), uid_map(2, 10)),
            ("INBOX.Work".to_owned(), uid_map(1, 10)),
        ]
    );
    assert_eq!(
        store.uid_maps(bob).await.unwrap(),
        vec![("INBOX".to_owned(), uid_map(3, 10))]
    );
    // The NEW name is the pair's as it is now.
    store
        .folder_pair(alice, "Work", "INBOX.Projects")
        .await
        .unwrap();
    let names: Vec<String> = store
        .uid_maps(alice)
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, vec!["INBOX", "INBOX.Projects"]);
    assert!(store.uid_maps(bob + 1000).await.unwrap().is_empty());
}

/// A folder whose UIDVALIDITY changed (reset) or that is gone (deleted) loses its map with its
/// links, and a new map can be frozen for it; the account's other folders keep theirs.
async fn a_reset_or_removed_folder_loses_its_uid_map(b: Backend) {
    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let inbox = store
        .folder_pair(account, "INBOX", "INBOX")
        .await
        .unwrap()
        .id;
    let trash = store
        .folder_pair(account, "Trash", "Trash")
        .await
        .unwrap()
        .id;
    let sent = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    for (i, p) in [inbox, trash, sent].into_iter().enumerate() {
        store.add_links(p, &[link(1, 1, "")]).await.unwrap();
        store
            .freeze_uid_map(p, &uid_map(i as u32, 10))
            .await
            .unwrap();
    }
    assert_eq!(b.rows("uid_maps").await, 3);

    store.reset_pair(inbox).await.unwrap();
    assert_eq!(store.uid_map(inbox).await.unwrap(), None);
    assert_eq!(b.rows("uid_maps").await, 2);
    let fresh = uid_map(50, 12);
    assert_eq!(store.freeze_uid_map(inbox, &fresh).await.unwrap(), fresh);

    store.delete_pair(trash).await.unwrap();
    assert_eq!(store.uid_map(trash).await.unwrap(), None);
    assert_eq!(b.rows("uid_maps").await, 2);
    let again = store
        .folder_pair(account, "Trash", "Trash")
        .await
        .unwrap()
        .id;
    assert_eq!(store.uid_map(again).await.unwrap(), None);

    assert_eq!(store.uid_map(sent).await.unwrap(), Some(uid_map(2, 10)));
    assert_eq!(
        store.uid_maps(account).await.unwrap(),
        vec![
            ("INBOX".to_owned(), fresh),
            ("Sent".to_owned(), uid_map(2, 10))
        ]
    );
}

/// A renamed folder keeps its map (the same pair, and clients keep their caches), shown under
/// its new NEW name; a retired account keeps its maps (they are small).
async fn a_renamed_folder_and_a_retired_account_keep_their_uid_maps(b: Backend) {
    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let work = store.folder_pair(account, "Work", "Work").await.unwrap().id;
    let inbox = store
        .folder_pair(account, "INBOX", "INBOX")
        .await
        .unwrap()
        .id;
    store
        .add_links(work, &links_of(1..=20, 0, ""))
        .await
        .unwrap();
    store.tombstone(work, &[21]).await.unwrap();
    store.freeze_uid_map(work, &uid_map(1, 10)).await.unwrap();
    store.freeze_uid_map(inbox, &uid_map(2, 10)).await.unwrap();

    store
        .rename_pair(work, "Projects", "INBOX.Projects")
        .await
        .unwrap();
    assert_eq!(store.uid_map(work).await.unwrap(), Some(uid_map(1, 10)));
    assert_eq!(
        store.uid_maps(account).await.unwrap(),
        vec![
            ("INBOX".to_owned(), uid_map(2, 10)),
            ("INBOX.Projects".to_owned(), uid_map(1, 10)),
        ]
    );

    store
        .set_account_state(account, AccountState::Synced, None)
        .await
        .unwrap();
    assert!(store.retire(account, None).await.unwrap());
    // The retire did shrink the account (its tombstones went), and kept both maps.
    assert_eq!(b.rows("tombstones").await, 0);
    assert_eq!(store.uid_map(work).await.unwrap(), Some(uid_map(1, 10)));
    assert_eq!(store.uid_map(inbox).await.unwrap(), Some(uid_map(2, 10)));
    assert_eq!(store.uid_maps(account).await.unwrap().len(), 2);
    assert_eq!(b.rows("uid_maps").await, 2);
}

/// A store of schema version 10 (before UID maps) gains the table on open, its state intact.
async fn a_version_10_store_gains_uid_maps_on_open(b: Backend) {
    let store = b.open().await;
    let pair = pair(&*store).await;
    store
        .add_links(pair, &links_of(1..=5, 0, "\\Seen"))
        .await
        .unwrap();
    store.close().await;
    // Back to version 10: migration 11 added `uid_maps`, 12 an index, 13 `append_keys`, 14
    // `pair_epochs` (a later migration must be undone here too).
    b.execute(
        "DROP TABLE uid_maps; DROP INDEX link_runs_by_new; DROP TABLE append_keys; \
         DROP TABLE pair_epochs; DELETE FROM schema_version WHERE version >= 11;",
    )
    .await;
    assert_eq!(b.rows("schema_version WHERE version = 11").await, 0);

    let store = b.open().await;
    assert_eq!(b.rows("schema_version WHERE version = 11").await, 1);
    assert_eq!(
        store.links(pair).await.unwrap(),
        links_of(1..=5, 0, "\\Seen")
    );
    assert_eq!(store.uid_map(pair).await.unwrap(), None);
    let map = uid_map(777, 10);
    assert_eq!(store.freeze_uid_map(pair, &map).await.unwrap(), map);
    store.close().await;
    let store = b.open().await;
    assert_eq!(store.uid_map(pair).await.unwrap(), Some(map));
    store.close().await;
}

/// OLD's HIGHESTMODSEQ going past a map's offset raises it; a lower value, a folder showing
/// NEW's numbers and a pair without a decision change nothing.
async fn a_maps_modseq_offset_only_goes_up(b: Backend) {
    let store = b.open().await;
    let account = store.account(&key("alice")).await.unwrap();
    let inbox = store
        .folder_pair(account, "INBOX", "INBOX")
        .await
        .unwrap()
        .id;
    let junk = store.folder_pair(account, "Junk", "Junk").await.unwrap().id;
    let open = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
    store
        .freeze_uid_map(inbox, &uid_map(777, 10))
        .await
        .unwrap();
    store.freeze_uid_map(junk, &Shown::New).await.unwrap();
    let offset = |shown: Option<Shown>| match shown {
        Some(Shown::Old(map)) => map.modseq_offset(),
        other => panic!("{other:?}"),
    };
    assert_eq!(offset(store.uid_map(inbox).await.unwrap()), 1 << 40);
    store.raise_modseq_offset(inbox, 5).await.unwrap();
    assert_eq!(offset(store.uid_map(inbox).await.unwrap()), 1 << 40);
    store
        .raise_modseq_offset(inbox, (1 << 40) + 7)
        .await
        .unwrap();
    assert_eq!(offset(store.uid_map(inbox).await.unwrap()), (1 << 40) + 7);
    store.raise_modseq_offset(junk, 99).await.unwrap();
    assert_eq!(store.uid_map(junk).await.unwrap(), Some(Shown::New));
    store.raise_modseq_offset(open, 99).await.unwrap();
    assert_eq!(store.uid_map(open).await.unwrap(), None);
    // The rest of the map is as it was.
    let Some(Shown::Old(raised)) = store.uid_map(inbox).await.unwrap() else {
        unreachable!()
    };
    let Shown::Old(first) = uid_map(777, 10) else {
        unreachable!()
    };
    assert_eq!((raised.runs(), raised.tail()), (first.runs(), first.tail()));
    store.close().await;
}
