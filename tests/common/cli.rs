//! Running the built binary in tests: `imapferry sync` (or any subcommand) in a directory with a
//! clean password environment, and what the run left behind (exit code, output, log files).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImapServer;

/// The binary under test (integration tests only: examples share this module but not the path,
/// so `env!` would not compile there).
#[allow(clippy::option_env_unwrap)]
pub fn binary() -> PathBuf {
    PathBuf::from(
        option_env!("CARGO_BIN_EXE_imapferry").expect("set by cargo for integration tests"),
    )
}

/// What one run left behind.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Every log file written below the log directory, concatenated.
    pub log: String,
}

impl Outcome {
    pub fn all(&self) -> String {
        format!("{}{}{}", self.stdout, self.stderr, self.log)
    }

    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code, expected,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }

    /// The line is in stdout and in the log file.
    pub fn assert_says(&self, text: &str) {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        assert!(self.log.contains(text), "log lacks {text:?}:\n{}", self.log);
    }
}

/// The `.txt` files below `dir`, in path order, concatenated.
pub fn read_logs(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                read_logs(p)
            } else if p.extension().is_some_and(|x| x == "txt") {
                std::fs::read_to_string(p).unwrap()
            } else {
                String::new()
            }
        })
        .collect()
}

/// Runs `program args` in `cwd` with a clean password environment plus `env`; logs go to the
/// default `LOG_imapsync` below `cwd` unless `args` says otherwise.
pub fn run_at(program: &Path, cwd: &Path, args: &[String], env: &[(&str, &str)]) -> Outcome {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_remove("IMAPSYNC_PASSWORD1")
        .env_remove("IMAPSYNC_PASSWORD2")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run imapferry");
    Outcome {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        log: read_logs(&cwd.join("LOG_imapsync")),
    }
}

/// `imapferry sync ARGS` in a fresh directory.
pub fn sync(args: &[String]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    sync_in(dir.path(), args)
}

/// `imapferry sync ARGS` in `cwd` (its state file stays there for the next run).
pub fn sync_in(cwd: &Path, args: &[String]) -> Outcome {
    let mut all = vec!["sync".to_string()];
    all.extend(args.iter().cloned());
    run_at(&binary(), cwd, &all, &[])
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `--host1 … --password2 …` for `user1` on `old` and `user2` on `new`.
pub fn accounts(
    old: &impl ImapServer,
    user1: &str,
    pw1: &str,
    new: &impl ImapServer,
    user2: &str,
    pw2: &str,
) -> Vec<String> {
    strings(&[
        "--host1",
        old.host(),
        "--port1",
        &old.port().to_string(),
        "--user1",
        user1,
        "--password1",
        pw1,
        "--host2",
        new.host(),
        "--port2",
        &new.port().to_string(),
        "--user2",
        user2,
        "--password2",
        pw2,
    ])
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
