//! imapsync's report texts as pure functions: exit codes and their names, the classification of
//! error texts into exit codes, the error listing, the statistics block, the folder-size table and
//! the per-message copy line. Formats follow imapsync 2.229 (reference §5 and §6) to the character.

use std::collections::BTreeMap;

use chrono::{DateTime, Local};

use crate::mapping::utf7_decode;
use crate::sync::{FolderSize, Stats};

/// `--errorsmax` default (imapsync's `$ERRORS_MAX`).
pub const DEFAULT_ERRORS_MAX: u64 = 50;

/// The exit codes imapsync uses (its `Readonly` constants).
pub mod code {
    pub const EX_OK: i32 = 0;
    pub const EXIT_CATCH_ALL: i32 = 1;
    pub const EXIT_CONNECTION_FAILURE: i32 = 10;
    pub const EXIT_TLS_FAILURE: i32 = 12;
    pub const EXIT_SUBFOLDER1_NO_EXISTS: i32 = 21;
    pub const EX_USAGE: i32 = 64;
    pub const EX_NOINPUT: i32 = 66;
    pub const EX_SOFTWARE: i32 = 70;
    pub const EXIT_CONNECTION_FAILURE_HOST1: i32 = 101;
    pub const EXIT_CONNECTION_FAILURE_HOST2: i32 = 102;
    pub const EXIT_WITH_ERRORS: i32 = 111;
    pub const EXIT_OVERQUOTA: i32 = 113;
    pub const EXIT_ERR_APPEND: i32 = 114;
    pub const EXIT_ERR_FETCH: i32 = 115;
    pub const EXIT_ERR_CREATE: i32 = 116;
    pub const EXIT_ERR_SELECT: i32 = 117;
    pub const EXIT_TRANSFER_EXCEEDED: i32 = 118;
    pub const EXIT_ERR_APPEND_VIRUS: i32 = 119;
    pub const EXIT_ERR_FLAGS: i32 = 120;
    pub const EXIT_AUTHENTICATION_FAILURE_USER1: i32 = 161;
    pub const EXIT_AUTHENTICATION_FAILURE_USER2: i32 = 162;
}

/// The text imapsync prints in parentheses after an exit code (`%EXIT_TXT`).
pub fn exit_text(exit: i32) -> &'static str {
    match exit {
        0 => "EX_OK: successful termination",
        1 => "EXIT_CATCH_ALL",
        6 => "EXIT_BY_SIGNAL",
        7 => "EXIT_BY_FILE",
        8 => "EXIT_PID_FILE_ERROR",
        10 => "EXIT_CONNECTION_FAILURE",
        12 => "EXIT_TLS_FAILURE",
        16 => "EXIT_AUTHENTICATION_FAILURE",
        21 => "EXIT_SUBFOLDER1_NO_EXISTS",
        64 => "EX_USAGE: command line usage error",
        66 => "EX_NOINPUT: cannot open input",
        69 => "EX_UNAVAILABLE: service unavailable",
        70 => "EX_SOFTWARE: internal software error",
        101 => "EXIT_CONNECTION_FAILURE_HOST1",
        102 => "EXIT_CONNECTION_FAILURE_HOST2",
        111 => "EXIT_WITH_ERRORS",
        112 => "EXIT_WITH_ERRORS_MAX",
        113 => "EXIT_OVERQUOTA",
        114 => "EXIT_ERR_APPEND",
        115 => "EXIT_ERR_FETCH",
        116 => "EXIT_ERR_CREATE",
        117 => "EXIT_ERR_SELECT",
        118 => "EXIT_TRANSFER_EXCEEDED",
        119 => "EXIT_ERR_APPEND_VIRUS",
        120 => "EXIT_ERR_FLAGS",
        161 => "EXIT_AUTHENTICATION_FAILURE_USER1",
        162 => "EXIT_AUTHENTICATION_FAILURE_USER2",
        254 => "EXIT_TESTS_FAILED",
        _ => "EXIT_CATCH_ALL",
    }
}

/// imapsync's error classes (`error_type`), each mapped to an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrClass {
    AuthUser1,
    AuthUser2,
    Tls,
    Fetch,
    AppendSize,
    Overquota,
    AppendVirus,
    Append,
    Flags,
    Create,
    Select,
    TransferExceeded,
    ConnHost1,
    ConnHost2,
    Unclassified,
    NothingReported,
}

impl ErrClass {
    /// The name imapsync prints ("The most frequent error is ERR_...").
    pub fn name(self) -> &'static str {
        match self {
            ErrClass::AuthUser1 => "ERR_AUTHENTICATION_FAILURE_USER1",
            ErrClass::AuthUser2 => "ERR_AUTHENTICATION_FAILURE_USER2",
            ErrClass::Tls => "ERR_EXIT_TLS_FAILURE",
            ErrClass::Fetch => "ERR_Host1_FETCH",
            ErrClass::AppendSize => "ERR_APPEND_SIZE",
            ErrClass::Overquota => "ERR_OVERQUOTA",
            ErrClass::AppendVirus => "ERR_APPEND_VIRUS",
            ErrClass::Append => "ERR_APPEND",
            ErrClass::Flags => "ERR_FLAGS",
            ErrClass::Create => "ERR_CREATE",
            ErrClass::Select => "ERR_SELECT",
            ErrClass::TransferExceeded => "ERR_TRANSFER_EXCEEDED",
            ErrClass::ConnHost1 => "ERR_CONNECTION_FAILURE_HOST1",
            ErrClass::ConnHost2 => "ERR_CONNECTION_FAILURE_HOST2",
            ErrClass::Unclassified => "ERR_UNCLASSIFIED",
            ErrClass::NothingReported => "ERR_NOTHING_REPORTED",
        }
    }

    /// `%EXIT_VALUE_OF_ERR_TYPE`.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrClass::AuthUser1 => code::EXIT_AUTHENTICATION_FAILURE_USER1,
            ErrClass::AuthUser2 => code::EXIT_AUTHENTICATION_FAILURE_USER2,
            ErrClass::Tls => code::EXIT_TLS_FAILURE,
            ErrClass::Fetch => code::EXIT_ERR_FETCH,
            ErrClass::AppendSize | ErrClass::Append => code::EXIT_ERR_APPEND,
            ErrClass::Overquota => code::EXIT_OVERQUOTA,
            ErrClass::AppendVirus => code::EXIT_ERR_APPEND_VIRUS,
            ErrClass::Flags => code::EXIT_ERR_FLAGS,
            ErrClass::Create => code::EXIT_ERR_CREATE,
            ErrClass::Select => code::EXIT_ERR_SELECT,
            ErrClass::TransferExceeded => code::EXIT_TRANSFER_EXCEEDED,
            ErrClass::ConnHost1 => code::EXIT_CONNECTION_FAILURE_HOST1,
            ErrClass::ConnHost2 => code::EXIT_CONNECTION_FAILURE_HOST2,
            ErrClass::Unclassified | ErrClass::NothingReported => code::EXIT_WITH_ERRORS,
        }
    }
}

/// True when one line of `text` has `first` and, later on the same line, `then` (Perl's
/// `m{first.*then}`: `.` does not cross a newline).
fn on_one_line(text: &str, first: &str, then: &str) -> bool {
    text.lines().any(|line| {
        line.find(first)
            .is_some_and(|at| line[at + first.len()..].contains(then))
    })
}

/// Perl's `m{Host. failure: Can not go to tls encryption on host.}`.
fn is_tls_failure(text: &str) -> bool {
    const MIDDLE: &str = " failure: Can not go to tls encryption on host";
    text.match_indices(MIDDLE).any(|(at, _)| {
        let before = &text.as_bytes()[..at];
        let after = &text[at + MIDDLE.len()..];
        before.len() >= 5
            && before[before.len() - 5..before.len() - 1] == *b"Host"
            && !after.is_empty()
    })
}

/// Classifies one error text exactly as imapsync's `error_type` does: the tests run in its code's
/// order (login, TLS, fetch, append size, quota, virus, append, flags, create, select, transfer
/// limit, connection), the first match wins. The reference's table lists the same patterns in
/// exit-code order; the code order is what decides, e.g. an OVERQUOTA append is ERR_OVERQUOTA.
pub fn classify(text: &str) -> ErrClass {
    let has = |s: &str| text.contains(s);
    if text.trim().is_empty() {
        ErrClass::NothingReported
    } else if has("Host1 failure: Error login on") {
        ErrClass::AuthUser1
    } else if has("Host2 failure: Error login on") {
        ErrClass::AuthUser2
    } else if is_tls_failure(text) {
        ErrClass::Tls
    } else if has("could not be fetched:") {
        ErrClass::Fetch
    } else if on_one_line(
        text,
        "could not append ",
        "BAD maximum message size exceeded",
    ) || on_one_line(
        text,
        "could not append",
        "Maximum size of appendable message has been exceeded",
    ) {
        ErrClass::AppendSize
    } else if has("OVERQUOTA")
        || has("Quota limit will be exceeded")
        || has("full: it is time to find a bigger place")
    {
        ErrClass::Overquota
    } else if on_one_line(text, "could not append", "virus") {
        ErrClass::AppendVirus
    } else if has("could not append") {
        ErrClass::Append
    } else if has("could not add flags") {
        ErrClass::Flags
    } else if has("Could not create folder") {
        ErrClass::Create
    } else if has("Could not select:") {
        ErrClass::Select
    } else if has("Maximum bytes transferred reached") {
        ErrClass::TransferExceeded
    } else if has("can not open imap connection on host1") {
        ErrClass::ConnHost1
    } else if has("can not open imap connection on host2") {
        ErrClass::ConnHost2
    } else {
        ErrClass::Unclassified
    }
}

/// The most frequent class among `errors`; ties go to the alphabetically first class name
/// (byte order, as Perl's `cmp`). No errors: ERR_NOTHING_REPORTED.
pub fn most_frequent(errors: &[String]) -> ErrClass {
    let mut counts: BTreeMap<&'static str, (usize, ErrClass)> = BTreeMap::new();
    for e in errors {
        let class = classify(e);
        counts.entry(class.name()).or_insert((0, class)).0 += 1;
    }
    // BTreeMap iterates names in byte order; keep the first of the highest counts.
    let mut best: Option<(usize, ErrClass)> = None;
    for (count, class) in counts.into_values() {
        if best.is_none_or(|(n, _)| count > n) {
            best = Some((count, class));
        }
    }
    best.map_or(ErrClass::NothingReported, |(_, class)| class)
}

/// The exit code of a run that counted `errors`: 0 without errors, else that of the most
/// frequent class.
pub fn exit_code_for(errors: &[String]) -> i32 {
    if errors.is_empty() {
        code::EX_OK
    } else {
        most_frequent(errors).exit_code()
    }
}

/// What the comments after "The most frequent error is ..." mention.
#[derive(Clone, Debug, Default)]
pub struct Account {
    pub host1: String,
    pub port1: u16,
    pub user1: String,
    pub host2: String,
    pub port2: u16,
    pub user2: String,
}

/// imapsync's `%COMMENT_OF_ERR_TYPE` (empty for most classes).
pub fn comment(class: ErrClass, a: &Account) -> String {
    match class {
        ErrClass::AppendSize => {
            "The destination server refuses too big messages. Use --truncmess option. \
             Read https://imapsync.lamiral.info/FAQ.d/FAQ.Messages_Too_Big.txt"
                .to_string()
        }
        ErrClass::AuthUser1 => format!("Check the credentials for {}.", a.user1),
        ErrClass::AuthUser2 => format!("Check the credentials for {}.", a.user2),
        ErrClass::ConnHost1 => format!(
            "Check that host1 {} on port {} is the right IMAP server to be contacted for your mailbox.",
            a.host1, a.port1
        ),
        ErrClass::ConnHost2 => format!(
            "Check that host2 {} on port {} is the right IMAP server to be contacted for your mailbox.",
            a.host2, a.port2
        ),
        ErrClass::Overquota => {
            "The destination mailbox is 100% full, get free space on it and then resume the sync."
                .to_string()
        }
        ErrClass::Flags => {
            "Many STORE errors with FLAGS. Retry with the option --noresyncflags".to_string()
        }
        _ => String::new(),
    }
}

/// The block printed before the exit line when errors were counted (`errors_listing`).
/// `dump = false` is `--noerrorsdump`: only the last line.
pub fn error_listing(
    errors: &[String],
    nb_errors: u64,
    dump: bool,
    account: &Account,
) -> Vec<String> {
    let mut lines = Vec::new();
    if dump {
        lines.push(format!(
            "++++ Listing {nb_errors} errors encountered during the sync ( avoid this listing with --noerrorsdump )."
        ));
        let n = errors.len();
        lines.extend(
            errors
                .iter()
                .enumerate()
                .map(|(i, e)| format!("Err {}/{n}: {}", i + 1, e.trim_end())),
        );
    }
    let class = most_frequent(errors);
    lines.push(format!(
        "The most frequent error is {}. {}",
        class.name(),
        comment(class, account)
    ));
    lines
}

/// The last line of every run that got past option parsing.
pub fn exit_line(exit: i32, nb_errors: u64, errors_max: u64, pid: u32) -> String {
    format!(
        "Exiting with return value {exit} ({}) {nb_errors}/{errors_max} nb_errors/max_errors PID {pid}",
        exit_text(exit)
    )
}

/// `bytes_display_string_bin`: binary units with three decimals, switching unit at 1000 of the
/// previous one ("0.977 MiB" for 1 024 000 bytes).
pub fn bytes_bin(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes / 1024.0;
    for unit in UNITS {
        if value.abs() < 1000.0 {
            return format!("{value:.3} {unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.3} PiB")
}

/// `N (x.xxx KiB)`.
pub fn bytes_with_unit(bytes: u64) -> String {
    format!("{bytes} ({})", bytes_bin(bytes as f64))
}

/// imapsync's `localtimez` date format, used for "Transfer started on" and the like.
pub fn localtimez(t: &DateTime<Local>) -> String {
    t.format("%A %-d %B %Y-%m-%d %H:%M:%S %z").to_string()
}

/// A folder name as imapsync shows it (`jux_utf8`): `[raw]`, plus `= [utf8]` when the modified
/// UTF-7 name decodes to something else.
pub fn jux(name: &str) -> String {
    match utf7_decode(name) {
        Some(utf8) if utf8 != name => format!("[{name}] = [{utf8}]"),
        _ => format!("[{name}]"),
    }
}

/// One message copied: `msg %s/%-19s copied to %s/%-10s %.2f msgs/s  %s/s %s copied`. imapferry
/// has no ETA (it needs per-folder progress the engine does not report), so the line ends there.
pub struct CopyLine<'a> {
    pub old_folder: &'a str,
    pub old_uid: u32,
    pub size: u64,
    pub new_folder: &'a str,
    pub new_uid: Option<u32>,
    pub copied: u64,
    pub bytes: u64,
    pub elapsed_secs: f64,
}

pub fn copy_line(c: &CopyLine) -> String {
    let secs = c.elapsed_secs.max(0.001);
    let new_uid = c
        .new_uid
        .map_or_else(|| "NA".to_string(), |u| u.to_string());
    format!(
        "msg {}/{:<19} copied to {}/{:<10} {:.2} msgs/s  {}/s {} copied",
        c.old_folder,
        format!("{} {{{}}}", c.old_uid, c.size),
        c.new_folder,
        new_uid,
        c.copied as f64 / secs,
        bytes_bin(c.bytes as f64 / secs),
        bytes_bin(c.bytes as f64),
    )
}

/// Totals of one side of a size listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideTotals {
    pub folders: u64,
    pub messages: u64,
    pub bytes: u64,
    pub biggest: u64,
}

/// Totals of a size listing: host1 over the selected folders, host2 over their distinct NEW names.
pub fn size_totals(sizes: &[FolderSize]) -> (SideTotals, SideTotals) {
    let mut old = SideTotals {
        folders: sizes.len() as u64,
        ..Default::default()
    };
    let mut new = SideTotals::default();
    let mut seen = std::collections::BTreeSet::new();
    for f in sizes {
        if let Some(s) = f.old {
            old.messages += s.messages;
            old.bytes += s.bytes;
            old.biggest = old.biggest.max(s.biggest);
        }
        if !seen.insert(f.new_name.as_str()) {
            continue;
        }
        new.folders += 1;
        if let Some(s) = f.new {
            new.messages += s.messages;
            new.bytes += s.bytes;
            new.biggest = new.biggest.max(s.biggest);
        }
    }
    (old, new)
}

/// The size table (`foldersizes_diff_list` + `foldersizes_total`); an empty string is a blank line.
pub fn folder_size_table(sizes: &[FolderSize], sizing_secs: f64) -> Vec<String> {
    let n = sizes.len();
    let mut lines = Vec::new();
    for (i, f) in sizes.iter().enumerate() {
        let counter = format!("{}/{n}", i + 1);
        let values = |s: Option<crate::sync::Sizes>, missing: &str| match s {
            Some(s) => format!(
                "Size: {:>9} Messages: {:>5} Biggest: {:>9}",
                s.bytes, s.messages, s.biggest
            ),
            None => missing.to_string(),
        };
        lines.push(format!(
            "Host1 folder {counter:>7} {:<35} {}",
            jux(&f.old_name),
            values(f.old, " does not exist")
        ));
        lines.push(format!(
            "Host2 folder {counter:>7} {:<35} {}",
            jux(&f.new_name),
            values(f.new, " does not exist yet")
        ));
        let (o, w) = (f.old.unwrap_or_default(), f.new.unwrap_or_default());
        lines.push(format!(
            "Host2-Host1  {:>7} {:<35}       {:>9}           {:>5}          {:>9}",
            "",
            "",
            w.bytes as i128 - o.bytes as i128,
            w.messages as i128 - o.messages as i128,
            w.biggest as i128 - o.biggest as i128,
        ));
        lines.push(String::new());
    }
    let (o, w) = size_totals(sizes);
    let pair = |label: &str, a: String, b: String| {
        [
            format!("Host1 {label}{a}"),
            format!("Host2 {label}{b}"),
            String::new(),
        ]
    };
    lines.extend(pair(
        "Nb folders:           ",
        format!("{:>11} folders", o.folders),
        format!("{:>11} folders", w.folders),
    ));
    lines.extend(pair(
        "Nb messages:          ",
        format!("{:>11} messages", o.messages),
        format!("{:>11} messages", w.messages),
    ));
    let bytes = |n: u64| format!("{n:>11} bytes ({})", bytes_bin(n as f64));
    lines.extend(pair(
        "Total size:           ",
        bytes(o.bytes),
        bytes(w.bytes),
    ));
    lines.extend(pair(
        "Biggest message:      ",
        bytes(o.biggest),
        bytes(w.biggest),
    ));
    lines.push(format!("Time spent on sizing: {sizing_secs:>11.1} seconds"));
    lines
}

/// Process figures for the statistics block (measured by the caller).
#[derive(Clone, Debug, Default)]
pub struct ProcessFigures {
    pub memory_start_mib: f64,
    pub memory_end_mib: f64,
    /// "0.13 0.19 0.17 1/1178 on 8 cores"
    pub load: String,
    pub cpu_secs: f64,
    pub cores: usize,
}

/// Everything the statistics block shows.
#[derive(Clone, Debug)]
pub struct StatsInput<'a> {
    pub started: DateTime<Local>,
    pub ended: DateTime<Local>,
    pub dry: bool,
    pub stats: &'a Stats,
    pub nb_errors: u64,
    /// Totals at start and at end (host1, host2), when folder sizes were computed.
    pub start: Option<(SideTotals, SideTotals)>,
    pub end: Option<(SideTotals, SideTotals)>,
    pub process: ProcessFigures,
}

fn stat(label: &str, value: impl std::fmt::Display) -> String {
    format!("{label:<40}: {value}")
}

fn difference(totals: Option<(SideTotals, SideTotals)>) -> Option<String> {
    let (o, w) = totals?;
    let bytes = w.bytes as i128 - o.bytes as i128;
    Some(format!(
        "{} messages, {bytes} bytes ({})",
        w.messages as i128 - o.messages as i128,
        bytes_bin(bytes as f64)
    ))
}

/// The three closing sentences. "In host2 not in host1" is estimated from the final sizes
/// (imapferry does not key NEW's messages it did not copy); without them the sync counts as strict.
fn sync_sentences(s: &Stats, end: Option<(SideTotals, SideTotals)>) -> [String; 3] {
    let (on_old, missing) = (s.messages_on_old, s.messages_missing_on_new);
    let first = if missing == 0 {
        format!("The sync looks good, all {on_old} identified messages in host1 are on host2.")
    } else {
        format!(
            "The sync is not finished, there are {missing} among {on_old} identified messages in host1 that are not on host2."
        )
    };
    let second = "There is no unidentified message on host1.".to_string();
    let on_new = end.map_or(on_old - missing.min(on_old), |(_, w)| w.messages);
    let extra = on_new.saturating_sub(on_old.saturating_sub(missing));
    let third = if extra == 0 {
        format!("The sync is strict, all {on_new} identified messages in host2 are on host1.")
    } else {
        format!(
            "The sync is not strict, there are {extra} among {on_new} identified messages in host2 that are not on host1. \
             Use --delete2 and sync again to delete them and have a strict sync."
        )
    };
    [first, second, third]
}

/// The statistics block (`do_and_print_stats`), labels padded to column 40.
pub fn stats_block(i: &StatsInput) -> Vec<String> {
    let s = i.stats;
    let secs = (i.ended - i.started).num_milliseconds().max(0) as f64 / 1000.0;
    let per_sec = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let transferred = if i.dry {
        format!(
            "{} (could be {} without dry mode)",
            s.messages_transferred, s.messages_would_transfer
        )
    } else {
        s.messages_transferred.to_string()
    };
    let p = &i.process;
    let mut lines = vec![
        "++++ Statistics".to_string(),
        stat("Transfer started on", localtimez(&i.started)),
        stat("Transfer ended on", localtimez(&i.ended)),
        stat("Transfer time", format!("{secs:.1} sec")),
        stat(
            "Folders synced",
            format!("{}/{} synced", s.folders_synced, s.folders_total),
        ),
        stat("Messages transferred", transferred),
        stat("Messages skipped", s.messages_skipped),
        stat("Messages found duplicate on host1", 0),
        stat("Messages found duplicate on host2", 0),
        stat("Messages found crossduplicate on host2", 0),
        stat("Messages void (noheader) on host1", 0),
        stat("Messages void (noheader) on host2", 0),
        stat(
            "Messages found in host1 not in host2",
            format!("{} messages", s.messages_missing_on_new),
        ),
        stat(
            "Messages found in host2 not in host1",
            format!("{} messages", host2_extra(s, i.end)),
        ),
        stat("Messages deleted on host1", s.messages_deleted_on_old),
        stat("Messages deleted on host2", s.messages_deleted_on_new),
        stat("Messages in error", s.messages_in_error),
        stat("Flags host2 could not store (dropped)", s.flags_dropped),
        stat("Dates host2 could not store (changed)", s.dates_substituted),
        stat(
            "Total bytes transferred",
            bytes_with_unit(s.bytes_transferred),
        ),
        stat("Total bytes skipped", bytes_with_unit(s.bytes_skipped)),
        stat(
            "Message rate",
            format!("{:.1} messages/s", per_sec(s.messages_transferred as f64)),
        ),
        stat(
            "Average bandwidth rate",
            format!("{:.1} KiB/s", per_sec(s.bytes_transferred as f64) / 1024.0),
        ),
        stat("Reconnections to host1", 0),
        stat("Reconnections to host2", 0),
        stat(
            "Memory consumption at the end",
            format!(
                "{:.1} MiB (*time {:.1} MiB*h) (started with {:.1} MiB)",
                p.memory_end_mib,
                p.memory_end_mib * secs / 3600.0,
                p.memory_start_mib
            ),
        ),
        stat("Load end is", &p.load),
        stat("CPU time and %cpu", cpu_figures(p.cpu_secs, secs, p.cores)),
        stat(
            "Biggest message transferred",
            format!(
                "{} bytes ({})",
                s.biggest_message,
                bytes_bin(s.biggest_message as f64)
            ),
        ),
        stat(
            "Memory/biggest message ratio",
            memory_ratio(p.memory_end_mib, s.biggest_message),
        ),
    ];
    if let (Some(start), Some(end)) = (difference(i.start), difference(i.end)) {
        lines.push(stat("Start difference host2 - host1", start));
        lines.push(stat("Final difference host2 - host1", end));
    }
    lines.extend(sync_sentences(s, i.end));
    lines.push(format!("Detected {} errors", i.nb_errors));
    lines.push(String::new());
    lines
}

fn host2_extra(s: &Stats, end: Option<(SideTotals, SideTotals)>) -> u64 {
    end.map_or(0, |(_, w)| {
        w.messages
            .saturating_sub(s.messages_on_old.saturating_sub(s.messages_missing_on_new))
    })
}

fn cpu_figures(cpu_secs: f64, wall_secs: f64, cores: usize) -> String {
    let percent = if wall_secs > 0.0 {
        100.0 * cpu_secs / wall_secs
    } else {
        0.0
    };
    format!(
        "{cpu_secs:.2} sec {percent:.1} %cpu {:.1} %allcpus",
        percent / cores.max(1) as f64
    )
}

fn memory_ratio(memory_mib: f64, biggest: u64) -> String {
    if biggest == 0 {
        return "NA".to_string();
    }
    format!("{:.1}", memory_mib * 1024.0 * 1024.0 / biggest as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Sizes;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classification_table() {
        use ErrClass::*;
        for (text, class, exit) in [
            ("", NothingReported, 111),
            ("aie", Unclassified, 111),
            ("Message xxx could not be fetched: blabla", Fetch, 115),
            (
                "could not append message xxx: BAD maximum message size exceeded",
                AppendSize,
                114,
            ),
            (
                "- msg I/1 could not append (...) to folder X: NO Maximum size of appendable message has been exceeded",
                AppendSize,
                114,
            ),
            ("Quota limit will be exceeded", Overquota, 113),
            (
                "- msg INBOX/3 {12} could not append ( Subject:[x] ) to folder INBOX: NO [OVERQUOTA] Quota exceeded",
                Overquota,
                113,
            ),
            (
                "Could not create folder [X] from [Y]: NO [OVERQUOTA] Not enough disk quota",
                Overquota,
                113,
            ),
            (
                "mailbox full: it is time to find a bigger place",
                Overquota,
                113,
            ),
            ("could not append", Append, 114),
            (
                "could not append ( Subject:[For You] ) to folder INBOX: 275 NO Message refused because it contains a virus",
                AppendVirus,
                119,
            ),
            (
                "Host2: flags msg INBOX/957910 could not add flags [PasGlop]: 33 NO Error",
                Flags,
                120,
            ),
            ("Could not create folder", Create, 116),
            (
                "Host1 Folder Junk: Could not select: NO Mailbox doesn't exist",
                Select,
                117,
            ),
            (
                "Maximum bytes transferred reached, 423 >= 100, ending sync",
                TransferExceeded,
                118,
            ),
            (
                "Host1 failure: can not open imap connection on host1 [bad] with user [tata]: nope",
                ConnHost1,
                101,
            ),
            (
                "Host2 failure: can not open imap connection on host2 [127.0.0.1] with port [1]: Connection refused",
                ConnHost2,
                102,
            ),
            (
                "Host1 failure: Error login on [127.0.0.1] with user [alice] auth [LOGIN]: a2 NO [AUTHENTICATIONFAILED] Authentication failed.",
                AuthUser1,
                161,
            ),
            (
                "Host2 failure: Error login on [h] with user [bob] auth [PLAIN]: NO",
                AuthUser2,
                162,
            ),
            (
                "Host1 failure: Can not go to tls encryption on host1 [h]: the server does not offer STARTTLS",
                Tls,
                12,
            ),
            (
                "Host2 failure: Can not go to tls encryption on host2 [h]: invalid peer certificate",
                Tls,
                12,
            ),
        ] {
            assert_eq!(classify(text), class, "{text}");
            assert_eq!(class.exit_code(), exit, "{text}");
        }
    }

    #[test]
    fn perl_dot_does_not_cross_lines() {
        assert_eq!(classify("could not append\nvirus"), ErrClass::Append);
        assert_eq!(classify("could not append x virus"), ErrClass::AppendVirus);
    }

    #[test]
    fn most_frequent_class_wins_and_ties_go_alphabetical() {
        let e = |v: &[&str]| most_frequent(&strings(v));
        assert_eq!(e(&[]), ErrClass::NothingReported);
        assert_eq!(
            e(&["aie", "OVERQUOTA pipi", "OVERQUOTA caca"]),
            ErrClass::Overquota
        );
        // One each of ERR_APPEND and ERR_CREATE: ERR_APPEND < ERR_CREATE.
        assert_eq!(
            e(&["Could not create folder A", "could not append B"]),
            ErrClass::Append
        );
        // ERR_Host1_FETCH sorts before ERR_OVERQUOTA ('H' < 'O') but after ERR_CREATE.
        assert_eq!(
            e(&["x could not be fetched: y", "OVERQUOTA"]),
            ErrClass::Fetch
        );
        assert_eq!(
            e(&["x could not be fetched: y", "Could not create folder"]),
            ErrClass::Create
        );
        // Both logins failed: USER1 < USER2.
        assert_eq!(
            e(&[
                "Host2 failure: Error login on [h]",
                "Host1 failure: Error login on [h]"
            ]),
            ErrClass::AuthUser1
        );
        // Empty text (ERR_NOTHING_REPORTED) beats ERR_UNCLASSIFIED on a tie, as in imapsync's tests.
        assert_eq!(e(&["aie", ""]), ErrClass::NothingReported);
        assert_eq!(e(&["aie", "ouille", ""]), ErrClass::Unclassified);
        assert_eq!(exit_code_for(&[]), 0);
        assert_eq!(
            exit_code_for(&strings(&[
                "could not append",
                "could not append",
                "Could not select: x"
            ])),
            114
        );
    }

    #[test]
    fn exit_line_and_texts() {
        assert_eq!(
            exit_line(161, 1, 50, 4242),
            "Exiting with return value 161 (EXIT_AUTHENTICATION_FAILURE_USER1) 1/50 nb_errors/max_errors PID 4242"
        );
        assert_eq!(
            exit_line(0, 0, 50, 7),
            "Exiting with return value 0 (EX_OK: successful termination) 0/50 nb_errors/max_errors PID 7"
        );
        assert_eq!(exit_text(66), "EX_NOINPUT: cannot open input");
        assert_eq!(exit_text(12), "EXIT_TLS_FAILURE");
    }

    #[test]
    fn listing() {
        let a = Account {
            user1: "alice".into(),
            ..Default::default()
        };
        let errors = strings(&[
            "Host1 failure: Error login on [h] with user [alice] auth [LOGIN]: NO\n",
            "aie",
        ]);
        assert_eq!(
            error_listing(&errors, 2, true, &a),
            [
                "++++ Listing 2 errors encountered during the sync ( avoid this listing with --noerrorsdump ).",
                "Err 1/2: Host1 failure: Error login on [h] with user [alice] auth [LOGIN]: NO",
                "Err 2/2: aie",
                "The most frequent error is ERR_AUTHENTICATION_FAILURE_USER1. Check the credentials for alice.",
            ]
        );
        assert_eq!(
            error_listing(&strings(&["aie"]), 1, false, &a),
            ["The most frequent error is ERR_UNCLASSIFIED. "]
        );
    }

    #[test]
    fn bytes_in_binary_units() {
        for (n, s) in [
            (0u64, "0.000 KiB"),
            (1, "0.001 KiB"),
            (999, "0.976 KiB"),
            (1024, "1.000 KiB"),
            (1_023_999, "999.999 KiB"),
            (1_024_000, "0.977 MiB"),
            (1_048_576, "1.000 MiB"),
            (1_073_741_824, "1.000 GiB"),
            (1_099_511_627_776, "1.000 TiB"),
            (1_125_899_906_842_624, "1.000 PiB"),
        ] {
            assert_eq!(bytes_bin(n as f64), s, "{n}");
        }
        assert_eq!(bytes_with_unit(506_789_012), "506789012 (483.312 MiB)");
    }

    #[test]
    fn copy_line_format() {
        let line = copy_line(&CopyLine {
            old_folder: "INBOX",
            old_uid: 12,
            size: 3456,
            new_folder: "INBOX",
            new_uid: Some(7),
            copied: 10,
            bytes: 2048,
            elapsed_secs: 2.0,
        });
        assert_eq!(
            line,
            "msg INBOX/12 {3456}           copied to INBOX/7          5.00 msgs/s  1.000 KiB/s 2.000 KiB copied"
        );
    }

    fn sizes(messages: u64, bytes: u64, biggest: u64) -> Option<Sizes> {
        Some(Sizes {
            messages,
            bytes,
            biggest,
        })
    }

    #[test]
    fn size_table() {
        let table = folder_size_table(
            &[
                FolderSize {
                    old_name: "INBOX".into(),
                    new_name: "INBOX".into(),
                    old: sizes(3, 3000, 2000),
                    new: sizes(1, 1000, 1000),
                },
                FolderSize {
                    old_name: "Sent".into(),
                    new_name: "INBOX.Sent".into(),
                    old: sizes(2, 100, 60),
                    new: None,
                },
            ],
            0.25,
        );
        let expected = [
            "Host1 folder     1/2 [INBOX]                             Size:      3000 Messages:     3 Biggest:      2000",
            "Host2 folder     1/2 [INBOX]                             Size:      1000 Messages:     1 Biggest:      1000",
            "Host2-Host1                                                        -2000              -2              -1000",
            "",
            "Host1 folder     2/2 [Sent]                              Size:       100 Messages:     2 Biggest:        60",
            "Host2 folder     2/2 [INBOX.Sent]                         does not exist yet",
            "Host2-Host1                                                         -100              -2                -60",
            "",
            "Host1 Nb folders:                     2 folders",
            "Host2 Nb folders:                     2 folders",
            "",
            "Host1 Nb messages:                    5 messages",
            "Host2 Nb messages:                    1 messages",
            "",
            "Host1 Total size:                  3100 bytes (3.027 KiB)",
            "Host2 Total size:                  1000 bytes (0.977 KiB)",
            "",
            "Host1 Biggest message:             2000 bytes (1.953 KiB)",
            "Host2 Biggest message:             1000 bytes (0.977 KiB)",
            "",
            "Time spent on sizing:         0.2 seconds",
        ];
        assert_eq!(table, expected);
        let missing = folder_size_table(
            &[FolderSize {
                old_name: "Gone".into(),
                new_name: "Gone".into(),
                old: None,
                new: None,
            }],
            0.0,
        );
        assert_eq!(
            missing[0],
            "Host1 folder     1/1 [Gone]                               does not exist"
        );
        assert!(jux("&AMk-l&AOk-ments").starts_with("[&AMk-l&AOk-ments] = ["));
    }

    #[test]
    fn statistics_block() {
        let started = Local::now();
        let ended = started + chrono::Duration::milliseconds(2500);
        let stats = Stats {
            folders_total: 5,
            folders_synced: 5,
            messages_transferred: 0,
            messages_would_transfer: 42,
            bytes_transferred: 506_789_012,
            messages_on_old: 42,
            messages_missing_on_new: 42,
            biggest_message: 1024,
            ..Default::default()
        };
        let totals = (
            SideTotals {
                messages: 42,
                ..Default::default()
            },
            SideTotals::default(),
        );
        let block = stats_block(&StatsInput {
            started,
            ended,
            dry: true,
            stats: &stats,
            nb_errors: 0,
            start: Some(totals),
            end: Some(totals),
            process: ProcessFigures {
                memory_end_mib: 10.0,
                memory_start_mib: 5.0,
                load: "0.1".into(),
                cpu_secs: 0.5,
                cores: 2,
            },
        });
        assert_eq!(block[0], "++++ Statistics");
        assert!(block[1].starts_with("Transfer started on                     : "));
        assert_eq!(
            block[3],
            "Transfer time                           : 2.5 sec"
        );
        assert_eq!(
            block[4],
            "Folders synced                          : 5/5 synced"
        );
        assert_eq!(
            block[5],
            "Messages transferred                    : 0 (could be 42 without dry mode)"
        );
        assert!(block.contains(
            &"Total bytes transferred                 : 506789012 (483.312 MiB)".to_string()
        ));
        assert!(
            block.contains(
                &"Start difference host2 - host1          : -42 messages, 0 bytes (0.000 KiB)"
                    .to_string()
            )
        );
        assert!(block.contains(
            &"The sync is not finished, there are 42 among 42 identified messages in host1 that are not on host2.".to_string()
        ));
        assert!(block.contains(&"There is no unidentified message on host1.".to_string()));
        assert!(block.contains(
            &"The sync is strict, all 0 identified messages in host2 are on host1.".to_string()
        ));
        assert_eq!(block[block.len() - 2], "Detected 0 errors");
        let no_dry = stats_block(&StatsInput {
            started,
            ended,
            dry: false,
            stats: &stats,
            nb_errors: 0,
            start: None,
            end: None,
            process: ProcessFigures::default(),
        });
        assert_eq!(no_dry[5], "Messages transferred                    : 0");
        assert!(!no_dry.iter().any(|l| l.starts_with("Start difference")));
    }
}
