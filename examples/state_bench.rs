//! State store figures (issue 13, item 6): what the links of an account cost, as runs and as the
//! per-message rows of schema version 7, on SQLite and on PostgreSQL, at the store level (no IMAP).
//!
//! The synthetic account has six folders (INBOX 40 %, Archive 25 %, Sent 15 %, Lists 10 %, Trash
//! 5 %, Drafts 5 %), each copied in ascending OLD-UID order to ascending NEW UIDs, with one of two
//! flag profiles: `uniform` (every message `\Seen`) and `mixed` (examples/bench.rs's: 70 % `\Seen`,
//! 5 % each `\Flagged`, `\Answered`, `$Label1`, drawn per message, so runs break often).
//!
//! 1. Bytes per message beyond a fixed per-account overhead: the account is recorded with 2,000
//!    and with 10,000 messages; (size(10,000) - size(2,000)) / 8,000. Size is the SQLite file after
//!    a WAL checkpoint and VACUUM, or the sum of `pg_total_relation_size` of the tables after
//!    VACUUM FULL. "per-message" is the same links written back as one row each in `links` with
//!    `link_runs` dropped: exactly the layout of schema version 7. "runs, no base" is the runs
//!    once `forget_link_bases` ran, as a pass that records both sides' HIGHESTMODSEQ leaves them.
//!    "2 % deleted" is that with every 50th message deleted by the user on NEW (a tombstone each,
//!    and a run broken), and "retired" the same account after `retire` (the tombstones go; the
//!    runs, broken where the deleted messages were, stay as the UID map).
//! 2. A synthetic account of `--messages` (default 1,000,000) messages, mixed flags: the time to
//!    record its links one `add_links` per message as the engine commits APPENDs (the first
//!    `--single` messages, default all), and in batches of 500; then the store work of a
//!    no-change pass (`folder_pairs`, then `links` and `tombstones` of each pair); then the time
//!    to forget the base flags, the same reads again, and the state's size after that.
//! 3. The per-message cost of PostgreSQL against SQLite for a full copy's store work: the ratio of
//!    the per-message times of 2.'s one-by-one recording.
//!
//! Run on tmpfs (SQLite's fsyncs and PostgreSQL's data directory under TMPDIR):
//!   TMPDIR=/dev/shm cargo run --release --example state_bench -- [--messages N] [--single N]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Postgres;
use common::seed::Rng;
use imapferry::secret::Secret;
use imapferry::store::{self, AccountId, AccountKey, Link, Location, PairId, Store};

const FOLDERS: [(&str, usize); 6] = [
    ("INBOX", 40),
    ("Archive", 25),
    ("Sent", 15),
    ("Lists", 10),
    ("Trash", 5),
    ("Drafts", 5),
];
const BATCH: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Profile {
    Uniform,
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Runs,
    /// Runs after a pass that recorded both sides' HIGHESTMODSEQ forgot their base flags.
    NoBase,
    PerMessage,
    /// NoBase, and every 50th message deleted by the user on NEW (a tombstone each).
    Deleted,
    /// Deleted, then `imapferry retire`: the summary a retired account keeps.
    Retired,
}

enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Postgres),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    fn file(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("state.db")
    }

    async fn open(&self) -> Arc<dyn Store> {
        let location = match self {
            Backend::Sqlite(dir) => Location::File(Self::file(dir)),
            Backend::Postgres(pg) => {
                Location::parse(&pg.url(), Some(Secret::new(common::postgres::PASSWORD))).unwrap()
            }
        };
        store::open(&location).await.unwrap()
    }

    async fn execute(&self, sql: &str) {
        match self {
            Backend::Sqlite(dir) => {
                let db = rusqlite::Connection::open(Self::file(dir)).unwrap();
                db.execute_batch(sql).unwrap();
            }
            Backend::Postgres(pg) => {
                pg.psql(sql);
            }
        }
    }

    /// The state's size on disk once compacted (see the header).
    async fn size(&self) -> u64 {
        match self {
            Backend::Sqlite(dir) => {
                self.execute("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
                    .await;
                std::fs::metadata(Self::file(dir)).unwrap().len()
            }
            Backend::Postgres(pg) => {
                pg.psql("VACUUM FULL");
                pg.psql(
                    "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'public' AND c.relkind = 'r'",
                )
                .parse()
                .unwrap()
            }
        }
    }
}

fn backends() -> [fn() -> Backend; 2] {
    [
        || Backend::Sqlite(tempfile::tempdir().unwrap()),
        || Backend::Postgres(Postgres::start()),
    ]
}

fn key() -> AccountKey {
    AccountKey {
        old_host: "old.example".into(),
        old_user: "alice".into(),
        new_host: "new.example".into(),
        new_user: "alice".into(),
    }
}

/// Each folder's links, OLD UIDs 1.. to NEW UIDs 1.., flags by `profile`.
fn folders(messages: usize, profile: Profile) -> Vec<(&'static str, Vec<Link>)> {
    let mut rng = Rng::new(0x000B_E7C4);
    let mut flags = || -> String {
        if profile == Profile::Uniform {
            return "\\Seen".into();
        }
        let mut f = Vec::new();
        if rng.chance(0.05) {
            f.push("$Label1");
        }
        if rng.chance(0.05) {
            f.push("\\Answered");
        }
        if rng.chance(0.05) {
            f.push("\\Flagged");
        }
        if rng.chance(0.7) {
            f.push("\\Seen");
        }
        f.join(" ")
    };
    let shares: usize = FOLDERS[1..].iter().map(|(_, s)| messages * s / 100).sum();
    FOLDERS
        .iter()
        .enumerate()
        .map(|(i, (name, share))| {
            let count = if i == 0 {
                messages - shares
            } else {
                messages * share / 100
            };
            let links = (1..=count as u32)
                .map(|uid| {
                    let f = flags();
                    Link {
                        old_uid: uid,
                        new_uid: uid,
                        old_flags: f.clone(),
                        new_flags: f,
                        ident: None,
                    }
                })
                .collect();
            (*name, links)
        })
        .collect()
}

/// Records the account's links: one `add_links` per message for the first `single` of each
/// folder's share, the rest in batches. Returns the time and the pairs.
async fn record(
    store: &dyn Store,
    account: AccountId,
    folders: &[(&'static str, Vec<Link>)],
    single: usize,
    total: usize,
) -> (Duration, Duration, Vec<PairId>) {
    let mut pairs = Vec::new();
    let (mut one_by_one, mut batched) = (Duration::ZERO, Duration::ZERO);
    for (name, links) in folders {
        let pair = store.folder_pair(account, name, name).await.unwrap().id;
        pairs.push(pair);
        let singles = (links.len() as u128 * single as u128 / total.max(1) as u128) as usize;
        let started = Instant::now();
        for link in &links[..singles] {
            store
                .add_links(pair, std::slice::from_ref(link))
                .await
                .unwrap();
        }
        one_by_one += started.elapsed();
        let started = Instant::now();
        for chunk in links[singles..].chunks(BATCH) {
            store.add_links(pair, chunk).await.unwrap();
        }
        batched += started.elapsed();
    }
    (one_by_one, batched, pairs)
}

/// Schema version 7's layout: every run written back as one row per link, `link_runs` gone.
const PER_MESSAGE: &str = "WITH RECURSIVE expanded (pair_id, old_uid, new_uid, old_flags, new_flags, rest) AS (\
         SELECT pair_id, old_start, new_start, old_flags, new_flags, length - 1 FROM link_runs \
         UNION ALL SELECT pair_id, old_uid + 1, new_uid + 1, old_flags, new_flags, rest - 1 \
         FROM expanded WHERE rest > 0) \
     INSERT INTO links (pair_id, old_uid, new_uid, old_flags, new_flags, ident) \
     SELECT pair_id, old_uid, new_uid, old_flags, new_flags, NULL FROM expanded; \
     DROP TABLE link_runs;";

/// The compacted size of the state of an account of `messages` messages.
async fn state_size(
    new: fn() -> Backend,
    messages: usize,
    profile: Profile,
    layout: Layout,
) -> u64 {
    let backend = new();
    let store = backend.open().await;
    let account = store.account(&key()).await.unwrap();
    let (_, _, pairs) = record(&*store, account, &folders(messages, profile), 0, messages).await;
    if layout != Layout::Runs && layout != Layout::PerMessage {
        for &pair in &pairs {
            store.forget_link_bases(pair).await.unwrap();
        }
    }
    if matches!(layout, Layout::Deleted | Layout::Retired) {
        for &pair in &pairs {
            let linked = store.links(pair).await.unwrap();
            let gone: Vec<u32> = linked
                .iter()
                .map(|l| l.old_uid)
                .filter(|u| u % 50 == 0)
                .collect();
            store.tombstone(pair, &gone).await.unwrap();
        }
    }
    if layout == Layout::Retired {
        store
            .set_account_state(account, store::AccountState::Synced, None)
            .await
            .unwrap();
        assert!(store.retire(account, None).await.unwrap());
    }
    store.close().await;
    if layout == Layout::PerMessage {
        backend.execute(PER_MESSAGE).await;
    }
    backend.size().await
}

fn per_msg(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

#[tokio::main]
async fn main() {
    let mut messages = 1_000_000usize;
    let mut single: Option<usize> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--messages" => messages = value().max(FOLDERS.len()),
            "--single" => single = Some(value()),
            other => panic!("unknown argument {other} (--messages N, --single N)"),
        }
    }
    let single = single.unwrap_or(messages).min(messages);

    println!(
        "1. state bytes per message beyond the per-account overhead, (size(10,000) - size(2,000)) / 8,000"
    );
    println!(
        "{:<11} {:<8} {:<14} {:>12} {:>12} {:>10}",
        "backend", "flags", "layout", "2,000 msgs", "10,000 msgs", "bytes/msg"
    );
    for new in backends() {
        for profile in [Profile::Uniform, Profile::Mixed] {
            for layout in [
                Layout::PerMessage,
                Layout::Runs,
                Layout::NoBase,
                Layout::Deleted,
                Layout::Retired,
            ] {
                let small = state_size(new, 2_000, profile, layout).await;
                let big = state_size(new, 10_000, profile, layout).await;
                println!(
                    "{:<11} {:<8} {:<14} {:>12} {:>12} {:>10.1}",
                    new().name(),
                    format!("{profile:?}").to_lowercase(),
                    match layout {
                        Layout::Runs => "runs",
                        Layout::NoBase => "runs, no base",
                        Layout::PerMessage => "per-message",
                        Layout::Deleted => "2 % deleted",
                        Layout::Retired => "retired",
                    },
                    small,
                    big,
                    (big as f64 - small as f64) / 8_000.0
                );
            }
        }
    }

    println!(
        "\n2. a synthetic {messages}-message account, mixed flags: {single} links recorded one add_links each, \
         the rest in batches of {BATCH}; then a no-change pass's reads"
    );
    let folders = folders(messages, Profile::Mixed);
    let mut per_message = Vec::new();
    for new in backends() {
        let backend = new();
        let store = backend.open().await;
        let account = store.account(&key()).await.unwrap();
        let (one_by_one, batched, pairs) =
            record(&*store, account, &folders, single, messages).await;
        let started = Instant::now();
        let mut read = 0usize;
        for pair in store.folder_pairs(account).await.unwrap() {
            read += store.links(pair.id).await.unwrap().len();
            read += store.tombstones(pair.id).await.unwrap().len();
        }
        let pass = started.elapsed();
        assert_eq!(read, messages);
        assert_eq!(pairs.len(), FOLDERS.len());
        // What a pass that records both sides' HIGHESTMODSEQ does, and the reads after it.
        let started = Instant::now();
        for &pair in &pairs {
            store.forget_link_bases(pair).await.unwrap();
        }
        let forget = started.elapsed();
        let started = Instant::now();
        for &pair in &pairs {
            read -= store.links(pair).await.unwrap().len();
        }
        let pass_no_base = started.elapsed();
        assert_eq!(read, 0);
        let size = {
            store.close().await;
            backend.size().await
        };
        println!(
            "{:<11} one by one: {:>8.1} s ({:>6.1} µs/msg)   batches: {:>6.2} s ({:>5.2} µs/msg)   \
             no-change pass reads: {:>6.3} s   bases forgotten in {:>6.3} s, then reads: {:>6.3} s   \
             state: {:.1} MB",
            backend.name(),
            one_by_one.as_secs_f64(),
            per_msg(one_by_one, single),
            batched.as_secs_f64(),
            per_msg(batched, messages - single),
            pass.as_secs_f64(),
            forget.as_secs_f64(),
            pass_no_base.as_secs_f64(),
            size as f64 / 1e6
        );
        per_message.push(per_msg(one_by_one, single));
    }
    println!(
        "\n3. a full copy's store work, PostgreSQL against SQLite (one add_links per message): {:.2}×",
        per_message[1] / per_message[0]
    );
}
