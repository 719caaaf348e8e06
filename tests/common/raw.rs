//! `RawImap`: a tiny blocking IMAP client (std only) that tests use to seed and inspect servers
//! independently of the crate's own client. Responses are read as whole units with `{n}` literals
//! inlined byte-exactly, and parsed by a small tokenizer (`Item`) into lists, strings and atoms.
//! Atoms that are not UTF-8 (planted 8-bit keywords) become text losslessly (`atom_text`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One message as read back by `uid_fetch_all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    /// Flags and keywords, without `\Recent`; 8-bit bytes as `atom_text` shows them.
    pub flags: BTreeSet<String>,
    pub internaldate: String,
    pub body: Vec<u8>,
}

/// A parsed response token: atoms (incl. NIL, numbers, flags, `BODY[]`), strings (quoted or
/// literal, as raw bytes) and parenthesised lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Item>),
}

impl Item {
    /// Text of an atom or string (lossy UTF-8); panics on a list.
    pub fn text(&self) -> String {
        match self {
            Item::Atom(a) => a.clone(),
            Item::Str(s) => String::from_utf8_lossy(s).into_owned(),
            Item::List(_) => panic!("expected atom or string, got list {self:?}"),
        }
    }

    pub fn list(&self) -> &[Item] {
        match self {
            Item::List(l) => l,
            _ => panic!("expected list, got {self:?}"),
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Item::Atom(a) if a.eq_ignore_ascii_case("NIL"))
    }
}

/// `(attributes, delimiter, name)` of one LIST/LSUB line.
pub type ListEntry = (Vec<String>, Option<char>, String);

pub struct RawImap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
    /// Greeting line (`* OK ...`).
    pub greeting: String,
}

impl RawImap {
    /// Connects and reads the greeting; panics unless it is `* OK`.
    pub fn connect(host: &str, port: u16) -> RawImap {
        let stream = TcpStream::connect((host, port))
            .unwrap_or_else(|e| panic!("connect {host}:{port}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut c = RawImap {
            reader: BufReader::new(stream),
            writer,
            next_tag: 1,
            greeting: String::new(),
        };
        let greeting = c.read_response();
        c.greeting = String::from_utf8_lossy(&greeting).trim_end().to_string();
        assert!(
            c.greeting.starts_with("* OK"),
            "unexpected greeting: {}",
            c.greeting
        );
        c
    }

    pub fn login(&mut self, user: &str, password: &str) {
        self.exec(&format!("LOGIN {} {}", quote(user), quote(password)));
    }

    /// Sends `cmd` with a fresh tag; returns untagged responses (lossy text) and the tagged line.
    pub fn raw(&mut self, cmd: &str) -> (Vec<String>, String) {
        let (untagged, tagged) = self.command(cmd);
        let lines = untagged
            .iter()
            .map(|u| String::from_utf8_lossy(u).trim_end().to_string())
            .collect();
        (lines, tagged)
    }

    /// Sends `cmd`; returns untagged responses as raw bytes (literals inlined) and the tagged
    /// line without the tag, e.g. `OK [READ-WRITE] Select completed.`.
    pub fn command(&mut self, cmd: &str) -> (Vec<Vec<u8>>, String) {
        let tag = self.send(cmd);
        self.collect(&tag)
    }

    /// Like `command`, but panics unless the tagged status is OK.
    pub fn exec(&mut self, cmd: &str) -> Vec<Vec<u8>> {
        let (untagged, tagged) = self.command(cmd);
        assert!(tagged.starts_with("OK"), "`{cmd}` failed: {tagged}");
        untagged
    }

    pub fn capabilities(&mut self) -> Vec<String> {
        let untagged = self.exec("CAPABILITY");
        untagged
            .iter()
            .filter_map(|u| u.strip_prefix(b"* CAPABILITY "))
            .flat_map(|rest| {
                String::from_utf8_lossy(rest)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn create(&mut self, mailbox: &str) {
        self.exec(&format!("CREATE {}", quote(mailbox)));
    }

    pub fn subscribe(&mut self, mailbox: &str) {
        self.exec(&format!("SUBSCRIBE {}", quote(mailbox)));
    }

    pub fn list(&mut self) -> Vec<ListEntry> {
        self.list_like("LIST")
    }

    pub fn lsub(&mut self) -> Vec<ListEntry> {
        self.list_like("LSUB")
    }

    fn list_like(&mut self, verb: &str) -> Vec<ListEntry> {
        let prefix = format!("* {verb} ");
        let untagged = self.exec(&format!("{verb} \"\" \"*\""));
        untagged
            .iter()
            .filter_map(|u| u.strip_prefix(prefix.as_bytes()))
            .map(|rest| {
                let items = parse_items(rest);
                let attrs = items[0].list().iter().map(Item::text).collect();
                let delim = if items[1].is_nil() {
                    None
                } else {
                    items[1].text().chars().next()
                };
                (attrs, delim, items[2].text())
            })
            .collect()
    }

    /// SELECTs `mailbox` (read-write) and returns its EXISTS count.
    pub fn select(&mut self, mailbox: &str) -> u32 {
        let untagged = self.exec(&format!("SELECT {}", quote(mailbox)));
        exists(&untagged)
    }

    /// EXAMINEs `mailbox` (read-only) and returns its EXISTS count.
    pub fn examine(&mut self, mailbox: &str) -> u32 {
        let untagged = self.exec(&format!("EXAMINE {}", quote(mailbox)));
        exists(&untagged)
    }

    /// APPENDs one message with a synchronising literal; returns the APPENDUID uid if reported.
    pub fn append(
        &mut self,
        mailbox: &str,
        flags: &[&str],
        internaldate: Option<&str>,
        bytes: &[u8],
    ) -> Option<u32> {
        self.try_append(mailbox, flags, internaldate, bytes)
            .unwrap_or_else(|tagged| panic!("APPEND to {mailbox} failed: {tagged}"))
    }

    /// Like `append`, but returns the tagged line on NO/BAD (e.g. `NO [OVERQUOTA] ...`).
    pub fn try_append(
        &mut self,
        mailbox: &str,
        flags: &[&str],
        internaldate: Option<&str>,
        bytes: &[u8],
    ) -> Result<Option<u32>, String> {
        let mut cmd = format!("APPEND {} ({})", quote(mailbox), flags.join(" "));
        if let Some(date) = internaldate {
            cmd.push_str(&format!(" {}", quote(date)));
        }
        cmd.push_str(&format!(" {{{}}}", bytes.len()));
        let tag = self.send(&cmd);
        self.continuation(&tag)?;
        self.writer.write_all(bytes).unwrap();
        self.writer.write_all(b"\r\n").unwrap();
        let (_, tagged) = self.collect(&tag);
        if !tagged.starts_with("OK") {
            return Err(tagged);
        }
        // OK [APPENDUID <uidvalidity> <uid>] Append completed.
        Ok(tagged
            .strip_prefix("OK [APPENDUID ")
            .and_then(|r| r.split([' ', ']']).nth(1))
            .and_then(|uid| uid.parse().ok()))
    }

    /// Every message of `mailbox` (EXAMINE + `UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])`),
    /// in UID order.
    pub fn uid_fetch_all(&mut self, mailbox: &str) -> Vec<Msg> {
        if self.examine(mailbox) == 0 {
            return Vec::new();
        }
        self.uid_fetch("1:*")
    }

    /// The messages of UID set `uids` (e.g. "7", "1:*") in the selected mailbox, in UID order.
    /// A FETCH without the INTERNALDATE asked for is the server announcing another session's
    /// flag change, not one of them.
    pub fn uid_fetch(&mut self, uids: &str) -> Vec<Msg> {
        let untagged = self.exec(&format!(
            "UID FETCH {uids} (UID FLAGS INTERNALDATE BODY.PEEK[])"
        ));
        let mut msgs: Vec<Msg> = untagged
            .into_iter()
            .filter_map(parse_fetch)
            .filter(|m| !m.internaldate.is_empty())
            .collect();
        msgs.sort_by_key(|m| m.uid);
        msgs
    }

    /// `UID STORE <uid> <op> (<flags>)` in `mailbox`; `op` is e.g. "+FLAGS", "-FLAGS", "FLAGS".
    pub fn uid_store(&mut self, mailbox: &str, uid: u32, op: &str, flags: &[&str]) {
        self.select(mailbox);
        self.exec(&format!("UID STORE {uid} {op} ({})", flags.join(" ")));
    }

    /// Removes exactly one message: `\Deleted` + `UID EXPUNGE` (Dovecot accepts UID EXPUNGE even
    /// where UIDPLUS is not advertised), so other `\Deleted` messages stay.
    pub fn uid_expunge(&mut self, mailbox: &str, uid: u32) {
        self.uid_store(mailbox, uid, "+FLAGS.SILENT", &["\\Deleted"]);
        self.exec(&format!("UID EXPUNGE {uid}"));
    }

    /// `(messages, uidnext, uidvalidity)` from STATUS.
    pub fn status(&mut self, mailbox: &str) -> (u32, u32, u32) {
        let untagged = self.exec(&format!(
            "STATUS {} (MESSAGES UIDNEXT UIDVALIDITY)",
            quote(mailbox)
        ));
        let line = untagged
            .iter()
            .find_map(|u| u.strip_prefix(b"* STATUS "))
            .expect("no STATUS response");
        let items = parse_items(line);
        let attrs = items[1].list();
        let get = |name: &str| -> u32 {
            let pos = attrs
                .iter()
                .position(|i| i.text().eq_ignore_ascii_case(name))
                .expect(name);
            attrs[pos + 1].text().parse().unwrap()
        };
        (get("MESSAGES"), get("UIDNEXT"), get("UIDVALIDITY"))
    }

    /// How long a read waits for the server before the test fails (60 s unless set).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.writer.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn logout(mut self) {
        let _ = self.command("LOGOUT");
    }

    /// LOGOUT, then waits until the server closes the connection: Dovecot closes the socket only
    /// after it has closed the session's mailboxes, so their files may be edited afterwards.
    pub fn logout_and_wait(mut self) {
        let _ = self.command("LOGOUT");
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut self.reader, &mut rest).expect("wait for LOGOUT close");
    }

    /// Sends `cmd` with a fresh tag without waiting for the answer; returns the tag.
    pub fn start(&mut self, cmd: &str) -> String {
        self.send(cmd)
    }

    /// Waits for the continuation request of `tag`'s synchronising literal; `Err` with the
    /// tagged line (without the tag) if the server answered the command instead.
    pub fn continuation(&mut self, tag: &str) -> Result<(), String> {
        loop {
            let resp = self.read_response();
            if resp.starts_with(b"+") {
                return Ok(());
            }
            if let Some(status) = resp.strip_prefix(format!("{tag} ").as_bytes()) {
                return Err(String::from_utf8_lossy(status).trim_end().to_string());
            }
        }
    }

    /// Writes `bytes` as they are (the rest of a command begun with [`RawImap::start`]).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The untagged responses and the tagged line (without the tag) answering `tag`.
    pub fn answer(&mut self, tag: &str) -> (Vec<Vec<u8>>, String) {
        self.collect(tag)
    }

    /// The tagged answer to `tag` (without the tag), or the `* BYE` line that came first.
    pub fn tagged_or_bye(&mut self, tag: &str) -> String {
        let tag_sp = format!("{tag} ");
        loop {
            let resp = self.read_response();
            let text = String::from_utf8_lossy(&resp).trim_end().to_string();
            if text.starts_with("* BYE") {
                return text;
            }
            if let Some(status) = text.strip_prefix(&tag_sp) {
                return status.to_string();
            }
        }
    }

    fn send(&mut self, cmd: &str) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        self.writer
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .unwrap();
        tag
    }

    fn collect(&mut self, tag: &str) -> (Vec<Vec<u8>>, String) {
        let tag_sp = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let resp = self.read_response();
            if let Some(status) = resp.strip_prefix(tag_sp.as_bytes()) {
                return (
                    untagged,
                    String::from_utf8_lossy(status).trim_end().to_string(),
                );
            }
            untagged.push(resp);
        }
    }

    /// Reads one response unit: a line, plus for every `{n}` at a line end, n literal bytes and
    /// the continuation of the line. Returned bytes include the final CRLF.
    fn read_response(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        loop {
            let start = buf.len();
            let n = self
                .reader
                .read_until(b'\n', &mut buf)
                .expect("read from IMAP server");
            assert!(
                n > 0,
                "server closed the connection; got so far: {}",
                String::from_utf8_lossy(&buf)
            );
            match literal_len(&buf[start..]) {
                Some(len) => {
                    let at = buf.len();
                    buf.resize(at + len, 0);
                    std::io::Read::read_exact(&mut self.reader, &mut buf[at..])
                        .expect("read literal");
                }
                None => return buf,
            }
        }
    }
}

/// Quotes a string for IMAP (all our names/passwords are 7-bit; mUTF-7 for mailboxes).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `n` if the line ends with `{n}\r\n` (also matches `~{n}` and `{n+}`).
fn literal_len(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}\r\n")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = body[open + 1..]
        .strip_suffix(b"+")
        .unwrap_or(&body[open + 1..]);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn exists(untagged: &[Vec<u8>]) -> u32 {
    untagged
        .iter()
        .find_map(|u| {
            let text = std::str::from_utf8(u).ok()?;
            text.trim_end()
                .strip_suffix(" EXISTS")?
                .strip_prefix("* ")?
                .parse()
                .ok()
        })
        .expect("no EXISTS in SELECT/EXAMINE response")
}

/// Parses `* <seq> FETCH (...)` into a `Msg`; other responses give `None`.
fn parse_fetch(resp: Vec<u8>) -> Option<Msg> {
    let mut items = parse_items(resp.strip_prefix(b"* ")?);
    drop(resp); // BODY[] is in `items` now; one copy of a big message is enough
    if items.len() < 3 || !items[1].text().eq_ignore_ascii_case("FETCH") {
        return None;
    }
    let Item::List(mut attrs) = items.swap_remove(2) else {
        panic!("FETCH without a list: {items:?}");
    };
    let mut msg = Msg {
        uid: 0,
        flags: BTreeSet::new(),
        internaldate: String::new(),
        body: Vec::new(),
    };
    for pair in attrs.chunks_mut(2) {
        let [name, value] = pair else {
            panic!("odd FETCH attribute list");
        };
        match name.text().to_ascii_uppercase().as_str() {
            "UID" => msg.uid = value.text().parse().unwrap(),
            "FLAGS" => {
                msg.flags = value
                    .list()
                    .iter()
                    .map(Item::text)
                    .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                    .collect()
            }
            "INTERNALDATE" => msg.internaldate = value.text(),
            "BODY[]" => {
                if let Item::Str(bytes) = value {
                    msg.body = std::mem::take(bytes);
                }
            }
            _ => {}
        }
    }
    Some(msg)
}

/// Tokenizes the rest of a response (after `* `) into items; stops at the final CRLF.
pub fn parse_items(input: &[u8]) -> Vec<Item> {
    parse_seq(input, &mut 0, false)
}

fn parse_seq(s: &[u8], pos: &mut usize, in_list: bool) -> Vec<Item> {
    let mut out = Vec::new();
    while *pos < s.len() {
        match s[*pos] {
            b' ' => *pos += 1,
            b'\r' | b'\n' if !in_list => break,
            b'\r' | b'\n' => *pos += 1,
            b')' if in_list => {
                *pos += 1;
                break;
            }
            b'(' => {
                *pos += 1;
                out.push(Item::List(parse_seq(s, pos, true)));
            }
            b'"' => out.push(Item::Str(parse_quoted(s, pos))),
            b'{' | b'~' if literal_at(s, *pos).is_some() => {
                let (len, header_end) = literal_at(s, *pos).unwrap();
                out.push(Item::Str(s[header_end..header_end + len].to_vec()));
                *pos = header_end + len;
            }
            _ => out.push(Item::Atom(parse_atom(s, pos))),
        }
    }
    out
}

fn parse_quoted(s: &[u8], pos: &mut usize) -> Vec<u8> {
    let mut out = Vec::new();
    *pos += 1;
    while s[*pos] != b'"' {
        if s[*pos] == b'\\' {
            *pos += 1;
        }
        out.push(s[*pos]);
        *pos += 1;
    }
    *pos += 1;
    out
}

/// `(length, offset of the first literal byte)` if a literal header `{n}\r\n` / `~{n}\r\n` starts here.
fn literal_at(s: &[u8], pos: usize) -> Option<(usize, usize)> {
    let start = if s[pos] == b'~' { pos + 1 } else { pos };
    if s.get(start) != Some(&b'{') {
        return None;
    }
    let close = start + s[start..].iter().position(|&b| b == b'}')?;
    let len = std::str::from_utf8(&s[start + 1..close])
        .ok()?
        .parse()
        .ok()?;
    (s.get(close + 1..close + 3) == Some(b"\r\n")).then_some((len, close + 3))
}

/// An atom. The section of `BODY[...]`-like items is kept whole, so `BODY[HEADER.FIELDS (A B)]`
/// is one atom; any other bracket is an ordinary atom byte (`a[b` is a valid keyword).
fn parse_atom(s: &[u8], pos: &mut usize) -> String {
    let start = *pos;
    let mut depth = 0;
    while *pos < s.len() {
        match s[*pos] {
            b'[' if depth > 0 || is_section_item(&s[start..*pos]) => depth += 1,
            b']' if depth > 0 => depth -= 1,
            b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
            _ => {}
        }
        *pos += 1;
    }
    atom_text(&s[start..*pos])
}

/// Whether `name` is a FETCH item that takes a `[section]`.
fn is_section_item(name: &[u8]) -> bool {
    [
        &b"BODY"[..],
        b"BODY.PEEK",
        b"BINARY",
        b"BINARY.PEEK",
        b"BINARY.SIZE",
    ]
    .iter()
    .any(|item| name.eq_ignore_ascii_case(item))
}

/// Lossless text of atom bytes: UTF-8 stays as is, each byte that is not valid UTF-8 becomes
/// `\xNN` (so latin-1 `\xe9` and UTF-8 `é` stay different keywords). Keywords cannot hold `\`,
/// so only a system-flag lookalike such as `\xE9` itself could read the same.
pub fn atom_text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}
