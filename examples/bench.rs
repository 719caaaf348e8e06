//! Throughput benchmark: imapferry against Dovecot's own migrator (dsync over imapc) and against
//! the raw ceiling of a pipelined MULTIAPPEND, on two private Dovecot 2.3 instances
//! (OLD and NEW, both `Layout::Slash`, `mail_fsync = never`), or a Courier-IMAP or Cyrus OLD.
//!
//! Why: DESIGN.md §3 promises a pipelined copy (many FETCHes in flight, LITERAL+/MULTIAPPEND on
//! NEW) and a no-change pass that costs one STATUS per folder. This measures how close the initial
//! copy gets to what NEW can ingest at all (target: imapferry ≤ 1.3 × the raw MULTIAPPEND time),
//! how it compares with dsync, and how cheap the follow-up passes are.
//!
//! OLD user alice gets N messages (default 2,000 ≈ 50 MB; log-normal sizes, median 10 KB, every
//! 400th a 1-4 MiB attachment) in six folders, one nested. Then, each into a fresh NEW user:
//!   a) imapferry initial copy (`sync_account`, default Options, `--connections` K, default 4)
//!   b) `doveadm backup -R` pulling the same account over imapc (dsync, one connection)
//!   c) raw MULTIAPPEND of the same bytes (read from OLD beforehand) over K connections
//!   d) imapferry no-change pass (same state file as a), the same through `imapferry sync` as a
//!      migration script runs it (imapsync's folder-size tables before and after, which reuse the
//!      sizes measured before for folders a STATUS shows unchanged), and dsync's equivalent
//!   e) 50 flag changes + 20 new messages on OLD, then imapferry and dsync delta passes
//! a-c run interleaved, one untimed warm-up round and then `--reps` rounds (default 5); the table
//! shows medians, since sub-second runs on a small VM vary a lot.
//!
//! imapferry passes run in a child process (this binary re-executed with a hidden `--child-pass`),
//! spawned by a small launcher process so that wait4(2)'s ru_maxrss is the pass's own peak RSS.
//! Server CPU is the growth of each Dovecot process tree's CPU time (from /proc) over a run.
//! Timings are printed, never asserted. `RUST_LOG=imapferry=info` makes the child passes print
//! one line per folder with its busy/idle time.
//!
//! Usage: cargo run --release --example bench -- [--messages N] [--connections K] [--reps R]
//!        [--old dovecot|courier|cyrus] [--ferry-exe PATH]
//! `--old courier` puts OLD's account on a real Courier-IMAP (`INBOX.` prefix, `.` separator; no
//! CONDSTORE, LITERAL+ or MULTIAPPEND; seeded one APPEND at a time), `--old cyrus` on a real Cyrus
//! IMAP 3.6 (the same names; CONDSTORE and MULTIAPPEND); dsync then reads it with
//! `imapc_list_prefix=INBOX`.
//! `--ferry-exe` names this benchmark built from another revision: each round then also runs its
//! initial copy (row a'), interleaved with this build's, and the ratio of their CPU is printed.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::seed::{Rng, imap_date};
use common::{
    Courier, Cyrus, Dovecot, DovecotOptions, ImapServer, Layout, RawImap, lognormal_size, message,
};
use imapferry::imap::{AppendMsg, Body, Client, Side};
use imapferry::secret::Secret;
use imapferry::store::SqliteStore;
use imapferry::sync::{AuthMech, Endpoint, Options, Quiet, sync_account};
use support::{Cpu, connect_options, loadavg, master_pid, mb, median, self_cpu, tv};

const PW: &str = "bench-pw";
/// The child pass reads the IMAP password from here (never from its command line).
const PW_ENV: &str = "IMAPFERRY_BENCH_PW";
const CHILD_FLAG: &str = "--child-pass";
/// The child runs `imapferry sync` as a migration script would (imapsync's defaults: folder-size
/// tables before and after) instead of the engine alone.
const CLI_FLAG: &str = "--child-cli";
const LAUNCHER_FLAG: &str = "--launcher";

/// Folders (same names on OLD and NEW) and their share of the messages, in percent.
const FOLDERS: [(&str, usize); 6] = [
    ("INBOX", 40),
    ("Archive", 20),
    ("Sent", 15),
    ("Lists", 10),
    ("Projects", 8),
    ("Projects/2024", 7),
];
/// Log-normal sizes with median 10 KB (mean ~20 KB), and every 400th message a 1-4 MiB attachment
/// (the heavy tail): 2,000 messages come to ~50 MB.
const MEDIAN_SIZE: usize = 10_000;
const SIGMA: f64 = 1.15;
const MAX_SIZE: usize = 4 << 20;
const BIG_EVERY: u64 = 400;
/// Raw ceiling: messages and bytes per MULTIAPPEND, APPENDs in flight per connection
/// (the same limits imapferry's copy pipeline uses).
const APPEND_BATCH: usize = 50;
const APPEND_BATCH_BYTES: u64 = 8 << 20;
const APPEND_IN_FLIGHT: usize = 2;
const FLAG_CHANGES: usize = 50;
const NEW_MESSAGES: usize = 20;

/// One message to append.
struct Mail {
    flags: Vec<String>,
    date: Option<String>,
    body: Body,
    /// UID on OLD (0 before it is known).
    uid: u32,
}

type Account = Vec<(String, Vec<Mail>)>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(CHILD_FLAG) => return child_pass(&args[2..]),
        Some(CLI_FLAG) => return child_cli(&args[2..]),
        Some(LAUNCHER_FLAG) => return launcher(),
        _ => {}
    }
    let mut cfg = Config {
        messages: 2_000,
        connections: 4,
        reps: 5,
        other: None,
        old: OldKind::Dovecot,
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        if a == "--old" {
            cfg.old = match it.next().map(String::as_str) {
                Some("dovecot") => OldKind::Dovecot,
                Some("courier") => OldKind::Courier,
                Some("cyrus") => OldKind::Cyrus,
                _ => usage("--old takes dovecot, courier or cyrus"),
            };
            continue;
        }
        if a == "--ferry-exe" {
            let path = it
                .next()
                .unwrap_or_else(|| usage("--ferry-exe needs a path"));
            cfg.other = Some(PathBuf::from(path));
            continue;
        }
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{a} needs a number")))
        };
        match a.as_str() {
            "--messages" => cfg.messages = value().max(FOLDERS.len()),
            "--connections" => cfg.connections = value().max(1),
            "--reps" => cfg.reps = value().max(1),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    run(&cfg);
}

fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("bench: {why}");
    }
    eprintln!(
        "usage: cargo run --release --example bench -- [--messages N] [--connections K] [--reps R] [--old dovecot|courier|cyrus] [--ferry-exe PATH]"
    );
    std::process::exit(2);
}

struct Config {
    messages: usize,
    /// imapferry's `Options::connections` and the raw ceiling's connection count.
    connections: usize,
    /// Every measurement is repeated this often (each time into fresh NEW users) after one
    /// discarded warm-up round; the table shows medians, because on a small VM a single
    /// sub-second run easily varies by a factor of 2-4.
    reps: usize,
    /// The same benchmark built from another revision, whose initial copy runs beside this one's.
    other: Option<PathBuf>,
    old: OldKind,
}

/// Which server holds OLD's account.
#[derive(Clone, Copy, PartialEq)]
enum OldKind {
    /// Dovecot, `/` separator, CONDSTORE, MULTIAPPEND.
    Dovecot,
    /// Courier-IMAP: `INBOX.` prefix, `.` separator, no CONDSTORE, LITERAL+ or MULTIAPPEND.
    Courier,
    /// Cyrus IMAP 3.6: `INBOX.` prefix, `.` separator, CONDSTORE, LITERAL+ and MULTIAPPEND.
    Cyrus,
}

impl OldKind {
    fn name(self) -> &'static str {
        match self {
            OldKind::Dovecot => "dovecot",
            OldKind::Courier => "courier",
            OldKind::Cyrus => "cyrus",
        }
    }
}

/// OLD's server, and the process its CPU is measured below.
struct Old {
    server: Box<dyn ImapServer>,
    root: i32,
}

impl Old {
    fn start(kind: OldKind) -> Old {
        let (server, root): (Box<dyn ImapServer>, i32) = match kind {
            OldKind::Dovecot => {
                let d = Dovecot::start_with(DovecotOptions {
                    layout: Layout::Slash,
                    ..Default::default()
                });
                let root = master_pid(&d.config_path());
                (Box::new(d), root)
            }
            OldKind::Courier => {
                let c = Courier::start();
                let root = c.root_pid().expect("courier runs");
                (Box::new(c), root as i32)
            }
            OldKind::Cyrus => {
                let c = Cyrus::start();
                let root = c.root_pid().expect("cyrus runs");
                (Box::new(c), root as i32)
            }
        };
        Old { server, root }
    }

    fn port(&self) -> u16 {
        self.server.port()
    }

    /// OLD's name of a folder of `FOLDERS`.
    fn name(&self, folder: &str) -> String {
        self.server.mailbox_name(folder)
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: servers, seeding, the runs, the table.

fn run(cfg: &Config) {
    // Started first, while this process is still small: see `Launcher`.
    let mut launcher = Launcher::start();
    let this = std::env::current_exe().expect("current_exe");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let k = cfg.connections;
    let old = Old::start(cfg.old);
    let new = Dovecot::start_with(DovecotOptions {
        layout: Layout::Slash,
        ..Default::default()
    });
    old.server.add_user("alice", PW);
    // All NEW users up front: Dovecot may miss a passwd-file rewrite within the same second.
    for r in 0..=cfg.reps {
        for user in ["ferry", "dsync", "raw", "other"] {
            new.add_user(&format!("{user}{r}"), PW);
        }
    }
    println!(
        "OLD {} 127.0.0.1:{} ({:?}), NEW dovecot 127.0.0.1:{} (Slash), mail_fsync=never, {} CPUs, load average {}",
        cfg.old.name(),
        old.port(),
        old.server.layout(),
        new.port(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    // 1. Seed OLD (untimed).
    let t = Instant::now();
    // The same folders under OLD's own names ("INBOX.Projects.2024" on Courier and Cyrus).
    let mut seed = generate(cfg.messages);
    for (folder, _) in &mut seed {
        *folder = old.name(folder);
    }
    let seed = Arc::new(seed);
    match cfg.old {
        OldKind::Dovecot | OldKind::Cyrus => rt
            .block_on(append_account(old.port(), "alice", seed.clone(), 4))
            .unwrap_or_else(|e| panic!("seeding OLD failed: {e}")),
        OldKind::Courier => append_one_by_one(&old, "alice", &seed),
    }
    drop(seed);
    let old_counts = counts(&*old.server, "alice");
    let total: u64 = old_counts.values().map(|&n| u64::from(n)).sum();
    println!(
        "seeded OLD alice in {:.1}s: {total} messages in {} folders",
        t.elapsed().as_secs_f64(),
        FOLDERS.len()
    );

    // Read everything back from OLD (untimed) for the raw ceiling, and learn UIDs and flags.
    let t = Instant::now();
    let account = Arc::new(read_account(&old, "alice"));
    let (biggest, median) = size_stats(&account);
    let bytes: u64 = account
        .iter()
        .flat_map(|(_, m)| m.iter().map(|m| m.body.len()))
        .sum();
    println!(
        "read OLD into memory in {:.1}s: {:.1} MB (median {:.1} KB, biggest {:.2} MB)",
        t.elapsed().as_secs_f64(),
        mb(bytes),
        median as f64 / 1e3,
        mb(biggest)
    );
    for (f, mails) in account.iter() {
        let b: u64 = mails.iter().map(|m| m.body.len()).sum();
        println!("    {f:<16} {:>6} msgs {:>8.1} MB", mails.len(), mb(b));
    }

    let state_dir = tempfile::tempdir().expect("tempdir");
    let state = |r: usize| state_dir.path().join(format!("ferry{r}.db"));
    let cpu = Cpu::from_roots(old.root, master_pid(&new.config_path()));
    let mut rows: Vec<Row> = Vec::new();

    // 2. Initial copies, interleaved so that background load hits all three alike; round 0 is
    // a warm-up whose figures are not used.
    println!(
        "\n== initial copies (warm-up round 0, then {} reps)",
        cfg.reps
    );
    for r in 0..=cfg.reps {
        let user = format!("raw{r}");
        let c0 = cpu.sample();
        let self0 = self_cpu();
        let t = Instant::now();
        rt.block_on(append_account(new.port(), &user, account.clone(), k))
            .unwrap_or_else(|e| panic!("raw MULTIAPPEND failed: {e}"));
        let wall = t.elapsed().as_secs_f64();
        let client_cpu = self_cpu() - self0;
        let (old_cpu, new_cpu) = cpu.since(c0);
        let ok = check(&old_counts, &counts(&new, &user));
        println!("  {RAW} -> {user}: {wall:.3}s  {ok}");
        drop_mail(&new, &user);
        rows.push(Row {
            label: RAW,
            rep: r,
            msgs: total,
            bytes,
            wall,
            client_cpu,
            old_cpu,
            new_cpu,
            rss_kib: None,
            check: ok,
            detail: String::new(),
        });

        // This build's copy, then (with --ferry-exe) the other build's into a user of its own.
        let builds = std::iter::once((&this, "ferry", FERRY_INITIAL))
            .chain(cfg.other.as_ref().map(|exe| (exe, "other", FERRY_OTHER)));
        for (exe, name, label) in builds {
            let user = format!("{name}{r}");
            let state = state_dir.path().join(format!("{name}{r}.db"));
            let mut row = ferry_pass(
                &mut launcher,
                exe,
                &old,
                &new,
                &user,
                &state,
                k,
                &cpu,
                label,
            );
            let mut ok = check(&old_counts, &counts(&new, &user));
            if row.msgs != total {
                ok = format!("{ok}; copied {} of {total}", row.msgs);
            }
            println!("     correctness after: NEW {user} vs OLD alice, per folder: {ok}");
            if row.check == "OK" {
                row.check = ok;
            }
            row.rep = r;
            rows.push(row);
            if name == "other" {
                drop_mail(&new, &user);
            }
        }

        let user = format!("dsync{r}");
        let mut row = dsync_pass(&mut launcher, &old, &new, &user, &cpu, DSYNC_INITIAL);
        if row.check == "OK" {
            row.check = check(&old_counts, &counts(&new, &user));
        }
        (row.msgs, row.bytes, row.rep) = (total, bytes, r);
        rows.push(row);
    }

    // 3. No-change passes.
    println!("\n== no-change passes");
    for r in 1..=cfg.reps {
        // The engine alone, then `imapferry sync` as a migration script runs it.
        for label in [FERRY_NOCHANGE, FERRY_CLI_NOCHANGE] {
            let user = format!("ferry{r}");
            let mut row = ferry_pass(
                &mut launcher,
                &this,
                &old,
                &new,
                &user,
                &state(r),
                k,
                &cpu,
                label,
            );
            if row.check == "OK" {
                row.check = check(&old_counts, &counts(&new, &user));
            }
            row.rep = r;
            rows.push(row);
        }
        let user = format!("dsync{r}");
        let mut row = dsync_pass(&mut launcher, &old, &new, &user, &cpu, DSYNC_NOCHANGE);
        if row.check == "OK" {
            row.check = check(&old_counts, &counts(&new, &user));
        }
        row.rep = r;
        rows.push(row);
    }

    // 4. Delta: flag changes and new mail on OLD (untimed), then every user catches up.
    println!("\n== delta passes");
    let added = change_old(&old, &account, cfg.messages as u64);
    let old_counts = counts(&*old.server, "alice");
    for r in 1..=cfg.reps {
        let user = format!("ferry{r}");
        let mut row = ferry_pass(
            &mut launcher,
            &this,
            &old,
            &new,
            &user,
            &state(r),
            k,
            &cpu,
            FERRY_DELTA,
        );
        if row.check == "OK" {
            row.check = check(&old_counts, &counts(&new, &user));
        }
        row.rep = r;
        rows.push(row);
        let user = format!("dsync{r}");
        let mut row = dsync_pass(&mut launcher, &old, &new, &user, &cpu, DSYNC_DELTA);
        if row.check == "OK" {
            row.check = check(&old_counts, &counts(&new, &user));
        }
        (row.msgs, row.bytes, row.rep) = (NEW_MESSAGES as u64, added, r);
        rows.push(row);
    }

    print_table(&rows, cfg, total, bytes);
    println!(
        "\nload average at the end: {} (other work on the machine inflates wall times; CPU columns are less sensitive)",
        loadavg()
    );
    println!(
        "reproduce: cargo run --release --example bench -- --messages {} --connections {k} --reps {}{}",
        cfg.messages,
        cfg.reps,
        match cfg.old {
            OldKind::Dovecot => String::new(),
            other => format!(" --old {}", other.name()),
        }
    );
}

const FERRY_INITIAL: &str = "a) imapferry initial copy";
const FERRY_OTHER: &str = "a') --ferry-exe initial";
const DSYNC_INITIAL: &str = "b) dsync initial copy";
const RAW: &str = "c) raw MULTIAPPEND";
const FERRY_NOCHANGE: &str = "d) imapferry no-change";
const FERRY_CLI_NOCHANGE: &str = "d) imapferry sync CLI";
const DSYNC_NOCHANGE: &str = "d) dsync no-change";
const FERRY_DELTA: &str = "e) imapferry delta";
const DSYNC_DELTA: &str = "e) dsync delta";

/// One measured run.
#[derive(Clone, Debug, Default)]
struct Row {
    label: &'static str,
    /// Repetition; 0 = warm-up, not reported.
    rep: usize,
    msgs: u64,
    bytes: u64,
    wall: f64,
    /// user + system CPU seconds of imapferry's child / doveadm / this process (raw).
    client_cpu: f64,
    old_cpu: f64,
    new_cpu: f64,
    rss_kib: Option<u64>,
    /// "OK ..." or what is wrong.
    check: String,
    /// imapferry's own counters ("copied 20, flags 50").
    detail: String,
}

fn print_table(rows: &[Row], cfg: &Config, total: u64, bytes: u64) {
    let labels = [
        FERRY_INITIAL,
        FERRY_OTHER,
        DSYNC_INITIAL,
        RAW,
        FERRY_NOCHANGE,
        FERRY_CLI_NOCHANGE,
        DSYNC_NOCHANGE,
        FERRY_DELTA,
        DSYNC_DELTA,
    ];
    println!();
    println!(
        "RESULTS: {total} messages, {:.1} MB (MB = 10^6 bytes); imapferry and raw use {} connections, dsync one imapc connection;",
        mb(bytes),
        cfg.connections
    );
    println!(
        "median of {} reps (wall range in brackets); CPU = user+sys seconds; peak RSS = highest ru_maxrss",
        cfg.reps
    );
    println!(
        "{:<26} {:>5} {:>6} {:>7} {:>15} {:>7} {:>6} {:>7} {:>7} {:>7} {:>9}  check",
        "run",
        "msgs",
        "MB",
        "wall s",
        "(min-max)",
        "msgs/s",
        "MB/s",
        "cli CPU",
        "OLD CPU",
        "NEW CPU",
        "peak RSS",
    );
    let mut walls = BTreeMap::new();
    for label in labels {
        let rs: Vec<&Row> = rows
            .iter()
            .filter(|r| r.label == label && r.rep > 0)
            .collect();
        if rs.is_empty() {
            continue;
        }
        let med = |f: fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let wall = med(|r| r.wall);
        walls.insert(label, wall);
        let min = rs.iter().map(|r| r.wall).fold(f64::INFINITY, f64::min);
        let max = rs.iter().map(|r| r.wall).fold(0.0, f64::max);
        let (msgs, b) = (rs[0].msgs, rs[0].bytes);
        let rate = |x: f64| {
            if msgs == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", x / wall)
            }
        };
        let rss = rs.iter().filter_map(|r| r.rss_kib).max();
        let bad: Vec<&str> = rs
            .iter()
            .map(|r| r.check.as_str())
            .filter(|c| !c.starts_with("OK"))
            .collect();
        let mut check = match bad.first() {
            None => rs[0].check.clone(),
            Some(b) => format!("{} of {} runs: {b}", bad.len(), rs.len()),
        };
        if !rs[0].detail.is_empty() {
            check = format!("{check}; {}", rs[0].detail);
        }
        println!(
            "{:<26} {:>5} {:>6.1} {:>7.3} {:>15} {:>7} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>9}  {}",
            label,
            msgs,
            mb(b),
            wall,
            format!("({min:.3}-{max:.3})"),
            rate(msgs as f64),
            if msgs == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", mb(b) / wall)
            },
            med(|r| r.client_cpu),
            med(|r| r.old_cpu),
            med(|r| r.new_cpu),
            rss.map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            check
        );
    }
    println!(
        "(cli CPU: imapferry's child process / doveadm / this process for raw. dsync writes NEW's Maildir itself, so its NEW-side work is in cli CPU.)"
    );
    // Ratios of runs of the same round (adjacent in time, so they saw the same background),
    // then the median over the rounds.
    let paired = |a: &str, b: &str| {
        median(
            (1..=cfg.reps)
                .filter_map(|rep| {
                    let find = |l: &str| rows.iter().find(|r| r.label == l && r.rep == rep);
                    Some(find(a)?.wall / find(b)?.wall)
                })
                .collect(),
        )
    };
    let w = |l: &str| walls.get(l).copied().unwrap_or(f64::NAN);
    println!("\nRATIOS (median over the reps of the ratio within each rep)");
    if cfg.other.is_some() {
        let cpu_ratio = median(
            (1..=cfg.reps)
                .filter_map(|rep| {
                    let find = |l: &str| rows.iter().find(|r| r.label == l && r.rep == rep);
                    Some(find(FERRY_INITIAL)?.client_cpu / find(FERRY_OTHER)?.client_cpu)
                })
                .collect(),
        );
        println!(
            "  imapferry initial copy CPU, this build / --ferry-exe: {cpu_ratio:>5.2}   (wall {:.2})",
            paired(FERRY_INITIAL, FERRY_OTHER)
        );
    }
    println!(
        "  imapferry initial copy speed / dsync's:              {:>6.2}x  (>1: imapferry faster)",
        paired(DSYNC_INITIAL, FERRY_INITIAL)
    );
    println!(
        "  imapferry initial time / raw MULTIAPPEND time:       {:>6.2}   (target <= 1.3)",
        paired(FERRY_INITIAL, RAW)
    );
    println!(
        "  no-change pass, imapferry / dsync ({:.3}s vs {:.3}s): {:>6.2}   (<1: imapferry faster)",
        w(FERRY_NOCHANGE),
        w(DSYNC_NOCHANGE),
        paired(FERRY_NOCHANGE, DSYNC_NOCHANGE)
    );
    println!(
        "  no-change pass through imapferry sync (sizes on) / dsync ({:.3}s vs {:.3}s): {:>6.2}",
        w(FERRY_CLI_NOCHANGE),
        w(DSYNC_NOCHANGE),
        paired(FERRY_CLI_NOCHANGE, DSYNC_NOCHANGE)
    );
    println!(
        "  delta pass, imapferry / dsync ({:.3}s vs {:.3}s):     {:>6.2}   (<1: imapferry faster)",
        w(FERRY_DELTA),
        w(DSYNC_DELTA),
        paired(FERRY_DELTA, DSYNC_DELTA)
    );
    // Where the time goes: on one small machine client, OLD and NEW share the CPUs, so the CPU
    // seconds of a run divided by the CPU count bound its wall time from below.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "\nCPU SECONDS of the initial copies (median; client + OLD + NEW; / {cpus} CPUs = CPU-bound floor)"
    );
    for label in [FERRY_INITIAL, DSYNC_INITIAL, RAW] {
        let rs: Vec<&Row> = rows
            .iter()
            .filter(|r| r.label == label && r.rep > 0)
            .collect();
        let med = |f: fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let (c, o, n) = (
            med(|r| r.client_cpu),
            med(|r| r.old_cpu),
            med(|r| r.new_cpu),
        );
        println!(
            "  {label:<26} {:>5.2} = {c:.2} + {o:.2} + {n:.2}   floor {:.2}s, wall {:.3}s",
            c + o + n,
            (c + o + n) / cpus,
            w(label)
        );
    }
}

/// Removes the mail of a NEW user that no later pass reads (the raw ceiling's, `--ferry-exe`'s).
/// Each round would otherwise add the whole account to the servers' TMPDIR again (tmpfs for the
/// README's figures), and on this VM memory the guest has not used lately costs far more kernel
/// time to fill: from about the third round on, every process's CPU grew by half.
fn drop_mail(new: &Dovecot, user: &str) {
    let home = new.dir().join("home").join(user);
    if let Err(e) = std::fs::remove_dir_all(&home) {
        eprintln!("bench: cannot remove {}: {e}", home.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Test mail.

/// N messages spread over FOLDERS, log-normal sizes, typical flags and INTERNALDATEs.
fn generate(n: usize) -> Account {
    let mut rng = Rng::new(0x000B_E7C4);
    let mut out: Account = Vec::new();
    let mut next = 0u64;
    for (i, (folder, share)) in FOLDERS.iter().enumerate() {
        let count = if i == 0 {
            n - FOLDERS[1..].iter().map(|(_, s)| n * s / 100).sum::<usize>()
        } else {
            n * share / 100
        };
        let mails = (0..count)
            .map(|_| {
                next += 1;
                new_mail(&mut rng, next)
            })
            .collect();
        out.push((folder.to_string(), mails));
    }
    out
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
        uid: 0,
    }
}

fn size_stats(account: &Account) -> (u64, u64) {
    let mut sizes: Vec<u64> = account
        .iter()
        .flat_map(|(_, m)| m.iter().map(|m| m.body.len()))
        .collect();
    sizes.sort_unstable();
    (
        sizes.last().copied().unwrap_or(0),
        sizes.get(sizes.len() / 2).copied().unwrap_or(0),
    )
}

/// Seeds OLD one APPEND at a time (a server without MULTIAPPEND or LITERAL+; untimed).
fn append_one_by_one(old: &Old, user: &str, account: &Account) {
    let mut imap = RawImap::connect(old.server.host(), old.port());
    imap.login(user, PW);
    for (name, mails) in account {
        if name != "INBOX" {
            imap.create(name);
        }
        for m in mails {
            let Body::Mem(bytes) = &m.body else {
                unreachable!("generated mail is in memory")
            };
            let flags: Vec<&str> = m.flags.iter().map(String::as_str).collect();
            imap.append(name, &flags, m.date.as_deref(), bytes);
        }
    }
    imap.logout();
}

/// Every message of OLD's `user`, folder by folder (untimed; RawImap).
fn read_account(old: &Old, user: &str) -> Account {
    let mut imap = RawImap::connect(old.server.host(), old.port());
    imap.login(user, PW);
    let mut out = Vec::new();
    for (folder, _) in FOLDERS {
        let mails = imap
            .uid_fetch_all(&old.name(folder))
            .into_iter()
            .map(|m| Mail {
                flags: m.flags.into_iter().collect(),
                date: Some(m.internaldate),
                body: Body::Mem(m.body),
                uid: m.uid,
            })
            .collect();
        out.push((folder.to_string(), mails));
    }
    imap.logout();
    out
}

/// Per selectable folder, by its layout-independent name: its message count.
fn counts(d: &dyn ImapServer, user: &str) -> BTreeMap<String, u32> {
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login(user, PW);
    let mut out = BTreeMap::new();
    for (attrs, _, name) in imap.list() {
        if attrs.iter().any(|a| {
            a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
        }) {
            continue;
        }
        let (lines, tagged) = imap.raw(&format!("STATUS \"{name}\" (MESSAGES)"));
        assert!(tagged.starts_with("OK"), "STATUS {name}: {tagged}");
        let n = lines
            .iter()
            .find_map(|l| l.split_once("(MESSAGES "))
            .and_then(|(_, rest)| rest.trim_end_matches(')').trim().parse().ok())
            .unwrap_or_else(|| panic!("no MESSAGES in STATUS {name}: {lines:?}"));
        out.insert(d.layout().normalize(&name), n);
    }
    imap.logout();
    out
}

/// "OK (n/n)" when every OLD folder holds as many messages on NEW, else "MISMATCH" and where.
fn check(old: &BTreeMap<String, u32>, new: &BTreeMap<String, u32>) -> String {
    let mut bad = Vec::new();
    for (f, n) in old {
        let got = new.get(f).copied().unwrap_or(0);
        if got != *n {
            bad.push(format!("{f}: {got}/{n}"));
        }
    }
    let (o, n): (u32, u32) = (old.values().sum(), new.values().sum());
    if bad.is_empty() {
        format!("OK ({n}/{o})")
    } else {
        format!("MISMATCH ({n}/{o}; {})", bad.join(", "))
    }
}

/// 50 flag changes (+\Seen, -\Seen, +\Flagged, a keyword) and 20 new messages on OLD.
/// Returns the bytes added.
fn change_old(old: &Old, account: &Account, first_id: u64) -> u64 {
    let mut rng = Rng::new(0xDE17A);
    let mut imap = RawImap::connect(old.server.host(), old.port());
    imap.login("alice", PW);
    // Distinct messages, spread over the folders.
    let mut picked: BTreeSet<(usize, usize)> = BTreeSet::new();
    while picked.len() < FLAG_CHANGES.min(account.iter().map(|f| f.1.len()).sum()) {
        let f = rng.below(account.len() as u64) as usize;
        if !account[f].1.is_empty() {
            picked.insert((f, rng.below(account[f].1.len() as u64) as usize));
        }
    }
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for (j, (f, m)) in picked.into_iter().enumerate() {
        let (folder, mails) = &account[f];
        let mail = &mails[m];
        let has = |flag: &str| mail.flags.iter().any(|x| x == flag);
        let (op, flag) = match j % 4 {
            0 | 3 if has("\\Seen") => ("-FLAGS", "\\Seen"),
            0 | 3 => ("+FLAGS", "\\Seen"),
            1 if has("\\Flagged") => ("-FLAGS", "\\Flagged"),
            1 => ("+FLAGS", "\\Flagged"),
            _ => ("+FLAGS", "$Label2"),
        };
        imap.uid_store(&old.name(folder), mail.uid, op, &[flag]);
        *ops.entry(if op == "+FLAGS" { "+" } else { "-" })
            .or_default() += 1;
    }
    let mut added = 0u64;
    for j in 0..NEW_MESSAGES {
        let mail = new_mail(&mut rng, first_id + 1_000 + j as u64);
        let Body::Mem(bytes) = &mail.body else {
            unreachable!()
        };
        let flags: Vec<&str> = mail.flags.iter().map(String::as_str).collect();
        imap.append(
            &old.name(FOLDERS[j % FOLDERS.len()].0),
            &flags,
            mail.date.as_deref(),
            bytes,
        );
        added += bytes.len() as u64;
    }
    imap.logout();
    println!(
        "changed OLD: {FLAG_CHANGES} flag changes ({} adds, {} removals) and {NEW_MESSAGES} new messages ({:.2} MB)",
        ops.get("+").unwrap_or(&0),
        ops.get("-").unwrap_or(&0),
        mb(added)
    );
    added
}

// ---------------------------------------------------------------------------------------------
// Pipelined MULTIAPPEND through the crate's Client (seeding and the raw ceiling).

/// Appends `account` for `user` over `k` connections: folders are created first, then taken
/// largest first from a shared queue; per folder, batches of ≤ 50 messages / 8 MB with two APPEND
/// commands in flight (LITERAL+ keeps each one a single write).
async fn append_account(
    port: u16,
    user: &str,
    account: Arc<Account>,
    k: usize,
) -> Result<(), String> {
    let mut first = connect(port, user).await?;
    for (folder, _) in account.iter() {
        if folder != "INBOX" {
            first.create(folder).await.map_err(|e| e.to_string())?;
        }
    }
    let mut order: Vec<usize> = (0..account.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(account[i].1.len()));
    let queue = Arc::new(Mutex::new(VecDeque::from(order)));
    let mut first = Some(first);
    let mut tasks = Vec::new();
    for _ in 0..k.min(account.len()) {
        let (queue, account, user) = (queue.clone(), account.clone(), user.to_string());
        let client = first.take();
        tasks.push(tokio::spawn(async move {
            let mut client = match client {
                Some(c) => c,
                None => connect(port, &user).await?,
            };
            loop {
                let Some(i) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let (folder, mails) = &account[i];
                append_folder(&mut client, folder, mails)
                    .await
                    .map_err(|e| format!("{folder}: {e}"))?;
            }
            client.logout().await;
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn append_folder(
    client: &mut Client,
    folder: &str,
    mails: &[Mail],
) -> Result<(), imapferry::imap::ImapError> {
    if mails.is_empty() {
        return Ok(());
    }
    // Dovecot saves faster into a selected mailbox (see reference §6, latency traps).
    client.select(folder, false).await?;
    let mut in_flight: VecDeque<String> = VecDeque::new();
    let mut rest = mails;
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
            client.wait(&tag, |_| {}).await?.ok(Side::New, "APPEND")?;
        }
        let msgs: Vec<AppendMsg> = batch
            .iter()
            .map(|m| AppendMsg {
                flags: &m.flags,
                internaldate: m.date.as_deref(),
                body: &m.body,
            })
            .collect();
        in_flight.push_back(client.send_append(folder, &msgs).await?);
    }
    for tag in in_flight {
        client.wait(&tag, |_| {}).await?.ok(Side::New, "APPEND")?;
    }
    Ok(())
}

async fn connect(port: u16, user: &str) -> Result<Client, String> {
    let mut c = Client::connect(&connect_options(port), Side::New)
        .await
        .map_err(|e| e.to_string())?;
    c.login(user, &Secret::new(PW))
        .await
        .map_err(|e| e.to_string())?;
    for cap in ["LITERAL+", "MULTIAPPEND"] {
        if !c.has(cap) {
            return Err(format!("server lacks {cap}"));
        }
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// imapferry passes in a child process.

/// Runs one imapferry pass (OLD alice -> NEW `new_user`) in a child and measures it.
#[allow(clippy::too_many_arguments)]
fn ferry_pass(
    launcher: &mut Launcher,
    exe: &Path,
    old: &Old,
    new: &Dovecot,
    new_user: &str,
    state: &Path,
    k: usize,
    cpu: &Cpu,
    label: &'static str,
) -> Row {
    let flag = if label == FERRY_CLI_NOCHANGE {
        CLI_FLAG
    } else {
        CHILD_FLAG
    };
    let args = [
        exe.to_string_lossy().into_owned(),
        flag.to_string(),
        old.port().to_string(),
        "alice".to_string(),
        new.port().to_string(),
        new_user.to_string(),
        state.to_string_lossy().into_owned(),
        k.to_string(),
    ];
    let c0 = cpu.sample();
    let m = launcher.measure(&args);
    let (old_cpu, new_cpu) = cpu.since(c0);
    if !m.success {
        panic!("{label}: child pass failed\n{}{}", m.stdout, m.stderr);
    }
    if !m.stderr.trim().is_empty() {
        eprint!("{label} (child stderr):\n{}", m.stderr);
    }
    let line = m
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH-PASS "))
        .unwrap_or_else(|| panic!("{label}: no stats line in child output:\n{}", m.stdout));
    let stats: BTreeMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let get = |k: &str| {
        stats
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "  {label} -> {new_user}: {:.3}s  cpu {:.3}s (user {:.3}s)  ru_maxrss {} KiB  {line}",
        m.wall, m.cpu, m.user_cpu, m.maxrss_kib
    );
    Row {
        label,
        rep: 0,
        msgs: get("transferred"),
        bytes: get("bytes"),
        wall: m.wall,
        client_cpu: m.cpu,
        old_cpu,
        new_cpu,
        rss_kib: Some(m.maxrss_kib),
        check: match get("errors") {
            0 => "OK".to_string(),
            n => format!("{n} ERRORS"),
        },
        detail: format!(
            "copied {}, flags {}",
            get("transferred"),
            get("flags_updated")
        ),
    }
}

/// The hidden child: one `sync_account` pass; prints its counters as one line.
/// Args: old_port old_user new_port new_user state_file connections; the password (the same on
/// both sides) comes in $IMAPFERRY_BENCH_PW.
fn child_pass(args: &[String]) {
    let [old_port, old_user, new_port, new_user, state, k] = args else {
        usage("bad --child-pass arguments");
    };
    if std::env::var_os("RUST_LOG").is_some() {
        // With span-close events: one line per folder with its busy/idle time.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .init();
    }
    let pw = std::env::var(PW_ENV).unwrap_or_else(|_| usage("no password in the environment"));
    let endpoint = |port: &str, user: &str| Endpoint {
        connect: connect_options(port.parse().expect("port")),
        user: user.to_string(),
        password: Secret::new(pw.clone()),
        authuser: None,
        auth: AuthMech::Login,
    };
    let opts = Options {
        connections: k.parse().expect("connections"),
        ..Options::default()
    };
    // The runtime `imapferry sync` runs its pass on (src/cli/run.rs).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let store = SqliteStore::open(Path::new(state))
            .await
            .expect("open state store");
        let t = Instant::now();
        let (old, new) = (endpoint(old_port, old_user), endpoint(new_port, new_user));
        let report = sync_account(&store, &old, &new, &opts, &Quiet).await;
        let secs = t.elapsed().as_secs_f64();
        match report {
            Ok(r) => {
                let s = &r.stats;
                // VmHWM: this process's own peak RSS since exec, a cross-check of ru_maxrss.
                let hwm = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|st| {
                        st.lines()
                            .find_map(|l| l.strip_prefix("VmHWM:"))
                            .map(|v| v.trim().trim_end_matches(" kB").to_string())
                    })
                    .unwrap_or_default();
                println!(
                    "BENCH-PASS transferred={} bytes={} flags_updated={} adopted={} deleted={} errors={} in_process_s={secs:.3} vmhwm_kib={hwm}",
                    s.messages_transferred,
                    s.bytes_transferred,
                    s.flags_updated,
                    s.messages_adopted,
                    s.messages_deleted_on_new,
                    r.errors.len()
                );
                for e in r.errors.iter().take(10) {
                    eprintln!("error: {e}");
                }
            }
            Err(e) => {
                eprintln!("sync_account failed: {e}");
                std::process::exit(1);
            }
        }
    });
}

/// The hidden child of `d) imapferry sync CLI`: `imapferry sync` with imapsync's defaults
/// (folder-size tables on), no log file, the password in a `--passfile` beside the state file.
/// Same arguments as `--child-pass` (the connection count is the CLI's default).
fn child_cli(args: &[String]) {
    let [old_port, old_user, new_port, new_user, state, _k] = args else {
        usage("bad --child-cli arguments");
    };
    let pw = std::env::var(PW_ENV).unwrap_or_else(|_| usage("no password in the environment"));
    let passfile = format!("{state}.pass");
    std::fs::write(&passfile, format!("{pw}\n")).expect("write the passfile");
    let argv: Vec<String> = [
        "imapferry",
        "sync",
        "--host1",
        "127.0.0.1",
        "--port1",
        old_port,
        "--user1",
        old_user,
        "--passfile1",
        &passfile,
        "--host2",
        "127.0.0.1",
        "--port2",
        new_port,
        "--user2",
        new_user,
        "--passfile2",
        &passfile,
        "--state",
        state,
        "--nolog",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let code = imapferry::cli::main_with_args(argv);
    println!(
        "BENCH-PASS transferred=0 errors={} exit={code}",
        u8::from(code != 0)
    );
}

// ---------------------------------------------------------------------------------------------
// dsync (doveadm backup -R over imapc).

/// Pulls OLD alice into NEW `new_user` with `doveadm backup -R ... imapc:` and measures it.
/// doveadm runs as root and switches to the mail user itself; it writes the NEW Maildir directly
/// (no NEW IMAP server involved) and reads OLD over one imapc connection.
fn dsync_pass(
    launcher: &mut Launcher,
    old: &Old,
    new: &Dovecot,
    new_user: &str,
    cpu: &Cpu,
    label: &'static str,
) -> Row {
    let mut args = vec![
        "doveadm".to_string(),
        "-c".to_string(),
        new.config_path().to_string_lossy().into_owned(),
    ];
    for o in [
        "imapc_host=127.0.0.1".to_string(),
        format!("imapc_port={}", old.port()),
        "imapc_user=alice".to_string(),
        format!("imapc_password={PW}"),
        "imapc_features=rfc822.size fetch-headers".to_string(),
        "mail_prefetch_count=20".to_string(),
    ] {
        args.push("-o".to_string());
        args.push(o);
    }
    if !old.server.prefix().is_empty() {
        // OLD's folders live below its namespace prefix ("INBOX."); imapc then shows
        // "INBOX.Archive" as "Archive", as NEW names it.
        let prefix = old.server.prefix().trim_end_matches(old.server.sep());
        args.extend(["-o".to_string(), format!("imapc_list_prefix={prefix}")]);
    }
    args.extend(["backup", "-R", "-u", new_user, "imapc:"].map(String::from));
    let c0 = cpu.sample();
    let m = launcher.measure(&args);
    let (old_cpu, new_cpu) = cpu.since(c0);
    // doveadm logs "Info: imapc(...): Connected to ..." on every run; show anything else.
    if !m.success || m.stderr.lines().any(|l| !l.contains(": Info: ")) {
        eprintln!(
            "{label}: doveadm {} stderr:\n{}",
            if m.success {
                "succeeded, but"
            } else {
                "FAILED;"
            },
            m.stderr
        );
    }
    println!(
        "  {label} -> {new_user}: {:.3}s  ru_maxrss {} KiB",
        m.wall, m.maxrss_kib
    );
    Row {
        label,
        wall: m.wall,
        client_cpu: m.cpu,
        old_cpu,
        new_cpu,
        rss_kib: Some(m.maxrss_kib),
        check: if m.success {
            "OK".to_string()
        } else {
            "doveadm FAILED".to_string()
        },
        ..Row::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring processes: wall time, peak RSS and CPU of a child (wait4), Dovecot CPU (/proc).

struct Measured {
    wall: f64,
    success: bool,
    maxrss_kib: u64,
    /// user + system seconds of the child (and anything it waited for).
    cpu: f64,
    /// The user part of `cpu`.
    user_cpu: f64,
    stdout: String,
    stderr: String,
}

/// Runs the measured commands. Linux seeds a new process's peak RSS (`ru_maxrss`) with the RSS of
/// the process that spawned it (after posix_spawn/vfork even with the spawner's *peak*), so a
/// child of this parent, which holds the whole test account in memory, would report at least
/// that. The launcher is this binary re-executed at the very start, while the parent is still
/// small; it spawns each command, reaps it with wait4(2) and reports exit status, ru_maxrss, CPU
/// and wall time (the RSS floor is then the launcher's own few MiB). Protocol: one line per
/// command on its stdin (`stdout-file TAB stderr-file TAB argv...`), one line back
/// (`ok maxrss_kib cpu_s wall_s`).
struct Launcher {
    child: std::process::Child,
    to: Option<std::process::ChildStdin>,
    from: std::io::BufReader<std::process::ChildStdout>,
    dir: tempfile::TempDir,
    runs: usize,
}

impl Launcher {
    fn start() -> Launcher {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .arg(LAUNCHER_FLAG)
            .env(PW_ENV, PW)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn launcher");
        Launcher {
            to: child.stdin.take(),
            from: std::io::BufReader::new(child.stdout.take().unwrap()),
            child,
            dir: tempfile::tempdir().expect("tempdir"),
            runs: 0,
        }
    }

    fn measure(&mut self, argv: &[String]) -> Measured {
        use std::io::{BufRead, Write};
        self.runs += 1;
        let out = self.dir.path().join(format!("{}.out", self.runs));
        let err = self.dir.path().join(format!("{}.err", self.runs));
        let mut line = format!("{}\t{}", out.display(), err.display());
        for a in argv {
            assert!(!a.contains(['\t', '\n']), "argument with a tab or newline");
            line.push('\t');
            line.push_str(a);
        }
        line.push('\n');
        let to = self.to.as_mut().unwrap();
        to.write_all(line.as_bytes()).expect("write to launcher");
        to.flush().expect("flush launcher");
        let mut reply = String::new();
        self.from.read_line(&mut reply).expect("read from launcher");
        let f: Vec<&str> = reply.split_whitespace().collect();
        assert_eq!(f.len(), 5, "launcher said {reply:?}");
        Measured {
            success: f[0] == "1",
            maxrss_kib: f[1].parse().unwrap(),
            cpu: f[2].parse().unwrap(),
            wall: f[3].parse().unwrap(),
            user_cpu: f[4].parse().unwrap(),
            stdout: std::fs::read_to_string(out).unwrap_or_default(),
            stderr: std::fs::read_to_string(err).unwrap_or_default(),
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        drop(self.to.take()); // EOF ends the launcher's loop
        let _ = self.child.wait();
    }
}

/// The launcher's loop (see `Launcher`).
fn launcher() {
    use std::io::{BufRead, Write};
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let f: Vec<&str> = line.split('\t').collect();
        let [out, err, program, args @ ..] = &f[..] else {
            panic!("launcher: bad request {line:?}");
        };
        let file = |p: &str| std::fs::File::create(p).expect("create output file");
        let t = Instant::now();
        let spawned = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file(out))
            .stderr(file(err))
            .spawn();
        let reply = match spawned {
            Ok(child) => {
                let mut status = 0;
                // SAFETY: an all-zero rusage is valid; wait4 reaps our own child, which is
                // waited for nowhere else (the `Child` handle is dropped without waiting).
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                let pid =
                    unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
                assert!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
                let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                format!(
                    "{} {} {:.3} {:.4} {:.3}\n",
                    ok as u8,
                    ru.ru_maxrss,
                    tv(ru.ru_utime) + tv(ru.ru_stime),
                    t.elapsed().as_secs_f64(),
                    tv(ru.ru_utime)
                )
            }
            Err(e) => {
                let _ = std::fs::write(err, format!("spawn {program}: {e}\n"));
                "0 0 0 0 0\n".to_string()
            }
        };
        stdout.write_all(reply.as_bytes()).expect("launcher reply");
        stdout.flush().expect("launcher flush");
    }
}
