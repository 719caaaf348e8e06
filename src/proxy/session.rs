//! One client connection of the transparent proxy: the proxy owns the greeting and the
//! pre-login commands (CAPABILITY, NOOP, ID, LOGOUT, STARTTLS), checks LOGIN / AUTHENTICATE PLAIN
//! against NEW on the connection [`upstream`](super::upstream) opened when the client arrived (telling NEW the
//! client's address with ID `x-originating-ip` first; a refused login is answered after a delay
//! that grows with repeated failures from the same address), then relays
//! bytes both ways through the framer, rewriting only capability lists. When the server shuts down,
//! the session sends `* BYE Server shutting down` between two responses and closes.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ClientConfig;
use tracing::{Span, debug, info, trace, warn};

use super::framer::{Event, FrameError, Framer, Limits};
use super::inspect::{Arg, Command, inspect};
use super::intercept::{Before, Tracker};
use super::metrics::Metrics;
use super::throttle::LoginThrottle;
use super::translate::{Maps, Translator};
use super::upstream::{self, Early, NEW_TIMEOUT, NewLogin};
use crate::config;
use crate::migrate::{Account, ClientCaches, Login, Need, NotMarked, Watch};
use crate::secret::Secret;
use crate::uidmap::UidMap;

/// A byte stream to a client or to NEW (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Read buffer sizes on both legs: small while a connection is idle or chatty, growing while reads
/// fill it (bulk transfers), back to small after a short read. The bound on bytes held per leg.
const INPUT_MIN: usize = 4 * 1024;
const INPUT_MAX: usize = 64 * 1024;
/// Output is flushed once this much is pending, or when the input is drained.
const FLUSH_AT: usize = 128 * 1024;
/// Most of a command kept for tracking (the relay forwards every byte regardless), and the
/// largest literal kept in it: mailbox names, not messages.
const TRACK_MAX: usize = 16 * 1024;
const TRACK_LITERAL: u64 = 4 * 1024;
/// Longest response line from NEW framed as a line (longer ones are relayed as is); in a
/// session that translates numbers (client caches), where a line relayed as is would show NEW's
/// UIDs, `NEW_MAX_TRANSLATED` (a SEARCH result of about two million UIDs).
const NEW_MAX_LINE: usize = 1024 * 1024;
const NEW_MAX_TRANSLATED: usize = 16 * 1024 * 1024;
/// Replies of the proxy's own (BAD) waiting to be placed between NEW's responses; past this the
/// session reads no more from the client until they are written.
const INJECT_QUEUE: usize = 16;
/// Replies of the proxy's own BAD in a row (nothing valid between) after which the client is
/// sent away, as Dovecot does with "Too many invalid IMAP commands".
const MAX_BAD_IN_A_ROW: u32 = 20;
/// The last words to a client (BYE) get this long to be written.
const BYE_TIMEOUT: Duration = Duration::from_secs(5);
/// The `* BYE` a client gets instead of the answer to a write the proxy could not save.
const NOT_SAVED: &str = "This change could not be saved by the proxy; reconnect to see NEW's state";
/// Why a folder that keeps client caches is not shown yet (after `NO [UNAVAILABLE]`).
const NOT_READY: &str = "This folder is still being copied; try again in a moment";
/// Sent to every open session when the server shuts down.
const SHUTDOWN_TEXT: &str = "Server shutting down";

/// What every session needs, prepared once from the configuration.
pub struct Settings {
    pub new: config::New,
    pub limits: config::Limits,
    /// TLS towards NEW (`security` tls or starttls).
    pub new_tls: Option<Arc<ClientConfig>>,
    /// The proxy's own certificate: implicit TLS and STARTTLS.
    pub acceptor: Option<TlsAcceptor>,
    /// Logins accepted before TLS on the plain listener even though TLS is available.
    pub plaintext_login: bool,
    /// Shared by all sessions (and kept by a reload): recent login failures per (client
    /// network, user).
    pub login_throttle: Arc<LoginThrottle>,
    /// Shared by all sessions and the admin endpoint's `/metrics`.
    pub metrics: Arc<super::metrics::Metrics>,
    /// The migration from OLD (`None` without `[old]`: a pure relay to NEW).
    pub migrator: Option<Arc<crate::migrate::Migrator>>,
}

/// Completes when the server shuts down (or is gone). The borrow of the watched value ends
/// inside, so callers' futures stay `Send`.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs one client connection to its end. `secure`: the client stream is already TLS; `peer`:
/// the client's address; `stop` turns true when the server shuts down; `early`: NEW's
/// connection opened when the client was accepted (closed with the session if it is not used).
pub async fn run(
    client: BoxIo,
    secure: bool,
    peer: SocketAddr,
    settings: Arc<Settings>,
    stop: watch::Receiver<bool>,
    early: Early,
) {
    match prelogin(client, secure, peer, &settings, stop.clone(), early).await {
        Ok(Some(logged_in)) => {
            if let Err(e) = relay(logged_in, &settings, stop).await {
                debug!("session ended: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => debug!("session ended before login: {e}"),
    }
    info!("connection closed");
}

/// Buffered input of one leg.
struct Input {
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

/// Gives back an output buffer's memory after a quiet exchange (idle connections stay small).
fn release_if_idle(out: &mut Vec<u8>, input: &Input) {
    if input.is_quiet() && out.capacity() > INPUT_MIN {
        *out = Vec::new();
    }
}

impl Input {
    fn new() -> Self {
        Input {
            buf: vec![0; INPUT_MIN].into_boxed_slice(),
            pos: 0,
            len: 0,
        }
    }

    fn with(bytes: &[u8]) -> Self {
        let mut input = Input::new();
        if bytes.len() > input.buf.len() {
            input.buf = bytes.to_vec().into_boxed_slice();
        }
        input.buf[..bytes.len()].copy_from_slice(bytes);
        input.len = bytes.len();
        input
    }

    /// Reads more once everything was consumed; false at end of stream.
    async fn fill<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
        deadline: Option<Instant>,
    ) -> io::Result<bool> {
        // The last read filled the buffer: more is coming, read bigger. It was short: shrink.
        let size = if self.len == self.buf.len() {
            (self.buf.len() * 4).clamp(INPUT_MIN, INPUT_MAX)
        } else if self.len < INPUT_MIN {
            INPUT_MIN
        } else {
            self.buf.len()
        };
        if size != self.buf.len() {
            self.buf = vec![0; size].into_boxed_slice();
        }
        self.pos = 0;
        self.len = 0;
        let n = match deadline {
            Some(d) => match tokio::time::timeout_at(d, reader.read(&mut self.buf)).await {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "timeout")),
            },
            None => reader.read(&mut self.buf).await?,
        };
        self.len = n;
        Ok(n > 0)
    }

    /// The last read was small: the peer is idle or chatty, not streaming.
    fn is_quiet(&self) -> bool {
        self.len < INPUT_MIN
    }
}

/// The first token of a line, if it looks like a tag.
pub(super) fn first_token(line: &[u8]) -> Option<String> {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let tok = &line[..end];
    let ok = !tok.is_empty()
        && tok.len() <= 64
        && tok
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\]+".contains(&b));
    ok.then(|| String::from_utf8_lossy(tok).into_owned())
}

/// Capabilities the proxy must not pass on: it terminates the login, TLS and compression itself.
fn keep_capability(cap: &str) -> bool {
    let up = cap.to_ascii_uppercase();
    !(up == "STARTTLS"
        || up == "LOGINDISABLED"
        || up == "SASL-IR"
        || up.starts_with("AUTH=")
        || up.starts_with("COMPRESS="))
}

/// Filters a space-separated capability list.
pub(super) fn filter_capabilities(list: &str) -> String {
    list.split_ascii_whitespace()
        .filter(|c| keep_capability(c))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The capability list inside a response line (`* CAPABILITY ...` or `[CAPABILITY ...]` in a
/// status response): `(start, end)` byte offsets of the list, or `None`.
pub(super) fn capability_span(line: &[u8]) -> Option<(usize, usize)> {
    let body_end = line
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |p| p + 1);
    let sp1 = line.iter().position(|&b| b == b' ')?;
    let rest = &line[sp1 + 1..body_end];
    if line[..sp1] == *b"*" && rest.len() >= 11 && rest[..11].eq_ignore_ascii_case(b"CAPABILITY ") {
        return Some((sp1 + 12, body_end));
    }
    let sp2 = rest.iter().position(|&b| b == b' ')?;
    let status = &rest[..sp2];
    if !["OK", "NO", "BAD", "BYE", "PREAUTH"]
        .iter()
        .any(|s| status.eq_ignore_ascii_case(s.as_bytes()))
    {
        return None;
    }
    let after = &rest[sp2 + 1..];
    if after.len() < 12 || !after[..12].eq_ignore_ascii_case(b"[CAPABILITY ") {
        return None;
    }
    let start = sp1 + 1 + sp2 + 1 + 12;
    let close = line[start..body_end].iter().position(|&b| b == b']')?;
    Some((start, start + close))
}

/// `line` with its capability list filtered, if it carries one.
pub(super) fn rewrite_capabilities(line: &[u8]) -> Option<Vec<u8>> {
    let (start, end) = capability_span(line)?;
    let list = String::from_utf8_lossy(&line[start..end]);
    let mut out = line[..start].to_vec();
    out.extend_from_slice(filter_capabilities(&list).as_bytes());
    out.extend_from_slice(&line[end..]);
    Some(out)
}

/// The capabilities the proxy itself offers before login.
fn prelogin_capabilities(settings: &Settings, secure: bool) -> String {
    let mut caps = String::from("IMAP4rev1 SASL-IR ID");
    if settings.acceptor.is_some() && !secure {
        caps.push_str(" STARTTLS");
        if !settings.plaintext_login {
            caps.push_str(" LOGINDISABLED");
            return caps;
        }
    }
    caps.push_str(" AUTH=PLAIN");
    caps
}

/// How the client authenticates; passed on to NEW.
pub(super) enum Auth {
    Login {
        user: String,
        password: Secret,
    },
    /// The base64 SASL PLAIN response as the client sent it, and its parts: `user` is the
    /// authorization identity (or the authentication identity without one).
    Plain {
        user: String,
        response: Secret,
        authcid: String,
        password: Secret,
    },
}

impl Auth {
    fn user(&self) -> &str {
        match self {
            Auth::Login { user, .. } | Auth::Plain { user, .. } => user,
        }
    }

    /// Whose password was given (the login throttle counts its failures).
    fn authcid(&self) -> &str {
        match self {
            Auth::Login { user, .. } => user,
            Auth::Plain { authcid, .. } => authcid,
        }
    }

    /// The user and password OLD may need (`auth = "same"`). A PLAIN login on behalf of another
    /// user (authzid set) has no password of that user: `None`.
    fn credentials(&self) -> Option<(String, Secret)> {
        match self {
            Auth::Login { user, password } => Some((user.clone(), password.clone())),
            Auth::Plain {
                user,
                authcid,
                password,
                ..
            } => (user == authcid).then(|| (authcid.clone(), password.clone())),
        }
    }
}

/// A session after NEW accepted the login.
struct LoggedIn {
    client: BoxIo,
    input: Input,
    framer: Framer,
    new: BoxIo,
    new_leftover: Vec<u8>,
    /// The user's migration state (`None`: plain relay).
    account: Option<Arc<Account>>,
    /// The numbers each folder shows, when the account's folders keep client caches.
    caches: Option<Arc<ClientCaches>>,
}

/// Sends a BYE and closes without a reset: what the client already sent is read and discarded
/// (for at most a second and 1 MiB), so the kernel does not answer unread data with RST and
/// the client gets to read the BYE.
async fn bye_and_close(client: &mut BoxIo, bye: &[u8]) {
    let deadline = Instant::now() + BYE_TIMEOUT;
    if send_by(client, bye, true, deadline, "client")
        .await
        .is_err()
        || tokio::time::timeout_at(deadline, client.shutdown())
            .await
            .map_or(true, |r| r.is_err())
    {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut left = 1 << 20;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
}

async fn write_flush(io: &mut BoxIo, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Writes `bytes` to `peer` (and flushes, with `flush`), giving up at `deadline`: a peer that
/// does not read is disconnected, never buffered for.
async fn send_by<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
    flush: bool,
    deadline: Instant,
    peer: &str,
) -> io::Result<()> {
    let write = async {
        w.write_all(bytes).await?;
        if flush { w.flush().await } else { Ok(()) }
    };
    match tokio::time::timeout_at(deadline, write).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{peer} stopped reading"),
        )),
    }
}

/// A reply of the proxy's own before login, written by the login deadline.
async fn answer(client: &mut BoxIo, deadline: Instant, bytes: &[u8]) -> io::Result<()> {
    send_by(client, bytes, true, deadline, "client").await
}

/// Says goodbye within [`BYE_TIMEOUT`]: `* BYE text`, then closes our side.
async fn last_words<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, text: &str) {
    let deadline = Instant::now() + BYE_TIMEOUT;
    let bye = format!("* BYE {text}\r\n");
    if send_by(w, bye.as_bytes(), true, deadline, "client")
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout_at(deadline, w.shutdown()).await;
    }
}

/// The pre-login dialogue. `None`: the client left (or was sent away) before logging in.
async fn prelogin(
    mut client: BoxIo,
    mut secure: bool,
    peer: SocketAddr,
    settings: &Settings,
    mut stop: watch::Receiver<bool>,
    mut early: Early,
) -> io::Result<Option<LoggedIn>> {
    let deadline = Instant::now() + Duration::from_secs(settings.limits.login_timeout_secs);
    let max_literal = u64::from(settings.limits.max_literal_before_login);
    let budget = settings.limits.max_line_length as u64 + 2 * max_literal;
    let limits = Limits {
        max_line: settings.limits.max_line_length,
        max_literal,
    };
    let mut framer = Framer::new(limits);
    let mut input = Input::new();
    // The command being assembled, literal data inline (bounded by `budget`).
    let mut cmd: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut overlong_tag: Option<String> = None;
    let mut sasl_pending: Option<String> = None;
    let mut secret: Option<String> = None;
    let greeting = format!(
        "* OK [CAPABILITY {}] imapferry ready\r\n",
        prelogin_capabilities(settings, secure)
    );
    answer(&mut client, deadline, greeting.as_bytes()).await?;
    loop {
        let (n, event) = framer.advance(&input.buf[input.pos..input.len]);
        input.pos += n;
        let Some(event) = event else {
            // Every reply of the proxy is complete here: a BYE can go out.
            let filled = tokio::select! {
                r = input.fill(&mut client, Some(deadline)) => r,
                () = stopped(&mut stop) => {
                    last_words(&mut client, SHUTDOWN_TEXT).await;
                    return Ok(None);
                }
            };
            match filled {
                Ok(true) => continue,
                Ok(false) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    last_words(&mut client, "Login timeout").await;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        };
        let line = match event {
            Event::LiteralData(data) => {
                cmd.extend_from_slice(data);
                continue;
            }
            Event::Error(FrameError::LineTooLong) => {
                overlong = true;
                overlong_tag = None;
                continue;
            }
            Event::Overlong(piece) => {
                if overlong_tag.is_none() && cmd.is_empty() {
                    overlong_tag = first_token(&piece);
                }
                continue;
            }
            Event::OverlongEnd { literal } => {
                overlong = false;
                cmd.clear();
                if literal.is_some_and(|l| l.len > 0 && !(l.sync && framer.reject_literal())) {
                    bye_and_close(&mut client, b"* BYE Line too long\r\n").await;
                    return Ok(None);
                }
                let tag = overlong_tag.take().unwrap_or_else(|| "*".into());
                write_flush(
                    &mut client,
                    format!("{tag} BAD line too long\r\n").as_bytes(),
                )
                .await?;
                continue;
            }
            Event::Error(FrameError::LiteralLengthInvalid) => {
                bye_and_close(&mut client, b"* BYE Invalid literal\r\n").await;
                return Ok(None);
            }
            Event::Error(FrameError::LiteralTooLarge { .. }) => continue,
            Event::Line { bytes, literal } => {
                debug_assert!(!overlong);
                if cmd.is_empty() {
                    secret = match sasl_pending {
                        Some(_) => Some("(SASL response)".into()),
                        None => secret_head(&bytes),
                    };
                }
                trace!(line = %shown(&bytes, secret.as_deref()), "client");
                cmd.extend_from_slice(&bytes);
                if let Some(lit) = literal {
                    if lit.len > max_literal || cmd.len() as u64 + lit.len > budget {
                        let tag = first_token(&cmd).unwrap_or_else(|| "*".into());
                        cmd.clear();
                        if lit.sync && framer.reject_literal() {
                            write_flush(
                                &mut client,
                                format!("{tag} BAD Literal too large\r\n").as_bytes(),
                            )
                            .await?;
                            continue;
                        }
                        bye_and_close(&mut client, b"* BYE Literal too large\r\n").await;
                        return Ok(None);
                    }
                    if lit.sync {
                        answer(&mut client, deadline, b"+ Ready for literal data\r\n").await?;
                    }
                    continue;
                }
                std::mem::take(&mut cmd)
            }
        };

        // A complete command (or SASL response) in `line`.
        let auth = if let Some(tag) = sasl_pending.take() {
            match sasl_plain(&line) {
                Ok(auth) => Some((tag, auth)),
                Err(msg) => {
                    answer(
                        &mut client,
                        deadline,
                        format!("{tag} BAD {msg}\r\n").as_bytes(),
                    )
                    .await?;
                    None
                }
            }
        } else {
            let inspected = inspect(&line);
            let Some(tag) = inspected.tag.filter(|_| first_token(&line).is_some()) else {
                answer(&mut client, deadline, b"* BAD Invalid tag\r\n").await?;
                continue;
            };
            if let Some(name) = &inspected.name {
                settings.metrics.command(name);
            }
            let plain_refused = settings.acceptor.is_some() && !secure && !settings.plaintext_login;
            match inspected.command {
                Command::Capability => {
                    let caps = prelogin_capabilities(settings, secure);
                    let reply =
                        format!("* CAPABILITY {caps}\r\n{tag} OK Capability completed.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    None
                }
                Command::Logout => {
                    let reply =
                        format!("* BYE imapferry logging out\r\n{tag} OK Logout completed.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    return Ok(None);
                }
                Command::Id => {
                    let reply = format!("* ID NIL\r\n{tag} OK ID completed.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    None
                }
                Command::StartTls => {
                    let Some(acceptor) = settings.acceptor.clone().filter(|_| !secure) else {
                        let reply = format!("{tag} BAD STARTTLS not available\r\n");
                        answer(&mut client, deadline, reply.as_bytes()).await?;
                        continue;
                    };
                    let reply = format!("{tag} OK Begin TLS negotiation now.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    // Anything pipelined after STARTTLS was sent in clear text: discard it.
                    input.pos = input.len;
                    framer = Framer::new(limits);
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(client));
                    client = match handshake.await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Ok(None),
                    };
                    secure = true;
                    None
                }
                Command::Login { .. } | Command::Authenticate { .. } if plain_refused => {
                    let reply = format!(
                        "{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed; use STARTTLS.\r\n"
                    );
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    None
                }
                Command::Login {
                    username: Arg::Str(user),
                    password: Some(password),
                } => Some((tag, Auth::Login { user, password })),
                Command::Authenticate {
                    mechanism,
                    initial_response,
                } if mechanism == "PLAIN" => {
                    if initial_response {
                        let ir = line
                            .split(|&b| b == b' ')
                            .nth(3)
                            .map(|t| t.trim_ascii())
                            .unwrap_or_default();
                        match sasl_plain(ir) {
                            Ok(auth) => Some((tag, auth)),
                            Err(msg) => {
                                let reply = format!("{tag} BAD {msg}\r\n");
                                answer(&mut client, deadline, reply.as_bytes()).await?;
                                None
                            }
                        }
                    } else {
                        answer(&mut client, deadline, b"+ \r\n").await?;
                        sasl_pending = Some(tag);
                        None
                    }
                }
                Command::Authenticate { .. } => {
                    let reply = format!("{tag} NO Unsupported authentication mechanism.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    None
                }
                Command::Login { .. } => {
                    let reply = format!("{tag} BAD Invalid LOGIN arguments.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    None
                }
                _ if inspected.name.as_deref() == Some("NOOP") => {
                    let reply = format!("{tag} OK NOOP completed.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    None
                }
                _ => {
                    let reply = format!("{tag} BAD Command not valid before login.\r\n");
                    answer(&mut client, deadline, reply.as_bytes()).await?;
                    None
                }
            }
        };
        let Some((tag, auth)) = auth else { continue };

        let started = Instant::now();
        let login = upstream::login(settings, &mut early, peer, &auth);
        let outcome = tokio::select! {
            r = tokio::time::timeout(NEW_TIMEOUT, login) => r,
            () = stopped(&mut stop) => {
                last_words(&mut client, SHUTDOWN_TEXT).await;
                return Ok(None);
            }
        };
        if let Ok(Ok(_)) = &outcome {
            settings.metrics.upstream_latency(started.elapsed());
        }
        match outcome {
            Ok(Ok(NewLogin::Ok {
                new,
                leftover,
                text,
            })) => {
                let user = auth.user().to_owned();
                Span::current().record("user", user.as_str());
                info!("logged in");
                settings.login_throttle.succeeded(peer.ip(), auth.authcid());
                // OLD's folders exist on NEW before the client's first LIST (within the budget).
                let login = match (&settings.migrator, auth.credentials()) {
                    (Some(m), Some((user, password))) => {
                        let started = Instant::now();
                        let login = m.login(&user, &password).await;
                        debug!(ms = started.elapsed().as_millis(), "the migration's login");
                        login
                    }
                    _ => None,
                };
                let (account, caches) = match login {
                    Some(Login::Migrating(account)) => {
                        let caches = account.client_caches();
                        (Some(account), caches)
                    }
                    Some(Login::Retired(caches)) => (None, Some(caches)),
                    None => (None, None),
                };
                let reply = format!("{tag} {text}");
                answer(&mut client, deadline, reply.as_bytes()).await?;
                return Ok(Some(LoggedIn {
                    client,
                    input,
                    framer,
                    new,
                    new_leftover: leftover,
                    account,
                    caches,
                }));
            }
            Ok(Ok(NewLogin::Refused(text))) => {
                settings.metrics.login_failure();
                let verdict = settings.login_throttle.failed(peer.ip(), auth.authcid());
                let delay_ms = u64::try_from(verdict.delay.as_millis()).unwrap_or(u64::MAX);
                let failures = verdict.failures;
                info!(
                    user = auth.user(),
                    failures, delay_ms, "login refused by NEW"
                );
                tokio::time::sleep(verdict.delay).await;
                answer(&mut client, deadline, format!("{tag} {text}").as_bytes()).await?;
            }
            Ok(Err(e)) => {
                warn!("NEW unavailable: {e}");
                let reply = format!("{tag} NO [UNAVAILABLE] Backend server unavailable.\r\n");
                answer(&mut client, deadline, reply.as_bytes()).await?;
            }
            Err(_) => {
                warn!("NEW login timed out");
                let reply = format!("{tag} NO [UNAVAILABLE] Backend server timed out.\r\n");
                answer(&mut client, deadline, reply.as_bytes()).await?;
            }
        }
    }
}

/// Decodes a SASL PLAIN response (base64 of `authzid NUL authcid NUL password`).
fn sasl_plain(response: &[u8]) -> Result<Auth, &'static str> {
    let response = response.trim_ascii();
    if response == b"*" {
        return Err("Authentication cancelled.");
    }
    let decoded = B64.decode(response).map_err(|_| "Invalid base64 data.")?;
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid PLAIN response.");
    };
    let user = if authzid.is_empty() { authcid } else { authzid };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(Auth::Plain {
        user: text(user),
        response: Secret::from_bytes(response),
        authcid: text(authcid),
        password: Secret::from_bytes(password),
    })
}

/// Why the relay stopped.
#[derive(Debug)]
enum End {
    ClientClosed,
    NewClosed,
    IdleTimeout,
    /// The client stream cannot be framed any more: BYE with this text.
    Bye(&'static str),
}

/// What the NEW→client side tells the client→NEW side about a synchronising literal.
enum Continuation {
    Go,
    Refused,
}

/// Tag of the command waiting for NEW's continuation of a synchronising literal.
type Waiting = StdMutex<Option<String>>;

/// The session's own state behind a lock that a panic may have poisoned: the session ends
/// rather than go on with state it cannot trust.
fn poisoned<T>(_: T) -> io::Error {
    io::Error::other("session state poisoned by an earlier panic")
}

/// The proxy's own replies waiting to go out, appended to `out` (at a response boundary).
fn take_replies(inject: &mut mpsc::Receiver<Vec<u8>>, out: &mut Vec<u8>) {
    while let Ok(reply) = inject.try_recv() {
        out.extend_from_slice(&reply);
    }
}

/// Takes the tag waiting for a continuation.
fn take_waiting(waiting: &Waiting) -> io::Result<Option<String>> {
    Ok(waiting.lock().map_err(poisoned)?.take())
}

async fn relay(
    session: LoggedIn,
    settings: &Settings,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let LoggedIn {
        client,
        input,
        mut framer,
        new,
        new_leftover,
        account,
        caches,
    } = session;
    let _presence = account.as_ref().map(Account::enter);
    // Folder names are normalised with NEW's separator once the account's tree is mapped.
    let sep = account
        .as_ref()
        .and_then(|a| a.separators())
        .map(|(_, new)| new);
    let tracker = StdMutex::new(Tracker::new(sep, account.is_some()));
    let idle = Duration::from_secs(settings.limits.idle_timeout_secs);
    let migration = Migration {
        account: account.as_ref(),
        tracker: &tracker,
        answered: Notify::new(),
        budget: settings
            .migrator
            .as_ref()
            .map_or(Duration::ZERO, |m| m.budget()),
        metrics: &settings.metrics,
        write_timeout: Duration::from_secs(settings.limits.write_timeout_secs),
        idle,
        translator: caches.map(|c| (StdMutex::new(Translator::new()), c)),
        cache_wait: settings
            .migrator
            .as_ref()
            .map_or(Duration::ZERO, |m| m.cache_wait()),
    };
    framer.set_limits(Limits {
        max_line: settings.limits.max_line_length,
        max_literal: u64::MAX,
    });
    let (client_rd, client_wr) = tokio::io::split(client);
    let (new_rd, new_wr) = tokio::io::split(new);
    let mut wr = client_wr;
    let waiting: Waiting = StdMutex::new(None);
    let (tx, rx) = mpsc::channel(1);
    let (inject_tx, inject_rx) = mpsc::channel(INJECT_QUEUE);
    let c2n = ClientToNew {
        framer,
        new: new_wr,
        inject: inject_tx,
        waiting: &waiting,
        continuation: rx,
        migration: &migration,
        bad_in_a_row: 0,
    };
    let n2c = NewToClient {
        waiting: &waiting,
        continuation: tx,
        inject: inject_rx,
        stop,
        migration: &migration,
    };
    let end = tokio::select! {
        r = c2n.run(client_rd, input) => r,
        r = n2c.run(new_rd, Input::with(&new_leftover), &mut wr) => r,
    };
    if let Some(account) = &account {
        // NEW may have done these writes; nothing will journal them. (A poisoned tracker is
        // still read: its commands in flight are kept whole, and a wrong count only costs a
        // reconcile.)
        let (lost, changing) = crate::lock::recover(&tracker, "the session's tracker").unanswered();
        for _ in 0..lost {
            account.intent_over(false);
        }
        for folder in &changing {
            account.folder(folder).end_change();
        }
    }
    match end {
        Ok(End::IdleTimeout) => last_words(&mut wr, "Idle timeout").await,
        Ok(End::Bye(text)) => last_words(&mut wr, text).await,
        Ok(end @ (End::ClientClosed | End::NewClosed)) => {
            debug!("relay ended: {end:?}");
            let _ = tokio::time::timeout(BYE_TIMEOUT, wr.shutdown()).await;
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => info!("disconnected: {e}"),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The client→NEW direction. Replies of its own (BAD) go to the client through `inject`, so
/// the NEW→client direction places them between responses, never inside one.
struct ClientToNew<'a> {
    framer: Framer,
    new: tokio::io::WriteHalf<BoxIo>,
    inject: mpsc::Sender<Vec<u8>>,
    waiting: &'a Waiting,
    continuation: mpsc::Receiver<Continuation>,
    migration: &'a Migration<'a>,
    /// Replies of the proxy's own BAD since the last command that went to NEW.
    bad_in_a_row: u32,
}

/// What both directions share about the session beyond bytes: the command tracker (selected
/// folder, enabled extensions, commands in flight, writes awaiting NEW's OK), the account to
/// migrate, metrics, and the session's timeouts.
struct Migration<'a> {
    account: Option<&'a Arc<Account>>,
    tracker: &'a StdMutex<Tracker>,
    /// Signalled by the NEW→client side each time NEW completes a command.
    answered: Notify,
    budget: Duration,
    metrics: &'a Metrics,
    write_timeout: Duration,
    idle: Duration,
    /// The account keeps client caches: numbers are translated both ways, with its maps.
    translator: Option<(StdMutex<Translator>, Arc<ClientCaches>)>,
    /// How long a folder that keeps client caches may take to be ready to show.
    cache_wait: Duration,
}

impl Maps for ClientCaches {
    fn map(&self, mailbox: &str) -> Option<Arc<UidMap>> {
        self.uid_map(mailbox)
    }
}

impl Migration<'_> {
    /// A command line (or its part after a literal) as NEW must get it.
    fn translate_command<'b>(&self, line: &'b [u8], literal: bool) -> io::Result<Cow<'b, [u8]>> {
        match &self.translator {
            Some((t, caches)) => Ok(t
                .lock()
                .map_err(poisoned)?
                .command(&**caches, line, literal)),
            None => Ok(Cow::Borrowed(line)),
        }
    }

    /// A response line (or its part after a literal) as the client must get it.
    fn translate_response<'b>(&self, line: &'b [u8], literal: bool) -> io::Result<Cow<'b, [u8]>> {
        match &self.translator {
            Some((t, caches)) => Ok(t
                .lock()
                .map_err(poisoned)?
                .response(&**caches, line, literal)),
            None => Ok(Cow::Borrowed(line)),
        }
    }

    /// The folder a complete command needs up to date first, and whether it opens it.
    fn needs(&self, command: &[u8]) -> io::Result<Option<(String, bool)>> {
        match self.account {
            Some(_) => Ok(self
                .tracker
                .lock()
                .map_err(poisoned)?
                .needs(&inspect(command))),
            None => Ok(None),
        }
    }

    /// Brings `folder` up to date (see [`Migration::before_forward`]) and, with client caches
    /// kept, waits until it may be shown. `false`: it may not be yet.
    async fn ready(&self, folder: &str, opens: bool) -> bool {
        let Some(account) = self.account else {
            return true;
        };
        let need = if opens { Need::Contents } else { Need::Filled };
        account
            .ensure(folder, self.budget.mul_f64(0.85), need)
            .await;
        account.ready_to_show(folder, self.cache_wait).await
    }

    /// A complete command from the client (literal data inline, as far as it was kept), before
    /// its last part goes to NEW: counted and tracked. Says what must happen first (see
    /// [`Migration::before_forward`]).
    fn command(&self, command: &[u8]) -> io::Result<Before> {
        let inspected = inspect(command);
        let name = inspected.name.as_deref().unwrap_or("");
        self.metrics.command(name);
        let before = self.tracker.lock().map_err(poisoned)?.command(
            &inspected,
            command.len(),
            std::time::Instant::now(),
        );
        Ok(if self.account.is_some() {
            before
        } else {
            Before::default()
        })
    }

    /// Past the cap on commands in flight, waits until NEW answers enough of them. A NEW that
    /// answers nothing for the idle timeout ends the session.
    async fn wait_for_room(&self) -> io::Result<()> {
        loop {
            let answered = self.answered.notified();
            if !self.tracker.lock().map_err(poisoned)?.full() {
                return Ok(());
            }
            debug!("waiting for NEW: too many commands in flight");
            if tokio::time::timeout(self.idle, answered).await.is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "NEW answered none of the commands in flight",
                ));
            }
        }
    }

    /// Backfills the folder the command needs from OLD (the wait leaves 15 % of the SELECT
    /// budget for NEW's own answer, as a large folder being filled takes NEW a moment to open,
    /// so the tagged OK comes within the budget), holds off the mirror's reads of folders
    /// the command restructures, and puts the account's write-ahead mark in the store before a
    /// write. `Err`: the mark could not be stored, the command must not reach NEW.
    async fn before_forward(&self, before: &Before) -> Result<(), NotMarked> {
        let Some(account) = self.account else {
            return Ok(());
        };
        if let Some(folder) = &before.ensure {
            let started = Instant::now();
            debug!("waiting for backfill");
            let need = if before.opens {
                Need::Contents
            } else {
                Need::Filled
            };
            account
                .ensure(folder, self.budget.mul_f64(0.85), need)
                .await;
            debug!(ms = started.elapsed().as_millis(), "backfill wait over");
        }
        for folder in &before.changing {
            let started = Instant::now();
            debug!("waiting for the mirror to leave the folder");
            account.folder(folder).begin_change().await;
            debug!(ms = started.elapsed().as_millis(), "mirror wait over");
        }
        if before.write {
            account.intend().await?;
        }
        Ok(())
    }

    /// A complete response line from NEW, before it goes to the client: a write NEW accepted is
    /// journaled first, and the selected folder is kept under live pickup. `Ok(Err(text))`: the
    /// write could not be journaled, so the client gets `* BYE text` instead of this line (NEW
    /// has the write; OLD is reconciled).
    async fn before_response(
        &self,
        line: &[u8],
        watching: &mut Option<Watch>,
    ) -> io::Result<Result<(), &'static str>> {
        let (outcome, selected) = {
            let mut t = self.tracker.lock().map_err(poisoned)?;
            let outcome = t.response(line);
            let selected = t.selected().and_then(|s| s.folder().map(String::from));
            (outcome, selected)
        };
        if let Some(done) = &outcome.answered {
            self.answered.notify_one();
            debug!(
                tag = %done.tag,
                command = %done.name,
                outcome = %done.status,
                ms = done.started.elapsed().as_millis(),
                "command done"
            );
        }
        let Some(account) = self.account else {
            return Ok(Ok(()));
        };
        if outcome.selection_changed {
            *watching = selected.map(|f| account.watch(&f));
        }
        if let Some(what) = outcome.untracked {
            account.diverge(&what).await;
        }
        let recorded = match outcome.write {
            Some(write) => {
                let started = Instant::now();
                debug!("journaling the write");
                let r = account.record(write).await;
                debug!(ms = started.elapsed().as_millis(), "journaled");
                r
            }
            None => Ok(()),
        };
        // Journaled first, so a mirror waiting for the change sees it when it resumes.
        for folder in &outcome.settled {
            account.folder(folder).end_change();
        }
        if outcome.answered.as_ref().is_some_and(|a| a.write) {
            account.intent_over(true);
        }
        if let Err(e) = recorded {
            warn!("{e}");
            return Ok(Err(NOT_SAVED));
        }
        Ok(Ok(()))
    }
}

/// `tag NAME` of a line that starts a LOGIN or AUTHENTICATE: its lines are never logged.
fn secret_head(line: &[u8]) -> Option<String> {
    let tag = command_named(line, &["LOGIN", "AUTHENTICATE"])?;
    let name = line
        .get(tag.len() + 1..)?
        .split(|&b| b == b' ' || b == b'\r')
        .next()?;
    Some(format!(
        "{tag} {}",
        String::from_utf8_lossy(name).to_ascii_uppercase()
    ))
}

/// A client line as a trace log shows it: as is (literal data is never part of a line), or
/// masked when it belongs to a command with credentials (`secret`: its head).
fn shown(line: &[u8], secret: Option<&str>) -> String {
    match secret {
        Some(head) => format!("{head} ***"),
        None => String::from_utf8_lossy(line.trim_ascii_end()).into_owned(),
    }
}

/// `tag` when `line` is `tag NAME ...` with NAME one of `names` (ASCII case-insensitive).
fn command_named(line: &[u8], names: &[&str]) -> Option<String> {
    let tag = first_token(line)?;
    let rest = line.get(tag.len() + 1..)?;
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    let name = &rest[..end];
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        .then_some(tag)
}

impl ClientToNew<'_> {
    /// Sends what is pending to NEW (within the write timeout).
    async fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !out.is_empty() {
            self.migration.metrics.bytes_client_to_new(out.len() as u64);
            let deadline = Instant::now() + self.migration.write_timeout;
            send_by(&mut self.new, out, true, deadline, "NEW").await?;
            out.clear();
        }
        Ok(())
    }

    /// A BAD of the proxy's own, placed between NEW's responses by the other direction.
    /// Waits while [`INJECT_QUEUE`] replies are already waiting (the client is not reading), at
    /// most the write timeout: the other direction may itself wait for NEW to finish a response
    /// that NEW finishes only once it reads more of what this direction holds back.
    /// `Some(end)`: too many in a row, the client is sent away.
    async fn bad(&mut self, reply: String) -> io::Result<Option<End>> {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row > MAX_BAD_IN_A_ROW {
            return Ok(Some(End::Bye("Too many invalid commands")));
        }
        self.reply(reply).await.map(|()| None)
    }

    /// A reply of the proxy's own, placed like a BAD (see [`ClientToNew::bad`]).
    async fn reply(&mut self, reply: String) -> io::Result<()> {
        let queued = self.inject.send(reply.into_bytes());
        match tokio::time::timeout(self.migration.write_timeout, queued).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read none of the proxy's replies",
            )),
        }
    }

    async fn run(
        mut self,
        mut rd: tokio::io::ReadHalf<BoxIo>,
        mut input: Input,
    ) -> io::Result<End> {
        let migration = self.migration;
        let mut out: Vec<u8> = Vec::new();
        // Inside a command whose earlier parts NEW already has (after a literal).
        let mut continuing = false;
        // The command as the tracker sees it: its lines and small literals (mailbox names),
        // inline; the data of a large literal (a message) ends what is kept.
        let mut command: Vec<u8> = Vec::new();
        let mut keep_literal = false;
        let mut kept_all = true;
        let mut tag: Option<String> = None;
        let mut overlong_tag: Option<String> = None;
        let mut overlong_mid_command = false;
        let mut secret: Option<String> = None;
        loop {
            let (n, event) = self.framer.advance(&input.buf[input.pos..input.len]);
            input.pos += n;
            let Some(event) = event else {
                self.flush(&mut out).await?;
                release_if_idle(&mut out, &input);
                let deadline = Instant::now() + migration.idle;
                match input.fill(&mut rd, Some(deadline)).await {
                    Ok(true) => continue,
                    Ok(false) => return Ok(End::ClientClosed),
                    // The kernel's: the client acknowledged nothing for the write timeout
                    // (TCP_USER_TIMEOUT, see `server::unacknowledged_for`).
                    Err(e) if e.raw_os_error().is_some() && e.kind() == io::ErrorKind::TimedOut => {
                        return Err(io::Error::new(e.kind(), "client stopped reading"));
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(End::IdleTimeout),
                    Err(_) => return Ok(End::ClientClosed),
                }
            };
            match event {
                Event::Line { bytes, literal } => {
                    if !continuing {
                        secret = secret_head(&bytes);
                    }
                    trace!(line = %shown(&bytes, secret.as_deref()), "client");
                    if !continuing {
                        tag = first_token(&bytes);
                        if literal.is_none()
                            && let Some(t) = command_named(&bytes, &["COMPRESS", "STARTTLS"])
                        {
                            // The proxy does not terminate these per leg: NEW must not see them.
                            let reply = format!("{t} BAD Not supported through this proxy.\r\n");
                            if let Some(end) = self.bad(reply).await? {
                                return Ok(end);
                            }
                            continue;
                        }
                        if tag.is_none() && literal.is_some_and(|l| l.sync) {
                            // NEW would answer untagged, and nobody would continue the literal.
                            if literal.is_some_and(|l| l.len > 0) {
                                self.framer.reject_literal();
                            }
                            if let Some(end) = self.bad("* BAD Invalid tag\r\n".into()).await? {
                                return Ok(end);
                            }
                            continue;
                        }
                        command.clear();
                        kept_all = true;
                    }
                    if literal.is_none() && migration.translator.is_some() {
                        // The folder the command needs is made ready first: its UID map decides
                        // how the command is translated.
                        let whole: Cow<[u8]> = match continuing {
                            false => Cow::Borrowed(&bytes),
                            true => Cow::Owned([&command[..], &bytes].concat()),
                        };
                        if let Some((folder, opens)) = migration.needs(&whole)? {
                            self.flush(&mut out).await?;
                            if !migration.ready(&folder, opens).await && !continuing {
                                let t = tag.as_deref().unwrap_or("*");
                                let reply = format!("{t} NO [UNAVAILABLE] {NOT_READY}\r\n");
                                self.reply(reply).await?;
                                continue;
                            }
                        }
                    }
                    let bytes = migration.translate_command(&bytes, literal.is_some())?;
                    if kept_all && command.len() + bytes.len() <= TRACK_MAX {
                        command.extend_from_slice(&bytes);
                    } else {
                        kept_all = false;
                    }
                    match literal {
                        Some(lit) => keep_literal = kept_all && lit.len <= TRACK_LITERAL,
                        None => {
                            self.bad_in_a_row = 0;
                            let mut before = migration.command(&command)?;
                            if migration.translator.is_some() {
                                before.ensure = None; // made ready above
                            }
                            if before.ensure.is_some()
                                || !before.changing.is_empty()
                                || before.write
                            {
                                // Earlier commands go out before the backfill makes this one wait.
                                self.flush(&mut out).await?;
                                if let Err(e) = migration.before_forward(&before).await {
                                    // NEW never sees the end of the command: it does nothing.
                                    warn!("{e}");
                                    return Ok(End::Bye(NOT_SAVED));
                                }
                            }
                        }
                    }
                    continuing = literal.is_some();
                    out.extend_from_slice(&bytes);
                    if let Some(lit) = literal.filter(|l| l.sync) {
                        // Only NEW may continue a synchronising literal.
                        *self.waiting.lock().map_err(poisoned)? = tag.clone();
                        self.flush(&mut out).await?;
                        debug!("waiting for NEW's continuation");
                        match tokio::time::timeout(migration.idle, self.continuation.recv()).await {
                            Ok(Some(Continuation::Go)) => {}
                            Ok(Some(Continuation::Refused)) => {
                                if lit.len > 0 {
                                    self.framer.reject_literal();
                                }
                                if let Some((t, _)) = &migration.translator {
                                    t.lock().map_err(poisoned)?.command_refused();
                                }
                                continuing = false;
                            }
                            Ok(None) => return Ok(End::NewClosed),
                            Err(_) => return Ok(End::Bye("NEW did not answer")),
                        }
                    } else if literal.is_none()
                        && migration.tracker.lock().map_err(poisoned)?.full()
                    {
                        // Read no more from the client until NEW has answered some.
                        self.flush(&mut out).await?;
                        migration.wait_for_room().await?;
                    }
                }
                Event::LiteralData(data) => {
                    if let Some((t, _)) = &migration.translator {
                        t.lock().map_err(poisoned)?.command_literal(data);
                    }
                    if keep_literal {
                        command.extend_from_slice(data);
                    } else {
                        kept_all = false;
                    }
                    out.extend_from_slice(data);
                    if out.len() >= FLUSH_AT {
                        migration.metrics.bytes_client_to_new(out.len() as u64);
                        let deadline = Instant::now() + migration.write_timeout;
                        send_by(&mut self.new, &out, false, deadline, "NEW").await?;
                        out.clear();
                    }
                }
                Event::Error(FrameError::LineTooLong) => {
                    overlong_tag = None;
                    overlong_mid_command = continuing;
                }
                Event::Overlong(piece) => {
                    if overlong_tag.is_none() {
                        overlong_tag = first_token(&piece);
                    }
                }
                Event::OverlongEnd { literal } => {
                    if overlong_mid_command {
                        return Ok(End::Bye("Line too long"));
                    }
                    if literal
                        .is_some_and(|l| l.len > 0 && !(l.sync && self.framer.reject_literal()))
                    {
                        return Ok(End::Bye("Line too long"));
                    }
                    continuing = false;
                    let t = overlong_tag.take().unwrap_or_else(|| "*".into());
                    if let Some(end) = self.bad(format!("{t} BAD line too long\r\n")).await? {
                        return Ok(end);
                    }
                }
                Event::Error(FrameError::LiteralLengthInvalid) => {
                    return Ok(End::Bye("Invalid literal"));
                }
                Event::Error(FrameError::LiteralTooLarge { .. }) => {}
            }
        }
    }
}

/// The NEW→client direction: relays responses, answers the continuation question of the
/// client→NEW side, places the proxy's own replies between responses, and journals a write
/// before its tagged OK reaches the client. Every write to the client is bounded by the write
/// timeout: a client that stops reading is disconnected.
struct NewToClient<'a> {
    waiting: &'a Waiting,
    continuation: mpsc::Sender<Continuation>,
    inject: mpsc::Receiver<Vec<u8>>,
    stop: watch::Receiver<bool>,
    migration: &'a Migration<'a>,
}

impl NewToClient<'_> {
    async fn run(
        self,
        mut rd: tokio::io::ReadHalf<BoxIo>,
        mut input: Input,
        wr: &mut tokio::io::WriteHalf<BoxIo>,
    ) -> io::Result<End> {
        let NewToClient {
            waiting,
            continuation: tx,
            mut inject,
            mut stop,
            migration,
        } = self;
        let metrics = migration.metrics;
        let send = async |wr: &mut tokio::io::WriteHalf<BoxIo>, out: &mut Vec<u8>, flush: bool| {
            metrics.bytes_new_to_client(out.len() as u64);
            let deadline = Instant::now() + migration.write_timeout;
            send_by(wr, out, flush, deadline, "client").await?;
            out.clear();
            io::Result::Ok(())
        };
        let mut overlong = false;
        let mut framer = Framer::new(Limits {
            max_line: match migration.translator {
                Some(_) => NEW_MAX_TRANSLATED,
                None => NEW_MAX_LINE,
            },
            max_literal: u64::MAX,
        });
        let mut out: Vec<u8> = Vec::new();
        let mut continuing = false;
        let mut watching: Option<Watch> = None;
        loop {
            let (n, event) = framer.advance(&input.buf[input.pos..input.len]);
            input.pos += n;
            let Some(event) = event else {
                // Between two responses the proxy's own replies may go out.
                let boundary = !continuing
                    && !overlong
                    && framer.buffered() == 0
                    && framer.literal_remaining().is_none();
                if boundary {
                    take_replies(&mut inject, &mut out);
                }
                if !out.is_empty() {
                    send(wr, &mut out, true).await?;
                }
                release_if_idle(&mut out, &input);
                tokio::select! {
                    r = input.fill(&mut rd, None) => match r {
                        Ok(true) => continue,
                        Ok(false) | Err(_) => return Ok(End::NewClosed),
                    },
                    Some(mut reply) = inject.recv(), if boundary => {
                        send(wr, &mut reply, true).await?;
                        continue;
                    }
                    () = stopped(&mut stop), if boundary => return Ok(End::Bye(SHUTDOWN_TEXT)),
                }
            };
            match event {
                Event::Line { bytes, literal } => {
                    let starts = !continuing;
                    if starts {
                        // Replies queued before this response was read answer commands sent
                        // before the one it answers: they keep their place.
                        take_replies(&mut inject, &mut out);
                    }
                    continuing = literal.is_some();
                    let translated = migration.translate_response(&bytes, literal.is_some())?;
                    if starts && bytes.starts_with(b"+") {
                        if take_waiting(waiting)?.is_some() {
                            out.extend_from_slice(&bytes);
                            send(wr, &mut out, true).await?;
                            let _ = tx.send(Continuation::Go).await;
                            continue;
                        }
                    } else if starts && literal.is_none() {
                        let refused = {
                            let tag = first_token(&bytes);
                            let mut w = waiting.lock().map_err(poisoned)?;
                            let refused = tag.is_some() && *w == tag;
                            if refused {
                                *w = None;
                            }
                            refused
                        };
                        if refused {
                            let _ = tx.send(Continuation::Refused).await;
                        }
                        if let Err(text) = migration.before_response(&bytes, &mut watching).await? {
                            if !out.is_empty() {
                                send(wr, &mut out, true).await?;
                            }
                            return Ok(End::Bye(text));
                        }
                        if let Some(rewritten) = rewrite_capabilities(&bytes) {
                            out.extend_from_slice(&rewritten);
                            continue;
                        }
                    } else if starts {
                        // A FETCH of a body: its UID, before the literal, still counts.
                        let mut tracker = migration.tracker.lock().map_err(poisoned)?;
                        tracker.untagged_start(&bytes);
                    }
                    out.extend_from_slice(&translated);
                }
                Event::LiteralData(data) => {
                    if let Some((t, _)) = &migration.translator {
                        t.lock().map_err(poisoned)?.response_literal(data);
                    }
                    out.extend_from_slice(data);
                }
                Event::Overlong(piece) => out.extend_from_slice(&piece),
                Event::OverlongEnd { literal } => {
                    overlong = false;
                    continuing = literal.is_some();
                }
                Event::Error(FrameError::LineTooLong) => {
                    if !continuing {
                        take_replies(&mut inject, &mut out);
                    }
                    if migration.translator.is_some() {
                        warn!(
                            "a response line of NEW longer than {NEW_MAX_TRANSLATED} bytes reaches \
                             the client with NEW's numbers"
                        );
                    }
                    overlong = true;
                }
                Event::Error(_) => {}
            }
            if out.len() >= FLUSH_AT {
                send(wr, &mut out, false).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_lines_are_filtered() {
        let got = rewrite_capabilities(
            b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN COMPRESS=DEFLATE IDLE STARTTLS\r\n",
        );
        assert_eq!(
            got.as_deref(),
            Some(&b"* CAPABILITY IMAP4rev1 IDLE\r\n"[..])
        );
        let got = rewrite_capabilities(b"a1 OK [CAPABILITY IMAP4rev1 LOGINDISABLED MOVE] Hi\r\n");
        assert_eq!(
            got.as_deref(),
            Some(&b"a1 OK [CAPABILITY IMAP4rev1 MOVE] Hi\r\n"[..])
        );
        assert_eq!(
            rewrite_capabilities(b"* 1 FETCH (ENVELOPE (\"[CAPABILITY X]\"))\r\n"),
            None
        );
        assert_eq!(
            rewrite_capabilities(b"* OK [CAPABILITY IMAP4rev1\r\n"),
            None
        );
    }

    #[test]
    fn credentials_never_reach_a_trace() {
        for (line, head) in [
            (&b"a1 LOGIN joe \"pw\"\r\n"[..], Some("a1 LOGIN")),
            (b"a2 login {3}\r\n", Some("a2 LOGIN")),
            (
                b"x AUTHENTICATE PLAIN AGpvZQBwdw==\r\n",
                Some("x AUTHENTICATE"),
            ),
            (b"a3 SELECT INBOX\r\n", None),
            (b"LOGIN joe pw\r\n", None),
        ] {
            assert_eq!(secret_head(line).as_deref(), head, "{line:?}");
        }
        assert_eq!(
            shown(b"a1 LOGIN joe pw\r\n", Some("a1 LOGIN")),
            "a1 LOGIN ***"
        );
        assert_eq!(shown(b" \"pw\"\r\n", Some("a2 LOGIN")), "a2 LOGIN ***");
        assert_eq!(shown(b"a3 SELECT INBOX\r\n", None), "a3 SELECT INBOX");
    }

    #[test]
    fn tags() {
        assert_eq!(first_token(b"a1 NOOP\r\n").as_deref(), Some("a1"));
        assert_eq!(first_token(b"* OK\r\n"), None);
        assert_eq!(first_token(b" x\r\n"), None);
    }

    #[test]
    fn sasl_plain_decodes() {
        let ok = sasl_plain(B64.encode("\0alice\0pw").as_bytes());
        assert!(matches!(ok, Ok(Auth::Plain { ref user, .. }) if user == "alice"));
        let (user, pw) = ok.as_ref().ok().and_then(Auth::credentials).unwrap();
        assert_eq!((user.as_str(), pw.expose()), ("alice", "pw"));
        // On behalf of another user: that user's password is not known.
        let other = sasl_plain(B64.encode("bob\0alice\0pw").as_bytes()).unwrap();
        assert_eq!(other.user(), "bob");
        assert!(other.credentials().is_none());
        assert!(sasl_plain(b"*").is_err());
        assert!(sasl_plain(b"!!").is_err());
    }
}
