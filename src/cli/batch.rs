//! `imapferry batch FILE`: many accounts from an imapsync loop file (`host1;user1;password1;
//! host2;user2;password2;extra;`), each synced by a child `imapferry sync` process, at most
//! `--jobs N` at a time, with a failures file that can be fed back and a final summary table.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::args;
use super::report::{self, bytes_with_unit, code};
use crate::files;

/// Exit code when every account succeeded.
pub const BATCH_OK: i32 = 0;
/// Exit code when at least one account failed or one line was malformed (the per-account
/// imapsync codes are in the summary table and in each account's log).
pub const BATCH_FAILED: i32 = 1;

/// The help text of `imapferry batch`.
pub fn help_text(shown: &str) -> String {
    format!(
        "usage: {shown} FILE [--jobs N] [--failures PATH] [sync options...]\n\n\
         FILE has one account per line, as imapsync's sync_loop_unix.sh reads it:\n  \
         host1;user1;password1;host2;user2;password2;extra options;\n\
         The trailing ';' is required. Lines starting with '#' and blank lines are skipped;\n\
         CRLF line endings are fine. Each account runs as `imapferry sync --host1 host1 --user1 user1\n\
         --host2 host2 --user2 user2 <extra options> <sync options>` in a child process; passwords go\n\
         through IMAPSYNC_PASSWORD1/IMAPSYNC_PASSWORD2, not the command line. Each child writes its own\n\
         imapsync-named log (LOG_imapsync/... by default).\n\n\
         options:\n  \
         --jobs N          run at most N accounts at a time (default 1)\n  \
         --failures PATH   where failed lines are copied, unchanged, for a re-run\n                    \
         (default: FILE's stem + _failures.txt, e.g. file.txt -> file_failures.txt; emptied first)\n\n\
         exit code: 0 when every account succeeded, 1 when an account failed or a line is malformed,\n\
         64 for a usage error, 66 when FILE cannot be read or the failures file cannot be written.\n"
    )
}

pub use crate::loopfile::{AccountLine, Line, parse_file, parse_line};

/// The child's arguments after `sync`, without passwords: the connection options, then the
/// line's extra options, then the batch's own sync options. This is the order of imapsync's
/// sync_loop_unix.sh (`... $extra "$@"`), so for a single-valued option given in both places
/// the command line's value is the one that counts.
pub fn child_args(a: &AccountLine, sync_options: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--host1", &a.host1, "--user1", &a.user1, "--host2", &a.host2, "--user2", &a.user2,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(a.extra.iter().cloned());
    v.extend(sync_options.iter().cloned());
    v
}

/// The default failures file: FILE's stem + `_failures.txt`, next to FILE.
pub fn default_failures_path(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or_else(|| "file".into(), |s| s.to_string_lossy().into_owned());
    file.with_file_name(format!("{stem}_failures.txt"))
}

/// The batch's own options.
#[derive(Debug, PartialEq, Eq)]
struct BatchArgs {
    file: PathBuf,
    jobs: usize,
    failures: Option<PathBuf>,
    sync_options: Vec<String>,
    help: bool,
}

/// `FILE`, `--jobs N`, `--failures PATH` (also `--opt=value`); every other argument after FILE
/// is a sync option passed to each account.
fn parse_args(argv: &[String]) -> Result<BatchArgs, String> {
    let mut file = None;
    let mut jobs = 1usize;
    let mut failures = None;
    let mut sync_options = Vec::new();
    let mut help = false;
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].as_str();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            argv.get(i)
                .cloned()
                .ok_or_else(|| format!("option {what} needs a value"))
        };
        match name {
            "--jobs" => {
                let v = value("--jobs")?;
                jobs = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--jobs wants a positive number, not '{v}'"))?;
            }
            "--failures" => failures = Some(PathBuf::from(value("--failures")?)),
            "--help" | "-h" if file.is_none() => help = true,
            _ if file.is_none() => {
                if arg.starts_with('-') {
                    return Err(format!(
                        "'{arg}' before FILE: give the loop file first, then the sync options"
                    ));
                }
                file = Some(PathBuf::from(arg));
            }
            _ => sync_options.push(argv[i].clone()),
        }
        i += 1;
    }
    match file {
        Some(file) => Ok(BatchArgs {
            file,
            jobs,
            failures,
            sync_options,
            help,
        }),
        None if help => Ok(BatchArgs {
            file: PathBuf::new(),
            jobs,
            failures,
            sync_options,
            help,
        }),
        None => Err("missing FILE".to_string()),
    }
}

/// What one child run gave.
#[derive(Debug)]
struct Outcome {
    line: AccountLine,
    exit: i32,
    messages: Option<u64>,
    bytes: Option<u64>,
    duration: Duration,
    /// Why the child could not run or what it said last on stderr, for the report.
    note: Option<String>,
}

/// The first number after `label` and its `:` in imapsync's statistics block.
fn stat_value(stdout: &str, label: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let rest = l.strip_prefix(label)?;
        let (pad, value) = rest.split_once(':')?;
        if !pad.trim().is_empty() {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Runs one account as `exe sync ...` and waits for it.
fn run_account(exe: &Path, line: AccountLine, sync_options: &[String]) -> Outcome {
    let started = Instant::now();
    let child = Command::new(exe)
        .arg("sync")
        .args(child_args(&line, sync_options))
        .env("IMAPSYNC_PASSWORD1", &line.password1)
        .env("IMAPSYNC_PASSWORD2", &line.password2)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                line,
                exit: code::EX_SOFTWARE,
                messages: None,
                bytes: None,
                duration: started.elapsed(),
                note: Some(format!("cannot start {}: {e}", exe.display())),
            };
        }
    };
    // stderr is drained on its own thread so neither pipe can fill up and block the child.
    let stderr_reader = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        })
    });
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut out);
    }
    let stderr = stderr_reader
        .and_then(|h| h.join().ok())
        .unwrap_or_default();
    let (exit, note) = match child.wait() {
        Ok(status) => match status.code() {
            Some(c) => (c, None),
            None => {
                let signal = signal_of(&status);
                (128 + signal, Some(format!("killed by signal {signal}")))
            }
        },
        Err(e) => (
            code::EX_SOFTWARE,
            Some(format!("cannot wait for the child: {e}")),
        ),
    };
    let stdout = String::from_utf8_lossy(&out);
    // For a failure: imapsync's own diagnosis from stdout, else the last word on stderr.
    let note = note.or_else(|| {
        (exit != 0)
            .then(|| {
                stdout
                    .lines()
                    .find(|l| l.starts_with("The most frequent error is"))
                    .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            })
            .flatten()
            .map(|l| l.trim().to_string())
    });
    Outcome {
        line,
        exit,
        messages: stat_value(&stdout, "Messages transferred"),
        bytes: stat_value(&stdout, "Total bytes transferred"),
        duration: started.elapsed(),
        note,
    }
}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

#[cfg(not(unix))]
fn signal_of(_status: &std::process::ExitStatus) -> i32 {
    0
}

/// `user1 → user2`.
fn account_name(a: &AccountLine) -> String {
    format!("{} → {}", a.user1, a.user2)
}

/// The line printed when an account finishes.
fn finished_line(o: &Outcome) -> String {
    let mut s = format!(
        "line {}: {} exit {} ({}), {} messages, {}, {:.1} s",
        o.line.number,
        account_name(&o.line),
        o.exit,
        report::exit_text(o.exit),
        o.messages.map_or("?".to_string(), |m| m.to_string()),
        o.bytes.map_or("? bytes".to_string(), bytes_with_unit),
        o.duration.as_secs_f64()
    );
    if let Some(note) = &o.note {
        s.push_str(&format!(" [{note}]"));
    }
    s
}

/// The final table: one row per account line, in file order, malformed lines included.
fn summary_table(outcomes: &[Outcome], malformed: &[(usize, String)]) -> Vec<String> {
    let mut rows: Vec<(usize, [String; 5])> = outcomes
        .iter()
        .map(|o| {
            (
                o.line.number,
                [
                    account_name(&o.line),
                    format!("{} {}", o.exit, report::exit_text(o.exit)),
                    o.messages.map_or("?".to_string(), |m| m.to_string()),
                    o.bytes.map_or("?".to_string(), |b| b.to_string()),
                    format!("{:.1} s", o.duration.as_secs_f64()),
                ],
            )
        })
        .collect();
    for (n, reason) in malformed {
        rows.push((
            *n,
            [
                "-".to_string(),
                format!("malformed: {reason}"),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
            ],
        ));
    }
    rows.sort_by_key(|r| r.0);
    let header = ["line", "account", "exit", "messages", "bytes", "duration"];
    let cells: Vec<[String; 6]> = rows
        .into_iter()
        .map(|(n, [a, b, c, d, e])| [n.to_string(), a, b, c, d, e])
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |row: &[String]| {
        row.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut lines = vec![fmt(&header.map(str::to_string))];
    lines.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    lines.extend(cells.iter().map(|r| fmt(r)));
    lines
}

/// Writes the failed lines, in file order, one per line.
fn write_failures(path: &Path, failed: &[&AccountLine]) -> io::Result<()> {
    let mut sorted = failed.to_vec();
    sorted.sort_by_key(|a| a.number);
    let text: String = sorted.iter().map(|a| format!("{}\n", a.raw)).collect();
    files::write_private(path, text.as_bytes())
}

/// Appends one failed line at once, so a killed batch still leaves its failures behind.
fn append_failure(path: &Path, line: &AccountLine) -> io::Result<()> {
    let mut f = files::append(path)?;
    writeln!(f, "{}", line.raw)
}

/// Runs `imapferry batch ARGS`; returns the batch's exit code (see [`help_text`]).
pub fn batch_command(shown: &str, argv: &[String]) -> i32 {
    let a = match parse_args(argv) {
        Ok(a) if a.help => {
            print!("{}", help_text(shown));
            return code::EX_OK;
        }
        Ok(a) => a,
        Err(e) => {
            eprintln!("{shown}: {e}");
            eprintln!("Run '{shown} --help' for its usage.");
            return code::EX_USAGE;
        }
    };
    // Check the shared sync options once, so a typo is not reported once per account.
    let probe: Vec<String> = [
        "--host1", "h", "--user1", "u", "--host2", "h", "--user2", "u",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(a.sync_options.iter().cloned())
    .collect();
    if let Err(args::ArgError::Usage(messages)) = args::parse(&probe) {
        for m in messages {
            eprintln!("{m}");
        }
        eprintln!("Run '{shown} --help' for its usage.");
        return code::EX_USAGE;
    }
    let text = match fs::read(&a.file) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("{shown}: cannot read {}: {e}", a.file.display());
            return code::EX_NOINPUT;
        }
    };
    let failures_path = a
        .failures
        .clone()
        .unwrap_or_else(|| default_failures_path(&a.file));
    // It will hold passwords: private even if an earlier run left it readable.
    if let Err(e) = files::write_private(&failures_path, b"") {
        eprintln!(
            "{shown}: cannot write the failures file {}: {e}",
            failures_path.display()
        );
        return code::EX_NOINPUT;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{shown}: cannot find its own executable: {e}");
            return code::EX_SOFTWARE;
        }
    };

    let mut accounts = VecDeque::new();
    let mut malformed = Vec::new();
    for line in parse_file(&text) {
        match line {
            Line::Skip => {}
            Line::Account(acc) => accounts.push_back(acc),
            Line::Malformed { number, reason } => {
                eprintln!(
                    "{shown}: {} line {number} is malformed, not run: {reason}",
                    a.file.display()
                );
                malformed.push((number, reason));
            }
        }
    }
    let total = accounts.len();
    let outcomes = run_all(
        &exe,
        accounts,
        &a.sync_options,
        a.jobs,
        total,
        &failures_path,
    );

    let failed: Vec<&AccountLine> = outcomes
        .iter()
        .filter(|o| o.exit != 0)
        .map(|o| &o.line)
        .collect();
    if let Err(e) = write_failures(&failures_path, &failed) {
        eprintln!(
            "{shown}: cannot write the failures file {}: {e}",
            failures_path.display()
        );
    }
    let mut out = io::stdout().lock();
    let _ = writeln!(out);
    for l in summary_table(&outcomes, &malformed) {
        let _ = writeln!(out, "{l}");
    }
    let _ = writeln!(
        out,
        "{} accounts, {} succeeded, {} failed, {} malformed lines. Failed lines are in {}",
        total,
        total - failed.len(),
        failed.len(),
        malformed.len(),
        failures_path.display()
    );
    let _ = out.flush();
    if failed.is_empty() && malformed.is_empty() {
        BATCH_OK
    } else {
        BATCH_FAILED
    }
}

/// Runs every account on `jobs` worker threads; prints one line per finished account and,
/// on a terminal, a progress line on stderr. Returns the outcomes in finishing order.
fn run_all(
    exe: &Path,
    accounts: VecDeque<AccountLine>,
    sync_options: &[String],
    jobs: usize,
    total: usize,
    failures_path: &Path,
) -> Vec<Outcome> {
    let queue = Arc::new(Mutex::new(accounts));
    let (tx, rx) = mpsc::channel::<Outcome>();
    let progress = io::stderr().is_terminal();
    let mut outcomes = Vec::with_capacity(total);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(total.max(1)) {
            let queue = Arc::clone(&queue);
            let tx = tx.clone();
            scope.spawn(move || {
                loop {
                    // Recovered if poisoned: one pop at a time leaves the queue whole, and a
                    // worker that stopped would leave accounts out (crate::lock).
                    let next = crate::lock::recover(&queue, "the batch queue").pop_front();
                    let Some(line) = next else { break };
                    if tx.send(run_account(exe, line, sync_options)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let show_progress = |done: usize, failed: usize| {
            if progress {
                eprint!(
                    "\r\x1b[2K{done}/{total} accounts done, {failed} failed, {} running",
                    jobs.min(total - done)
                );
            }
        };
        show_progress(0, 0);
        let mut failed = 0;
        for o in rx {
            if o.exit != 0 {
                failed += 1;
                let _ = append_failure(failures_path, &o.line);
            }
            if progress {
                eprint!("\r\x1b[2K");
            }
            println!("{}", finished_line(&o));
            outcomes.push(o);
            show_progress(outcomes.len(), failed);
        }
        if progress {
            eprintln!();
        }
    });
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(line: Line) -> AccountLine {
        match line {
            Line::Account(a) => a,
            other => panic!("not an account: {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_line_with_extra_options() {
        let a = account(parse_line(
            3,
            "imap.old;alice;p w1;imap.new;bob;pw2;--justfolders   --automap\t--subfolder2 foo;",
        ));
        assert_eq!(a.number, 3);
        assert_eq!(
            (a.host1.as_str(), a.user1.as_str(), a.password1.as_str()),
            ("imap.old", "alice", "p w1")
        );
        assert_eq!(
            (a.host2.as_str(), a.user2.as_str(), a.password2.as_str()),
            ("imap.new", "bob", "pw2")
        );
        assert_eq!(
            a.extra,
            ["--justfolders", "--automap", "--subfolder2", "foo"]
        );
        let empty_extra = account(parse_line(1, "h1;u1;p1;h2;u2;p2;;"));
        assert!(empty_extra.extra.is_empty());
    }

    #[test]
    fn six_or_seven_columns_with_or_without_the_trailing_semicolon() {
        // (line, password2, extra)
        for (line, pw2, extra) in [
            ("h1;u1;p1;h2;u2;p2;", "p2", &[][..]),
            ("h1;u1;p1;h2;u2;p2", "p2", &[]),
            ("h1;u1;p1;h2;u2;p2;;", "p2", &[]),
            ("h1;u1;p1;h2;u2;p2;--dry;", "p2", &["--dry"]),
            ("h1;u1;p1;h2;u2;p2;--dry", "p2", &["--dry"]),
            ("h1;u1;p1;h2;u2;p2;; \t", "p2", &[]),
            ("h1;u1;p1;h2;u2;p2;;;", "p2", &[]),
            ("h1;u1;p1;h2;u2; p 2 ;", " p 2 ", &[]),
        ] {
            let a = account(parse_line(4, line));
            assert_eq!((a.host1.as_str(), a.user2.as_str()), ("h1", "u2"), "{line}");
            assert_eq!(a.password2, pw2, "{line}");
            assert_eq!(a.extra, extra, "{line}");
            assert_eq!(a.raw, line, "{line}");
        }
    }

    #[test]
    fn short_shifted_and_incomplete_lines_are_refused_with_their_number() {
        for bad in [
            "h1;u1;p1",
            "h1;u1;p1;h2;u2",
            "h1;u1;p;1;h2;u2;p2;--dry;",
            "h1;;p1;h2;u2;p2;;",
            "h1;u1;p1;;u2;p2;",
        ] {
            match parse_line(7, bad) {
                Line::Malformed { number, .. } => assert_eq!(number, 7, "{bad}"),
                other => panic!("{bad:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        assert_eq!(parse_line(1, ""), Line::Skip);
        assert_eq!(parse_line(1, "   \r"), Line::Skip);
        assert_eq!(parse_line(1, "# h1;u1;p1;h2;u2;p2;;"), Line::Skip);
        assert_eq!(parse_line(1, "  #comment\r"), Line::Skip);
        let a = account(parse_line(2, "h1;u1;p1;h2;u2;p2;--dry;\r"));
        assert_eq!(a.raw, "h1;u1;p1;h2;u2;p2;--dry;");
        assert_eq!(a.extra, ["--dry"]);

        let lines = parse_file(
            "# head\r\nh1;u1;p1;h2;u2;p2;;\r\n\r\nbad\r\nh1;u3;p1;h2;u4;p2;;\r\nh1;u5;p1;h2;u6;p2;\r\n",
        );
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0], Line::Skip);
        assert_eq!(account(lines[1].clone()).number, 2);
        assert_eq!(lines[2], Line::Skip);
        assert!(matches!(lines[3], Line::Malformed { number: 4, .. }));
        assert_eq!(account(lines[4].clone()).user2, "u4");
        let six = account(lines[5].clone());
        assert_eq!((six.user2.as_str(), six.password2.as_str()), ("u6", "p2"));
        assert_eq!(lines[6], Line::Skip);
    }

    #[test]
    fn child_args_put_extra_before_command_line_options() {
        let a = account(parse_line(
            1,
            "h1;u1;secret1;h2;u2;secret2;--port1 1143 --dry;",
        ));
        let args = child_args(&a, &["--nofoldersizes".to_string()]);
        assert_eq!(
            args,
            [
                "--host1",
                "h1",
                "--user1",
                "u1",
                "--host2",
                "h2",
                "--user2",
                "u2",
                "--port1",
                "1143",
                "--dry",
                "--nofoldersizes"
            ]
        );
        assert!(!args.iter().any(|s| s.contains("secret")));
    }

    #[test]
    fn batch_arguments() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = parse_args(&v(&[
            "--jobs",
            "3",
            "file.txt",
            "--failures=f.txt",
            "--logdir",
            "x",
        ]))
        .unwrap();
        assert_eq!(a.file, PathBuf::from("file.txt"));
        assert_eq!(a.jobs, 3);
        assert_eq!(a.failures, Some(PathBuf::from("f.txt")));
        assert_eq!(a.sync_options, ["--logdir", "x"]);
        assert!(parse_args(&v(&["--dry", "file.txt"])).is_err());
        assert!(parse_args(&v(&["file.txt", "--jobs", "0"])).is_err());
        assert!(parse_args(&v(&[])).is_err());
        assert!(parse_args(&v(&["--help"])).unwrap().help);
        assert_eq!(
            default_failures_path(Path::new("dir/file.txt")),
            PathBuf::from("dir/file_failures.txt")
        );
    }

    #[test]
    fn statistics_are_read_from_the_child_output() {
        let out = "Messages transferred                    : 12\n\
                   Messages skipped                        : 0\n\
                   Total bytes transferred                 : 506789012 (483.312 MiB)\n";
        assert_eq!(stat_value(out, "Messages transferred"), Some(12));
        assert_eq!(stat_value(out, "Total bytes transferred"), Some(506789012));
        assert_eq!(
            stat_value(
                "Messages transferred : 0 (could be 4 without dry mode)",
                "Messages transferred"
            ),
            Some(0)
        );
        assert_eq!(stat_value("nothing", "Messages transferred"), None);
    }
}
