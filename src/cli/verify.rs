//! `imapferry verify USER --config FILE` and `imapferry verify --all --config FILE`: the runbook's
//! "compare account sizes on source and destination", done properly. For the accounts of the
//! proxy's state file, OLD and NEW are read (EXAMINE only) with the configuration's credentials and
//! compared per folder pair: counts, sizes, messages missing or extra by identity key, flags.

use serde::Serialize;

use super::setup::{
    ConfigArg, EX_CONFIG, EX_NOT_DONE, EX_OK, Exit, fail, print_json_line, store_failed, with_state,
};
use super::status::{display_name, no_account, table};
use crate::migrate::Credentials;
use crate::ops::{find_user, old_login, plural};
use crate::store::{AccountState, AccountSummary};
use crate::sync::SyncError;
use crate::sync::verify::{FolderDiff, FolderOutcome, FolderVerdict, verify_account};

/// UIDs listed per folder and kind in the text output; the JSON output lists them all.
const DETAIL_LIMIT: usize = 10;

const ABOUT: &str = "Compares OLD and NEW for accounts of the state file of the proxy \
configuration FILE ([state] path): USER (a NEW user name; else an OLD user name; else OLD \
user@host), or with --all every account that is not retired. Logins come from FILE only \
([old] auth = \"master\" or \"accounts\", [new] master_user or the accounts file); an account \
without them is reported as \"cannot verify\". OLD's folders are mapped with FILE's [mapping], \
as a pass maps them. Nothing is written: folders are opened with EXAMINE and nothing is created.\n\n\
Per folder pair: OLD and NEW name (modified UTF-7 decoded), messages and bytes (RFC822.SIZE) \
on OLD and on NEW, messages missing on NEW and extra on NEW (matched by imapsync's identity \
key, Message-Id and Received, duplicates counted), messages whose flags differ (\\Recent \
ignored), and \"equal\" or \"DIFFERENT\"; then the UIDs that differ and one summary line per \
account. A NEW folder that does not exist is a difference.";

const EXIT: &str = "exit code: 0 everything equal; 1 something differs or could not be \
verified; 64 usage error; 66 unknown USER or no state file; 78 bad configuration; 70 the state \
file cannot be read.";

/// Compare OLD and NEW per folder (counts, sizes, missing or extra messages, flags), read-only
#[derive(clap::Args, Debug)]
#[command(long_about = ABOUT, after_help = EXIT)]
#[group(id = "which", required = true, multiple = false)]
pub(super) struct VerifyArgs {
    /// The account: a NEW user name; else an OLD user name; else OLD user@host
    #[arg(group = "which")]
    user: Option<String>,
    /// Every account in the state file except retired ones
    #[arg(long, group = "which")]
    all: bool,
    #[command(flatten)]
    config: ConfigArg,
    /// One JSON object per account and line instead of the tables
    #[arg(long)]
    json: bool,
}

/// Runs `imapferry verify`.
pub(super) fn verify_command(args: VerifyArgs) -> Result<i32, Exit> {
    let file = &args.config.file;
    let config = args.config.load()?;
    let credentials = match Credentials::from_config(&config) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(fail(
                EX_CONFIG,
                format!(
                    "{} has no [old] section: there is nothing to verify against",
                    file.display()
                ),
            ));
        }
        Err(e) => return Err(fail(EX_CONFIG, e)),
    };
    let opts = crate::migrate::engine_options(&config).map_err(|e| fail(EX_CONFIG, e))?;
    with_state(&config, file, |store| async move {
        let accounts = store.account_summaries().await.map_err(store_failed)?;
        let selected: Vec<&AccountSummary> = match &args.user {
            Some(user) => {
                let found = find_user(&accounts, user);
                if found.is_empty() {
                    return Err(no_account(user));
                }
                found
            }
            None => accounts.iter().collect(),
        };
        let mut tally = Tally::default();
        for account in selected {
            let result = if args.all && account.state == AccountState::Retired {
                AccountResult::Skipped
            } else {
                match credentials.for_account(&account.key) {
                    Err(reason) => AccountResult::CannotVerify(reason),
                    Ok((old_ep, new_ep)) => match verify_account(&old_ep, &new_ep, &opts).await {
                        Ok(folders) => AccountResult::Verified(folders),
                        Err(e) => AccountResult::CannotVerify(sync_error_text(&e)),
                    },
                }
            };
            tally.count(&result);
            if args.json {
                print_json_line(&account_json(account, &result))?;
            } else {
                print!("{}", account_text(account, &result));
            }
        }
        if !args.json && (args.all || tally.total() > 1) {
            println!("{}", tally.line());
        }
        Ok(if tally.different + tally.failed > 0 {
            EX_NOT_DONE
        } else {
            EX_OK
        })
    })
}

fn sync_error_text(e: &SyncError) -> String {
    match e {
        SyncError::Imap(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// What happened to one account.
enum AccountResult {
    Verified(Vec<FolderVerdict>),
    /// No credentials, a failed login, a lost connection: the reason.
    CannotVerify(String),
    /// Retired (with `--all`): OLD is no longer the user's mailbox.
    Skipped,
}

/// Accounts by outcome.
#[derive(Default)]
struct Tally {
    equal: usize,
    different: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn count(&mut self, result: &AccountResult) {
        match result {
            AccountResult::Verified(folders) if folders.iter().all(FolderVerdict::is_equal) => {
                self.equal += 1
            }
            AccountResult::Verified(_) => self.different += 1,
            AccountResult::CannotVerify(_) => self.failed += 1,
            AccountResult::Skipped => self.skipped += 1,
        }
    }

    fn total(&self) -> usize {
        self.equal + self.different + self.failed + self.skipped
    }

    fn line(&self) -> String {
        let mut line = format!(
            "verified {} {}: {} equal, {} different, {} could not be verified",
            self.equal + self.different,
            if self.equal + self.different == 1 {
                "account"
            } else {
                "accounts"
            },
            self.equal,
            self.different,
            self.failed
        );
        if self.skipped > 0 {
            line.push_str(&format!(", {} retired not verified", self.skipped));
        }
        line
    }
}

/// Totals over an account's folders.
#[derive(Default, Serialize)]
struct Totals {
    /// Named so in JSON: `folders` is the list of folder pairs.
    #[serde(rename = "folders_total")]
    folders: u64,
    folders_different: u64,
    messages_old: u64,
    messages_new: u64,
    bytes_old: u64,
    bytes_new: u64,
    missing: u64,
    extra: u64,
    flag_differences: u64,
}

fn totals(folders: &[FolderVerdict]) -> Totals {
    let mut t = Totals::default();
    for f in folders {
        t.folders += 1;
        if !f.is_equal() {
            t.folders_different += 1;
        }
        let (diff, new_exists) = match &f.outcome {
            FolderOutcome::Compared(d) => (d, true),
            FolderOutcome::NewMissing { old } => (old, false),
            FolderOutcome::Unreadable(_) => continue,
        };
        t.messages_old += diff.messages_old;
        t.bytes_old += diff.bytes_old;
        if new_exists {
            t.messages_new += diff.messages_new;
            t.bytes_new += diff.bytes_new;
        }
        t.missing += diff.missing.len() as u64;
        t.extra += diff.extra.len() as u64;
        t.flag_differences += diff.flags.len() as u64;
    }
    t
}

/// `n` and the noun that goes with it.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", plural(n, one, many))
}

/// The text report of one account: a heading, the folder table, the differences, a summary line.
fn account_text(account: &AccountSummary, result: &AccountResult) -> String {
    let who = format!(
        "{} (OLD {}, {})",
        account.key.new_user,
        old_login(account),
        account.state.as_str()
    );
    let folders = match result {
        AccountResult::CannotVerify(reason) => return format!("{who}: cannot verify: {reason}\n"),
        AccountResult::Skipped => return format!("{who}: retired, not verified\n"),
        AccountResult::Verified(folders) => folders,
    };
    let mut out = format!("{who}\n");
    out.push_str(&folder_table(folders));
    for f in folders {
        for line in details(f) {
            out.push_str(&format!("  {}: {line}\n", display_name(&f.old_name)));
        }
    }
    let t = totals(folders);
    let sizes = format!(
        "{}/{} messages, {}/{} bytes (OLD/NEW)",
        t.messages_old, t.messages_new, t.bytes_old, t.bytes_new
    );
    if t.folders_different == 0 {
        out.push_str(&format!(
            "{who}: equal: {}, {sizes}\n",
            counted(t.folders, "folder", "folders")
        ));
    } else {
        out.push_str(&format!(
            "{who}: DIFFERENT: {} of {} {}; {sizes}; {} missing on NEW, {} extra on NEW, {}\n",
            t.folders_different,
            t.folders,
            if t.folders == 1 {
                "folder differs"
            } else {
                "folders differ"
            },
            t.missing,
            t.extra,
            counted(t.flag_differences, "flag difference", "flag differences"),
        ));
    }
    out
}

/// The table of folder pairs.
fn folder_table(folders: &[FolderVerdict]) -> String {
    let header = [
        "OLD folder",
        "NEW folder",
        "OLD msgs",
        "NEW msgs",
        "OLD bytes",
        "NEW bytes",
        "missing",
        "extra",
        "flags",
        "result",
    ];
    let dash = || "-".to_string();
    let rows = folders
        .iter()
        .map(|f| {
            let mut row = vec![display_name(&f.old_name), display_name(&f.new_name)];
            let numbers = match &f.outcome {
                FolderOutcome::Compared(d) => [
                    d.messages_old.to_string(),
                    d.messages_new.to_string(),
                    d.bytes_old.to_string(),
                    d.bytes_new.to_string(),
                    d.missing.len().to_string(),
                    d.extra.len().to_string(),
                    d.flags.len().to_string(),
                ],
                FolderOutcome::NewMissing { old } => [
                    old.messages_old.to_string(),
                    dash(),
                    old.bytes_old.to_string(),
                    dash(),
                    old.missing.len().to_string(),
                    "0".to_string(),
                    "0".to_string(),
                ],
                FolderOutcome::Unreadable(_) => {
                    [dash(), dash(), dash(), dash(), dash(), dash(), dash()]
                }
            };
            row.extend(numbers);
            row.push(if f.is_equal() { "equal" } else { "DIFFERENT" }.to_string());
            row
        })
        .collect();
    table(
        &header,
        rows,
        &[
            false, false, true, true, true, true, true, true, true, false,
        ],
    )
}

/// `UID 1, 2, 3 and 7 more`.
fn uid_list(uids: &[u32]) -> String {
    let shown: Vec<String> = uids.iter().take(DETAIL_LIMIT).map(u32::to_string).collect();
    let mut text = format!(
        "{} {}",
        if uids.len() == 1 { "UID" } else { "UIDs" },
        shown.join(", ")
    );
    if uids.len() > DETAIL_LIMIT {
        text.push_str(&format!(" and {} more", uids.len() - DETAIL_LIMIT));
    }
    text
}

/// The lines explaining why a folder is different.
fn details(f: &FolderVerdict) -> Vec<String> {
    let diff: &FolderDiff = match &f.outcome {
        FolderOutcome::Unreadable(reason) => return vec![format!("cannot verify: {reason}")],
        FolderOutcome::NewMissing { .. } => {
            return vec![format!(
                "NEW folder {} does not exist",
                display_name(&f.new_name)
            )];
        }
        FolderOutcome::Compared(d) => d,
    };
    let mut lines = Vec::new();
    if !diff.missing.is_empty() {
        lines.push(format!("missing on NEW: OLD {}", uid_list(&diff.missing)));
    }
    if !diff.extra.is_empty() {
        lines.push(format!("extra on NEW: NEW {}", uid_list(&diff.extra)));
    }
    for d in diff.flags.iter().take(DETAIL_LIMIT) {
        lines.push(format!(
            "flags differ: OLD UID {} ({}), NEW UID {} ({})",
            d.old_uid, d.old_flags, d.new_uid, d.new_flags
        ));
    }
    if diff.flags.len() > DETAIL_LIMIT {
        lines.push(format!(
            "flags differ for {} more messages",
            diff.flags.len() - DETAIL_LIMIT
        ));
    }
    if lines.is_empty() && diff.bytes_old != diff.bytes_new {
        lines.push(format!(
            "sizes differ: {} bytes on OLD, {} on NEW",
            diff.bytes_old, diff.bytes_new
        ));
    }
    lines
}

/// One account as JSON (`--json`).
#[derive(Serialize)]
struct AccountJson<'a> {
    new_user: &'a str,
    new_host: &'a str,
    old_user: &'a str,
    old_host: &'a str,
    state: &'a str,
    /// `equal`, `different`, `cannot verify` or `skipped` (retired, with `--all`).
    result: &'static str,
    reason: Option<&'a str>,
    #[serde(flatten)]
    totals: Option<Totals>,
    folders: Vec<FolderJson<'a>>,
}

/// One folder pair as JSON. Folder names as the servers spell them (modified UTF-7).
#[derive(Serialize)]
struct FolderJson<'a> {
    old_name: &'a str,
    new_name: &'a str,
    new_exists: bool,
    /// `equal`, `different` or `cannot verify`.
    result: &'static str,
    reason: Option<&'a str>,
    messages_old: Option<u64>,
    messages_new: Option<u64>,
    bytes_old: Option<u64>,
    bytes_new: Option<u64>,
    missing: Option<u64>,
    extra: Option<u64>,
    flag_differences: Option<u64>,
    missing_old_uids: &'a [u32],
    extra_new_uids: &'a [u32],
    flags: &'a [crate::sync::verify::FlagDifference],
}

fn folder_json(f: &FolderVerdict) -> FolderJson<'_> {
    let mut j = FolderJson {
        old_name: &f.old_name,
        new_name: &f.new_name,
        new_exists: true,
        result: if f.is_equal() { "equal" } else { "different" },
        reason: None,
        messages_old: None,
        messages_new: None,
        bytes_old: None,
        bytes_new: None,
        missing: None,
        extra: None,
        flag_differences: None,
        missing_old_uids: &[],
        extra_new_uids: &[],
        flags: &[],
    };
    let (diff, new_exists) = match &f.outcome {
        FolderOutcome::Unreadable(reason) => {
            j.result = "cannot verify";
            j.reason = Some(reason);
            return j;
        }
        FolderOutcome::NewMissing { old } => (old, false),
        FolderOutcome::Compared(d) => (d, true),
    };
    j.new_exists = new_exists;
    j.messages_old = Some(diff.messages_old);
    j.bytes_old = Some(diff.bytes_old);
    if new_exists {
        j.messages_new = Some(diff.messages_new);
        j.bytes_new = Some(diff.bytes_new);
    }
    j.missing = Some(diff.missing.len() as u64);
    j.extra = Some(diff.extra.len() as u64);
    j.flag_differences = Some(diff.flags.len() as u64);
    j.missing_old_uids = &diff.missing;
    j.extra_new_uids = &diff.extra;
    j.flags = &diff.flags;
    j
}

fn account_json<'a>(account: &'a AccountSummary, result: &'a AccountResult) -> AccountJson<'a> {
    let mut j = AccountJson {
        new_user: &account.key.new_user,
        new_host: &account.key.new_host,
        old_user: &account.key.old_user,
        old_host: &account.key.old_host,
        state: account.state.as_str(),
        result: "skipped",
        reason: None,
        totals: None,
        folders: Vec::new(),
    };
    match result {
        AccountResult::Skipped => j.reason = Some("retired"),
        AccountResult::CannotVerify(reason) => {
            j.result = "cannot verify";
            j.reason = Some(reason);
        }
        AccountResult::Verified(folders) => {
            let t = totals(folders);
            j.result = if t.folders_different == 0 {
                "equal"
            } else {
                "different"
            };
            j.totals = Some(t);
            j.folders = folders.iter().map(folder_json).collect();
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fixtures::summary;
    use crate::sync::flags::FlagSet;
    use crate::sync::verify::{MsgInfo, compare};

    fn msg(uid: u32, key: &str, flags: &str) -> MsgInfo {
        MsgInfo {
            uid,
            key: key.into(),
            size: 100,
            flags: FlagSet::parse(flags),
        }
    }

    #[test]
    fn text_and_json_reports() {
        let mut account = summary(1, "joe", "joe", "old.example");
        account.key.new_host = "new.example".into();
        (account.folders, account.folders_synced) = (3, 3);
        let old = [msg(1, "a", "\\Seen"), msg(2, "b", ""), msg(3, "c", "")];
        let new = [msg(1, "a", "\\Seen \\Flagged"), msg(2, "b", "")];
        let result = AccountResult::Verified(vec![
            FolderVerdict {
                old_name: "INBOX".into(),
                new_name: "INBOX".into(),
                outcome: FolderOutcome::Compared(compare(&old, &new)),
            },
            FolderVerdict {
                old_name: "Entw&APw-rfe".into(),
                new_name: "Entw&APw-rfe".into(),
                outcome: FolderOutcome::Compared(compare(&old[..1], &old[..1])),
            },
            FolderVerdict {
                old_name: "Archive".into(),
                new_name: "Archive".into(),
                outcome: FolderOutcome::NewMissing {
                    old: compare(&old[1..], &[]),
                },
            },
        ]);
        let text = account_text(&account, &result);
        let expected = "\
joe (OLD joe@old.example, synced)
OLD folder  NEW folder  OLD msgs  NEW msgs  OLD bytes  NEW bytes  missing  extra  flags  result
INBOX       INBOX              3         2        300        200        1      0      1  DIFFERENT
Entwürfe    Entwürfe           1         1        100        100        0      0      0  equal
Archive     Archive            2         -        200          -        2      0      0  DIFFERENT
  INBOX: missing on NEW: OLD UID 3
  INBOX: flags differ: OLD UID 1 (\\Seen), NEW UID 1 (\\Flagged \\Seen)
  Archive: NEW folder Archive does not exist
joe (OLD joe@old.example, synced): DIFFERENT: 2 of 3 folders differ; 6/3 messages, \
600/300 bytes (OLD/NEW); 3 missing on NEW, 0 extra on NEW, 1 flag difference
";
        assert_eq!(text, expected);

        let json = serde_json::to_value(account_json(&account, &result)).unwrap();
        assert_eq!(json["result"], "different");
        assert_eq!(json["folders_total"], 3);
        assert_eq!(json["folders_different"], 2);
        assert_eq!(json["folders"].as_array().map(Vec::len), Some(3));
        let line = serde_json::to_string(&account_json(&account, &result)).unwrap();
        assert_eq!(
            line.matches("\"folders\":").count(),
            1,
            "no duplicate keys: {line}"
        );
        assert_eq!(json["messages_old"], 6);
        assert_eq!(json["messages_new"], 3);
        assert_eq!(json["missing"], 3);
        assert_eq!(json["flag_differences"], 1);
        assert_eq!(json["folders"][0]["missing_old_uids"][0], 3);
        assert_eq!(
            json["folders"][0]["flags"][0]["new_flags"],
            "\\Flagged \\Seen"
        );
        assert_eq!(json["folders"][1]["old_name"], "Entw&APw-rfe");
        assert_eq!(json["folders"][2]["new_exists"], false);
        assert!(json["folders"][2]["messages_new"].is_null());

        let failed = AccountResult::CannotVerify("no OLD password".into());
        assert_eq!(
            account_text(&account, &failed),
            "joe (OLD joe@old.example, synced): cannot verify: no OLD password\n"
        );
        let json = serde_json::to_value(account_json(&account, &failed)).unwrap();
        assert_eq!(json["result"], "cannot verify");
        assert_eq!(json["reason"], "no OLD password");
        assert!(json.get("messages_old").is_none());
    }
}
