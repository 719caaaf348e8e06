//! The proxy's listeners: accept loops for plain IMAP and implicit TLS (each connection starting
//! with a PROXY protocol header when `[listen] proxy_protocol` is set), connection limits (in
//! total and per client address), one tracing span and one task per connection, the admin
//! endpoint (`/metrics`, `/health`), reloads (SIGHUP and the admin API: each connection takes the
//! settings in force when it is accepted, see [`super::reload`]), and graceful shutdown: when the
//! shutdown future completes, listeners close, every open session sends `* BYE` between two
//! responses and closes, and [`serve`] waits for them up to [`SHUTDOWN_GRACE`] before returning.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::instrument::WithSubscriber;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use super::admin::{self, Admin};
use super::metrics::Metrics;
use super::proxy_protocol::{self, Header};
use super::reload::{LogControl, Reloader};
use super::session::{self, BoxIo, Settings};
use super::throttle::LoginThrottle;
use super::upstream::Early;
use crate::cidr::{self, Cidr};
use crate::config::{Config, Security, ValidationError};
use crate::imap::QuickAck;
use crate::lock::Swap;
use crate::migrate::Migrator;
use crate::ops;
use crate::store;
use crate::sweep::{self, Control, Mode};
use crate::tls::{self, TlsError};

/// How long [`serve`] waits for open sessions to close after the shutdown future completed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Already bound listeners (tests bind `127.0.0.1:0` themselves).
#[derive(Default)]
pub struct Listeners {
    pub imap: Option<TcpListener>,
    pub imaps: Option<TcpListener>,
    /// `[admin] listen`: `/metrics` and `/health`.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `[listen]`.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let imap = match config.listen.imap {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let imaps = match config.listen.imaps {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let admin = match &config.admin {
            Some(a) => Some(TcpListener::bind(a.listen).await?),
            None => None,
        };
        Ok(Listeners { imap, imaps, admin })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error("listen.imaps needs a [tls] section")]
    ImapsWithoutTls,
    #[error(transparent)]
    Config(#[from] ValidationError),
}

/// Builds the per-session settings from the configuration (reads the PEM files).
pub fn settings(config: &Config) -> Result<Settings, ServeError> {
    let new_tls = match config.new.security {
        Security::None => None,
        Security::Tls | Security::Starttls => Some(tls::client_config(
            config.new.verify,
            config.new.ca.as_deref(),
        )?),
    };
    Ok(Settings {
        new: config.new.clone(),
        limits: config.limits.clone(),
        new_tls,
        acceptor: acceptor(config)?,
        plaintext_login: config.listen.plaintext_login,
        login_throttle: Arc::new(LoginThrottle::new(config.new.login_format()?)),
        metrics: Arc::new(Metrics::new()),
        migrator: None,
    })
}

/// The proxy's own TLS: the certificate files of `[tls]` read now.
fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    Ok(match &config.tls {
        Some(t) => Some(TlsAcceptor::from(t.server_config()?)),
        None => None,
    })
}

/// The settings of a reload: certificates read again and `[limits]` from `config`; what only a
/// restart changes ([`super::reload::restart_needed`]) and the shared state (metrics, the login
/// throttle, the migration) stay those of `previous`.
pub(crate) fn reloaded_settings(
    previous: &Settings,
    config: &Config,
) -> Result<Settings, TlsError> {
    Ok(Settings {
        new: previous.new.clone(),
        limits: config.limits.clone(),
        new_tls: previous.new_tls.clone(),
        acceptor: acceptor(config)?,
        plaintext_login: previous.plaintext_login,
        login_throttle: Arc::clone(&previous.login_throttle),
        metrics: Arc::clone(&previous.metrics),
        migrator: previous.migrator.clone(),
    })
}

/// Counts open connections against a maximum read at each entry (a reload may change it); the
/// count drops with the guard.
#[derive(Default)]
struct Total(Arc<AtomicU32>);

struct TotalGuard(Arc<AtomicU32>);

impl Total {
    fn enter(&self, max: u32) -> Option<TotalGuard> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(TotalGuard(Arc::clone(&self.0)))
    }
}

impl Drop for TotalGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts connections per client network ([`cidr::network_of`]: an IPv4 address or an IPv6
/// /64); the count drops with the guard.
#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

const COUNTS: &str = "the per-address connection counts";

struct IpGuard {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpGuard> {
        let ip = cidr::network_of(ip);
        let mut counts = crate::lock::recover(&self.counts, COUNTS);
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpGuard {
            per_ip: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        // Recovered if poisoned: each count changes by one, and a drop has no error to return.
        let mut counts = crate::lock::recover(&self.per_ip.counts, COUNTS);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

struct Shared {
    /// The settings in force; each connection takes them once, when accepted.
    settings: Arc<Swap<Settings>>,
    total: Total,
    per_ip: Arc<PerIp>,
    /// Every connection starts with a PROXY protocol header, sent by one of these sources
    /// (`None`: no header expected).
    proxy_protocol_from: Option<Vec<Cidr>>,
    shutdown: watch::Receiver<bool>,
    /// Never used to send: every connection holds it (through `Shared`) until it ends, so the
    /// receiver in [`serve`] sees the channel close when the last one is gone.
    _alive: mpsc::Sender<()>,
}

/// How a running proxy is reloaded ([`super::reload`]).
#[derive(Default)]
pub struct Reload {
    /// The configuration file read again on SIGHUP or `POST /reload`; `None`: no reloads.
    pub file: Option<PathBuf>,
    /// The process's log filter, for `[log] level`.
    pub log: Option<Arc<dyn LogControl>>,
}

/// Serves the listeners until `shutdown` completes, then lets open sessions say BYE and waits
/// for them (at most [`SHUTDOWN_GRACE`]). Without a file to read again: no reloads.
pub async fn serve(
    listeners: Listeners,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with(listeners, config, Reload::default(), shutdown).await
}

/// [`serve`], reloading `reload.file` on SIGHUP and on the admin API's `POST /reload`.
pub async fn serve_with(
    listeners: Listeners,
    config: &Config,
    reload: Reload,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut settings = settings(config)?;
    if listeners.imaps.is_some() && settings.acceptor.is_none() {
        return Err(ServeError::ImapsWithoutTls);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    if config.old.is_some() {
        let location = config.state.location()?;
        let store = store::open(&location).await?;
        settings.migrator = Migrator::new(config, store, stop_rx.clone())?.map(Arc::new);
    }
    // The sweeper ([sweep] enabled) shares the accounts' state with the sessions.
    let sweeper = match (&settings.migrator, config.sweep.enabled) {
        (Some(m), true) => {
            let control = Arc::new(Control::new());
            let run = sweep::run(
                Arc::clone(m),
                config.sweep.clone(),
                Arc::clone(&control),
                Mode::Forever,
                stop_rx.clone(),
            );
            tokio::spawn(run.in_current_span().with_current_subscriber());
            Some(control)
        }
        _ => None,
    };
    let metrics = Arc::clone(&settings.metrics);
    let settings = Arc::new(Swap::new(settings));
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let reloader = Arc::new(Reloader::new(
        reload.file,
        config.clone(),
        Arc::clone(&settings),
        sweeper.clone(),
        reload.log,
    ));
    let migrator = settings.get().migrator.clone();
    let admin = match &config.admin {
        Some(section) => Some(
            Admin::new(section, metrics, ops::open_store(config).await, sweeper)
                .with_reloader(Arc::clone(&reloader))
                .with_migrator(migrator),
        ),
        None => None,
    };
    let admin = admin_loop(listeners.admin, admin, stop_rx.clone());
    let hangups = reload_on_hangup(reloader, stop_rx.clone());
    let shared = Arc::new(Shared {
        settings,
        total: Total::default(),
        per_ip: Arc::new(PerIp::default()),
        proxy_protocol_from: config
            .listen
            .proxy_protocol
            .then(|| config.listen.proxy_protocol_from.clone()),
        shutdown: stop_rx,
        _alive: alive_tx,
    });
    let plain = accept_loop(listeners.imap, false, Arc::clone(&shared));
    let implicit = accept_loop(listeners.imaps, true, Arc::clone(&shared));
    tokio::select! {
        () = shutdown => {}
        () = async { tokio::join!(plain, implicit, admin, hangups); } => {}
    }
    // The accept loops are gone (and their listeners closed); only connections hold `Shared`.
    drop(shared);
    let _ = stop_tx.send(true);
    info!("shutting down");
    if tokio::time::timeout(SHUTDOWN_GRACE, alive_rx.recv())
        .await
        .is_err()
    {
        warn!("sessions still open after the shutdown grace period");
    }
    Ok(())
}

/// Reloads on each SIGHUP until `stop` (pending forever where there are no signals). A SIGHUP
/// without a file to read again is logged and changes nothing.
async fn reload_on_hangup(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                warn!("cannot listen for SIGHUP, reload with the admin API only: {e}");
                return std::future::pending().await;
            }
        };
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => {}
                () = session::stopped(&mut stop) => return std::future::pending().await,
            }
            info!("SIGHUP: reloading");
            let r = Arc::clone(&reloader);
            // The outcome is logged by `reload`; a panic in it is logged here.
            if let Err(e) = tokio::task::spawn_blocking(move || r.reload()).await {
                warn!("reload ended abnormally: {e}");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloader, stop);
        std::future::pending().await
    }
}

async fn admin_loop(
    listener: Option<TcpListener>,
    admin: Option<Admin>,
    stop: watch::Receiver<bool>,
) {
    match (listener, admin) {
        (Some(listener), Some(admin)) => admin::serve(listener, Arc::new(admin), stop).await,
        _ => std::future::pending().await,
    }
}

async fn accept_loop(listener: Option<TcpListener>, tls: bool, shared: Arc<Shared>) {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let shared = Arc::clone(&shared);
                // `client`: the address from the PROXY protocol header, when there is one.
                let span = info_span!(
                    "conn",
                    %peer,
                    tls,
                    client = tracing::field::Empty,
                    user = tracing::field::Empty
                );
                // Tasks log through the dispatcher `serve` runs under (JSON logs, see cli::proxy).
                tokio::spawn(
                    connection(tcp, peer, tls, shared)
                        .instrument(span)
                        .with_current_subscriber(),
                );
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a connection's PROXY protocol header was refused.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("{0}")]
    Invalid(#[from] proxy_protocol::Error),
    #[error("connection closed before the PROXY protocol header was complete")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads exactly the PROXY protocol header (never a byte of what the client sends after it).
async fn read_proxy_header<R: AsyncRead + Unpin>(tcp: &mut R) -> Result<Header, HeaderError> {
    let mut buf = vec![0u8; 16 + proxy_protocol::V2_MAX_ADDRESS_LEN];
    let mut len = 0;
    loop {
        if let Some((header, _)) = proxy_protocol::parse(&buf[..len])? {
            return Ok(header);
        }
        let end = (len + proxy_protocol::bytes_needed(&buf[..len])).min(buf.len());
        let n = tcp.read(&mut buf[len..end]).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        len += n;
    }
}

/// Has the kernel drop the connection when what the proxy sent stays unacknowledged for
/// `limit` (TCP_USER_TIMEOUT). The write timeout alone does not cover a client that stops
/// reading: once the proxy has written its last reply, nothing waits in user space, while the
/// kernel may retransmit to the client's full receive buffer with growing back-off for many
/// minutes (seen on loopback: the client's own data then waits for a window it never learns of).
fn unacknowledged_for(tcp: &TcpStream, limit: Duration) {
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(limit)) {
        warn!("TCP_USER_TIMEOUT: {e}");
    }
}

async fn connection(mut tcp: TcpStream, peer: SocketAddr, tls: bool, shared: Arc<Shared>) {
    debug!("accepted");
    // The settings in force now serve this connection to its end, whatever a reload does.
    let settings = shared.settings.get();
    let _open = settings.metrics.connection();
    unacknowledged_for(
        &tcp,
        Duration::from_secs(settings.limits.write_timeout_secs),
    );
    let Some(_permit) = shared.total.enter(settings.limits.max_connections) else {
        let _ = tcp.write_all(b"* BYE Too many connections\r\n").await;
        return;
    };
    let mut stop = shared.shutdown.clone();
    let mut peer = peer;
    if let Some(from) = &shared.proxy_protocol_from {
        // Only a listed load balancer may say who the client is; anyone else is closed unheard.
        if !cidr::any_contains(from, peer.ip()) {
            info!("closing: not in listen.proxy_protocol_from");
            settings.metrics.proxy_protocol_refused();
            return;
        }
        let timeout = Duration::from_secs(settings.limits.login_timeout_secs);
        // Nothing may be said before the header (the client may be a TLS client): on any
        // problem the connection is just closed.
        let header = tokio::select! {
            r = tokio::time::timeout(timeout, read_proxy_header(&mut tcp)) => r,
            () = session::stopped(&mut stop) => return,
        };
        match header {
            Ok(Ok(header)) => {
                if let Some(source) = header.source() {
                    peer = source;
                    Span::current().record("client", tracing::field::display(source));
                }
            }
            Ok(Err(e)) => {
                info!("closing: {e}");
                return;
            }
            Err(_) => {
                info!("closing: no PROXY protocol header in time");
                return;
            }
        }
    }
    let max_per_ip = settings.limits.max_connections_per_ip;
    let Some(_ip_guard) = shared.per_ip.enter(peer.ip(), max_per_ip) else {
        let _ = tcp
            .write_all(b"* BYE Too many connections from your address\r\n")
            .await;
        return;
    };
    let tcp = match QuickAck::new(tcp) {
        Ok(tcp) => tcp,
        Err(e) => {
            debug!("TCP_NODELAY: {e}");
            return;
        }
    };
    // NEW's connection is opened while the client is busy with TLS, the greeting and its
    // LOGIN; it lives inside this connection's limits and ends with it.
    let early = Early::start(Arc::clone(&settings), stop.clone());
    let client: BoxIo = if tls {
        let Some(acceptor) = settings.acceptor.clone() else {
            return;
        };
        let timeout = Duration::from_secs(settings.limits.login_timeout_secs);
        // Nothing was said to the client yet: a shutdown just drops the handshake.
        tokio::select! {
            r = tokio::time::timeout(timeout, acceptor.accept(tcp)) => match r {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => {
                    debug!("TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            },
            () = session::stopped(&mut stop) => return,
        }
    } else {
        Box::new(tcp)
    };
    session::run(client, tls, peer, settings, stop, early).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn proxy_header_reads_leave_the_client_bytes() {
        let v2 = proxy_protocol::encode_v2(Some((
            "[2001:db8::7]:1".parse().unwrap(),
            "[2001:db8::1]:993".parse().unwrap(),
        )));
        for header in [
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 143\r\n".to_vec(),
            proxy_protocol::encode_v2(None),
            v2,
        ] {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let mut sent = header.clone();
            sent.extend_from_slice(b"\x16\x03\x01 client hello");
            client.write_all(&sent).await.unwrap();
            drop(client);
            let parsed = read_proxy_header(&mut server).await.unwrap();
            assert_eq!(
                proxy_protocol::parse(&header).unwrap().map(|(h, _)| h),
                Some(parsed)
            );
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"\x16\x03\x01 client hello");
        }
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        drop(client);
        assert!(matches!(
            read_proxy_header(&mut server).await,
            Err(HeaderError::Closed)
        ));
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"a1 LOGIN joe secret\r\n").await.unwrap();
        assert!(matches!(
            read_proxy_header(&mut server).await,
            Err(HeaderError::Invalid(proxy_protocol::Error::NotProxy))
        ));
    }
}
