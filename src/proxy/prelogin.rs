//! Before login the proxy owns the connection: its greeting and the pre-login commands
//! (CAPABILITY, NOOP, ID, LOGOUT, STARTTLS); LOGIN / AUTHENTICATE PLAIN are checked against NEW on
//! the connection [`upstream`] opened when the client arrived (ID `x-originating-ip` first), and a
//! refused login is answered after a delay that grows with repeated failures from the same address.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Span, debug, info, trace, warn};

use super::inspect::{Arg, Command, inspect};
use super::session::{
    BYE_TIMEOUT, BoxIo, Input, SHUTDOWN_TEXT, Settings, first_token, last_words, secret_head,
    send_by, shown, stopped,
};
use super::upstream::{self, Early, NEW_TIMEOUT, NewLogin};
use crate::imap::framer::{Event, FrameError, Framer, Limits};
use crate::migrate::{Account, ClientCaches, Login};
use crate::secret::Secret;

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
pub(super) struct LoggedIn {
    pub(super) client: BoxIo,
    pub(super) input: Input,
    pub(super) framer: Framer,
    pub(super) new: BoxIo,
    pub(super) new_leftover: Vec<u8>,
    /// The user's migration state (`None`: plain relay).
    pub(super) account: Option<Arc<Account>>,
    /// The numbers each folder shows, when the account's folders keep client caches.
    pub(super) caches: Option<Arc<ClientCaches>>,
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

/// A reply of the proxy's own before login, written by the login deadline.
async fn answer(client: &mut BoxIo, deadline: Instant, bytes: &[u8]) -> io::Result<()> {
    send_by(client, bytes, true, deadline, "client").await
}

/// The pre-login dialogue. `None`: the client left (or was sent away) before logging in.
pub(super) async fn prelogin(
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

#[cfg(test)]
mod tests {
    use super::*;

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
