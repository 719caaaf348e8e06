//! Mixed-command stress benchmark with state checking (issue 14, items 1 and 5): several clients
//! run random IMAP commands (SELECT, FETCH, STORE, UID SEARCH, APPEND, EXPUNGE, COPY, MOVE,
//! STATUS, NOOP, now and then LOGOUT and a new login) as fast as they can, straight to NEW,
//! through the plain proxy and through the migration proxy (`[old]` configured, the accounts
//! migrated before), and every client checks every answer against its own model of the mailbox.
//!
//! NEW and OLD are private Dovecot 2.3 instances (`Layout::Slash`, `mail_fsync = never`). Each
//! path has its own users (`d0`…, `p0`…, `m0`…; a path's runs never see another path's changes),
//! each with INBOX (200 messages), `Work` and `Archive` (100 each), 1–20 KB. The direct and
//! plain-proxy users are seeded straight on NEW; the migration proxy's users on OLD, then
//! migrated through the proxy (login, SELECT and STATUS of each folder until NEW has them all;
//! `auth = "same"`). Both proxies run as separate processes (this release binary re-executed with
//! a hidden `--proxy-child`, which runs exactly what `imapferry proxy --config FILE` runs).
//!
//! The driver: one tokio task per client (`--clients`, default 10), one user each, raw IMAP over
//! TCP with a seeded RNG, weights roughly those of Dovecot's imaptest. A client models the folders
//! it has seen: UIDs in sequence order and each message's flags, loaded at SELECT (EXISTS and
//! `UID FETCH 1:* (FLAGS)`) and updated from every untagged response (EXISTS, EXPUNGE, FETCH),
//! from APPENDUID and COPYUID for folders not selected. Checked: every tagged answer is OK;
//! FETCH answers exactly the messages asked for, with the model's UID and flags (and BODY[] as
//! long as RFC822.SIZE); STORE answers the model's flags plus or minus the stored one and nothing
//! else changes; EXPUNGE removes exactly the model's `\Deleted` messages; APPEND to the selected
//! folder shows up as one EXISTS with APPENDUID's UID; COPY and MOVE answer COPYUID for exactly
//! the UIDs given, MOVE expunges exactly those; UID SEARCH (ALL, DELETED, FLAGGED, UNSEEN,
//! KEYWORD) answers the model's UIDs; STATUS (MESSAGES, UNSEEN, UIDNEXT) and a later SELECT agree
//! with the model, also after a new login. After each run, untimed, every client selects every
//! folder it knows once more and compares. A mismatch is counted as an error, printed, the model
//! takes the server's word and the run goes on. Folders are kept near their size: APPEND, COPY
//! and MOVE into a folder at twice its seeded size become `\Deleted` + EXPUNGE there instead.
//! In a round every path's clients draw from the same seeds: paths compared side by side get
//! the same commands (as far as the servers' answers, which steer them, agree).
//!
//! Measurement: an untimed warm-up run per path (`--warmup` seconds, default 5), then `--rounds`
//! (default 3) rounds of `--seconds` (default 30) per path, the paths' order rotating from round
//! to round. A run's clients log in (untimed), start together and stop issuing commands at the
//! deadline; its rate is commands answered over the time to the last answer. The proxy's CPU
//! (/proc/PID/task/*/schedstat) and the Dovecot trees' (/proc/PID/stat) are read at the start
//! and, after the clients stopped, once the proxy has been idle for 250 ms (the migration proxy's
//! mirror of the run's writes on OLD included). The tables show medians over the rounds (rates,
//! CPU per 1,000 commands) and over every command of every round (latency per kind), and the
//! targets' ratios: the migration proxy's time per command at most 1.10× the plain proxy's, its
//! CPU per command at most 1.5× the plain proxy's. The clients' CPU (this process's) is read
//! too, for a limit measured in the same run: where the CPUs are the bottleneck, a path's rate
//! is at most the CPUs over what a command costs on all of them (clients, NEW, OLD, proxy), and
//! the migration proxy's yardstick is the plain proxy's rate scaled to the migration path's
//! server work (OLD's mirror included) at the plain proxy's CPU. Timings are printed, never
//! asserted.
//!
//! After the rounds, two checks of the migration proxy that clients cannot see: its mirror
//! should have made OLD hold what NEW holds, so with one idle session per user open (with
//! `auth = "same"` the proxy can write to OLD only while the user is logged in) every folder's
//! messages (Message-Id) and flags are compared on OLD and NEW, every 5 s for up to a minute;
//! and each proxy's WARN/ERROR log lines are counted, grouped by text. Each migration proxy
//! (with an admin port on loopback) also says what its state store did over each run, from
//! `/metrics`: reads and write transactions per 1,000 client commands, and the mean time a
//! write's OK waited for its journal commit (`imapferry_journal_wait_seconds`).
//!
//! `STRESS_KEEP_LOG=FILE` keeps each migration proxy's whole log in `FILE.0` (`FILE.1` for the
//! other build), the plain proxy's in `FILE.0.plain`, and the migration proxy's state store in
//! `FILE.0.db` (with `-wal`): the journal's entries.
//!
//! The journal's floor, measured in the same run: a migration proxy with `[migration]
//! mirror_paused` (its users `j0`…) tracks and journals every write before its OK, as the
//! migration proxy does, and sends nothing to OLD; the line "migration proxy, mirror paused vs
//! plain proxy" gives what that costs, below which no mirroring migration proxy can go. After
//! the rounds its mirror is resumed by a reload (SIGHUP) and the mirror check waits up to three
//! minutes for the replay of everything it journaled. `--no-floor` leaves it out.
//!
//! `--rate N` paces the clients to N random steps a second together (each client one every
//! clients/N seconds; a step that needs a SELECT or a `\Deleted` first sends two commands)
//! instead of as many as they can: below every path's capacity, each path does the same work in
//! the same time, and its CPU per command is not the share of two saturated CPUs the scheduler
//! gave it (a saturated migration proxy's mirror works through a backlog in large batches,
//! however many commands came). Paced, rates only say whether a path kept the pace: the time
//! per command compared is the mean latency over every command of every round.
//!
//! `--live-pickup MODE` sets every migration proxy's `[migration] live_pickup` (idle, poll or
//! off; the proxy's default, idle, when not given). The paused proxy's too: with "off" each of
//! its SELECTs checks OLD, and it is no longer the journal's floor.
//!
//! `--old-nice N` adds a path: the migration proxy again (same process, same users), run with
//! OLD's Dovecot at scheduling priority N (0–19; back to 0 for every other path, so the run
//! needs root). In a migration OLD is another host; here its processes share the CPUs with NEW
//! and the proxies. At 19 OLD yields the CPU to them, and the two migration paths, interleaved
//! in every round, show how much of the migration proxy's latency is OLD's work competing for
//! the CPUs (OLD still does all of it, and its CPU is counted). A diagnostic beside the
//! migration proxy's own figure, not a replacement for it.
//!
//! `--spin` keeps every CPU busy with a `SCHED_IDLE` spinner for the whole run. Without it, a
//! path's latency includes waking idle CPUs, which on a VM costs the host's halt and wake-up:
//! a path whose own work keeps the CPUs busy (the migration proxy's mirror, OLD's Dovecot) is
//! answered faster for it, and on a quiet VM the migration proxy has been measured below the
//! plain proxy, and even below direct. With it, the latencies compare the work on each path.
//!
//! Usage: TMPDIR=/dev/shm cargo run --release --example stress_bench -- [--clients 10]
//! [--seconds 30] [--rounds 3] [--warmup 5] [--seed 1] [--proxy-exe PATH] [--caches]
//! [--no-floor] [--rate N] [--live-pickup MODE] [--old-nice N] [--spin].
//! `--proxy-exe` names another build of this example: its plain and migration proxies take their
//! turns too, marked "(other)", with users of their own. `--caches` adds a migration proxy with
//! `[migration] keep_client_caches` (its users `c0`…, their folders showing OLD's numbers), and
//! the line "migration proxy, caches vs migration proxy" gives what the translation costs per
//! command.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::raw::{Item, parse_items};
use common::seed::Rng;
use common::{Dovecot, DovecotOptions, Layout, ProxyProcess, RawImap, lognormal_size, message};
use support::{CHILD_FLAG, loadavg, median};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const PW: &str = "bench-pw";
const FOLDERS: [&str; 3] = ["INBOX", "Work", "Archive"];
/// Messages seeded in each of `FOLDERS`; a folder at twice this is shrunk instead of grown.
const SEEDED: [usize; 3] = [200, 100, 100];
const STORE_FLAGS: [&str; 4] = ["\\Seen", "\\Flagged", "\\Deleted", "$Label"];
/// The flags an APPEND gives its message, one set picked at random.
const APPEND_FLAGS: [&[&str]; 4] = [&[], &["\\Seen"], &["$Label"], &["\\Seen", "\\Flagged"]];
const TIMEOUT: Duration = Duration::from_secs(60);
/// Error descriptions kept per run (the count goes on).
const ERROR_SAMPLES: usize = 12;

struct Config {
    clients: usize,
    seconds: f64,
    rounds: usize,
    warmup: f64,
    seed: u64,
    proxy_exe: Option<std::path::PathBuf>,
    /// Also a migration proxy with `keep_client_caches` (its users `c0`…).
    caches: bool,
    /// Also a migration proxy whose mirror is paused (its users `j0`…): the journal's floor.
    floor: bool,
    /// Random steps a second offered by all clients together; 0: as many as they can.
    rate: f64,
    /// `[migration] live_pickup` of every migration proxy (the proxy's default when unset).
    live_pickup: Option<String>,
    /// OLD's Dovecot runs at this scheduling priority (`--old-nice`).
    old_nice: Option<i32>,
    /// A `SCHED_IDLE` spinner per CPU keeps the CPUs from idling (`--spin`).
    spin: bool,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    support::run_child_if_asked(&args);
    let mut cfg = Config {
        clients: 10,
        seconds: 30.0,
        rounds: 3,
        warmup: 5.0,
        seed: 1,
        proxy_exe: None,
        caches: false,
        floor: true,
        rate: 0.0,
        live_pickup: None,
        old_nice: None,
        spin: false,
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || -> f64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{a} needs a number")))
        };
        match a.as_str() {
            "--clients" => cfg.clients = (value() as usize).max(1),
            "--seconds" => cfg.seconds = value().max(0.5),
            "--rounds" => cfg.rounds = (value() as usize).max(1),
            "--warmup" => cfg.warmup = value().max(0.0),
            "--seed" => cfg.seed = value() as u64,
            "--rate" => cfg.rate = value().max(0.0),
            "--proxy-exe" => {
                let path = it
                    .next()
                    .unwrap_or_else(|| usage("--proxy-exe needs a path"));
                cfg.proxy_exe = Some(path.into());
            }
            "--live-pickup" => {
                let mode = it
                    .next()
                    .filter(|m| ["idle", "poll", "off"].contains(&m.as_str()))
                    .unwrap_or_else(|| usage("--live-pickup needs idle, poll or off"));
                cfg.live_pickup = Some(mode.clone());
            }
            "--old-nice" => cfg.old_nice = Some(value().clamp(0.0, 19.0) as i32),
            "--caches" => cfg.caches = true,
            "--no-floor" => cfg.floor = false,
            "--spin" => cfg.spin = true,
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
        eprintln!("stress_bench: {why}");
    }
    eprintln!(
        "usage: TMPDIR=/dev/shm cargo run --release --example stress_bench -- [--clients N] \
         [--seconds S] [--rounds R] [--warmup S] [--seed N] [--proxy-exe OTHER_BUILD] [--caches] \
         [--no-floor] [--rate STEPS_PER_SECOND] [--live-pickup idle|poll|off] [--old-nice N] \
         [--spin]"
    );
    std::process::exit(64)
}

// ---------------------------------------------------------------------------------------------
// Setup and measurement

/// One way to NEW: its port, the prefix of its own users, the proxy process to measure.
#[derive(Clone)]
struct Path {
    name: String,
    short: String,
    port: u16,
    users: &'static str,
    proxy_pid: Option<u32>,
    /// Run with OLD's Dovecot at this scheduling priority (`--old-nice`; the same migration
    /// proxy and users as the path before it).
    old_nice: Option<i32>,
    /// A migration proxy's admin port, for its state store's operations (`/metrics`).
    admin: Option<u16>,
}

async fn run(cfg: &Config) -> Result<()> {
    let options = DovecotOptions {
        layout: Layout::Slash,
        sessions: Some(cfg.clients as u32 * 6 + 50),
        ..Default::default()
    };
    let new = Dovecot::start_with(options.clone());
    let old = Dovecot::start_with(options);
    let other = cfg.proxy_exe.is_some();
    // (prefix, seeded on OLD and migrated)
    let mut prefixes = vec![("d", false), ("p", false), ("m", true)];
    if other {
        prefixes.extend([("q", false), ("n", true)]);
    }
    if cfg.caches {
        prefixes.push(("c", true));
    }
    if cfg.floor {
        prefixes.push(("j", true));
    }
    let users: Vec<(String, String)> = prefixes
        .iter()
        .flat_map(|(p, _)| (0..cfg.clients).map(move |i| (format!("{p}{i}"), PW.to_string())))
        .collect();
    new.add_users(&users);
    old.add_users(&users);
    let t = Instant::now();
    for (prefix, on_old) in &prefixes {
        let server = if *on_old { &old } else { &new };
        seed_users(server.port(), prefix, cfg.clients, cfg.seed)?;
    }
    println!(
        "seeded {} users × (INBOX {}, Work {}, Archive {}) in {:.1}s",
        users.len(),
        SEEDED[0],
        SEEDED[1],
        SEEDED[2],
        t.elapsed().as_secs_f64()
    );

    let this = std::env::current_exe()?;
    let migrating = |extra: &str| migration_config(&old, cfg, extra);
    let mut proxies = vec![start_proxies(&this, new.port(), &migrating(""))];
    if let Some(exe) = &cfg.proxy_exe {
        proxies.push(start_proxies(exe, new.port(), &migrating("")));
    }
    let mut paths = vec![Path {
        name: "direct to NEW".into(),
        short: "direct".into(),
        port: new.port(),
        users: "d",
        proxy_pid: None,
        old_nice: None,
        admin: None,
    }];
    for (i, (plain, migration)) in proxies.iter().enumerate() {
        let (of, short_of, (pu, mu)) = if i == 0 {
            ("", "", ("p", "m"))
        } else {
            (" (other)", "(o)", ("q", "n"))
        };
        paths.push(Path {
            name: format!("plain proxy{of}"),
            short: format!("plain{short_of}"),
            port: plain.port,
            users: pu,
            proxy_pid: Some(plain.pid()),
            old_nice: None,
            admin: None,
        });
        let migration_path = Path {
            name: format!("migration proxy{of}"),
            short: format!("migr{short_of}"),
            port: migration.port,
            users: mu,
            proxy_pid: Some(migration.pid()),
            old_nice: None,
            admin: admin_port(migration),
        };
        let again = (i == 0).then_some(cfg.old_nice).flatten().map(|nice| Path {
            name: format!("migration proxy, OLD at nice {nice}"),
            short: format!("migr-n{nice}"),
            old_nice: Some(nice),
            ..migration_path.clone()
        });
        paths.extend([Some(migration_path), again].into_iter().flatten());
    }
    let caches = cfg.caches.then(|| {
        ProxyProcess::start(
            &this,
            &[CHILD_FLAG],
            new.port(),
            &migrating("keep_client_caches = true\n"),
        )
    });
    if let Some(proxy) = &caches {
        paths.push(Path {
            name: "migration proxy, caches".into(),
            short: "caches".into(),
            port: proxy.port,
            users: "c",
            proxy_pid: Some(proxy.pid()),
            old_nice: None,
            admin: admin_port(proxy),
        });
    }
    let floor = cfg.floor.then(|| {
        ProxyProcess::start(
            &this,
            &[CHILD_FLAG],
            new.port(),
            // The reload's outcome logged (at info; nothing else of the proxy's is).
            &format!(
                "{}[log]\nlevel = \"warn,imapferry::proxy::reload=info\"\n",
                migrating(&format!("{PAUSED}\n"))
            ),
        )
    });
    if let Some(proxy) = &floor {
        paths.push(Path {
            name: FLOOR.into(),
            short: "paused".into(),
            port: proxy.port,
            users: "j",
            proxy_pid: Some(proxy.pid()),
            old_nice: None,
            admin: admin_port(proxy),
        });
    }
    let t = Instant::now();
    for path in paths.iter().filter(|p| is_own_migration(p)) {
        migrate_users(path.port, path.users, cfg.clients, &old).await?;
    }
    println!(
        "migrated the migration proxies' users through them in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let cpu = support::Cpu::new(&old, &new);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _spinners = cfg.spin.then(|| Spinners::start(cpus)).transpose()?;
    println!(
        "NEW dovecot 127.0.0.1:{}, OLD dovecot 127.0.0.1:{} (Slash, mail_fsync=never); proxies of \
         {}{}; {} clients, {}s per run, {} rounds; {} CPUs{}; load average {}",
        new.port(),
        old.port(),
        this.display(),
        cfg.proxy_exe
            .as_ref()
            .map(|p| format!(" and, marked (other), of {}", p.display()))
            .unwrap_or_default(),
        cfg.clients,
        cfg.seconds,
        cfg.rounds,
        cpus,
        if cfg.spin {
            ", each kept busy by a SCHED_IDLE spinner"
        } else {
            ""
        },
        loadavg()
    );

    let mut results: Vec<Vec<RunResult>> = paths.iter().map(|_| Vec::new()).collect();
    // OLD's commands during each migration proxy's rounds (only its mirror and checks use OLD),
    // and NEW's during every path's (the clients', and what a proxy adds to them): (how many,
    // µs the server spent in them).
    let mut on_old: Vec<BTreeMap<String, (u64, u64)>> =
        paths.iter().map(|_| BTreeMap::new()).collect();
    let mut on_new = on_old.clone();
    for round in 0..=cfg.rounds {
        let secs = if round == 0 { cfg.warmup } else { cfg.seconds };
        if secs <= 0.0 {
            continue;
        }
        for turn in 0..paths.len() {
            let i = (turn + round) % paths.len();
            let seed = cfg.seed * 1_000_003 + round as u64 * 7919;
            if cfg.old_nice.is_some() {
                old.renice(paths[i].old_nice.unwrap_or(0));
            }
            old.commands(true);
            new.commands(true);
            let r = run_path(&paths[i], cfg, secs, seed, &cpu).await?;
            report_run(&paths[i], round, &r);
            if round > 0 {
                for (counts, server) in [(&mut on_old[i], &old), (&mut on_new[i], &new)] {
                    for (name, (n, us)) in server.command_times(false) {
                        let seen = counts.entry(name).or_default();
                        *seen = (seen.0 + n, seen.1 + us);
                    }
                }
                results[i].push(r);
            }
        }
    }
    print_tables(cfg, &paths, &results);
    for (server, counts) in [("NEW", &on_new), ("OLD", &on_old)] {
        for (i, path) in paths.iter().enumerate() {
            let commands: u64 = results[i].iter().map(|r| r.commands).sum();
            if (server == "OLD" && !path.name.starts_with("migration")) || commands == 0 {
                continue;
            }
            let per = |n: u64| n as f64 * 1000.0 / commands as f64;
            print_top(
                &format!("{server} commands per 1,000 client commands, {}", path.name),
                counts[i].iter().map(|(k, (n, _))| (k, per(*n))),
            );
            // An IDLE lasts as long as nothing happens: its time is not work.
            print_top(
                &format!(
                    "{server}'s time in them, ms per 1,000 client commands (its own clock, IDLE \
                     left out), {}",
                    path.name
                ),
                (counts[i].iter())
                    .filter(|(k, _)| k.as_str() != "IDLE")
                    .map(|(k, (_, us))| (k, per(*us) / 1000.0)),
            );
        }
    }
    for (i, path) in paths.iter().enumerate() {
        let commands: u64 = results[i].iter().map(|r| r.commands).sum();
        let ops: Option<Vec<StoreCounts>> = results[i].iter().map(|r| r.store_ops).collect();
        let Some(ops) = ops.filter(|_| commands > 0) else {
            continue;
        };
        let total = |f: fn(&StoreCounts) -> f64| ops.iter().map(f).sum::<f64>();
        let per = |n: f64| n * 1000.0 / commands as f64;
        let waits = total(|o| o.waits);
        let waited = if waits > 0.0 {
            format!(
                "; {:.0} writes waited for a journal commit, {:.3} ms each on average",
                per(waits),
                total(|o| o.waited) * 1000.0 / waits
            )
        } else {
            String::new()
        };
        println!(
            "state store operations per 1,000 client commands, {}: {:.0} reads, {:.0} write \
             transactions{waited}",
            path.name,
            per(total(|o| o.reads)),
            per(total(|o| o.writes)),
        );
    }
    println!("  load average after the rounds: {}", loadavg());
    if cfg.old_nice.is_some() {
        old.renice(0);
    }
    if let Some(proxy) = &floor {
        resume_mirror(proxy).await;
    }
    for path in paths.iter().filter(|p| is_own_migration(p)) {
        // The paused proxy replays everything it journaled in the rounds.
        let within = if path.name == FLOOR { 180 } else { 60 };
        mirror_check(&new, &old, path, cfg.clients, Duration::from_secs(within)).await;
    }
    for (i, (plain, migration)) in proxies.iter().enumerate() {
        let of = if i == 0 { "" } else { " (other)" };
        log_summary(&format!("plain proxy{of}"), &plain.stderr());
        log_summary(&format!("migration proxy{of}"), &migration.stderr());
        if i == 0
            && let Some(proxy) = &floor
        {
            log_summary(FLOOR, &proxy.stderr());
        }
        // For a closer look (e.g. with RUST_LOG=imapferry=debug): the whole log, kept.
        if let Ok(path) = std::env::var("STRESS_KEEP_LOG") {
            let path = format!("{path}.{i}");
            match std::fs::write(&path, migration.stderr()) {
                Ok(()) => println!("  migration proxy{of}: its log is in {path}"),
                Err(e) => println!("  migration proxy{of}: could not keep its log in {path}: {e}"),
            }
            let plain_path = format!("{path}.plain");
            match std::fs::write(&plain_path, plain.stderr()) {
                Ok(()) => println!("  plain proxy{of}: its log is in {plain_path}"),
                Err(e) => {
                    println!("  plain proxy{of}: could not keep its log in {plain_path}: {e}")
                }
            }
            // And its state store (the journal's entries say what each write was).
            for suffix in ["", "-wal"] {
                let from = migration.dir().join(format!("imapferry.db{suffix}"));
                if let Err(e) = std::fs::copy(&from, format!("{path}.db{suffix}")) {
                    println!(
                        "  migration proxy{of}: could not keep {}: {e}",
                        from.display()
                    );
                }
            }
        }
    }
    println!(
        "reproduce: TMPDIR=/dev/shm cargo run --release --example stress_bench -- --clients {} \
         --seconds {} --rounds {} --warmup {} --seed {}{}{}{}{}{}{}{}",
        cfg.clients,
        cfg.seconds,
        cfg.rounds,
        cfg.warmup,
        cfg.seed,
        cfg.proxy_exe
            .as_ref()
            .map(|p| format!(" --proxy-exe {}", p.display()))
            .unwrap_or_default(),
        if cfg.caches { " --caches" } else { "" },
        if cfg.floor { "" } else { " --no-floor" },
        if cfg.rate > 0.0 {
            format!(" --rate {}", cfg.rate)
        } else {
            String::new()
        },
        cfg.live_pickup
            .as_ref()
            .map(|mode| format!(" --live-pickup {mode}"))
            .unwrap_or_default(),
        cfg.old_nice
            .map(|n| format!(" --old-nice {n}"))
            .unwrap_or_default(),
        if cfg.spin { " --spin" } else { "" }
    );
    Ok(())
}

/// Seeds users `{prefix}0`… on the server at `port`: `Work` and `Archive` created, `SEEDED`
/// messages of 1–20 KB in each folder (one thread per user).
fn seed_users(port: u16, prefix: &str, users: usize, seed: u64) -> Result<()> {
    std::thread::scope(|s| {
        for u in 0..users {
            s.spawn(move || {
                let mut c = RawImap::connect("127.0.0.1", port);
                c.login(&format!("{prefix}{u}"), PW);
                let mut rng = Rng::new(seed ^ ((u as u64 + 1) * 0x9E37));
                for (f, folder) in FOLDERS.iter().enumerate() {
                    if *folder != "INBOX" {
                        c.create(folder);
                    }
                    for i in 0..SEEDED[f] {
                        let flags: &[&str] = if rng.chance(0.5) { &["\\Seen"] } else { &[] };
                        let id = ((u as u64) << 32) | ((f as u64) << 24) | i as u64;
                        c.append(folder, flags, None, &message(id, small_size(&mut rng)));
                    }
                }
                c.logout();
            });
        }
    });
    Ok(())
}

/// A message size of 1–20 KB, log-normal around 4 KB.
fn small_size(rng: &mut Rng) -> usize {
    lognormal_size(rng, 4_000, 0.8, 20_000).max(1_000)
}

/// The plain and the migration proxy, run by `exe` (this binary or another build of it).
fn start_proxies(
    exe: &std::path::Path,
    new_port: u16,
    migration_config: &str,
) -> (ProxyProcess, ProxyProcess) {
    let plain = ProxyProcess::start(exe, &[CHILD_FLAG], new_port, "");
    let migration = ProxyProcess::start(exe, &[CHILD_FLAG], new_port, migration_config);
    (plain, migration)
}

/// A migration proxy's `[old]` (`old` on loopback, the user's own login) and `[migration]`:
/// `--live-pickup`'s mode and `extra` (its own lines).
fn migration_config(old: &Dovecot, cfg: &Config, extra: &str) -> String {
    let pickup = cfg
        .live_pickup
        .as_ref()
        .map(|mode| format!("live_pickup = \"{mode}\"\n"))
        .unwrap_or_default();
    format!(
        "[old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"same\"\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\nallow_without_token = true\n\
         [migration]\n{pickup}{extra}",
        old.port(),
        common::free_port()
    )
}

/// The admin port in a proxy's configuration file, if it has one.
fn admin_port(proxy: &ProxyProcess) -> Option<u16> {
    let text = std::fs::read_to_string(proxy.dir().join("proxy.toml")).ok()?;
    let admin = text.split("[admin]").nth(1)?;
    let listen = admin.lines().find_map(|l| l.strip_prefix("listen = \""))?;
    listen
        .trim_end_matches('"')
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// `--spin`: a `yes` per CPU at `SCHED_IDLE` (`chrt --idle 0`), killed on drop. It runs only
/// when nothing else wants the CPU, so no path's latency includes a CPU waking from idle (on a
/// VM a halt and a wake-up by the host), and a path that keeps the CPUs busy with work of its
/// own is not answered faster for it. Its CPU is no path's: it is another process.
struct Spinners(Vec<std::process::Child>);

impl Spinners {
    fn start(n: usize) -> Result<Spinners> {
        let mut spinners = Spinners(Vec::new());
        for _ in 0..n {
            let child = std::process::Command::new("chrt")
                .args(["--idle", "0", "yes"])
                .stdout(std::process::Stdio::null())
                .spawn()?;
            spinners.0.push(child);
        }
        Ok(spinners)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Already gone is as good as killed; waited for so that none is left a zombie.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the migration proxy's `/metrics` counted so far of its state store: reads, write
/// transactions, and its users' writes that waited for a journal commit with their total wait
/// in seconds (none from a build before the wait was counted).
#[derive(Clone, Copy)]
struct StoreCounts {
    reads: f64,
    writes: f64,
    waits: f64,
    waited: f64,
}

impl std::ops::Sub for StoreCounts {
    type Output = StoreCounts;
    fn sub(self, before: StoreCounts) -> StoreCounts {
        StoreCounts {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            waits: self.waits - before.waits,
            waited: self.waited - before.waited,
        }
    }
}

/// The proxy's [`StoreCounts`] so far, from its `/metrics`.
fn store_counts(admin: u16) -> Option<StoreCounts> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    Some(StoreCounts {
        reads: value("imapferry_store_operations_total{kind=\"read\"}")?,
        writes: value("imapferry_store_operations_total{kind=\"write\"}")?,
        waits: value("imapferry_journal_wait_seconds_count").unwrap_or(0.0),
        waited: value("imapferry_journal_wait_seconds_sum").unwrap_or(0.0),
    })
}

/// `what: total (the ten largest items)`.
fn print_top<'a>(what: &str, items: impl Iterator<Item = (&'a String, f64)>) {
    let mut top: Vec<(&String, f64)> = items.collect();
    let total: f64 = top.iter().map(|(_, v)| v).sum();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let list: Vec<String> = (top.iter().take(10))
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    println!("{what}: {total:.0} ({})", list.join(", "));
}

/// A migration proxy's own path (not its `--old-nice` rerun): its users are migrated through it
/// before the rounds and checked on OLD after them.
fn is_own_migration(p: &Path) -> bool {
    p.name.starts_with("migration") && p.old_nice.is_none()
}

/// The journal's floor: its path's name, and the key that pauses its mirror.
const FLOOR: &str = "migration proxy, mirror paused";
const PAUSED: &str = "mirror_paused = true";

/// Resumes the paused proxy's mirror as an operator would: the key turned off in its file, then
/// SIGHUP; returns once the proxy has reloaded.
async fn resume_mirror(proxy: &ProxyProcess) {
    let file = proxy.dir().join("proxy.toml");
    let resumed = std::fs::read_to_string(&file)
        .map(|text| text.replace(PAUSED, "mirror_paused = false"))
        .and_then(|text| std::fs::write(&file, text));
    if let Err(e) = resumed {
        return println!("  !!! {FLOOR}: could not rewrite {}: {e}", file.display());
    }
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status();
    if !hangup.is_ok_and(|s| s.success()) {
        return println!("  !!! {FLOOR}: SIGHUP failed");
    }
    let t = Instant::now();
    while !proxy.stderr().contains("changed: migration.mirror_paused") {
        if t.elapsed() > Duration::from_secs(20) {
            return println!("  !!! {FLOOR}: the reload did not resume its mirror");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Migrates users `{prefix}0`… through the migration proxy at `port`: login, then SELECT and
/// STATUS of each folder until NEW shows as many messages as OLD has.
async fn migrate_users(port: u16, prefix: &str, users: usize, old: &Dovecot) -> Result<()> {
    for u in 0..users {
        let user = format!("{prefix}{u}");
        let mut want = Vec::new();
        let mut o = RawImap::connect(old.host(), old.port());
        o.login(&user, PW);
        for folder in FOLDERS {
            want.push(o.status(folder).0 as usize);
        }
        o.logout();
        let mut c = Conn::connect(port).await?;
        c.simple(&format!("LOGIN {user} {PW}")).await?;
        for (folder, want) in FOLDERS.iter().zip(want) {
            c.simple(&format!("SELECT {folder}")).await?;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let status = c.simple(&format!("STATUS {folder} (MESSAGES)")).await?;
                let have = status
                    .iter()
                    .find_map(|l| status_value(l, "MESSAGES"))
                    .unwrap_or(0) as usize;
                if have == want {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{user} {folder}: NEW has {have} of OLD's {want} messages after 120s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        c.simple("LOGOUT").await?;
    }
    Ok(())
}

/// The WARN and ERROR lines of a proxy's log, grouped by their text with the timestamp dropped
/// and each number blanked: count and first instance of each.
fn log_summary(name: &str, log: &str) {
    let mut groups: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        let text = line.split_once(' ').map_or(line, |(_, rest)| rest).trim();
        let mut key = String::new();
        for c in text.chars() {
            match c.is_ascii_digit() {
                true if key.ends_with('#') => {}
                true => key.push('#'),
                false => key.push(c),
            }
        }
        groups.entry(key).or_insert((0, text.to_string())).0 += 1;
    }
    if groups.is_empty() {
        println!("  {name}: no WARN or ERROR in its log");
        return;
    }
    let total: usize = groups.values().map(|g| g.0).sum();
    println!(
        "  {name}: {total} WARN/ERROR lines in its log, {} kinds:",
        groups.len()
    );
    let mut by_count: Vec<_> = groups.into_values().collect();
    by_count.sort_by_key(|g| std::cmp::Reverse(g.0));
    for (n, first) in by_count.iter().take(8) {
        println!("    {n:>6}× {first}");
    }
}

/// After the rounds: the migration proxy mirrors every write on OLD, so each folder of its users
/// should hold the same messages (by Message-Id) with the same flags on OLD as on NEW. With
/// `auth = "same"` the proxy can write to OLD only while the user is logged in, so one idle
/// session per user stays open while OLD and NEW are compared every 5 s, for up to `within`.
async fn mirror_check(new: &Dovecot, old: &Dovecot, path: &Path, clients: usize, within: Duration) {
    let mut idle = Vec::new();
    for u in 0..clients {
        match Conn::login(path.port, &format!("{}{u}", path.users)).await {
            Ok(c) => idle.push(c),
            Err(e) => println!("  mirror check ({}): login failed: {e:#}", path.name),
        }
    }
    let t = Instant::now();
    let mut differ = Vec::new();
    while t.elapsed() < within {
        differ.clear();
        for u in 0..clients {
            let user = format!("{}{u}", path.users);
            for folder in FOLDERS {
                let on_new = folder_digest(new.port(), &user, folder);
                let on_old = folder_digest(old.port(), &user, folder);
                if let Some(d) = digest_diff(&on_new, &on_old) {
                    differ.push(format!("{user} {folder}: {d}"));
                }
            }
        }
        if differ.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for mut c in idle {
        let _ = c.simple("LOGOUT").await;
    }
    let folders = clients * FOLDERS.len();
    if differ.is_empty() {
        println!(
            "  mirror check ({}): OLD holds the same messages and flags as NEW in all {folders} \
             folders of its users ({:.0}s after the last round, users logged in)",
            path.name,
            t.elapsed().as_secs_f64()
        );
        return;
    }
    println!(
        "  !!! mirror check ({}): {} of {folders} folders still differ between OLD and NEW {}s \
         after the last round (users logged in meanwhile), the first:",
        path.name,
        differ.len(),
        within.as_secs()
    );
    for d in differ.iter().take(ERROR_SAMPLES) {
        println!("      {d}");
    }
}

/// (Message-Id, flags, UID) of every message of `folder`, sorted.
type Digest = Vec<(String, BTreeSet<String>, u32)>;

fn folder_digest(port: u16, user: &str, folder: &str) -> Digest {
    let mut c = RawImap::connect("127.0.0.1", port);
    c.login(user, PW);
    let mut out = Vec::new();
    if c.examine(folder) > 0 {
        for resp in c.exec("FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])") {
            let Some(rest) = resp.strip_prefix(b"* ") else {
                continue;
            };
            let items = parse_items(rest);
            let Some(Item::List(attrs)) = items.get(2) else {
                continue;
            };
            // (None: the server announcing another session's flag change, not a message asked.)
            let (mut id, mut flags, mut uid) = (None, BTreeSet::new(), 0);
            for pair in attrs.chunks(2) {
                let [name, value] = pair else { continue };
                let name = atom(name).unwrap_or("").to_ascii_uppercase();
                if name == "FLAGS" {
                    flags = flag_set(value);
                } else if name == "UID" {
                    uid = atom(value).and_then(|v| v.parse().ok()).unwrap_or(0);
                } else if name.starts_with("BODY[")
                    && let Item::Str(s) = value
                {
                    id = Some(String::from_utf8_lossy(s).trim().to_string());
                }
            }
            if let Some(id) = id {
                out.push((id, flags, uid));
            }
        }
    }
    c.logout();
    out.sort();
    out
}

/// What differs between NEW's and OLD's digests of a folder (Message-Ids and flags; UIDs are
/// only printed), or `None`.
fn digest_diff(on_new: &Digest, on_old: &Digest) -> Option<String> {
    let strip = |d: &Digest| -> Vec<(String, BTreeSet<String>)> {
        let mut v: Vec<_> = d.iter().map(|(id, f, _)| (id.clone(), f.clone())).collect();
        v.sort();
        v
    };
    let (bare_new, bare_old) = (strip(on_new), strip(on_old));
    if bare_new == bare_old {
        return None;
    }
    let ids = |d: &[(String, BTreeSet<String>)]| -> Vec<String> {
        d.iter().map(|(id, _)| id.clone()).collect()
    };
    let (new_ids, old_ids) = (ids(&bare_new), ids(&bare_old));
    // The ids in `a` beyond those in `b` (as multisets: COPY makes duplicates).
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        let mut b = b.to_vec();
        a.iter()
            .filter(|id| match b.iter().position(|x| x == *id) {
                Some(i) => {
                    b.swap_remove(i);
                    false
                }
                None => true,
            })
            .cloned()
            .collect()
    };
    // Every copy of the id on each side, as UID and flags.
    let copies = |d: &Digest, id: &str| -> Vec<String> {
        d.iter()
            .filter(|m| m.0 == id)
            .map(|(_, f, uid)| format!("{uid} {f:?}"))
            .collect()
    };
    // Ids on both sides whose copies' flags differ (as multisets: one copy's flags may differ
    // while another copy of the same message has them).
    let flags_of = |d: &[(String, BTreeSet<String>)], id: &str| -> Vec<BTreeSet<String>> {
        d.iter()
            .filter(|m| m.0 == id)
            .map(|m| m.1.clone())
            .collect()
    };
    let mut differing: Vec<&String> = new_ids
        .iter()
        .filter(|id| old_ids.contains(id) && flags_of(&bare_new, id) != flags_of(&bare_old, id))
        .collect();
    differing.dedup();
    let flag_diffs: Vec<String> = differing
        .into_iter()
        .take(2)
        .map(|id| {
            format!(
                "{id}: NEW {:?}, OLD {:?}",
                copies(on_new, id),
                copies(on_old, id)
            )
        })
        .collect();
    Some(format!(
        "NEW {} messages, OLD {}; only on NEW {:?}, only on OLD {:?}; flags differ e.g. \
         {flag_diffs:?}",
        on_new.len(),
        on_old.len(),
        only(&new_ids, &old_ids),
        only(&old_ids, &new_ids),
    ))
}

/// What one run of one path measured.
struct RunResult {
    commands: u64,
    secs: f64,
    errors: u64,
    samples: Vec<String>,
    /// Per `Kind`: seconds of every command.
    latency: Vec<Vec<f64>>,
    /// The proxy's CPU seconds from the start until it was idle after the run.
    proxy_cpu: Option<f64>,
    /// The Dovecot trees' CPU seconds (OLD, NEW) over the same span.
    dovecot_cpu: (f64, f64),
    /// This process's CPU seconds (the clients) while the clients ran.
    driver_cpu: f64,
    /// Seconds from the clients' last answer until the proxy was idle.
    tail: f64,
    /// Errors found by the untimed check after the run.
    final_errors: u64,
    /// The proxy's state store operations and journal waits over the same span as its CPU.
    store_ops: Option<StoreCounts>,
}

/// One run: `clients` sessions log in (untimed), run commands for `secs`, then (after the CPU
/// figures are taken) check each known folder once more and log out.
async fn run_path(
    path: &Path,
    cfg: &Config,
    secs: f64,
    seed: u64,
    cpu: &support::Cpu,
) -> Result<RunResult> {
    let clients = cfg.clients;
    // Each client's pace: one step every `clients / rate` seconds.
    let every = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 / cfg.rate));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..clients {
        let (port, user) = (path.port, format!("{}{i}", path.users));
        set.spawn(async move { Session::start(port, user, seed + i as u64).await });
    }
    let mut sessions = Vec::with_capacity(clients);
    while let Some(s) = set.join_next().await {
        sessions.push(s??);
    }
    let mut set = tokio::task::JoinSet::new();
    let cpu0 = path.proxy_pid.map(cpu_seconds);
    let ops0 = path.admin.and_then(store_counts);
    let dovecot0 = cpu.sample();
    let driver0 = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    for mut s in sessions.drain(..) {
        set.spawn(async move {
            s.work_until(deadline, every).await;
            let done = Instant::now();
            (s, done)
        });
    }
    let mut last = t0;
    while let Some(r) = set.join_next().await {
        let (s, done) = r?;
        last = last.max(done);
        sessions.push(s);
    }
    let elapsed = (last - t0).as_secs_f64();
    let driver_cpu = cpu_seconds(std::process::id()) - driver0;
    let tail_start = Instant::now();
    let proxy_cpu = match (path.proxy_pid, cpu0) {
        (Some(pid), Some(c0)) => Some(wait_idle(pid).await - c0),
        _ => None,
    };
    let tail = tail_start.elapsed().as_secs_f64();
    let dovecot_cpu = cpu.since(dovecot0);
    let store_ops = match (ops0, path.admin.and_then(store_counts)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };

    let mut result = RunResult {
        commands: 0,
        secs: elapsed,
        errors: 0,
        samples: Vec::new(),
        latency: vec![Vec::new(); Kind::ALL.len()],
        proxy_cpu,
        dovecot_cpu,
        driver_cpu,
        tail,
        final_errors: 0,
        store_ops,
    };
    for s in &sessions {
        result.commands += s.stats.commands;
        result.errors += s.stats.errors;
        for (all, mine) in result.latency.iter_mut().zip(&s.stats.latency) {
            all.extend(mine);
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for mut s in sessions {
        set.spawn(async move {
            let before = s.stats.errors;
            s.final_check().await;
            (s.stats.errors - before, s.stats.samples)
        });
    }
    while let Some(r) = set.join_next().await {
        let (errors, samples) = r?;
        result.final_errors += errors;
        let room = ERROR_SAMPLES.saturating_sub(result.samples.len());
        result.samples.extend(samples.into_iter().take(room));
    }
    Ok(result)
}

/// CPU time of every thread of a process so far, in seconds (/proc/PID/task/*/schedstat).
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

/// Waits until the proxy used under 2 ms of CPU in 250 ms (at most 30 s); its CPU seconds then.
async fn wait_idle(pid: u32) -> f64 {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut before = cpu_seconds(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = cpu_seconds(pid);
        if now - before < 0.002 || Instant::now() > give_up {
            return now;
        }
        before = now;
    }
}

fn report_run(path: &Path, round: usize, r: &RunResult) {
    let what = if round == 0 {
        "warm-up".to_string()
    } else {
        format!("round {round}")
    };
    println!(
        "  {what:<8} {:<24} {:>7} cmds in {:>5.1}s = {:>7.0}/s, errors {}{}{}",
        path.name,
        r.commands,
        r.secs,
        r.commands as f64 / r.secs,
        r.errors,
        if r.final_errors > 0 {
            format!(" + {} in the check after the run", r.final_errors)
        } else {
            String::new()
        },
        r.proxy_cpu
            .map(|c| format!(", proxy CPU {c:.2}s (idle {:.1}s after the run)", r.tail))
            .unwrap_or_default()
    );
    if r.errors + r.final_errors > 0 {
        println!(
            "  !!! {} STATE-CHECK ERRORS on {} ({what}), the first {}:",
            r.errors + r.final_errors,
            path.name,
            r.samples.len()
        );
        for s in &r.samples {
            println!("      {s}");
        }
    }
}

fn print_tables(cfg: &Config, paths: &[Path], results: &[Vec<RunResult>]) {
    let med = |i: usize, f: &dyn Fn(&RunResult) -> f64| median(results[i].iter().map(f).collect());
    let rate = |i: usize| med(i, &|r| r.commands as f64 / r.secs);
    let per_k = |r: &RunResult, cpu: f64| cpu * 1e6 / r.commands.max(1) as f64;
    let proxy_ms = |i: usize| med(i, &|r| r.proxy_cpu.map_or(f64::NAN, |c| per_k(r, c)));
    let errors = |i: usize| -> u64 { results[i].iter().map(|r| r.errors + r.final_errors).sum() };
    let plain = paths.iter().position(|p| p.short == "plain");
    println!(
        "\nmedians over {} rounds of {}s, {} clients (after a {}s warm-up); time/cmd = direct's \
         rate / the path's; CPU in ms per 1,000 commands",
        cfg.rounds, cfg.seconds, cfg.clients, cfg.warmup
    );
    println!(
        "  {:<24} {:>8} {:>9} {:>7} {:>10} {:>9} {:>10} {:>10}",
        "path", "cmds/s", "time/cmd", "errors", "proxy CPU", "vs plain", "NEW CPU", "OLD CPU"
    );
    for (i, p) in paths.iter().enumerate() {
        let vs_plain = plain.map_or(f64::NAN, |pl| proxy_ms(i) / proxy_ms(pl));
        println!(
            "  {:<24} {:>8.0} {:>8.3}× {:>7} {:>10.1} {:>8.2}× {:>10.1} {:>10.1}",
            p.name,
            rate(i),
            rate(0) / rate(i),
            errors(i),
            proxy_ms(i),
            vs_plain,
            med(i, &|r| per_k(r, r.dovecot_cpu.1)),
            med(i, &|r| per_k(r, r.dovecot_cpu.0)),
        );
    }
    for (what, q) in [("medians", 0.5), ("90th percentiles", 0.9)] {
        println!("\nlatency {what} over every command of every round, ms");
        print!("  {:<8} ", "command");
        for p in paths {
            print!("{:>10} ", p.short);
        }
        println!("{:>10}", "n (direct)");
        for (k, kind) in Kind::ALL.iter().enumerate() {
            print!("  {:<8} ", kind.name());
            for r in results {
                let all: Vec<f64> = r
                    .iter()
                    .flat_map(|r| r.latency[k].iter().copied())
                    .collect();
                print!("{:>10.3} ", percentile(all, q) * 1e3);
            }
            println!(
                "{:>10}",
                results[0].iter().map(|r| r.latency[k].len()).sum::<usize>()
            );
        }
    }
    // Over every command of every round (logins included), ms.
    let mean_latency = |i: usize| {
        let (sum, n) = (results[i].iter())
            .flat_map(|r| r.latency.iter().flatten())
            .fold((0.0, 0usize), |(s, n), l| (s + l, n + 1));
        sum * 1e3 / n.max(1) as f64
    };
    // A migration proxy's plain proxy: the same build's.
    let plain_of = |p: &Path| {
        paths
            .iter()
            .position(|q| {
                let own = p.short.split('-').next().unwrap_or_default();
                q.short == own.replace("migr", "plain")
            })
            .filter(|_| p.short.starts_with("migr"))
    };
    for (i, p) in paths.iter().enumerate() {
        let Some(pl) = plain_of(p) else {
            continue;
        };
        // Paced, a rate is the pace where a path keeps it: the time per command is the mean
        // latency of every command of every round.
        let time = |of: usize, against: usize| {
            if cfg.rate > 0.0 {
                let (a, b) = (mean_latency(of), mean_latency(against));
                format!("mean latency {:.3}× ({:.3} against {:.3} ms)", a / b, a, b)
            } else {
                format!("time per command {:.3}×", rate(against) / rate(of))
            }
        };
        println!(
            "\n{} vs {}: {} (target ≤ 1.10×), proxy CPU per command {:.2}× (target ≤ 1.5×); \
             {} vs direct: {}",
            p.name,
            paths[pl].name,
            time(i, pl),
            proxy_ms(i) / proxy_ms(pl),
            paths[pl].name,
            time(pl, 0)
        );
    }
    // What translating the numbers of a folder that keeps client caches costs.
    if let (Some(c), Some(m)) = (
        paths.iter().position(|p| p.short == "caches"),
        paths.iter().position(|p| p.short == "migr"),
    ) {
        println!(
            "\n{} vs {}: proxy CPU per command {:.2}× ({:+.1} ms per 1,000 commands), time per \
             command {:.3}×",
            paths[c].name,
            paths[m].name,
            proxy_ms(c) / proxy_ms(m),
            proxy_ms(c) - proxy_ms(m),
            rate(m) / rate(c)
        );
    }
    // The journal's floor: every write tracked and journaled before its OK, nothing sent to OLD.
    let at = |short: &str| paths.iter().position(|p| p.short == short);
    if let (Some(f), Some(pl), Some(m)) = (at("paused"), at("plain"), at("migr")) {
        println!(
            "\n{} vs {}: proxy CPU per command {:.2}×, mean latency {:.3}×, the journal's floor \
             (every write tracked and journaled before its OK, nothing sent to OLD); {} vs it: \
             {:.2}× (restated target ≤ 1.5×), the mirror's share {:.1} ms per 1,000 commands",
            paths[f].name,
            paths[pl].name,
            proxy_ms(f) / proxy_ms(pl),
            mean_latency(f) / mean_latency(pl),
            paths[m].name,
            proxy_ms(m) / proxy_ms(f),
            proxy_ms(m) - proxy_ms(f),
        );
    }
    let total: u64 = (0..paths.len()).map(errors).sum();
    if total > 0 {
        println!("\n!!! {total} STATE-CHECK ERRORS in the timed rounds (details above)");
    } else {
        println!("\nno state-check errors on any path");
    }
    if cfg.rate > 0.0 {
        // Paced, every path gets the same work: its CPU per command compares, its rate is the
        // pace (where it keeps up), and the CPU-bound figures below do not apply.
        return println!(
            "paced at {} random steps a second (all clients): CPU per command and latencies compare \
             at equal load",
            cfg.rate
        );
    }
    // Where the CPUs are the limit (NEW, OLD, the proxy and the clients share them), a path's
    // rate is at most the CPUs' time over the CPU time a command costs on all of them.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let spent = |i: usize, proxy: f64| {
        let all = |r: &RunResult| per_k(r, r.driver_cpu + r.dovecot_cpu.0 + r.dovecot_cpu.1);
        med(i, &all) + if proxy.is_nan() { 0.0 } else { proxy }
    };
    let bound = |ms: f64| cpus * 1e6 / ms;
    println!(
        "\nCPU-bound rates: {cpus} CPUs / the CPU a command costs (clients + NEW + OLD + proxy, \
         ms per 1,000 commands)"
    );
    for (i, p) in paths.iter().enumerate() {
        let ms = spent(i, proxy_ms(i));
        println!(
            "  {:<24} clients {:>6.1}  all {:>7.1}  bound {:>6.0} cmds/s, measured {:.2}× of it",
            p.name,
            med(i, &|r| per_k(r, r.driver_cpu)),
            ms,
            bound(ms),
            rate(i) / bound(ms)
        );
    }
    for (i, p) in paths.iter().enumerate() {
        let Some(pl) = plain_of(p) else {
            continue;
        };
        // The same servers' and clients' work, with a proxy that costs what the plain one does.
        let yardstick = bound(spent(i, proxy_ms(pl))) * rate(pl) / bound(spent(pl, proxy_ms(pl)));
        println!(
            "{}: yardstick (the plain proxy's rate, scaled to this path's CPU at the plain proxy's \
             own cost; OLD's mirror included) {yardstick:.0} cmds/s; time per command {:.3}× it \
             (restated target ≤ 1.10×)",
            p.name,
            yardstick / rate(i)
        );
    }
}

/// The `q` quantile (0..=1) of `v`, nearest rank; NaN when empty.
fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    if q == 0.5 {
        return median(v);
    }
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[((n as f64 * q).ceil() as usize).clamp(1, n) - 1],
    }
}

// ---------------------------------------------------------------------------------------------
// The client's model of a folder

/// One message as the client believes it is: UID 0 and no flags until fetched after an EXISTS.
#[derive(Clone, Debug, PartialEq)]
struct Msg {
    uid: u32,
    flags: Option<BTreeSet<String>>,
}

/// A folder's messages in sequence order.
#[derive(Clone, Debug, Default, PartialEq)]
struct Mailbox {
    msgs: Vec<Msg>,
}

impl Mailbox {
    fn len(&self) -> usize {
        self.msgs.len()
    }

    /// `* n EXISTS`: placeholders for the new messages; a shrinking count is an error.
    fn exists(&mut self, n: usize) -> Result<(), String> {
        if n < self.msgs.len() {
            return Err(format!("EXISTS {n} below the {} known", self.msgs.len()));
        }
        self.msgs.resize(
            n,
            Msg {
                uid: 0,
                flags: None,
            },
        );
        Ok(())
    }

    /// `* n EXPUNGE`: the message it removed.
    fn expunge(&mut self, seq: usize) -> Result<Msg, String> {
        if seq == 0 || seq > self.msgs.len() {
            return Err(format!("EXPUNGE {seq} of {} messages", self.msgs.len()));
        }
        Ok(self.msgs.remove(seq - 1))
    }

    fn uids(&self) -> Vec<u32> {
        self.msgs.iter().map(|m| m.uid).collect()
    }

    fn max_uid(&self) -> u32 {
        self.msgs.iter().map(|m| m.uid).max().unwrap_or(0)
    }

    /// UIDs of the messages with (`has`) or without `flag`; `None` while some flags are unknown.
    fn with_flag(&self, flag: &str, has: bool) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        for m in &self.msgs {
            if m.flags.as_ref()?.contains(flag) == has {
                out.push(m.uid);
            }
        }
        Some(out)
    }

    fn flags_of(&self, uid: u32) -> Option<BTreeSet<String>> {
        self.msgs.iter().find(|m| m.uid == uid)?.flags.clone()
    }

    /// Sequence number of the first message not fetched since its EXISTS.
    fn first_unknown(&self) -> Option<usize> {
        self.msgs
            .iter()
            .position(|m| m.uid == 0 || m.flags.is_none())
            .map(|i| i + 1)
    }

    fn push(&mut self, uid: u32, flags: Option<BTreeSet<String>>) {
        self.msgs.push(Msg { uid, flags });
    }

    /// What differs between the model (`self`) and `server`, or `None`.
    fn diff(&self, server: &Mailbox) -> Option<String> {
        if self == server {
            return None;
        }
        let mine: BTreeSet<u32> = self.uids().into_iter().collect();
        let theirs: BTreeSet<u32> = server.uids().into_iter().collect();
        let missing: Vec<_> = mine.difference(&theirs).take(5).collect();
        let extra: Vec<_> = theirs.difference(&mine).take(5).collect();
        let flags: Vec<String> = server
            .msgs
            .iter()
            .filter_map(|m| {
                let want = self.flags_of(m.uid)?;
                (Some(&want) != m.flags.as_ref())
                    .then(|| format!("uid {} {:?} not {:?}", m.uid, m.flags, want))
            })
            .take(3)
            .collect();
        Some(format!(
            "model {} messages, server {}; missing uids {missing:?}, extra uids {extra:?}, \
             flags {flags:?}",
            self.len(),
            server.len()
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Commands, weights, per-kind statistics

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Login,
    Select,
    Fetch,
    Store,
    Search,
    Append,
    Expunge,
    Copy,
    Move,
    Status,
    Noop,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::Login,
        Kind::Select,
        Kind::Fetch,
        Kind::Store,
        Kind::Search,
        Kind::Append,
        Kind::Expunge,
        Kind::Copy,
        Kind::Move,
        Kind::Status,
        Kind::Noop,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Login => "LOGIN",
            Kind::Select => "SELECT",
            Kind::Fetch => "FETCH",
            Kind::Store => "STORE",
            Kind::Search => "SEARCH",
            Kind::Append => "APPEND",
            Kind::Expunge => "EXPUNGE",
            Kind::Copy => "COPY",
            Kind::Move => "MOVE",
            Kind::Status => "STATUS",
            Kind::Noop => "NOOP",
        }
    }
}

/// What a client does next, with its weight (roughly imaptest's mix; `Kind::Login` stands for
/// LOGOUT and a new login).
const WEIGHTS: [(Kind, u64); 11] = [
    (Kind::Select, 8),
    (Kind::Fetch, 30),
    (Kind::Store, 20),
    (Kind::Search, 6),
    (Kind::Append, 7),
    (Kind::Expunge, 5),
    (Kind::Copy, 4),
    (Kind::Move, 4),
    (Kind::Status, 5),
    (Kind::Noop, 3),
    (Kind::Login, 1),
];

#[derive(Default)]
struct Stats {
    commands: u64,
    errors: u64,
    samples: Vec<String>,
    latency: Vec<Vec<f64>>,
}

/// What one command's responses said, besides what went into the model.
#[derive(Default)]
struct Reply {
    ok: bool,
    tagged: String,
    fetched: Vec<Fetched>,
    /// UIDs of the messages `* n EXPUNGE` removed.
    expunged: Vec<u32>,
    search: Option<Vec<u32>>,
    /// (MESSAGES, UIDNEXT, UNSEEN) of a `* STATUS`.
    status: Option<(u32, u32, u32)>,
    /// COPYUID (source UIDs, destination UIDs), tagged or untagged.
    copyuid: Option<(Vec<u32>, Vec<u32>)>,
}

/// One `* n FETCH`, after the model took it.
struct Fetched {
    uid: u32,
    /// The model's flags before, the server's now (if FLAGS was in the response).
    before: Option<BTreeSet<String>>,
    flags: Option<BTreeSet<String>>,
    size: Option<usize>,
    header: Option<usize>,
    body: Option<usize>,
}

// ---------------------------------------------------------------------------------------------
// The client

/// One client: its connection, its models of the folders it has seen, its statistics.
struct Session {
    conn: Conn,
    port: u16,
    user: String,
    rng: Rng,
    folders: BTreeMap<&'static str, Mailbox>,
    selected: Option<&'static str>,
    /// Index in the selected folder where messages announced by EXISTS outside SELECT begin.
    arrived_from: Option<usize>,
    /// APPENDs to the selected folder not seen yet: (UID, flags).
    expect_new: Vec<(u32, BTreeSet<String>)>,
    next_message: u64,
    /// The command being answered (for error messages).
    current: String,
    stats: Stats,
}

impl Session {
    async fn start(port: u16, user: String, seed: u64) -> Result<Session> {
        let conn = Conn::login(port, &user).await?;
        Ok(Session {
            conn,
            port,
            user,
            rng: Rng::new(seed),
            folders: BTreeMap::new(),
            selected: None,
            arrived_from: None,
            expect_new: Vec::new(),
            next_message: seed << 20,
            current: String::new(),
            stats: Stats {
                latency: vec![Vec::new(); Kind::ALL.len()],
                ..Default::default()
            },
        })
    }

    fn error(&mut self, what: String) {
        self.stats.errors += 1;
        if self.stats.samples.len() < ERROR_SAMPLES {
            let folder = self.selected.unwrap_or("-");
            self.stats.samples.push(format!(
                "{} in {folder}, `{}`: {what}",
                self.user, self.current
            ));
        }
    }

    fn live(&mut self) -> Option<&mut Mailbox> {
        self.folders.get_mut(self.selected?)
    }

    fn live_len(&self) -> usize {
        self.selected
            .and_then(|f| self.folders.get(f))
            .map_or(0, Mailbox::len)
    }

    /// Runs random commands until `deadline`, one every `every` at most; a broken connection
    /// is counted and replaced.
    async fn work_until(&mut self, deadline: Instant, every: Option<Duration>) {
        let mut next = Instant::now();
        while Instant::now() < deadline {
            if let Some(every) = every {
                // A client behind its pace does not catch up by bursts.
                next = (next + every).max(Instant::now());
                tokio::time::sleep_until(next.into()).await;
            }
            if let Err(e) = self.step().await {
                self.error(format!("connection: {e:#}"));
                self.folders.clear();
                self.selected = None;
                self.expect_new.clear();
                match Conn::login(self.port, &self.user).await {
                    Ok(c) => self.conn = c,
                    Err(e) => {
                        self.error(format!("reconnect: {e:#}"));
                        return;
                    }
                }
            }
        }
    }

    /// One random command (or two: a missing SELECT, a `\Deleted` before EXPUNGE), then the
    /// messages that EXISTS announced are fetched and matched to the APPENDs expecting them.
    async fn step(&mut self) -> Result<()> {
        let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.below(total);
        let mut kind = Kind::Noop;
        for (k, w) in WEIGHTS {
            if pick < w {
                kind = k;
                break;
            }
            pick -= w;
        }
        let needs_messages = matches!(
            kind,
            Kind::Fetch | Kind::Store | Kind::Expunge | Kind::Copy | Kind::Move
        );
        if self.selected.is_none() && kind != Kind::Login {
            let folder = *self.rng.pick(&FOLDERS);
            return self.select(folder).await;
        }
        if needs_messages && self.live_len() == 0 {
            kind = Kind::Append;
        }
        match kind {
            Kind::Login => self.relogin().await?,
            Kind::Select => {
                let folder = *self.rng.pick(&FOLDERS);
                self.select(folder).await?
            }
            Kind::Fetch => self.fetch().await?,
            Kind::Store => self.store().await?,
            Kind::Search => self.search().await?,
            Kind::Append => self.append().await?,
            Kind::Expunge => {
                let mark = 1 + self.rng.below(2) as usize;
                self.expunge(mark).await?
            }
            Kind::Copy | Kind::Move => self.copy_or_move(kind == Kind::Move).await?,
            Kind::Status => self.status().await?,
            Kind::Noop => {
                self.exchange(Kind::Noop, "NOOP", None).await?;
            }
        }
        self.settle().await
    }

    /// Sends one command (with a synchronising literal if given), reads to its tagged answer,
    /// applies every untagged response to the model and checks what needs no context: the tagged
    /// status, and that no flags changed outside STORE.
    async fn exchange(&mut self, kind: Kind, cmd: &str, literal: Option<&[u8]>) -> Result<Reply> {
        self.current = if cmd.len() > 80 {
            format!("{}…", &cmd[..80])
        } else {
            cmd.to_string()
        };
        let t = Instant::now();
        let tag = self.conn.send(cmd).await?;
        let mut reply = Reply::default();
        let mut literal = literal;
        loop {
            let resp = self.conn.read_response().await?;
            if let Some(rest) = resp
                .strip_prefix(tag.as_bytes())
                .and_then(|r| r.strip_prefix(b" "))
            {
                reply.tagged = String::from_utf8_lossy(rest).trim_end().to_string();
                break;
            }
            if resp.starts_with(b"+") {
                match literal.take() {
                    Some(bytes) => self.conn.send_literal(bytes).await?,
                    None => bail!("unexpected continuation: {}", lossy(&resp)),
                }
                continue;
            }
            self.untagged(&resp, &mut reply);
        }
        self.stats.commands += 1;
        self.stats.latency[kind as usize].push(t.elapsed().as_secs_f64());
        reply.ok = reply.tagged.starts_with("OK");
        if !reply.ok {
            self.error(format!("tagged {}", reply.tagged));
        }
        if let Some(c) = reply.tagged.find("[COPYUID ").map(|i| &reply.tagged[i..]) {
            reply.copyuid = parse_copyuid(c);
        }
        if kind != Kind::Store {
            let changed: Vec<String> = reply
                .fetched
                .iter()
                .filter(|f| f.before.is_some() && f.flags.is_some() && f.before != f.flags)
                .map(|f| format!("uid {} {:?} → {:?}", f.uid, f.before, f.flags))
                .collect();
            if !changed.is_empty() {
                self.error(format!("flags changed without a STORE: {changed:?}"));
            }
        }
        Ok(reply)
    }

    /// Applies one untagged response to the model (EXISTS, EXPUNGE, FETCH) or notes it in
    /// `reply` (SEARCH, STATUS, COPYUID).
    fn untagged(&mut self, resp: &[u8], reply: &mut Reply) {
        let Some(rest) = resp.strip_prefix(b"* ") else {
            self.error(format!("not a response: {}", lossy(resp)));
            return;
        };
        let items = parse_items(rest);
        let word = |i: usize| {
            items
                .get(i)
                .and_then(atom)
                .unwrap_or("")
                .to_ascii_uppercase()
        };
        match (word(0).as_str(), word(1).as_str()) {
            ("SEARCH", _) => {
                reply.search = Some(items[1..].iter().filter_map(number).collect());
            }
            ("STATUS", _) => reply.status = items.get(2).map(parse_status),
            ("OK", _) => {
                let text = lossy(rest);
                if let Some(i) = text.find("[COPYUID ") {
                    reply.copyuid = parse_copyuid(&text[i..]);
                }
            }
            ("NO" | "BAD" | "BYE", _) => self.error(format!("untagged {}", lossy(resp))),
            (_, "EXISTS") => {
                let n = number(&items[0]).unwrap_or(0) as usize;
                let selecting = self.current.starts_with("SELECT");
                let before = self.live_len();
                let Some(live) = self.live() else { return };
                if let Err(e) = live.exists(n) {
                    self.error(e);
                } else if n > before && !selecting && self.arrived_from.is_none() {
                    self.arrived_from = Some(before);
                }
            }
            (_, "EXPUNGE") => {
                let seq = number(&items[0]).unwrap_or(0) as usize;
                let Some(live) = self.live() else { return };
                match live.expunge(seq) {
                    Ok(m) => reply.expunged.push(m.uid),
                    Err(e) => self.error(e),
                }
                if let Some(a) = self.arrived_from.as_mut()
                    && seq <= *a
                {
                    *a -= 1;
                }
            }
            (_, "FETCH") => {
                let seq = number(&items[0]).unwrap_or(0) as usize;
                match items.get(2) {
                    Some(Item::List(attrs)) => self.fetched(seq, attrs, reply),
                    _ => self.error(format!("FETCH without a list: {}", lossy(resp))),
                }
            }
            _ => {} // RECENT, FLAGS, OK [UIDVALIDITY …], CAPABILITY …
        }
    }

    /// `* seq FETCH (attrs)`: UID checked against (or filled into) the model, FLAGS taken.
    fn fetched(&mut self, seq: usize, attrs: &[Item], reply: &mut Reply) {
        let mut f = Fetched {
            uid: 0,
            before: None,
            flags: None,
            size: None,
            header: None,
            body: None,
        };
        let mut uid = None;
        for pair in attrs.chunks(2) {
            let [name, value] = pair else { continue };
            match atom(name).unwrap_or("").to_ascii_uppercase().as_str() {
                "UID" => uid = number(value),
                "FLAGS" => f.flags = Some(flag_set(value)),
                "RFC822.SIZE" => f.size = number(value).map(|n| n as usize),
                "BODY[HEADER]" => f.header = Some(string_len(value)),
                "BODY[]" => f.body = Some(string_len(value)),
                _ => {}
            }
        }
        let Some(live) = self.live() else {
            return self.error("FETCH with no folder selected".into());
        };
        let Some(m) = seq.checked_sub(1).and_then(|i| live.msgs.get_mut(i)) else {
            let n = live.len();
            return self.error(format!("FETCH of seq {seq}, {n} messages"));
        };
        let mut wrong_uid = None;
        match uid {
            Some(u) if m.uid == 0 => m.uid = u,
            Some(u) if m.uid != u => wrong_uid = Some((u, m.uid)),
            _ => {}
        }
        f.uid = m.uid;
        f.before = m.flags.clone();
        if let Some(flags) = &f.flags {
            m.flags = Some(flags.clone());
        }
        if let Some((got, want)) = wrong_uid {
            self.error(format!("seq {seq}: UID {got}, the model has {want}"));
        }
        reply.fetched.push(f);
    }

    /// Fetches the messages EXISTS announced and matches them to the APPENDs expecting them.
    async fn settle(&mut self) -> Result<()> {
        for attempt in 0..2 {
            if let Some(first) = self.live().and_then(|l| l.first_unknown()) {
                self.exchange(Kind::Fetch, &format!("FETCH {first}:* (UID FLAGS)"), None)
                    .await?;
            }
            if let Some(from) = self.arrived_from.take() {
                let arrived: Vec<Msg> = self
                    .live()
                    .map(|l| l.msgs[from..].to_vec())
                    .unwrap_or_default();
                for m in arrived {
                    let want = (!self.expect_new.is_empty()).then(|| self.expect_new.remove(0));
                    match want {
                        Some((uid, flags)) if uid == m.uid && Some(&flags) == m.flags.as_ref() => {}
                        Some((uid, flags)) => self.error(format!(
                            "new message uid {} {:?}, APPENDed uid {uid} {flags:?}",
                            m.uid, m.flags
                        )),
                        None => self.error(format!(
                            "unexpected new message uid {} {:?}",
                            m.uid, m.flags
                        )),
                    }
                }
            }
            if self.expect_new.is_empty() {
                return Ok(());
            }
            if attempt == 0 {
                self.exchange(Kind::Noop, "NOOP", None).await?;
            }
        }
        let missing = std::mem::take(&mut self.expect_new);
        self.error(format!(
            "APPENDed to the selected folder, never announced: {missing:?}"
        ));
        Ok(())
    }

    /// SELECT, then `UID FETCH 1:* (FLAGS)`; compared with the model if the folder is known.
    async fn select(&mut self, folder: &'static str) -> Result<()> {
        if !self.expect_new.is_empty() {
            self.settle().await?;
        }
        let known = self.folders.remove(folder);
        self.folders.insert(folder, Mailbox::default());
        self.selected = Some(folder);
        self.arrived_from = None;
        let reply = self
            .exchange(Kind::Select, &format!("SELECT {folder}"), None)
            .await?;
        if !reply.ok {
            self.folders.remove(folder);
            self.selected = None;
            return Ok(());
        }
        if self.live_len() > 0 {
            self.exchange(Kind::Fetch, "UID FETCH 1:* (FLAGS)", None)
                .await?;
        }
        self.arrived_from = None;
        let live = self.folders[folder].clone();
        if live.first_unknown().is_some() {
            self.error("UID FETCH 1:* left messages without UID or flags".into());
        }
        if live.uids().windows(2).any(|w| w[0] >= w[1]) {
            self.error("UIDs not ascending".into());
        }
        if let Some(d) = known.and_then(|k| k.diff(&live)) {
            self.error(format!("SELECT differs from the model: {d}"));
        }
        Ok(())
    }

    /// A few distinct random sequence numbers of the selected folder, ascending.
    fn pick_seqs(&mut self, max: usize) -> Vec<u32> {
        let len = self.live_len() as u32;
        if len == 0 {
            return Vec::new();
        }
        let n = 1 + self.rng.below(max as u64) as u32;
        if self.rng.chance(0.3) {
            let start = 1 + self.rng.below(len as u64) as u32;
            return (start..=(start + n - 1).min(len)).collect();
        }
        let set: BTreeSet<u32> = (0..n)
            .map(|_| 1 + self.rng.below(len as u64) as u32)
            .collect();
        set.into_iter().collect()
    }

    fn uids_at(&mut self, seqs: &[u32]) -> Vec<u32> {
        let live = self.live().map(|l| l.uids()).unwrap_or_default();
        seqs.iter().map(|&s| live[s as usize - 1]).collect()
    }

    /// FETCH of a few messages: (UID FLAGS), UID FETCH (FLAGS), the header or the whole body.
    async fn fetch(&mut self) -> Result<()> {
        let variant = self.rng.below(4);
        let seqs = self.pick_seqs(if variant == 3 { 2 } else { 5 });
        let uids = self.uids_at(&seqs);
        let cmd = match variant {
            0 => format!("FETCH {} (UID FLAGS)", seq_set(&seqs)),
            1 => format!("UID FETCH {} (FLAGS)", seq_set(&uids)),
            2 => format!(
                "FETCH {} (UID RFC822.SIZE BODY.PEEK[HEADER])",
                seq_set(&seqs)
            ),
            _ => format!("FETCH {} (UID RFC822.SIZE BODY.PEEK[])", seq_set(&seqs)),
        };
        let reply = self.exchange(Kind::Fetch, &cmd, None).await?;
        let got: BTreeSet<u32> = reply.fetched.iter().map(|f| f.uid).collect();
        if got != uids.iter().copied().collect() || reply.fetched.len() != uids.len() {
            let got: Vec<u32> = reply.fetched.iter().map(|f| f.uid).collect();
            self.error(format!("FETCH answered uids {got:?}, asked {uids:?}"));
        }
        for f in &reply.fetched {
            let bad = match variant {
                0 | 1 => f.flags.is_none(),
                2 => f.header.is_none_or(|h| h == 0 || Some(h) > f.size),
                _ => f.body.is_none() || f.body != f.size,
            };
            if bad {
                let what = format!(
                    "uid {}: flags {:?}, RFC822.SIZE {:?}, header {:?}, body {:?}",
                    f.uid, f.flags, f.size, f.header, f.body
                );
                self.error(what);
            }
        }
        Ok(())
    }

    /// A flag picked for STORE; `\Deleted` more often in a folder above its seeded size.
    fn pick_flag(&mut self) -> &'static str {
        let big = self.selected.is_some_and(|f| self.live_len() > seeded(f));
        if big && self.rng.chance(0.3) {
            return "\\Deleted";
        }
        STORE_FLAGS[self.rng.below(STORE_FLAGS.len() as u64) as usize]
    }

    /// STORE ±FLAGS (or .SILENT) of one flag on a few messages, by sequence number or UID.
    async fn store(&mut self) -> Result<()> {
        let seqs = self.pick_seqs(3);
        let uids = self.uids_at(&seqs);
        let flag = self.pick_flag();
        let add = self.rng.chance(0.6);
        let silent = self.rng.chance(0.2);
        let by_uid = self.rng.chance(0.5);
        self.store_flag(&seqs, &uids, flag, add, silent, by_uid)
            .await
    }

    async fn store_flag(
        &mut self,
        seqs: &[u32],
        uids: &[u32],
        flag: &str,
        add: bool,
        silent: bool,
        by_uid: bool,
    ) -> Result<()> {
        let Some(live) = self.live() else {
            return Ok(());
        };
        let mut expected: BTreeMap<u32, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
        for &uid in uids {
            let before = live.flags_of(uid).unwrap_or_default();
            let mut after = before.clone();
            if add {
                after.insert(flag.to_string());
            } else {
                after.remove(flag);
            }
            expected.insert(uid, (before, after));
        }
        let cmd = format!(
            "{}STORE {} {}FLAGS{} ({flag})",
            if by_uid { "UID " } else { "" },
            if by_uid { seq_set(uids) } else { seq_set(seqs) },
            if add { "+" } else { "-" },
            if silent { ".SILENT" } else { "" },
        );
        let reply = self.exchange(Kind::Store, &cmd, None).await?;
        let mut answered = BTreeSet::new();
        for f in &reply.fetched {
            answered.insert(f.uid);
            match expected.get(&f.uid) {
                None => self.error(format!("FETCH of uid {} not stored to", f.uid)),
                Some((_, after)) if f.flags.as_ref() != Some(after) => self.error(format!(
                    "uid {}: flags {:?}, expected {after:?}",
                    f.uid, f.flags
                )),
                _ => {}
            }
        }
        for (uid, (before, after)) in &expected {
            if !silent && !answered.contains(uid) && before != after {
                self.error(format!("no FETCH for uid {uid}, whose flags changed"));
            }
        }
        if let Some(live) = self.live() {
            for m in live.msgs.iter_mut() {
                if let Some((_, after)) = expected.get(&m.uid) {
                    m.flags = Some(after.clone());
                }
            }
        }
        Ok(())
    }

    /// UID SEARCH by one criterion, compared with the model.
    async fn search(&mut self) -> Result<()> {
        let (criterion, flag, has) = *self.rng.pick(&[
            ("ALL", "", true),
            ("DELETED", "\\Deleted", true),
            ("FLAGGED", "\\Flagged", true),
            ("UNSEEN", "\\Seen", false),
            ("KEYWORD $Label", "$Label", true),
        ]);
        let reply = self
            .exchange(Kind::Search, &format!("UID SEARCH {criterion}"), None)
            .await?;
        let Some(live) = self.live() else {
            return Ok(());
        };
        let want = if criterion == "ALL" {
            Some(live.uids())
        } else {
            live.with_flag(flag, has)
        };
        let mut got = reply.search.unwrap_or_default();
        got.sort_unstable();
        if let Some(mut want) = want {
            want.sort_unstable();
            if got != want {
                self.error(format!("UID SEARCH {criterion}: {got:?}, model {want:?}"));
            }
        }
        Ok(())
    }

    /// The folder to add to, or `None` after shrinking it (it was at twice its seeded size).
    async fn room_in(&mut self, folder: &'static str) -> Result<Option<&'static str>> {
        let len = if self.selected == Some(folder) {
            Some(self.live_len())
        } else {
            self.folders.get(folder).map(Mailbox::len)
        };
        if len.is_none_or(|n| n < 2 * seeded(folder)) {
            return Ok(Some(folder));
        }
        if self.selected != Some(folder) {
            self.select(folder).await?;
        }
        self.expunge(10).await?;
        Ok(None)
    }

    /// APPEND of a small message with a few flags to a random folder.
    async fn append(&mut self) -> Result<()> {
        let folder = *self.rng.pick(&FOLDERS);
        let Some(folder) = self.room_in(folder).await? else {
            return Ok(());
        };
        let flags = *self.rng.pick(&APPEND_FLAGS);
        self.next_message += 1;
        let size = small_size(&mut self.rng);
        let body = message(self.next_message, size);
        let cmd = format!("APPEND {folder} ({}) {{{}}}", flags.join(" "), body.len());
        let reply = self.exchange(Kind::Append, &cmd, Some(&body)).await?;
        if !reply.ok {
            return Ok(());
        }
        let Some(uid) = parse_appenduid(&reply.tagged) else {
            self.error(format!("APPEND without APPENDUID: {}", reply.tagged));
            self.folders.remove(folder);
            return Ok(());
        };
        let flags: BTreeSet<String> = flags.iter().map(|f| f.to_string()).collect();
        let max = self.folders.get(folder).map_or(0, Mailbox::max_uid);
        if uid <= max {
            self.error(format!("APPENDUID {uid} not above the model's {max}"));
        }
        if self.selected == Some(folder) {
            self.expect_new.push((uid, flags));
        } else if let Some(m) = self.folders.get_mut(folder) {
            m.push(uid, Some(flags));
        }
        Ok(())
    }

    /// `\Deleted` on up to `mark` messages when none has it, then EXPUNGE (or UID EXPUNGE of
    /// some of them): exactly the model's `\Deleted` messages (of the set) must go.
    async fn expunge(&mut self, mark: usize) -> Result<()> {
        let deleted = self
            .live()
            .and_then(|l| l.with_flag("\\Deleted", true))
            .unwrap_or_default();
        if deleted.len() < mark.min(self.live_len()) {
            let seqs = self.pick_seqs(mark);
            let uids = self.uids_at(&seqs);
            self.store_flag(&seqs, &uids, "\\Deleted", true, true, true)
                .await?;
        }
        let deleted = self
            .live()
            .and_then(|l| l.with_flag("\\Deleted", true))
            .unwrap_or_default();
        let (cmd, want) = if !deleted.is_empty() && self.rng.chance(0.2) {
            let some: Vec<u32> = deleted
                .iter()
                .copied()
                .filter(|_| self.rng.chance(0.5))
                .collect();
            let some = if some.is_empty() {
                vec![deleted[0]]
            } else {
                some
            };
            (format!("UID EXPUNGE {}", seq_set(&some)), some)
        } else {
            ("EXPUNGE".to_string(), deleted)
        };
        let reply = self.exchange(Kind::Expunge, &cmd, None).await?;
        let got: BTreeSet<u32> = reply.expunged.iter().copied().collect();
        if got != want.iter().copied().collect() || got.len() != reply.expunged.len() {
            self.error(format!(
                "expunged {:?}, the model's \\Deleted {want:?}",
                reply.expunged
            ));
        }
        Ok(())
    }

    /// UID COPY or UID MOVE of a few messages to another folder: COPYUID for exactly those, MOVE
    /// expunges exactly those; the target's model (if known) gets them with their flags.
    async fn copy_or_move(&mut self, is_move: bool) -> Result<()> {
        let Some(from) = self.selected else {
            return Ok(());
        };
        let others: Vec<&'static str> = FOLDERS.into_iter().filter(|f| *f != from).collect();
        let target = *self.rng.pick(&others);
        let Some(target) = self.room_in(target).await? else {
            return Ok(());
        };
        if self.selected != Some(from) {
            return Ok(()); // room_in had to select the target to shrink it
        }
        let seqs = self.pick_seqs(3);
        let uids = self.uids_at(&seqs);
        let flags: Vec<Option<BTreeSet<String>>> = uids
            .iter()
            .map(|&u| self.live().and_then(|l| l.flags_of(u)))
            .collect();
        let (kind, verb) = if is_move {
            (Kind::Move, "MOVE")
        } else {
            (Kind::Copy, "COPY")
        };
        let cmd = format!("UID {verb} {} {target}", seq_set(&uids));
        let reply = self.exchange(kind, &cmd, None).await?;
        if !reply.ok {
            self.folders.remove(target);
            return Ok(());
        }
        let Some((src, dst)) = reply.copyuid.clone() else {
            self.error(format!("{verb} without COPYUID: {}", reply.tagged));
            self.folders.remove(target);
            return Ok(());
        };
        let asked: BTreeSet<u32> = uids.iter().copied().collect();
        if src.iter().copied().collect::<BTreeSet<_>>() != asked || src.len() != dst.len() {
            self.error(format!("COPYUID {src:?} → {dst:?} for uids {uids:?}"));
            self.folders.remove(target);
            return Ok(());
        }
        if is_move {
            let gone: BTreeSet<u32> = reply.expunged.iter().copied().collect();
            if gone != asked || reply.expunged.len() != uids.len() {
                self.error(format!(
                    "MOVE expunged {:?}, moved {uids:?}",
                    reply.expunged
                ));
            }
        }
        let Some(model) = self.folders.get_mut(target) else {
            return Ok(());
        };
        let max = model.max_uid();
        let mut pairs: Vec<(u32, u32)> = src.into_iter().zip(dst).collect();
        pairs.sort_by_key(|p| p.1);
        for (s, d) in &pairs {
            let f = uids
                .iter()
                .position(|u| u == s)
                .and_then(|i| flags[i].clone());
            model.push(*d, f);
        }
        if pairs.first().is_some_and(|p| p.1 <= max) {
            self.error(format!(
                "COPYUID destination {pairs:?} not above the model's {max}"
            ));
        }
        Ok(())
    }

    /// STATUS of another folder: MESSAGES, UNSEEN and UIDNEXT agree with its model.
    async fn status(&mut self) -> Result<()> {
        let others: Vec<&'static str> = FOLDERS
            .into_iter()
            .filter(|f| Some(*f) != self.selected)
            .collect();
        let folder = *self.rng.pick(&others);
        let reply = self
            .exchange(
                Kind::Status,
                &format!("STATUS {folder} (MESSAGES UIDNEXT UNSEEN)"),
                None,
            )
            .await?;
        let Some((messages, uidnext, unseen)) = reply.status else {
            self.error("no STATUS response".into());
            return Ok(());
        };
        let Some(model) = self.folders.get(folder) else {
            return Ok(());
        };
        let want_unseen = model.with_flag("\\Seen", false).map(|v| v.len() as u32);
        if messages as usize != model.len()
            || uidnext <= model.max_uid()
            || want_unseen.is_some_and(|u| u != unseen)
        {
            let what = format!(
                "STATUS MESSAGES {messages} UNSEEN {unseen} UIDNEXT {uidnext}; model {} messages, \
                 {want_unseen:?} unseen, max uid {}",
                model.len(),
                model.max_uid()
            );
            self.error(what);
        }
        Ok(())
    }

    /// LOGOUT and a new login (the models stay: nobody else changes these folders).
    async fn relogin(&mut self) -> Result<()> {
        if !self.expect_new.is_empty() {
            self.settle().await?;
        }
        self.current = "LOGOUT".into();
        let tag = self.conn.send("LOGOUT").await?;
        let mut bye = false;
        loop {
            let resp = self.conn.read_response().await?;
            bye |= resp.starts_with(b"* BYE");
            if resp.starts_with(tag.as_bytes()) {
                if !resp[tag.len()..].starts_with(b" OK") || !bye {
                    self.error(format!("LOGOUT: {}", lossy(&resp)));
                }
                break;
            }
        }
        self.stats.commands += 1;
        self.selected = None;
        self.arrived_from = None;
        let t = Instant::now();
        self.conn = Conn::login(self.port, &self.user).await?;
        self.stats.commands += 1;
        self.stats.latency[Kind::Login as usize].push(t.elapsed().as_secs_f64());
        Ok(())
    }

    /// After a run (untimed): SELECT of every known folder against its model, then LOGOUT.
    async fn final_check(&mut self) {
        let known: Vec<&'static str> = self.folders.keys().copied().collect();
        for folder in known {
            if let Err(e) = self.select(folder).await {
                self.error(format!("final check: {e:#}"));
                return;
            }
        }
        let _ = self.conn.send("LOGOUT").await;
    }
}

fn seeded(folder: &str) -> usize {
    FOLDERS
        .iter()
        .position(|f| *f == folder)
        .map_or(100, |i| SEEDED[i])
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

fn atom(item: &Item) -> Option<&str> {
    match item {
        Item::Atom(a) => Some(a),
        _ => None,
    }
}

fn number(item: &Item) -> Option<u32> {
    atom(item)?.parse().ok()
}

fn string_len(item: &Item) -> usize {
    match item {
        Item::Str(s) => s.len(),
        _ => 0,
    }
}

/// A FLAGS list without `\Recent`.
fn flag_set(item: &Item) -> BTreeSet<String> {
    match item {
        Item::List(l) => l
            .iter()
            .filter_map(atom)
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .map(str::to_string)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// (MESSAGES, UIDNEXT, UNSEEN) of a STATUS attribute list.
fn parse_status(item: &Item) -> (u32, u32, u32) {
    let Item::List(l) = item else {
        return (0, 0, 0);
    };
    let get = |name: &str| {
        l.chunks(2)
            .find(|p| atom(&p[0]).is_some_and(|a| a.eq_ignore_ascii_case(name)))
            .and_then(|p| p.get(1).and_then(number))
            .unwrap_or(0)
    };
    (get("MESSAGES"), get("UIDNEXT"), get("UNSEEN"))
}

/// A value of a `* STATUS name (…)` line.
fn status_value(line: &[u8], name: &str) -> Option<u32> {
    let rest = line.strip_prefix(b"* STATUS ")?;
    let items = parse_items(rest);
    let Item::List(l) = items.get(1)? else {
        return None;
    };
    l.chunks(2)
        .find(|p| atom(&p[0]).is_some_and(|a| a.eq_ignore_ascii_case(name)))
        .and_then(|p| p.get(1).and_then(number))
}

/// `[COPYUID validity src dst]…` → (source UIDs, destination UIDs), sets expanded.
fn parse_copyuid(text: &str) -> Option<(Vec<u32>, Vec<u32>)> {
    let inner = text.strip_prefix("[COPYUID ")?.split(']').next()?;
    let mut parts = inner.split(' ');
    let _validity = parts.next()?;
    Some((expand(parts.next()?)?, expand(parts.next()?)?))
}

/// The UID of `OK [APPENDUID validity uid] …`.
fn parse_appenduid(tagged: &str) -> Option<u32> {
    let i = tagged.find("[APPENDUID ")?;
    tagged[i..].split([' ', ']']).nth(2)?.parse().ok()
}

/// `3:5,9` → [3, 4, 5, 9] (in the order given; a range `5:3` as 3, 4, 5).
fn expand(set: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                out.extend(a.min(b)..=a.max(b));
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// `[1, 2, 3, 7]` → `1:3,7` (sorted first).
fn seq_set(items: &[u32]) -> String {
    let mut v = items.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}:{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(",")
}

// ---------------------------------------------------------------------------------------------
// The connection

/// A plain-text IMAP connection: commands tagged `s1`, `s2`…, responses read whole (a line with
/// its `{n}` literals inlined).
struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    tag: u32,
}

impl Conn {
    /// Connects and reads the greeting.
    async fn connect(port: u16) -> Result<Conn> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let (rd, wr) = tcp.into_split();
        let mut c = Conn {
            rd: BufReader::with_capacity(64 * 1024, rd),
            wr,
            tag: 0,
        };
        let greeting = c.read_response().await?;
        if !greeting.starts_with(b"* OK") {
            bail!("greeting: {}", lossy(&greeting));
        }
        Ok(c)
    }

    /// Connects and logs in as `user`.
    async fn login(port: u16, user: &str) -> Result<Conn> {
        let mut c = Conn::connect(port).await?;
        c.simple(&format!("LOGIN {user} {PW}")).await?;
        Ok(c)
    }

    async fn send(&mut self, cmd: &str) -> Result<String> {
        self.tag += 1;
        let tag = format!("s{}", self.tag);
        self.wr
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        Ok(tag)
    }

    async fn send_literal(&mut self, bytes: &[u8]) -> Result<()> {
        self.wr.write_all(bytes).await?;
        self.wr.write_all(b"\r\n").await?;
        Ok(())
    }

    /// Sends `cmd`, reads to its tagged OK (anything else is an error); the untagged responses.
    async fn simple(&mut self, cmd: &str) -> Result<Vec<Vec<u8>>> {
        let tag = self.send(cmd).await?;
        let mut untagged = Vec::new();
        loop {
            let resp = self.read_response().await?;
            if let Some(rest) = resp
                .strip_prefix(tag.as_bytes())
                .and_then(|r| r.strip_prefix(b" "))
            {
                if !rest.starts_with(b"OK") {
                    bail!("{cmd}: {}", lossy(rest));
                }
                return Ok(untagged);
            }
            untagged.push(resp);
        }
    }

    /// One response: a line, plus for every `{n}` at a line end n literal bytes and the rest.
    async fn read_response(&mut self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        loop {
            let start = buf.len();
            let n = tokio::time::timeout(TIMEOUT, self.rd.read_until(b'\n', &mut buf))
                .await
                .context("timed out")??;
            if n == 0 {
                bail!("connection closed; got {}", lossy(&buf));
            }
            let Some(len) = literal_len(&buf[start..]) else {
                return Ok(buf);
            };
            let at = buf.len();
            buf.resize(at + len, 0);
            tokio::time::timeout(TIMEOUT, self.rd.read_exact(&mut buf[at..]))
                .await
                .context("timed out in a literal")??;
        }
    }
}

/// `n` when `line` ends with a literal announcement `{n}` (or `{n+}`, `~{n}`).
fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = std::str::from_utf8(&l[open + 1..]).ok()?;
    digits.trim_end_matches('+').parse().ok()
}
