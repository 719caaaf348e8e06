//! The migration proxy's store operations one at a time (issue 14, item 1): what the mirror asks
//! of a SQLite file store for each write it mirrors, timed alone, without IMAP. Each operation
//! runs `--ops` times (default 4,000) on a fresh store under TMPDIR:
//! - `add keyed`: one link with an identity key (a mirrored APPEND or COPY);
//! - `flags`: one link's base flags changed (a mirrored STORE);
//! - `remove`: one link dropped (a mirrored EXPUNGE);
//! - `add plain`: two links without a key, in one call (a copy's batch).
//!
//! Printed per operation: wall time and this process's CPU (user + system, SQLite's connection
//! threads included), in µs. Most of it is handing each statement to the connection's thread and
//! back; compare builds by running each on the same machine, one after the other.
//!
//! Usage: TMPDIR=/dev/shm cargo run --release --example link_ops_bench -- [--ops N]

use std::time::Instant;

use imapferry::store::{AccountKey, Link, LinkFlags, PairId, SqliteStore, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ops: u32 = match args.iter().position(|a| a == "--ops") {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(4000),
        None => 4000,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let key = AccountKey {
        old_host: "old.example".into(),
        old_user: "alice".into(),
        new_host: "new.example".into(),
        new_user: "alice".into(),
    };
    let account = store.account(&key).await.unwrap();
    let inbox = store
        .folder_pair(account, "INBOX", "INBOX")
        .await
        .unwrap()
        .id;
    let work = store.folder_pair(account, "Work", "Work").await.unwrap().id;
    let link = |uid: u32, flags: &str, ident: Option<String>| Link {
        old_uid: uid,
        new_uid: uid + 10,
        old_flags: flags.into(),
        new_flags: flags.into(),
        ident,
    };

    println!(
        "{ops} operations each, SQLite file store in {}",
        dir.path().display()
    );
    println!("  {:<10} {:>10} {:>10}", "operation", "wall µs", "CPU µs");
    let time = |name: &'static str, calls: u32, started: (Instant, f64)| {
        let wall = started.0.elapsed().as_secs_f64();
        let cpu = self_cpu() - started.1;
        let per = |s: f64| s * 1e6 / f64::from(calls);
        println!("  {name:<10} {:>10.1} {:>10.1}", per(wall), per(cpu));
    };
    let start = || (Instant::now(), self_cpu());

    let t = start();
    for uid in 1..=ops {
        let keyed = link(uid, "\\Seen", Some(format!("key{uid}")));
        store.add_links(inbox, &[keyed]).await.unwrap();
    }
    time("add keyed", ops, t);

    let t = start();
    for uid in 1..=ops {
        let update = LinkFlags {
            old_uid: uid,
            old_flags: "\\Flagged".into(),
            new_flags: "\\Flagged".into(),
        };
        store.update_link_flags(inbox, &[update]).await.unwrap();
    }
    time("flags", ops, t);

    let t = start();
    for uid in 1..=ops {
        store.remove_links(inbox, &[uid]).await.unwrap();
    }
    time("remove", ops, t);

    let t = start();
    add_pairs(&store, work, ops, &link).await;
    time("add plain", ops / 2, t);
    store.close().await;
}

/// Two plain links per call, with different flags (so each call breaks the run).
async fn add_pairs(
    store: &SqliteStore,
    pair: PairId,
    ops: u32,
    link: &impl Fn(u32, &str, Option<String>) -> Link,
) {
    for uid in (1..=ops).step_by(2) {
        let two = [link(uid, "\\Seen", None), link(uid + 1, "", None)];
        store.add_links(pair, &two).await.unwrap();
    }
}

/// User + system CPU seconds of this process so far.
fn self_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}
