//! What the migration needs to know about one relayed session, without I/O: which folder a
//! command needs backfilled before it goes to NEW, which folder is selected, which folders the
//! user is restructuring, and which user writes NEW accepted (read from the tagged OK and its
//! COPYUID/APPENDUID codes). Folder names are spelled as NEW knows them; a name the proxy cannot
//! read is never guessed: the write is reported untracked instead. It also bounds what a session
//! may have in flight (see [`Tracker::full`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use super::inspect::{Arg, Command, Inspected};
use super::seqmap::SeqMap;
use crate::imap::uidset::{self, Ranges};
use crate::mapping::utf7_encode;
use crate::migrate::{Appended, FlagOp, Write, normalise};

/// Most items of a UID set a client names (its line is bounded anyway).
const MAX_SET_ITEMS: usize = 65_536;
/// Most COPYUID pairs taken from NEW's answer; a larger copy is reported untracked.
const MAX_COPYUID: usize = 1_000_000;
/// Most commands a session may have sent to NEW without its answer, and most bytes of
/// commands tracked meanwhile (what the tracker holds for them is proportional). Past either, the
/// session reads no more from its client until NEW answers.
pub const MAX_IN_FLIGHT: usize = 1_000;
pub const MAX_TRACKED_BYTES: usize = 256 * 1024;

/// A folder argument: its NEW name, or unreadable (a literal the proxy did not see).
type Name = Option<String>;

/// A command waiting for its tagged response.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Intent {
    Select {
        folder: Name,
        readonly: bool,
    },
    /// CLOSE expunges a read-write folder; UNSELECT does not.
    Deselect {
        expunge: bool,
    },
    Flags {
        uids: Option<Ranges>,
        /// The sequence set of a command by sequence number, resolved to UIDs when NEW answers.
        seqs: Option<String>,
        flags: Vec<String>,
        op: FlagOp,
    },
    Expunge,
    Copy {
        to: Name,
        moved: bool,
    },
    Append {
        folder: Name,
        message: Option<Appended>,
    },
    Create {
        folder: Name,
    },
    Delete {
        folder: Name,
    },
    Rename {
        from: Name,
        to: Name,
    },
    Subscribe {
        folder: Name,
        subscribed: bool,
    },
}

/// A command sent to NEW and not answered yet.
#[derive(Debug)]
struct Pending {
    name: String,
    started: Instant,
    /// Bytes of the command as the relay assembled it.
    cost: usize,
    intent: Option<Intent>,
    /// The folders it changes (see [`Tracker::changed_folders`]), settled when it is answered.
    changing: Vec<String>,
    /// It may change the mailbox (see [`Tracker::may_write`]).
    write: bool,
}

/// A command NEW has just answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub tag: String,
    pub name: String,
    /// NEW's status word (`OK`, `NO`, `BAD`).
    pub status: String,
    pub started: Instant,
    /// The command may have changed the mailbox ([`Before::write`]).
    pub write: bool,
}

/// What is selected: a folder (NEW name) or one whose name the proxy could not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selected {
    Folder { folder: String, readonly: bool },
    Unknown { readonly: bool },
}

impl Selected {
    pub fn folder(&self) -> Option<&str> {
        match self {
            Selected::Folder { folder, .. } => Some(folder),
            Selected::Unknown { .. } => None,
        }
    }

    fn readonly(&self) -> bool {
        match self {
            Selected::Folder { readonly, .. } | Selected::Unknown { readonly } => *readonly,
        }
    }
}

/// Per-session tracking state.
#[derive(Debug, Default)]
pub struct Tracker {
    selected: Option<Selected>,
    /// What `ENABLE` turned on for this connection (`* ENABLED`), upper-cased. With UTF8=ACCEPT
    /// mailbox names arrive in UTF-8.
    enabled: BTreeSet<String>,
    /// NEW's hierarchy separator, once the account's tree is mapped (names are normalised with it).
    sep: Option<char>,
    /// Commands in flight by tag (a tag used again waits behind the earlier command: NEW
    /// answers in order), how many, and the sum of their costs.
    pending: HashMap<String, VecDeque<Pending>>,
    in_flight: usize,
    pending_bytes: usize,
    /// An untagged `[COPYUID ...]` (MOVE) waiting for its command's completion.
    copyuid: Option<Vec<(u32, u32)>>,
    /// The selected folder's sequence numbers (when the session is migrated).
    seqs: Option<SeqMap>,
}

/// What a command asks of the migration before it goes to NEW.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Before {
    /// The folder to bring up to date from OLD first.
    pub ensure: Option<String>,
    /// The command is a SELECT or EXAMINE: it shows the client the folder's messages.
    pub opens: bool,
    /// Folders the command creates, deletes or renames: the mirror does not read them on NEW
    /// until NEW has answered (see [`Outcome::settled`]).
    pub changing: Vec<String>,
    /// The command may change the mailbox (a user's write): the account's write-ahead mark must
    /// be in the store before it goes to NEW, and its answer says when it is over
    /// ([`Answered::write`]).
    pub write: bool,
}

/// What a response line changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A write to journal before the line reaches the client.
    pub write: Option<Write>,
    /// The message of an APPEND `write` of one, as NEW got it.
    pub appended: Option<Appended>,
    /// The selected folder changed (to the current [`Tracker::selected`]).
    pub selection_changed: bool,
    /// A write NEW accepted in a folder whose name the proxy could not read: it cannot be
    /// mirrored, OLD must be reconciled. Says which command.
    pub untracked: Option<String>,
    /// Folders of a CREATE/DELETE/RENAME NEW has just answered.
    pub settled: Vec<String>,
    /// The command the line completed.
    pub answered: Option<Answered>,
}

impl Tracker {
    /// `sep`: NEW's hierarchy separator (folder names are normalised with it). A tracker for a
    /// migrated session (`migrating`) also follows the selected folder's sequence numbers.
    pub fn new(sep: Option<char>, migrating: bool) -> Tracker {
        Tracker {
            sep,
            seqs: migrating.then(SeqMap::default),
            ..Tracker::default()
        }
    }

    pub fn selected(&self) -> Option<&Selected> {
        self.selected.as_ref()
    }

    /// Extensions enabled on this connection (CONDSTORE, QRESYNC, UTF8=ACCEPT, …).
    pub fn enabled(&self) -> &BTreeSet<String> {
        &self.enabled
    }

    /// A NEW folder name from a command argument, as NEW spells it: modified UTF-7 (converted
    /// from UTF-8 after `ENABLE UTF8=ACCEPT`), INBOX in upper case, no trailing separator.
    /// `None` for a literal whose data the proxy did not see.
    fn name(&self, arg: &Arg) -> Name {
        let Arg::Str(s) = arg else { return None };
        let utf8 = self.enabled.contains("UTF8=ACCEPT") || self.enabled.contains("IMAP4REV2");
        let raw = if utf8 { utf7_encode(s) } else { s.clone() };
        Some(normalise(&raw, self.sep))
    }

    /// At either cap of what a session may have in flight ([`MAX_IN_FLIGHT`] commands,
    /// [`MAX_TRACKED_BYTES`]): read no more from the client until NEW answers.
    pub fn full(&self) -> bool {
        self.in_flight >= MAX_IN_FLIGHT || self.pending_bytes >= MAX_TRACKED_BYTES
    }

    /// The folders a command changes in a way a reader of NEW must not see half done: those a
    /// CREATE, DELETE or RENAME restructures, and the selected folder when messages leave it
    /// (EXPUNGE, CLOSE, MOVE). Until NEW's answer is journaled, the mirror does not read them
    /// and a pass does not take their missing messages for deletions.
    fn changed_folders(&self, intent: &Intent) -> Vec<String> {
        let selected = || {
            self.selected
                .as_ref()
                .filter(|s| !s.readonly())
                .and_then(|s| s.folder().map(String::from))
        };
        match intent {
            Intent::Create { folder } | Intent::Delete { folder } => {
                folder.iter().cloned().collect()
            }
            Intent::Rename { from, to } => from.iter().chain(to.iter()).cloned().collect(),
            Intent::Expunge
            | Intent::Deselect { expunge: true }
            | Intent::Copy { moved: true, .. } => selected().into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether NEW may change the mailbox when it accepts `intent`: every write the journal
    /// records, and a CLOSE of a writable folder.
    fn may_write(&self, intent: &Intent) -> bool {
        match intent {
            Intent::Select { .. } | Intent::Deselect { expunge: false } => false,
            Intent::Deselect { expunge: true } => {
                self.selected.as_ref().is_some_and(|s| !s.readonly())
            }
            _ => true,
        }
    }

    /// What the commands NEW has not answered leave open at the end of a session: how many
    /// writes (NEW may have done them without the proxy journaling them), and the folders they
    /// were changing (nobody will settle them otherwise).
    pub fn unanswered(&self) -> (usize, Vec<String>) {
        let pending = self.pending.values().flatten();
        let writes = pending.clone().filter(|p| p.write).count();
        let changing = pending.flat_map(|p| p.changing.iter().cloned()).collect();
        (writes, changing)
    }

    /// A complete command from the client (literal data inline, `cost` bytes of it kept), sent
    /// at `now`. Says what must happen before it goes to NEW. A command without a tag is not
    /// tracked (NEW answers it untagged).
    pub fn command(&mut self, sent: &Inspected, cost: usize, now: Instant) -> Before {
        let Some(tag) = &sent.tag else {
            return Before::default();
        };
        let (intent, ensure) = self.intent(&sent.command);
        let changing = intent
            .as_ref()
            .map(|i| self.changed_folders(i))
            .unwrap_or_default();
        let write = intent.as_ref().is_some_and(|i| self.may_write(i));
        let pending = Pending {
            name: sent.name.clone().unwrap_or_default(),
            started: now,
            cost,
            intent,
            changing: changing.clone(),
            write,
        };
        self.in_flight += 1;
        self.pending_bytes += cost;
        self.pending
            .entry(tag.clone())
            .or_default()
            .push_back(pending);
        Before {
            opens: matches!(
                sent.command,
                Command::Select { .. } | Command::Examine { .. }
            ),
            ensure,
            changing,
            write,
        }
    }

    /// The folder `sent` needs brought up to date first, and whether it opens it (SELECT,
    /// EXAMINE): what [`Tracker::command`] says, without tracking the command.
    pub fn needs(&self, sent: &Inspected) -> Option<(String, bool)> {
        sent.tag.as_ref()?;
        let opens = matches!(
            sent.command,
            Command::Select { .. } | Command::Examine { .. }
        );
        Some((self.intent(&sent.command).1?, opens))
    }

    /// What `command` will change once NEW accepts it, and the folder it needs first.
    fn intent(&self, command: &Command) -> (Option<Intent>, Name) {
        match command {
            Command::Select { mailbox } | Command::Examine { mailbox } => {
                let folder = self.name(mailbox);
                let readonly = matches!(command, Command::Examine { .. });
                (
                    Some(Intent::Select {
                        folder: folder.clone(),
                        readonly,
                    }),
                    folder,
                )
            }
            Command::Status { mailbox } => (None, self.name(mailbox)),
            Command::Append { mailbox, message } => {
                let folder = self.name(mailbox);
                (
                    Some(Intent::Append {
                        folder: folder.clone(),
                        message: message.clone(),
                    }),
                    folder,
                )
            }
            Command::Copy { mailbox, .. } | Command::Move { mailbox, .. } => {
                let to = self.name(mailbox);
                let moved = matches!(command, Command::Move { .. });
                (
                    Some(Intent::Copy {
                        to: to.clone(),
                        moved,
                    }),
                    to,
                )
            }
            Command::Store {
                uid,
                set,
                op,
                flags,
            } => {
                let (uids, seqs) = self.target(*uid, set);
                let flags: Vec<String> = flags
                    .iter()
                    .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                    .cloned()
                    .collect();
                let op = match op.as_str() {
                    "FLAGS" => FlagOp::Replace,
                    "-FLAGS" => FlagOp::Remove,
                    _ => FlagOp::Add,
                };
                let intent = Intent::Flags {
                    uids,
                    seqs,
                    flags,
                    op,
                };
                (Some(intent), None)
            }
            // The server sets \Seen on what it returns: a flag write like any other.
            Command::FetchSeen { uid, set } => {
                let flags = vec!["\\Seen".to_string()];
                let (uids, seqs) = self.target(*uid, set);
                (
                    Some(Intent::Flags {
                        uids,
                        seqs,
                        flags,
                        op: FlagOp::Add,
                    }),
                    None,
                )
            }
            Command::Expunge { .. } => (Some(Intent::Expunge), None),
            Command::Close => (Some(Intent::Deselect { expunge: true }), None),
            Command::Unselect => (Some(Intent::Deselect { expunge: false }), None),
            Command::Create { mailbox } => (
                Some(Intent::Create {
                    folder: self.name(mailbox),
                }),
                None,
            ),
            Command::Delete { mailbox } => (
                Some(Intent::Delete {
                    folder: self.name(mailbox),
                }),
                None,
            ),
            Command::Rename { from, to } => (
                Some(Intent::Rename {
                    from: self.name(from),
                    to: to.as_ref().and_then(|to| self.name(to)),
                }),
                None,
            ),
            Command::Subscribe { mailbox } | Command::Unsubscribe { mailbox } => (
                Some(Intent::Subscribe {
                    folder: self.name(mailbox),
                    subscribed: matches!(command, Command::Subscribe { .. }),
                }),
                None,
            ),
            _ => (None, None),
        }
    }

    /// The UIDs a STORE or FETCH names (`uid`: by UID), or its sequence set to resolve when NEW
    /// answers (a followed session's command by sequence number).
    fn target(&self, uid: bool, set: &str) -> (Option<Ranges>, Option<String>) {
        let seqs = (!uid && self.seqs.is_some()).then(|| set.to_string());
        (uid_ranges(uid, set), seqs)
    }

    /// The start of an untagged response that goes on with a literal (a FETCH of a body):
    /// only what it says about sequence numbers counts.
    pub fn untagged_start(&mut self, line: &[u8]) {
        if let (Some(seqs), Some(text)) = (&mut self.seqs, line.strip_prefix(b"* ")) {
            seqs.untagged(&String::from_utf8_lossy(text));
        }
    }

    /// One complete response line from NEW (no literal in it).
    pub fn response(&mut self, line: &[u8]) -> Outcome {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let mut words = text.splitn(3, ' ');
        let (Some(tag), Some(status)) = (words.next(), words.next()) else {
            return Outcome::default();
        };
        let rest = words.next().unwrap_or("");
        if tag == "*" {
            if let Some(seqs) = &mut self.seqs {
                seqs.untagged(&text[2..]);
            }
            if status.eq_ignore_ascii_case("OK")
                && let Some(pairs) = copyuid(rest)
            {
                // A large MOVE may be reported in several parts.
                self.copyuid.get_or_insert_with(Vec::new).extend(pairs);
            } else if status.eq_ignore_ascii_case("ENABLED") {
                self.enabled
                    .extend(rest.split_ascii_whitespace().map(str::to_ascii_uppercase));
            }
            return Outcome::default();
        }
        let Some(waiting) = self.pending.get_mut(tag) else {
            return Outcome::default();
        };
        let Some(pending) = waiting.pop_front() else {
            return Outcome::default();
        };
        if waiting.is_empty() {
            self.pending.remove(tag);
        }
        self.in_flight -= 1;
        self.pending_bytes -= pending.cost;
        let answered = Some(Answered {
            tag: tag.to_string(),
            name: pending.name,
            status: status.to_ascii_uppercase(),
            started: pending.started,
            write: pending.write,
        });
        let untagged_copyuid = self.copyuid.take();
        let Some(intent) = pending.intent else {
            return Outcome {
                answered,
                ..Outcome::default()
            };
        };
        let ok = status.eq_ignore_ascii_case("OK");
        let mut outcome = Outcome {
            settled: pending.changing,
            answered,
            ..Outcome::default()
        };
        // Writes go to the selected folder when it is writable.
        let selected = self.selected.clone().filter(|s| !s.readonly());
        let unknown = |what: &str| {
            Err(format!(
                "{what} in a folder whose name the proxy could not read"
            ))
        };
        let write: Result<Option<Write>, String> = match intent {
            Intent::Select { folder, readonly } => {
                // A failed SELECT leaves no folder selected (RFC 9051 §6.3.2).
                let now = match folder {
                    Some(folder) => Selected::Folder { folder, readonly },
                    None => Selected::Unknown { readonly },
                };
                self.selected = ok.then_some(now);
                outcome.selection_changed = true;
                self.seqs.iter_mut().for_each(SeqMap::selected);
                Ok(None)
            }
            Intent::Deselect { expunge } => {
                if ok {
                    self.selected = None;
                    outcome.selection_changed = true;
                    self.seqs.iter_mut().for_each(SeqMap::selected);
                }
                match selected {
                    Some(s) if ok && expunge => match s {
                        // CLOSE reports nothing it expunges.
                        Selected::Folder { folder, .. } => {
                            Ok(Some(Write::Expunge { folder, uids: None }))
                        }
                        Selected::Unknown { .. } => unknown("CLOSE"),
                    },
                    _ => Ok(None),
                }
            }
            _ if !ok => Ok(None),
            Intent::Flags {
                uids,
                seqs,
                flags,
                op,
            } => match selected {
                Some(Selected::Folder { folder, .. }) => Ok(Some(Write::Flags {
                    folder,
                    uids: uids.or_else(|| {
                        let (map, set) = (self.seqs.as_ref()?, seqs?);
                        map.resolve(&set)
                    }),
                    flags,
                    replace: op == FlagOp::Replace,
                    op: Some(op),
                })),
                Some(Selected::Unknown { .. }) => unknown("STORE"),
                None => Ok(None),
            },
            Intent::Expunge => match selected {
                Some(Selected::Folder { folder, .. }) => Ok(Some(Write::Expunge {
                    folder,
                    uids: self.seqs.as_mut().and_then(SeqMap::take_expunged),
                })),
                Some(Selected::Unknown { .. }) => unknown("EXPUNGE"),
                None => Ok(None),
            },
            Intent::Copy { to, moved, .. } => {
                let uids = copyuid(rest).or(untagged_copyuid);
                let from = self.selected.as_ref().map(|s| s.folder().map(String::from));
                match (from, to, uids) {
                    (None, _, _) => Ok(None),
                    (Some(Some(from)), Some(to), Some(uids)) => Ok(Some(Write::Copy {
                        from,
                        to,
                        uids,
                        moved,
                    })),
                    // Without COPYUID nothing can be linked: the next pass adopts by identity.
                    (Some(Some(from)), Some(to), None) => Ok(Some(Write::Copy {
                        from,
                        to,
                        uids: Vec::new(),
                        moved,
                    })),
                    _ => unknown(if moved { "MOVE" } else { "COPY" }),
                }
            }
            Intent::Append { folder, message } => match folder {
                Some(folder) => {
                    // Without APPENDUID (a NEW without UIDPLUS) the entry is journaled naming
                    // no message, not dropped: the mirror marks the account diverged with the
                    // entry's id (`status`, the state gauges) for a reconcile (test
                    // `an_append_without_appenduid_diverges_the_account`).
                    let (validity, uids) = appenduid(rest).unwrap_or_default();
                    outcome.appended = message.filter(|_| uids.len() == 1);
                    Ok(Some(Write::Append {
                        folder,
                        uids,
                        validity,
                    }))
                }
                None => unknown("APPEND"),
            },
            Intent::Create {
                folder: Some(folder),
            } => Ok(Some(Write::Create { folder })),
            Intent::Delete {
                folder: Some(folder),
            } => Ok(Some(Write::Delete { folder })),
            Intent::Rename {
                from: Some(from),
                to: Some(to),
            } => Ok(Some(Write::Rename { from, to })),
            Intent::Subscribe {
                folder: Some(folder),
                subscribed,
            } => Ok(Some(Write::Subscribe { folder, subscribed })),
            Intent::Create { .. } => unknown("CREATE"),
            Intent::Delete { .. } => unknown("DELETE"),
            Intent::Rename { .. } => unknown("RENAME"),
            Intent::Subscribe { .. } => unknown("SUBSCRIBE"),
        };
        match write {
            Ok(w) => outcome.write = w,
            Err(why) => outcome.untracked = Some(why),
        }
        outcome
    }
}

/// The UIDs a `UID` command names; `None` for sequence numbers (or a set too large to track).
fn uid_ranges(uid: bool, set: &str) -> Option<Ranges> {
    uid.then(|| Ranges::parse(set, MAX_SET_ITEMS)).flatten()
}

/// The arguments of response code `name` in `text` (`[NAME a b c]` → `["a", "b", "c"]`).
fn code_args<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    let mut words = text[start + 1..end].split_ascii_whitespace();
    words
        .next()
        .filter(|w| w.eq_ignore_ascii_case(name))
        .map(|_| words.collect())
}

/// `[COPYUID validity source dest]` as (source, dest) pairs.
fn copyuid(text: &str) -> Option<Vec<(u32, u32)>> {
    let args = code_args(text, "COPYUID")?;
    let (src, dst) = (args.get(1)?, args.get(2)?);
    let (src, dst) = (
        uidset::parse(src, MAX_COPYUID)?,
        uidset::parse(dst, MAX_COPYUID)?,
    );
    (src.len() == dst.len()).then(|| src.into_iter().zip(dst).collect())
}

/// `[APPENDUID validity uids]` (the UIDs kept when the validity does not read as a number).
fn appenduid(text: &str) -> Option<(Option<u32>, Vec<u32>)> {
    let args = code_args(text, "APPENDUID")?;
    let uids = uidset::parse(args.get(1)?, MAX_COPYUID)?;
    Some((args.first()?.parse().ok(), uids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::inspect::inspect;

    /// Feeds a dialogue (client commands prefixed `C: `, with literal data inline as the relay
    /// assembles it; NEW lines `S: `); returns the folders ensured, the writes and what was
    /// untracked.
    fn run(tracker: &mut Tracker, lines: &[&str]) -> (Vec<String>, Vec<Write>, Vec<String>) {
        let (mut ensured, mut writes, mut untracked) = (Vec::new(), Vec::new(), Vec::new());
        for l in lines {
            if let Some(c) = l.strip_prefix("C: ") {
                let i = inspect(c.as_bytes());
                ensured.extend(tracker.command(&i, c.len(), Instant::now()).ensure);
            } else if let Some(s) = l.strip_prefix("S: ") {
                let outcome = tracker.response(s.as_bytes());
                writes.extend(outcome.write);
                untracked.extend(outcome.untracked);
            }
        }
        (ensured, writes, untracked)
    }

    fn flags(folder: &str, uids: Option<&str>, flags: &[&str], op: FlagOp) -> Write {
        Write::Flags {
            folder: folder.into(),
            uids: uids.map(|u| Ranges::parse(u, 10).unwrap()),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            replace: op == FlagOp::Replace,
            op: Some(op),
        }
    }

    #[test]
    fn an_append_of_one_message_gives_it_with_its_write() {
        let mut t = Tracker::new(Some('/'), true);
        let dated = "\"07-Dec-2026 08:40:00 +0000\"";
        let mut appended = |command: String, answer: &str| {
            t.command(&inspect(command.as_bytes()), command.len(), Instant::now());
            let outcome = t.response(answer.as_bytes());
            assert!(outcome.write.is_some(), "{command}");
            outcome.appended.map(|m| (m.flags, m.date, m.bytes))
        };
        let one = format!("a APPEND Sent (\\Seen) {dated} {{5}}\r\nhello\r\n");
        assert_eq!(
            appended(one.clone(), "a OK [APPENDUID 9 41] done"),
            Some((
                vec!["\\Seen".to_string()],
                "07-Dec-2026 08:40:00 +0000".to_string(),
                b"hello".to_vec()
            ))
        );
        // Without one UID NEW's message is not known: the mirror reads NEW (or adopts).
        assert_eq!(appended(one.clone(), "a OK done"), None);
        assert_eq!(appended(one, "a OK [APPENDUID 9 41:42] done"), None);
        // The message not whole in the command (larger than what the relay keeps).
        assert_eq!(
            appended(
                format!("b APPEND Sent {dated} {{5}}\r\n"),
                "b OK [APPENDUID 9 43] done"
            ),
            None
        );
    }

    #[test]
    fn a_session_yields_its_writes() {
        let mut t = Tracker::new(Some('/'), true);
        let (ensured, writes, untracked) = run(
            &mut t,
            &[
                "C: a SELECT inbox",
                "S: * 3 EXISTS",
                "S: a OK [READ-WRITE] done",
                "C: b UID STORE 1:2 +FLAGS.SILENT (\\Seen \\Recent)",
                "S: b OK done",
                "C: c STORE 1 -FLAGS (\\Flagged)",
                "S: c OK done",
                "C: d UID MOVE 3 Archive",
                "S: * OK [COPYUID 77 3 12] moved",
                "S: * 3 EXPUNGE",
                "S: d OK done",
                "C: e UID COPY 1 Archive",
                "S: e OK [COPYUID 77 1 13] copied",
                "C: f APPEND Sent (\\Seen) {3}",
                "S: f OK [APPENDUID 9 41] appended",
                "C: g STORE 2 +FLAGS (\\Deleted)",
                "S: g NO [READ-ONLY] no",
                "C: g2 UID STORE 1:99998 FLAGS (a[b)",
                "S: g2 OK",
                "C: h CLOSE",
                "S: h OK closed",
                "C: i RENAME Old New",
                "S: i OK",
                "C: j UNSUBSCRIBE New",
                "S: j OK",
                "C: k STATUS Drafts (MESSAGES)",
            ],
        );
        assert_eq!(ensured, ["INBOX", "Archive", "Archive", "Sent", "Drafts"]);
        assert!(untracked.is_empty());
        assert_eq!(
            writes,
            vec![
                flags("INBOX", Some("1:2"), &["\\Seen"], FlagOp::Add),
                flags("INBOX", None, &["\\Flagged"], FlagOp::Remove),
                Write::Copy {
                    from: "INBOX".into(),
                    to: "Archive".into(),
                    uids: vec![(3, 12)],
                    moved: true
                },
                Write::Copy {
                    from: "INBOX".into(),
                    to: "Archive".into(),
                    uids: vec![(1, 13)],
                    moved: false
                },
                Write::Append {
                    folder: "Sent".into(),
                    uids: vec![41],
                    validity: Some(9)
                },
                flags("INBOX", Some("1:99998"), &["a[b"], FlagOp::Replace),
                Write::Expunge {
                    folder: "INBOX".into(),
                    uids: None
                },
                Write::Rename {
                    from: "Old".into(),
                    to: "New".into()
                },
                Write::Subscribe {
                    folder: "New".into(),
                    subscribed: false
                },
            ]
        );
        assert_eq!(t.selected(), None);
    }

    /// Every command that names a folder is tracked whatever form the name takes (atom, quoted
    /// string, literal), spelled as NEW knows it.
    #[test]
    fn folders_named_by_literals_and_odd_spellings_are_tracked() {
        let mut t = Tracker::new(Some('/'), true);
        let (ensured, writes, untracked) = run(
            &mut t,
            &[
                "C: a SELECT INBOX",
                "S: a OK [READ-WRITE] done",
                "C: b SELECT {1+}\r\nA",
                "S: b OK [READ-WRITE] done",
                "C: c UID MOVE 1 {1}\r\nB",
                "S: c OK [COPYUID 5 1 9] moved",
                "C: d CREATE \"foo/\"",
                "S: d OK",
                "C: e DELETE {3}\r\nfoo",
                "S: e OK",
                "C: f RENAME {1+}\r\nA {2+}\r\nA2",
                "S: f OK",
                "C: g APPEND {5+}\r\ninbox (\\Seen) {4+}",
                "S: g OK [APPENDUID 3 7]",
                "C: h STATUS {6}\r\nInbox/ (MESSAGES)",
                "C: i SUBSCRIBE \"a b/\"",
                "S: i OK",
            ],
        );
        assert!(untracked.is_empty(), "{untracked:?}");
        assert_eq!(ensured, ["INBOX", "A", "B", "INBOX", "INBOX"]);
        assert_eq!(
            writes,
            vec![
                Write::Copy {
                    from: "A".into(),
                    to: "B".into(),
                    uids: vec![(1, 9)],
                    moved: true
                },
                Write::Create {
                    folder: "foo".into()
                },
                Write::Delete {
                    folder: "foo".into()
                },
                Write::Rename {
                    from: "A".into(),
                    to: "A2".into()
                },
                Write::Append {
                    folder: "INBOX".into(),
                    uids: vec![7],
                    validity: Some(3)
                },
                Write::Subscribe {
                    folder: "a b".into(),
                    subscribed: true
                },
            ]
        );
    }

    /// A name the proxy could not read is never guessed: the selection is unknown and what NEW
    /// accepts there is reported untracked, not mirrored into another folder.
    #[test]
    fn unreadable_names_are_untracked_not_guessed() {
        let mut t = Tracker::new(Some('/'), true);
        let (_, writes, untracked) = run(
            &mut t,
            &[
                "C: a SELECT INBOX",
                "S: a OK [READ-WRITE] done",
                "C: b SELECT {9000}",
                "S: b OK [READ-WRITE] done",
                "C: c UID MOVE 1 B",
                "S: c OK [COPYUID 5 1 9] moved",
                "C: d UID STORE 1 +FLAGS (\\Seen)",
                "S: d OK",
                "C: e DELETE {9000}",
                "S: e OK",
                "C: f EXAMINE {9000}",
                "S: f OK [READ-ONLY]",
                "C: g UID STORE 1 +FLAGS (\\Seen)",
                "S: g NO read-only",
            ],
        );
        assert!(writes.is_empty(), "{writes:?}");
        assert_eq!(untracked.len(), 3, "{untracked:?}");
        assert!(untracked[0].starts_with("MOVE"), "{untracked:?}");
        assert_eq!(t.selected(), Some(&Selected::Unknown { readonly: true }));
    }

    #[test]
    fn restructuring_commands_say_which_folders_change() {
        let mut t = Tracker::new(Some('/'), true);
        let b = t.command(&inspect(b"a RENAME Old/ New\r\n"), 0, Instant::now());
        assert_eq!(b.changing, ["Old", "New"]);
        let o = t.response(b"a NO no\r\n");
        assert_eq!(o.settled, ["Old", "New"], "a refused change settles too");
        let b = t.command(&inspect(b"b SELECT Old\r\n"), 0, Instant::now());
        assert!(b.changing.is_empty());
    }

    #[test]
    fn commands_that_may_change_the_mailbox_are_writes() {
        let mut t = Tracker::new(Some('/'), true);
        let mut write = |line: &str, answer: Option<&str>| {
            let b = t.command(
                &inspect(format!("{line}\r\n").as_bytes()),
                0,
                Instant::now(),
            );
            if let Some(answer) = answer {
                let done = t.response(format!("{answer}\r\n").as_bytes()).answered;
                assert_eq!(done.map(|d| d.write), Some(b.write), "{line}");
            }
            b.write
        };
        let table = [
            ("a NOOP", Some("a OK"), false),
            ("b EXAMINE INBOX", Some("b OK [READ-ONLY]"), false),
            ("c CLOSE", Some("c OK"), false),
            ("d SELECT INBOX", Some("d OK [READ-WRITE]"), false),
            ("e UID FETCH 1 (FLAGS)", Some("e OK"), false),
            ("f STATUS Sent (MESSAGES)", Some("f OK"), false),
            ("g UID STORE 1 +FLAGS (\\Seen)", Some("g NO refused"), true),
            ("h EXPUNGE", Some("h OK"), true),
            ("i UID MOVE 1 Archive", Some("i OK"), true),
            ("j COPY 1 Archive", Some("j OK"), true),
            ("k CREATE X", Some("k OK"), true),
            ("l RENAME X Y", Some("l OK"), true),
            ("m DELETE Y", Some("m OK"), true),
            ("n SUBSCRIBE Y", Some("n OK"), true),
            ("o UNSELECT", Some("o OK"), false),
            ("p SELECT INBOX", Some("p OK"), false),
            ("q CLOSE", None, true),
            ("r STORE 1 +FLAGS (x)", None, true),
            ("s NOOP", None, false),
        ];
        for (line, answer, expected) in table {
            assert_eq!(write(line, answer), expected, "{line}");
        }
        assert_eq!(
            t.unanswered(),
            (2, vec!["INBOX".to_string()]),
            "CLOSE (changing INBOX) and STORE were never answered"
        );
    }

    /// A STORE or a FETCH of a body by sequence number is journaled with the UIDs NEW's
    /// responses gave those numbers, as they stood when NEW ran it (after the EXPUNGEs before
    /// its answer); with any of them unknown, without UIDs (the mirror reads the folder). A
    /// relayed session that is not migrated follows nothing.
    #[test]
    fn sequence_numbers_are_journaled_as_the_uids_they_stood_for() {
        let dialogue = [
            "C: a SELECT INBOX",
            "S: * 4 EXISTS",
            "S: a OK [READ-WRITE] done",
            "C: b FETCH 1:3 (UID FLAGS)",
            "S: * 1 FETCH (UID 10 FLAGS ())",
            "S: * 2 FETCH (UID 11 FLAGS ())",
            "S: * 3 FETCH (FLAGS () UID 12)",
            "S: b OK",
            "C: c STORE 2:3 +FLAGS (\\Seen)",
            "S: * 2 FETCH (FLAGS (\\Seen))",
            "S: c OK",
            "C: d STORE 3:4 +FLAGS (x)",
            "S: d OK",
            "C: e EXPUNGE",
            "S: * 1 EXPUNGE",
            "S: e OK",
            "C: f FETCH 1 (BODY[])",
            "S: f OK",
            "C: g SELECT Other",
            "S: * 2 EXISTS",
            "S: g OK",
            "C: h STORE 1 -FLAGS (x)",
            "S: h OK",
        ];
        let mut t = Tracker::new(Some('/'), true);
        let (_, writes, _) = run(&mut t, &dialogue);
        let seen = |folder: &str, uids| flags(folder, uids, &["\\Seen"], FlagOp::Add);
        assert_eq!(
            writes,
            vec![
                seen("INBOX", Some("11:12")),
                flags("INBOX", None, &["x"], FlagOp::Add),
                Write::Expunge {
                    folder: "INBOX".into(),
                    uids: Ranges::parse("10", 1),
                },
                seen("INBOX", Some("11")),
                flags("Other", None, &["x"], FlagOp::Remove),
            ]
        );

        let mut plain = Tracker::new(Some('/'), false);
        let (_, writes, _) = run(&mut plain, &dialogue);
        assert_eq!(writes[0], seen("INBOX", None));
        assert!(matches!(&writes[2], Write::Expunge { uids: None, .. }));
    }

    #[test]
    fn read_only_and_failed_selects_write_nothing() {
        let mut t = Tracker::default();
        let (_, writes, _) = run(
            &mut t,
            &[
                "C: a EXAMINE INBOX",
                "S: a OK [READ-ONLY] done",
                "C: b EXPUNGE",
                "S: b OK nothing",
                "C: c CLOSE",
                "S: c OK",
                "C: d SELECT Nope",
                "S: d NO [NONEXISTENT] no",
                "C: e EXPUNGE",
                "S: e BAD no mailbox selected",
            ],
        );
        assert!(writes.is_empty(), "{writes:?}");
    }

    #[test]
    fn utf8_names_become_modified_utf7_after_enable() {
        let mut t = Tracker::default();
        let (ensured, _, _) = run(
            &mut t,
            &[
                "C: a SELECT \"Entwürfe\"",
                "C: b ENABLE UTF8=ACCEPT",
                "S: * ENABLED UTF8=ACCEPT",
                "S: b OK",
                "C: c SELECT \"Entwürfe\"",
            ],
        );
        assert_eq!(ensured, ["Entwürfe", "Entw&APw-rfe"]);
        assert!(t.enabled().contains("UTF8=ACCEPT"));
        t.response(b"* ENABLED CONDSTORE QRESYNC\r\n");
        assert_eq!(t.enabled().len(), 3);
    }

    #[test]
    fn in_flight_commands_are_capped_by_count_and_bytes() {
        let now = Instant::now();
        let mut t = Tracker::new(Some('/'), true);
        for i in 0..MAX_IN_FLIGHT {
            assert!(!t.full(), "full after {i} commands");
            t.command(&inspect(format!("n{i} NOOP\r\n").as_bytes()), 10, now);
        }
        assert!(t.full());
        let o = t.response(b"n7 OK done\r\n");
        let answered = o.answered.expect("answered");
        assert_eq!(
            (answered.tag.as_str(), answered.name.as_str()),
            ("n7", "NOOP")
        );
        assert_eq!((answered.status.as_str(), answered.started), ("OK", now));
        assert!(!t.full());
        // Untagged lines and unknown tags answer nothing.
        assert_eq!(t.response(b"* 3 EXISTS\r\n").answered, None);
        assert_eq!(t.response(b"zz OK\r\n").answered, None);

        // Bytes: a few large pipelined STOREs fill it.
        let mut t = Tracker::new(Some('/'), true);
        let store = |tag: &str| format!("{tag} UID STORE 1:* -FLAGS (\\Seen)\r\n");
        t.command(&inspect(store("s").as_bytes()), MAX_TRACKED_BYTES / 2, now);
        assert!(!t.full());
        t.command(&inspect(store("u").as_bytes()), MAX_TRACKED_BYTES / 2, now);
        assert!(t.full());
        let o = t.response(b"u OK\r\n");
        assert_eq!(o.answered.map(|a| a.name), Some("UID STORE".to_string()));
        assert!(!t.full());

        // A tag used again is one more command in flight; NEW answers them in order.
        let mut t = Tracker::new(Some('/'), true);
        let then = now + std::time::Duration::from_secs(1);
        t.command(&inspect(store("u").as_bytes()), 10, now);
        for _ in 1..MAX_IN_FLIGHT {
            t.command(&inspect(store("u").as_bytes()), 10, then);
        }
        assert!(t.full(), "one tag over and over");
        let o = t.response(b"u OK\r\n");
        assert_eq!(o.answered.map(|a| a.started), Some(now));
        assert!(!t.full());
        // A line without a tag is never in flight.
        t.command(&inspect(b"\r\n"), MAX_TRACKED_BYTES, now);
        assert!(!t.full());
    }

    proptest::proptest! {
        /// Whatever the client sends and NEW answers, tracking never panics.
        #[test]
        fn tracking_never_panics(
            commands in proptest::collection::vec(".{0,80}", 0..16),
            responses in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100), 0..16),
        ) {
            let mut t = Tracker::new(Some('/'), true);
            for (i, c) in commands.iter().enumerate() {
                let line = format!("t{i} {c}\r\n");
                t.command(&inspect(line.as_bytes()), line.len(), Instant::now());
            }
            for r in &responses {
                t.response(r);
            }
            for i in 0..commands.len() {
                t.response(format!("* OK [COPYUID 9 1:3 7:9] moved\r\nt{i} OK [APPENDUID 9 4] done\r\n").as_bytes());
            }
        }
    }

    #[test]
    fn response_codes() {
        assert_eq!(
            copyuid("[COPYUID 5 1:2,4 7:9] x"),
            Some(vec![(1, 7), (2, 8), (4, 9)])
        );
        assert_eq!(copyuid("[COPYUID 5 1:2 7] x"), None);
        assert_eq!(
            appenduid("[APPENDUID 5 3:4] ok"),
            Some((Some(5), vec![3, 4]))
        );
        assert_eq!(appenduid("[APPENDUID x 3] ok"), Some((None, vec![3])));
        assert_eq!(appenduid("[READ-WRITE] ok"), None);
    }
}
