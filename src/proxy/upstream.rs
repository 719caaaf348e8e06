//! NEW's side of a client's login. [`Early`] opens NEW's connection (TCP, TLS or STARTTLS, the
//! greeting) in a task of its own as soon as the client is accepted, so it is ready by the time
//! the client has read the proxy's greeting and sent its LOGIN; dropping it (the client left, the
//! login deadline passed, the server shuts down) closes that connection. [`login`] then tells NEW
//! the client's address (`ID x-originating-ip`) and logs in, both in one write, and reads both
//! tagged answers; an early connection NEW closed in the meantime (or left to a login process of
//! its previous run, which answers `NO [UNAVAILABLE]`) is replaced by a fresh one.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::instrument::WithSubscriber;
use tracing::{Instrument, debug};

use super::session::{
    Auth, BoxIo, Settings, capability_span, filter_capabilities, first_token, rewrite_capabilities,
    stopped,
};
use crate::config::Security;
use crate::imap::QuickAck;
use crate::secret::Secret;

/// Connecting to NEW, and logging in once connected.
pub const NEW_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest response line from NEW during the login.
const NEW_MAX_LINE: usize = 1024 * 1024;
/// Untagged lines NEW may send while answering one login command.
const MAX_UNTAGGED: usize = 100;

/// What went wrong with NEW during a login.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to NEW: {0}")]
    Connect(#[source] io::Error),
    #[error("TLS with NEW: {0}")]
    Tls(#[source] io::Error),
    #[error("no TLS configuration for NEW")]
    NoTlsConfig,
    #[error("NEW's host name is not valid for TLS: {0}")]
    ServerName(String),
    #[error("NEW greeting: {0}")]
    Greeting(String),
    #[error("NEW refused STARTTLS")]
    StartTlsRefused,
    #[error("NEW closed the connection")]
    Closed,
    #[error("talking to NEW: {0}")]
    Io(#[from] io::Error),
    #[error("NEW sent an overlong line")]
    Overlong,
    #[error("NEW is chatty during login")]
    Chatty,
    #[error("unexpected continuation from NEW")]
    Continuation,
    #[error("NEW did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("connecting to NEW ended abnormally: {0}")]
    Task(String),
}

/// NEW's answer to the login.
pub(super) enum NewLogin {
    /// `text`: the tagged OK line without its tag, capability list filtered.
    Ok {
        new: BoxIo,
        leftover: Vec<u8>,
        text: String,
    },
    /// NEW's tagged NO/BAD line without its tag.
    Refused(String),
}

/// NEW's connection opened ahead of the login, in a task of its own. Dropping it stops the
/// connecting or closes the connection: it never outlives the client's session.
pub struct Early(Option<JoinHandle<Result<Upstream, UpstreamError>>>);

impl Early {
    /// Starts connecting to NEW (within [`NEW_TIMEOUT`], given up when the server shuts down).
    pub fn start(settings: Arc<Settings>, mut stop: watch::Receiver<bool>) -> Early {
        let connecting = async move {
            let started = Instant::now();
            let up = tokio::select! {
                r = tokio::time::timeout(NEW_TIMEOUT, connect(&settings)) => {
                    r.unwrap_or(Err(UpstreamError::TimedOut(NEW_TIMEOUT)))
                }
                () = stopped(&mut stop) => Err(UpstreamError::ShuttingDown),
            };
            let ms = started.elapsed().as_millis();
            match &up {
                Ok(_) => debug!(ms, "connected to NEW ahead of the login"),
                Err(e) => debug!(ms, "connecting to NEW ahead of the login: {e}"),
            }
            up
        };
        let task = connecting.in_current_span().with_current_subscriber();
        Early(Some(tokio::spawn(task)))
    }

    /// No connection ahead: [`login`] connects.
    pub fn none() -> Early {
        Early(None)
    }

    /// The early connection (waiting for it if it is still being opened), once.
    async fn take(&mut self) -> Option<Result<Upstream, UpstreamError>> {
        let task = self.0.as_mut()?;
        let joined = task.await;
        self.0 = None;
        Some(joined.unwrap_or_else(|e| Err(UpstreamError::Task(e.to_string()))))
    }
}

impl Drop for Early {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            // A finished task's connection is dropped with its handle.
            task.abort();
        }
    }
}

/// A line-oriented view of NEW during login.
pub(super) struct Upstream {
    io: BoxIo,
    buf: Vec<u8>,
    /// NEW's greeting offered SASL-IR: AUTHENTICATE PLAIN goes in one line.
    sasl_ir: bool,
}

impl Upstream {
    fn new(io: BoxIo) -> Upstream {
        Upstream {
            io,
            buf: Vec::new(),
            sasl_ir: false,
        }
    }

    async fn line(&mut self) -> Result<Vec<u8>, UpstreamError> {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=p).collect());
            }
            if self.buf.len() > NEW_MAX_LINE {
                return Err(UpstreamError::Overlong);
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Err(UpstreamError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads up to the line tagged `tag`; returns the untagged lines and the tagged one.
    async fn tagged(&mut self, tag: &str) -> Result<(Vec<Vec<u8>>, Vec<u8>), UpstreamError> {
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await?;
            if first_token(&line).as_deref() == Some(tag) {
                return Ok((untagged, line));
            }
            if line.starts_with(b"+") {
                return Err(UpstreamError::Continuation);
            }
            if untagged.len() > MAX_UNTAGGED {
                return Err(UpstreamError::Chatty);
            }
            untagged.push(line);
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }
}

/// Opens a connection to NEW and reads its greeting (after STARTTLS with `security = starttls`).
async fn connect(settings: &Settings) -> Result<Upstream, UpstreamError> {
    let address = settings.new.address.as_str();
    let tcp = TcpStream::connect(address)
        .await
        .map_err(UpstreamError::Connect)?;
    let tcp = QuickAck::new(tcp).map_err(UpstreamError::Connect)?;
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = |tcp: BoxIo| async {
        let config = settings.new_tls.clone().ok_or(UpstreamError::NoTlsConfig)?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| UpstreamError::ServerName(e.to_string()))?;
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(UpstreamError::Tls)?;
        Ok::<BoxIo, UpstreamError>(Box::new(stream))
    };
    let mut up = match settings.new.security {
        Security::Tls => Upstream::new(tls(Box::new(tcp)).await?),
        Security::None | Security::Starttls => Upstream::new(Box::new(tcp)),
    };
    let greeting = up.line().await?;
    if !greeting.starts_with(b"* OK") {
        return Err(UpstreamError::Greeting(
            String::from_utf8_lossy(&greeting).trim_end().to_owned(),
        ));
    }
    if settings.new.security == Security::Starttls {
        up.send(b"P0 STARTTLS\r\n").await?;
        let (_, done) = up.tagged("P0").await?;
        if !done.starts_with(b"P0 OK") {
            return Err(UpstreamError::StartTlsRefused);
        }
        // Capabilities seen before TLS are forgotten (RFC 3501 6.2.1): no SASL-IR.
        return Ok(Upstream::new(tls(up.io).await?));
    }
    up.sasl_ir = capability_span(&greeting).is_some_and(|(s, e)| {
        greeting[s..e]
            .split(|&b| b == b' ')
            .any(|c| c.eq_ignore_ascii_case(b"SASL-IR"))
    });
    Ok(up)
}

/// Logs in to NEW with the client's credentials on the early connection (or a new one), after
/// telling NEW the client's address. An early connection that breaks or answers
/// `NO [UNAVAILABLE]` is replaced by a new one, once.
pub(super) async fn login(
    settings: &Settings,
    early: &mut Early,
    peer: SocketAddr,
    auth: &Auth,
) -> Result<NewLogin, UpstreamError> {
    match early.take().await {
        Some(Ok(up)) => match attempt(up, peer, auth).await {
            Ok(NewLogin::Refused(text)) if unavailable(&text) => {
                // A Dovecot restarted meanwhile may leave its old login process on the
                // connection, without its authentication service: a verdict on nothing.
                debug!(
                    "NEW's early connection cannot authenticate (UNAVAILABLE), connecting again"
                );
            }
            // NEW closed it meanwhile (restarted, timed out), maybe as the login arrived: one
            // more login attempt costs nothing.
            Err(e @ (UpstreamError::Closed | UpstreamError::Io(_))) => {
                debug!("NEW's early connection is gone ({e}), connecting again");
            }
            other => return other,
        },
        Some(Err(e)) => debug!("connecting ahead of the login failed ({e}), connecting again"),
        None => {}
    }
    let up = connect(settings).await?;
    attempt(up, peer, auth).await
}

/// NEW's refusal says it could not check the credentials (`NO [UNAVAILABLE]`, RFC 5530).
fn unavailable(text: &str) -> bool {
    let mut words = text.split_ascii_whitespace();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case("NO"))
        && words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("[UNAVAILABLE]"))
}

/// One login on `up`: `ID x-originating-ip` (honoured by Dovecot from `login_trusted_networks`;
/// its answer is ignored) and LOGIN or AUTHENTICATE PLAIN written at once, NEW answering the ID
/// first.
async fn attempt(
    mut up: Upstream,
    peer: SocketAddr,
    auth: &Auth,
) -> Result<NewLogin, UpstreamError> {
    let mut out = format!(
        "PI ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\")\r\n",
        peer.ip(),
        peer.port()
    )
    .into_bytes();
    // The SASL PLAIN response still to send after NEW's continuation.
    let mut pending: Option<Secret> = None;
    let plain = match auth {
        Auth::Login { user, password }
            if quotable(user.as_bytes()) && quotable(password.expose_bytes()) =>
        {
            out.extend_from_slice(format!("P1 LOGIN {} ", quote(user)).as_bytes());
            out.extend_from_slice(&quote_bytes(password.expose_bytes()));
            out.extend_from_slice(b"\r\n");
            None
        }
        // 8-bit bytes cannot be quoted: SASL PLAIN carries them exactly.
        Auth::Login { user, password } => {
            let mut raw = format!("\0{user}\0").into_bytes();
            raw.extend_from_slice(password.expose_bytes());
            Some(Secret::new(B64.encode(raw)))
        }
        Auth::Plain { response, .. } => Some(response.clone()),
    };
    if let Some(response) = plain {
        if up.sasl_ir {
            out.extend_from_slice(b"P1 AUTHENTICATE PLAIN ");
            out.extend_from_slice(response.expose_bytes());
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(b"P1 AUTHENTICATE PLAIN\r\n");
            pending = Some(response);
        }
    }
    // Credentials inside: never printed.
    let out = Secret::from_bytes(out);
    up.send(out.expose_bytes()).await?;
    drop(out);
    up.tagged("PI").await?;
    if let Some(response) = pending {
        let line = up.line().await?;
        if line.starts_with(b"+") {
            up.send(&[response.expose_bytes(), b"\r\n"].concat())
                .await?;
        } else {
            up.buf.splice(0..0, line);
        }
    }
    let (untagged, done) = up.tagged("P1").await?;
    let rest = String::from_utf8_lossy(&done[3..]).into_owned();
    if !rest.get(..3).is_some_and(|s| s.eq_ignore_ascii_case("OK ")) {
        return Ok(NewLogin::Refused(rest));
    }
    let mut text = rest;
    if let Some(rewritten) = rewrite_capabilities(&done) {
        text = String::from_utf8_lossy(&rewritten[3..]).into_owned();
    } else {
        // Tell the client NEW's capabilities in the OK, as a fresh client expects.
        let mut caps: Option<String> = untagged.iter().find_map(|l| {
            let (s, e) = capability_span(l)?;
            Some(String::from_utf8_lossy(&l[s..e]).into_owned())
        });
        if caps.is_none() {
            up.send(b"P2 CAPABILITY\r\n").await?;
            let (untagged, _) = up.tagged("P2").await?;
            caps = untagged.iter().find_map(|l| {
                let (s, e) = capability_span(l)?;
                Some(String::from_utf8_lossy(&l[s..e]).into_owned())
            });
        }
        if let Some(caps) = caps {
            // `text` starts with "OK " (checked above): its human-readable rest, never data.
            let body = text.get(3..).unwrap_or_default();
            text = format!("OK [CAPABILITY {}] {body}", filter_capabilities(&caps));
        }
    }
    Ok(NewLogin::Ok {
        new: up.io,
        leftover: up.buf,
        text,
    })
}

/// True when `s` can be sent as a quoted string.
fn quotable(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| b.is_ascii() && b != 0 && b != b'\r' && b != b'\n')
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `s` as a quoted string (only for [`quotable`] bytes).
fn quote_bytes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "192.0.2.7:5555";
    const ID: &[u8] =
        b"PI ID (\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"5555\")\r\n";

    /// A NEW on the other end of a pipe that answers nothing until it has read `expect` (so a
    /// proxy waiting for the ID's answer before sending its login never gets one), then
    /// `answer`; returns what it read.
    async fn fake_new(
        mut io: tokio::io::DuplexStream,
        expect: usize,
        answer: &'static [u8],
    ) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while got.len() < expect {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        io.write_all(answer).await.unwrap();
        got
    }

    fn upstream(sasl_ir: bool) -> (Upstream, tokio::io::DuplexStream) {
        let (proxy_side, new_side) = tokio::io::duplex(4096);
        let mut up = Upstream::new(Box::new(proxy_side));
        up.sasl_ir = sasl_ir;
        (up, new_side)
    }

    async fn run(
        sasl_ir: bool,
        auth: Auth,
        expect: &[u8],
        answer: &'static [u8],
    ) -> (Result<NewLogin, UpstreamError>, Vec<u8>) {
        let (up, new_side) = upstream(sasl_ir);
        let peer: SocketAddr = PEER.parse().unwrap();
        let login = async {
            tokio::time::timeout(Duration::from_secs(5), attempt(up, peer, &auth))
                .await
                .expect("the login is answered")
        };
        tokio::join!(login, fake_new(new_side, expect.len(), answer))
    }

    fn text(r: Result<NewLogin, UpstreamError>) -> String {
        match r {
            Ok(NewLogin::Ok { text, .. }) => format!("OK: {text}"),
            Ok(NewLogin::Refused(text)) => format!("refused: {text}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[tokio::test]
    async fn id_and_login_go_in_one_write() {
        let auth = Auth::Login {
            user: "joe".into(),
            password: Secret::new("p\"w"),
        };
        let expect = [ID, b"P1 LOGIN \"joe\" \"p\\\"w\"\r\n"].concat();
        let (r, got) = run(
            true,
            auth,
            &expect,
            b"PI OK ID done\r\nP1 OK [CAPABILITY IMAP4rev1 IDLE STARTTLS] Logged in\r\n",
        )
        .await;
        assert_eq!(got, expect);
        assert_eq!(text(r), "OK: OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
    }

    #[tokio::test]
    async fn authenticate_plain_goes_in_one_line_with_sasl_ir() {
        let auth = Auth::Plain {
            user: "joe".into(),
            response: Secret::new("AGpvZQBwdw=="),
            authcid: "joe".into(),
            password: Secret::new("pw"),
        };
        let expect = [ID, b"P1 AUTHENTICATE PLAIN AGpvZQBwdw==\r\n"].concat();
        let (r, got) = run(
            true,
            auth,
            &expect,
            b"* BYE ignored\r\nPI OK\r\nP1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        )
        .await;
        assert_eq!(got, expect);
        assert_eq!(
            text(r),
            "refused: NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
        );
    }

    #[tokio::test]
    async fn authenticate_plain_without_sasl_ir_waits_for_the_continuation() {
        // An 8-bit password cannot be quoted: it goes as SASL PLAIN.
        let auth = Auth::Login {
            user: "joe".into(),
            password: Secret::from_bytes(b"caf\xe9".to_vec()),
        };
        let (up, mut new_side) = upstream(false);
        let peer: SocketAddr = PEER.parse().unwrap();
        let new = async move {
            let first = [ID, b"P1 AUTHENTICATE PLAIN\r\n"].concat();
            let mut got = vec![0u8; first.len()];
            new_side.read_exact(&mut got).await.unwrap();
            assert_eq!(got, first);
            new_side.write_all(b"PI OK\r\n+ \r\n").await.unwrap();
            let response = B64.encode(b"\0joe\0caf\xe9");
            let mut got = vec![0u8; response.len() + 2];
            new_side.read_exact(&mut got).await.unwrap();
            assert_eq!(got, format!("{response}\r\n").into_bytes());
            new_side
                .write_all(b"P1 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
                .await
                .unwrap();
            new_side
        };
        let login = tokio::time::timeout(Duration::from_secs(5), attempt(up, peer, &auth));
        let (r, _new) = tokio::join!(login, new);
        assert_eq!(
            text(r.expect("answered")),
            "OK: OK [CAPABILITY IMAP4rev1] Logged in\r\n"
        );
    }

    #[test]
    fn unavailable_refusals() {
        assert!(unavailable("NO [UNAVAILABLE] Internal error occurred.\r\n"));
        assert!(unavailable("no [unavailable] x"));
        assert!(!unavailable(
            "NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
        ));
        assert!(!unavailable("BAD [UNAVAILABLE]x"));
        assert!(!unavailable(""));
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_an_error_to_retry() {
        let auth = Auth::Login {
            user: "joe".into(),
            password: Secret::new("pw"),
        };
        let (up, new_side) = upstream(true);
        drop(new_side);
        let peer: SocketAddr = PEER.parse().unwrap();
        let r = attempt(up, peer, &auth).await;
        assert!(
            matches!(r, Err(UpstreamError::Closed | UpstreamError::Io(_))),
            "{}",
            text(r)
        );
        // Closed after the ID's answer, before the login's.
        let (r, _) = run(true, auth, &[ID, b"P1 LOGIN"].concat(), b"PI OK\r\n").await;
        assert!(matches!(r, Err(UpstreamError::Closed)), "{}", text(r));
    }
}
