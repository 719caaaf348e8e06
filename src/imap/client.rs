//! `Client`: one IMAP connection. Commands are written whole (one buffer, one flush) and can be
//! pipelined: [`Client::send`] returns the tag at once, [`Client::wait`] reads until that tag
//! completes, keeping other tags' completions for later. Extensions are used only when advertised;
//! without them the client falls back (no LITERAL+: synchronising literals; no UIDPLUS: careful
//! EXPUNGE; no MOVE: COPY + delete; no MULTIAPPEND: one APPEND per message).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::reader::{self, Body};
use super::response::{self, Code, Fetch, Response, Status, Untagged};
use super::transport::{ConnectOptions, QuickAck, Security, Stream};
use super::{ImapError, Result, Side, uidset};
use crate::secret::Secret;

/// Longest UID set put on one command line (Dovecot accepts 64 KiB lines; stay well under).
pub const MAX_SET_LEN: usize = 8000;

/// The capabilities a server advertised (upper-cased).
#[derive(Clone, Debug, Default)]
pub struct Capabilities(BTreeSet<String>);

impl Capabilities {
    fn set(&mut self, caps: &[String]) {
        self.0 = caps.iter().map(|c| c.to_ascii_uppercase()).collect();
    }

    pub fn has(&self, cap: &str) -> bool {
        self.0.contains(cap)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// A command's completion: its tagged status line.
#[derive(Debug, Clone)]
pub struct Done {
    pub status: Status,
    pub code: Option<Code>,
    pub text: String,
    /// The whole tagged line as received (for error messages in imapsync's format).
    pub line: String,
}

impl Done {
    /// A CREATE refused with `[ALREADYEXISTS]` (RFC 5530): the mailbox is there.
    pub fn already_exists(&self) -> bool {
        matches!(&self.code, Some(Code::Other(c)) if c.eq_ignore_ascii_case("ALREADYEXISTS"))
    }

    /// NO and BAD become [`ImapError::Refused`].
    pub fn ok(self, side: Side, command: &str) -> Result<Done> {
        match self.status {
            Status::Ok => Ok(self),
            status => Err(ImapError::Refused {
                side,
                command: command.to_string(),
                status: status.as_str(),
                text: self.line,
                code: match self.code {
                    Some(Code::Other(c)) => Some(c),
                    Some(c) => Some(format!("{c:?}").to_ascii_uppercase()),
                    None => None,
                },
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListEntry {
    pub attrs: Vec<String>,
    pub delim: Option<char>,
    pub name: String,
}

impl ListEntry {
    pub fn has_attr(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    /// `\Noselect` or `\NonExistent`: a name in the hierarchy that holds no messages.
    pub fn is_selectable(&self) -> bool {
        !self.has_attr("\\Noselect") && !self.has_attr("\\NonExistent")
    }
}

/// What SELECT/EXAMINE reported.
#[derive(Debug, Clone, Default)]
pub struct MailboxInfo {
    pub exists: u32,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// 0 without CONDSTORE (or with NOMODSEQ).
    pub highestmodseq: u64,
    /// `None` when the server sent no PERMANENTFLAGS, or the mailbox is selected read-only (its
    /// `PERMANENTFLAGS ()` then only says that this view cannot change flags).
    pub permanentflags: Option<Vec<String>>,
    pub readonly: bool,
}

/// What STATUS reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxStatus {
    pub messages: u32,
    pub uidnext: u32,
    pub uidvalidity: u32,
    pub highestmodseq: u64,
}

/// One message for APPEND.
pub struct AppendMsg<'a> {
    pub flags: &'a [String],
    pub internaldate: Option<&'a str>,
    pub body: &'a Body,
}

enum Piece {
    Text(Vec<u8>),
    Literal(Vec<u8>),
}

/// A command line under construction; strings become quoted strings or literals as needed.
struct Cmd(Vec<Piece>);

impl Cmd {
    fn new(s: &str) -> Cmd {
        Cmd(vec![Piece::Text(s.as_bytes().to_vec())])
    }

    fn text(mut self, s: &str) -> Cmd {
        match self.0.last_mut() {
            Some(Piece::Text(t)) => t.extend_from_slice(s.as_bytes()),
            _ => self.0.push(Piece::Text(s.as_bytes().to_vec())),
        }
        self
    }

    /// An astring argument: quoted when it can be, a literal otherwise.
    fn string(self, s: &str) -> Cmd {
        self.bytes(s.as_bytes())
    }

    /// An astring argument of any bytes (an 8-bit password): quoted when it can be, a literal
    /// otherwise, byte for byte.
    fn bytes(mut self, s: &[u8]) -> Cmd {
        if s.iter().all(|b| (0x20..0x7f).contains(b)) {
            let mut q = Vec::with_capacity(s.len() + 2);
            q.push(b'"');
            for &b in s {
                if b == b'"' || b == b'\\' {
                    q.push(b'\\');
                }
                q.push(b);
            }
            q.push(b'"');
            match self.0.last_mut() {
                Some(Piece::Text(t)) => t.extend_from_slice(&q),
                _ => self.0.push(Piece::Text(q)),
            }
            self
        } else {
            self.0.push(Piece::Literal(s.to_vec()));
            self
        }
    }

    /// The command's name, for error messages (never its arguments).
    fn name(&self) -> String {
        match self.0.first() {
            Some(Piece::Text(t)) => {
                let s = String::from_utf8_lossy(t);
                let mut words = s.split(' ');
                match (words.next(), words.next()) {
                    (Some(uid), Some(cmd)) if uid.eq_ignore_ascii_case("UID") => {
                        format!("UID {cmd}")
                    }
                    (Some(cmd), _) => cmd.to_string(),
                    _ => String::new(),
                }
            }
            _ => String::new(),
        }
    }
}

pub struct Client {
    /// Reads are buffered here; writes collect in `wbuf` and leave in one `write_all` per flush.
    io: BufReader<Stream>,
    wbuf: Vec<u8>,
    /// Flushes of `wbuf` to the socket so far (see [`Client::writes`]).
    writes: u64,
    side: Side,
    host: String,
    timeout: Duration,
    next_tag: u32,
    caps: Capabilities,
    greeting: String,
    /// Tagged completions read while waiting for another tag.
    done: HashMap<String, Done>,
    /// Untagged responses read while waiting for a continuation; delivered by the next `wait`.
    stash: Vec<Untagged>,
    /// The mailbox this connection has selected, and whether read-only (EXAMINE).
    selected: Option<(String, bool)>,
    /// The PERMANENTFLAGS the selected mailbox's SELECT answered.
    permanentflags: Option<Vec<String>>,
    /// Every message of the selected mailbox with a UID below this is in the view (its
    /// SELECT's UIDNEXT, raised by [`Client::writable_for`]'s NOOPs).
    covered: u32,
}

impl Client {
    /// Connects, reads the greeting, learns the capabilities and, for `Security::StartTls`, upgrades.
    pub async fn connect(opts: &ConnectOptions, side: Side) -> Result<Client> {
        let connect_err = |source| ImapError::Connect {
            side,
            host: opts.host.clone(),
            port: opts.port,
            source,
        };
        let tcp = match tokio::time::timeout(
            opts.timeout,
            TcpStream::connect((opts.host.as_str(), opts.port)),
        )
        .await
        {
            Err(_) => {
                return Err(connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
            Ok(r) => r.map_err(connect_err)?,
        };
        let tcp = QuickAck::new(tcp).map_err(connect_err)?;
        let stream = match opts.security {
            Security::Tls => Stream::Tls(Box::new(
                tls_handshake(tcp, opts).await.map_err(connect_err)?,
            )),
            Security::Plain | Security::StartTls => Stream::Plain(tcp),
        };
        let mut client = Client {
            io: BufReader::with_capacity(64 * 1024, stream),
            wbuf: Vec::with_capacity(64 * 1024),
            writes: 0,
            side,
            host: opts.host.clone(),
            timeout: opts.timeout,
            next_tag: 1,
            caps: Capabilities::default(),
            greeting: String::new(),
            done: HashMap::new(),
            stash: Vec::new(),
            selected: None,
            permanentflags: None,
            covered: 0,
        };
        match client.read().await? {
            Response::Untagged(Untagged::Status {
                status: Status::Ok | Status::Preauth,
                code,
                text,
            }) => {
                if let Some(Code::Capability(caps)) = code {
                    client.caps.set(&caps);
                }
                client.greeting = text;
            }
            Response::Untagged(Untagged::Status {
                status: Status::Bye,
                text,
                ..
            }) => {
                return Err(ImapError::Closed { side, text });
            }
            other => return Err(client.protocol(format!("unexpected greeting {other:?}"))),
        }
        if client.caps.0.is_empty() {
            client.capability().await?;
        }
        if opts.security == Security::StartTls {
            client = client.starttls(opts).await?;
        }
        Ok(client)
    }

    async fn starttls(mut self, opts: &ConnectOptions) -> Result<Client> {
        let side = self.side;
        let tls_err = |message: String| ImapError::Tls {
            side,
            host: opts.host.clone(),
            message,
        };
        if !self.caps.has("STARTTLS") {
            return Err(tls_err("the server does not offer STARTTLS".into()));
        }
        let done = self.run(Cmd::new("STARTTLS"), |_| {}).await?;
        if done.status != Status::Ok {
            return Err(tls_err(done.line));
        }
        // Nothing may follow the tagged OK before the handshake: such bytes would be injected.
        if !self.io.buffer().is_empty() {
            return Err(tls_err("data received before the TLS handshake".into()));
        }
        let Client {
            io,
            side,
            host,
            timeout,
            next_tag,
            ..
        } = self;
        let Stream::Plain(tcp) = io.into_inner() else {
            return Err(ImapError::Tls {
                side,
                host,
                message: "already using TLS".into(),
            });
        };
        let tls = tls_handshake(tcp, opts).await.map_err(|e| ImapError::Tls {
            side,
            host: host.clone(),
            message: e.to_string(),
        })?;
        let mut client = Client {
            io: BufReader::with_capacity(64 * 1024, Stream::Tls(Box::new(tls))),
            wbuf: Vec::with_capacity(64 * 1024),
            writes: 0,
            side,
            host,
            timeout,
            next_tag,
            caps: Capabilities::default(),
            greeting: String::new(),
            done: HashMap::new(),
            stash: Vec::new(),
            selected: None,
            permanentflags: None,
            covered: 0,
        };
        client.capability().await?;
        Ok(client)
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn has(&self, cap: &str) -> bool {
        self.caps.has(cap)
    }

    /// The text of the server's greeting (imapsync prints it as the banner).
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// How many times this connection has sent what it buffered (a streamed message body
    /// aside): commands pipelined before a read leave together, in one write.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    fn protocol(&self, message: String) -> ImapError {
        ImapError::Protocol {
            side: self.side,
            message,
        }
    }

    /// Reads the next response, sending first the commands [`Client::send`] queued: commands
    /// pipelined before a read leave in one write.
    async fn read(&mut self) -> Result<Response> {
        if !self.wbuf.is_empty() {
            self.flush().await?;
        }
        let Some(parts) = reader::read_response(&mut self.io, self.side, self.timeout).await?
        else {
            return Err(ImapError::Closed {
                side: self.side,
                text: String::new(),
            });
        };
        let first_line = match parts.first() {
            Some(reader::Part::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            _ => String::new(),
        };
        let response =
            response::parse(parts).map_err(|e| self.protocol(format!("{e}: {first_line:.200}")))?;
        if let Response::Untagged(Untagged::Status {
            status: Status::Bye,
            text,
            ..
        }) = &response
        {
            tracing::debug!(side = %self.side, %text, "server said BYE");
        }
        Ok(response)
    }

    fn tag(&mut self) -> String {
        let tag = format!(
            "{}{}",
            if self.side == Side::Old { 'a' } else { 'b' },
            self.next_tag
        );
        self.next_tag += 1;
        tag
    }

    /// Queues bytes; they leave at the next [`Client::flush`] (or when the buffer is large).
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.wbuf.extend_from_slice(bytes);
        if self.wbuf.len() >= 256 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let side = self.side;
        let buf = std::mem::take(&mut self.wbuf);
        self.writes += 1;
        let stream = self.io.get_mut();
        let write = async {
            stream.write_all(&buf).await?;
            stream.flush().await
        };
        let result = match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(ImapError::Timeout {
                side,
                what: "a write".into(),
                secs: self.timeout.as_secs(),
            }),
            Ok(r) => r.map_err(|source| ImapError::Io { side, source }),
        };
        self.wbuf = buf;
        self.wbuf.clear();
        result
    }

    /// Writes a literal announcement and, for a synchronising literal, waits for the go-ahead.
    /// `false`: the server answered the command `tag` instead (its completion is kept for
    /// [`Client::wait`]); the caller MUST NOT write the literal or the rest of the command.
    async fn literal_start(&mut self, len: u64, tag: &str) -> Result<bool> {
        if self.caps.has("LITERAL+") {
            self.write(format!("{{{len}+}}\r\n").as_bytes()).await?;
            Ok(true)
        } else {
            self.write(format!("{{{len}}}\r\n").as_bytes()).await?;
            self.flush().await?;
            self.wait_continuation(tag).await
        }
    }

    /// Reads until the go-ahead for a literal of command `tag` (`true`), or until `tag` is
    /// answered instead (`false`). Completions of earlier pipelined commands are kept for `wait`.
    async fn wait_continuation(&mut self, tag: &str) -> Result<bool> {
        loop {
            match self.read().await? {
                Response::Continue(_) => return Ok(true),
                Response::Untagged(u) => self.stash.push(u),
                Response::Tagged {
                    tag: t,
                    status,
                    code,
                    text,
                } => {
                    let line = format!("{t} {} {}{text}", status.as_str(), code_text(&code));
                    let ours = t == tag;
                    self.done.insert(
                        t,
                        Done {
                            status,
                            code,
                            text,
                            line,
                        },
                    );
                    if ours {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Queues a command without waiting for its completion; returns its tag. It leaves with
    /// the next read (or a literal's announcement that waits for the go-ahead).
    async fn send(&mut self, cmd: Cmd) -> Result<String> {
        let tag = self.tag();
        self.write(tag.as_bytes()).await?;
        self.write(b" ").await?;
        for piece in cmd.0 {
            match piece {
                Piece::Text(t) => self.write(&t).await?,
                Piece::Literal(l) => {
                    if !self.literal_start(l.len() as u64, &tag).await? {
                        return Ok(tag); // answered already: `wait` returns the refusal
                    }
                    self.write(&l).await?;
                }
            }
        }
        self.write(b"\r\n").await?;
        Ok(tag)
    }

    /// Queues a raw command line (no literals) without waiting; returns its tag. For pipelining.
    pub async fn send_line(&mut self, line: &str) -> Result<String> {
        self.send(Cmd::new(line)).await
    }

    /// Reads until `tag` completes; untagged responses go to `on_untagged`.
    pub async fn wait(&mut self, tag: &str, mut on_untagged: impl FnMut(Untagged)) -> Result<Done> {
        for u in std::mem::take(&mut self.stash) {
            on_untagged(u);
        }
        loop {
            if let Some(done) = self.done.remove(tag) {
                return Ok(done);
            }
            match self.read().await? {
                Response::Untagged(Untagged::Status {
                    status: Status::Bye,
                    text,
                    ..
                }) => {
                    return Err(ImapError::Closed {
                        side: self.side,
                        text,
                    });
                }
                Response::Untagged(Untagged::Capability(caps)) => {
                    self.caps.set(&caps);
                    on_untagged(Untagged::Capability(caps));
                }
                Response::Untagged(u) => on_untagged(u),
                Response::Continue(_) => {
                    return Err(self.protocol("unexpected continuation request".into()));
                }
                Response::Tagged {
                    tag: t,
                    status,
                    code,
                    text,
                } => {
                    if let (Status::Ok, Some(Code::Capability(caps))) = (status, &code) {
                        self.caps.set(caps);
                    }
                    let line = format!("{t} {} {}{text}", status.as_str(), code_text(&code));
                    self.done.insert(
                        t,
                        Done {
                            status,
                            code,
                            text,
                            line,
                        },
                    );
                }
            }
        }
    }

    async fn run(&mut self, cmd: Cmd, on_untagged: impl FnMut(Untagged)) -> Result<Done> {
        let tag = self.send(cmd).await?;
        self.wait(&tag, on_untagged).await
    }

    /// Runs a command; NO/BAD become errors.
    async fn run_ok(&mut self, cmd: Cmd, on_untagged: impl FnMut(Untagged)) -> Result<Done> {
        let name = cmd.name();
        let done = self.run(cmd, on_untagged).await?;
        done.ok(self.side, &name)
    }

    /// Runs a raw command line (no literals) and collects its untagged responses.
    pub async fn command(&mut self, line: &str) -> Result<(Vec<Untagged>, Done)> {
        let mut out = Vec::new();
        let done = self.run(Cmd::new(line), |u| out.push(u)).await?;
        Ok((out, done))
    }

    pub async fn capability(&mut self) -> Result<()> {
        self.run_ok(Cmd::new("CAPABILITY"), |_| {})
            .await
            .map(|_| ())
    }

    /// Leaves the selected mailbox without expunging: UNSELECT, or without the capability, a
    /// read-write mailbox is EXAMINEd instead (CLOSE would expunge). Appending to a mailbox that
    /// is not selected read-write spares the server from updating a view, and gives the new
    /// messages' `\Recent` to the user's session, not to this one.
    pub async fn unselect(&mut self) -> Result<()> {
        let Some((mailbox, readonly)) = self.selected.clone() else {
            return Ok(());
        };
        if self.caps.has("UNSELECT") {
            self.run_ok(Cmd::new("UNSELECT"), |_| {}).await?;
            self.selected = None;
        } else if !readonly {
            self.select_with(&mailbox, true, false).await?;
        }
        Ok(())
    }

    /// Leaves `mailbox` (or a mailbox below it) before it is deleted or renamed: Dovecot ends a
    /// session whose selected mailbox disappears ("Selected mailbox was deleted, have to
    /// disconnect"). UNSELECT, else INBOX is EXAMINEd (CLOSE would expunge).
    async fn leave(&mut self, mailbox: &str) -> Result<()> {
        if !self
            .selected
            .as_ref()
            .is_some_and(|(selected, _)| selected.starts_with(mailbox))
        {
            return Ok(());
        }
        if self.caps.has("UNSELECT") {
            self.run_ok(Cmd::new("UNSELECT"), |_| {}).await?;
            self.selected = None;
            Ok(())
        } else {
            self.select_with("INBOX", true, false).await.map(|_| ())
        }
    }

    /// Makes sure `mailbox` is selected read-write (for STORE and EXPUNGE), selecting it if it is
    /// not, or only read-only.
    pub async fn writable(&mut self, mailbox: &str, condstore: bool) -> Result<()> {
        if self
            .selected
            .as_ref()
            .is_some_and(|(m, readonly)| m == mailbox && !readonly)
        {
            return Ok(());
        }
        self.select_with(mailbox, false, condstore)
            .await
            .map(|_| ())
    }

    /// Leaves a mailbox selected read-only: UNSELECT, or CLOSE (which expunges nothing in a
    /// read-only mailbox, RFC 3501 §6.4.2) where UNSELECT is missing.
    async fn leave_readonly(&mut self) -> Result<()> {
        let verb = if self.caps.has("UNSELECT") {
            "UNSELECT"
        } else {
            "CLOSE"
        };
        self.run_ok(Cmd::new(verb), |_| {}).await?;
        self.selected = None;
        Ok(())
    }

    pub async fn noop(&mut self) -> Result<()> {
        self.run_ok(Cmd::new("NOOP"), |_| {}).await.map(|_| ())
    }

    /// Starts IDLE (RFC 2177) on the selected mailbox and waits for the server's go-ahead.
    /// Returns the command's tag (for [`Client::idle_done`]) and the untagged responses sent
    /// before the go-ahead. A refusal is an error.
    pub async fn idle(&mut self) -> Result<(String, Vec<Untagged>)> {
        let tag = self.send(Cmd::new("IDLE")).await?;
        let mut before = Vec::new();
        loop {
            match self.read().await? {
                Response::Continue(_) => return Ok((tag, before)),
                Response::Untagged(Untagged::Status {
                    status: Status::Bye,
                    text,
                    ..
                }) => {
                    return Err(ImapError::Closed {
                        side: self.side,
                        text,
                    });
                }
                Response::Untagged(u) => before.push(u),
                Response::Tagged {
                    tag: t,
                    status,
                    code,
                    text,
                } => {
                    let line = format!("{t} {} {}{text}", status.as_str(), code_text(&code));
                    let done = Done {
                        status,
                        code,
                        text,
                        line,
                    };
                    if t == tag {
                        done.ok(self.side, "IDLE")?;
                        return Err(self.protocol("IDLE completed without a go-ahead".into()));
                    }
                    self.done.insert(t, done);
                }
            }
        }
    }

    /// While IDLEing: waits until the server sends something (`true`) or `until` passes
    /// (`false`). Nothing is consumed, so the wait can be abandoned (in a `select!`) at any
    /// point; read what came with [`Client::idle_response`].
    pub async fn idle_readable(&mut self, until: tokio::time::Instant) -> Result<bool> {
        use tokio::io::AsyncBufReadExt;
        if !self.wbuf.is_empty() {
            self.flush().await?;
        }
        let side = self.side;
        match tokio::time::timeout_at(until, self.io.fill_buf()).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(source)) => Err(ImapError::Io { side, source }),
        }
    }

    /// While IDLEing: the next response, which must be untagged (`* BYE` is an error, as is the
    /// server ending the IDLE by itself).
    pub async fn idle_response(&mut self) -> Result<Untagged> {
        match self.read().await? {
            Response::Untagged(Untagged::Status {
                status: Status::Bye,
                text,
                ..
            }) => Err(ImapError::Closed {
                side: self.side,
                text,
            }),
            Response::Untagged(u) => Ok(u),
            Response::Continue(_) => Err(self.protocol("continuation request in IDLE".into())),
            Response::Tagged { status, text, .. } => {
                Err(self.protocol(format!("the server ended IDLE: {} {text}", status.as_str())))
            }
        }
    }

    /// Ends IDLE (DONE) and waits for its completion; returns the untagged responses sent
    /// meanwhile.
    pub async fn idle_done(&mut self, tag: &str) -> Result<Vec<Untagged>> {
        self.write(b"DONE\r\n").await?;
        self.flush().await?;
        let mut after = Vec::new();
        self.wait(tag, |u| after.push(u))
            .await?
            .ok(self.side, "IDLE")?;
        Ok(after)
    }

    /// LOGIN. Refused unless the server allows it (LOGINDISABLED).
    pub async fn login(&mut self, user: &str, password: &Secret) -> Result<()> {
        let cmd = Cmd::new("LOGIN ")
            .string(user)
            .text(" ")
            .bytes(password.expose_bytes());
        self.authenticate_with(cmd, user, "LOGIN").await
    }

    /// AUTHENTICATE PLAIN, with SASL-IR when offered. `authzid` is the user to act as when
    /// `authcid` is a master/admin login (imapsync's --authuser).
    pub async fn authenticate_plain(
        &mut self,
        authzid: Option<&str>,
        authcid: &str,
        password: &Secret,
    ) -> Result<()> {
        let token = plain_token(authzid, authcid, password);
        let user = authzid.unwrap_or(authcid).to_string();
        if self.caps.has("SASL-IR") {
            let cmd = Cmd::new("AUTHENTICATE PLAIN ").text(&token);
            return self.authenticate_with(cmd, &user, "PLAIN").await;
        }
        let tag = self.send(Cmd::new("AUTHENTICATE PLAIN")).await?;
        loop {
            match self.read().await? {
                Response::Continue(_) => break,
                Response::Untagged(u) => self.stash.push(u),
                Response::Tagged {
                    status, text, code, ..
                } => {
                    return Err(self.login_error(
                        &user,
                        "PLAIN",
                        format!("{tag} {} {}{text}", status.as_str(), code_text(&code)),
                    ));
                }
            }
        }
        self.write(token.as_bytes()).await?;
        self.write(b"\r\n").await?;
        self.flush().await?;
        let done = self.wait(&tag, |_| {}).await?;
        self.finish_login(done, &user, "PLAIN").await
    }

    async fn authenticate_with(&mut self, cmd: Cmd, user: &str, mech: &'static str) -> Result<()> {
        let done = match self.run(cmd, |_| {}).await {
            Err(ImapError::Refused { text, .. }) => return Err(self.login_error(user, mech, text)),
            other => other?,
        };
        self.finish_login(done, user, mech).await
    }

    async fn finish_login(&mut self, done: Done, user: &str, mech: &'static str) -> Result<()> {
        if done.status != Status::Ok {
            return Err(self.login_error(user, mech, done.line));
        }
        if !matches!(done.code, Some(Code::Capability(_))) {
            self.capability().await?;
        }
        Ok(())
    }

    fn login_error(&self, user: &str, mech: &'static str, text: String) -> ImapError {
        ImapError::Login {
            side: self.side,
            host: self.host.clone(),
            user: user.to_string(),
            mech,
            text,
        }
    }

    /// ENABLE the given extensions if the server has ENABLE; returns those enabled.
    pub async fn enable(&mut self, exts: &[&str]) -> Result<Vec<String>> {
        if !self.caps.has("ENABLE") || exts.is_empty() {
            return Ok(Vec::new());
        }
        let mut enabled = Vec::new();
        self.run_ok(Cmd::new(&format!("ENABLE {}", exts.join(" "))), |u| {
            if let Untagged::Enabled(e) = u {
                enabled.extend(e);
            }
        })
        .await?;
        Ok(enabled)
    }

    /// LIST "" "*", LSUB "" "*" and (when offered) NAMESPACE, pipelined: the folder tree, the
    /// subscribed names and the first personal namespace (prefix, separator).
    pub async fn tree(
        &mut self,
    ) -> Result<(Vec<ListEntry>, Vec<String>, Option<(String, Option<char>)>)> {
        let mut tags = vec![
            self.send(Cmd::new(self.list_command())).await?,
            self.send(Cmd::new("LSUB \"\" \"*\"")).await?,
        ];
        if self.caps.has("NAMESPACE") {
            tags.push(self.send(Cmd::new("NAMESPACE")).await?);
        }
        let (mut list, mut lsub, mut ns) = (Vec::new(), Vec::new(), None);
        for tag in tags {
            let done = self
                .wait(&tag, |u| match u {
                    Untagged::List { attrs, delim, name } => {
                        list.push(ListEntry { attrs, delim, name })
                    }
                    Untagged::Lsub { attrs, name, .. } if !implied(&attrs) => lsub.push(name),
                    Untagged::Namespace(n) => ns = n.into_iter().next(),
                    _ => {}
                })
                .await?;
            done.ok(self.side, "LIST")?;
        }
        Ok((list, lsub, ns))
    }

    /// Runs `VERB "mailbox"` (e.g. CREATE, SUBSCRIBE) for every name, pipelined; one completion
    /// per name, in order (NO/BAD are returned, not raised).
    pub async fn for_each_mailbox(&mut self, verb: &str, names: &[String]) -> Result<Vec<Done>> {
        let mut tags = Vec::with_capacity(names.len());
        for name in names {
            tags.push(self.send(Cmd::new(verb).text(" ").string(name)).await?);
        }
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            out.push(self.wait(&tag, |_| {}).await?);
        }
        Ok(out)
    }

    /// The first personal namespace (prefix, separator), if the server has NAMESPACE.
    pub async fn namespace(&mut self) -> Result<Option<(String, Option<char>)>> {
        if !self.caps.has("NAMESPACE") {
            return Ok(None);
        }
        let mut personal = None;
        self.run_ok(Cmd::new("NAMESPACE"), |u| {
            if let Untagged::Namespace(ns) = u {
                personal = ns.into_iter().next();
            }
        })
        .await?;
        Ok(personal)
    }

    /// `LIST "" "*"`, asking for special-use attributes (RFC 6154) where the server can return them.
    fn list_command(&self) -> &'static str {
        if self.caps.has("SPECIAL-USE") && self.caps.has("LIST-EXTENDED") {
            "LIST \"\" \"*\" RETURN (SPECIAL-USE)"
        } else {
            "LIST \"\" \"*\""
        }
    }

    /// LIST "" "*" (special-use attributes included where the server reports them).
    pub async fn list(&mut self) -> Result<Vec<ListEntry>> {
        let mut out = Vec::new();
        self.run_ok(Cmd::new(self.list_command()), |u| {
            if let Untagged::List { attrs, delim, name } = u {
                out.push(ListEntry { attrs, delim, name });
            }
        })
        .await?;
        Ok(out)
    }

    /// LSUB "" "*": the subscribed names.
    pub async fn lsub(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.run_ok(Cmd::new("LSUB \"\" \"*\""), |u| {
            if let Untagged::Lsub { attrs, name, .. } = u
                && !implied(&attrs)
            {
                out.push(name);
            }
        })
        .await?;
        Ok(out)
    }

    /// SELECT (or EXAMINE when `readonly`), with CONDSTORE when the server offers it.
    pub async fn select(&mut self, mailbox: &str, readonly: bool) -> Result<MailboxInfo> {
        self.select_with(mailbox, readonly, true).await
    }

    /// SELECT/EXAMINE, asking for CONDSTORE only when `condstore` (and offered). Enabling CONDSTORE
    /// makes Dovecot track modification sequences for the mailbox from then on, which costs CPU
    /// on every later APPEND: a mailbox about to be filled is better opened without it.
    pub async fn select_with(
        &mut self,
        mailbox: &str,
        readonly: bool,
        condstore: bool,
    ) -> Result<MailboxInfo> {
        let tag = self.send_select(mailbox, readonly, condstore).await?;
        self.wait_select(&tag, mailbox, readonly).await
    }

    /// Sends SELECT/EXAMINE (see [`Client::select_with`]) without waiting, so that commands on the
    /// mailbox can follow it at once; [`Client::wait_select`] reads its answer. A command sent
    /// behind a SELECT that fails is refused too (nothing is selected).
    pub async fn send_select(
        &mut self,
        mailbox: &str,
        readonly: bool,
        condstore: bool,
    ) -> Result<String> {
        let verb = if readonly { "EXAMINE " } else { "SELECT " };
        let mut cmd = Cmd::new(verb).string(mailbox);
        if condstore && self.caps.has("CONDSTORE") {
            cmd = cmd.text(" (CONDSTORE)");
        }
        // A failed SELECT leaves nothing selected (RFC 9051 §6.3.2).
        self.selected = None;
        self.send(cmd).await
    }

    /// The answer to [`Client::send_select`]'s command `tag`.
    pub async fn wait_select(
        &mut self,
        tag: &str,
        mailbox: &str,
        readonly: bool,
    ) -> Result<MailboxInfo> {
        let mut info = MailboxInfo {
            readonly,
            ..MailboxInfo::default()
        };
        let apply = |code: &Option<Code>, info: &mut MailboxInfo| match code {
            Some(Code::UidValidity(v)) => info.uidvalidity = *v,
            Some(Code::UidNext(v)) => info.uidnext = *v,
            Some(Code::HighestModSeq(v)) => info.highestmodseq = *v,
            Some(Code::PermanentFlags(f)) => info.permanentflags = Some(f.clone()),
            Some(Code::ReadOnly) => info.readonly = true,
            _ => {}
        };
        let verb = if readonly { "EXAMINE" } else { "SELECT" };
        let done = self
            .wait(tag, |u| match u {
                Untagged::Exists(n) => info.exists = n,
                Untagged::Status { code, .. } => apply(&code, &mut info),
                _ => {}
            })
            .await?
            .ok(self.side, verb)?;
        apply(&done.code, &mut info);
        if info.readonly {
            // A read-only view answers `PERMANENTFLAGS ()` (nothing can be changed through it):
            // it says nothing about what the mailbox stores.
            info.permanentflags = None;
        }
        self.selected = Some((mailbox.to_string(), info.readonly));
        self.permanentflags = info.permanentflags.clone();
        self.covered = info.uidnext;
        Ok(info)
    }

    /// Whether this connection has `mailbox` selected (read-only or not).
    pub fn has_selected(&self, mailbox: &str) -> bool {
        self.selected.as_ref().is_some_and(|(m, _)| m == mailbox)
    }

    /// `mailbox` selected read-write with the messages `uids` in the view, and its
    /// PERMANENTFLAGS (see [`Client::writable_for`]).
    pub async fn writable_flags(
        &mut self,
        mailbox: &str,
        uids: &[u32],
    ) -> Result<Option<Vec<String>>> {
        self.writable_for(mailbox, uids).await?;
        Ok(self.permanentflags.clone())
    }

    /// `mailbox` selected read-write with the messages `uids` (UIDs the server gave before
    /// this call) in the view: a SELECT, unless this connection has it selected read-write
    /// already. Then a NOOP brings messages other connections added since into the view, if
    /// some of `uids` may be one: not when all are below the view's bound, as UIDs only grow
    /// (a message below it was in the mailbox when the view was last brought up to date, or
    /// is gone). After the NOOP the bound is above `uids`, for the same reason.
    pub async fn writable_for(&mut self, mailbox: &str, uids: &[u32]) -> Result<()> {
        let highest = uids.iter().copied().max().unwrap_or(0);
        let selected = self.selected.as_ref();
        if !selected.is_some_and(|(m, readonly)| m == mailbox && !readonly) {
            return self.select(mailbox, false).await.map(|_| ());
        }
        if highest < self.covered {
            return Ok(());
        }
        self.noop().await?;
        self.covered = highest.saturating_add(1);
        Ok(())
    }

    /// `mailbox` selected read-write with an up-to-date view (messages other connections added
    /// are seen by UID commands), as [`Client::writable_flags`].
    pub async fn writable_now(&mut self, mailbox: &str) -> Result<()> {
        if self
            .selected
            .as_ref()
            .is_some_and(|(m, readonly)| m == mailbox && !readonly)
        {
            return self.noop().await;
        }
        self.select(mailbox, false).await.map(|_| ())
    }

    /// STATUS for many mailboxes, pipelined: all commands are written, then all answers read.
    /// The result has one entry per name, in order.
    pub async fn status_many(&mut self, names: &[String]) -> Result<Vec<Result<MailboxStatus>>> {
        // STATUS of the selected mailbox answers from the session's view, which Dovecot does not
        // refresh by itself (RFC 3501 §6.3.10 advises against it): mail that arrived since the
        // SELECT would go unseen. A NOOP brings the view up to date first.
        if self
            .selected
            .as_ref()
            .is_some_and(|(selected, _)| names.contains(selected))
        {
            self.noop().await?;
        }
        let items = if self.caps.has("CONDSTORE") {
            " (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
        } else {
            " (MESSAGES UIDNEXT UIDVALIDITY)"
        };
        let mut tags = Vec::with_capacity(names.len());
        for name in names {
            tags.push(
                self.send(Cmd::new("STATUS ").string(name).text(items))
                    .await?,
            );
        }
        let mut found: HashMap<String, MailboxStatus> = HashMap::new();
        let mut out = Vec::with_capacity(names.len());
        for (name, tag) in names.iter().zip(&tags) {
            let done = self
                .wait(tag, |u| {
                    if let Untagged::MailboxStatus { name, items } = u {
                        let mut s = MailboxStatus::default();
                        for (k, v) in items {
                            match k.as_str() {
                                "MESSAGES" => s.messages = v as u32,
                                "UIDNEXT" => s.uidnext = v as u32,
                                "UIDVALIDITY" => s.uidvalidity = v as u32,
                                "HIGHESTMODSEQ" => s.highestmodseq = v,
                                _ => {}
                            }
                        }
                        found.insert(name, s);
                    }
                })
                .await?;
            out.push(match done.ok(self.side, "STATUS") {
                Ok(_) => found
                    .remove(name)
                    .ok_or_else(|| self.protocol(format!("no STATUS data for {name}"))),
                Err(e) => Err(e),
            });
        }
        Ok(out)
    }

    pub async fn status(&mut self, name: &str) -> Result<MailboxStatus> {
        let mut all = self.status_many(&[name.to_string()]).await?;
        all.pop()
            .unwrap_or_else(|| Err(self.protocol("no STATUS answer".into())))
    }

    /// UID SEARCH with raw criteria (e.g. `ALL`, `DELETED`, `SENTSINCE 1-Jan-2024`).
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.run_ok(Cmd::new(&format!("UID SEARCH {criteria}")), |u| {
            if let Untagged::Search(uids) = u {
                out.extend(uids);
            }
        })
        .await?;
        out.sort_unstable();
        Ok(out)
    }

    /// Sends `UID FETCH set (items) modifiers` without waiting; pair with [`Client::wait_fetch`].
    pub async fn send_uid_fetch(
        &mut self,
        set: &str,
        items: &str,
        modifiers: &str,
    ) -> Result<String> {
        let line = if modifiers.is_empty() {
            format!("UID FETCH {set} ({items})")
        } else {
            format!("UID FETCH {set} ({items}) ({modifiers})")
        };
        self.send(Cmd::new(&line)).await
    }

    /// Reads a pipelined FETCH to completion, handing each FETCH response to `on_fetch`.
    pub async fn wait_fetch(&mut self, tag: &str, mut on_fetch: impl FnMut(Fetch)) -> Result<()> {
        let done = self
            .wait(tag, |u| {
                if let Untagged::Fetch(f) = u {
                    on_fetch(f);
                }
            })
            .await?;
        done.ok(self.side, "UID FETCH").map(|_| ())
    }

    /// UID FETCH over any number of UIDs (split into short sets, pipelined).
    pub async fn uid_fetch(
        &mut self,
        uids: &[u32],
        items: &str,
        modifiers: &str,
        mut on_fetch: impl FnMut(Fetch),
    ) -> Result<()> {
        let mut tags = Vec::new();
        for set in uidset::chunks(uids, MAX_SET_LEN) {
            tags.push(self.send_uid_fetch(&set, items, modifiers).await?);
        }
        for tag in tags {
            self.wait_fetch(&tag, &mut on_fetch).await?;
        }
        Ok(())
    }

    /// EXAMINE `mailbox` and UID FETCH `uids` there, in one round trip: what a connection
    /// reads of a mailbox as it is now (messages other connections added or changed since it
    /// last looked included).
    pub async fn examine_and_fetch(
        &mut self,
        mailbox: &str,
        uids: &[u32],
        items: &str,
        mut on_fetch: impl FnMut(Fetch),
    ) -> Result<()> {
        let examine = self.send_select(mailbox, true, true).await?;
        let mut tags = Vec::new();
        for set in uidset::chunks(uids, MAX_SET_LEN) {
            tags.push(self.send_uid_fetch(&set, items, "").await?);
        }
        // A FETCH behind a SELECT runs after it: no server runs either beside the other.
        self.wait_select(&examine, mailbox, true).await?;
        for tag in tags {
            self.wait_fetch(&tag, &mut on_fetch).await?;
        }
        Ok(())
    }

    /// Starts an APPEND of one or more messages to `mailbox` (several only with MULTIAPPEND).
    /// Literals are streamed from memory or from the spool file; the bytes are never altered.
    /// Returns the tag; [`Client::wait`] it for APPENDUID, or for the refusal of a server that
    /// answered instead of accepting a synchronising literal.
    pub async fn send_append(&mut self, mailbox: &str, msgs: &[AppendMsg<'_>]) -> Result<String> {
        if msgs.len() > 1 && !self.caps.has("MULTIAPPEND") {
            return Err(
                self.protocol("MULTIAPPEND of several messages without the capability".into())
            );
        }
        // Courier refuses an APPEND to the mailbox its connection has EXAMINEd ("NO Current box
        // is selected READ-ONLY"): leave it first.
        if self
            .selected
            .as_ref()
            .is_some_and(|(name, readonly)| *readonly && name == mailbox)
        {
            self.leave_readonly().await?;
        }
        let tag = self.tag();
        let mut head = Cmd::new(&format!("{tag} APPEND ")).string(mailbox);
        for msg in msgs {
            let mut piece = String::from(" (");
            piece.push_str(&msg.flags.join(" "));
            piece.push(')');
            if let Some(date) = msg.internaldate {
                piece.push_str(" \"");
                piece.push_str(date);
                piece.push('"');
            }
            piece.push(' ');
            head = head.text(&piece);
            // The mailbox name may itself be a literal; write what we have so far.
            for p in std::mem::take(&mut head.0) {
                match p {
                    Piece::Text(t) => self.write(&t).await?,
                    Piece::Literal(l) => {
                        if !self.literal_start(l.len() as u64, &tag).await? {
                            return Ok(tag);
                        }
                        self.write(&l).await?;
                    }
                }
            }
            // Refused before its literal (no LITERAL+): `wait` returns the refusal.
            if !self.literal_start(msg.body.len(), &tag).await? {
                return Ok(tag);
            }
            match msg.body {
                // Small bodies join the command's buffer; large ones go straight to the socket
                // (from memory or streamed from the spool file) instead of being copied again.
                Body::Mem(bytes) if bytes.len() <= 64 * 1024 => self.write(bytes).await?,
                _ => {
                    self.flush().await?;
                    let side = self.side;
                    let limit = self.timeout.max(Duration::from_secs(1)) * 10;
                    match tokio::time::timeout(limit, msg.body.write_to(self.io.get_mut())).await {
                        Err(_) => {
                            return Err(ImapError::Timeout {
                                side,
                                what: "writing a message".into(),
                                secs: limit.as_secs(),
                            });
                        }
                        Ok(r) => r.map_err(|source| ImapError::Io { side, source })?,
                    }
                }
            }
        }
        self.write(b"\r\n").await?;
        self.flush().await?;
        Ok(tag)
    }

    /// UID STORE over any number of UIDs, e.g. `op` = `+FLAGS.SILENT`.
    pub async fn uid_store(&mut self, uids: &[u32], op: &str, flags: &[String]) -> Result<()> {
        self.uid_stores(&[(uids.to_vec(), op, flags.to_vec())])
            .await
    }

    /// Several [`Client::uid_store`]s `(uids, op, flags)`, sent together and applied in order.
    pub async fn uid_stores(&mut self, stores: &[(Vec<u32>, &str, Vec<String>)]) -> Result<()> {
        let mut tags = Vec::new();
        for (uids, op, flags) in stores {
            for set in uidset::chunks(uids, MAX_SET_LEN) {
                let line = format!("UID STORE {set} {op} ({})", flags.join(" "));
                tags.push(self.send(Cmd::new(&line)).await?);
            }
        }
        for tag in tags {
            self.wait(&tag, |_| {}).await?.ok(self.side, "UID STORE")?;
        }
        Ok(())
    }

    /// Applies grouped flag changes to the selected mailbox: each `(uids, add, remove)` becomes
    /// `+FLAGS.SILENT` and `-FLAGS.SILENT` STOREs of its non-empty lists.
    pub async fn store_flags(
        &mut self,
        groups: impl IntoIterator<Item = (Vec<u32>, Vec<String>, Vec<String>)>,
    ) -> Result<()> {
        for (uids, add, remove) in groups {
            if !add.is_empty() {
                self.uid_store(&uids, "+FLAGS.SILENT", &add).await?;
            }
            if !remove.is_empty() {
                self.uid_store(&uids, "-FLAGS.SILENT", &remove).await?;
            }
        }
        Ok(())
    }

    /// Gives messages of the selected mailbox their whole target flags (`(uids, FLAGS list)`),
    /// each STORE conditional on the message being unchanged since `modseq` (see
    /// [`Client::uid_stores_unchanged_since`]).
    pub async fn store_unchanged_since(
        &mut self,
        modseq: u64,
        targets: impl IntoIterator<Item = (Vec<u32>, Vec<String>)>,
    ) -> Result<(HashMap<u32, u64>, BTreeSet<u32>)> {
        let stores: Vec<_> = targets
            .into_iter()
            .map(|(uids, flags)| (uids, "FLAGS", flags, modseq))
            .collect();
        self.uid_stores_unchanged_since(&stores).await
    }

    /// Several `(uids, item, flags, modseq)` STOREs of distinct messages, sent together, each
    /// conditional on its messages being unchanged since its `modseq` (RFC 7162
    /// `UNCHANGEDSINCE`; CONDSTORE must be in use). Returns the modseq each stored message got
    /// (as the server reported it), and the UIDs left alone because they changed since.
    pub async fn uid_stores_unchanged_since(
        &mut self,
        stores: &[(Vec<u32>, &str, Vec<String>, u64)],
    ) -> Result<(HashMap<u32, u64>, BTreeSet<u32>)> {
        let mut tags = Vec::new();
        for (uids, item, flags, modseq) in stores {
            for set in uidset::chunks(uids, MAX_SET_LEN) {
                let line = format!(
                    "UID STORE {set} (UNCHANGEDSINCE {modseq}) {item} ({})",
                    flags.join(" ")
                );
                tags.push(self.send(Cmd::new(&line)).await?);
            }
        }
        // The STOREs name distinct messages. The server may run them in any order, and each
        // reports its messages before it ends; the first FETCH of a message is its STORE's (one
        // after it reports another session's change, as any FETCH of another message does).
        let asked: HashSet<u32> = stores.iter().flat_map(|s| s.0.iter().copied()).collect();
        let (mut stored, mut modified) = (HashMap::new(), BTreeSet::new());
        for tag in tags {
            let done = self
                .wait(&tag, |u| {
                    if let Untagged::Fetch(f) = u
                        && let Some(uid) = f.uid.filter(|u| asked.contains(u))
                    {
                        stored.entry(uid).or_insert(f.modseq.unwrap_or(0));
                    }
                })
                .await?
                .ok(self.side, "UID STORE")?;
            if let Some(Code::Modified(uids)) = done.code {
                modified.extend(uids);
            }
        }
        stored.retain(|uid, _| !modified.contains(uid));
        Ok((stored, modified))
    }

    /// Expunges exactly these UIDs of the selected mailbox. Without UIDPLUS, other messages
    /// already marked `\Deleted` are unmarked for the EXPUNGE and marked again after it.
    pub async fn uid_expunge(&mut self, uids: &[u32]) -> Result<()> {
        if uids.is_empty() {
            return Ok(());
        }
        let deleted = vec!["\\Deleted".to_string()];
        self.uid_store(uids, "+FLAGS.SILENT", &deleted).await?;
        if self.caps.has("UIDPLUS") {
            for set in uidset::chunks(uids, MAX_SET_LEN) {
                self.run_ok(Cmd::new(&format!("UID EXPUNGE {set}")), |_| {})
                    .await?;
            }
            return Ok(());
        }
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        let others: Vec<u32> = self
            .uid_search("DELETED")
            .await?
            .into_iter()
            .filter(|u| !wanted.contains(u))
            .collect();
        self.uid_store(&others, "-FLAGS.SILENT", &deleted).await?;
        let result = self.run_ok(Cmd::new("EXPUNGE"), |_| {}).await;
        self.uid_store(&others, "+FLAGS.SILENT", &deleted).await?;
        result.map(|_| ())
    }

    /// UID COPY; returns the (source, destination) UID pairs when the server reports COPYUID.
    pub async fn uid_copy(&mut self, uids: &[u32], dest: &str) -> Result<Vec<(u32, u32)>> {
        self.copy_or_move("COPY", uids, dest).await
    }

    /// UID MOVE, or COPY + expunge of the sources without MOVE.
    pub async fn uid_move(&mut self, uids: &[u32], dest: &str) -> Result<Vec<(u32, u32)>> {
        if self.caps.has("MOVE") {
            return self.copy_or_move("MOVE", uids, dest).await;
        }
        let pairs = self.copy_or_move("COPY", uids, dest).await?;
        self.uid_expunge(uids).await?;
        Ok(pairs)
    }

    async fn copy_or_move(
        &mut self,
        verb: &str,
        uids: &[u32],
        dest: &str,
    ) -> Result<Vec<(u32, u32)>> {
        let mut pairs = Vec::new();
        let uidplus = self.caps.has("UIDPLUS");
        for set in uidset::chunks(uids, MAX_SET_LEN) {
            let grab = |code: &Option<Code>, pairs: &mut Vec<(u32, u32)>| {
                if let (true, Some(Code::CopyUid { source, dest, .. })) = (uidplus, code) {
                    pairs.extend(source.iter().copied().zip(dest.iter().copied()));
                }
            };
            let done = self
                .run_ok(Cmd::new(&format!("UID {verb} {set} ")).string(dest), |u| {
                    if let Untagged::Status { code, .. } = u {
                        grab(&code, &mut pairs);
                    }
                })
                .await?;
            grab(&done.code, &mut pairs);
        }
        Ok(pairs)
    }

    /// CREATE; an already existing mailbox is not an error.
    pub async fn create(&mut self, mailbox: &str) -> Result<bool> {
        let done = self
            .run(Cmd::new("CREATE ").string(mailbox), |_| {})
            .await?;
        match done.status {
            Status::Ok => Ok(true),
            _ if done.already_exists() => Ok(false),
            _ => done.ok(self.side, "CREATE").map(|_| false),
        }
    }

    pub async fn delete(&mut self, mailbox: &str) -> Result<()> {
        self.leave(mailbox).await?;
        self.run_ok(Cmd::new("DELETE ").string(mailbox), |_| {})
            .await
            .map(|_| ())
    }

    /// RENAME (children follow, as the server does it).
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.leave(from).await?;
        self.run_ok(
            Cmd::new("RENAME ").string(from).text(" ").string(to),
            |_| {},
        )
        .await
        .map(|_| ())
    }

    pub async fn subscribe(&mut self, mailbox: &str) -> Result<()> {
        self.run_ok(Cmd::new("SUBSCRIBE ").string(mailbox), |_| {})
            .await
            .map(|_| ())
    }

    pub async fn unsubscribe(&mut self, mailbox: &str) -> Result<()> {
        self.run_ok(Cmd::new("UNSUBSCRIBE ").string(mailbox), |_| {})
            .await
            .map(|_| ())
    }

    /// LOGOUT; errors are ignored (the connection is going away anyway).
    pub async fn logout(mut self) {
        if let Ok(tag) = self.send(Cmd::new("LOGOUT")).await {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.wait(&tag, |_| {})).await;
        }
    }
}

/// An LSUB entry marked `\Noselect` is a parent implied by subscribed children, not a
/// subscription (RFC 3501 §7.2.3); Courier lists such parents even for `*`.
fn implied(attrs: &[String]) -> bool {
    attrs.iter().any(|a| a.eq_ignore_ascii_case("\\Noselect"))
}

fn code_text(code: &Option<Code>) -> String {
    match code {
        None => String::new(),
        Some(Code::Other(c)) => format!("[{c}] "),
        Some(Code::OverQuota) => "[OVERQUOTA] ".into(),
        Some(Code::TryCreate) => "[TRYCREATE] ".into(),
        Some(Code::Alert) => "[ALERT] ".into(),
        Some(_) => String::new(),
    }
}

/// The SASL PLAIN initial response: base64(authzid NUL authcid NUL password).
fn plain_token(authzid: Option<&str>, authcid: &str, password: &Secret) -> String {
    let mut raw = Vec::new();
    raw.extend_from_slice(authzid.unwrap_or("").as_bytes());
    raw.push(0);
    raw.extend_from_slice(authcid.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.expose_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

async fn tls_handshake(
    tcp: QuickAck,
    opts: &ConnectOptions,
) -> std::io::Result<tokio_rustls::client::TlsStream<QuickAck>> {
    let config = crate::tls::shared_client_config(opts.tls.verify, opts.tls.ca_file.as_deref())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let name = rustls_pki_types::ServerName::try_from(opts.host.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    match tokio::time::timeout(opts.timeout, TlsConnector::from(config).connect(name, tcp)).await {
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
        Ok(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// STOREs sent together may be run in any order (Dovecot runs pipelined STOREs of distinct
    /// messages at once): a FETCH reporting one STORE's message can come before an earlier
    /// STORE's end, and it still counts. A FETCH of a message no STORE named does not.
    #[tokio::test]
    async fn conditional_stores_take_each_messages_modseq_whenever_it_comes() {
        use super::super::script::{pipelined_step, serve, step};
        let (opts, server) = serve(
            "IMAP4rev1 CONDSTORE",
            vec![
                pipelined_step(
                    "UID STORE 1 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen)",
                    "* 2 FETCH (UID 2 MODSEQ (8))\r\n* 9 FETCH (UID 9 MODSEQ (8))\r\n\
                     * 1 FETCH (UID 1 MODSEQ (7))\r\n$tag OK\r\n",
                ),
                step(
                    "UID STORE 2:3 (UNCHANGEDSINCE 6) -FLAGS.SILENT (\\Seen)",
                    "$tag OK [MODIFIED 3] done\r\n",
                ),
            ],
        )
        .await;
        let mut c = Client::connect(&opts, Side::Old).await.unwrap();
        let seen = vec!["\\Seen".to_string()];
        let (stored, modified) = c
            .uid_stores_unchanged_since(&[
                (vec![1], "+FLAGS.SILENT", seen.clone(), 5),
                (vec![2, 3], "-FLAGS.SILENT", seen, 6),
            ])
            .await
            .unwrap();
        assert_eq!(stored, HashMap::from([(1, 7), (2, 8)]));
        assert_eq!(modified, BTreeSet::from([3]));
        server.await.unwrap().unwrap();
    }

    /// A mailbox selected read-write already is brought up to date with a NOOP, not opened
    /// again; one selected read-only, or another, is SELECTed.
    #[tokio::test]
    async fn a_writable_mailbox_is_refreshed_not_selected_again() {
        use super::super::script::{serve, step};
        let selected = "* 1 EXISTS\r\n$tag OK [READ-WRITE] done\r\n";
        let (opts, server) = serve(
            "IMAP4rev1",
            vec![
                step(
                    "EXAMINE \"A\"",
                    "* 1 EXISTS\r\n$tag OK [READ-ONLY] done\r\n",
                ),
                step("SELECT \"A\"", selected),
                step("NOOP", "* 2 EXISTS\r\n$tag OK done\r\n"),
                step("SELECT \"B\"", selected),
                step("SELECT \"A\"", selected),
            ],
        )
        .await;
        let mut c = Client::connect(&opts, Side::Old).await.unwrap();
        c.select("A", true).await.unwrap();
        c.writable_now("A").await.unwrap();
        c.writable_now("A").await.unwrap();
        c.writable_now("B").await.unwrap();
        c.writable_now("A").await.unwrap();
        server.await.unwrap().unwrap();
    }

    /// A NOOP only for UIDs the view may not hold: those at or above the SELECT's UIDNEXT and
    /// above every UID a NOOP was sent for.
    #[tokio::test]
    async fn a_noop_only_for_uids_the_view_may_not_hold() {
        use super::super::script::{serve, step};
        let selected = "* 9 EXISTS\r\n* OK [UIDNEXT 10] next\r\n$tag OK [READ-WRITE] done\r\n";
        let (opts, server) = serve(
            "IMAP4rev1",
            vec![
                step("SELECT \"A\"", selected),
                step("NOOP", "* 10 EXISTS\r\n$tag OK done\r\n"),
                step("NOOP", "$tag OK done\r\n"),
                step("SELECT \"B\"", selected),
            ],
        )
        .await;
        let mut c = Client::connect(&opts, Side::Old).await.unwrap();
        c.writable_for("A", &[3, 9]).await.unwrap(); // SELECT
        c.writable_for("A", &[1, 9]).await.unwrap(); // below UIDNEXT: nothing
        c.writable_for("A", &[2, 10]).await.unwrap(); // NOOP
        c.writable_for("A", &[10]).await.unwrap(); // nothing
        c.writable_for("A", &[12]).await.unwrap(); // NOOP
        c.writable_for("B", &[]).await.unwrap(); // SELECT
        c.writable_for("B", &[4]).await.unwrap(); // nothing
        server.await.unwrap().unwrap();
    }

    /// Bytes of a command without literals, as `send` would write them.
    fn wire(cmd: Cmd) -> Vec<u8> {
        let mut out = b"t1 ".to_vec();
        for p in cmd.0 {
            match p {
                Piece::Text(t) => out.extend_from_slice(&t),
                Piece::Literal(_) => panic!("literal in a wire() test"),
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// imap-codec, an independent IMAP parser, must accept every command form the client writes
    /// (quoting of awkward mailbox names included) and consume it whole. (`LIST … RETURN (…)` is
    /// valid RFC 5258 that imap-codec does not parse yet, so it is not in the table.)
    #[test]
    fn commands_parse_with_imap_codec() {
        use imap_codec::CommandCodec;
        use imap_codec::decode::Decoder;
        let names = [
            "INBOX",
            "Sent Items",
            "a \"quoted\" name",
            "back\\slash",
            "Entw&APw-rfe",
            "INBOX.Projects.2024",
        ];
        let mut cmds = Vec::new();
        for name in names {
            cmds.push(Cmd::new("SELECT ").string(name).text(" (CONDSTORE)"));
            cmds.push(Cmd::new("EXAMINE ").string(name));
            cmds.push(
                Cmd::new("STATUS ")
                    .string(name)
                    .text(" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"),
            );
            cmds.push(Cmd::new("CREATE ").string(name));
            cmds.push(Cmd::new("SUBSCRIBE ").string(name));
            cmds.push(Cmd::new("UID COPY 1:3,7 ").string(name));
            cmds.push(Cmd::new("UID MOVE 4 ").string(name));
        }
        cmds.push(
            Cmd::new("LOGIN ")
                .string("alice")
                .text(" ")
                .string("p\"w\\d"),
        );
        cmds.push(Cmd::new("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 42)"));
        cmds.push(Cmd::new(
            "UID FETCH 1:50 (UID FLAGS INTERNALDATE BODY.PEEK[])",
        ));
        cmds.push(Cmd::new(
            "UID FETCH 5,9 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
        ));
        cmds.push(Cmd::new("UID STORE 1:4 +FLAGS.SILENT (\\Seen $Label1)"));
        cmds.push(Cmd::new("UID EXPUNGE 3:5"));
        cmds.push(Cmd::new("UID SEARCH DELETED"));
        cmds.push(Cmd::new("LIST \"\" \"*\""));
        cmds.push(Cmd::new("ENABLE CONDSTORE"));
        for cmd in cmds {
            let bytes = wire(cmd);
            match CommandCodec::default().decode(&bytes) {
                Ok((rest, _)) => assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&bytes)),
                Err(e) => panic!("{} does not parse: {e:?}", String::from_utf8_lossy(&bytes)),
            }
        }
    }

    #[test]
    fn plain_token_layout() {
        let t = plain_token(Some("alice"), "admin", &Secret::new("pw"));
        let raw = base64::engine::general_purpose::STANDARD.decode(t).unwrap();
        assert_eq!(raw, b"alice\0admin\0pw");
        let t = plain_token(None, "bob", &Secret::new("x"));
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(t).unwrap(),
            b"\0bob\0x"
        );
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        let c = Cmd::new("SELECT ").string("a \"b\" \\c");
        match &c.0[..] {
            [Piece::Text(t)] => assert_eq!(t, b"SELECT \"a \\\"b\\\" \\\\c\""),
            _ => panic!("expected one text piece"),
        }
        let c = Cmd::new("LOGIN ").string("j\u{f6}rg");
        assert!(
            matches!(&c.0[..], [Piece::Text(_), Piece::Literal(l)] if l == "j\u{f6}rg".as_bytes())
        );
        let c = Cmd::new("LOGIN ").bytes(b"caf\xe9");
        assert!(matches!(&c.0[..], [Piece::Text(_), Piece::Literal(l)] if l == b"caf\xe9"));
        assert_eq!(
            plain_token(None, "bob", &Secret::from_bytes(b"\xe9".to_vec())),
            "AGJvYgDp"
        );
        assert_eq!(Cmd::new("UID FETCH 1:* (FLAGS)").name(), "UID FETCH");
        assert_eq!(Cmd::new("LOGIN x y").name(), "LOGIN");
    }
}
