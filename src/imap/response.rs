//! Parsing of server responses into the few shapes the client needs. It works on the parts the
//! reader produced (text and literals), keeps strings as the server sent them (mailbox names stay
//! modified UTF-7, INTERNALDATE stays verbatim) and moves literal bodies out without copying.
//! Anything it does not know becomes `Untagged::Other`, never an error.

use super::reader::{Body, Part};
use super::uidset;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

impl Status {
    fn parse(word: &str) -> Option<Status> {
        Some(match word.to_ascii_uppercase().as_str() {
            "OK" => Status::Ok,
            "NO" => Status::No,
            "BAD" => Status::Bad,
            "BYE" => Status::Bye,
            "PREAUTH" => Status::Preauth,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::Bye => "BYE",
            Status::Preauth => "PREAUTH",
        }
    }
}

/// Response codes (`[...]`) the client acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    Alert,
    Capability(Vec<String>),
    PermanentFlags(Vec<String>),
    ReadOnly,
    ReadWrite,
    TryCreate,
    OverQuota,
    UidNext(u32),
    UidValidity(u32),
    HighestModSeq(u64),
    NoModSeq,
    /// RFC 7162: the messages a STORE with `UNCHANGEDSINCE` left alone (changed since).
    Modified(Vec<u32>),
    AppendUid {
        uidvalidity: u32,
        uids: Vec<u32>,
    },
    CopyUid {
        uidvalidity: u32,
        source: Vec<u32>,
        dest: Vec<u32>,
    },
    Other(String),
}

/// One `* n FETCH (...)` response, with the items the engine asks for.
#[derive(Debug, Default)]
pub struct Fetch {
    pub seq: u32,
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    /// Verbatim, as the server sent it (suitable for APPEND).
    pub internaldate: Option<String>,
    pub size: Option<u32>,
    pub modseq: Option<u64>,
    /// `BODY[]`.
    pub body: Option<Body>,
    /// `BODY[HEADER]` or `BODY[HEADER.FIELDS (...)]`.
    pub header: Option<Body>,
}

#[derive(Debug)]
pub enum Untagged {
    Status {
        status: Status,
        code: Option<Code>,
        text: String,
    },
    Capability(Vec<String>),
    List {
        attrs: Vec<String>,
        delim: Option<char>,
        name: String,
    },
    Lsub {
        attrs: Vec<String>,
        delim: Option<char>,
        name: String,
    },
    MailboxStatus {
        name: String,
        items: Vec<(String, u64)>,
    },
    Search(Vec<u32>),
    Flags(Vec<String>),
    Exists(u32),
    Recent(u32),
    Expunge(u32),
    Fetch(Fetch),
    /// Personal namespaces: (prefix, separator).
    Namespace(Vec<(String, Option<char>)>),
    Enabled(Vec<String>),
    Other(String),
}

#[derive(Debug)]
pub enum Response {
    Tagged {
        tag: String,
        status: Status,
        code: Option<Code>,
        text: String,
    },
    Untagged(Untagged),
    Continue(String),
}

/// Parses one response. Returns an error text for input that is not IMAP at all.
pub fn parse(parts: Vec<Part>) -> Result<Response, String> {
    let mut p = Parser::new(parts);
    let first = p.word();
    match first.as_str() {
        "+" => Ok(Response::Continue(p.rest_text())),
        "*" => Ok(Response::Untagged(parse_untagged(&mut p)?)),
        "" => Err("empty response line".into()),
        tag => {
            let word = p.word();
            let status = Status::parse(&word)
                .ok_or_else(|| format!("unexpected tagged response {word:?}"))?;
            let (code, text) = p.code_and_text();
            Ok(Response::Tagged {
                tag: tag.to_string(),
                status,
                code,
                text,
            })
        }
    }
}

fn parse_untagged(p: &mut Parser) -> Result<Untagged, String> {
    let word = p.word();
    if let Some(status) = Status::parse(&word) {
        let (code, text) = p.code_and_text();
        return Ok(Untagged::Status { status, code, text });
    }
    if let Ok(n) = word.parse::<u32>() {
        let kind = p.word().to_ascii_uppercase();
        return Ok(match kind.as_str() {
            "EXISTS" => Untagged::Exists(n),
            "RECENT" => Untagged::Recent(n),
            "EXPUNGE" => Untagged::Expunge(n),
            "FETCH" => Untagged::Fetch(parse_fetch(n, p)?),
            _ => Untagged::Other(format!("{n} {kind}")),
        });
    }
    let upper = word.to_ascii_uppercase();
    Ok(match upper.as_str() {
        "CAPABILITY" => Untagged::Capability(
            p.values()?
                .into_iter()
                .filter_map(Value::into_string)
                .collect(),
        ),
        "ENABLED" => Untagged::Enabled(
            p.values()?
                .into_iter()
                .filter_map(Value::into_string)
                .collect(),
        ),
        "FLAGS" => Untagged::Flags(p.flag_list()),
        "SEARCH" => Untagged::Search(
            p.values()?
                .into_iter()
                .filter_map(|v| v.into_string()?.parse().ok())
                .collect(),
        ),
        "LIST" | "LSUB" => {
            let mut v = p.values()?.into_iter();
            let attrs = v.next().map(Value::strings).unwrap_or_default();
            let delim = v
                .next()
                .and_then(Value::into_string)
                .and_then(|d| d.chars().next());
            let name = v
                .next()
                .and_then(Value::into_string)
                .ok_or("LIST without a name")?;
            if upper == "LIST" {
                Untagged::List { attrs, delim, name }
            } else {
                Untagged::Lsub { attrs, delim, name }
            }
        }
        "STATUS" => {
            let mut v = p.values()?.into_iter();
            let name = v
                .next()
                .and_then(Value::into_string)
                .ok_or("STATUS without a name")?;
            let list = v.next().map(Value::strings).unwrap_or_default();
            let items = list
                .chunks(2)
                .filter_map(|kv| Some((kv[0].to_ascii_uppercase(), kv.get(1)?.parse().ok()?)))
                .collect();
            Untagged::MailboxStatus { name, items }
        }
        "NAMESPACE" => {
            let personal = match p.values()?.into_iter().next() {
                Some(Value::List(list)) => list
                    .into_iter()
                    .filter_map(|ns| match ns {
                        Value::List(pair) => {
                            let mut it = pair.into_iter();
                            let prefix = it.next()?.into_string()?;
                            let sep = it
                                .next()
                                .and_then(Value::into_string)
                                .and_then(|s| s.chars().next());
                            Some((prefix, sep))
                        }
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Untagged::Namespace(personal)
        }
        _ => Untagged::Other(format!("{word} {}", p.rest_text())),
    })
}

/// `(name value name value ...)`, item by item: FLAGS is read by the lenient flag tokenizer, the
/// rest as generic values.
fn parse_fetch(seq: u32, p: &mut Parser) -> Result<Fetch, String> {
    let mut fetch = Fetch {
        seq,
        ..Fetch::default()
    };
    p.skip_spaces();
    if p.text.get(p.pos) != Some(&b'(') {
        return Err("FETCH without a list".into());
    }
    p.pos += 1;
    loop {
        p.skip_spaces();
        match p.text.get(p.pos) {
            Some(b')') | None => return Ok(fetch),
            Some(_) => {}
        }
        let name = p.atom().to_ascii_uppercase();
        if name == "FLAGS" {
            fetch.flags = Some(p.flag_list());
            continue;
        }
        let value = p
            .value(0)?
            .ok_or_else(|| format!("FETCH item {name} without a value"))?;
        match name.as_str() {
            "UID" => fetch.uid = value.number(),
            "RFC822.SIZE" => fetch.size = value.number(),
            "INTERNALDATE" => fetch.internaldate = value.into_string(),
            "MODSEQ" => fetch.modseq = value.strings().first().and_then(|m| m.parse().ok()),
            "BODY[]" | "RFC822" | "BINARY[]" => fetch.body = value.into_body(),
            n if n.starts_with("BODY[HEADER") || n == "RFC822.HEADER" => {
                fetch.header = value.into_body()
            }
            _ => {}
        }
    }
}

fn parse_code(s: &str) -> Code {
    let (name, args) = s.split_once(' ').unwrap_or((s, ""));
    let num = |a: &str| a.trim().parse::<u64>().ok();
    let words: Vec<&str> = args.split_whitespace().collect();
    let parsed = match name.to_ascii_uppercase().as_str() {
        "ALERT" => Some(Code::Alert),
        "READ-ONLY" => Some(Code::ReadOnly),
        "READ-WRITE" => Some(Code::ReadWrite),
        "TRYCREATE" => Some(Code::TryCreate),
        "OVERQUOTA" => Some(Code::OverQuota),
        "NOMODSEQ" => Some(Code::NoModSeq),
        "CAPABILITY" => Some(Code::Capability(
            words.iter().map(|w| w.to_string()).collect(),
        )),
        "PERMANENTFLAGS" => Some(Code::PermanentFlags(flag_tokens(args.as_bytes()).0)),
        "UIDNEXT" => num(args).map(|n| Code::UidNext(n as u32)),
        "UIDVALIDITY" => num(args).map(|n| Code::UidValidity(n as u32)),
        "HIGHESTMODSEQ" => num(args).map(Code::HighestModSeq),
        "MODIFIED" => uidset::parse(args.trim(), 1 << 20).map(Code::Modified),
        "APPENDUID" => match words.as_slice() {
            [uv, set] => Some(Code::AppendUid {
                uidvalidity: uv.parse().unwrap_or(0),
                uids: uidset::parse(set, 1 << 20).unwrap_or_default(),
            }),
            _ => None,
        },
        "COPYUID" => match words.as_slice() {
            [uv, src, dst] => Some(Code::CopyUid {
                uidvalidity: uv.parse().unwrap_or(0),
                source: uidset::parse(src, 1 << 20).unwrap_or_default(),
                dest: uidset::parse(dst, 1 << 20).unwrap_or_default(),
            }),
            _ => None,
        },
        _ => None,
    };
    parsed.unwrap_or_else(|| Code::Other(s.to_string()))
}

/// A parsed value: atom, string (quoted or literal), NIL-as-atom, or a parenthesised list.
#[derive(Debug)]
enum Value {
    Atom(String),
    Str(Vec<u8>),
    Lit(Body),
    List(Vec<Value>),
}

impl Value {
    fn into_string(self) -> Option<String> {
        match self {
            Value::Atom(a) if a.eq_ignore_ascii_case("NIL") => None,
            Value::Atom(a) => Some(a),
            Value::Str(s) => Some(String::from_utf8_lossy(&s).into_owned()),
            // A literal spooled to disk (hundreds of KiB) is no name or number: never read
            // back into memory here.
            Value::Lit(Body::Mem(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
            Value::Lit(Body::File { .. }) => None,
            Value::List(_) => None,
        }
    }

    fn number<T: std::str::FromStr>(self) -> Option<T> {
        self.into_string()?.parse().ok()
    }

    fn strings(self) -> Vec<String> {
        match self {
            Value::List(l) => l.into_iter().filter_map(Value::into_string).collect(),
            other => other.into_string().into_iter().collect(),
        }
    }

    fn into_body(self) -> Option<Body> {
        match self {
            Value::Lit(b) => Some(b),
            Value::Str(s) => Some(Body::Mem(s)),
            _ => None,
        }
    }
}

/// Flags from `(f1 f2 ...)` or a bare `f1 f2 ...`, and how many bytes that took. Servers store
/// and return keywords that stricter parsers refuse (`a[b`, `~tilde`, 8-bit bytes), so a flag is
/// any run of bytes but SP, `(` and `)`, kept as sent (see [`text_of`]).
pub(crate) fn flag_tokens(input: &[u8]) -> (Vec<String>, usize) {
    let mut pos = 0;
    while input.get(pos) == Some(&b' ') {
        pos += 1;
    }
    let parenthesised = input.get(pos) == Some(&b'(');
    if parenthesised {
        pos += 1;
    }
    let mut flags = Vec::new();
    loop {
        while input.get(pos) == Some(&b' ') {
            pos += 1;
        }
        match input.get(pos) {
            None => return (flags, pos),
            Some(b')') => return (flags, pos + usize::from(parenthesised)),
            Some(b'(') => pos += 1, // not IMAP; never part of a flag
            Some(_) => {
                let start = pos;
                while input
                    .get(pos)
                    .is_some_and(|b| !matches!(b, b' ' | b'(' | b')'))
                {
                    pos += 1;
                }
                flags.push(text_of(&input[start..pos]));
            }
        }
    }
}

/// Server bytes as text without loss: UTF-8 when they are UTF-8, else one char per byte
/// (Latin-1), so every byte a server sent is still there to report or compare.
pub(crate) fn text_of(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Deepest nesting of parenthesised lists in a response (BODYSTRUCTURE of a deeply nested
/// MIME message stays far below it).
const MAX_DEPTH: usize = 64;

struct Parser {
    parts: std::vec::IntoIter<Part>,
    text: Vec<u8>,
    pos: usize,
}

impl Parser {
    fn new(parts: Vec<Part>) -> Parser {
        let mut parts = parts.into_iter();
        let text = match parts.next() {
            Some(Part::Text(t)) => t,
            _ => Vec::new(),
        };
        Parser {
            parts,
            text,
            pos: 0,
        }
    }

    fn skip_spaces(&mut self) {
        while self.text.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    /// The next space-delimited word of the current line.
    fn word(&mut self) -> String {
        self.skip_spaces();
        let start = self.pos;
        while self.pos < self.text.len() && self.text[self.pos] != b' ' {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.text[start..self.pos]).into_owned()
    }

    fn rest_text(&mut self) -> String {
        self.skip_spaces();
        let s = String::from_utf8_lossy(&self.text[self.pos..]).into_owned();
        self.pos = self.text.len();
        s
    }

    /// `[CODE args] text` after a status word. The code ends at the first `]` (RFC 3501's
    /// resp-text-code never contains one; a `[` inside, as in the keyword `a[b`, is plain text).
    fn code_and_text(&mut self) -> (Option<Code>, String) {
        self.skip_spaces();
        if self.text.get(self.pos) == Some(&b'[')
            && let Some(len) = self.text[self.pos..].iter().position(|&b| b == b']')
        {
            let inner = text_of(&self.text[self.pos + 1..self.pos + len]);
            self.pos += len + 1;
            return (Some(parse_code(&inner)), self.rest_text());
        }
        (None, self.rest_text())
    }

    /// A parenthesised flag list (FETCH FLAGS, untagged FLAGS), as servers send it: see
    /// [`flag_tokens`]. A missing `(` yields no flags.
    fn flag_list(&mut self) -> Vec<String> {
        self.skip_spaces();
        if self.text.get(self.pos) != Some(&b'(') {
            return Vec::new();
        }
        let (flags, used) = flag_tokens(&self.text[self.pos..]);
        self.pos += used;
        flags
    }

    /// Every value until the end of the response.
    fn values(&mut self) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        while let Some(v) = self.value(0)? {
            out.push(v);
        }
        Ok(out)
    }

    /// The value at the cursor, `depth` lists deep. Lists nested deeper than [`MAX_DEPTH`] are
    /// an error: a hostile server must not exhaust the stack.
    fn value(&mut self, depth: usize) -> Result<Option<Value>, String> {
        self.skip_spaces();
        let Some(&b) = self.text.get(self.pos) else {
            return Ok(None);
        };
        Ok(match b {
            b'(' if depth >= MAX_DEPTH => {
                return Err(format!("lists nested more than {MAX_DEPTH} deep"));
            }
            b'(' => {
                self.pos += 1;
                let mut list = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.text.get(self.pos) {
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(Some(Value::List(list)));
                        }
                        None => return Ok(Some(Value::List(list))),
                        Some(_) => match self.value(depth + 1)? {
                            Some(v) => list.push(v),
                            None => return Ok(Some(Value::List(list))),
                        },
                    }
                }
            }
            b')' => None,
            b'"' => Some(Value::Str(self.quoted())),
            b'{' | b'~' if self.literal_follows() => {
                self.pos = self.text.len();
                let body = match self.parts.next() {
                    Some(Part::Literal(b)) => b,
                    _ => Body::Mem(Vec::new()),
                };
                self.text = match self.parts.next() {
                    Some(Part::Text(t)) => t,
                    _ => Vec::new(),
                };
                self.pos = 0;
                Some(Value::Lit(body))
            }
            _ => Some(Value::Atom(self.atom())),
        })
    }

    /// A literal announcement (`{n}`, `{n+}`, `~{n}`) at the cursor, ending the line.
    fn literal_follows(&self) -> bool {
        let rest = &self.text[self.pos..];
        let rest = rest.strip_prefix(b"~").unwrap_or(rest);
        rest.starts_with(b"{") && matches!(super::framer::announcement(rest), Ok(Some(_))) && {
            let inner = &rest[1..rest.len() - 1];
            let digits = inner.strip_suffix(b"+").unwrap_or(inner);
            digits.iter().all(u8::is_ascii_digit)
        }
    }

    fn quoted(&mut self) -> Vec<u8> {
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.text.get(self.pos) {
            self.pos += 1;
            match c {
                b'\\' => {
                    if let Some(&e) = self.text.get(self.pos) {
                        out.push(e);
                        self.pos += 1;
                    }
                }
                b'"' => break,
                _ => out.push(c),
            }
        }
        out
    }

    /// An atom. After a FETCH section name (`BODY[`, `BINARY.PEEK[`, ...) the brackets run to their
    /// `]`, spaces and parentheses included (`BODY[HEADER.FIELDS (A B)]`); anywhere else `[` is an
    /// ordinary character (a keyword `a[b`, a mailbox `a[b`).
    fn atom(&mut self) -> String {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(&c) = self.text.get(self.pos) {
            match c {
                b'[' if depth > 0 || is_section_name(&self.text[start..self.pos]) => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b' ' | b'(' | b')' if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        text_of(&self.text[start..self.pos])
    }
}

/// FETCH item names followed by a `[section]`.
fn is_section_name(name: &[u8]) -> bool {
    ["BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"]
        .iter()
        .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Vec<Part> {
        vec![Part::Text(s.as_bytes().to_vec())]
    }

    #[test]
    fn tagged_with_codes() {
        for (line, code) in [
            (
                "A1 OK [APPENDUID 38505 3955] APPEND completed",
                Code::AppendUid {
                    uidvalidity: 38505,
                    uids: vec![3955],
                },
            ),
            (
                "A1 OK [APPENDUID 7 5:7] done",
                Code::AppendUid {
                    uidvalidity: 7,
                    uids: vec![5, 6, 7],
                },
            ),
            (
                "A2 OK [COPYUID 9 1:2,5 10:12] ok",
                Code::CopyUid {
                    uidvalidity: 9,
                    source: vec![1, 2, 5],
                    dest: vec![10, 11, 12],
                },
            ),
            (
                "A3 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)",
                Code::OverQuota,
            ),
            ("A4 NO [TRYCREATE] Mailbox doesn't exist", Code::TryCreate),
            ("A5 OK [READ-WRITE] Select completed", Code::ReadWrite),
            ("A6 OK [XFOO bar] x", Code::Other("XFOO bar".into())),
        ] {
            match parse(text(line)).unwrap() {
                Response::Tagged { code: Some(c), .. } => assert_eq!(c, code, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn untagged_shapes() {
        match parse(text("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] Flags permitted.")).unwrap() {
            Response::Untagged(Untagged::Status { code: Some(Code::PermanentFlags(f)), .. }) => {
                assert_eq!(f.len(), 7);
                assert_eq!(f[6], "\\*");
            }
            other => panic!("{other:?}"),
        }
        match parse(text(r#"* LIST (\HasNoChildren \Sent) "/" "Sent Items""#)).unwrap() {
            Response::Untagged(Untagged::List { attrs, delim, name }) => {
                assert_eq!(attrs, vec!["\\HasNoChildren", "\\Sent"]);
                assert_eq!(delim, Some('/'));
                assert_eq!(name, "Sent Items");
            }
            other => panic!("{other:?}"),
        }
        match parse(text(r#"* LIST (\Noselect) NIL INBOX"#)).unwrap() {
            Response::Untagged(Untagged::List {
                delim: None, name, ..
            }) => assert_eq!(name, "INBOX"),
            other => panic!("{other:?}"),
        }
        match parse(text(
            r#"* STATUS "a \"b\"" (MESSAGES 3 UIDNEXT 9 UIDVALIDITY 17 HIGHESTMODSEQ 44)"#,
        ))
        .unwrap()
        {
            Response::Untagged(Untagged::MailboxStatus { name, items }) => {
                assert_eq!(name, "a \"b\"");
                assert_eq!(items[3], ("HIGHESTMODSEQ".to_string(), 44));
            }
            other => panic!("{other:?}"),
        }
        match parse(text(r#"* NAMESPACE (("INBOX." ".")) NIL NIL"#)).unwrap() {
            Response::Untagged(Untagged::Namespace(ns)) => {
                assert_eq!(ns, vec![("INBOX.".to_string(), Some('.'))])
            }
            other => panic!("{other:?}"),
        }
        match parse(text("* SEARCH 2 3 17")).unwrap() {
            Response::Untagged(Untagged::Search(v)) => assert_eq!(v, vec![2, 3, 17]),
            other => panic!("{other:?}"),
        }
        match parse(text("* ESEARCH (TAG \"a\") UID ALL 1:3")).unwrap() {
            Response::Untagged(Untagged::Other(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fetch_with_literals() {
        let parts = vec![
            Part::Text(b"* 3 FETCH (UID 17 FLAGS (\\Seen $Label1) INTERNALDATE \" 1-Feb-2024 10:00:00 +0100\" RFC822.SIZE 5 MODSEQ (12) BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)] {4}".to_vec()),
            Part::Literal(Body::Mem(b"ab\r\n".to_vec())),
            Part::Text(b" BODY[] {5}".to_vec()),
            Part::Literal(Body::Mem(b"hello".to_vec())),
            Part::Text(b")".to_vec()),
        ];
        match parse(parts).unwrap() {
            Response::Untagged(Untagged::Fetch(f)) => {
                assert_eq!(f.seq, 3);
                assert_eq!(f.uid, Some(17));
                assert_eq!(f.flags.unwrap(), vec!["\\Seen", "$Label1"]);
                assert_eq!(f.internaldate.unwrap(), " 1-Feb-2024 10:00:00 +0100");
                assert_eq!(f.size, Some(5));
                assert_eq!(f.modseq, Some(12));
                assert_eq!(f.header.unwrap().to_vec().unwrap(), b"ab\r\n");
                assert_eq!(f.body.unwrap().to_vec().unwrap(), b"hello");
            }
            other => panic!("{other:?}"),
        }
    }

    /// RFC 3501's ATOM-CHAR: printable ASCII but atom-specials (`( ) { SP % * " \ ]`).
    fn atom_chars() -> Vec<u8> {
        (0x21u8..0x7f)
            .filter(|c| !b"(){%*\"\\]".contains(c))
            .collect()
    }

    fn fetch_of(parts: Vec<Part>) -> Fetch {
        match parse(parts).unwrap() {
            Response::Untagged(Untagged::Fetch(f)) => f,
            other => panic!("{other:?}"),
        }
    }

    /// A FETCH of flags + body, as `UID FETCH (UID FLAGS INTERNALDATE BODY.PEEK[])` returns it.
    fn fetch_with_flags(flags: &[u8]) -> Fetch {
        let mut line = b"* 1 FETCH (UID 7 FLAGS (".to_vec();
        line.extend_from_slice(flags);
        line.extend_from_slice(b") INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" BODY[] {5}");
        fetch_of(vec![
            Part::Text(line),
            Part::Literal(Body::Mem(b"hello".to_vec())),
            Part::Text(b")".to_vec()),
        ])
    }

    #[test]
    fn keywords_are_kept_byte_for_byte() {
        // The issue's reproduction list, every atom character alone and inside a keyword, a
        // leading `~` (not a literal) and a `[` (not a section), one at a time and all at once.
        let mut keywords: Vec<Vec<u8>> =
            "$Label3 a.b a+b=c ~tilde a[b what? #hash a/b a:b;c a'b $ x-y"
                .split(' ')
                .map(|k| k.as_bytes().to_vec())
                .collect();
        for c in atom_chars() {
            keywords.push(vec![c]);
            keywords.push(vec![b'k', c, b'k']);
        }
        keywords.push(b"~{5}".to_vec());
        keywords.push(b"\xe9t\xe9".to_vec()); // Latin-1
        keywords.push("gr\u{fc}\u{df}e".as_bytes().to_vec()); // UTF-8
        keywords.push(b"\xff\x80".to_vec());
        for k in &keywords {
            let f = fetch_with_flags(&[b"\\Seen ".as_slice(), k].concat());
            assert_eq!(f.uid, Some(7), "{k:?}");
            let flags = f.flags.unwrap();
            assert_eq!(flags.len(), 2, "{k:?}: {flags:?}");
            assert_eq!(flag_bytes(&flags[1], std::str::from_utf8(k).is_ok()), *k);
            assert_eq!(
                f.internaldate.as_deref(),
                Some("01-Jan-2020 00:00:00 +0000")
            );
            assert_eq!(f.body.unwrap().to_vec().unwrap(), b"hello", "{k:?}");
        }
        let all = keywords.join(&b' ');
        let f = fetch_with_flags(&all);
        let got: Vec<Vec<u8>> = (f.flags.unwrap().iter().zip(&keywords))
            .map(|(flag, k)| flag_bytes(flag, std::str::from_utf8(k).is_ok()))
            .collect();
        assert_eq!(got, keywords);
        assert_eq!(f.body.unwrap().to_vec().unwrap(), b"hello");
    }

    /// The bytes a parsed flag stands for: its UTF-8 bytes, or, where the server's bytes were not
    /// UTF-8, one byte per char (`text_of`).
    fn flag_bytes(flag: &str, sent_utf8: bool) -> Vec<u8> {
        if sent_utf8 {
            flag.as_bytes().to_vec()
        } else {
            flag.chars().map(|c| u8::try_from(c).unwrap()).collect()
        }
    }

    #[test]
    fn a_hundred_keywords_on_one_message() {
        let keywords: Vec<String> = (0..100).map(|i| format!("k{i}~[x{i}")).collect();
        let f = fetch_with_flags(keywords.join(" ").as_bytes());
        assert_eq!(f.flags.unwrap(), keywords);
        assert!(f.body.is_some());
    }

    #[test]
    fn flags_and_permanentflags_with_odd_keywords() {
        let line = "* FLAGS (\\Answered \\Seen ~tilde a[b $)";
        match parse(text(line)).unwrap() {
            Response::Untagged(Untagged::Flags(f)) => {
                assert_eq!(f, ["\\Answered", "\\Seen", "~tilde", "a[b", "$"])
            }
            other => panic!("{other:?}"),
        }
        let line = "* OK [PERMANENTFLAGS (\\Seen a[b ~tilde \\*)] Flags permitted.";
        match parse(text(line)).unwrap() {
            Response::Untagged(Untagged::Status {
                code: Some(Code::PermanentFlags(f)),
                text,
                ..
            }) => {
                assert_eq!(f, ["\\Seen", "a[b", "~tilde", "\\*"]);
                assert_eq!(text, "Flags permitted.");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn brackets_outside_fetch_sections_are_plain_characters() {
        match parse(text("* STATUS a[b (MESSAGES 3 UIDNEXT 9)")).unwrap() {
            Response::Untagged(Untagged::MailboxStatus { name, items }) => {
                assert_eq!(name, "a[b");
                assert_eq!(items, [("MESSAGES".into(), 3), ("UIDNEXT".into(), 9)]);
            }
            other => panic!("{other:?}"),
        }
        let f = fetch_of(vec![
            Part::Text(b"* 2 FETCH (UID 9 BODY[HEADER.FIELDS (A B)] {2}".to_vec()),
            Part::Literal(Body::Mem(b"x\n".to_vec())),
            Part::Text(b" FLAGS (a[b))".to_vec()),
        ]);
        assert_eq!(f.header.unwrap().to_vec().unwrap(), b"x\n");
        assert_eq!(f.flags.unwrap(), ["a[b"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = |n: usize| format!("{}{}", "(".repeat(n), ")".repeat(n));
        // Far past any stack: refused, for every response that reads generic values.
        for line in [
            format!("* 1 FETCH (UID 5 BODYSTRUCTURE {})", deep(1_000_000)),
            format!("* LIST {} \"/\" INBOX", deep(1_000_000)),
            format!("* CAPABILITY {}", "(".repeat(1_000_000)),
            format!("* NAMESPACE {} NIL NIL", deep(100)),
        ] {
            let e = parse(text(&line)).unwrap_err();
            assert!(e.contains("nested"), "{e}");
        }
        // A deeply nested MIME structure stays within the limit.
        let line = format!("* 2 FETCH (BODYSTRUCTURE {} UID 9)", deep(MAX_DEPTH - 1));
        match parse(text(&line)).unwrap() {
            Response::Untagged(Untagged::Fetch(f)) => assert_eq!(f.uid, Some(9)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spooled_literals_are_not_read_back_as_strings() {
        let spooled = Body::File {
            file: tempfile::tempfile().unwrap(),
            len: 0,
        };
        let parts = vec![
            Part::Text(b"* LIST () \"/\" {300000}".to_vec()),
            Part::Literal(spooled),
            Part::Text(Vec::new()),
        ];
        assert!(parse(parts).is_err());
    }

    #[test]
    fn continuation_and_garbage() {
        assert!(
            matches!(parse(text("+ go ahead")).unwrap(), Response::Continue(t) if t == "go ahead")
        );
        assert!(parse(text("A1 WHAT")).is_err());
        assert!(parse(text("")).is_err());
    }
}
