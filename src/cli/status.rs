//! `imapferry status` shows the whole migration at a glance and every account's progress (or one
//! account's folders) from the proxy's state file; `imapferry retire` marks a synced account
//! `retired` (DESIGN.md §1). Neither creates a state file nor talks to a server; the numbers and
//! rules are [`crate::ops`]'s, which the admin API uses too, so both always agree.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;

use chrono::DateTime;

use super::setup::{
    ConfigArg, EX_IOERR, EX_NOINPUT, EX_NOT_DONE, EX_OK, EX_SOFTWARE, Exit, fail, store_failed,
    with_state,
};
use crate::mapping::utf7_decode;
use crate::ops::{
    AccountDetail, Overview, RetireDecision, StatusReport, find_user, old_login, retire_decision,
};
use crate::store::{AccountSummary, FolderSummary, Store};

const STATUS_ABOUT: &str = "Shows the migration progress recorded in the state file of the proxy \
configuration FILE ([state] path). Nothing is changed and no server is contacted.\n\n\
Without USER: first the whole migration at a glance: accounts by state, progress (OLD \
messages linked to NEW or deleted there by the user, over the messages on OLD as of each \
folder's last pass; accounts without a completed pass are not counted yet), throughput \
(messages linked per hour over the span of the accounts' last activity), ETA at that rate, \
and the failed accounts with their reason. Then one line per account: NEW user, OLD \
user@host, state (pending, partial, synced, retired, failed, diverged), folders \
synced/total, messages on OLD and on NEW (as of each folder's last pass), linked messages, \
OLD messages not copied (errors), journal entries not yet mirrored to OLD, last activity \
(UTC) and the recorded reason (the last error of a failed or partial account).\n\n\
With USER: that account's line, then one line per folder: OLD name, NEW name (modified \
UTF-7 decoded), phase (new, partial, synced), messages on OLD, on NEW, linked, tombstones, \
errors; then each OLD message not copied, with the reason. \
'-' means a folder has not completed a pass yet.";

const STATUS_EXIT: &str = "exit code: 0; 64 usage error; 66 unknown USER or no state file; \
78 bad configuration; 70 the state file cannot be read.";

/// Show the migration progress recorded in the proxy's state file
#[derive(clap::Args, Debug)]
#[command(long_about = STATUS_ABOUT, after_help = STATUS_EXIT)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The same as JSON: {"overview": {...}, "accounts": [...]} without USER (as the admin
    /// API's GET /overview and GET /accounts); with USER {"account": {...}, "folders": [...]}
    /// (GET /accounts/USER), an array of those when USER names several
    #[arg(long)]
    json: bool,
    /// One account: a NEW user name; else an OLD user name; else OLD user@host as the table
    /// shows it
    user: Option<String>,
}

const RETIRE_ABOUT: &str = "Marks the account USER (matched as by `imapferry status USER`) \
retired in the state file of the proxy configuration FILE: the proxy stops reading and writing \
OLD for it (no more backfill, no more dual-write) and relays to NEW only. \
Refused unless the account is synced (every folder backfilled) and its journal is drained \
(no write still waiting to be mirrored to OLD).";

const RETIRE_EXIT: &str = "exit code: 0 retired (or already retired); 1 refused; 64 usage \
error; 66 unknown USER or no state file; 78 bad configuration; 70 the state file cannot be \
read or written.";

/// End OLD access for a synced account
#[derive(clap::Args, Debug)]
#[command(long_about = RETIRE_ABOUT, after_help = RETIRE_EXIT)]
pub(super) struct RetireArgs {
    /// The account, matched as by `imapferry status USER`
    user: String,
    #[command(flatten)]
    config: ConfigArg,
    /// Retire anyway (pending journal entries are then never mirrored to OLD)
    #[arg(long)]
    force: bool,
}

/// Runs `imapferry status`.
pub(super) fn status_command(args: StatusArgs) -> Result<i32, Exit> {
    with_store(&args.config, |store| async move {
        let accounts = store.account_summaries().await.map_err(store_failed)?;
        let Some(user) = args.user else {
            let overview = Overview::of(&accounts);
            if args.json {
                return print_json(&StatusReport { overview, accounts });
            }
            let table = account_table(&accounts);
            let bar = std::io::stdout().is_terminal();
            return emit(&format!("{}{table}", overview_text(&overview, &table, bar)));
        };
        let matches = find_user(&accounts, &user);
        if matches.is_empty() {
            return Err(no_account(&user));
        }
        let mut out = String::new();
        let mut details = Vec::new();
        for (i, account) in matches.into_iter().enumerate() {
            let detail = AccountDetail::load(&*store, account.clone())
                .await
                .map_err(store_failed)?;
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&account_table(std::slice::from_ref(account)));
            out.push('\n');
            out.push_str(&folder_table(&detail.folders));
            for e in &detail.message_errors {
                let _ = writeln!(
                    out,
                    "not copied: {}/{}: {}",
                    display_name(&e.old_folder),
                    e.old_uid,
                    e.reason
                );
            }
            details.push(detail);
        }
        if args.json {
            return match &details[..] {
                [one] => print_json(one),
                many => print_json(&many),
            };
        }
        emit(&out)
    })
}

/// Runs `imapferry retire`.
pub(super) fn retire_command(args: RetireArgs) -> Result<i32, Exit> {
    let RetireArgs {
        user,
        config,
        force,
    } = args;
    with_store(&config, |store| async move {
        let accounts = store.account_summaries().await.map_err(store_failed)?;
        let account = match find_user(&accounts, &user)[..] {
            [] => return Err(no_account(&user)),
            [one] => one,
            ref many => {
                let names: Vec<String> = many.iter().map(|a| old_login(a)).collect();
                return Err(fail(
                    EX_NOT_DONE,
                    format!(
                        "'{user}' matches {} accounts (OLD {}); name one as OLD user@host",
                        many.len(),
                        names.join(", ")
                    ),
                ));
            }
        };
        let who = format!("{} (OLD {})", account.key.new_user, old_login(account));
        let (reason, problems) = match retire_decision(account, force) {
            RetireDecision::AlreadyRetired => {
                println!("{who} is already retired; nothing changed");
                return Ok(EX_OK);
            }
            RetireDecision::Refused { problems } => {
                return Err(fail(
                    EX_NOT_DONE,
                    format!(
                        "not retiring {who}: {}; finish the migration first, or use --force",
                        problems.join(", and ")
                    ),
                ));
            }
            RetireDecision::Retire { reason, problems } => (reason, problems),
        };
        if !store
            .retire(account.id, reason.as_deref())
            .await
            .map_err(store_failed)?
        {
            return Err(fail(
                EX_NOT_DONE,
                format!(
                    "not retiring {who}: it changed meanwhile (a new journal entry or backfill); \
                     look again with `imapferry status`"
                ),
            ));
        }
        match reason {
            None => println!(
                "retired {who}: it was synced with an empty journal; the proxy no longer \
                 reads or writes OLD for it"
            ),
            Some(r) => println!(
                "retired {who} ({r}: {}); the proxy no longer reads or writes OLD for it",
                problems.join(", and ")
            ),
        }
        Ok(EX_OK)
    })
}

/// USER names no account of the state file: EX_NOINPUT.
pub(super) fn no_account(user: &str) -> Exit {
    fail(EX_NOINPUT, format!("no account '{user}' in the state file"))
}

/// Loads the configuration, opens its existing state file and runs `work` on it.
fn with_store<F, Fut>(config: &ConfigArg, work: F) -> Result<i32, Exit>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = Result<i32, Exit>>,
{
    let loaded = config.load()?;
    with_state(&loaded, &config.file, work)
}

/// Prints `value` as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> Result<i32, Exit> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| fail(EX_SOFTWARE, format!("cannot write JSON: {e}")))?;
    emit(&(text + "\n"))
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<i32, Exit> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(EX_OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(EX_OK),
        Err(e) => Err(fail(EX_IOERR, format!("cannot write the output: {e}"))),
    }
}

/// Failed accounts listed by name in the overview; the rest are counted.
const FAILED_SHOWN: usize = 20;
/// Width of the progress bar on a terminal.
const BAR_WIDTH: usize = 30;

/// The overview lines printed above the account table (`table`, for the width of the rule that
/// ends them), with a progress bar when `bar`. No blank line: the overview and the table read as
/// one block.
fn overview_text(o: &Overview, table: &str, bar: bool) -> String {
    let mut out = String::new();
    let s = &o.by_state;
    let _ = writeln!(
        out,
        "Accounts:    {} ({} pending, {} partial, {} synced, {} retired, {} failed, {} diverged)",
        o.accounts, s.pending, s.partial, s.synced, s.retired, s.failed, s.diverged
    );
    let percent = o
        .progress_percent
        .map_or_else(|| "unknown".to_string(), |p| format!("{p:.1} %"));
    let bar = match (bar, o.progress_percent) {
        (true, Some(p)) => {
            let filled = ((p / 100.0 * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
            format!(
                " [{}{}]",
                "#".repeat(filled),
                "-".repeat(BAR_WIDTH - filled)
            )
        }
        _ => String::new(),
    };
    let _ = write!(
        out,
        "Progress:    {percent}{bar}  {} of {} messages on OLD done ({} linked, {} deleted on NEW)",
        o.messages_done, o.messages_old, o.linked, o.tombstones
    );
    if o.accounts_not_counted > 0 {
        let _ = write!(
            out,
            "; {} {} without a completed pass not counted yet",
            o.accounts_not_counted,
            if o.accounts_not_counted == 1 {
                "account"
            } else {
                "accounts"
            }
        );
    }
    out.push('\n');
    match (o.messages_per_hour, o.activity_first, o.activity_last) {
        (Some(rate), Some(first), Some(last)) => {
            let _ = writeln!(
                out,
                "Throughput:  {rate:.0} messages/hour (messages linked in the accounts active between \
                 {} and {})",
                timestamp(Some(first)),
                timestamp(Some(last))
            );
        }
        _ => out.push_str(
            "Throughput:  unknown (needs account activity recorded over at least a minute)\n",
        ),
    }
    let left = o.messages_old - o.messages_done;
    match o.eta_seconds {
        Some(0) => out.push_str("ETA:         done\n"),
        Some(secs) => {
            let _ = writeln!(
                out,
                "ETA:         {} ({left} counted messages left at that rate)",
                duration(secs)
            );
        }
        None => out.push_str("ETA:         unknown\n"),
    }
    if s.diverged > 0 {
        let _ = writeln!(
            out,
            "Diverged:    {} {} OLD no longer mirrors; see the reason, then `imapferry reconcile USER`",
            s.diverged,
            if s.diverged == 1 {
                "account"
            } else {
                "accounts"
            }
        );
    }
    if o.message_errors > 0 {
        let _ = writeln!(
            out,
            "Errors:      {} OLD {} not copied (imapferry status USER lists them with the reason)",
            o.message_errors,
            if o.message_errors == 1 {
                "message"
            } else {
                "messages"
            }
        );
    }
    for (i, f) in o.failed.iter().take(FAILED_SHOWN).enumerate() {
        let _ = writeln!(
            out,
            "{}{} (OLD {}@{}): {}",
            if i == 0 {
                "Failed:      "
            } else {
                "             "
            },
            f.new_user,
            f.old_user,
            f.old_host,
            f.reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    if o.failed.len() > FAILED_SHOWN {
        let _ = writeln!(
            out,
            "             ... and {} more (imapferry status --json lists them all)",
            o.failed.len() - FAILED_SHOWN
        );
    }
    let rule = table.lines().next().map_or(0, width).max(20);
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    out
}

/// Seconds for people: `45s`, `12m`, `3h 05m`, `2d 4h`.
fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`; `never` for none.
fn timestamp(secs: Option<i64>) -> String {
    match secs.and_then(|s| DateTime::from_timestamp(s, 0)) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "never".to_string(),
    }
}

/// The account table, one line per account after a header.
fn account_table(accounts: &[AccountSummary]) -> String {
    let header = [
        "NEW user",
        "OLD user@host",
        "state",
        "folders",
        "OLD msgs",
        "NEW msgs",
        "linked",
        "errors",
        "journal",
        "last activity",
        "reason",
    ];
    let rows = accounts
        .iter()
        .map(|a| {
            vec![
                a.key.new_user.clone(),
                old_login(a),
                a.state.as_str().to_string(),
                format!("{}/{}", a.folders_synced, a.folders),
                a.messages_old.to_string(),
                a.messages_new.to_string(),
                a.linked.to_string(),
                a.message_errors.to_string(),
                a.pending_journal.to_string(),
                timestamp(a.last_activity),
                a.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &header,
        rows,
        &[
            false, false, false, true, true, true, true, true, true, false, false,
        ],
    )
}

/// One account's folders, one line per folder pair after a header; with client caches kept,
/// which numbers each folder shows (`OLD`, `NEW`, `-` not decided yet).
fn folder_table(folders: &[FolderSummary]) -> String {
    let mut header = vec![
        "OLD folder",
        "NEW folder",
        "phase",
        "OLD msgs",
        "NEW msgs",
        "linked",
        "tombstones",
        "errors",
    ];
    let caches = folders.iter().any(|f| f.keeps_client_caches.is_some());
    if caches {
        header.push("UIDs shown");
    }
    let count = |side: Option<crate::store::MailboxState>| {
        side.map_or_else(|| "-".to_string(), |s| s.messages.to_string())
    };
    let rows = folders
        .iter()
        .map(|f| {
            vec![
                display_name(&f.pair.old_name),
                display_name(&f.pair.new_name),
                f.pair.phase.as_str().to_string(),
                count(f.pair.old),
                count(f.pair.new),
                f.linked.to_string(),
                f.tombstones.to_string(),
                f.message_errors.to_string(),
            ]
            .into_iter()
            .chain(caches.then(|| {
                match f.keeps_client_caches {
                    Some(true) => "OLD",
                    Some(false) => "NEW",
                    None => "-",
                }
                .to_string()
            }))
            .collect()
        })
        .collect();
    table(
        &header,
        rows,
        &[false, false, false, true, true, true, true, true, false],
    )
}

/// A folder name for people: modified UTF-7 decoded when it is valid, else as stored.
pub(super) fn display_name(raw: &str) -> String {
    utf7_decode(raw).unwrap_or_else(|| raw.to_string())
}

/// Terminal columns of `s`: East Asian wide and fullwidth characters (CJK, Hangul, fullwidth
/// forms, most emoji) take two, combining marks none, everything else one. An approximation of
/// Unicode's East Asian Width that keeps folder tables aligned without a dependency.
pub(super) fn width(s: &str) -> usize {
    s.chars()
        .map(|c| match u32::from(c) {
            0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F => 0,
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// Columns separated by two spaces, each as wide as its widest cell (see [`width`]); numbers
/// (`right[i]`) aligned right. Trailing blanks are trimmed.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let column = widths.get(i).copied().unwrap_or(0);
            let pad = " ".repeat(column.saturating_sub(width(cell)));
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fixtures::summary;
    use crate::store::AccountState;

    #[test]
    fn overview_lines() {
        let mut a = summary(1, "alice", "alice", "old");
        (a.folders, a.folders_synced, a.messages_old, a.linked) = (2, 1, 200, 50);
        a.state = AccountState::Partial;
        a.last_activity = Some(1_795_000_000);
        let mut b = summary(2, "bob", "bob", "old");
        (b.folders, b.folders_synced, b.messages_old, b.linked) = (1, 1, 50, 50);
        b.last_activity = Some(1_795_003_600);
        let mut c = summary(3, "carol", "carol", "old2");
        c.state = AccountState::Failed;
        c.reason = Some("AUTHENTICATIONFAILED".into());
        let accounts = [a, b, c];
        let o = Overview::of(&accounts);
        let table = account_table(&accounts);
        let text = overview_text(&o, &table, false);
        let expected = [
            "Accounts:    3 (0 pending, 1 partial, 1 synced, 0 retired, 1 failed, 0 diverged)",
            "Progress:    40.0 %  100 of 250 messages on OLD done (100 linked, 0 deleted on NEW); \
             1 account without a completed pass not counted yet",
            "Throughput:  100 messages/hour (messages linked in the accounts active between \
             2026-11-18 11:06:40 UTC and 2026-11-18 12:06:40 UTC)",
            "ETA:         1h 30m (150 counted messages left at that rate)",
            "Failed:      carol (OLD carol@old2): AUTHENTICATIONFAILED",
        ];
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..5], expected, "\n{text}");
        assert!(lines[5].chars().all(|c| c == '-'), "{text}");
        assert_eq!(lines.len(), 6);
        let with_bar = overview_text(&o, &table, true);
        assert!(
            with_bar.contains(&format!("40.0 % [{}{}]", "#".repeat(12), "-".repeat(18))),
            "{with_bar}"
        );
        let empty = overview_text(&Overview::of(&[]), "", false);
        assert!(empty.contains("Progress:    unknown  0 of 0"), "{empty}");
        assert!(empty.contains("Throughput:  unknown") && empty.contains("ETA:         unknown"));
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(12 * 60 + 5), "12m");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(duration(2 * 86_400 + 4 * 3600 + 60), "2d 4h");
    }

    #[test]
    fn folders_say_which_numbers_they_show_once_decided() {
        let folder = |name: &str, keeps: Option<bool>| FolderSummary {
            pair: crate::store::FolderPair {
                id: 1,
                account: 1,
                old_name: name.into(),
                new_name: name.into(),
                old: None,
                new: None,
                adopt_from: 1,
                phase: crate::store::Phase::Synced,
            },
            linked: 0,
            tombstones: 0,
            message_errors: 0,
            keeps_client_caches: keeps,
        };
        let decided = folder_table(&[
            folder("INBOX", Some(true)),
            folder("Mixed", Some(false)),
            folder("Later", None),
        ]);
        let last: Vec<&str> = decided
            .lines()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(last, ["shown", "OLD", "NEW", "-"], "\n{decided}");
        // Without client caches kept, no such column.
        let plain = folder_table(&[folder("INBOX", None)]);
        assert!(!plain.contains("shown"), "{plain}");
    }

    #[test]
    fn formatting() {
        assert_eq!(timestamp(None), "never");
        assert_eq!(timestamp(Some(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(Some(1_795_000_000)), "2026-11-18 11:06:40 UTC");
        assert_eq!(display_name("Entw&APw-rfe"), "Entwürfe");
        assert_eq!(display_name("bad&-name&"), "bad&-name&");
        let t = table(
            &["name", "n", "note"],
            vec![
                vec!["Entwürfe".into(), "7".into(), String::new()],
                vec!["x".into(), "1234".into(), "hi".into()],
            ],
            &[false, true, false],
        );
        assert_eq!(
            t,
            "name         n  note\nEntwürfe     7\nx         1234  hi\n"
        );
        // Wide characters take two columns.
        assert_eq!(width("日本語"), 6);
        assert_eq!(width("Архив"), 5);
        let t = table(
            &["folder", "n"],
            vec![vec!["日本語".into(), "3".into()]],
            &[false, true],
        );
        assert_eq!(t, "folder  n\n日本語  3\n");
    }
}
