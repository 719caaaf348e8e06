//! The run's output, as imapsync writes it: every line goes to stdout and to the log file
//! (`LOG_imapsync/YYYY_MM_DD_HH_MM_SS_mmm_<user1>_<user2>.txt` by default), except per-message
//! lines on a terminal, which feed a progress bar on stderr instead of scrolling by.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Local};
use indicatif::ProgressBar;

use crate::lock::recover;

const LOG_FILE: &str = "the log file";
const BAR: &str = "the progress bar";

/// imapsync's `$DEFAULT_LOGDIR`, relative to the current directory.
pub const DEFAULT_LOGDIR: &str = "LOG_imapsync";

/// A user name made safe for a file name (imapsync's `slash_to_underscore` then
/// `filter_forbidden_characters`): `/`, ``* | ? : " < > ' ` ``, backslash, whitespace and every
/// non-ASCII byte become `_` (Perl sees the undecoded bytes of the argument).
pub fn filter_account(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'/' | b'*' | b'|' | b'?' | b':' | b'"' | b'<' | b'>' | b'\'' | b'`' | b'\\' => '_',
            b if b.is_ascii_whitespace() || b == 0x0b || !b.is_ascii() => '_',
            b => b as char,
        })
        .collect()
}

/// The default log file name: local start time with milliseconds, then both filtered users.
pub fn default_log_name(start: &DateTime<Local>, user1: &str, user2: &str) -> String {
    format!(
        "{}_{}_{}.txt",
        start.format("%Y_%m_%d_%H_%M_%S_%3f"),
        filter_account(user1),
        filter_account(user2)
    )
}

/// Where the log goes: `$logdir/$logfile` (imapsync joins them as strings, so `--logfile` is
/// always below the log directory), or `$logdir/<default name>`.
pub fn log_path(
    logdir: &str,
    logfile: Option<&str>,
    start: &DateTime<Local>,
    user1: &str,
    user2: &str,
) -> PathBuf {
    let name = logfile.map_or_else(|| default_log_name(start, user1, user2), str::to_string);
    if logdir.is_empty() {
        PathBuf::from(name)
    } else {
        PathBuf::from(format!("{logdir}/{name}"))
    }
}

/// Lines to stdout and the log file. Shared by the tasks that report engine events. Both locks
/// are recovered when poisoned ([`crate::lock::recover`]): a file handle and a progress bar are
/// replaced whole, and a line not logged would be lost.
pub struct Output {
    file: Mutex<Option<File>>,
    path: Option<PathBuf>,
    bar: Mutex<Option<ProgressBar>>,
}

impl Output {
    /// Output to stdout only (`--nolog`).
    pub fn stdout_only() -> Output {
        Output {
            file: Mutex::new(None),
            path: None,
            bar: Mutex::new(None),
        }
    }

    /// Output to stdout and a new log file at `path` (parent directories are created).
    pub fn with_log_file(path: &Path) -> io::Result<Output> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_dir_all(dir)?;
        }
        let file = crate::files::create(path)?;
        Ok(Output {
            file: Mutex::new(Some(file)),
            path: Some(path.to_owned()),
            bar: Mutex::new(None),
        })
    }

    /// The log file, if there is one.
    pub fn log_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Prints one line to stdout (above the progress bar, if any) and to the log file.
    pub fn line(&self, text: &str) {
        let print = || {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        };
        match self.bar() {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
        self.log_only(text);
    }

    pub fn lines<S: AsRef<str>>(&self, lines: &[S]) {
        for l in lines {
            self.line(l.as_ref());
        }
    }

    /// Writes one line to the log file only.
    pub fn log_only(&self, text: &str) {
        if let Some(file) = recover(&self.file, LOG_FILE).as_mut() {
            let _ = writeln!(file, "{text}");
        }
    }

    /// Shows `bar` on stderr while per-message lines go to the log only.
    pub fn set_bar(&self, bar: Option<ProgressBar>) {
        let mut guard = recover(&self.bar, BAR);
        if let Some(old) = guard.take() {
            old.finish_and_clear();
        }
        *guard = bar;
    }

    pub fn bar(&self) -> Option<ProgressBar> {
        recover(&self.bar, BAR).clone()
    }
}

/// True when per-message lines should become a progress bar (stdout is a terminal).
pub fn interactive() -> bool {
    io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn account_filtering() {
        for (raw, safe) in [
            ("alice", "alice"),
            ("alice@example.com", "alice@example.com"),
            ("dom/alice", "dom_alice"),
            ("a*b|c?d:e\"f<g>h'i`j", "a_b_c_d_e_f_g_h_i_j"),
            ("back\\slash", "back_slash"),
            ("sp ace\ttab\r\nnl", "sp_ace_tab__nl"),
            ("josé", "jos__"),
            ("user*master", "user_master"),
        ] {
            assert_eq!(filter_account(raw), safe, "{raw:?}");
        }
    }

    #[test]
    fn names_and_places() {
        let start = Local
            .with_ymd_and_hms(2024, 3, 9, 7, 5, 2)
            .single()
            .unwrap()
            + chrono::Duration::milliseconds(42);
        assert_eq!(
            default_log_name(&start, "a/b", "c d"),
            "2024_03_09_07_05_02_042_a_b_c_d.txt"
        );
        assert_eq!(
            log_path("LOG_imapsync", None, &start, "u1", "u2"),
            PathBuf::from("LOG_imapsync/2024_03_09_07_05_02_042_u1_u2.txt")
        );
        assert_eq!(
            log_path("LOG_imapsync", Some("my.txt"), &start, "u1", "u2"),
            PathBuf::from("LOG_imapsync/my.txt")
        );
        assert_eq!(
            log_path("/var/log/x", Some("sub/my.txt"), &start, "", ""),
            PathBuf::from("/var/log/x/sub/my.txt")
        );
        assert_eq!(
            log_path("", Some("my.txt"), &start, "", ""),
            PathBuf::from("my.txt")
        );
    }

    #[test]
    fn tee_to_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/log.txt");
        let out = Output::with_log_file(&path).unwrap();
        out.line("one");
        out.log_only("two");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(out.log_path(), Some(path.as_path()));
    }
}
