//! Migration proxy benchmark (issue 5, item 7): the first SELECT of an unmigrated folder of N
//! messages (default 10,000) through `imapferry proxy` with `[old]` configured — time to the
//! tagged OK and time until the folder is complete on NEW — against the engine's batch copy of the
//! same folder in the same run.
//!
//! Two private Dovecot 2.3 instances (OLD and NEW, `Layout::Slash`, `mail_fsync = never`) as in
//! examples/bench.rs. OLD user alice gets N messages in the folder `Big` (INBOX stays empty), with
//! bench.rs's sizes (log-normal, median 10 KB, every 400th a 1-4 MiB attachment), flags and dates,
//! seeded with pipelined MULTIAPPEND (untimed). Then one untimed warm-up round and `--reps` rounds
//! (default 3), each into fresh NEW users and fresh state files:
//!
//!   a) the proxy: a separate process (this binary re-executed with a hidden `--proxy-child`, which
//!      runs exactly what `imapferry proxy --config FILE` runs), with its own fresh state file and
//!      `[migration] select_budget_ms = --budget-ms` (default 2000) and `[old] auth = "accounts"`
//!      (a loop file maps the round's NEW user to OLD alice). A raw IMAP client logs in
//!      through it (timed: login, which maps OLD's tree onto NEW), sends `SELECT Big` and measures
//!      the time to the tagged OK; then it IDLEs as a mail client would and notes when the session
//!      has seen `* N EXISTS`. A second connection, straight to NEW, polls
//!      `STATUS Big (MESSAGES)` every 50 ms (`--poll-ms`) until it reads N: the folder is
//!      complete. Both are measured from the moment SELECT was sent.
//!   b) the engine's batch copy: `sync_account` (the library call behind `imapferry sync
//!      --folder Big`, default options, fresh SqliteStore) into another fresh NEW user, timed from
//!      the call to its return (login and folder creation included). A single folder means a
//!      single connection pair, as in the proxy's backfill.
//!   c) like for like: the proxy's own code path without the proxy — `prepare_tree` (untimed),
//!      then `sync_pair` over one connection pair with the options the proxy uses, timed.
//!   d) b) again while a client has the (empty, just created) NEW folder selected and IDLEs in
//!      it, straight on NEW: what an open session on the folder costs NEW, without the proxy.
//!   e) b) again with a)'s STATUS poller running against the NEW user: what the measurement
//!      itself costs (Dovecot syncs the Maildir for every STATUS while the copy appends).
//!   f) `imapferry sync --folder Big --nofoldersizes --nolog --state FILE` as its own process
//!      (this binary re-executed), timed from spawn to exit: the batch copy in the same
//!      surroundings as the proxy (own process, runtime and log subscriber).
//!
//! The table shows medians, the paired ratios (within each round) complete/batch — the issue's
//! target is at most 1.25× — and CPU seconds of the migrating process, OLD's and NEW's Dovecot.
//! Every NEW folder is checked against OLD (message count and total size). Timings are printed,
//! never asserted. `RUST_LOG=imapferry=info` makes the proxy's log (printed after each round)
//! show its backfill.
//!
//! Run on tmpfs for stable figures (the Dovecots' Maildirs and the state files live under TMPDIR):
//!   TMPDIR=/dev/shm cargo run --release --example migration_bench -- \
//!       [--messages 10000] [--budget-ms 2000] [--reps 3] [--poll-ms 50]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::seed::{Rng, imap_date};
use common::{Dovecot, DovecotOptions, Layout, ProxyProcess, RawImap, lognormal_size, message};
use imapferry::imap::{AppendMsg, Body, Client, Side};
use imapferry::mapping::Selection;
use imapferry::secret::Secret;
use imapferry::store::{AccountKey, SqliteStore, Store};
use imapferry::sync::{
    AuthMech, Endpoint, Options, Quiet, login, prepare_tree, sync_account, sync_pair,
};
use support::{
    CHILD_FLAG, Cpu, all_procs, connect_options, loadavg, mb, median, self_cpu, tree_ticks, tv,
};

/// NEW users of a round (suffixed with the round's number): a), b), c), d), e), f).
const USERS: [&str; 6] = ["proxy", "batch", "pair", "idle", "polled", "cli"];
const PW: &str = "bench-pw";
const OLD_USER: &str = "alice";
const FOLDER: &str = "Big";
/// Longest a round waits for the folder to complete before it gives up.
const COMPLETE_LIMIT: Duration = Duration::from_secs(900);

/// Sizes as examples/bench.rs: log-normal, median 10 KB, every 400th a 1-4 MiB attachment.
const MEDIAN_SIZE: usize = 10_000;
const SIGMA: f64 = 1.15;
const MAX_SIZE: usize = 4 << 20;
const BIG_EVERY: u64 = 400;
/// Seeding: messages and bytes per MULTIAPPEND, APPENDs in flight (bench.rs's values).
const APPEND_BATCH: usize = 50;
const APPEND_BATCH_BYTES: u64 = 8 << 20;
const APPEND_IN_FLIGHT: usize = 2;

struct Config {
    messages: usize,
    budget_ms: u64,
    reps: usize,
    /// How often the direct NEW connection asks for the folder's message count.
    poll_ms: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    support::run_child_if_asked(&args);
    let mut cfg = Config {
        messages: 10_000,
        budget_ms: 2_000,
        reps: 3,
        poll_ms: 50,
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{a} needs a number")))
        };
        match a.as_str() {
            "--messages" => cfg.messages = (value() as usize).max(1),
            "--budget-ms" => cfg.budget_ms = value(),
            "--reps" => cfg.reps = (value() as usize).max(1),
            "--poll-ms" => cfg.poll_ms = value().max(1),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    run(&cfg);
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("migration_bench: {why}");
    }
    eprintln!(
        "usage: TMPDIR=/dev/shm cargo run --release --example migration_bench -- \
         [--messages N (10000)] [--budget-ms MS (2000)] [--reps R (3)] [--poll-ms MS (50)]\n\
         (TMPDIR=/dev/shm keeps both Dovecots' Maildirs and the state files on tmpfs: stable figures)"
    );
    std::process::exit(2);
}

/// One round's measurements (seconds; CPU = user + system seconds).
#[derive(Clone, Debug, Default)]
struct Round {
    rep: usize,
    login: f64,
    select_ok: f64,
    /// `* N EXISTS` in the SELECT response.
    exists_at_select: u32,
    complete: f64,
    client_sees_all: f64,
    proxy_cpu: f64,
    proxy_old_cpu: f64,
    proxy_new_cpu: f64,
    batch: f64,
    batch_cpu: f64,
    batch_old_cpu: f64,
    batch_new_cpu: f64,
    pair: f64,
    pair_cpu: f64,
    pair_old_cpu: f64,
    pair_new_cpu: f64,
    idle_batch: f64,
    idle_sees_all: f64,
    idle_cpu: f64,
    idle_old_cpu: f64,
    idle_new_cpu: f64,
    /// e): b) with a)'s STATUS poller; its return and the poller's "complete".
    polled: f64,
    polled_complete: f64,
    polled_cpu: f64,
    polled_old_cpu: f64,
    polled_new_cpu: f64,
    /// f): `imapferry sync --folder Big` as a process.
    cli: f64,
    cli_cpu: f64,
    cli_old_cpu: f64,
    cli_new_cpu: f64,
    checks: Vec<String>,
    /// a): messages on NEW every 0.25 s after SELECT was sent.
    progress: String,
}

fn run(cfg: &Config) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let start = || {
        Dovecot::start_with(DovecotOptions {
            layout: Layout::Slash,
            ..Default::default()
        })
    };
    let old = start();
    let new = start();
    old.add_user(OLD_USER, PW);
    // All NEW users up front: Dovecot may miss a passwd-file rewrite within the same second.
    for r in 0..=cfg.reps {
        for u in USERS {
            new.add_user(&format!("{u}{r}"), PW);
        }
    }
    println!(
        "OLD dovecot 127.0.0.1:{} (Slash), NEW dovecot 127.0.0.1:{} (Slash), mail_fsync=never, \
         {} CPUs, load average {}, TMPDIR={}",
        old.port(),
        new.port(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        std::env::temp_dir().display()
    );

    // Seed OLD's Big (untimed).
    let t = Instant::now();
    let mails = generate(cfg.messages);
    rt.block_on(seed_old(old.port(), &mails))
        .unwrap_or_else(|e| panic!("seeding OLD failed: {e}"));
    drop(mails);
    let (n, bytes) = count(&old, OLD_USER);
    assert_eq!(n as usize, cfg.messages, "OLD {FOLDER} after seeding");
    println!(
        "seeded OLD {OLD_USER}/{FOLDER} in {:.1}s: {n} messages, {:.1} MB",
        t.elapsed().as_secs_f64(),
        mb(bytes)
    );

    let exe = std::env::current_exe().expect("current_exe");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let cpu = Cpu::new(&old, &new);
    let mut rounds = Vec::new();
    println!(
        "\n== rounds (0 = warm-up, not counted; then {} reps); times in seconds",
        cfg.reps
    );
    for r in 0..=cfg.reps {
        let mut round = Round {
            rep: r,
            ..Round::default()
        };
        // The order alternates between rounds so that drifting background load hits all alike.
        let order: [char; 6] = if r % 2 == 0 {
            ['a', 'b', 'c', 'd', 'e', 'f']
        } else {
            ['f', 'e', 'd', 'c', 'b', 'a']
        };
        for step in order {
            match step {
                'a' => proxy_run(
                    cfg,
                    &exe,
                    &old,
                    &new,
                    &format!("proxy{r}"),
                    &cpu,
                    &mut round,
                ),
                'b' | 'e' => {
                    let user = format!("{}{r}", if step == 'b' { "batch" } else { "polled" });
                    let state = state_dir.path().join(format!("{user}.db"));
                    let poll = (step == 'e').then_some((n, cfg.poll_ms));
                    batch_run(&rt, &old, &new, &user, &state, poll, &cpu, &mut round)
                }
                'f' => {
                    let user = format!("cli{r}");
                    let state = state_dir.path().join(format!("{user}.db"));
                    cli_run(&exe, &old, &new, &user, &state, &cpu, &mut round)
                }
                'c' => {
                    let state = state_dir.path().join(format!("pair{r}.db"));
                    pair_run(
                        &rt,
                        &old,
                        &new,
                        &format!("pair{r}"),
                        &state,
                        &cpu,
                        &mut round,
                    )
                }
                _ => {
                    let state = state_dir.path().join(format!("idle{r}.db"));
                    let user = format!("idle{r}");
                    idle_batch_run(&rt, &old, &new, &user, &state, n, &cpu, &mut round)
                }
            }
        }
        for (label, user) in ["a", "b", "c", "d", "e", "f"].into_iter().zip(USERS) {
            let user = format!("{user}{r}");
            let (got_n, got_bytes) = count(&new, &user);
            let verdict = if (got_n, got_bytes) == (n, bytes) {
                "OK".to_string()
            } else {
                format!("MISMATCH {got_n}/{n} msgs, {got_bytes}/{bytes} bytes")
            };
            round.checks.push(format!("{label}) {verdict}"));
        }
        println!(
            "  round {r}: login {:.3}  SELECT OK {:.3} (EXISTS {})  complete {:.3}  client sees all {:.3}  \
             | batch {:.3}  | sync_pair {:.3}  | batch+IDLE {:.3} (client sees all {:.3})  \
             | batch+poller {:.3} (complete {:.3})  | sync process {:.3}  | {}",
            round.login,
            round.select_ok,
            round.exists_at_select,
            round.complete,
            round.client_sees_all,
            round.batch,
            round.pair,
            round.idle_batch,
            round.idle_sees_all,
            round.polled,
            round.polled_complete,
            round.cli,
            round.checks.join(", ")
        );
        println!("    a) messages on NEW after SELECT: {}", round.progress);
        // Free the tmpfs space of this round's copies.
        for u in USERS {
            let mut c = RawImap::connect(new.host(), new.port());
            c.login(&format!("{u}{r}"), PW);
            let _ = c.raw(&format!("DELETE {FOLDER}"));
            c.logout();
        }
        rounds.push(round);
    }
    print_table(cfg, n, bytes, &rounds);
    println!("\nload average at the end: {}", loadavg());
    println!(
        "reproduce: TMPDIR=/dev/shm cargo run --release --example migration_bench -- --messages {} --budget-ms {} --reps {} --poll-ms {}",
        cfg.messages, cfg.budget_ms, cfg.reps, cfg.poll_ms
    );
}

// ---------------------------------------------------------------------------------------------
// a) Through the proxy.

fn proxy_run(
    cfg: &Config,
    exe: &Path,
    old: &Dovecot,
    new: &Dovecot,
    user: &str,
    cpu: &Cpu,
    round: &mut Round,
) {
    // Every NEW user of the benchmark migrates the one seeded OLD account: `auth = "accounts"`
    // with an imapsync loop file mapping the NEW login to OLD alice.
    let accounts = tempfile::NamedTempFile::new().expect("accounts file");
    std::fs::write(
        accounts.path(),
        format!("127.0.0.1;{OLD_USER};{PW};127.0.0.1;{user};{PW};;\n"),
    )
    .expect("write accounts file");
    let extra = format!(
        "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"accounts\"\n\
         accounts = \"{}\"\n[migration]\nselect_budget_ms = {}\n",
        old.port(),
        accounts.path().display(),
        cfg.budget_ms
    );
    let proxy = ProxyProcess::start(exe, &[CHILD_FLAG], new.port(), &extra);
    let n = cfg.messages as u32;

    let (go_tx, poller) = spawn_poller(new, user, n, cfg.poll_ms);

    let mut client = LineClient::connect(proxy.port);
    let pid = proxy.pid() as i32;
    let t = Instant::now();
    let tagged = client.command("a1", &format!("LOGIN {user} {PW}"), |_| {});
    assert!(
        tagged.starts_with("a1 OK"),
        "LOGIN through the proxy: {tagged}"
    );
    round.login = t.elapsed().as_secs_f64();

    let procs = all_procs();
    let p0 = tree_ticks(&procs, pid) / cpu.tick;
    let c0 = cpu.sample_from(&procs);
    let t0 = Instant::now();
    go_tx.send(t0).expect("poller alive");
    let mut exists = 0u32;
    let tagged = client.command("a2", &format!("SELECT {FOLDER}"), |l| {
        if let Some(e) = exists_of(l) {
            exists = e;
        }
    });
    round.select_ok = t0.elapsed().as_secs_f64();
    assert!(
        tagged.starts_with("a2 OK"),
        "SELECT through the proxy: {tagged}\nproxy log:\n{}",
        proxy.stderr()
    );
    round.exists_at_select = exists;

    // IDLE like a mail client until the session has seen every message.
    let mut seen = exists;
    let mut idling = false;
    if seen < n {
        client.send("a3 IDLE");
        idling = true;
        loop {
            let line = client.line();
            if let Some(e) = exists_of(&line) {
                seen = seen.max(e);
            }
            if line.starts_with("a3 ") {
                idling = false;
                break;
            }
            if seen >= n || t0.elapsed() > COMPLETE_LIMIT {
                break;
            }
        }
    }
    round.client_sees_all = if seen >= n {
        t0.elapsed().as_secs_f64()
    } else {
        f64::NAN
    };
    let (complete, progress) = poller.join().expect("poller thread");
    round.complete = complete.unwrap_or(f64::NAN);
    // Messages on NEW every 0.25 s after SELECT (the last poll at or before each mark).
    let mut marks = Vec::new();
    let mut mark = 0.25;
    for (i, (at, _)) in progress.iter().enumerate() {
        while *at >= mark + 0.25 || (i + 1 == progress.len() && *at >= mark) {
            let upto = progress
                .iter()
                .rev()
                .find(|(t, _)| *t <= mark)
                .map_or(0, |p| p.1);
            marks.push(format!("{mark:.2}s:{upto}"));
            mark += 0.25;
        }
    }
    round.progress = marks.join(" ");
    if idling {
        client.send("DONE");
        let _ = client.until("a3 ", |_| {});
    }
    let procs = all_procs();
    round.proxy_cpu = tree_ticks(&procs, pid) / cpu.tick - p0;
    (round.proxy_old_cpu, round.proxy_new_cpu) = cpu.since_from(c0, &procs);
    let _ = client.command("a4", "LOGOUT", |_| {});

    let log: Vec<String> = proxy
        .stderr()
        .lines()
        .filter(|l| std::env::var_os("RUST_LOG").is_some() || !l.contains(" INFO "))
        .map(str::to_string)
        .collect();
    if !log.is_empty() {
        println!("  proxy log ({user}):");
        for l in log.iter().take(40) {
            println!("    {l}");
        }
    }
    drop(proxy);
}

/// Result of a poller: when it first read N (`None`: never), and every (time, count) it read.
type Polled = (Option<f64>, Vec<(f64, u32)>);

/// A thread that logs in to NEW as `user`, waits for the start instant, then asks
/// `STATUS Big (MESSAGES)` every `poll_ms` until it reads `n` (a missing folder counts as 0).
fn spawn_poller(
    new: &Dovecot,
    user: &str,
    n: u32,
    poll_ms: u64,
) -> (mpsc::Sender<Instant>, std::thread::JoinHandle<Polled>) {
    let (go_tx, go_rx) = mpsc::channel::<Instant>();
    let (new_host, new_port, poll_user) = (new.host(), new.port(), user.to_string());
    let poll = Duration::from_millis(poll_ms);
    let poller = std::thread::spawn(move || {
        let mut c = RawImap::connect(new_host, new_port);
        c.login(&poll_user, PW);
        let t0 = go_rx.recv().expect("start signal");
        let mut progress = Vec::new();
        loop {
            let (lines, tagged) = c.raw(&format!("STATUS {FOLDER} (MESSAGES)"));
            let got = if tagged.starts_with("OK") {
                lines.iter().find_map(|l| status_messages(l)).unwrap_or(0)
            } else {
                0 // not created yet
            };
            let at = t0.elapsed().as_secs_f64();
            progress.push((at, got));
            if got >= n {
                c.logout();
                return (Some(at), progress);
            }
            if t0.elapsed() > COMPLETE_LIMIT {
                c.logout();
                return (None, progress);
            }
            std::thread::sleep(poll);
        }
    });
    (go_tx, poller)
}

/// `* STATUS Big (MESSAGES 123)` → 123.
fn status_messages(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("* STATUS ")?;
    let words: Vec<&str> = rest
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    let p = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("MESSAGES"))?;
    words.get(p + 1)?.parse().ok()
}

/// `* 123 EXISTS` → 123.
fn exists_of(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("* ")?;
    let (num, word) = rest.trim_end().split_once(' ')?;
    word.eq_ignore_ascii_case("EXISTS")
        .then(|| num.parse().ok())
        .flatten()
}

/// A line-oriented IMAP client for the proxy session (no literals are expected in what it reads:
/// LOGIN, SELECT, IDLE and LOGOUT responses).
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn connect(port: u16) -> LineClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(COMPLETE_LIMIT))
            .expect("read timeout");
        let writer = stream.try_clone().unwrap();
        let mut c = LineClient {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "proxy greeting: {greeting}");
        c
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write to the proxy");
    }

    fn line(&mut self) -> String {
        let mut buf = String::new();
        let got = self
            .reader
            .read_line(&mut buf)
            .expect("read from the proxy");
        assert!(got > 0, "the proxy closed the connection");
        buf.trim_end().to_string()
    }

    /// Reads until the line tagged `tag` (with the space); returns it.
    fn until(&mut self, tag: &str, mut each: impl FnMut(&str)) -> String {
        loop {
            let l = self.line();
            if l.starts_with(tag) {
                return l;
            }
            each(&l);
        }
    }

    fn command(&mut self, tag: &str, cmd: &str, each: impl FnMut(&str)) -> String {
        self.send(&format!("{tag} {cmd}"));
        self.until(&format!("{tag} "), each)
    }
}

// ---------------------------------------------------------------------------------------------
// b) and c): the engine in this process.

fn endpoint(d: &Dovecot, user: &str) -> Endpoint {
    Endpoint {
        connect: connect_options(d.port()),
        user: user.to_string(),
        password: Secret::new(PW),
        authuser: None,
        auth: AuthMech::Login,
    }
}

/// b) (`poll_ms` None) or e) (with the STATUS poller of a), so that its cost shows).
#[allow(clippy::too_many_arguments)]
fn batch_run(
    rt: &tokio::runtime::Runtime,
    old: &Dovecot,
    new: &Dovecot,
    user: &str,
    state: &Path,
    poll: Option<(u32, u64)>,
    cpu: &Cpu,
    round: &mut Round,
) {
    let poller = poll.map(|(n, ms)| spawn_poller(new, user, n, ms));
    let opts = Options {
        selection: Selection {
            folders: vec![FOLDER.to_string()],
            ..Selection::default()
        },
        ..Options::default()
    };
    let (old_ep, new_ep) = (endpoint(old, OLD_USER), endpoint(new, user));
    rt.block_on(async {
        let store = SqliteStore::open(state).await.expect("open state store");
        let c0 = cpu.sample();
        let s0 = self_cpu();
        let t = Instant::now();
        if let Some((go, _)) = &poller {
            go.send(t).expect("poller alive");
        }
        let report = sync_account(&store, &old_ep, &new_ep, &opts, &Quiet)
            .await
            .unwrap_or_else(|e| panic!("sync_account: {e}"));
        let wall = t.elapsed().as_secs_f64();
        let cpu_used = self_cpu() - s0;
        let (old_cpu, new_cpu) = cpu.since(c0);
        if poller.is_some() {
            (round.polled, round.polled_cpu) = (wall, cpu_used);
            (round.polled_old_cpu, round.polled_new_cpu) = (old_cpu, new_cpu);
        } else {
            (round.batch, round.batch_cpu) = (wall, cpu_used);
            (round.batch_old_cpu, round.batch_new_cpu) = (old_cpu, new_cpu);
        }
        for e in report.errors.iter().take(5) {
            eprintln!("  batch error: {e}");
        }
        store.close().await;
    });
    if let Some((_, handle)) = poller {
        round.polled_complete = handle.join().expect("poller thread").0.unwrap_or(f64::NAN);
    }
}

fn pair_run(
    rt: &tokio::runtime::Runtime,
    old: &Dovecot,
    new: &Dovecot,
    user: &str,
    state: &Path,
    cpu: &Cpu,
    round: &mut Round,
) {
    // The options src/migrate/mod.rs builds from an empty [mapping]: every folder, one connection.
    let opts = Options {
        connections: 1,
        ..Options::default()
    };
    let (old_ep, new_ep) = (endpoint(old, OLD_USER), endpoint(new, user));
    rt.block_on(async {
        let store = SqliteStore::open(state).await.expect("open state store");
        let (mut o, mut n) = tokio::try_join!(login(&old_ep, Side::Old), login(&new_ep, Side::New))
            .unwrap_or_else(|e| panic!("login: {e}"));
        let tree = prepare_tree(&mut o, &mut n, &opts, &Quiet)
            .await
            .unwrap_or_else(|e| panic!("prepare_tree: {e}"));
        let (old_name, new_name) = tree
            .pairs
            .iter()
            .find(|(o, _)| o == FOLDER)
            .cloned()
            .expect("Big mapped");
        let account = store
            .account(&AccountKey {
                old_host: old_ep.connect.host.clone(),
                old_user: old_ep.user.clone(),
                new_host: new_ep.connect.host.clone(),
                new_user: new_ep.user.clone(),
            })
            .await
            .expect("account");
        let pair = store
            .folder_pair(account, &old_name, &new_name)
            .await
            .expect("folder pair");
        let c0 = cpu.sample();
        let s0 = self_cpu();
        let t = Instant::now();
        let report = sync_pair(&store, &mut o, &mut n, &pair, &opts, &Quiet)
            .await
            .unwrap_or_else(|e| panic!("sync_pair: {e}"));
        round.pair = t.elapsed().as_secs_f64();
        round.pair_cpu = self_cpu() - s0;
        (round.pair_old_cpu, round.pair_new_cpu) = cpu.since(c0);
        for e in report.errors.iter().take(5) {
            eprintln!("  sync_pair error: {e}");
        }
        o.logout().await;
        n.logout().await;
        store.close().await;
    });
}

/// f): the command line's batch copy, `imapferry sync --folder Big --nofoldersizes --nolog
/// --state FILE`, as a child process (this binary re-executed), timed from spawn to exit.
fn cli_run(
    exe: &Path,
    old: &Dovecot,
    new: &Dovecot,
    user: &str,
    state: &Path,
    cpu: &Cpu,
    round: &mut Round,
) {
    let (o, n) = (old.port().to_string(), new.port().to_string());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(CHILD_FLAG)
        .args([
            "sync",
            "--host1",
            "127.0.0.1",
            "--port1",
            &o,
            "--user1",
            OLD_USER,
        ])
        .args(["--password1", PW, "--host2", "127.0.0.1", "--port2", &n])
        .args(["--user2", user, "--password2", PW, "--folder", FOLDER])
        .args(["--nofoldersizes", "--nolog", "--state"])
        .arg(state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let c0 = cpu.sample();
    let k0 = children_cpu();
    let t = Instant::now();
    let out = cmd.output().expect("spawn imapferry sync");
    round.cli = t.elapsed().as_secs_f64();
    round.cli_cpu = children_cpu() - k0;
    (round.cli_old_cpu, round.cli_new_cpu) = cpu.since(c0);
    if !out.status.success() {
        eprintln!(
            "  imapferry sync exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// user + system CPU seconds of this process's reaped children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// d): Big created on NEW and selected by a client that IDLEs in it, then b)'s batch copy.
#[allow(clippy::too_many_arguments)]
fn idle_batch_run(
    rt: &tokio::runtime::Runtime,
    old: &Dovecot,
    new: &Dovecot,
    user: &str,
    state: &Path,
    n: u32,
    cpu: &Cpu,
    round: &mut Round,
) {
    let mut client = LineClient::connect(new.port());
    for (tag, cmd) in [
        ("i1", format!("LOGIN {user} {PW}")),
        ("i2", format!("CREATE {FOLDER}")),
        ("i3", format!("SELECT {FOLDER}")),
    ] {
        let tagged = client.command(tag, &cmd, |_| {});
        assert!(tagged.starts_with(&format!("{tag} OK")), "{cmd}: {tagged}");
    }
    client.send("i4 IDLE");
    let cont = client.line();
    assert!(cont.starts_with('+'), "IDLE: {cont}");
    let (go_tx, go_rx) = mpsc::channel::<Instant>();
    let watcher = std::thread::spawn(move || {
        let t0 = go_rx.recv().expect("start signal");
        let mut seen = 0;
        while seen < n && t0.elapsed() < COMPLETE_LIMIT {
            if let Some(e) = exists_of(&client.line()) {
                seen = seen.max(e);
            }
        }
        let at = t0.elapsed().as_secs_f64();
        client.send("DONE");
        let _ = client.until("i4 ", |_| {});
        let _ = client.command("i5", "LOGOUT", |_| {});
        if seen >= n { at } else { f64::NAN }
    });
    let opts = Options {
        selection: Selection {
            folders: vec![FOLDER.to_string()],
            ..Selection::default()
        },
        ..Options::default()
    };
    let (old_ep, new_ep) = (endpoint(old, OLD_USER), endpoint(new, user));
    rt.block_on(async {
        let store = SqliteStore::open(state).await.expect("open state store");
        let c0 = cpu.sample();
        let s0 = self_cpu();
        let t = Instant::now();
        go_tx.send(t).expect("watcher alive");
        let report = sync_account(&store, &old_ep, &new_ep, &opts, &Quiet)
            .await
            .unwrap_or_else(|e| panic!("sync_account: {e}"));
        round.idle_batch = t.elapsed().as_secs_f64();
        round.idle_cpu = self_cpu() - s0;
        (round.idle_old_cpu, round.idle_new_cpu) = cpu.since(c0);
        for e in report.errors.iter().take(5) {
            eprintln!("  batch (IDLE) error: {e}");
        }
        store.close().await;
    });
    round.idle_sees_all = watcher.join().expect("watcher thread");
}

// ---------------------------------------------------------------------------------------------
// The table.

fn print_table(cfg: &Config, n: u32, bytes: u64, rounds: &[Round]) {
    let rs: Vec<&Round> = rounds.iter().filter(|r| r.rep > 0).collect();
    let med = |f: &dyn Fn(&Round) -> f64| median(rs.iter().map(|r| f(r)).collect());
    let range = |f: &dyn Fn(&Round) -> f64| {
        let v: Vec<f64> = rs.iter().map(|r| f(r)).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("({lo:.3}-{hi:.3})")
    };
    println!();
    println!(
        "RESULTS: first SELECT of an unmigrated folder of {n} messages, {:.1} MB (MB = 10^6 bytes); \
         select_budget_ms = {}; STATUS poll every {} ms; median of {} reps (min-max); CPU = user+sys seconds",
        mb(bytes),
        cfg.budget_ms,
        cfg.poll_ms,
        cfg.reps
    );
    println!(
        "{:<58} {:>8} {:>15} {:>8} {:>8} {:>8}",
        "measure", "median s", "(min-max)", "mig CPU", "OLD CPU", "NEW CPU"
    );
    type F<'a> = &'a dyn Fn(&Round) -> f64;
    let rows: [(&str, F, Option<[F; 3]>); 11] = [
        (
            "a) proxy: LOGIN -> tagged OK (OLD tree created on NEW)",
            &|r| r.login,
            None,
        ),
        ("a) proxy: SELECT Big -> tagged OK", &|r| r.select_ok, None),
        (
            "a) proxy: SELECT -> folder complete on NEW (STATUS)",
            &|r| r.complete,
            Some([&|r| r.proxy_cpu, &|r| r.proxy_old_cpu, &|r| r.proxy_new_cpu]),
        ),
        (
            "a) proxy: SELECT -> client session saw EXISTS N",
            &|r| r.client_sees_all,
            None,
        ),
        (
            "b) engine batch copy (sync_account --folder Big)",
            &|r| r.batch,
            Some([&|r| r.batch_cpu, &|r| r.batch_old_cpu, &|r| r.batch_new_cpu]),
        ),
        (
            "c) engine sync_pair alone (the proxy's backfill call)",
            &|r| r.pair,
            Some([&|r| r.pair_cpu, &|r| r.pair_old_cpu, &|r| r.pair_new_cpu]),
        ),
        (
            "d) b) while a client IDLEs in the NEW folder (no proxy)",
            &|r| r.idle_batch,
            Some([&|r| r.idle_cpu, &|r| r.idle_old_cpu, &|r| r.idle_new_cpu]),
        ),
        (
            "d) start -> that client saw EXISTS N",
            &|r| r.idle_sees_all,
            None,
        ),
        (
            "e) b) with a)'s STATUS poller running (no proxy)",
            &|r| r.polled,
            Some([&|r| r.polled_cpu, &|r| r.polled_old_cpu, &|r| {
                r.polled_new_cpu
            }]),
        ),
        (
            "e) start -> the poller read N",
            &|r| r.polled_complete,
            None,
        ),
        (
            "f) `imapferry sync --folder Big` as its own process",
            &|r| r.cli,
            Some([&|r| r.cli_cpu, &|r| r.cli_old_cpu, &|r| r.cli_new_cpu]),
        ),
    ];
    for (label, f, cpus) in rows {
        let cpu = |i: usize| cpus.map_or("-".to_string(), |c| format!("{:.2}", med(c[i])));
        println!(
            "{label:<58} {:>8.3} {:>15} {:>8} {:>8} {:>8}",
            med(f),
            range(f),
            cpu(0),
            cpu(1),
            cpu(2)
        );
    }
    let exists = median(rs.iter().map(|r| r.exists_at_select as f64).collect());
    println!(
        "(messages already on NEW when SELECT answered: median {exists:.0} of {n}; mig CPU: the proxy process for a), \
         this process for b) and c); the SELECT-to-complete CPU window for a))"
    );
    let paired = |a: F, b: F| median(rs.iter().map(|r| a(r) / b(r)).collect());
    let nf = n as f64;
    println!(
        "copy rates, msgs/s (median): a) until SELECT OK {:.0}, a) from SELECT OK to complete {:.0}, \
         b) {:.0}, c) {:.0}, d) {:.0}, e) {:.0}, f) {:.0}",
        med(&|r| r.exists_at_select as f64 / r.select_ok),
        med(&|r| {
            if r.exists_at_select >= n {
                f64::NAN
            } else {
                (nf - r.exists_at_select as f64) / (r.complete - r.select_ok)
            }
        }),
        med(&|r| nf / r.batch),
        med(&|r| nf / r.pair),
        med(&|r| nf / r.idle_batch),
        med(&|r| nf / r.polled),
        med(&|r| nf / r.cli),
    );
    let budget = cfg.budget_ms as f64 / 1e3;
    println!("\nRATIOS (median over the reps of the ratio within each rep)");
    println!(
        "  SELECT -> tagged OK vs budget: {:.3}s vs {budget:.3}s: {}",
        med(&|r| r.select_ok),
        if rs.iter().all(|r| r.select_ok <= budget + 0.25) {
            "every rep within budget + 0.25 s"
        } else {
            "SOME REP OVER budget + 0.25 s"
        }
    );
    println!(
        "  complete through the proxy / engine batch copy:        {:>6.2}   (target <= 1.25)",
        paired(&|r| r.complete, &|r| r.batch)
    );
    println!(
        "  complete through the proxy / sync_pair alone:          {:>6.2}",
        paired(&|r| r.complete, &|r| r.pair)
    );
    println!(
        "  client saw all / engine batch copy:                    {:>6.2}",
        paired(&|r| r.client_sees_all, &|r| r.batch)
    );
    println!(
        "  sync_pair alone / engine batch copy:                   {:>6.2}",
        paired(&|r| r.pair, &|r| r.batch)
    );
    println!(
        "  batch with a client IDLE in the folder / batch:        {:>6.2}",
        paired(&|r| r.idle_batch, &|r| r.batch)
    );
    println!(
        "  complete through the proxy / batch with a client IDLE: {:>6.2}",
        paired(&|r| r.complete, &|r| r.idle_batch)
    );
    println!(
        "  complete through the proxy / `imapferry sync` process: {:>6.2}",
        paired(&|r| r.complete, &|r| r.cli)
    );
    println!(
        "  `imapferry sync` process / in-process batch:           {:>6.2}",
        paired(&|r| r.cli, &|r| r.batch)
    );
    println!(
        "  batch with the STATUS poller / batch:                  {:>6.2}",
        paired(&|r| r.polled, &|r| r.batch)
    );
    println!(
        "  complete through the proxy / batch + poller, both as the poller saw them: {:.2}",
        paired(&|r| r.complete, &|r| r.polled_complete)
    );
    let bad: Vec<String> = rs
        .iter()
        .flat_map(|r| {
            r.checks
                .iter()
                .filter(|c| !c.ends_with("OK"))
                .map(move |c| format!("rep {}: {c}", r.rep))
        })
        .collect();
    println!(
        "\nCHECK (NEW Big vs OLD Big: message count and total size, every run): {}",
        if bad.is_empty() {
            "OK".to_string()
        } else {
            bad.join("; ")
        }
    );
}

/// (messages, bytes) of `user`'s Big on `d`; (0, 0) when it does not exist.
fn count(d: &Dovecot, user: &str) -> (u32, u64) {
    let mut c = RawImap::connect(d.host(), d.port());
    c.login(user, PW);
    let (lines, tagged) = c.raw(&format!("STATUS {FOLDER} (MESSAGES SIZE)"));
    c.logout();
    if !tagged.starts_with("OK") {
        return (0, 0);
    }
    let line = lines
        .iter()
        .find(|l| l.starts_with("* STATUS"))
        .expect("STATUS");
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .collect();
    let num = |key: &str| -> u64 {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(key))
            .and_then(|p| words.get(p + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (num("MESSAGES") as u32, num("SIZE"))
}

// ---------------------------------------------------------------------------------------------
// Test mail and seeding (examples/bench.rs's generator and pipelined MULTIAPPEND).

struct Mail {
    flags: Vec<String>,
    date: Option<String>,
    body: Body,
}

fn generate(n: usize) -> Vec<Mail> {
    let mut rng = Rng::new(0x000B_16F0);
    (1..=n as u64).map(|i| new_mail(&mut rng, i)).collect()
}

fn new_mail(rng: &mut Rng, i: u64) -> Mail {
    let mut size = lognormal_size(rng, MEDIAN_SIZE, SIGMA, MAX_SIZE);
    if i.is_multiple_of(BIG_EVERY) {
        size = (1 << 20) + rng.below(3 << 20) as usize;
    }
    let mut flags = Vec::new();
    if rng.chance(0.7) {
        flags.push("\\Seen".to_string());
    }
    if rng.chance(0.05) {
        flags.push("\\Flagged".to_string());
    }
    if rng.chance(0.05) {
        flags.push("\\Answered".to_string());
    }
    if rng.chance(0.05) {
        flags.push("$Label1".to_string());
    }
    let utc = 1_420_070_400 + rng.below(315_000_000) as i64; // 2015..2025
    Mail {
        flags,
        date: Some(imap_date(utc, 60)),
        body: Body::Mem(message(i, size)),
    }
}

/// Creates Big on OLD and appends `mails` into it: batches of ≤ 50 messages / 8 MB, two
/// MULTIAPPENDs in flight.
async fn seed_old(port: u16, mails: &[Mail]) -> Result<(), String> {
    let mut client = Client::connect(&connect_options(port), Side::Old)
        .await
        .map_err(|e| e.to_string())?;
    client
        .login(OLD_USER, &Secret::new(PW))
        .await
        .map_err(|e| e.to_string())?;
    for cap in ["LITERAL+", "MULTIAPPEND"] {
        if !client.has(cap) {
            return Err(format!("server lacks {cap}"));
        }
    }
    client.create(FOLDER).await.map_err(|e| e.to_string())?;
    client
        .select(FOLDER, false)
        .await
        .map_err(|e| e.to_string())?;
    let mut in_flight: VecDeque<String> = VecDeque::new();
    let mut rest = mails;
    let fail = |e: imapferry::imap::ImapError| e.to_string();
    while !rest.is_empty() {
        let mut n = 0;
        let mut size = 0;
        while n < rest.len()
            && n < APPEND_BATCH
            && (n == 0 || size + rest[n].body.len() <= APPEND_BATCH_BYTES)
        {
            size += rest[n].body.len();
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        if in_flight.len() >= APPEND_IN_FLIGHT {
            let tag = in_flight.pop_front().unwrap();
            client
                .wait(&tag, |_| {})
                .await
                .map_err(fail)?
                .ok(Side::Old, "APPEND")
                .map_err(fail)?;
        }
        let msgs: Vec<AppendMsg> = batch
            .iter()
            .map(|m| AppendMsg {
                flags: &m.flags,
                internaldate: m.date.as_deref(),
                body: &m.body,
            })
            .collect();
        in_flight.push_back(client.send_append(FOLDER, &msgs).await.map_err(fail)?);
    }
    for tag in in_flight {
        client
            .wait(&tag, |_| {})
            .await
            .map_err(fail)?
            .ok(Side::Old, "APPEND")
            .map_err(fail)?;
    }
    client.logout().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CPU time: this process, the proxy process tree, both Dovecot trees (from /proc), as bench.rs.
