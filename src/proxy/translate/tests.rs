//! Recorded dialogues, client side and NEW side, with what the other end must receive.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::uidmap::{Run, runs_of};

/// INBOX: NEW 1..=3 were OLD 10..=12, NEW 5..=6 were OLD 20..=21, NEW 8 on are shown from 100;
/// NEW's UIDVALIDITY 5 is shown as OLD's 777, MODSEQ + 1000.
/// Archive: NEW 1..=2 were OLD 50..=51, NEW 3 on from 60; UIDVALIDITY 6 shown as 888, + 2000.
/// Fresh (created on NEW) has no map.
struct Account(HashMap<&'static str, Arc<UidMap>>);

impl Maps for Account {
    fn map(&self, mailbox: &str) -> Option<Arc<UidMap>> {
        let key = if mailbox.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            mailbox
        };
        self.0.get(key).cloned()
    }

    /// `Pending` is a folder copied from OLD whose numbers are not decided yet.
    fn shown_yet(&self, mailbox: &str) -> bool {
        mailbox != "Pending"
    }
}

fn account() -> Account {
    let inbox = runs_of([(1, 10), (2, 11), (3, 12), (5, 20), (6, 21)]).unwrap();
    let archive = [Run {
        new: 1,
        virt: 50,
        len: 2,
    }];
    Account(HashMap::from([
        (
            "INBOX",
            Arc::new(UidMap::new(777, 5, 1000, &inbox, (8, 100)).unwrap()),
        ),
        (
            "Archive",
            Arc::new(UidMap::new(888, 6, 2000, &archive, (3, 60)).unwrap()),
        ),
        (
            // Entwürfe, as NEW names it.
            "Entw&APw-rfe",
            Arc::new(UidMap::new(999, 7, 0, &archive, (3, 60)).unwrap()),
        ),
    ]))
}

/// One step of a dialogue: `C` a command line from the client, `S` a response line from NEW,
/// `Cl`/`Sl` literal data; each with what must come out (`=`: the same bytes, `-`: nothing).
enum Step {
    C(&'static str, &'static str),
    S(&'static str, &'static str),
    Cl(&'static str),
    Sl(&'static str),
}
use Step::*;

fn play(t: &mut Translator, maps: &Account, steps: &[Step]) {
    for step in steps {
        let (got, line, want) = match *step {
            C(line, want) => {
                let bytes = format!("{line}\r\n");
                let literal = line.ends_with('}');
                let got = t.command(maps, bytes.as_bytes(), literal).into_owned();
                (got, line, want)
            }
            S(line, want) => {
                let bytes = format!("{line}\r\n");
                let literal = line.ends_with('}');
                let got = t.response(maps, bytes.as_bytes(), literal).into_owned();
                (got, line, want)
            }
            Cl(data) => {
                t.command_literal(data.as_bytes());
                continue;
            }
            Sl(data) => {
                t.response_literal(data.as_bytes());
                continue;
            }
        };
        let want = match want {
            "=" => format!("{line}\r\n"),
            "-" => String::new(),
            w => format!("{w}\r\n"),
        };
        assert_eq!(String::from_utf8_lossy(&got), want, "for {line:?}");
    }
}

fn dialogue(steps: &[Step]) {
    play(&mut Translator::new(), &account(), steps);
}

/// SELECT INBOX as a client that knows OLD's numbers does it, and NEW's answer.
const SELECT_INBOX: &[Step] = &[
    C("s1 SELECT INBOX", "="),
    S("* FLAGS (\\Answered \\Seen)", "="),
    S("* 5 EXISTS", "="),
    S(
        "* OK [UIDVALIDITY 5] UIDs valid",
        "* OK [UIDVALIDITY 777] UIDs valid",
    ),
    S(
        "* OK [UIDNEXT 9] Predicted next UID",
        "* OK [UIDNEXT 101] Predicted next UID",
    ),
    S(
        "* OK [HIGHESTMODSEQ 40] Highest",
        "* OK [HIGHESTMODSEQ 1040] Highest",
    ),
    S("s1 OK [READ-WRITE] Select completed", "="),
];

#[test]
fn select_shows_olds_uidvalidity_and_virtual_uidnext_and_modseq() {
    dialogue(SELECT_INBOX);
}

#[test]
fn uid_commands_name_news_uids() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            C("a UID FETCH 10:21 (FLAGS)", "a UID FETCH 1:6 (FLAGS)"),
            C("b UID FETCH 11,100:* (UID)", "b UID FETCH 2,8:* (UID)"),
            C(
                "c UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1030 VANISHED)",
                "c UID FETCH 1:* (FLAGS) (CHANGEDSINCE 30 VANISHED)",
            ),
            C(
                "d FETCH 1:3 (FLAGS) (CHANGEDSINCE 700)",
                "d FETCH 1:3 (FLAGS) (CHANGEDSINCE 0)",
            ),
            C(
                "e UID STORE 20 (UNCHANGEDSINCE 1039) +FLAGS (\\Seen)",
                "e UID STORE 5 (UNCHANGEDSINCE 39) +FLAGS (\\Seen)",
            ),
            C(
                "f STORE 2 (UNCHANGEDSINCE 1039) +FLAGS (\\Seen)",
                "f STORE 2 (UNCHANGEDSINCE 39) +FLAGS (\\Seen)",
            ),
            C("g UID COPY 10:12 Archive", "g UID COPY 1:3 Archive"),
            C("h UID MOVE 21 \"Archive\"", "h UID MOVE 6 \"Archive\""),
            C("i UID EXPUNGE 12,20", "i UID EXPUNGE 3,5"),
            // Naming no message on NEW: a UID no message has, not an empty set.
            C(
                "j UID FETCH 13:19 (FLAGS)",
                "j UID FETCH 4294967295 (FLAGS)",
            ),
            // SEARCHRES's `$` is NEW's own result: left alone.
            C("k UID FETCH $ (FLAGS)", "="),
            // Sequence numbers are NEW's.
            C("l FETCH 1:* (UID FLAGS)", "="),
            C("m COPY 1:2 Archive", "="),
            // A UID inside a section or a string is not a UID set.
            C(
                "n UID FETCH 10 (BODY.PEEK[HEADER.FIELDS (UID 10)])",
                "n UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (UID 10)])",
            ),
        ],
    );
}

#[test]
fn search_sort_and_thread_keys() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            C(
                "a UID SEARCH UID 10:12 UNSEEN",
                "a UID SEARCH UID 1:3 UNSEEN",
            ),
            C("b SEARCH NOT UID 20", "b SEARCH NOT UID 5"),
            C(
                "c SEARCH OR (UID 11) (UID 21)",
                "c SEARCH OR (UID 2) (UID 6)",
            ),
            C("d UID SEARCH MODSEQ 1020", "d UID SEARCH MODSEQ 20"),
            C(
                "e UID SEARCH MODSEQ \"/flags/\\\\draft\" all 1020",
                "e UID SEARCH MODSEQ \"/flags/\\\\draft\" all 20",
            ),
            // Arguments of other keys are not keys, whatever they spell.
            C("f SEARCH SUBJECT UID 10", "="),
            C(
                "g SEARCH HEADER UID MODSEQ UID 10",
                "g SEARCH HEADER UID MODSEQ UID 1",
            ),
            C(
                "h SEARCH SUBJECT \"UID 10\" UID 11",
                "h SEARCH SUBJECT \"UID 10\" UID 2",
            ),
            C(
                "i UID SEARCH RETURN (SAVE ALL) CHARSET UTF-8 UID 12",
                "i UID SEARCH RETURN (SAVE ALL) CHARSET UTF-8 UID 3",
            ),
            C("j UID SEARCH UID $", "="),
            C("k SEARCH 1:3 LARGER 10", "="),
            // A key after a literal string.
            C("l UID SEARCH CHARSET UTF-8 SUBJECT {4}", "="),
            Cl("caf\u{e9}"),
            C(" UID 20:21", " UID 5:6"),
            C(
                "m UID SORT (REVERSE SUBJECT) UTF-8 UID 10:11",
                "m UID SORT (REVERSE SUBJECT) UTF-8 UID 1:2",
            ),
            C(
                "n UID SORT RETURN (MIN) (DATE) UTF-8 UID 12",
                "n UID SORT RETURN (MIN) (DATE) UTF-8 UID 3",
            ),
            C(
                "o UID THREAD REFERENCES UTF-8 UID 10,20",
                "o UID THREAD REFERENCES UTF-8 UID 1,5",
            ),
        ],
    );
}

#[test]
fn fetch_responses_show_virtual_uids_and_modseqs() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            C(
                "a UID FETCH 1:* (UID FLAGS MODSEQ)",
                "a UID FETCH 1:* (UID FLAGS MODSEQ)",
            ),
            S(
                "* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (12))",
                "* 1 FETCH (UID 10 FLAGS (\\Seen) MODSEQ (1012))",
            ),
            S("* 4 FETCH (FLAGS () UID 6)", "* 4 FETCH (FLAGS () UID 21)"),
            S("* 5 FETCH (UID 8)", "* 5 FETCH (UID 100)"),
            // An envelope's strings that spell UID are left alone; the UID after a literal is not.
            S(
                "* 2 FETCH (ENVELOPE (NIL \"UID 2\" NIL NIL NIL NIL NIL NIL NIL NIL) BODY[] {3}",
                "=",
            ),
            Sl("UID"),
            S(" UID 2 MODSEQ (13))", " UID 11 MODSEQ (1013))"),
            S("* 3 FETCH (BODY[HEADER.FIELDS (UID)] {5}", "="),
            Sl("UID 3"),
            S(" UID 3)", " UID 12)"),
            S("a OK Fetch completed", "="),
        ],
    );
}

#[test]
fn search_results_are_uids_only_for_uid_commands() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            C("a UID SEARCH ALL", "="),
            S("* SEARCH 1 2 3 5 6 8", "* SEARCH 10 11 12 20 21 100"),
            S("a OK done", "="),
            C("b SEARCH ALL", "="),
            S("* SEARCH 1 2 3 4 5", "="),
            S("b OK done", "="),
            C("c UID SEARCH MODSEQ 1001", "c UID SEARCH MODSEQ 1"),
            S("* SEARCH 2 5 (MODSEQ 17)", "* SEARCH 11 20 (MODSEQ 1017)"),
            S("c OK done", "="),
            C("d UID SORT (DATE) UTF-8 ALL", "="),
            S("* SORT 5 1 8", "* SORT 20 10 100"),
            S("d OK done", "="),
            C("e UID THREAD REFERENCES UTF-8 ALL", "="),
            S(
                "* THREAD (2)(3 6 (5)(8 1))",
                "* THREAD (11)(12 21 (20)(100 10))",
            ),
            S("e OK done", "="),
            C("f THREAD REFERENCES UTF-8 ALL", "="),
            S("* THREAD (2)(3 4)", "="),
            S("f OK done", "="),
            C("g UID SEARCH RETURN (MIN MAX ALL COUNT MODSEQ) ALL", "="),
            S(
                "* ESEARCH (TAG \"g\") UID MIN 1 MAX 8 ALL 1:3,5:6,8 COUNT 6 MODSEQ 40",
                "* ESEARCH (TAG \"g\") UID MIN 10 MAX 100 ALL 10:12,20:21,100 COUNT 6 MODSEQ 1040",
            ),
            S("g OK done", "="),
            C("p UID SEARCH RETURN (PARTIAL 1:10) ALL", "="),
            S(
                "* ESEARCH (TAG \"p\") UID PARTIAL (1:10 1:3,5)",
                "* ESEARCH (TAG \"p\") UID PARTIAL (1:10 10:12,20)",
            ),
            S("p OK done", "="),
            // Unsolicited: nothing says these are UIDs.
            S("* SEARCH 1 2", "="),
            C("h SEARCH RETURN (MIN ALL) ALL", "="),
            S("* ESEARCH (TAG \"h\") MIN 1 ALL 1:5", "="),
            S("h OK done", "="),
        ],
    );
}

#[test]
fn vanished_and_modified_sets() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            S("* VANISHED (EARLIER) 1:5", "* VANISHED (EARLIER) 10:12,20"),
            S("* VANISHED 6", "* VANISHED 21"),
            // NEW UIDs no message had: nothing the client knows vanished.
            S("* VANISHED (EARLIER) 4", "-"),
            C(
                "a UID STORE 10:21 (UNCHANGEDSINCE 1030) +FLAGS (x)",
                "a UID STORE 1:6 (UNCHANGEDSINCE 30) +FLAGS (x)",
            ),
            S(
                "a OK [MODIFIED 2,5] Conditional store failed",
                "a OK [MODIFIED 11,20] Conditional store failed",
            ),
            C(
                "b STORE 1:3 (UNCHANGEDSINCE 1030) +FLAGS (x)",
                "b STORE 1:3 (UNCHANGEDSINCE 30) +FLAGS (x)",
            ),
            S("b OK [MODIFIED 2] Conditional store failed", "="),
        ],
    );
}

#[test]
fn copyuid_and_appenduid_name_each_folders_numbers() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            C("a UID COPY 10:12 Archive", "a UID COPY 1:3 Archive"),
            S(
                "a OK [COPYUID 6 1:3 3:5] Copied",
                "a OK [COPYUID 888 10:12 60:62] Copied",
            ),
            C("b UID MOVE 20 Archive", "b UID MOVE 5 Archive"),
            S(
                "* OK [COPYUID 6 5 6] Moved",
                "* OK [COPYUID 888 20 63] Moved",
            ),
            S("* 4 EXPUNGE", "="),
            S("b OK Move completed", "="),
            C("c UID COPY 21 Fresh", "c UID COPY 6 Fresh"),
            S(
                "c OK [COPYUID 41 6 1] Copied",
                "c OK [COPYUID 41 21 1] Copied",
            ),
            C("d APPEND Archive (\\Seen) {3}", "="),
            Cl("abc"),
            C("", "="),
            S(
                "d OK [APPENDUID 6 7] Append completed",
                "d OK [APPENDUID 888 64] Append completed",
            ),
            C("e APPEND {7}", "="),
            Cl("Archive"),
            C(" {3}", "="),
            Cl("abc"),
            C(" {3}", "="),
            Cl("def"),
            C("", "="),
            S(
                "e OK [APPENDUID 6 8:9] Append completed",
                "e OK [APPENDUID 888 65:66] Append completed",
            ),
            C("f APPEND Fresh {3}", "="),
            Cl("abc"),
            C("", "="),
            S("f OK [APPENDUID 41 2] Append completed", "="),
        ],
    );
}

#[test]
fn status_shows_each_folders_numbers() {
    dialogue(&[
        C(
            "a STATUS INBOX (UIDNEXT UIDVALIDITY HIGHESTMODSEQ MESSAGES)",
            "=",
        ),
        S(
            "* STATUS INBOX (MESSAGES 5 UIDNEXT 9 UIDVALIDITY 5 HIGHESTMODSEQ 40)",
            "* STATUS INBOX (MESSAGES 5 UIDNEXT 101 UIDVALIDITY 777 HIGHESTMODSEQ 1040)",
        ),
        S("a OK done", "="),
        // LIST-STATUS: several folders in one command.
        C("b LIST \"\" % RETURN (STATUS (UIDNEXT UIDVALIDITY))", "="),
        S("* LIST () \"/\" Archive", "="),
        S(
            "* STATUS \"Archive\" (UIDNEXT 4 UIDVALIDITY 6)",
            "* STATUS \"Archive\" (UIDNEXT 61 UIDVALIDITY 888)",
        ),
        S("* STATUS Fresh (UIDNEXT 4 UIDVALIDITY 41)", "="),
        // NEW's folder is not the one the map is for: its own numbers.
        S("* STATUS inbox (UIDNEXT 3 UIDVALIDITY 9)", "="),
        S("* STATUS {5}", "="),
        Sl("inbox"),
        S(" (UIDNEXT 3 UIDVALIDITY 9)", "="),
        S("* STATUS {7}", "="),
        Sl("Archive"),
        S(" (UIDNEXT 4)", " (UIDNEXT 61)"),
        // Not decided yet: NEW's numbers would be taken back once it is, so none are shown.
        S("* LIST () \"/\" Pending", "="),
        S("* STATUS Pending (UIDNEXT 4 UIDVALIDITY 41)", "-"),
        S("b OK done", "="),
        // The same from NOTIFY (RFC 5465), unasked.
        S("* STATUS Pending (MESSAGES 3)", "-"),
        S(
            "* STATUS Archive (UIDNEXT 5 UIDVALIDITY 6)",
            "* STATUS Archive (UIDNEXT 62 UIDVALIDITY 888)",
        ),
    ]);
}

#[test]
fn qresync_select_is_translated_towards_new() {
    dialogue(&[
        C(
            "a SELECT INBOX (QRESYNC (777 1030 10:21 (1,3 10,12)))",
            "a SELECT INBOX (QRESYNC (5 30 1:6 (1,3 1,3)))",
        ),
        S("* OK [CLOSED] Previous mailbox closed", "="),
        S("* OK [UIDVALIDITY 5] Ok", "* OK [UIDVALIDITY 777] Ok"),
        S("* VANISHED (EARLIER) 3", "* VANISHED (EARLIER) 12"),
        S(
            "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (35))",
            "* 2 FETCH (UID 11 FLAGS (\\Seen) MODSEQ (1035))",
        ),
        S("a OK [READ-WRITE] Select completed", "="),
        // A modseq from OLD's time means "everything" (QRESYNC's must be at least 1).
        C(
            "b EXAMINE INBOX (QRESYNC (777 900))",
            "b EXAMINE INBOX (QRESYNC (5 1))",
        ),
        // A cache of another UIDVALIDITY must not match NEW's.
        C("c SELECT {5}", "="),
        Cl("INBOX"),
        C(" (QRESYNC (5 1030))", " (QRESYNC (1 30))"),
        C("d SELECT Archive (CONDSTORE)", "="),
        // Sequence match data pairs each number with one UID: a range keeps only mapped UIDs.
        C(
            "e SELECT INBOX (QRESYNC (777 1030 10:21 (1:4 10:20)))",
            "e SELECT INBOX (QRESYNC (5 30 1:6 (1:4 1:3,5)))",
        ),
    ]);
}

#[test]
fn responses_follow_the_folder_new_is_answering_for() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            // Pipelined: the FETCH is about INBOX, the SELECT's responses about Archive.
            C("a UID FETCH 10 (UID)", "a UID FETCH 1 (UID)"),
            C("b SELECT Archive", "="),
            C("c UID FETCH 50 (UID)", "c UID FETCH 1 (UID)"),
            S("* 1 FETCH (UID 1)", "* 1 FETCH (UID 10)"),
            S("a OK done", "="),
            S("* OK [UIDVALIDITY 6] Ok", "* OK [UIDVALIDITY 888] Ok"),
            S("b OK [READ-WRITE] done", "="),
            S("* 1 FETCH (UID 1)", "* 1 FETCH (UID 50)"),
            S("c OK done", "="),
            // A folder without a map shows NEW's numbers; IDLE's DONE is not a command.
            C("d SELECT Fresh", "="),
            S("* OK [UIDVALIDITY 41] Ok", "="),
            S("* OK [UIDNEXT 7] Ok", "="),
            S("d OK [READ-WRITE] done", "="),
            C("e UID FETCH 5 (UID)", "="),
            S("* 1 FETCH (UID 5)", "="),
            S("e OK done", "="),
            C("f IDLE", "="),
            S("+ idling", "="),
            C("DONE", "="),
            S("f OK done", "="),
            C("g SELECT INBOX", "="),
            S("* OK [UIDNEXT 9] Ok", "* OK [UIDNEXT 101] Ok"),
            S("g OK done", "="),
            // A failed SELECT leaves no folder selected.
            C("h SELECT Archive", "="),
            S("h NO [SERVERBUG] Internal error", "="),
            S("* 1 FETCH (UID 1)", "="),
            C("i UID FETCH 50 (UID)", "="),
            // After CLOSE neither side has a folder.
            C("j SELECT INBOX", "="),
            S("j OK done", "="),
            C("k CLOSE", "="),
            C("l UID FETCH 10 (UID)", "="),
            S("k OK done", "="),
            S("* 1 FETCH (UID 1)", "="),
        ],
    );
}

#[test]
fn a_select_answered_out_of_turn_still_switches_the_folder() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            // NEW never answers `x` (a dropped command): the SELECT cannot be seen to start...
            C("x CHECK", "="),
            C("s SELECT Archive", "="),
            S("s OK [READ-WRITE] done", "="),
            // ...but its tagged OK says Archive is selected.
            S("* 1 FETCH (UID 1)", "* 1 FETCH (UID 50)"),
        ],
    );
}

#[test]
fn a_folder_whose_uidvalidity_changed_on_new_shows_news_numbers() {
    dialogue(&[
        C("a SELECT INBOX", "="),
        S("* OK [UIDVALIDITY 99] Ok", "="),
        S("* OK [UIDNEXT 9] Ok", "="),
        S("a OK done", "="),
        S("* 1 FETCH (UID 1)", "="),
    ]);
}

#[test]
fn tokens_split_lines_as_imap_does() {
    let line = b"a FETCH 1 (BODY[HEADER.FIELDS (A B)]<0.5> \"q \\\" )\" ~{3}\r\n";
    let kinds: Vec<(Kind, &str)> = tokens(line)
        .into_iter()
        .map(|t| (t.kind, std::str::from_utf8(&line[t.start..t.end]).unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Kind::Atom, "a"),
            (Kind::Atom, "FETCH"),
            (Kind::Atom, "1"),
            (Kind::Open, "("),
            (Kind::Atom, "BODY[HEADER.FIELDS (A B)]<0.5>"),
            (Kind::Quoted, "\"q \\\" )\""),
            (Kind::Literal, "~{3}"),
        ]
    );
}

#[test]
fn context_search_updates_name_virtual_uids() {
    let mut t = Translator::new();
    let maps = account();
    play(&mut t, &maps, SELECT_INBOX);
    play(
        &mut t,
        &maps,
        &[
            C("a UID SEARCH RETURN (UPDATE) UNSEEN", "="),
            S(
                "* ESEARCH (TAG \"a\") UID ADDTO (1 2:3 4 8) REMOVETO (0 5)",
                "* ESEARCH (TAG \"a\") UID ADDTO (1 11:12 4 100) REMOVETO (0 20)",
            ),
            S("* ESEARCH (TAG \"b\") ADDTO (1 2:3)", "="),
        ],
    );
}

#[test]
fn folder_names_in_utf8_are_found_once_the_client_enabled_it() {
    dialogue(&[
        // Before ENABLE, a UTF-8 name is no folder of the account.
        C("a SELECT Entw\u{fc}rfe", "="),
        S("* OK [UIDVALIDITY 7] Ok", "="),
        S("a NO done", "="),
        C("b ENABLE UTF8=ACCEPT", "="),
        S("* ENABLED UTF8=ACCEPT", "="),
        S("b OK done", "="),
        C("c SELECT \"Entw\u{fc}rfe\"", "="),
        S("* OK [UIDVALIDITY 7] Ok", "* OK [UIDVALIDITY 999] Ok"),
        S("c OK done", "="),
        S(
            "* STATUS \"Entw\u{fc}rfe\" (UIDNEXT 4)",
            "* STATUS \"Entw\u{fc}rfe\" (UIDNEXT 61)",
        ),
    ]);
}
