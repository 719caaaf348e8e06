//! The live demo behind `scripts/demo.sh`: two private Dovecot servers on loopback (OLD with a
//! Courier-like `INBOX.` namespace and sample mail, NEW with `/` separators, empty), an
//! imapsync-style `imapferry sync` command line, a second pass that copies nothing, and a check
//! that NEW now holds the same mail as OLD.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Dovecot, Layout, SeedSpec, seed_account, snapshot};

const PW: &str = "demo-password";

fn imapferry() -> PathBuf {
    // examples live in target/<profile>/examples/; the binary is one level up.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("imapferry"))
        .expect("target dir")
}

fn run_sync(old: &Dovecot, new: &Dovecot, logdir: &std::path::Path) -> i32 {
    let args = [
        "sync",
        "--host1",
        old.host(),
        "--port1",
        &old.port().to_string(),
        "--user1",
        "alice",
        "--password1",
        PW,
        "--host2",
        new.host(),
        "--port2",
        &new.port().to_string(),
        "--user2",
        "alice",
        "--password2",
        PW,
        "--logdir",
        logdir.to_str().unwrap_or("LOG_imapsync"),
    ]
    .map(str::to_string);
    println!("$ imapferry {}", args.join(" ").replace(PW, "MASKED"));
    let status = Command::new(imapferry())
        .args(&args)
        .status()
        .expect("run imapferry");
    status.code().unwrap_or(-1)
}

fn main() {
    println!(
        "Starting OLD (separator '.', prefix 'INBOX.') and NEW (separator '/') Dovecot servers on loopback..."
    );
    let old = Dovecot::start(Layout::DotInbox);
    let new = Dovecot::start(Layout::Slash);
    new.add_user("alice", PW);
    let seeded = seed_account(&old, "alice", PW, &SeedSpec::default());
    println!(
        "OLD 127.0.0.1:{} has {} messages ({} bytes) in {} folders; NEW 127.0.0.1:{} is empty.\n",
        old.port(),
        seeded.messages,
        seeded.bytes,
        seeded.counts.len(),
        new.port()
    );
    let logdir = tempfile::tempdir().expect("tempdir");

    println!("== First pass: copies everything ==");
    let code = run_sync(&old, &new, logdir.path());
    println!("exit code {code}\n");
    println!("== Second pass: nothing to do ==");
    let code2 = run_sync(&old, &new, logdir.path());
    println!("exit code {code2}\n");

    let (o, n) = (snapshot(&old, "alice", PW), snapshot(&new, "alice", PW));
    let same = o.folders == n.folders && o.subscribed == n.subscribed;
    println!(
        "OLD: {} messages, NEW: {} messages, same bytes, flags and dates in every folder: {}",
        o.total(),
        n.total(),
        if same { "yes" } else { "NO" }
    );
    println!(
        "Logs were written to {} (removed at exit).",
        logdir.path().display()
    );
    if !same || code != 0 || code2 != 0 {
        std::process::exit(1);
    }
}
