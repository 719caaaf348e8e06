//! Shared integration-test support: private Dovecot and Courier servers (`dovecot`, `courier`,
//! both `server::ImapServer`), a std-only IMAP client (`raw`), deterministic account seeding
//! (`seed`, and the `hostile` corpus), running the binary (`cli`) and layout-independent
//! comparison (`snapshot`), local Maildirs of real clients (`maildir`), test certificates from the development CA (`certs`), a TLS client showing the
//! server's certificate (`tlsimap`) and a forwarder that keeps one answer from its client
//! (`cutoff`).
//! Independent of the crate's own IMAP code so tests can verify it. Use with `mod common;`.
#![allow(dead_code, unused_imports)] // not every test uses every helper

pub mod accounts;
pub mod certs;
pub mod cli;
pub mod courier;
pub mod cutoff;
pub mod cyrus;
pub mod dovecot;
pub mod engine;
pub mod hostile;
pub mod maildir;
pub mod postgres;
pub mod proxy;
pub mod proxyproc;
pub mod raw;
pub mod seed;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tlsimap;

pub use courier::Courier;
pub use cutoff::Cutoff;
pub use cyrus::Cyrus;
pub use dovecot::{Dovecot, DovecotOptions, Layout, ca_pem, certs_dir, free_port};
pub use engine::{Print, endpoint as engine_endpoint};
pub use hostile::{HostileSummary, seed_hostile};
pub use postgres::Postgres;
pub use proxy::{Proxy, ProxyProc, migration_config};
pub use proxyproc::ProxyProcess;
pub use raw::{Msg, RawImap};
pub use seed::{SeedSpec, SeedSummary, lognormal_size, message, mutf7, seed_account};
pub use server::ImapServer;
pub use snapshot::{SnapMsg, Snapshot, assert_same_mail, mail_diff, snapshot, snapshot_at};

/// Polls `check` (every 100 ms) until it holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Fails the test when a program it drives is missing: a test that cannot run must not pass.
pub fn require(binary: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{binary} is not installed (scripts/install-deps.sh installs it)"
    );
}
