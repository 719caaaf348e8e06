//! Command inspection for the proxy: reads a COPY of a command line (the forwarded bytes are never
//! re-encoded) and reports its tag, its name and, for the commands the proxy acts on, the arguments.
//! imap-codec is used where it parses; a small tokenizer covers the rest. Unknown commands are `Other`.

use std::borrow::Cow;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;

use crate::imap::framer::{Literal, announcement};
use crate::migrate::Appended;
use crate::secret::Secret;

/// A string argument (atom, quoted string with escapes resolved, or literal data), as sent: no
/// modified-UTF-7 decoding, no INBOX normalisation. Non-UTF-8 bytes are replaced (lossy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Str(String),
    /// A literal whose data is not in the inspected bytes (it follows the line).
    Literal(Literal),
}

/// The commands the proxy acts on; everything else is `Other` (forwarded as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Logout,
    StartTls,
    Idle,
    Id,
    /// `password` is `None` when it is not in the inspected bytes (a literal, or missing).
    Login {
        username: Arg,
        password: Option<Secret>,
    },
    /// `mechanism` upper-cased; `initial_response`: SASL-IR present (`=` for an empty one counts).
    Authenticate {
        mechanism: String,
        initial_response: bool,
    },
    /// Capabilities to enable, upper-cased.
    Enable(Vec<String>),
    Compress {
        algorithm: String,
    },
    Select {
        mailbox: Arg,
    },
    Examine {
        mailbox: Arg,
    },
    Status {
        mailbox: Arg,
    },
    Create {
        mailbox: Arg,
    },
    Delete {
        mailbox: Arg,
    },
    /// `to` is `None` when `from` is a literal whose data is not in the inspected bytes.
    Rename {
        from: Arg,
        to: Option<Arg>,
    },
    Subscribe {
        mailbox: Arg,
    },
    Unsubscribe {
        mailbox: Arg,
    },
    /// `message`: the one message of the APPEND when its data is in the inspected bytes (not
    /// for several messages, CATENATE or a binary literal).
    Append {
        mailbox: Arg,
        message: Option<Appended>,
    },
    /// `COPY` or `UID COPY`.
    Copy {
        uid: bool,
        mailbox: Arg,
    },
    /// `MOVE` or `UID MOVE`.
    Move {
        uid: bool,
        mailbox: Arg,
    },
    /// `STORE` or `UID STORE`: `set` as sent, `op` one of `FLAGS`, `+FLAGS`, `-FLAGS` (without
    /// `.SILENT`), `flags` as sent (keywords keep their case).
    Store {
        uid: bool,
        set: String,
        op: String,
        flags: Vec<String>,
    },
    /// `FETCH` or `UID FETCH` of a body part without `.PEEK` (`BODY[…]`, `BINARY[…]`, `RFC822`,
    /// `RFC822.TEXT`): in a read-write folder the server sets `\Seen` on the messages fetched.
    /// Other FETCHes are [`Command::Other`].
    FetchSeen {
        uid: bool,
        set: String,
    },
    /// `EXPUNGE` (`uid_set` `None`) or `UID EXPUNGE set`.
    Expunge {
        uid_set: Option<String>,
    },
    Close,
    Unselect,
    /// Anything else, including known commands whose arguments did not tokenize (the server will
    /// answer them).
    Other,
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The first token (not validated as a tag; `None` for an empty line).
    pub tag: Option<String>,
    /// The command name upper-cased, `UID` kept as a prefix (`UID FETCH`).
    pub name: Option<String>,
    pub command: Command,
    /// imap-codec decoded the whole line as one command.
    pub codec_parsed: bool,
}

/// Inspects a complete command line as received (line ending included or not). Literal data may
/// be included inline (`{5}\r\nINBOX`, e.g. a reassembled small command); a literal announced at
/// the end shows as [`Arg::Literal`]. Never fails.
pub fn inspect(line: &[u8]) -> Inspected {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let mut toks = Tokens { rest: body };
    let tag = match toks.next() {
        Some(Ok(Tok::Atom(t))) => Some(lossy(t)),
        _ => {
            return Inspected {
                tag: None,
                name: None,
                command: Command::Other,
                codec_parsed: false,
            };
        }
    };
    let mut name = match toks.next() {
        Some(Ok(Tok::Atom(n))) => lossy(n).to_ascii_uppercase(),
        _ => {
            return Inspected {
                tag,
                name: None,
                command: Command::Other,
                codec_parsed: false,
            };
        }
    };
    let uid = name == "UID";
    if uid && let Some(Ok(Tok::Atom(n))) = toks.next() {
        name = format!("UID {}", lossy(n).to_ascii_uppercase());
    }
    let (codec_parsed, from_codec) = decode(line);
    let command = match from_codec {
        Some(command) => command,
        None => by_tokens(&name, &mut toks).unwrap_or(Command::Other),
    };
    Inspected {
        tag,
        name: Some(name),
        command,
        codec_parsed,
    }
}

/// Whether the literal announced at the end of `command` (the command so far, literals before
/// it inline) is an argument too many: without it the command is complete already (or has the
/// folder arguments the proxy acts on, with more after them), and a server may act on it
/// before the literal comes. Dovecot does, once it has a command's arguments, and ignores
/// the rest: `DELETE X junk {1}` deletes `X` at once. APPEND's literals are its messages,
/// never too many.
pub fn literal_too_many(command: &[u8]) -> bool {
    let line = command.strip_suffix(b"\n").unwrap_or(command);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(open) = line.iter().rposition(|b| *b == b'{') else {
        return false;
    };
    let before = line[..open].strip_suffix(b"~").unwrap_or(&line[..open]);
    let inspected = inspect(before.trim_ascii_end());
    let has_its_folders = match inspected.command {
        Command::Rename { to, .. } => to.is_some(),
        Command::Create { .. }
        | Command::Delete { .. }
        | Command::Subscribe { .. }
        | Command::Unsubscribe { .. }
        | Command::Select { .. }
        | Command::Examine { .. }
        | Command::Status { .. }
        | Command::Copy { .. }
        | Command::Move { .. } => true,
        _ => false,
    };
    (inspected.codec_parsed || has_its_folders) && inspected.name.as_deref() != Some("APPEND")
}

/// Whether a command named `name` (as [`Inspected::name`] says it) may change mail or folders:
/// NEW doing it unseen by the journal leaves OLD behind. FETCH may set `\Seen`. By name alone,
/// unlike the tracker's intents: it is asked of commands whose arguments could not be read.
pub fn may_write(name: &str) -> bool {
    let name = name.strip_prefix("UID ").unwrap_or(name);
    matches!(
        name,
        "APPEND"
            | "COPY"
            | "MOVE"
            | "STORE"
            | "EXPUNGE"
            | "CLOSE"
            | "FETCH"
            | "CREATE"
            | "DELETE"
            | "RENAME"
            | "SUBSCRIBE"
            | "UNSUBSCRIBE"
    )
}

/// Whether FETCH items (as sent, after the set) fetch a body part without `.PEEK` (RFC 9051
/// §6.4.5: `BODY[…]` and `BINARY[…]` set `\Seen`; RFC 3501's `RFC822` and `RFC822.TEXT` too).
fn sets_seen(items: &[u8]) -> bool {
    let items = lossy(items).to_ascii_uppercase();
    items.contains("BODY[")
        || items.contains("BINARY[")
        || items
            .split([' ', '(', ')'])
            .any(|item| item == "RFC822" || item == "RFC822.TEXT")
}

/// imap-codec's view: whether the line decodes, and the command when it is one whose arguments
/// imap-codec gives us without normalising (LOGIN, AUTHENTICATE, ENABLE, COMPRESS).
fn decode(line: &[u8]) -> (bool, Option<Command>) {
    let line: Cow<'_, [u8]> = if line.ends_with(b"\n") {
        Cow::Borrowed(line)
    } else {
        Cow::Owned([line, b"\r\n"].concat())
    };
    let Ok((rest, command)) = CommandCodec::default().decode(&line) else {
        return (false, None);
    };
    if !rest.is_empty() {
        return (false, None);
    }
    let command = match command.body {
        CommandBody::Login { username, password } => Some(Command::Login {
            username: Arg::Str(lossy(username.as_ref())),
            // Byte for byte: an 8-bit password is not text to repair.
            password: Some(Secret::from_bytes(password.declassify().as_ref())),
        }),
        CommandBody::Authenticate {
            mechanism,
            initial_response,
        } => Some(Command::Authenticate {
            mechanism: mechanism.as_ref().to_ascii_uppercase(),
            initial_response: initial_response.is_some(),
        }),
        CommandBody::Enable { capabilities } => Some(Command::Enable(
            capabilities
                .as_ref()
                .iter()
                .map(|c| c.to_string().to_ascii_uppercase())
                .collect(),
        )),
        CommandBody::Compress { algorithm } => Some(Command::Compress {
            algorithm: algorithm.as_ref().to_ascii_uppercase(),
        }),
        _ => None,
    };
    (true, command)
}

/// The command from our own tokenizer; `None` when the arguments do not tokenize.
fn by_tokens(name: &str, toks: &mut Tokens<'_>) -> Option<Command> {
    let mailbox = |toks: &mut Tokens<'_>| toks.next()?.ok()?.arg();
    Some(match name {
        "CAPABILITY" => Command::Capability,
        "LOGOUT" => Command::Logout,
        "STARTTLS" => Command::StartTls,
        "IDLE" => Command::Idle,
        "ID" => Command::Id,
        "LOGIN" => {
            let username = mailbox(toks)?;
            let password = match (&username, toks.next()) {
                (Arg::Str(_), Some(Ok(Tok::Atom(p)))) => Some(Secret::from_bytes(p)),
                (Arg::Str(_), Some(Ok(Tok::Str(p)))) => Some(Secret::from_bytes(p)),
                (Arg::Str(_), Some(Ok(Tok::List(_)))) => return None,
                _ => None,
            };
            Command::Login { username, password }
        }
        "AUTHENTICATE" => {
            let Tok::Atom(m) = toks.next()?.ok()? else {
                return None;
            };
            Command::Authenticate {
                mechanism: lossy(m).to_ascii_uppercase(),
                initial_response: toks.next().is_some(),
            }
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            for tok in toks.by_ref() {
                let Tok::Atom(c) = tok.ok()? else {
                    return None;
                };
                caps.push(lossy(c).to_ascii_uppercase());
            }
            Command::Enable(caps)
        }
        "COMPRESS" => {
            let Tok::Atom(a) = toks.next()?.ok()? else {
                return None;
            };
            Command::Compress {
                algorithm: lossy(a).to_ascii_uppercase(),
            }
        }
        "SELECT" => Command::Select {
            mailbox: mailbox(toks)?,
        },
        "EXAMINE" => Command::Examine {
            mailbox: mailbox(toks)?,
        },
        "STATUS" => Command::Status {
            mailbox: mailbox(toks)?,
        },
        "CREATE" => Command::Create {
            mailbox: mailbox(toks)?,
        },
        "DELETE" => Command::Delete {
            mailbox: mailbox(toks)?,
        },
        "SUBSCRIBE" => Command::Subscribe {
            mailbox: mailbox(toks)?,
        },
        "UNSUBSCRIBE" => Command::Unsubscribe {
            mailbox: mailbox(toks)?,
        },
        "APPEND" => Command::Append {
            mailbox: mailbox(toks)?,
            message: appended(toks),
        },
        "RENAME" => {
            let from = mailbox(toks)?;
            let to = match from {
                Arg::Str(_) => Some(mailbox(toks)?),
                Arg::Literal(_) => None,
            };
            Command::Rename { from, to }
        }
        "STORE" | "UID STORE" => {
            let Tok::Atom(set) = toks.next()?.ok()? else {
                return None;
            };
            let mut item = toks.next()?.ok()?;
            if let Tok::List(_) = item {
                item = toks.next()?.ok()?; // (UNCHANGEDSINCE n)
            }
            let Tok::Atom(op) = item else {
                return None;
            };
            let op = lossy(op).to_ascii_uppercase();
            let op = op.strip_suffix(".SILENT").unwrap_or(&op).to_string();
            if !matches!(op.as_str(), "FLAGS" | "+FLAGS" | "-FLAGS") {
                return None;
            }
            let mut flags = Vec::new();
            for tok in toks.by_ref() {
                match tok.ok()? {
                    Tok::Atom(f) => flags.push(lossy(f)),
                    Tok::List(l) => flags.extend(list_words(l)),
                    _ => return None,
                }
            }
            Command::Store {
                uid: name.starts_with("UID "),
                set: lossy(set),
                op,
                flags,
            }
        }
        "FETCH" | "UID FETCH" => {
            let Tok::Atom(set) = toks.next()?.ok()? else {
                return None;
            };
            if !sets_seen(toks.rest) {
                return Some(Command::Other);
            }
            Command::FetchSeen {
                uid: name.starts_with("UID "),
                set: lossy(set),
            }
        }
        "EXPUNGE" => Command::Expunge { uid_set: None },
        "UID EXPUNGE" => {
            let Tok::Atom(set) = toks.next()?.ok()? else {
                return None;
            };
            Command::Expunge {
                uid_set: Some(lossy(set)),
            }
        }
        "CLOSE" => Command::Close,
        "UNSELECT" => Command::Unselect,
        "COPY" | "UID COPY" | "MOVE" | "UID MOVE" => {
            let Tok::Atom(_) = toks.next()?.ok()? else {
                return None;
            };
            let mailbox = mailbox(toks)?;
            let uid = name.starts_with("UID ");
            if name.ends_with("COPY") {
                Command::Copy { uid, mailbox }
            } else {
                Command::Move { uid, mailbox }
            }
        }
        _ => Command::Other,
    })
}

/// The message of an APPEND after its mailbox: `[(flags)] ["date"] {n}` and the literal's data,
/// nothing after it. The date is a quoted string, the message a (non-binary) literal.
fn appended(toks: &mut Tokens<'_>) -> Option<Appended> {
    let flags = match toks.peek() {
        Some(b'(') => match toks.next()?.ok()? {
            Tok::List(l) => list_words(l),
            _ => return None,
        },
        _ => Vec::new(),
    };
    let date = match toks.peek() {
        Some(b'"') => match toks.next()?.ok()? {
            Tok::Str(d) => Some(String::from_utf8(d).ok()?),
            _ => return None,
        },
        _ => None,
    };
    if toks.peek() != Some(b'{') {
        return None;
    }
    let Tok::Str(bytes) = toks.next()?.ok()? else {
        return None;
    };
    if toks.next().is_some() {
        return None;
    }
    Some(Appended {
        flags,
        date: date?,
        bytes,
    })
}

/// The words of a parenthesised list (raw, parentheses included).
fn list_words(list: &[u8]) -> Vec<String> {
    lossy(&list[1..list.len() - 1])
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect()
}

/// The first line of an APPEND (`tag APPEND mailbox [(flags)] {n}`, the message's literal at its
/// end) with INTERNALDATE `date` added before the literal; `None` for any other line, one that
/// gives a date already, or one whose mailbox is a literal.
pub fn dated_append(line: &[u8], date: &str) -> Option<Vec<u8>> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let mut toks = Tokens { rest: body };
    let (Tok::Atom(_), Tok::Atom(name)) = (toks.next()?.ok()?, toks.next()?.ok()?) else {
        return None;
    };
    if !name.eq_ignore_ascii_case(b"APPEND") {
        return None;
    }
    match toks.next()?.ok()? {
        Tok::Atom(_) | Tok::Str(_) => {}
        _ => return None,
    }
    if toks.peek() == Some(b'(') {
        toks.next()?.ok()?;
    }
    if toks.peek() != Some(b'{') {
        return None;
    }
    let at = body.len() - toks.rest.len();
    let Tok::Pending(_) = toks.next()?.ok()? else {
        return None;
    };
    let mut dated = Vec::with_capacity(line.len() + date.len() + 3);
    dated.extend_from_slice(&line[..at]);
    dated.extend_from_slice(format!(" \"{date}\"").as_bytes());
    dated.extend_from_slice(&line[at..]);
    Some(dated)
}

fn lossy(b: impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(b.as_ref()).into_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Atom(&'a [u8]),
    /// A quoted string (escapes resolved) or literal data present inline.
    Str(Vec<u8>),
    /// A literal announced at the end of the inspected bytes.
    Pending(Literal),
    /// A parenthesised list, raw.
    List(&'a [u8]),
}

impl Tok<'_> {
    /// The token as an astring argument (`None` for a list).
    fn arg(self) -> Option<Arg> {
        match self {
            Tok::Atom(a) => Some(Arg::Str(lossy(a))),
            Tok::Str(s) => Some(Arg::Str(lossy(s))),
            Tok::Pending(l) => Some(Arg::Literal(l)),
            Tok::List(_) => None,
        }
    }
}

/// A lenient IMAP tokenizer over one command (final line ending removed). `Err` = unparsable.
struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Result<Tok<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        let skip = self.rest.iter().take_while(|&&b| b == b' ').count();
        self.rest = &self.rest[skip..];
        let first = *self.rest.first()?;
        Some(match first {
            b'"' => self.quoted(),
            b'{' => self.literal(),
            b'~' if self.rest.get(1) == Some(&b'{') => self.literal(),
            b'(' => self.list(),
            _ => {
                let n = self
                    .rest
                    .iter()
                    .position(|&b| matches!(b, b' ' | b'(' | b'\r' | b'\n'))
                    .unwrap_or(self.rest.len())
                    .max(1);
                let (atom, rest) = self.rest.split_at(n);
                self.rest = rest;
                Ok(Tok::Atom(atom))
            }
        })
    }
}

impl<'a> Tokens<'a> {
    /// The first byte of the next token.
    fn peek(&self) -> Option<u8> {
        self.rest.iter().copied().find(|&b| b != b' ')
    }

    fn quoted(&mut self) -> Result<Tok<'a>, ()> {
        let mut out = Vec::new();
        let mut i = 1;
        while let Some(&b) = self.rest.get(i) {
            match b {
                b'"' => {
                    self.rest = &self.rest[i + 1..];
                    return Ok(Tok::Str(out));
                }
                b'\\' => {
                    out.push(*self.rest.get(i + 1).ok_or(())?);
                    i += 2;
                }
                b'\r' | b'\n' => return Err(()),
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.rest = &[];
        Err(())
    }

    fn literal(&mut self) -> Result<Tok<'a>, ()> {
        let close = self.rest.iter().position(|&b| b == b'}').ok_or(())?;
        let literal = announcement(&self.rest[..=close])
            .map_err(|_| ())?
            .ok_or(())?;
        let after = &self.rest[close + 1..];
        if after.is_empty() {
            self.rest = after;
            return Ok(Tok::Pending(literal));
        }
        let data = after
            .strip_prefix(b"\r\n")
            .or_else(|| after.strip_prefix(b"\n"))
            .ok_or(())?;
        let len = usize::try_from(literal.len).map_err(|_| ())?;
        if data.len() < len {
            self.rest = &[];
            return Err(());
        }
        let (value, rest) = data.split_at(len);
        self.rest = rest;
        Ok(Tok::Str(value.to_vec()))
    }

    fn list(&mut self) -> Result<Tok<'a>, ()> {
        let mut depth = 0usize;
        let mut quoted = false;
        let mut i = 0;
        while let Some(&b) = self.rest.get(i) {
            match (quoted, b) {
                (true, b'\\') => i += 1,
                (_, b'"') => quoted = !quoted,
                (false, b'(') => depth += 1,
                (false, b')') => {
                    depth -= 1;
                    if depth == 0 {
                        let (list, rest) = self.rest.split_at(i + 1);
                        self.rest = rest;
                        return Ok(Tok::List(list));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.rest = &[];
        Err(())
    }
}

/// Inspects `data` as a line and as every line the framer finds in it; asserts that names are
/// upper-case and that a LOGIN password never shows in `Debug` output. For fuzzing.
pub fn fuzz_inspect(data: &[u8]) {
    let check = |bytes: &[u8]| {
        let i = inspect(bytes);
        if let Some(name) = &i.name {
            assert_eq!(name, &name.to_ascii_uppercase());
        }
        if let Command::Login {
            password: Some(p), ..
        } = &i.command
        {
            assert!(format!("{:?}", i.command).contains("MASKED"));
            let _ = p.expose();
        }
    };
    check(data);
    let mut framer = crate::imap::framer::Framer::new(crate::imap::framer::Limits::default());
    let mut input = data;
    while let (n, Some(event)) = framer.advance(input) {
        input = &input[n..];
        if let crate::imap::framer::Event::Line { bytes, .. } = event {
            check(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> Arg {
        Arg::Str(v.to_string())
    }

    fn cmd(line: &str) -> Command {
        inspect(line.as_bytes()).command
    }

    #[test]
    fn tags_and_names() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("a UID FETCH 1:* (FLAGS)\r\n", Some("a"), Some("UID FETCH")),
            (
                "a1 uid store 1 +FLAGS (\\Seen)\r\n",
                Some("a1"),
                Some("UID STORE"),
            ),
            ("t XLIST \"\" \"*\"\r\n", Some("t"), Some("XLIST")),
            (
                "A2 list \"\" \"*\" RETURN (SPECIAL-USE)\r\n",
                Some("A2"),
                Some("LIST"),
            ),
            ("A3 X-FOO bar\r\n", Some("A3"), Some("X-FOO")),
            ("A4 noop", Some("A4"), Some("NOOP")),
            ("A5\r\n", Some("A5"), None),
            ("A6 \r\n", Some("A6"), None),
            ("\r\n", None, None),
            ("", None, None),
            ("   \r\n", None, None),
            ("\"q\" NOOP\r\n", None, None),
            ("A7 UID\r\n", Some("A7"), Some("UID")),
        ];
        for (line, tag, name) in cases {
            let i = inspect(line.as_bytes());
            assert_eq!(i.tag.as_deref(), *tag, "{line}");
            assert_eq!(i.name.as_deref(), *name, "{line}");
            if name.is_none() || *name == Some("XLIST") {
                assert_eq!(i.command, Command::Other, "{line}");
            }
        }
        assert!(inspect(b"a UID FETCH 1:* (FLAGS)\r\n").codec_parsed);
        assert!(!inspect(b"t XLIST \"\" \"*\"\r\n").codec_parsed);
    }

    #[test]
    fn literals_too_many() {
        let cases = [
            ("t CREATE Extra {1}\r\n", true),
            ("t CREATE Extra {1+}\r\n", true),
            ("t RENAME A B ~{1}\r\n", true),
            ("t RENAME {1}\r\nA B {1}\r\n", true),
            ("t SELECT A {1}\r\n", true),
            // Dovecot ignores arguments after a command's own.
            ("t DELETE X junk {1}\r\n", true),
            ("t RENAME X Y junk {1}\r\n", true),
            ("t CREATE Y (USE (\\Drafts)) {1}\r\n", true),
            ("t UID MOVE 1 X junk {1}\r\n", true),
            ("t STATUS A (MESSAGES) junk {1}\r\n", true),
            ("t NOOP {1}\r\n", true),
            ("t CREATE {5}\r\n", false),
            ("t RENAME {1}\r\nA {1}\r\n", false),
            ("t RENAME A {1}\r\n", false),
            ("t UID MOVE 1 {1+}\r\n", false),
            ("t STATUS {1}\r\n", false),
            ("t SEARCH SUBJECT {5}\r\n", false),
            ("t FETCH 1 (BODY[HEADER.FIELDS ({4}\r\n", false),
            // APPEND: a message, or the next one of a MULTIAPPEND.
            ("t APPEND A (\\Seen) {5}\r\n", false),
            ("t APPEND A {5}\r\nhello {5}\r\n", false),
            ("t XUNKNOWN {5}\r\n", false),
            ("t CREATE Extra\r\n", false),
        ];
        for (command, too_many) in cases {
            assert_eq!(literal_too_many(command.as_bytes()), too_many, "{command}");
        }
    }

    #[test]
    fn writing_commands() {
        for name in [
            "APPEND",
            "UID MOVE",
            "COPY",
            "UID STORE",
            "UID EXPUNGE",
            "CLOSE",
            "FETCH",
        ] {
            assert!(may_write(name), "{name}");
        }
        for name in ["CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE"] {
            assert!(may_write(name), "{name}");
        }
        for name in [
            "ID",
            "NOOP",
            "STATUS",
            "SELECT",
            "UID SEARCH",
            "LIST",
            "GETQUOTAROOT",
        ] {
            assert!(!may_write(name), "{name}");
        }
    }

    #[test]
    fn commands() {
        let cases: Vec<(&str, Command)> = vec![
            ("A1 CAPABILITY\r\n", Command::Capability),
            ("A1 logout\r\n", Command::Logout),
            ("A1 StartTLS\r\n", Command::StartTls),
            (
                "A1 UID STORE 1:3,7 +FLAGS.SILENT (\\Seen $Work)\r\n",
                Command::Store {
                    uid: true,
                    set: "1:3,7".into(),
                    op: "+FLAGS".into(),
                    flags: vec!["\\Seen".into(), "$Work".into()],
                },
            ),
            (
                "A1 store 2 (UNCHANGEDSINCE 9) flags \\Flagged\r\n",
                Command::Store {
                    uid: false,
                    set: "2".into(),
                    op: "FLAGS".into(),
                    flags: vec!["\\Flagged".into()],
                },
            ),
            (
                "A1 UID FETCH 4:* (UID FLAGS BODY[])\r\n",
                Command::FetchSeen {
                    uid: true,
                    set: "4:*".into(),
                },
            ),
            (
                "A1 fetch 2 (body[header.fields (subject)]<0.100>)\r\n",
                Command::FetchSeen {
                    uid: false,
                    set: "2".into(),
                },
            ),
            (
                "A1 FETCH 1 RFC822\r\n",
                Command::FetchSeen {
                    uid: false,
                    set: "1".into(),
                },
            ),
            (
                "A1 UID FETCH 1 (BINARY[1] RFC822.TEXT)\r\n",
                Command::FetchSeen {
                    uid: true,
                    set: "1".into(),
                },
            ),
            // PEEK, headers, sizes and structure leave \Seen alone.
            (
                "A1 UID FETCH 1:* (BODY.PEEK[] BINARY.PEEK[1] RFC822.HEADER RFC822.SIZE BODY BODYSTRUCTURE)\r\n",
                Command::Other,
            ),
            ("A1 FETCH 1:* FULL\r\n", Command::Other),
            ("A1 EXPUNGE\r\n", Command::Expunge { uid_set: None }),
            (
                "A1 uid expunge 4:5\r\n",
                Command::Expunge {
                    uid_set: Some("4:5".into()),
                },
            ),
            ("A1 close\r\n", Command::Close),
            ("A1 UNSELECT\r\n", Command::Unselect),
            ("A1 idle\r\n", Command::Idle),
            ("A1 ID (\"name\" \"x\")\r\n", Command::Id),
            ("A1 ID NIL\r\n", Command::Id),
            (
                "A1 AUTHENTICATE plain\r\n",
                Command::Authenticate {
                    mechanism: "PLAIN".into(),
                    initial_response: false,
                },
            ),
            (
                "A1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
                Command::Authenticate {
                    mechanism: "PLAIN".into(),
                    initial_response: true,
                },
            ),
            (
                "A1 AUTHENTICATE XOAUTH2 =\r\n",
                Command::Authenticate {
                    mechanism: "XOAUTH2".into(),
                    initial_response: true,
                },
            ),
            (
                "A1 enable condstore qresync X-UNKNOWN\r\n",
                Command::Enable(vec![
                    "CONDSTORE".into(),
                    "QRESYNC".into(),
                    "X-UNKNOWN".into(),
                ]),
            ),
            (
                "A1 COMPRESS DEFLATE\r\n",
                Command::Compress {
                    algorithm: "DEFLATE".into(),
                },
            ),
            (
                "A1 select inbox\r\n",
                Command::Select {
                    mailbox: s("inbox"),
                },
            ),
            (
                "A1 SELECT \"Sent Items\" (CONDSTORE)\r\n",
                Command::Select {
                    mailbox: s("Sent Items"),
                },
            ),
            (
                "A1 EXAMINE \"a\\\"b\\\\c\"\r\n",
                Command::Examine {
                    mailbox: s("a\"b\\c"),
                },
            ),
            (
                "A1 SELECT {5}\r\n",
                Command::Select {
                    mailbox: Arg::Literal(Literal {
                        len: 5,
                        sync: true,
                        binary: false,
                    }),
                },
            ),
            (
                "A1 SELECT {5+}\r\nDrafts\r\n",
                Command::Select {
                    mailbox: Arg::Str("Draft".into()),
                },
            ),
            (
                "A1 STATUS &AOQ-rger (MESSAGES UIDNEXT)\r\n",
                Command::Status {
                    mailbox: s("&AOQ-rger"),
                },
            ),
            ("A1 CREATE a/b\r\n", Command::Create { mailbox: s("a/b") }),
            ("A1 DELETE \"\"\r\n", Command::Delete { mailbox: s("") }),
            (
                "A1 RENAME old \"new one\"\r\n",
                Command::Rename {
                    from: s("old"),
                    to: Some(s("new one")),
                },
            ),
            (
                "A1 RENAME {3}\r\n",
                Command::Rename {
                    from: Arg::Literal(Literal {
                        len: 3,
                        sync: true,
                        binary: false,
                    }),
                    to: None,
                },
            ),
            ("A1 SUBSCRIBE x\r\n", Command::Subscribe { mailbox: s("x") }),
            (
                "A1 unsubscribe x\r\n",
                Command::Unsubscribe { mailbox: s("x") },
            ),
            (
                "A1 APPEND INBOX (\\Seen) \" 1-Feb-2024 10:00:00 +0000\" {310}\r\n",
                Command::Append {
                    mailbox: s("INBOX"),
                    message: None,
                },
            ),
            (
                "A1 APPEND \"Sent\" ~{12+}\r\n",
                Command::Append {
                    mailbox: s("Sent"),
                    message: None,
                },
            ),
            (
                "A1 COPY 1:3 Trash\r\n",
                Command::Copy {
                    uid: false,
                    mailbox: s("Trash"),
                },
            ),
            (
                "A1 uid move 1,5 \"Archive/2024\"\r\n",
                Command::Move {
                    uid: true,
                    mailbox: s("Archive/2024"),
                },
            ),
            ("A1 SELECT\r\n", Command::Other),
            ("A1 SELECT \"unterminated\r\n", Command::Other),
            ("A1 SELECT (list)\r\n", Command::Other),
            ("A1 FETCH 1 BODY.PEEK[]\r\n", Command::Other),
        ];
        for (line, want) in cases {
            assert_eq!(cmd(line), want, "{line}");
        }
    }

    #[test]
    fn an_appends_message_is_taken_when_whole_in_the_command() {
        let date = "07-Dec-2026 08:40:00 +0000";
        let message = |flags: &[&str], bytes: &str| {
            Some(Appended {
                flags: flags.iter().map(|f| f.to_string()).collect(),
                date: date.into(),
                bytes: bytes.into(),
            })
        };
        let cases: [(&str, Option<Appended>); 9] = [
            (
                "t APPEND Sent (\\Seen $Label) \"07-Dec-2026 08:40:00 +0000\" {5}\r\nhello\r\n",
                message(&["\\Seen", "$Label"], "hello"),
            ),
            (
                "t APPEND \"My Sent\" \"07-Dec-2026 08:40:00 +0000\" {7+}\r\nab\r\n\"()\r\n",
                message(&[], "ab\r\n\"()"),
            ),
            (
                "t APPEND Sent () \"07-Dec-2026 08:40:00 +0000\" {0}\r\n\r\n",
                message(&[], ""),
            ),
            // No date: NEW would give its own, which OLD would not get.
            ("t APPEND Sent (\\Seen) {5}\r\nhello\r\n", None),
            // The data not here (a large message), or not all of it.
            ("t APPEND Sent \"07-Dec-2026 08:40:00 +0000\" {5}\r\n", None),
            (
                "t APPEND Sent \"07-Dec-2026 08:40:00 +0000\" {5}\r\nhel",
                None,
            ),
            // Several messages (MULTIAPPEND), CATENATE, a binary literal.
            (
                "t APPEND Sent \"07-Dec-2026 08:40:00 +0000\" {1}\r\na {1}\r\nb\r\n",
                None,
            ),
            ("t APPEND Sent CATENATE (TEXT {1}\r\na)\r\n", None),
            (
                "t APPEND Sent \"07-Dec-2026 08:40:00 +0000\" ~{1}\r\na\r\n",
                None,
            ),
        ];
        for (line, want) in cases {
            let Command::Append { message, .. } = cmd(line) else {
                panic!("{line}: not an APPEND");
            };
            assert_eq!(message, want, "{line}");
        }
    }

    #[test]
    fn the_proxy_dates_an_append_that_has_no_date() {
        let date = "07-Dec-2026 08:40:00 +0000";
        let cases = [
            (
                "t APPEND Sent (\\Seen) {5}\r\n",
                Some("t APPEND Sent (\\Seen) \"07-Dec-2026 08:40:00 +0000\" {5}\r\n"),
            ),
            (
                "t append \"My Sent\" {5+}\r\n",
                Some("t append \"My Sent\" \"07-Dec-2026 08:40:00 +0000\" {5+}\r\n"),
            ),
            (
                "t APPEND Sent () {5}\r\n",
                Some("t APPEND Sent () \"07-Dec-2026 08:40:00 +0000\" {5}\r\n"),
            ),
            // A date given, a folder by literal, CATENATE, no literal, another command.
            ("t APPEND Sent \"01-Feb-2024 10:00:00 +0100\" {5}\r\n", None),
            ("t APPEND {4}\r\n", None),
            ("t APPEND Sent CATENATE (TEXT {5}\r\n", None),
            ("t APPEND Sent\r\n", None),
            ("t RENAME A {1}\r\n", None),
        ];
        for (line, want) in cases {
            let dated = dated_append(line.as_bytes(), date);
            assert_eq!(dated.as_deref(), want.map(str::as_bytes), "{line}");
        }
    }

    #[test]
    fn login_keeps_the_password_secret() {
        let i = inspect(b"A1 LOGIN alice \"pass word\"\r\n");
        assert!(i.codec_parsed);
        let Command::Login { username, password } = &i.command else {
            panic!("{i:?}");
        };
        assert_eq!(username, &s("alice"));
        assert_eq!(password.as_ref().map(Secret::expose), Some("pass word"));
        assert!(!format!("{i:?}").contains("pass word"));

        // Tokenizer fallback: a literal username announced at the end of the line.
        let i = inspect(b"A1 LOGIN {5}\r\n");
        assert!(!i.codec_parsed);
        assert_eq!(
            i.command,
            Command::Login {
                username: Arg::Literal(Literal {
                    len: 5,
                    sync: true,
                    binary: false
                }),
                password: None,
            }
        );
        // The continuation: a complete command reassembled with its literal.
        let i = inspect(b"a1 login {5}\r\nalice {6}\r\nsecret\r\n");
        assert_eq!(i.name.as_deref(), Some("LOGIN"));
        assert_eq!(
            i.command,
            Command::Login {
                username: s("alice"),
                password: Some(Secret::new("secret")),
            }
        );
        // Password as a literal announced at the end.
        let i = inspect(b"A1 LOGIN alice {6+}\r\n");
        assert_eq!(
            i.command,
            Command::Login {
                username: s("alice"),
                password: None
            }
        );
    }

    #[test]
    fn eight_bit_passwords_keep_their_bytes() {
        for (line, pw) in [
            (&b"a LOGIN bob \"caf\xe9\"\r\n"[..], &b"caf\xe9"[..]),
            (b"a LOGIN bob \"\xfc \\\"q\\\\\"\r\n", b"\xfc \"q\\"),
            (b"a LOGIN bob {4}\r\ncaf\xe9\r\n", b"caf\xe9"),
            (b"a LOGIN bob {4+}\r\n\xff\xfe\x80x\r\n", b"\xff\xfe\x80x"),
            (b"a LOGIN bob caf\xe9\r\n", b"caf\xe9"),
        ] {
            let i = inspect(line);
            let Command::Login { password, .. } = &i.command else {
                panic!("{i:?}");
            };
            assert_eq!(
                password.as_ref().map(Secret::expose_bytes),
                Some(pw),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn fuzz_inspect_samples() {
        for s in [
            &b""[..],
            b"A1 LOGIN alice secret\r\nA2 SELECT {3}\r\n",
            b"A1 SELECT {99999999999999999999}\r\n",
            b"A1 SELECT ((((\r\n",
            b"A1 SELECT ~\r\n",
            b"A1 SELECT \"\\",
            b"A1 RENAME {2}\nab {2}\r\n",
            b"\xff\xfe UID \xff",
        ] {
            fuzz_inspect(s);
        }
    }

    proptest! {
        #[test]
        fn inspect_never_panics(
            data in proptest::collection::vec(
                prop_oneof![
                    Just(b' '), Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b'('),
                    Just(b')'), Just(b'\r'), Just(b'\n'), (b'0'..=b'9'), (b'a'..=b'z'), any::<u8>()
                ],
                0..200,
            ),
            name in prop_oneof![
                Just("LOGIN"), Just("SELECT"), Just("RENAME"), Just("UID MOVE"), Just("ENABLE"),
                Just("AUTHENTICATE"), Just("APPEND"), Just("COPY"), Just("X")
            ],
        ) {
            let mut line = format!("A1 {name} ").into_bytes();
            line.extend_from_slice(&data);
            fuzz_inspect(&line);
            fuzz_inspect(&data);
        }
    }
}
