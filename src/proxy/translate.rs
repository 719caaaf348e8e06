//! The rewriting stage of a session whose folders keep client caches: UID, UIDVALIDITY, UIDNEXT
//! and MODSEQ values in command lines are turned from the client's (virtual) numbers into NEW's,
//! and those in response lines back, with each folder's [`UidMap`]. Sans-I/O: it is fed the
//! framer's lines and literal data in stream order and returns the bytes to forward; literal
//! data is never changed. Folders without a map pass through untouched.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::mapping::utf7_encode;
use crate::uidmap::{Dir, UidMap};

/// The maps of the account's folders, as the client names them.
pub trait Maps {
    /// The map of `mailbox`, if that folder keeps client caches.
    fn map(&self, mailbox: &str) -> Option<Arc<UidMap>>;

    /// Whether `mailbox` may be shown yet: false while the numbers of a folder copied from OLD
    /// are not decided (a STATUS about it, from LIST-STATUS or NOTIFY, is not passed on).
    fn shown_yet(&self, _mailbox: &str) -> bool {
        true
    }
}

/// Sent instead of a UID set that names no message on NEW: a UID no message has.
const NO_MESSAGE: &str = "4294967295";
/// Longest mailbox name read from a literal.
const MAX_NAME: usize = 1024;
/// Most commands remembered while NEW has not answered them (the session bounds what is in
/// flight well below this).
const MAX_PENDING: usize = 4096;

/// One session's stage. Feed it every line and literal of both directions, in order.
#[derive(Default)]
pub struct Translator {
    command: Parse,
    response: Parse,
    /// The folder commands now name: switched as a SELECT goes out.
    sending: Option<Arc<UidMap>>,
    /// The folder responses now describe: switched when NEW starts on the SELECT.
    selected: Option<Arc<UidMap>>,
    /// Commands sent and not answered yet, oldest first.
    pending: VecDeque<Pending>,
    /// The client enabled UTF8=ACCEPT (or IMAP4rev2): its folder names are UTF-8, the maps'
    /// are NEW's (modified UTF-7).
    utf8: bool,
}

/// A command NEW has not answered yet, as far as its responses depend on it.
#[derive(Debug)]
struct Pending {
    tag: String,
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    /// SELECT or EXAMINE; `started` once NEW answers it (every earlier command is done).
    Select {
        map: Option<Arc<UidMap>>,
        started: bool,
    },
    /// CLOSE or UNSELECT.
    Deselect,
    /// SEARCH, SORT or THREAD: are its results UIDs?
    Search {
        uid: bool,
    },
    /// STORE: is a `[MODIFIED]` set UIDs?
    Store {
        uid: bool,
    },
    /// COPY or MOVE into a folder with this map.
    Copy {
        to: Option<Arc<UidMap>>,
    },
    /// APPEND into a folder with this map.
    Append {
        to: Option<Arc<UidMap>>,
    },
    Other,
}

/// A token of a line: its kind and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An atom or number; a `[...]` part (`BODY[HEADER.FIELDS (A B)]`, a response code) is in it.
    Atom,
    Quoted,
    Open,
    Close,
    /// A literal's announcement (its data follows the line).
    Literal,
}

/// Splits a line into tokens. Not a validator: whatever it does not know is an atom.
fn tokens(line: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let start = i;
        let kind = match line[i] {
            b' ' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b'"' => {
                i += 1;
                while i < line.len() {
                    match line[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                Kind::Quoted
            }
            b'{' | b'~' if line[i..].starts_with(b"{") || line[i..].starts_with(b"~{") => {
                while i < line.len() && line[i] != b'}' {
                    i += 1;
                }
                i += 1;
                Kind::Literal
            }
            _ => {
                while i < line.len() {
                    match line[i] {
                        b'[' => {
                            while i < line.len() && line[i] != b']' {
                                i += 1;
                            }
                            i += 1;
                        }
                        b' ' | b'(' | b')' | b'"' | b'\r' | b'\n' | b'{' => break,
                        _ => i += 1,
                    }
                }
                Kind::Atom
            }
        };
        out.push(Tok {
            kind,
            start,
            end: i.min(line.len()),
        });
    }
    out
}

/// One nesting level of a line being read: how many items it holds so far, the atom before
/// the last one (upper case), and the atom that came before the list that opened it.
#[derive(Debug, Default, Clone)]
struct Level {
    items: u32,
    prev: Option<String>,
    key: Option<String>,
}

/// What the command's name says about its arguments.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Name {
    #[default]
    Unknown,
    Fetch,
    Store,
    Copy,
    Move,
    Expunge,
    Search,
    Select,
    Append,
    Status,
    Deselect,
    Other,
}

/// Where a command or response is, across the lines of its literals.
#[derive(Debug, Default)]
struct Parse {
    /// The next line continues this one (after a literal).
    continuing: bool,
    levels: Vec<Level>,
    tag: Option<String>,
    uid: bool,
    name: Name,
    /// Index of the first argument at the top level.
    args_at: u32,
    /// The folder named (SELECT, COPY, APPEND, STATUS) and its map.
    mailbox: Option<String>,
    map: Option<Arc<UidMap>>,
    /// The literal being read is the folder name.
    capture: Option<Vec<u8>>,
    search: Search,
    /// A response: what its numbers are (see [`Response`]).
    response: Response,
    /// A response line to leave out (a VANISHED naming nothing the client knows).
    drop: bool,
}

/// The kind of response being read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Response {
    #[default]
    Unknown,
    Fetch,
    /// SEARCH or SORT: numbers, then maybe `(MODSEQ n)`.
    Search,
    Thread,
    Esearch,
    Vanished,
    Status,
    Other,
}

impl Parse {
    fn depth(&self) -> usize {
        self.levels.len() - 1
    }

    fn level(&mut self) -> &mut Level {
        let last = self.levels.len() - 1;
        &mut self.levels[last]
    }

    /// The argument index of the current top-level item.
    fn arg(&self) -> Option<u32> {
        self.levels[0].items.checked_sub(self.args_at)
    }

    /// Records that a token was read at the current level.
    fn read(&mut self, atom: Option<&str>) {
        let level = self.level();
        level.items += 1;
        level.prev = atom.map(|a| a.to_ascii_uppercase());
    }

    fn open(&mut self) {
        let key = self.level().prev.take();
        self.levels.push(Level {
            key,
            ..Level::default()
        });
    }

    fn close(&mut self) {
        if self.levels.len() > 1 {
            self.levels.pop();
        }
        self.read(None);
    }
}

/// A search program's reader (SEARCH, SORT and THREAD keys): only `UID` sets and `MODSEQ`
/// values change; every other key's arguments are skipped by arity. SORT's criteria and
/// THREAD's algorithm and charset are read as keys too: none of them is a key that changes,
/// and a list's closing parenthesis ends any argument a criterion seemed to take.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Search {
    #[default]
    Key,
    /// Arguments still to skip.
    Args(u8),
    Set,
    /// MODSEQ: an entry name may come first, then its type, then the value.
    ModseqFirst,
    ModseqType,
    ModseqValue,
}

/// How many arguments a search key takes before the next key.
fn search_arity(key: &str) -> Search {
    match key {
        "UID" => Search::Set,
        "MODSEQ" => Search::ModseqFirst,
        "HEADER" => Search::Args(2),
        "ANNOTATION" => Search::Args(3),
        "BCC" | "BEFORE" | "BODY" | "CC" | "FROM" | "KEYWORD" | "LARGER" | "ON" | "SENTBEFORE"
        | "SENTON" | "SENTSINCE" | "SINCE" | "SMALLER" | "SUBJECT" | "TEXT" | "TO"
        | "UNKEYWORD" | "OLDER" | "YOUNGER" | "CHARSET" | "RETURN" | "FILTER" | "EMAILID"
        | "THREADID" | "SAVEDBEFORE" | "SAVEDON" | "SAVEDSINCE" | "X-GM-RAW" | "X-GM-MSGID"
        | "X-GM-THRID" | "X-GM-LABELS" => Search::Args(1),
        _ => Search::Key,
    }
}

/// A change to a line: bytes `start..end` become `text`.
type Edit = (usize, usize, String);

fn apply(line: &[u8], edits: Vec<Edit>) -> Cow<'_, [u8]> {
    if edits.is_empty() {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut at = 0;
    for (start, end, text) in edits {
        out.extend_from_slice(&line[at..start]);
        out.extend_from_slice(text.as_bytes());
        at = end;
    }
    out.extend_from_slice(&line[at..]);
    Cow::Owned(out)
}

fn text(line: &[u8], tok: Tok) -> &str {
    std::str::from_utf8(&line[tok.start..tok.end]).unwrap_or("")
}

/// A mailbox name from an atom or a quoted string.
fn mailbox_of(line: &[u8], tok: Tok) -> Option<String> {
    let raw = &line[tok.start..tok.end];
    match tok.kind {
        Kind::Atom => Some(String::from_utf8_lossy(raw).into_owned()),
        Kind::Quoted => {
            let inner = raw.get(1..raw.len().saturating_sub(1))?;
            let mut name = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if b == b'\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                name.push(b);
            }
            Some(String::from_utf8_lossy(&name).into_owned())
        }
        _ => None,
    }
}

fn command_name(word: &str) -> Name {
    match word {
        "FETCH" => Name::Fetch,
        "STORE" => Name::Store,
        "COPY" => Name::Copy,
        "MOVE" => Name::Move,
        "EXPUNGE" => Name::Expunge,
        "SEARCH" | "SORT" | "THREAD" => Name::Search,
        "SELECT" | "EXAMINE" => Name::Select,
        "APPEND" => Name::Append,
        "STATUS" => Name::Status,
        "CLOSE" | "UNSELECT" => Name::Deselect,
        _ => Name::Other,
    }
}

impl Translator {
    pub fn new() -> Self {
        Translator::default()
    }

    /// A command line going to NEW (or its part after a literal); `literal`: the line announces
    /// one, whose data follows through [`Translator::command_literal`].
    pub fn command<'a>(&mut self, maps: &dyn Maps, line: &'a [u8], literal: bool) -> Cow<'a, [u8]> {
        if !self.command.continuing {
            self.command = Parse {
                levels: vec![Level::default()],
                ..Parse::default()
            };
        } else if let Some(name) = self.command.capture.take() {
            self.command_mailbox(maps, String::from_utf8_lossy(&name).into_owned());
        }
        let mut edits = Vec::new();
        for tok in tokens(line) {
            if let Some(edit) = self.command_token(maps, line, tok) {
                edits.push(edit);
            }
        }
        self.command.continuing = literal;
        if !literal {
            self.command_done();
        }
        apply(line, edits)
    }

    /// NEW refused the literal the last command line announced: the command is over, and the
    /// next line starts another.
    pub fn command_refused(&mut self) {
        self.command.continuing = false;
    }

    /// Literal data of a command (passed on unchanged; a folder name is read from it).
    pub fn command_literal(&mut self, data: &[u8]) {
        if let Some(name) = self.command.capture.as_mut()
            && name.len() + data.len() <= MAX_NAME
        {
            name.extend_from_slice(data);
        }
    }

    /// A response line from NEW (or its part after a literal).
    pub fn response<'a>(
        &mut self,
        maps: &dyn Maps,
        line: &'a [u8],
        literal: bool,
    ) -> Cow<'a, [u8]> {
        if !self.response.continuing {
            self.response = Parse {
                levels: vec![Level::default()],
                ..Parse::default()
            };
        } else if let Some(name) = self.response.capture.take() {
            self.response.map = map_of(maps, self.utf8, &String::from_utf8_lossy(&name));
        }
        let toks = tokens(line);
        if self.response.continuing
            && self.response.response == Response::Status
            && let Some(map) = &self.response.map
            && !status_uidvalidity_matches(line, &toks, map)
        {
            self.response.map = None;
        }
        if !self.response.continuing && enables_utf8(line, &toks) {
            self.utf8 = true;
        }
        let edits = if !self.response.continuing && self.is_status_response(line, &toks) {
            self.status_response(line, &toks)
        } else {
            let mut edits = Vec::new();
            for (i, &tok) in toks.iter().enumerate() {
                if let Some(edit) = self.response_token(maps, line, &toks[i + 1..], tok) {
                    edits.push(edit);
                }
            }
            edits
        };
        self.response.continuing = literal;
        if self.response.drop {
            return Cow::Borrowed(&[]);
        }
        apply(line, edits)
    }

    /// Literal data of a response (passed on unchanged; a folder name is read from it).
    pub fn response_literal(&mut self, data: &[u8]) {
        if let Some(name) = self.response.capture.as_mut()
            && name.len() + data.len() <= MAX_NAME
        {
            name.extend_from_slice(data);
        }
    }

    fn command_mailbox(&mut self, maps: &dyn Maps, name: String) {
        self.command.map = map_of(maps, self.utf8, &name);
        self.command.mailbox = Some(name);
    }

    /// One token of a command: the edit it needs, if any.
    fn command_token(&mut self, maps: &dyn Maps, line: &[u8], tok: Tok) -> Option<Edit> {
        let p = &mut self.command;
        if p.name == Name::Search && p.levels[0].items >= p.args_at {
            let edit = search_token(p, self.sending.as_deref(), line, tok);
            step(p, line, tok);
            return edit;
        }
        let word = (tok.kind == Kind::Atom).then(|| text(line, tok).to_ascii_uppercase());
        let mut edit = None;
        if p.depth() == 0 {
            match (p.levels[0].items, word.as_deref()) {
                (0, _) => p.tag = mailbox_of(line, tok),
                (1, Some("UID")) => {
                    p.uid = true;
                    p.args_at = 3;
                }
                (1, Some(w)) | (2, Some(w))
                    if p.name == Name::Unknown && (p.args_at == 0 || p.uid) =>
                {
                    p.name = command_name(w);
                    p.args_at = p.levels[0].items + 1;
                }
                _ => edit = self.command_argument(maps, line, tok),
            }
        } else {
            edit = self.command_argument(maps, line, tok);
        }
        step(&mut self.command, line, tok);
        edit
    }

    /// An argument of a command (a token after its name).
    fn command_argument(&mut self, maps: &dyn Maps, line: &[u8], tok: Tok) -> Option<Edit> {
        let p = &mut self.command;
        let arg = p.arg()?;
        let value = text(line, tok);
        let depth = p.depth();
        match (p.name, depth, arg) {
            (Name::Fetch | Name::Store | Name::Copy | Name::Move | Name::Expunge, 0, 0)
                if p.uid && tok.kind == Kind::Atom =>
            {
                let map = self.sending.as_deref()?;
                let set = map.translate_set(Dir::ToNew, value, false)?;
                Some((tok.start, tok.end, nonempty(set)))
            }
            (Name::Fetch | Name::Store, 1.., _) if tok.kind == Kind::Atom => {
                let prev = p.level().prev.as_deref();
                if !matches!(prev, Some("CHANGEDSINCE" | "UNCHANGEDSINCE")) {
                    return None;
                }
                let map = self.sending.as_deref()?;
                let n = value.parse::<u64>().ok()?;
                Some((tok.start, tok.end, map.new_modseq(n).to_string()))
            }
            (Name::Copy | Name::Move, 0, 1)
            | (Name::Select | Name::Append | Name::Status, 0, 0) => {
                match tok.kind {
                    Kind::Literal => p.capture = Some(Vec::new()),
                    _ => {
                        let name = mailbox_of(line, tok)?;
                        self.command_mailbox(maps, name);
                    }
                }
                None
            }
            (Name::Select, 2, _) => {
                // `(QRESYNC (uidvalidity modseq [known-uids [seq-match]]))`
                let level = &p.levels[2];
                if level.key.as_deref() != Some("QRESYNC") || tok.kind != Kind::Atom {
                    return None;
                }
                let map = p.map.as_deref()?;
                let new = match level.items {
                    0 => map.new_uidvalidity_for(value.parse().ok()?).to_string(),
                    1 => map.new_modseq(value.parse().ok()?).max(1).to_string(),
                    2 => nonempty(map.translate_set(Dir::ToNew, value, false)?),
                    _ => return None,
                };
                Some((tok.start, tok.end, new))
            }
            (Name::Select, 3, _) if p.levels[2].key.as_deref() == Some("QRESYNC") => {
                // Sequence match data: the UIDs paired with the sequence numbers before them.
                if p.level().items != 1 || tok.kind != Kind::Atom {
                    return None;
                }
                let map = p.map.as_deref()?;
                let set = map.translate_set(Dir::ToNew, value, true)?;
                Some((tok.start, tok.end, nonempty(set)))
            }
            _ => None,
        }
    }

    /// The command went out whole.
    fn command_done(&mut self) {
        let p = &mut self.command;
        let Some(tag) = p.tag.clone().filter(|_| p.name != Name::Unknown) else {
            // A continuation of IDLE or AUTHENTICATE, not a command.
            return;
        };
        let map = p.map.take();
        let what = match p.name {
            Name::Select => {
                self.sending = map.clone();
                What::Select {
                    map,
                    started: false,
                }
            }
            Name::Deselect => {
                self.sending = None;
                What::Deselect
            }
            Name::Search => What::Search { uid: p.uid },
            Name::Store => What::Store { uid: p.uid },
            Name::Copy | Name::Move => What::Copy { to: map },
            Name::Append => What::Append { to: map },
            _ => What::Other,
        };
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending { tag, what });
        self.start_next();
    }

    /// When every command before a SELECT is answered, NEW's responses are about its folder.
    fn start_next(&mut self) {
        if let Some(Pending {
            what: What::Select { map, started },
            ..
        }) = self.pending.front_mut()
            && !*started
        {
            *started = true;
            self.selected = map.clone();
        }
    }

    /// `tag OK|NO|BAD ...`, `* OK|NO|BAD|BYE|PREAUTH ...`: one line, maybe with a code.
    fn is_status_response(&self, line: &[u8], toks: &[Tok]) -> bool {
        toks.get(1).is_some_and(|t| {
            let w = text(line, *t);
            ["OK", "NO", "BAD", "BYE", "PREAUTH"]
                .iter()
                .any(|s| w.eq_ignore_ascii_case(s))
        })
    }

    fn status_response(&mut self, line: &[u8], toks: &[Tok]) -> Vec<Edit> {
        let tag = text(line, toks[0]);
        let ok = text(line, toks[1]).eq_ignore_ascii_case("OK");
        let done = match tag {
            "*" | "+" => None,
            _ => self
                .pending
                .iter()
                .position(|p| p.tag == tag)
                .and_then(|i| self.pending.remove(i)),
        };
        let mut edits = Vec::new();
        if let Some(code) = toks.get(2).filter(|t| line[t.start] == b'[') {
            let inner = &text(line, *code)[1..];
            let inner = inner.strip_suffix(']').unwrap_or(inner);
            if let Some(new) = self.code(inner, done.as_ref().map(|d| &d.what)) {
                edits.push((code.start, code.end, format!("[{new}]")));
            }
        }
        if let Some(done) = done {
            match done.what {
                // Started already, unless something ahead of it was never answered.
                What::Select { map, .. } if ok => self.selected = map,
                What::Select { .. } => {
                    self.selected = None;
                    let later = self
                        .pending
                        .iter()
                        .any(|p| matches!(p.what, What::Select { .. } | What::Deselect));
                    if !later {
                        self.sending = None;
                    }
                }
                What::Deselect if ok => self.selected = None,
                _ => {}
            }
            self.start_next();
        }
        edits
    }

    /// A response code's text (between the brackets), rewritten if it carries numbers.
    fn code(&mut self, inner: &str, done: Option<&What>) -> Option<String> {
        let mut words = inner.split(' ');
        let name = words.next()?.to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        let selected = self.selected.clone();
        let new_args: Vec<String> = match (name.as_str(), args.as_slice()) {
            ("UIDNEXT", [n]) => vec![selected?.next_uid(n.parse().ok()?).to_string()],
            ("UIDVALIDITY", [n]) => {
                let map = selected?;
                match map.shown_uidvalidity(n.parse().ok()?) {
                    Some(v) => vec![v.to_string()],
                    None => {
                        // NEW's folder is not the one the map is for: show NEW's numbers.
                        self.selected = None;
                        if let Some(Pending {
                            what: What::Select { map, .. },
                            ..
                        }) = self.pending.front_mut()
                        {
                            *map = None;
                        }
                        return None;
                    }
                }
            }
            ("HIGHESTMODSEQ", [n]) => vec![selected?.shown_modseq(n.parse().ok()?).to_string()],
            ("APPENDUID", [v, set]) => {
                let Some(What::Append { to: Some(map) }) = done else {
                    return None;
                };
                vec![
                    map.shown_uidvalidity(v.parse().ok()?)?.to_string(),
                    map.translate_set(Dir::ToVirtual, set, true)?,
                ]
            }
            ("COPYUID", [v, from, to]) => {
                let to_map = match done {
                    Some(What::Copy { to }) => to.clone(),
                    // MOVE's COPYUID comes untagged, before its expunges.
                    _ => self.pending.iter().find_map(|p| match &p.what {
                        What::Copy { to } => Some(to.clone()),
                        _ => None,
                    })?,
                };
                let from = match &selected {
                    Some(map) => map.translate_set(Dir::ToVirtual, from, true)?,
                    None => from.to_string(),
                };
                let (v, to) = match &to_map {
                    Some(map) => (
                        map.shown_uidvalidity(v.parse().ok()?)?.to_string(),
                        map.translate_set(Dir::ToVirtual, to, true)?,
                    ),
                    None => (v.to_string(), to.to_string()),
                };
                vec![v, from, to]
            }
            ("MODIFIED", [set]) => match done {
                Some(What::Store { uid: true }) => {
                    vec![selected?.translate_set(Dir::ToVirtual, set, true)?]
                }
                _ => return None,
            },
            _ => return None,
        };
        Some(format!("{name} {}", new_args.join(" ")))
    }

    /// One token of an untagged response other than a status response.
    fn response_token(
        &mut self,
        maps: &dyn Maps,
        line: &[u8],
        rest: &[Tok],
        tok: Tok,
    ) -> Option<Edit> {
        let edit = self.response_edit(maps, line, rest, tok);
        step(&mut self.response, line, tok);
        edit
    }

    fn response_edit(
        &mut self,
        maps: &dyn Maps,
        line: &[u8],
        rest: &[Tok],
        tok: Tok,
    ) -> Option<Edit> {
        let utf8 = self.utf8;
        let p = &mut self.response;
        let value = text(line, tok);
        let items = p.levels[0].items;
        if p.depth() == 0 && p.response == Response::Unknown {
            if items == 0 {
                if value != "*" {
                    p.response = Response::Other;
                }
                return None;
            }
            let word = value.to_ascii_uppercase();
            p.response = match word.as_str() {
                _ if items == 1 && word.bytes().all(|b| b.is_ascii_digit()) => return None,
                "FETCH" if items == 2 => Response::Fetch,
                "SEARCH" | "SORT" if items == 1 => Response::Search,
                "THREAD" if items == 1 => Response::Thread,
                "ESEARCH" if items == 1 => Response::Esearch,
                "VANISHED" if items == 1 => Response::Vanished,
                "STATUS" if items == 1 => Response::Status,
                _ => Response::Other,
            };
            p.map = match p.response {
                Response::Status | Response::Other => None,
                _ => self.selected.clone(),
            };
            p.uid = match p.response {
                // The oldest search in flight is the one answered (RFC 3501 forbids pipelining
                // SEARCH with UID SEARCH).
                Response::Search | Response::Thread => self
                    .pending
                    .iter()
                    .find_map(|q| match q.what {
                        What::Search { uid } => Some(uid),
                        _ => None,
                    })
                    .unwrap_or(false),
                _ => false,
            };
            return None;
        }
        let depth = p.depth();
        if p.response == Response::Status && depth == 0 && items == 2 {
            match tok.kind {
                Kind::Literal => p.capture = Some(Vec::new()),
                _ => {
                    let name = mailbox_of(line, tok);
                    let name = name.as_deref().map(|n| new_name(utf8, n));
                    p.map = name.as_deref().and_then(|n| maps.map(n));
                    // Its numbers are not decided: NEW's would be taken back later.
                    p.drop = p.map.is_none() && name.is_some_and(|n| !maps.shown_yet(&n));
                }
            }
            if let Some(map) = &p.map
                && !status_uidvalidity_matches(line, rest, map)
            {
                p.map = None;
            }
            return None;
        }
        if tok.kind != Kind::Atom {
            return None;
        }
        let map = p.map.clone()?;
        let level = &p.levels[depth];
        let uid = |n: &str| -> Option<String> {
            let n = n.parse().ok()?;
            let v = map
                .exact(Dir::ToVirtual, n)
                .or(map.ceil(Dir::ToVirtual, n))?;
            Some(v.to_string())
        };
        let modseq = |n: &str| Some(map.shown_modseq(n.parse().ok()?).to_string());
        let new = match (p.response, depth) {
            // `* n FETCH (name value ...)`: UID's value, MODSEQ's `(value)`.
            (Response::Fetch, 1)
                if level.items % 2 == 1 && level.prev.as_deref() == Some("UID") =>
            {
                uid(value)?
            }
            (Response::Fetch, 2) if level.key.as_deref() == Some("MODSEQ") && level.items == 0 => {
                modseq(value)?
            }
            (Response::Search, 0) if p.uid => uid(value)?,
            (Response::Search, 1) if level.prev.as_deref() == Some("MODSEQ") => modseq(value)?,
            (Response::Thread, 1..) if p.uid => uid(value)?,
            (Response::Vanished, 0) => {
                let set = map.translate_set(Dir::ToVirtual, value, true)?;
                if set.is_empty() {
                    p.drop = true;
                }
                set
            }
            (Response::Esearch, 0) => {
                if value.eq_ignore_ascii_case("UID") {
                    p.uid = true;
                    return None;
                }
                match level.prev.as_deref() {
                    Some("MIN" | "MAX") if p.uid => uid(value)?,
                    Some("ALL") if p.uid => {
                        nonempty(map.translate_set(Dir::ToVirtual, value, true)?)
                    }
                    Some("MODSEQ") => modseq(value)?,
                    _ => return None,
                }
            }
            (Response::Esearch, 1)
                if p.uid && level.key.as_deref() == Some("PARTIAL") && level.items == 1 =>
            {
                map.translate_set(Dir::ToVirtual, value, true)?
            }
            // CONTEXT=SEARCH's updates: `ADDTO (position set ...)`, `REMOVETO (...)`.
            (Response::Esearch, 1)
                if p.uid
                    && matches!(level.key.as_deref(), Some("ADDTO" | "REMOVETO"))
                    && level.items % 2 == 1 =>
            {
                map.translate_set(Dir::ToVirtual, value, true)?
            }
            (Response::Status, 1) if level.items % 2 == 1 => match level.prev.as_deref() {
                Some("UIDNEXT") => map.next_uid(value.parse().ok()?).to_string(),
                Some("UIDVALIDITY") => map.shown_uidvalidity(value.parse().ok()?)?.to_string(),
                Some("HIGHESTMODSEQ") => modseq(value)?,
                _ => return None,
            },
            _ => return None,
        };
        Some((tok.start, tok.end, new))
    }
}

/// The map of folder `name` as the client spells it (`utf8`: in UTF-8, see
/// [`Translator::utf8`]).
fn map_of(maps: &dyn Maps, utf8: bool, name: &str) -> Option<Arc<UidMap>> {
    maps.map(&new_name(utf8, name))
}

/// A folder name as the client gave it, as NEW (and the maps) name it.
fn new_name(utf8: bool, name: &str) -> Cow<'_, str> {
    match utf8 {
        true => Cow::Owned(utf7_encode(name)),
        false => Cow::Borrowed(name),
    }
}

/// `* ENABLED` with UTF8=ACCEPT or IMAP4rev2 (which implies it).
fn enables_utf8(line: &[u8], toks: &[Tok]) -> bool {
    toks.len() > 2
        && text(line, toks[0]) == "*"
        && text(line, toks[1]).eq_ignore_ascii_case("ENABLED")
        && toks[2..].iter().any(|t| {
            let cap = text(line, *t);
            cap.eq_ignore_ascii_case("UTF8=ACCEPT") || cap.eq_ignore_ascii_case("IMAP4REV2")
        })
}

/// A STATUS response's UIDVALIDITY, when it has one, is the one the map is for.
fn status_uidvalidity_matches(line: &[u8], rest: &[Tok], map: &UidMap) -> bool {
    rest.windows(2)
        .find(|w| text(line, w[0]).eq_ignore_ascii_case("UIDVALIDITY"))
        .is_none_or(|w| text(line, w[1]).parse() == Ok(map.new_uidvalidity()))
}

/// A translated set that may have come out empty, for a command: it must name something.
fn nonempty(set: String) -> String {
    if set.is_empty() {
        NO_MESSAGE.into()
    } else {
        set
    }
}

/// Moves the reader past `tok`.
fn step(p: &mut Parse, line: &[u8], tok: Tok) {
    match tok.kind {
        Kind::Open => p.open(),
        Kind::Close => p.close(),
        Kind::Atom => p.read(Some(text(line, tok))),
        Kind::Quoted | Kind::Literal => p.read(None),
    }
}

/// One token of a search program; `map`: the selected folder's.
fn search_token(p: &mut Parse, map: Option<&UidMap>, line: &[u8], tok: Tok) -> Option<Edit> {
    let value = text(line, tok);
    let mut edit = None;
    p.search = match (p.search, tok.kind) {
        (Search::Args(left), Kind::Atom | Kind::Quoted | Kind::Literal) => match left {
            0 | 1 => Search::Key,
            n => Search::Args(n - 1),
        },
        (Search::Set, Kind::Atom) => {
            if let Some(map) = map
                && let Some(set) = map.translate_set(Dir::ToNew, value, false)
            {
                edit = Some((tok.start, tok.end, nonempty(set)));
            }
            Search::Key
        }
        (Search::ModseqFirst, Kind::Quoted | Kind::Literal) => Search::ModseqType,
        (Search::ModseqType, _) => Search::ModseqValue,
        (Search::ModseqFirst | Search::ModseqValue, Kind::Atom) => {
            if let Some(map) = map
                && let Ok(n) = value.parse::<u64>()
            {
                edit = Some((tok.start, tok.end, map.new_modseq(n).to_string()));
            }
            Search::Key
        }
        (Search::Key, Kind::Atom) => search_arity(&value.to_ascii_uppercase()),
        // A key group's parentheses, or something out of place: read on as keys.
        _ => Search::Key,
    };
    edit
}

#[cfg(test)]
mod tests;
