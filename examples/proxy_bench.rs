//! Relay benchmark of the proxy (issue 4): one scripted client workload run directly against NEW
//! and through `imapferry proxy`, alternating, plus the proxy's memory per idle authenticated
//! connection.
//!
//! NEW is a private Dovecot 2.3 (`Layout::Slash`, `mail_fsync = never`, limits raised for the idle
//! connections) whose INBOX gets `--messages` messages (default 2,000; log-normal sizes, median
//! 10 KB). The proxy runs as a separate process (this release binary re-executed with a hidden
//! `--proxy-child`, which runs exactly what `imapferry proxy --config FILE` runs), so
//! /proc/PID/status is the proxy's alone.
//!
//! The workload, the same code on both paths (one tokio current-thread client, raw IMAP lines,
//! literals read and discarded in 64 KiB pieces): login, LIST, SELECT INBOX,
//! `FETCH 1:* BODY.PEEK[HEADER]`, 200 single-message `FETCH n BODY.PEEK[]` (each awaited),
//! 500 `STORE` (each awaited), 20 IDLE/DONE cycles (IDLE, wait for `+`, DONE, wait for OK), a
//! 50 MB APPEND (synchronising literal) and a 50 MB `UID FETCH` of it. One untimed warm-up run
//! per path, then `--reps` rounds (default 7) alternating which path goes first; the table shows
//! medians, with the proxy's CPU time per phase (/proc/PID/task/*/schedstat, sampled between
//! phases), which varies far less than wall time on a shared machine. Then a fresh proxy gets
//! `--idle` (default 2,000) concurrent idle authenticated connections, plain, then another fresh
//! one as many over STARTTLS; the growth of its VmRSS divided by their number is the cost of one.
//! Targets (issue 4): proxy ≤ 1.10 × direct; under 64 KB per idle connection.
//!
//! Usage: TMPDIR=/dev/shm cargo run --release --example proxy_bench -- [--messages N] [--idle N]
//! [--reps R] (`TMPDIR=/dev/shm` keeps Dovecot's Maildir on tmpfs, see the README's benchmark).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::seed::Rng;
use common::{Dovecot, DovecotOptions, Layout, ProxyProcess, lognormal_size, message};
use support::{CHILD_FLAG, loadavg, median};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

const USER: &str = "bench";
const PW: &str = "bench-pw";
const BIG: usize = 50 * 1024 * 1024;
const PIECE: usize = 64 * 1024;
const BODIES: usize = 200;
const STORES: usize = 500;
const IDLES: usize = 20;
/// Logins in flight while opening the idle connections.
const OPEN_AT_ONCE: usize = 32;

struct Config {
    messages: usize,
    idle: usize,
    reps: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    support::run_child_if_asked(&args);
    let mut cfg = Config {
        messages: 2_000,
        idle: 2_000,
        reps: 7,
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{a} needs a number")))
        };
        match a.as_str() {
            "--messages" => cfg.messages = value().max(BODIES),
            "--idle" => cfg.idle = value(),
            "--reps" => cfg.reps = value().max(1),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    raise_nofile(cfg.idle)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&cfg))
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("proxy_bench: {why}");
    }
    eprintln!(
        "usage: cargo run --release --example proxy_bench -- [--messages N] [--idle N] [--reps R]"
    );
    std::process::exit(64)
}

/// Soft RLIMIT_NOFILE up to the hard limit (Dovecot and the proxy inherit it); each idle
/// connection costs a descriptor here, two in the proxy and one in Dovecot.
fn raise_nofile(idle: usize) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    let need = 2 * idle as u64 + 200;
    if lim.rlim_cur < need {
        bail!(
            "RLIMIT_NOFILE is {} (hard), --idle {idle} needs about {need}: raise it (ulimit -Hn, \
             /etc/security/limits.conf) or lower --idle",
            lim.rlim_cur
        );
    }
    Ok(())
}

async fn run(cfg: &Config) -> Result<()> {
    let new = Dovecot::start_with(DovecotOptions {
        layout: Layout::Slash,
        sessions: Some(cfg.idle as u32 + 50),
        ..Default::default()
    });
    new.add_user(USER, PW);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "NEW: dovecot 127.0.0.1:{} (Slash, mail_fsync=never); {cpus} CPUs; load average {}",
        new.port(),
        loadavg()
    );

    let t = Instant::now();
    let seeded = seed(new.port(), cfg.messages).await?;
    println!(
        "seeded INBOX with {} messages ({:.1} MB) in {:.1}s",
        cfg.messages,
        seeded as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let exe = std::env::current_exe()?;
    let proxy = ProxyProcess::start(&exe, &[CHILD_FLAG], new.port(), "");
    let start_rss = proxy.status_kb("VmRSS");
    println!(
        "proxy: pid {} on 127.0.0.1:{} (release build, separate process), VmRSS at start {} KiB",
        proxy.pid(),
        proxy.port,
        start_rss
    );

    let big = big_message(BIG);
    // Warm-up (untimed): Dovecot's caches and indexes, the proxy's first allocations.
    let pid = proxy.pid();
    workload(new.port(), pid, cfg.messages, &big).await?;
    workload(proxy.port, pid, cfg.messages, &big).await?;
    let mut direct: Vec<Run> = Vec::new();
    let mut proxied: Vec<Run> = Vec::new();
    for r in 0..cfg.reps {
        for proxy_path in [r % 2 == 1, r % 2 == 0] {
            if proxy_path {
                proxied.push(workload(proxy.port, pid, cfg.messages, &big).await?);
            } else {
                direct.push(workload(new.port(), pid, cfg.messages, &big).await?);
            }
        }
    }
    let peak = proxy.status_kb("VmHWM");
    let rss = proxy.status_kb("VmRSS");
    drop(proxy);
    print_table(cfg, &direct, &proxied);
    println!("  load average after the rounds: {}", loadavg());
    println!(
        "proxy peak RSS (VmHWM) {:.1} MiB, VmRSS at the end {:.1} MiB (at start {:.1} MiB)",
        peak as f64 / 1024.0,
        rss as f64 / 1024.0,
        start_rss as f64 / 1024.0
    );

    if cfg.idle > 0 {
        idle_connections(&new, cfg.idle, None).await?;
        // Let NEW's sessions of the plain round end before the next one logs in.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tls = imapferry::tls::client_config(true, Some(&common::ca_pem()))?;
        idle_connections(&new, cfg.idle, Some(tls)).await?;
    }
    let log = new.log();
    let trouble: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Warning") || l.contains("Error") || l.contains("Fatal"))
        .collect();
    if !trouble.is_empty() {
        println!("NEW logged {} warnings/errors, e.g.:", trouble.len());
        for l in trouble.iter().take(5) {
            println!("    {l}");
        }
    }
    Ok(())
}

/// Opens `n` idle authenticated connections through a fresh proxy (plain, or STARTTLS with
/// `tls`); prints the growth of the proxy's RSS per connection.
async fn idle_connections(new: &Dovecot, n: usize, tls: Option<Arc<ClientConfig>>) -> Result<()> {
    let mut extra = format!(
        "[limits]\nmax_connections = {}\nmax_connections_per_ip = {}\n",
        n + 100,
        n + 100
    );
    if tls.is_some() {
        let certs = common::certs_dir();
        extra.push_str(&format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            certs.join("localhost.pem").display(),
            certs.join("localhost-key.pem").display()
        ));
    }
    let how = if tls.is_some() { "STARTTLS" } else { "plain" };
    let exe = std::env::current_exe()?;
    let proxy = ProxyProcess::start(&exe, &[CHILD_FLAG], new.port(), &extra);
    let open_one = |tls: Option<Arc<ClientConfig>>| async move {
        let mut c = match tls {
            Some(tls) => Conn::connect_starttls(proxy.port, tls).await?,
            None => Conn::connect(proxy.port).await?,
        };
        c.login().await?;
        anyhow::Ok(c)
    };
    // One session first, so what is measured is the connections, not first-use allocations.
    let mut warm = open_one(tls.clone()).await?;
    warm.ok("NOOP").await?;
    warm.ok("LOGOUT").await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proxy.status_kb("VmRSS");
    let hwm_before = proxy.status_kb("VmHWM");
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let one = open_one(tls.clone());
        set.spawn(async move {
            let r = one.await;
            drop(permit);
            r
        });
    }
    let mut open = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        open.push(r??);
    }
    let opened = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Still alive and authenticated: one NOOP on each.
    for c in &mut open {
        c.ok("NOOP").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = proxy.status_kb("VmRSS");
    let hwm_after = proxy.status_kb("VmHWM");
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{n} idle authenticated {how} connections through the proxy (opened in {:.1}s): \
         VmRSS {before} -> {after} KiB = {per:.1} KiB per connection (target < 64 KB); \
         VmHWM {hwm_before} -> {hwm_after} KiB",
        opened.as_secs_f64()
    );
    drop(open);
    drop(proxy);
    Ok(())
}

/// One run of the workload on one path.
struct Run {
    /// Wall time of each phase (`PHASES` order), seconds.
    secs: Vec<f64>,
    /// CPU time the proxy process used during each phase, seconds.
    proxy_cpu: Vec<f64>,
}

/// The workload on one path (`port`: NEW or the proxy); `proxy_pid`'s CPU time is sampled at
/// every phase boundary on both paths (outside the timed part), so both run the same code.
async fn workload(port: u16, proxy_pid: u32, messages: usize, big: &[u8]) -> Result<Run> {
    let mut run = Run {
        secs: Vec::with_capacity(PHASES.len()),
        proxy_cpu: Vec::with_capacity(PHASES.len()),
    };
    let mut cpu = cpu_seconds(proxy_pid);
    let mut t = Instant::now();
    let mut lap = |run: &mut Run| {
        run.secs.push(t.elapsed().as_secs_f64());
        let now = cpu_seconds(proxy_pid);
        run.proxy_cpu.push(now - cpu);
        cpu = now;
        t = Instant::now();
    };
    let mut c = Conn::connect(port).await?;
    c.login().await?;
    lap(&mut run);
    c.ok("LIST \"\" \"*\"").await?;
    lap(&mut run);
    c.ok("SELECT INBOX").await?;
    lap(&mut run);
    let (literals, _) = c.ok("FETCH 1:* BODY.PEEK[HEADER]").await?;
    if literals < messages {
        bail!("FETCH 1:* returned {literals} headers, want {messages}");
    }
    lap(&mut run);
    for i in 0..BODIES {
        let seq = i * messages / BODIES + 1;
        let (literals, _) = c.ok(&format!("FETCH {seq} BODY.PEEK[]")).await?;
        if literals != 1 {
            bail!("FETCH {seq} BODY.PEEK[] returned {literals} literals");
        }
    }
    lap(&mut run);
    for i in 0..STORES {
        // Set then clear: every run starts from the same flags.
        let seq = (i / 2) % messages + 1;
        let sign = if i % 2 == 0 { '+' } else { '-' };
        c.ok(&format!("STORE {seq} {sign}FLAGS (\\Flagged)"))
            .await?;
    }
    lap(&mut run);
    for _ in 0..IDLES {
        let tag = c.send("IDLE").await?;
        let l = c.line().await?;
        if !l.starts_with(b"+") {
            bail!("IDLE: {}", String::from_utf8_lossy(&l));
        }
        c.wr.write_all(b"DONE\r\n").await?;
        c.done(&tag).await?;
    }
    lap(&mut run);
    let tag = c.send(&format!("APPEND INBOX {{{}}}", big.len())).await?;
    let l = c.line().await?;
    if !l.starts_with(b"+") {
        bail!("APPEND: {}", String::from_utf8_lossy(&l));
    }
    for piece in big.chunks(PIECE) {
        c.wr.write_all(piece).await?;
    }
    c.wr.write_all(b"\r\n").await?;
    let (_, done) = c.done(&tag).await?;
    let uid: u32 = done
        .split("[APPENDUID ")
        .nth(1)
        .and_then(|r| r.split([' ', ']']).nth(1))
        .and_then(|u| u.parse().ok())
        .with_context(|| format!("no APPENDUID in {done}"))?;
    lap(&mut run);
    let tag = c.send(&format!("UID FETCH {uid} BODY.PEEK[]")).await?;
    let (_, _) = c.done(&tag).await?;
    if c.literal_bytes != big.len() as u64 {
        bail!(
            "UID FETCH {uid}: {} bytes, want {}",
            c.literal_bytes,
            big.len()
        );
    }
    lap(&mut run);
    // Untimed: every run starts from the same mailbox.
    c.ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
        .await?;
    c.ok(&format!("UID EXPUNGE {uid}")).await?;
    c.ok("LOGOUT").await?;
    Ok(run)
}

const PHASES: [&str; 9] = [
    "connect + LOGIN",
    "LIST",
    "SELECT INBOX",
    "FETCH 1:* BODY.PEEK[HEADER]",
    "200 × FETCH n BODY.PEEK[]",
    "500 × STORE",
    "20 × IDLE/DONE",
    "APPEND 50 MB {sync}",
    "UID FETCH 50 MB",
];

fn print_table(cfg: &Config, direct: &[Run], proxied: &[Run]) {
    println!(
        "\nworkload: medians over {} rounds ({} messages in INBOX)",
        cfg.reps, cfg.messages
    );
    println!(
        "  {:<30} {:>10} {:>10} {:>8} {:>14}",
        "phase", "direct ms", "proxy ms", "ratio", "proxy CPU ms"
    );
    let col = |runs: &[Run], i: usize| median(runs.iter().map(|r| r.secs[i]).collect());
    let cpu = |runs: &[Run], i: usize| median(runs.iter().map(|r| r.proxy_cpu[i]).collect());
    for (i, name) in PHASES.iter().enumerate() {
        let (d, p) = (col(direct, i), col(proxied, i));
        println!(
            "  {name:<30} {:>10.1} {:>10.1} {:>7.2}× {:>14.1}",
            d * 1e3,
            p * 1e3,
            p / d,
            cpu(proxied, i) * 1e3
        );
    }
    let sum = |runs: &[Run], range: std::ops::Range<usize>| {
        median(
            runs.iter()
                .map(|r| r.secs[range.clone()].iter().sum())
                .collect(),
        )
    };
    let cpu_sum = |range: std::ops::Range<usize>| {
        median(
            proxied
                .iter()
                .map(|r| r.proxy_cpu[range.clone()].iter().sum())
                .collect(),
        )
    };
    for (name, range) in [
        ("total", 0..PHASES.len()),
        ("total without the 50 MB pair", 0..PHASES.len() - 2),
    ] {
        let (d, p) = (sum(direct, range.clone()), sum(proxied, range.clone()));
        println!(
            "  {name:<30} {:>10.1} {:>10.1} {:>7.2}× {:>14.1}",
            d * 1e3,
            p * 1e3,
            p / d,
            cpu_sum(range) * 1e3
        );
    }
    let rounds: Vec<f64> = direct
        .iter()
        .zip(proxied)
        .map(|(d, p)| p.secs.iter().sum::<f64>() / d.secs.iter().sum::<f64>())
        .collect();
    // Other load on the machine only ever adds time: the fastest run of each path is the least
    // disturbed one.
    let best = |runs: &[Run]| {
        runs.iter()
            .map(|r| r.secs.iter().sum::<f64>())
            .fold(f64::INFINITY, f64::min)
    };
    let (d, p) = (best(direct), best(proxied));
    println!(
        "  {:<30} {:>10.1} {:>10.1} {:>7.2}×",
        "total, fastest round",
        d * 1e3,
        p * 1e3,
        p / d
    );
    let text: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  total ratio per round: {} (median {:.2}×; target ≤ 1.10×)",
        text.join(" "),
        median(rounds.clone())
    );
}

/// CPU time of every thread of a process so far, in seconds (/proc/PID/task/*/schedstat: ns on
/// CPU; finer than the clock ticks of /proc/PID/stat). Threads that ended are not counted.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// A text message of exactly `size` bytes: headers, then 76-character lines.
fn big_message(size: usize) -> Vec<u8> {
    let mut m = b"From: Big Sender <big@example.net>\r\nTo: bench@example.org\r\n\
                  Subject: 50 MB\r\nMessage-Id: <big@imapferry.bench>\r\n\
                  Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\n"
        .to_vec();
    let mut rng = Rng::new(50);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while m.len() < size {
        let line = (size - m.len()).min(78);
        for _ in 0..line.saturating_sub(2) {
            m.push(ALPHABET[rng.below(64) as usize]);
        }
        m.extend_from_slice(&b"\r\n"[..line.min(2)]);
    }
    m
}

/// Seeds INBOX with `n` messages (LITERAL+, 64 APPENDs in flight); returns their total size.
async fn seed(port: u16, n: usize) -> Result<usize> {
    let mut c = Conn::connect(port).await?;
    c.login().await?;
    let mut rng = Rng::new(4);
    let mut in_flight = std::collections::VecDeque::new();
    let mut bytes = 0;
    for i in 0..n {
        let m = message(i as u64, lognormal_size(&mut rng, 10_000, 1.0, 1 << 20));
        bytes += m.len();
        c.tag += 1;
        let tag = format!("s{}", c.tag);
        c.wr.write_all(format!("{tag} APPEND INBOX {{{}+}}\r\n", m.len()).as_bytes())
            .await?;
        c.wr.write_all(&m).await?;
        c.wr.write_all(b"\r\n").await?;
        in_flight.push_back(tag);
        if in_flight.len() >= 64
            && let Some(tag) = in_flight.pop_front()
        {
            c.done(&tag).await?;
        }
    }
    for tag in in_flight {
        c.done(&tag).await?;
    }
    c.ok("LOGOUT").await?;
    Ok(bytes)
}

type Rd = Box<dyn AsyncRead + Unpin + Send>;
type Wr = Box<dyn AsyncWrite + Unpin + Send>;

/// One client connection (plain or TLS): IMAP lines in, literals read and discarded in `PIECE`s.
struct Conn {
    rd: BufReader<Rd>,
    wr: Wr,
    tag: u32,
    line: Vec<u8>,
    scratch: Vec<u8>,
    /// Literal bytes read by the last `done`.
    literal_bytes: u64,
}

impl Conn {
    async fn tcp(port: u16) -> Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn new(rd: Rd, wr: Wr) -> Conn {
        Conn {
            rd: BufReader::with_capacity(PIECE, rd),
            wr,
            tag: 0,
            line: Vec::new(),
            scratch: Vec::new(),
            literal_bytes: 0,
        }
    }

    async fn greeting(&mut self) -> Result<()> {
        let greeting = self.line().await?;
        if !greeting.starts_with(b"* OK") {
            bail!("greeting: {}", String::from_utf8_lossy(&greeting));
        }
        Ok(())
    }

    async fn connect(port: u16) -> Result<Conn> {
        let (rd, wr) = Conn::tcp(port).await?.into_split();
        let mut c = Conn::new(Box::new(rd), Box::new(wr));
        c.greeting().await?;
        Ok(c)
    }

    /// Greeting and STARTTLS in clear text, then TLS (verified against the development CA).
    async fn connect_starttls(port: u16, tls: Arc<ClientConfig>) -> Result<Conn> {
        let mut plain = BufReader::new(Conn::tcp(port).await?);
        let mut line = Vec::new();
        plain.read_until(b'\n', &mut line).await?;
        if !line.starts_with(b"* OK") {
            bail!("greeting: {}", String::from_utf8_lossy(&line));
        }
        plain.get_mut().write_all(b"t STARTTLS\r\n").await?;
        line.clear();
        plain.read_until(b'\n', &mut line).await?;
        if !line.starts_with(b"t OK") || !plain.buffer().is_empty() {
            bail!("STARTTLS: {}", String::from_utf8_lossy(&line));
        }
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        let stream = TlsConnector::from(tls)
            .connect(name, plain.into_inner())
            .await?;
        let (rd, wr) = tokio::io::split(stream);
        Ok(Conn::new(Box::new(rd), Box::new(wr)))
    }

    async fn login(&mut self) -> Result<()> {
        self.ok(&format!("LOGIN {USER} {PW}")).await.map(|_| ())
    }

    async fn line(&mut self) -> Result<Vec<u8>> {
        self.line.clear();
        let n = tokio::time::timeout(
            Duration::from_secs(120),
            self.rd.read_until(b'\n', &mut self.line),
        )
        .await
        .context("timed out")??;
        if n == 0 {
            bail!("connection closed");
        }
        Ok(std::mem::take(&mut self.line))
    }

    async fn send(&mut self, cmd: &str) -> Result<String> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.wr
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        Ok(tag)
    }

    /// Reads up to the line tagged `tag`: (literals seen, tagged line without the tag).
    async fn done(&mut self, tag: &str) -> Result<(usize, String)> {
        let mut literals = 0;
        self.literal_bytes = 0;
        loop {
            let l = self.line().await?;
            if l.len() > tag.len() && l.starts_with(tag.as_bytes()) && l[tag.len()] == b' ' {
                let rest = String::from_utf8_lossy(&l[tag.len() + 1..])
                    .trim_end()
                    .to_string();
                if !rest.starts_with("OK") {
                    bail!("{tag} {rest}");
                }
                return Ok((literals, rest));
            }
            if let Some(n) = literal_len(&l) {
                literals += 1;
                self.literal_bytes += n;
                self.skip(n).await?;
            }
        }
    }

    async fn ok(&mut self, cmd: &str) -> Result<(usize, String)> {
        let tag = self.send(cmd).await?;
        self.done(&tag).await.with_context(|| cmd.to_string())
    }

    async fn skip(&mut self, mut n: u64) -> Result<()> {
        self.scratch.resize(PIECE, 0);
        while n > 0 {
            let want = n.min(PIECE as u64) as usize;
            let got = self.rd.read(&mut self.scratch[..want]).await?;
            if got == 0 {
                bail!("connection closed inside a literal");
            }
            n -= got as u64;
        }
        Ok(())
    }
}

/// `n` when `line` ends with a literal announcement `{n}` (or `{n+}`, `~{n}`).
fn literal_len(line: &[u8]) -> Option<u64> {
    let l = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = std::str::from_utf8(&l[open + 1..]).ok()?;
    digits.trim_end_matches('+').parse().ok()
}
