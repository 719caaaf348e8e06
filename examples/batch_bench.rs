//! `imapferry batch` with 20 accounts, once with `--jobs 1` and once with `--jobs 4`, against two
//! local Dovecot servers: prints both wall times and their ratio, and checks that every account
//! ends complete on NEW. Run: `cargo run --release --example batch_bench [-- ACCOUNTS MESSAGES]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{Dovecot, Layout, RawImap};

fn imapferry() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("imapferry"))
        .expect("target dir")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let accounts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let messages: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let old = Dovecot::start(Layout::Slash);
    let news = [Dovecot::start(Layout::Slash), Dovecot::start(Layout::Slash)];
    for i in 0..accounts {
        let user = format!("user{i:02}");
        old.add_user(&user, "pw");
        for n in &news {
            n.add_user(&user, "pw");
        }
        let mut o = RawImap::connect(old.host(), old.port());
        o.login(&user, "pw");
        for m in 0..messages {
            o.append(
                "INBOX",
                &[],
                None,
                &common::message(i as u64 * 1000 + m, 4000),
            );
        }
    }
    println!(
        "{accounts} accounts of {messages} messages (~4 KB) each; one empty NEW server per run"
    );
    let mut times = Vec::new();
    for (jobs, new) in [(1, &news[0]), (4, &news[1])] {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines: Vec<String> = (0..accounts)
            .map(|i| {
                format!(
                    "127.0.0.1;user{i:02};pw;127.0.0.1;user{i:02};pw;--port1 {} --port2 {};",
                    old.port(),
                    new.port()
                )
            })
            .collect();
        std::fs::write(dir.path().join("accounts.txt"), lines.join("\n") + "\n")
            .expect("write loop file");
        let started = Instant::now();
        let status = Command::new(imapferry())
            .args([
                "batch",
                "accounts.txt",
                "--jobs",
                &jobs.to_string(),
                "--nofoldersizes",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run imapferry batch");
        let secs = started.elapsed().as_secs_f64();
        let complete = (0..accounts).all(|i| {
            let mut n = RawImap::connect(new.host(), new.port());
            n.login(&format!("user{i:02}"), "pw");
            n.status("INBOX").0 as u64 == messages
        });
        println!(
            "--jobs {jobs}: {secs:.2} s, exit {}, every account complete: {}",
            status.code().unwrap_or(-1),
            if complete { "yes" } else { "NO" }
        );
        times.push(secs);
    }
    println!(
        "--jobs 4 is {:.2}x as fast as --jobs 1",
        times[0] / times[1]
    );
}
