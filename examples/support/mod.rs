//! Helpers the benchmark examples share (`#[path = "support/mod.rs"] mod support;`): medians,
//! load average, CPU time of this process and of process trees (a Dovecot master and its
//! children) from /proc, plain loopback connection options, and the hidden proxy child.
#![allow(dead_code)] // not every benchmark uses every helper

use std::path::Path;
use std::time::Duration;

use imapferry::imap::{ConnectOptions, Security, TlsOptions};

use crate::common::Dovecot;

pub fn connect_options(port: u16) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".to_string(),
        port,
        security: Security::Plain,
        tls: TlsOptions::default(),
        timeout: Duration::from_secs(120),
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The Dovecot master started with `config` (its command line names the file).
pub fn master_pid(config: &Path) -> i32 {
    let want = config.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("dovecot")) && args.contains(&want) {
            return pid;
        }
    }
    panic!("no dovecot master running with {want}");
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// user + system CPU seconds of this process so far.
pub fn self_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// pid → (ppid, utime + stime + cutime + cstime in ticks).
pub type Procs = std::collections::BTreeMap<i32, (i32, f64)>;

pub fn all_procs() -> Procs {
    let mut out = Procs::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.insert(pid, (num(1) as i32, num(11) + num(12) + num(13) + num(14)));
    }
    out
}

pub fn tree_ticks(procs: &Procs, root: i32) -> f64 {
    let mut total = 0.0;
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some((_, t)) = procs.get(&p) {
            total += t;
        }
        stack.extend(
            procs
                .iter()
                .filter(|(_, (pp, _))| *pp == p)
                .map(|(c, _)| *c),
        );
    }
    total
}

/// CPU time of both servers' process trees.
pub struct Cpu {
    old: i32,
    new: i32,
    pub tick: f64,
}

impl Cpu {
    pub fn new(old: &Dovecot, new: &Dovecot) -> Cpu {
        Cpu::from_roots(
            master_pid(&old.config_path()),
            master_pid(&new.config_path()),
        )
    }

    /// The trees below these two processes (a Dovecot master, a Courier's couriertcpd).
    pub fn from_roots(old: i32, new: i32) -> Cpu {
        // SAFETY: sysconf has no preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Cpu { old, new, tick }
    }

    pub fn sample(&self) -> (f64, f64) {
        self.sample_from(&all_procs())
    }

    pub fn sample_from(&self, procs: &Procs) -> (f64, f64) {
        (
            tree_ticks(procs, self.old) / self.tick,
            tree_ticks(procs, self.new) / self.tick,
        )
    }

    /// CPU seconds each tree used since `before` (after a short pause, so that the run's
    /// processes that are still exiting are counted, live or reaped).
    pub fn since(&self, before: (f64, f64)) -> (f64, f64) {
        std::thread::sleep(Duration::from_millis(150));
        self.since_from(before, &all_procs())
    }

    pub fn since_from(&self, before: (f64, f64), procs: &Procs) -> (f64, f64) {
        let now = self.sample_from(procs);
        (now.0 - before.0, now.1 - before.1)
    }
}

/// The hidden flag that makes an example's binary run `imapferry` itself (`--proxy-child proxy
/// --config FILE`), so a proxy under measurement is a process of its own.
pub const CHILD_FLAG: &str = "--proxy-child";

/// Runs `imapferry ARGS` and exits when this process was started with [`CHILD_FLAG`] ARGS.
pub fn run_child_if_asked(args: &[String]) {
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        let mut argv = vec!["imapferry".to_string()];
        argv.extend(args[2..].iter().cloned());
        std::process::exit(imapferry::cli::main_with_args(argv));
    }
}
