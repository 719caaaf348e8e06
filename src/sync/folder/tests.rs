//! A folder pass against recorded OLD and NEW dialogues: what happens to a message whose FETCH
//! answer the parser cannot turn into a message (the conservation check), and to a message NEW
//! refuses over a flag.

use crate::imap::script::{Step, pipelined_step, serve, step};
use crate::imap::{Client, Side};
use crate::store::{AccountKey, Phase, SqliteStore, Store};
use crate::sync::{Event, Observer, Options, Tally};

use super::{FolderJob, sync_folder};

/// Collects warnings and errors.
#[derive(Default)]
struct Log(std::sync::Mutex<Vec<String>>);

impl Observer for Log {
    fn event(&self, event: Event) {
        let line = match event {
            Event::Warning(w) => format!("warning: {w}"),
            Event::Error(e) => format!("error: {e}"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

const MSG: &str = "Subject: x\r\n\r\nhi\r\n";

/// One FETCH answer with a body.
fn fetched(uid: u32, flags: &str) -> String {
    format!(
        "* {uid} FETCH (UID {uid} FLAGS ({flags}) INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" BODY[] {{{}}}\r\n{MSG})\r\n",
        MSG.len()
    )
}

/// OLD's side of a first pass over INBOX holding UIDs 1..=3, where `copy` answers the copy's FETCH.
fn old_inbox(flags: [&str; 3], copy: String, after: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![
        step(
            "EXAMINE \"INBOX\"",
            "* 3 EXISTS\r\n* OK [UIDVALIDITY 5] x\r\n* OK [UIDNEXT 4] x\r\n$tag OK [READ-ONLY] done\r\n",
        ),
        step(
            "UID FETCH 1:* (UID FLAGS)",
            &format!(
                "* 1 FETCH (UID 1 FLAGS ({}))\r\n* 2 FETCH (UID 2 FLAGS ({}))\r\n* 3 FETCH (UID 3 FLAGS ({}))\r\n$tag OK\r\n",
                flags[0], flags[1], flags[2]
            ),
        ),
        step("UID FETCH 1:3 (UID FLAGS INTERNALDATE BODY.PEEK[])", &copy),
    ];
    steps.extend(after);
    steps
}

/// NEW's side: an empty INBOX (read read-only: a read-write SELECT would take `\Recent` from
/// the user), left before the given APPENDs (this NEW has no UNSELECT; some servers refuse an
/// APPEND to the mailbox the connection has EXAMINEd), and the closing STATUS.
fn new_inbox(appends: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![
        step(
            "EXAMINE \"INBOX\"",
            "* FLAGS (\\Seen)\r\n* OK [PERMANENTFLAGS ()] x\r\n* 0 EXISTS\r\n* OK [UIDVALIDITY 9] x\r\n* OK [UIDNEXT 1] x\r\n$tag OK [READ-ONLY] done\r\n",
        ),
        step("CLOSE", "$tag OK\r\n"),
    ];
    steps.extend(appends);
    steps.push(step(
        "STATUS \"INBOX\"",
        "* STATUS INBOX (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 9)\r\n$tag OK\r\n",
    ));
    steps
}

fn append(body_flags: &str, uid: u32) -> Step {
    step(
        &format!(
            "APPEND \"INBOX\" ({body_flags}) \"01-Jan-2020 00:00:00 +0000\" {{{}+}}\r\n{MSG}",
            MSG.len()
        ),
        &format!("$tag OK [APPENDUID 9 {uid}] done\r\n"),
    )
}

/// Runs one pass of INBOX→INBOX against the two dialogues; returns the store, the pair's id, the
/// log and the pass's report.
async fn pass(
    old: Vec<Step>,
    new: Vec<Step>,
) -> (SqliteStore, i64, Vec<String>, crate::sync::Report) {
    pass_with("IMAP4rev1 LITERAL+ UIDPLUS", old, new).await
}

/// [`pass`] against a NEW with these capabilities.
async fn pass_with(
    new_caps: &str,
    old: Vec<Step>,
    new: Vec<Step>,
) -> (SqliteStore, i64, Vec<String>, crate::sync::Report) {
    let (old_opts, old_task) = serve("IMAP4rev1", old).await;
    let (new_opts, new_task) = serve(new_caps, new).await;
    let mut old = Client::connect(&old_opts, Side::Old).await.unwrap();
    let mut new = Client::connect(&new_opts, Side::New).await.unwrap();
    let store = SqliteStore::open_memory().await.unwrap();
    let key = AccountKey {
        old_host: "old".into(),
        old_user: "u".into(),
        new_host: "new".into(),
        new_user: "u".into(),
    };
    let account = store.account(&key).await.unwrap();
    let pair = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
    let log = Log::default();
    let tally = Tally::new(&log);
    let job = FolderJob {
        pair: pair.clone(),
        messages: 3,
        attempts: 0,
    };
    let result = sync_folder(
        &store,
        &mut old,
        &mut new,
        &job,
        &Options::default(),
        &tally,
    )
    .await;
    drop((old, new));
    let dialogues = (old_task.await.unwrap(), new_task.await.unwrap());
    assert!(
        result.is_ok() && dialogues.0.is_ok() && dialogues.1.is_ok(),
        "{result:?}\nOLD: {:?}\nNEW: {:?}",
        dialogues.0,
        dialogues.1
    );
    let report = tally.into_report();
    (store, pair.id, log.0.into_inner().unwrap(), report)
}

#[tokio::test]
async fn a_message_the_fetch_parser_drops_fails_the_pass_with_its_uid_and_reason() {
    // Message 2's answer carries no BODY[] (what the parser made of `FLAGS (~tilde)` before it
    // learned that `~` only starts a literal as `~{`).
    let copy = format!(
        "{}* 2 FETCH (UID 2 FLAGS (~tilde) INTERNALDATE \"01-Jan-2020 00:00:00 +0000\")\r\n{}$tag OK done\r\n",
        fetched(1, "\\Seen"),
        fetched(3, "")
    );
    let old = old_inbox(
        ["\\Seen", "~tilde", ""],
        copy,
        vec![step("UID SEARCH UID 2", "* SEARCH 2\r\n$tag OK\r\n")],
    );
    let new = new_inbox(vec![append("\\Seen", 1), append("", 2)]);
    let (store, pair, log, report) = pass(old, new).await;

    let errors = store.message_errors(pair).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 2);
    assert!(errors[0].1.contains("had no BODY[]"), "{errors:?}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("msg INBOX/2 could not be fetched")),
        "{log:?}"
    );
    assert_eq!(report.stats.messages_in_error, 1);
    // The folder is not done: the next pass looks at it again.
    let pair = store.folder_pairs(1).await.unwrap().remove(0);
    assert_eq!(pair.phase, Phase::Partial);
    let linked: Vec<u32> = store
        .links(pair.id)
        .await
        .unwrap()
        .iter()
        .map(|l| l.old_uid)
        .collect();
    assert_eq!(linked, [1, 3]);
}

#[tokio::test]
async fn a_message_expunged_on_old_during_the_pass_is_not_an_error() {
    let copy = format!("{}{}$tag OK done\r\n", fetched(1, ""), fetched(3, ""));
    let old = old_inbox(
        ["", "", ""],
        copy,
        vec![step("UID SEARCH UID 2", "* SEARCH\r\n$tag OK\r\n")],
    );
    let new = new_inbox(vec![append("", 1), append("", 2)]);
    let (store, pair, log, report) = pass(old, new).await;
    assert!(report.errors.is_empty(), "{log:?}");
    assert!(store.message_errors(pair).await.unwrap().is_empty());
    assert_eq!(store.folder_pairs(1).await.unwrap()[0].phase, Phase::Synced);
}

#[tokio::test]
async fn a_flag_new_refuses_costs_the_flag_not_the_message() {
    // \Indexed is never sent; `odd` is refused by this NEW anyway: the copy is retried without it.
    let copy = format!(
        "{}{}{}$tag OK done\r\n",
        fetched(1, "\\Seen \\Indexed"),
        fetched(2, "odd \\Flagged"),
        fetched(3, "")
    );
    let old = old_inbox(["\\Seen \\Indexed", "odd \\Flagged", ""], copy, vec![]);
    // Two APPENDs are in flight: message 3 goes out while message 2's refusal is read, and the
    // retry of message 2 (without the keyword; the answer names no flag) comes last.
    let new = new_inbox(vec![
        append("\\Seen", 1),
        step(
            "APPEND \"INBOX\" (\\Flagged odd)",
            "$tag NO [CANNOT] Invalid characters in keyword\r\n",
        ),
        append("", 2),
        append("\\Flagged", 3),
    ]);
    let (store, pair, log, report) = pass(old, new).await;
    assert!(report.errors.is_empty(), "{log:?}");
    assert!(store.message_errors(pair).await.unwrap().is_empty());
    assert_eq!(report.stats.flags_dropped, 2, "{log:?}");
    let warned = |what: &str| {
        log.iter()
            .any(|l| l.starts_with("warning:") && l.contains(what))
    };
    assert!(
        warned("cannot store flag \\Indexed of msg INBOX/1 (not a system flag of RFC 3501)"),
        "{log:?}"
    );
    assert!(warned("refused flag odd of msg INBOX/2"), "{log:?}");
    let linked: Vec<(u32, u32, String)> = store
        .links(pair)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.old_uid, l.new_uid, l.new_flags))
        .collect();
    assert_eq!(
        linked,
        [
            (1, 1, "\\Seen".into()),
            (2, 3, "\\Flagged".into()),
            (3, 2, String::new())
        ]
    );
}

#[tokio::test]
async fn a_first_pass_reads_news_watermark_in_one_round_trip() {
    // NEW has CONDSTORE: after the copy, the pass EXAMINEs with it and reads NEW's flags to vouch
    // for the watermark. The FETCH goes out behind the EXAMINE, not after its answer.
    let copy = format!(
        "{}{}{}$tag OK done\r\n",
        fetched(1, "\\Seen"),
        fetched(2, ""),
        fetched(3, "")
    );
    let old = old_inbox(["\\Seen", "", ""], copy, vec![]);
    let mut new = new_inbox(vec![append("\\Seen", 1), append("", 2), append("", 3)]);
    new.pop(); // no STATUS: the EXAMINE gives the state
    new.extend([
        pipelined_step(
            "EXAMINE \"INBOX\" (CONDSTORE)",
            "* 3 EXISTS\r\n* OK [UIDVALIDITY 9] x\r\n* OK [UIDNEXT 4] x\r\n* OK [HIGHESTMODSEQ 7] x\r\n$tag OK [READ-ONLY] done\r\n",
        ),
        step(
            "UID FETCH 1:* (UID FLAGS)",
            "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n* 2 FETCH (UID 2 FLAGS ())\r\n* 3 FETCH (UID 3 FLAGS ())\r\n$tag OK\r\n",
        ),
    ]);
    let (store, _, log, report) = pass_with("IMAP4rev1 LITERAL+ UIDPLUS CONDSTORE", old, new).await;
    assert!(report.errors.is_empty(), "{log:?}");
    let pair = store.folder_pairs(1).await.unwrap().remove(0);
    assert_eq!(pair.phase, Phase::Synced);
    // Every copy holds the flags its link recorded: the modseq is the watermark.
    let recorded = pair.new.unwrap();
    assert_eq!((recorded.uidnext, recorded.highestmodseq), (4, 7));
}
