//! What idle users cost OLD and NEW (issue 13, item 7): `--sessions` idle sessions (default
//! 1,000) over `--accounts` accounts (default 100) stay logged in through `imapferry proxy` with
//! INBOX selected, against the harness's Dovecot servers; then the servers themselves say what
//! they hold and do: connections (`doveadm who`) on OLD and NEW, and OLD's commands and logins
//! per second (`doveadm stats dump`) over a `--window` (default 60 s) that starts `--settle`
//! seconds (default 70) after the last session opened, once the engine's idle connections
//! (`idle_connections_secs`, 30 s) are gone and the adaptive poll has grown.
//!
//! One run per live pickup mode: `poll` with the fixed 2 s of earlier releases
//! (`live_pickup_max_secs = 2`), adaptive `poll` (2 s doubling to 60 s), `idle` (the default) and
//! `off`. `--before PATH` adds a run of another imapferry binary (an earlier release) with the
//! same servers and its defaults.
//!
//! Usage: TMPDIR=/dev/shm cargo run --release --example idle_cost -- [--sessions N]
//! [--accounts M] [--window S] [--settle S] [--before PATH]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{Dovecot, DovecotOptions, Layout, ProxyProcess, RawImap, message};
use support::CHILD_FLAG;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PW: &str = "idle-pw";
/// Logins in flight while the sessions open.
const OPEN_AT_ONCE: usize = 32;

struct Args {
    sessions: usize,
    accounts: usize,
    window: u64,
    settle: u64,
    before: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    support::run_child_if_asked(&args);
    let mut a = Args {
        sessions: 1_000,
        accounts: 100,
        window: 60,
        settle: 70,
        before: None,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("a value after the flag");
        match flag.as_str() {
            "--sessions" => a.sessions = value()?.parse()?,
            "--accounts" => a.accounts = value()?.parse()?,
            "--window" => a.window = value()?.parse()?,
            "--settle" => a.settle = value()?.parse()?,
            "--before" => a.before = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(a))
}

/// What the servers said for one run.
struct Figures {
    label: String,
    old_connections: usize,
    new_connections: usize,
    old_commands: u64,
    old_logins: u64,
    by_name: String,
}

async fn run(a: Args) -> Result<()> {
    let opts = DovecotOptions {
        layout: Layout::Slash,
        sessions: Some(a.sessions as u32 + 200),
        ..DovecotOptions::default()
    };
    let old = Dovecot::start_with(opts.clone());
    let new = Dovecot::start_with(opts);
    let users: Vec<String> = (0..a.accounts).map(|i| format!("idle{i:03}")).collect();
    let pairs: Vec<(String, String)> = users.iter().map(|u| (u.clone(), PW.into())).collect();
    old.add_users(&pairs);
    new.add_users(&pairs);
    for (i, user) in users.iter().enumerate() {
        let mut o = RawImap::connect("127.0.0.1", old.port());
        o.login(user, PW);
        o.append("INBOX", &[], None, &message(i as u64, 2_000));
        o.logout();
    }
    println!(
        "{} idle sessions over {} accounts (INBOX selected, one message each); Dovecot {} on both \
         sides; settle {} s, window {} s",
        a.sessions,
        a.accounts,
        dovecot_version(),
        a.settle,
        a.window
    );
    let exe = std::env::current_exe()?;
    let mut runs: Vec<(String, PathBuf, Vec<&str>, &str)> = Vec::new();
    if let Some(before) = &a.before {
        runs.push((
            format!("before: {} (its defaults)", before.display()),
            before.clone(),
            vec![],
            "",
        ));
    }
    let modes = [
        (
            "poll, fixed 2 s",
            "live_pickup = \"poll\"\nlive_pickup_max_secs = 2\n",
        ),
        ("poll, adaptive 2-60 s", "live_pickup = \"poll\"\n"),
        ("idle (default)", "live_pickup = \"idle\"\n"),
        ("off", "live_pickup = \"off\"\n"),
    ];
    for (label, migration) in modes {
        runs.push((label.to_string(), exe.clone(), vec![CHILD_FLAG], migration));
    }
    let mut figures = Vec::new();
    for (label, program, args, migration) in runs {
        figures.push(measure(&a, &old, &new, &users, (label, &program, &args, migration)).await?);
    }
    println!();
    println!(
        "| run | OLD connections | NEW connections | OLD commands/s | OLD logins/s | OLD commands in the window |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for f in &figures {
        let per_s = |n: u64| n as f64 / a.window as f64;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {} |",
            f.label,
            f.old_connections,
            f.new_connections,
            per_s(f.old_commands),
            per_s(f.old_logins),
            f.by_name
        );
    }
    Ok(())
}

fn dovecot_version() -> String {
    std::process::Command::new("dovecot")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn measure(
    a: &Args,
    old: &Dovecot,
    new: &Dovecot,
    users: &[String],
    (label, program, args, migration): (String, &PathBuf, &[&str], &str),
) -> Result<Figures> {
    let extra = format!(
        "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n[migration]\n{migration}\
         [limits]\nmax_connections = {}\nmax_connections_per_ip = {}\n",
        old.port(),
        a.sessions + 100,
        a.sessions + 100,
    );
    let proxy = ProxyProcess::start(program, args, new.port(), &extra);
    let port = proxy.port;
    let mut sessions = Vec::with_capacity(a.sessions);
    let wanted: Vec<&String> = (0..a.sessions).map(|i| &users[i % users.len()]).collect();
    for chunk in wanted.chunks(OPEN_AT_ONCE) {
        let mut opening = tokio::task::JoinSet::new();
        for user in chunk {
            opening.spawn(open(port, user.to_string()));
        }
        while let Some(s) = opening.join_next().await {
            sessions.push(s?.with_context(|| format!("{label}: a session"))?);
        }
    }
    println!("{label}: {} sessions open", sessions.len());
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    old.stats(true);
    let old_connections = total(old);
    let new_connections = total(new);
    tokio::time::sleep(Duration::from_secs(a.window)).await;
    let stats = old.stats(false);
    let old_commands = stats.get("imap_command").copied().unwrap_or(0);
    let old_logins = stats.get("login").copied().unwrap_or(0);
    let mut by: Vec<(String, u64)> = old
        .commands(false)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    by.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let by_name = by
        .iter()
        .map(|(n, c)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{label}: OLD {old_connections} connections, NEW {new_connections}; OLD {old_commands} \
         commands and {old_logins} logins in {} s ({by_name})",
        a.window
    );
    drop(sessions);
    drop(proxy);
    // The next run starts from servers without sessions of this one.
    for _ in 0..600 {
        if total(old) == 0 && total(new) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Figures {
        label,
        old_connections,
        new_connections,
        old_commands,
        old_logins,
        by_name,
    })
}

fn total(server: &Dovecot) -> usize {
    server.connections().values().sum()
}

/// One session: LOGIN, SELECT INBOX, then held open.
async fn open(port: u16, user: String) -> Result<BufReader<TcpStream>> {
    let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
    let mut line = String::new();
    s.read_line(&mut line).await?;
    if !line.starts_with("* OK") {
        bail!("greeting: {line}");
    }
    for (tag, cmd) in [
        ("a", format!("LOGIN {user} {PW}")),
        ("b", "SELECT INBOX".into()),
    ] {
        s.get_mut()
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        loop {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                bail!("closed during {cmd}");
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                if !rest.starts_with("OK") {
                    bail!("{user}: {tag} {rest}");
                }
                break;
            }
        }
    }
    Ok(s)
}
