//! One client connection of the transparent proxy: [`run`] takes it through `prelogin` (the
//! proxy's own greeting and commands until NEW accepts a login), then `relay` (bytes both ways).
//! Here: the per-connection [`Settings`], the buffered input and what both phases share
//! (deadline-bound writes, `* BYE`, tags, trace lines with credentials masked).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ClientConfig;
use tracing::{debug, info};

use super::prelogin::prelogin;
use super::relay::relay;
use super::throttle::LoginThrottle;
use super::upstream::Early;
use crate::config;

// `upstream` imports these from here.
pub(super) use super::capabilities::{capability_span, filter_capabilities, rewrite_capabilities};
pub(super) use super::prelogin::Auth;

/// A byte stream to a client or to NEW (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Read buffer sizes on both legs: small while a connection is idle or chatty, growing while reads
/// fill it (bulk transfers), back to small after a short read. The bound on bytes held per leg.
const INPUT_MIN: usize = 4 * 1024;
const INPUT_MAX: usize = 64 * 1024;
/// The last words to a client (BYE) get this long to be written.
pub(super) const BYE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sent to every open session when the server shuts down.
pub(super) const SHUTDOWN_TEXT: &str = "Server shutting down";

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
pub(super) struct Input {
    pub(super) buf: Box<[u8]>,
    pub(super) pos: usize,
    pub(super) len: usize,
}

/// Gives back an output buffer's memory after a quiet exchange (idle connections stay small).
pub(super) fn release_if_idle(out: &mut Vec<u8>, input: &Input) {
    if input.is_quiet() && out.is_empty() && out.capacity() > INPUT_MIN {
        *out = Vec::new();
    }
}

impl Input {
    pub(super) fn new() -> Self {
        Input {
            buf: vec![0; INPUT_MIN].into_boxed_slice(),
            pos: 0,
            len: 0,
        }
    }

    pub(super) fn with(bytes: &[u8]) -> Self {
        let mut input = Input::new();
        if bytes.len() > input.buf.len() {
            input.buf = bytes.to_vec().into_boxed_slice();
        }
        input.buf[..bytes.len()].copy_from_slice(bytes);
        input.len = bytes.len();
        input
    }

    /// Reads more once everything was consumed; false at end of stream.
    pub(super) async fn fill<R: AsyncRead + Unpin + ?Sized>(
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

/// Writes `bytes` to `peer` (and flushes, with `flush`), giving up at `deadline`: a peer that
/// does not read is disconnected, never buffered for.
pub(super) async fn send_by<W: AsyncWrite + Unpin + ?Sized>(
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

/// Says goodbye within [`BYE_TIMEOUT`]: `* BYE text`, then closes our side.
pub(super) async fn last_words<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, text: &str) {
    let deadline = Instant::now() + BYE_TIMEOUT;
    let bye = format!("* BYE {text}\r\n");
    if send_by(w, bye.as_bytes(), true, deadline, "client")
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout_at(deadline, w.shutdown()).await;
    }
}

/// `tag NAME` of a line that starts a LOGIN or AUTHENTICATE: its lines are never logged.
pub(super) fn secret_head(line: &[u8]) -> Option<String> {
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
pub(super) fn shown(line: &[u8], secret: Option<&str>) -> String {
    match secret {
        Some(head) => format!("{head} ***"),
        None => String::from_utf8_lossy(line.trim_ascii_end()).into_owned(),
    }
}

/// `tag` when `line` is `tag NAME ...` with NAME one of `names` (ASCII case-insensitive).
pub(super) fn command_named(line: &[u8], names: &[&str]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
