//! Client caches across the cutover (issue 15, item 6): what a mail client downloads once it is
//! switched from OLD to the proxy, with `[migration] keep_client_caches` and without, in one run.
//!
//! Two private Dovecot 2.3 instances (OLD and NEW, `Layout::Slash`, `mail_fsync = never`). OLD
//! user alice gets the test account of tests/common/seed.rs with `--messages` (default 10,000)
//! ordinary INBOX messages (median 10 KB, one 3 MiB attachment) and 20 in each other folder.
//! A QRESYNC client (tests/scripts/qresync_cache.py, what a client with a cache does) fills its
//! cache of INBOX from OLD. Then, for each mode, a proxy (in this process) migrates alice into a
//! NEW user of its own (`auth = "accounts"`): a login and a SELECT of INBOX through it, then its
//! STATUS straight on NEW until every message is there. The client, pointed at that proxy,
//! brings its cache up to date with `SELECT INBOX (QRESYNC (uidvalidity modseq))` and downloads
//! what its cache does not hold: everything when the UIDVALIDITY changed. Printed: message bytes
//! and all bytes the client read, its time, and whether its cache ended equal to what the proxy
//! shows. Figures are printed, never asserted.
//!
//! The translation's CPU per command is measured by `stress_bench --caches` (the migration proxy
//! with and without the feature, side by side).
//!
//! Usage: TMPDIR=/dev/shm cargo run --release --example cache_bench -- [--messages 10000]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::seed::{SeedSpec, seed_account};
use common::{Dovecot, DovecotOptions, Layout, Proxy, RawImap};

const OLD_USER: &str = "alice";
const PW: &str = "bench-pw";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let messages = match args.iter().position(|a| a == "--messages") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("--messages takes a number")),
        None => 10_000,
    };
    let options = DovecotOptions {
        layout: Layout::Slash,
        ..Default::default()
    };
    let old = Dovecot::start_with(options.clone());
    let new = Dovecot::start_with(options);
    let t = Instant::now();
    let spec = SeedSpec {
        inbox_messages: messages,
        folder_messages: 20,
        median_size: 10_000,
        ..SeedSpec::default()
    };
    let seeded = seed_account(&old, OLD_USER, PW, &spec);
    println!(
        "seeded OLD: {} messages, {:.1} MB in {} folders in {:.1}s",
        seeded.messages,
        seeded.bytes as f64 / 1e6,
        seeded.counts.len(),
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = qresync(&[
        "record",
        "127.0.0.1",
        &old.port().to_string(),
        OLD_USER,
        PW,
        "INBOX",
    ]);
    let cached = cache["uids"].as_array().map_or(0, Vec::len);
    println!("the client's cache of INBOX, filled from OLD: {cached} messages");
    let cache_file = dir.path().join("cache.json");
    std::fs::write(&cache_file, cache.to_string()).expect("write cache");

    println!();
    println!(
        "{:<24} {:>10} {:>16} {:>16} {:>9} {:>8}",
        "mode", "messages", "message bytes", "bytes read", "time", "cache ok"
    );
    for keep in [false, true] {
        let user = if keep { "with" } else { "without" };
        new.add_user(user, PW);
        let accounts = dir.path().join(format!("accounts-{user}"));
        std::fs::write(
            &accounts,
            format!("127.0.0.1;{OLD_USER};{PW};127.0.0.1;{user};{PW};;\n"),
        )
        .expect("write accounts file");
        let proxy = Proxy::start(
            new.port(),
            &format!(
                "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"accounts\"\n\
                 accounts = \"{}\"\n[state]\npath = \"{}\"\n[migration]\n\
                 keep_client_caches = {keep}\nkeep_client_caches_wait_secs = 600\n",
                old.port(),
                accounts.display(),
                dir.path().join(format!("state-{user}.db")).display()
            ),
        );
        migrate(&proxy, &new, user, cached);
        let t = Instant::now();
        let report = qresync(&[
            "resync",
            "127.0.0.1",
            &proxy.port.to_string(),
            user,
            PW,
            "INBOX",
            cache_file.to_str().expect("path"),
        ]);
        let took = t.elapsed().as_secs_f64();
        let shown = shown_uids(proxy.port, user);
        let ok = report["uids"]
            .as_array()
            .map(|u| u.iter().filter_map(|v| v.as_u64()).collect::<Vec<_>>())
            == Some(shown);
        println!(
            "{:<24} {:>10} {:>16} {:>16} {:>8.2}s {:>8}",
            if keep {
                "keep_client_caches"
            } else {
                "without (NEW's numbers)"
            },
            report["body_uids"].as_array().map_or(0, Vec::len),
            report["body_bytes"].as_u64().unwrap_or(0),
            report["received_bytes"].as_u64().unwrap_or(0),
            took,
            if ok { "yes" } else { "NO" }
        );
    }
}

/// Runs the QRESYNC client; its JSON report.
fn qresync(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/qresync_cache.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "qresync_cache.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// Migrates INBOX through `proxy`: a login and a SELECT, then NEW's STATUS until it holds
/// `messages`.
fn migrate(proxy: &Proxy, new: &Dovecot, user: &str, messages: usize) {
    let t = Instant::now();
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(user, PW);
    let (_, status) = c.raw("SELECT INBOX");
    assert!(status.contains("OK"), "SELECT through the proxy: {status}");
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login(user, PW);
    while (direct.status("INBOX").0 as usize) < messages {
        assert!(t.elapsed() < Duration::from_secs(900), "INBOX not migrated");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.logout();
    direct.logout();
}

/// The UIDs the proxy shows in INBOX.
fn shown_uids(port: u16, user: &str) -> Vec<u64> {
    let mut c = RawImap::connect("127.0.0.1", port);
    c.login(user, PW);
    c.examine("INBOX");
    let (lines, status) = c.raw("UID SEARCH ALL");
    assert!(status.contains("OK"), "{status}");
    c.logout();
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()))
        .collect()
}
