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
//! per path, then `--reps` rounds (default 5) alternating which path goes first; the table shows
//! medians. Then a fresh proxy gets `--idle` (default 2,000) concurrent idle authenticated
//! connections; the growth of its VmRSS divided by their number is the cost of one.
//! Targets (issue 4): proxy ≤ 1.10 × direct; under 64 KB per idle connection.
//!
//! Usage: cargo run --release --example proxy_bench -- [--messages N] [--idle N] [--reps R]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::seed::Rng;
use common::{Dovecot, DovecotOptions, Layout, ProxyProcess, lognormal_size, message};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const CHILD_FLAG: &str = "--proxy-child";
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
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        let mut argv = vec!["imapferry".to_string()];
        argv.extend(args[2..].iter().cloned());
        std::process::exit(imapferry::cli::main_with_args(argv));
    }
    let mut cfg = Config {
        messages: 2_000,
        idle: 2_000,
        reps: 5,
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
    workload(new.port(), cfg.messages, &big).await?;
    workload(proxy.port, cfg.messages, &big).await?;
    let mut direct: Vec<Vec<f64>> = Vec::new();
    let mut proxied: Vec<Vec<f64>> = Vec::new();
    let mut proxy_cpu: Vec<f64> = Vec::new();
    for r in 0..cfg.reps {
        for proxy_path in [r % 2 == 1, r % 2 == 0] {
            if proxy_path {
                let cpu = cpu_seconds(proxy.pid());
                proxied.push(workload(proxy.port, cfg.messages, &big).await?);
                proxy_cpu.push(cpu_seconds(proxy.pid()) - cpu);
            } else {
                direct.push(workload(new.port(), cfg.messages, &big).await?);
            }
        }
    }
    let peak = proxy.status_kb("VmHWM");
    let rss = proxy.status_kb("VmRSS");
    drop(proxy);
    print_table(cfg, &direct, &proxied);
    println!(
        "proxy CPU per workload run: {:.2} s (median); proxy peak RSS (VmHWM) {:.1} MiB, \
         VmRSS at the end {:.1} MiB (at start {:.1} MiB)",
        median(proxy_cpu),
        peak as f64 / 1024.0,
        rss as f64 / 1024.0,
        start_rss as f64 / 1024.0
    );

    if cfg.idle > 0 {
        idle_connections(&new, cfg.idle).await?;
    }
    Ok(())
}

/// Opens `n` idle authenticated connections through a fresh proxy; prints the RSS per connection.
async fn idle_connections(new: &Dovecot, n: usize) -> Result<()> {
    let extra = format!(
        "[limits]\nmax_connections = {}\nmax_connections_per_ip = {}\n",
        n + 100,
        n + 100
    );
    let exe = std::env::current_exe()?;
    let proxy = ProxyProcess::start(&exe, &[CHILD_FLAG], new.port(), &extra);
    // One session first, so what is measured is the connections, not first-use allocations.
    let mut warm = Conn::connect(proxy.port).await?;
    warm.login().await?;
    warm.ok("NOOP").await?;
    warm.ok("LOGOUT").await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proxy.status_kb("VmRSS");
    let hwm_before = proxy.status_kb("VmHWM");
    let t = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
    let mut set = tokio::task::JoinSet::new();
    let port = proxy.port;
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let r = async {
                let mut c = Conn::connect(port).await?;
                c.login().await?;
                anyhow::Ok(c)
            }
            .await;
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
    let after = proxy.status_kb("VmRSS");
    let hwm_after = proxy.status_kb("VmHWM");
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "idle authenticated connections through the proxy: {n} opened in {:.1}s; proxy VmRSS \
         {before} -> {after} KiB: {per:.1} KiB per connection (target < 64 KB); VmHWM {hwm_before} -> {hwm_after} KiB",
        opened.as_secs_f64()
    );
    drop(open);
    Ok(())
}

/// The workload on one path; returns the duration of each phase in seconds (`PHASES` order).
async fn workload(port: u16, messages: usize, big: &[u8]) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(PHASES.len());
    let mut t = Instant::now();
    let mut lap = |times: &mut Vec<f64>| {
        times.push(t.elapsed().as_secs_f64());
        t = Instant::now();
    };
    let mut c = Conn::connect(port).await?;
    c.login().await?;
    lap(&mut times);
    c.ok("LIST \"\" \"*\"").await?;
    lap(&mut times);
    c.ok("SELECT INBOX").await?;
    lap(&mut times);
    let (literals, _) = c.ok("FETCH 1:* BODY.PEEK[HEADER]").await?;
    if literals < messages {
        bail!("FETCH 1:* returned {literals} headers, want {messages}");
    }
    lap(&mut times);
    for i in 0..BODIES {
        let seq = i * messages / BODIES + 1;
        let (literals, _) = c.ok(&format!("FETCH {seq} BODY.PEEK[]")).await?;
        if literals != 1 {
            bail!("FETCH {seq} BODY.PEEK[] returned {literals} literals");
        }
    }
    lap(&mut times);
    for i in 0..STORES {
        // Set then clear: every run starts from the same flags.
        let seq = (i / 2) % messages + 1;
        let sign = if i % 2 == 0 { '+' } else { '-' };
        c.ok(&format!("STORE {seq} {sign}FLAGS (\\Flagged)"))
            .await?;
    }
    lap(&mut times);
    for _ in 0..IDLES {
        let tag = c.send("IDLE").await?;
        let l = c.line().await?;
        if !l.starts_with(b"+") {
            bail!("IDLE: {}", String::from_utf8_lossy(&l));
        }
        c.wr.write_all(b"DONE\r\n").await?;
        c.done(&tag).await?;
    }
    lap(&mut times);
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
    lap(&mut times);
    let tag = c.send(&format!("UID FETCH {uid} BODY.PEEK[]")).await?;
    let (_, _) = c.done(&tag).await?;
    if c.literal_bytes != big.len() as u64 {
        bail!(
            "UID FETCH {uid}: {} bytes, want {}",
            c.literal_bytes,
            big.len()
        );
    }
    lap(&mut times);
    // Untimed: every run starts from the same mailbox.
    c.ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
        .await?;
    c.ok(&format!("UID EXPUNGE {uid}")).await?;
    c.ok("LOGOUT").await?;
    Ok(times)
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

fn print_table(cfg: &Config, direct: &[Vec<f64>], proxied: &[Vec<f64>]) {
    println!(
        "\nworkload medians over {} rounds ({} messages), milliseconds:",
        cfg.reps, cfg.messages
    );
    println!(
        "  {:<30} {:>10} {:>10} {:>8}",
        "phase", "direct", "proxy", "ratio"
    );
    let col = |runs: &[Vec<f64>], i: usize| median(runs.iter().map(|r| r[i]).collect());
    for (i, name) in PHASES.iter().enumerate() {
        let (d, p) = (col(direct, i), col(proxied, i));
        println!(
            "  {name:<30} {:>10.1} {:>10.1} {:>7.2}×",
            d * 1e3,
            p * 1e3,
            p / d
        );
    }
    let total = |runs: &[Vec<f64>]| median(runs.iter().map(|r| r.iter().sum()).collect());
    let (d, p) = (total(direct), total(proxied));
    println!(
        "  {:<30} {:>10.1} {:>10.1} {:>7.2}×   (target ≤ 1.10×)",
        "total",
        d * 1e3,
        p * 1e3,
        p / d
    );
    let small = |runs: &[Vec<f64>]| median(runs.iter().map(|r| r[..7].iter().sum()).collect());
    let (d, p) = (small(direct), small(proxied));
    println!(
        "  {:<30} {:>10.1} {:>10.1} {:>7.2}×",
        "total without the 50 MB pair",
        d * 1e3,
        p * 1e3,
        p / d
    );
    let rounds: Vec<f64> = direct
        .iter()
        .zip(proxied)
        .map(|(d, p)| p.iter().sum::<f64>() / d.iter().sum::<f64>())
        .collect();
    let text: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
    println!("  ratio per round: {}", text.join(" "));
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
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

/// One client connection: IMAP lines in, literals read and discarded in `PIECE`s.
struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    tag: u32,
    line: Vec<u8>,
    scratch: Vec<u8>,
    /// Literal bytes read by the last `done`.
    literal_bytes: u64,
}

impl Conn {
    async fn connect(port: u16) -> Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        s.set_nodelay(true)?;
        let (rd, wr) = s.into_split();
        let mut c = Conn {
            rd: BufReader::with_capacity(PIECE, rd),
            wr,
            tag: 0,
            line: Vec::new(),
            scratch: Vec::new(),
            literal_bytes: 0,
        };
        let greeting = c.line().await?;
        if !greeting.starts_with(b"* OK") {
            bail!("greeting: {}", String::from_utf8_lossy(&greeting));
        }
        Ok(c)
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
