//! Login latency benchmark (issue 14, item 2): how long a client waits from its TCP connect to
//! the tagged OK of its LOGIN, straight to NEW, through the plain proxy, and through the
//! migration proxy (`[old]` configured, the account already migrated), at 1 and at 10 concurrent
//! clients.
//!
//! NEW and OLD are private Dovecot 2.3 instances (`Layout::Slash`, `mail_fsync = never`) with ten
//! users `u0`…`u9` (a message in each OLD INBOX). Both proxies run as separate processes (this
//! release binary re-executed with a hidden `--proxy-child`, which runs exactly what `imapferry
//! proxy --config FILE` runs); the migration proxy's accounts are migrated by one untimed login,
//! `SELECT INBOX` and `LOGOUT` per user before the rounds (`auth = "same"`).
//!
//! One login: TCP connect, read the greeting, `LOGIN`, read to its tagged OK (the figure), then
//! `LOGOUT` to its tagged OK (the second figure: connect to logged out). At concurrency 1 a path
//! gets `--logins` (default 10) logins in a row; at concurrency 10 ten clients (users u0…u9) each
//! run `--logins / 2` logins in a row, all starting together. One untimed warm-up round, then
//! `--rounds` (default 7) rounds; within a round the three paths take turns, in an order that
//! rotates from round to round. The table shows medians over every login of every round and the
//! ratios of the medians to direct. A fourth row, "NEW's greeting", times TCP connect to NEW's
//! greeting alone (then LOGOUT), in the same turns: the most that connections to NEW opened in
//! advance (a pool) could take off a proxied login. Timings are printed, never asserted.
//!
//! Usage: TMPDIR=/dev/shm cargo run --release --example login_bench -- [--logins N] [--rounds R]
//! [--think-ms MS] [--proxy-exe PATH]. `--think-ms` makes each client wait between the greeting
//! and its LOGIN (default 0: LOGIN at once), as a client across a network (one round trip), with
//! a CAPABILITY exchange or a TLS handshake first does. `--proxy-exe` names another build of this example (say, one copied aside
//! before a change): a second plain and migration proxy run its code (`PATH --proxy-child proxy
//! --config FILE`) and take their turns in the same rounds, marked "(other)", so two versions of
//! the proxy are compared under the same load.
//!
//! `LOGIN_KEEP_LOG=FILE` keeps each migration proxy's whole log in `FILE.0` (`FILE.1` for the
//! other build), e.g. with `RUST_LOG=imapferry::proxy::session=debug` for the time each login
//! spent in the migration's own part.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{Dovecot, DovecotOptions, Layout, ProxyProcess, RawImap};
use support::{CHILD_FLAG, loadavg, median};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

const PW: &str = "bench-pw";
const USERS: usize = 10;
const CONCURRENCY: [usize; 2] = [1, 10];
/// The last "path" logs in nowhere: connect to NEW's greeting only, what a proxy's pool of NEW
/// connections opened in advance could save at most.
const PATHS: [&str; 4] = [
    "direct to NEW",
    "plain proxy",
    "migration proxy",
    "NEW's greeting",
];
const TIMEOUT: Duration = Duration::from_secs(60);

struct Config {
    logins: usize,
    rounds: usize,
    /// Another build whose proxies take turns with this build's.
    proxy_exe: Option<std::path::PathBuf>,
    /// The client's pause between reading the greeting and sending LOGIN.
    think: Duration,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    support::run_child_if_asked(&args);
    let mut cfg = Config {
        logins: 10,
        rounds: 7,
        proxy_exe: None,
        think: Duration::ZERO,
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{a} needs a number")))
        };
        match a.as_str() {
            "--logins" => cfg.logins = value().max(2),
            "--rounds" => cfg.rounds = value().max(1),
            "--think-ms" => cfg.think = Duration::from_millis(value() as u64),
            "--proxy-exe" => {
                let path = it
                    .next()
                    .unwrap_or_else(|| usage("--proxy-exe needs a path"));
                cfg.proxy_exe = Some(path.into());
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&cfg))
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("login_bench: {why}");
    }
    eprintln!(
        "usage: cargo run --release --example login_bench -- [--logins N] [--rounds R] \
         [--think-ms MS] [--proxy-exe EARLIER_BUILD_OF_THIS_EXAMPLE]"
    );
    std::process::exit(64)
}

fn user(i: usize) -> String {
    format!("u{i}")
}

async fn run(cfg: &Config) -> Result<()> {
    let options = DovecotOptions {
        layout: Layout::Slash,
        sessions: Some(100),
        ..Default::default()
    };
    let new = Dovecot::start_with(options.clone());
    let old = Dovecot::start_with(options);
    let users: Vec<(String, String)> = (0..USERS).map(|i| (user(i), PW.to_string())).collect();
    new.add_users(&users);
    old.add_users(&users);
    for (u, _) in &users {
        let mut c = RawImap::connect(old.host(), old.port());
        c.login(u, PW);
        c.append(
            "INBOX",
            &[],
            None,
            b"From: a@example.org\r\nSubject: hello\r\n\r\nhello\r\n",
        );
        c.logout();
    }
    let this = std::env::current_exe()?;
    let mut proxies = vec![start_proxies(&this, &new, &old).await?];
    if let Some(other) = &cfg.proxy_exe {
        proxies.push(start_proxies(other, &new, &old).await?);
    }
    // (name, port, greeting only)
    let mut paths: Vec<(String, u16, bool)> = vec![(PATHS[0].into(), new.port(), false)];
    for (i, (plain, migration)) in proxies.iter().enumerate() {
        let of = if i == 0 { "" } else { " (other)" };
        paths.push((format!("{}{of}", PATHS[1]), plain.port, false));
        paths.push((format!("{}{of}", PATHS[2]), migration.port, false));
    }
    paths.push((PATHS[3].into(), new.port(), true));
    println!(
        "NEW dovecot 127.0.0.1:{}, OLD dovecot 127.0.0.1:{} (Slash, mail_fsync=never); \
         proxies of {}{}; {} CPUs; load average {}",
        new.port(),
        old.port(),
        this.display(),
        cfg.proxy_exe
            .as_ref()
            .map(|p| format!(" and, marked (other), of {}", p.display()))
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    // samples[concurrency index][path] = (login secs, login + logout secs) of every login.
    let mut samples = vec![vec![Vec::<(f64, f64)>::new(); paths.len()]; CONCURRENCY.len()];
    for round in 0..=cfg.rounds {
        for (ci, &clients) in CONCURRENCY.iter().enumerate() {
            for turn in 0..paths.len() {
                let path = (turn + round) % paths.len();
                let (_, port, greeting_only) = paths[path];
                let got = batch(port, greeting_only, clients, cfg.logins, cfg.think).await?;
                if round > 0 {
                    samples[ci][path].extend(got);
                }
            }
        }
    }
    println!(
        "\nmedians over {} rounds (after one warm-up round), ms: login = TCP connect to LOGIN's \
         tagged OK, +logout = to LOGOUT's tagged OK",
        cfg.rounds
    );
    println!(
        "  {:<8} {:<26} {:>7} {:>9} {:>8} {:>9} {:>8}",
        "clients", "path", "logins", "login", "ratio", "+logout", "ratio"
    );
    for (ci, &clients) in CONCURRENCY.iter().enumerate() {
        let med = |path: usize, f: fn(&(f64, f64)) -> f64| {
            median(samples[ci][path].iter().map(f).collect())
        };
        let (direct_login, direct_all) = (med(0, |s| s.0), med(0, |s| s.1));
        for (path, (name, _, _)) in paths.iter().enumerate() {
            let (login, all) = (med(path, |s| s.0), med(path, |s| s.1));
            println!(
                "  {:<8} {:<26} {:>7} {:>9.2} {:>7.2}× {:>9.2} {:>7.2}×",
                clients,
                name,
                samples[ci][path].len(),
                login * 1e3,
                login / direct_login,
                all * 1e3,
                all / direct_all
            );
        }
    }
    println!("  load average after the rounds: {}", loadavg());
    // For a closer look (e.g. with RUST_LOG=imapferry=debug): the migration proxy's whole log.
    if let Ok(path) = std::env::var("LOGIN_KEEP_LOG") {
        for (i, (_, migration)) in proxies.iter().enumerate() {
            let path = format!("{path}.{i}");
            match std::fs::write(&path, migration.stderr()) {
                Ok(()) => println!("  migration proxy {i}: its log is in {path}"),
                Err(e) => println!("  migration proxy {i}: could not keep its log in {path}: {e}"),
            }
        }
    }
    println!(
        "reproduce: TMPDIR=/dev/shm cargo run --release --example login_bench -- --logins {} --rounds {} --think-ms {}{}",
        cfg.logins,
        cfg.rounds,
        cfg.think.as_millis(),
        cfg.proxy_exe
            .as_ref()
            .map(|p| format!(" --proxy-exe {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// The plain and the migration proxy, run by `exe` (this binary or another build of it), the
/// migration proxy's accounts migrated by one login, `SELECT INBOX` and `LOGOUT` each (untimed).
async fn start_proxies(
    exe: &std::path::Path,
    new: &Dovecot,
    old: &Dovecot,
) -> Result<(ProxyProcess, ProxyProcess)> {
    let plain = ProxyProcess::start(exe, &[CHILD_FLAG], new.port(), "");
    let migration = ProxyProcess::start(
        exe,
        &[CHILD_FLAG],
        new.port(),
        &format!(
            "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n",
            old.port()
        ),
    );
    for i in 0..USERS {
        let mut c = Client::connect(migration.port).await?;
        c.command(&format!("LOGIN {} {PW}", user(i))).await?;
        c.command("SELECT INBOX").await?;
        c.command("LOGOUT").await?;
    }
    Ok((plain, migration))
}

/// `clients` clients on `port` (users u0…), all starting together, each running logins in a
/// row: `logins` in all at concurrency 1, `logins / 2` each otherwise.
async fn batch(
    port: u16,
    greeting_only: bool,
    clients: usize,
    logins: usize,
    think: Duration,
) -> Result<Vec<(f64, f64)>> {
    let each = if clients == 1 { logins } else { logins / 2 };
    let mut set = tokio::task::JoinSet::new();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients));
    for i in 0..clients {
        let start = std::sync::Arc::clone(&start);
        set.spawn(async move {
            start.wait().await;
            let mut got = Vec::with_capacity(each);
            for _ in 0..each {
                got.push(login_logout(port, greeting_only, think, &user(i)).await?);
            }
            anyhow::Ok(got)
        });
    }
    let mut all = Vec::with_capacity(clients * each);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

/// One login: (connect to LOGIN's tagged OK, connect to LOGOUT's tagged OK) in seconds; with
/// `greeting_only` no LOGIN, the first figure ends at the greeting. `think`: the pause between
/// the greeting and LOGIN.
async fn login_logout(
    port: u16,
    greeting_only: bool,
    think: Duration,
    user: &str,
) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut c = Client::connect(port).await?;
    if !greeting_only {
        tokio::time::sleep(think).await;
        c.command(&format!("LOGIN {user} {PW}")).await?;
    }
    let login = t.elapsed().as_secs_f64();
    c.command("LOGOUT").await?;
    Ok((login, t.elapsed().as_secs_f64()))
}

/// A plain-text IMAP client: commands tagged `b1`, `b2`…, responses read as lines.
struct Client {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: OwnedWriteHalf,
    tag: u32,
    line: String,
}

impl Client {
    /// Connects and reads the greeting.
    async fn connect(port: u16) -> Result<Client> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let (rd, wr) = tcp.into_split();
        let mut c = Client {
            rd: BufReader::new(rd),
            wr,
            tag: 0,
            line: String::new(),
        };
        c.read_line().await?;
        if !c.line.starts_with("* OK") {
            bail!("greeting: {}", c.line.trim_end());
        }
        Ok(c)
    }

    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        let n = tokio::time::timeout(TIMEOUT, self.rd.read_line(&mut self.line))
            .await
            .context("timed out")??;
        if n == 0 {
            bail!("connection closed");
        }
        Ok(())
    }

    /// Sends `cmd` and reads to its tagged response, which must be OK.
    async fn command(&mut self, cmd: &str) -> Result<()> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.wr
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        loop {
            self.read_line().await?;
            if let Some(rest) = self
                .line
                .strip_prefix(&tag)
                .and_then(|r| r.strip_prefix(' '))
            {
                if !rest.starts_with("OK") {
                    bail!(
                        "{tag} {}: {}",
                        cmd.split(' ').next().unwrap_or(""),
                        rest.trim_end()
                    );
                }
                return Ok(());
            }
        }
    }
}
