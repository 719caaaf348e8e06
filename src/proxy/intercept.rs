//! What the migration needs to know about one relayed session, without I/O: which folder a
//! command needs backfilled before it goes to NEW, which folder is selected, and which user
//! writes NEW accepted (read from the tagged OK and its COPYUID/APPENDUID codes).

use std::collections::{BTreeSet, HashMap};

use super::inspect::{Arg, Command};
use crate::imap::uidset;
use crate::mapping::utf7_encode;
use crate::migrate::Write;

/// Most UIDs a journal entry lists; larger sets are looked at folder-wide.
const MAX_UIDS: usize = 100_000;

/// A command waiting for its tagged response.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Intent {
    Select {
        folder: String,
        readonly: bool,
    },
    /// CLOSE expunges a read-write folder; UNSELECT does not.
    Deselect {
        expunge: bool,
    },
    Flags {
        uids: Option<Vec<u32>>,
        flags: Vec<String>,
        replace: bool,
    },
    Expunge,
    Copy {
        to: String,
        moved: bool,
    },
    Append {
        folder: String,
    },
    Create {
        folder: String,
    },
    Delete {
        folder: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Subscribe {
        folder: String,
        subscribed: bool,
    },
}

/// The selected folder (NEW name) and whether it is read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    pub folder: String,
    pub readonly: bool,
}

/// Per-session tracking state.
#[derive(Debug, Default)]
pub struct Tracker {
    selected: Option<Selected>,
    /// What `ENABLE` turned on for this connection (`* ENABLED`), upper-cased. With UTF8=ACCEPT
    /// mailbox names arrive in UTF-8.
    enabled: BTreeSet<String>,
    pending: HashMap<String, Intent>,
    /// An untagged `[COPYUID ...]` (MOVE) waiting for its command's completion.
    copyuid: Option<Vec<(u32, u32)>>,
}

/// What a response line changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A write to journal before the line reaches the client.
    pub write: Option<Write>,
    /// The selected folder changed (to the current [`Tracker::selected`]).
    pub selection_changed: bool,
}

impl Tracker {
    pub fn selected(&self) -> Option<&Selected> {
        self.selected.as_ref()
    }

    /// Extensions enabled on this connection (CONDSTORE, QRESYNC, UTF8=ACCEPT, …).
    pub fn enabled(&self) -> &BTreeSet<String> {
        &self.enabled
    }

    /// A NEW folder name from a command argument: modified UTF-7 (converted from UTF-8 after
    /// `ENABLE UTF8=ACCEPT`), INBOX in upper case. `None` for a literal not in the line.
    fn name(&self, arg: &Arg) -> Option<String> {
        let Arg::Str(s) = arg else { return None };
        if s.eq_ignore_ascii_case("INBOX") {
            return Some("INBOX".into());
        }
        let utf8 = self.enabled.contains("UTF8=ACCEPT") || self.enabled.contains("IMAP4REV2");
        Some(if utf8 { utf7_encode(s) } else { s.clone() })
    }

    /// A command from the client. Returns the folder to bring up to date before forwarding it.
    pub fn command(&mut self, tag: &str, command: &Command) -> Option<String> {
        let (intent, ensure) = match command {
            Command::Select { mailbox } | Command::Examine { mailbox } => {
                let folder = self.name(mailbox)?;
                let readonly = matches!(command, Command::Examine { .. });
                (
                    Some(Intent::Select {
                        folder: folder.clone(),
                        readonly,
                    }),
                    Some(folder),
                )
            }
            Command::Status { mailbox } => (None, self.name(mailbox)),
            Command::Append { mailbox } => {
                let folder = self.name(mailbox)?;
                (
                    Some(Intent::Append {
                        folder: folder.clone(),
                    }),
                    Some(folder),
                )
            }
            Command::Copy { mailbox, .. } | Command::Move { mailbox, .. } => {
                let to = self.name(mailbox)?;
                let moved = matches!(command, Command::Move { .. });
                (
                    Some(Intent::Copy {
                        to: to.clone(),
                        moved,
                    }),
                    Some(to),
                )
            }
            Command::Store {
                uid,
                set,
                op,
                flags,
            } => {
                let uids = if *uid {
                    uidset::parse(set, MAX_UIDS)
                } else {
                    None
                };
                let flags: Vec<String> = flags
                    .iter()
                    .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                    .cloned()
                    .collect();
                let replace = op == "FLAGS";
                (
                    Some(Intent::Flags {
                        uids,
                        flags,
                        replace,
                    }),
                    None,
                )
            }
            Command::Expunge { .. } => (Some(Intent::Expunge), None),
            Command::Close => (Some(Intent::Deselect { expunge: true }), None),
            Command::Unselect => (Some(Intent::Deselect { expunge: false }), None),
            Command::Create { mailbox } => (
                Some(Intent::Create {
                    folder: self.name(mailbox)?,
                }),
                None,
            ),
            Command::Delete { mailbox } => (
                Some(Intent::Delete {
                    folder: self.name(mailbox)?,
                }),
                None,
            ),
            Command::Rename { from, to } => (
                Some(Intent::Rename {
                    from: self.name(from)?,
                    to: self.name(to.as_ref()?)?,
                }),
                None,
            ),
            Command::Subscribe { mailbox } | Command::Unsubscribe { mailbox } => (
                Some(Intent::Subscribe {
                    folder: self.name(mailbox)?,
                    subscribed: matches!(command, Command::Subscribe { .. }),
                }),
                None,
            ),
            _ => (None, None),
        };
        if let Some(intent) = intent {
            self.pending.insert(tag.to_string(), intent);
        }
        ensure
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
        let Some(intent) = self.pending.remove(tag) else {
            return Outcome::default();
        };
        let untagged_copyuid = self.copyuid.take();
        let ok = status.eq_ignore_ascii_case("OK");
        let mut outcome = Outcome::default();
        let selected = self.selected.clone().filter(|s| !s.readonly);
        outcome.write = match intent {
            Intent::Select { folder, readonly } => {
                // A failed SELECT leaves no folder selected (RFC 9051 §6.3.2).
                self.selected = ok.then_some(Selected { folder, readonly });
                outcome.selection_changed = true;
                None
            }
            Intent::Deselect { expunge } => {
                if ok {
                    self.selected = None;
                    outcome.selection_changed = true;
                }
                selected
                    .filter(|_| ok && expunge)
                    .map(|s| Write::Expunge { folder: s.folder })
            }
            _ if !ok => None,
            Intent::Flags {
                uids,
                flags,
                replace,
            } => selected.map(|s| Write::Flags {
                folder: s.folder,
                uids,
                flags,
                replace,
            }),
            Intent::Expunge => selected.map(|s| Write::Expunge { folder: s.folder }),
            Intent::Copy { to, moved } => {
                let uids = copyuid(rest).or(untagged_copyuid).unwrap_or_default();
                let from = self.selected.as_ref().map(|s| s.folder.clone());
                from.map(|from| Write::Copy {
                    from,
                    to,
                    uids,
                    moved,
                })
            }
            Intent::Append { folder } => Some(Write::Append {
                folder,
                uids: appenduid(rest).unwrap_or_default(),
            }),
            Intent::Create { folder } => Some(Write::Create { folder }),
            Intent::Delete { folder } => Some(Write::Delete { folder }),
            Intent::Rename { from, to } => Some(Write::Rename { from, to }),
            Intent::Subscribe { folder, subscribed } => {
                Some(Write::Subscribe { folder, subscribed })
            }
        };
        outcome
    }
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
    let (src, dst) = (uidset::parse(src, MAX_UIDS)?, uidset::parse(dst, MAX_UIDS)?);
    (src.len() == dst.len()).then(|| src.into_iter().zip(dst).collect())
}

/// `[APPENDUID validity uids]`.
fn appenduid(text: &str) -> Option<Vec<u32>> {
    let args = code_args(text, "APPENDUID")?;
    uidset::parse(args.get(1)?, MAX_UIDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::inspect::inspect;

    /// Feeds a dialogue (client lines prefixed `C: `, NEW lines `S: `); returns the writes.
    fn run(tracker: &mut Tracker, lines: &[&str]) -> (Vec<String>, Vec<Write>) {
        let (mut ensured, mut writes) = (Vec::new(), Vec::new());
        for l in lines {
            if let Some(c) = l.strip_prefix("C: ") {
                let i = inspect(c.as_bytes());
                if let Some(f) = tracker.command(i.tag.as_deref().unwrap_or(""), &i.command) {
                    ensured.push(f);
                }
            } else if let Some(s) = l.strip_prefix("S: ") {
                writes.extend(tracker.response(s.as_bytes()).write);
            }
        }
        (ensured, writes)
    }

    #[test]
    fn a_session_yields_its_writes() {
        let mut t = Tracker::default();
        let (ensured, writes) = run(
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
        let inbox = || "INBOX".to_string();
        assert_eq!(
            writes,
            vec![
                Write::Flags {
                    folder: inbox(),
                    uids: Some(vec![1, 2]),
                    flags: vec!["\\Seen".into()],
                    replace: false
                },
                Write::Flags {
                    folder: inbox(),
                    uids: None,
                    flags: vec!["\\Flagged".into()],
                    replace: false
                },
                Write::Copy {
                    from: inbox(),
                    to: "Archive".into(),
                    uids: vec![(3, 12)],
                    moved: true
                },
                Write::Copy {
                    from: inbox(),
                    to: "Archive".into(),
                    uids: vec![(1, 13)],
                    moved: false
                },
                Write::Append {
                    folder: "Sent".into(),
                    uids: vec![41]
                },
                Write::Expunge { folder: inbox() },
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

    #[test]
    fn read_only_and_failed_selects_write_nothing() {
        let mut t = Tracker::default();
        let (_, writes) = run(
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
        let (ensured, _) = run(
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

    proptest::proptest! {
        /// Whatever the client sends and NEW answers, tracking never panics.
        #[test]
        fn tracking_never_panics(
            commands in proptest::collection::vec(".{0,80}", 0..16),
            responses in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100), 0..16),
        ) {
            let mut t = Tracker::default();
            for (i, c) in commands.iter().enumerate() {
                let line = format!("t{i} {c}\r\n");
                t.command(&format!("t{i}"), &inspect(line.as_bytes()).command);
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
        assert_eq!(appenduid("[APPENDUID 5 3:4] ok"), Some(vec![3, 4]));
        assert_eq!(appenduid("[READ-WRITE] ok"), None);
    }
}
