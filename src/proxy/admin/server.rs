//! The admin endpoint's HTTP/1.1 server on hyper: [`MAX_CONNECTIONS`] served at once, then a
//! [`HEALTH_RESERVE`] answering `/health` only (held-open connections cannot fail a health check),
//! then closed at once; each request head within `[admin] header_timeout_secs` (also the keep-alive
//! idle limit), at most [`MAX_CONNECTION_AGE`] per connection, a graceful close at shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, ORIGIN};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::instrument::WithSubscriber;
use tracing::{debug, warn};

use super::Admin;
use super::access::{POST_HEADER, Presented, Refusal};
use super::routes::Response;
use crate::proxy::session;

/// Largest request head (request line and headers) accepted; larger ones get 431. hyper's
/// smallest read buffer; an admin request needs a few hundred bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Admin connections served at once. Prometheus and an operator's scripts need a handful.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections accepted past [`MAX_CONNECTIONS`] that answer `/health` only, each closed after
/// one request or the header timeout.
pub const HEALTH_RESERVE: usize = 8;
/// A kept-alive connection is closed (gracefully) after this long, whatever it does, so a
/// client that sends requests but never reads the answers cannot hold a slot forever.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long a closing connection may take to finish the request in progress.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Longest an answer may take (store reads); past it, 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves admin requests on `listener` until `stop` turns true (or the future is dropped); open
/// connections then finish their request and close.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let reserve = Arc::new(Semaphore::new(HEALTH_RESERVE));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = session::stopped(&mut stop) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!("admin accept: {e}");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    () = session::stopped(&mut stop) => return,
                }
            }
        };
        let (permit, health_only) = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match Arc::clone(&reserve).try_acquire_owned() {
                Ok(permit) => {
                    debug!(%peer, "admin: connection limit reached, answering /health only");
                    (permit, true)
                }
                Err(_) => {
                    debug!(%peer, "admin: connection limit and reserve reached, closing");
                    continue;
                }
            },
        };
        let local = match tcp.local_addr() {
            Ok(local) => local,
            Err(e) => {
                debug!(%peer, "admin connection: {e}");
                continue;
            }
        };
        let conn = connection(tcp, local, Arc::clone(&admin), health_only, stop.clone());
        let task = async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                debug!(%peer, "admin connection: {e}");
            }
        };
        tokio::spawn(task.with_current_subscriber());
    }
}

/// Serves one connection that arrived on `local`.
async fn connection<IO>(
    io: IO,
    local: SocketAddr,
    admin: Arc<Admin>,
    health_only: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnectionError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = admin.header_timeout;
    let service = service_fn(move |request| {
        let admin = Arc::clone(&admin);
        async move { Ok::<_, Infallible>(answer(&admin, request, local, health_only).await) }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(!health_only);
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r.map_err(ConnectionError::Http),
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
        () = session::stopped(&mut stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(CLOSE_GRACE, conn).await {
        Ok(r) => r.map_err(ConnectionError::Http),
        Err(_) => Err(ConnectionError::CloseTimedOut),
    }
}

/// Why a connection ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// A malformed request, the header timeout, a reset.
    #[error(transparent)]
    Http(hyper::Error),
    #[error("did not finish its request within {CLOSE_GRACE:?} of closing; dropped")]
    CloseTimedOut,
}

/// One request: `/health` for anyone (it tells nothing and changes nothing, and health checks
/// rarely send credentials or the right Host); on a reserve connection nothing else; else the
/// access rules, then the route.
async fn answer<B>(
    admin: &Admin,
    request: Request<B>,
    local: SocketAddr,
    health_only: bool,
) -> hyper::Response<Full<Bytes>> {
    let method = request.method().as_str();
    let path = request.uri().path();
    let response = if path == "/health" {
        admin.route(method, path, "").await
    } else if health_only {
        Response::error(
            503,
            "the admin endpoint is at its connection limit: only /health is answered",
        )
    } else {
        match admin.access.check(&presented(&request), local) {
            Err(refusal) => {
                debug!(%local, method, path, "admin: refused: {}", refusal.message());
                refused(refusal)
            }
            Ok(()) => {
                let query = request.uri().query().unwrap_or("");
                let route = admin.route(method, path, query);
                match tokio::time::timeout(ANSWER_TIMEOUT, route).await {
                    Ok(r) => r,
                    Err(_) => Response::error(503, "timed out (the state store is slow)"),
                }
            }
        }
    };
    into_http(response)
}

/// What the access rules look at.
fn presented<B>(request: &Request<B>) -> Presented<'_> {
    let headers = request.headers();
    Presented {
        is_post: request.method() == Method::POST,
        // An absolute-form target names the host; else the Host header (RFC 9112 §3.2.2).
        host: match request.uri().authority() {
            Some(authority) => Some(authority.as_str()),
            None => only(headers, &HOST),
        },
        origin: only(headers, &ORIGIN),
        authorization: only(headers, &AUTHORIZATION),
        post_header: headers.contains_key(POST_HEADER),
    }
}

/// The value of a header present exactly once, as text.
fn only<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

fn refused(refusal: Refusal) -> Response {
    let mut r = Response::error(refusal.status(), refusal.message());
    if refusal == Refusal::Unauthorized {
        r.headers
            .push(("WWW-Authenticate", "Bearer realm=\"imapferry\"".into()));
    }
    r
}

fn into_http(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder()
        .status(r.status)
        .header(CONTENT_TYPE, r.content_type);
    for (name, value) in r.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(r.body)))
        .unwrap_or_else(|e| {
            warn!("admin: cannot build a response: {e}");
            let mut fallback = hyper::Response::new(Full::new(Bytes::from_static(b"")));
            *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    use super::*;
    use crate::proxy::admin::tests::admin;
    use crate::proxy::metrics::Metrics;

    const LOCAL: &str = "127.0.0.1:9143";

    /// One connection served over an in-memory pipe; (client end, stop switch, the task).
    fn open(
        health_only: bool,
    ) -> (
        DuplexStream,
        watch::Sender<bool>,
        JoinHandle<Result<(), ConnectionError>>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (stop_tx, stop) = watch::channel(false);
        let admin = Arc::new(admin(Arc::new(Metrics::new()), None, None));
        let local = LOCAL.parse().unwrap();
        let task = tokio::spawn(connection(server, local, admin, health_only, stop));
        (client, stop_tx, task)
    }

    /// Reads one response whose body ends with `end`.
    async fn response(client: &mut DuplexStream, end: &str) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).ends_with(end) {
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(buf).unwrap()
    }

    async fn closed(client: &mut DuplexStream) -> Vec<u8> {
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        rest
    }

    /// The connection closes with nothing more sent, before its maximum age, and the server
    /// task ends with hyper's header timeout.
    async fn closed_by_the_header_timeout(
        mut client: DuplexStream,
        task: JoinHandle<Result<(), ConnectionError>>,
    ) {
        let start = Instant::now();
        assert_eq!(closed(&mut client).await, b"");
        assert!(
            start.elapsed() < MAX_CONNECTION_AGE,
            "{:?}",
            start.elapsed()
        );
        let result = task.await.unwrap();
        assert!(
            matches!(&result, Err(ConnectionError::Http(e)) if e.is_timeout()),
            "{result:?}"
        );
    }

    /// A slow-loris request head is dropped at the header timeout (10 s here), long before the
    /// connection's maximum age, without an answer.
    #[tokio::test(start_paused = true)]
    async fn a_slow_request_head_is_closed_at_the_header_timeout() {
        let (mut client, _stop, task) = open(false);
        client
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1")
            .await
            .unwrap();
        closed_by_the_header_timeout(client, task).await;
    }

    /// A kept-alive connection that goes quiet after an answer is closed at the same timeout.
    #[tokio::test(start_paused = true)]
    async fn an_idle_kept_alive_connection_is_closed() {
        let (mut client, _stop, task) = open(false);
        client
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:9143\r\n\r\n")
            .await
            .unwrap();
        let first = response(&mut client, "ok\n").await;
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(
            !first.to_lowercase().contains("connection: close"),
            "{first}"
        );
        // A second request on the same connection is answered too (keep-alive).
        client
            .write_all(b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1:9143\r\n\r\n")
            .await
            .unwrap();
        let head = response(&mut client, "\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-length: 3\r\n"), "{head}");
        // Nothing follows (HEAD has no body) until the connection closes.
        closed_by_the_header_timeout(client, task).await;
    }

    /// A connection kept busy (a request every 5 s, inside the header timeout) is still closed
    /// in the end: gracefully (no error), by its maximum age.
    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_ends_at_its_maximum_age() {
        let (mut client, _stop, task) = open(false);
        let mut answered = 0;
        loop {
            let sent = client
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:9143\r\n\r\n")
                .await;
            let mut buf = [0u8; 512];
            match (sent, client.read(&mut buf).await) {
                (Ok(()), Ok(n)) if n > 0 => answered += 1,
                _ => break,
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        assert!(answered > 2, "outlived the header timeout: {answered}");
        assert!(task.await.unwrap().is_ok());
    }

    /// Shutting down closes an idle kept-alive connection at once, without an error.
    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_kept_alive_connections() {
        let (mut client, stop, task) = open(false);
        client
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:9143\r\n\r\n")
            .await
            .unwrap();
        response(&mut client, "ok\n").await;
        let start = Instant::now();
        stop.send(true).unwrap();
        assert_eq!(closed(&mut client).await, b"");
        assert!(task.await.unwrap().is_ok());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    /// A reserve connection answers /health, 503 for anything else, and one request only.
    #[tokio::test(start_paused = true)]
    async fn reserve_connections_answer_health_only() {
        for (request, status) in [
            ("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK"),
            (
                "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9143\r\nAuthorization: Bearer t0k\r\n\r\n",
                "503 Service Unavailable",
            ),
        ] {
            let (mut client, _stop, task) = open(true);
            client.write_all(request.as_bytes()).await.unwrap();
            let answer = String::from_utf8(closed(&mut client).await).unwrap();
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{answer}"
            );
            assert!(answer.contains("connection: close\r\n"), "{answer}");
            assert!(task.await.unwrap().is_ok());
        }
    }

    /// The access rules see the request as hyper parsed it.
    #[tokio::test]
    async fn requests_meet_the_access_rules() {
        let admin = admin(Arc::new(Metrics::new()), None, None);
        let local = LOCAL.parse().unwrap();
        let auth = ("authorization", "Bearer t0k");
        let host = ("host", "127.0.0.1:9143");
        let post = (POST_HEADER, "1");
        // (method, target, headers, status)
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: [(&str, &str, Headers, u16); 14] = [
            ("GET", "/metrics", &[host, auth], 200),
            ("GET", "/metrics", &[("host", "localhost:9143"), auth], 200),
            ("GET", "/metrics", &[host], 401),
            (
                "GET",
                "/metrics",
                &[host, ("authorization", "Bearer t0")],
                401,
            ),
            ("GET", "/metrics", &[auth], 421),
            (
                "GET",
                "/metrics",
                &[("host", "evil.example:9143"), auth],
                421,
            ),
            ("GET", "/metrics", &[host, host, auth], 421),
            (
                "GET",
                "http://evil.example:9143/metrics",
                &[host, auth],
                421,
            ),
            ("GET", "http://127.0.0.1:9143/metrics", &[auth], 200),
            ("GET", "/health", &[("host", "anything")], 200),
            ("POST", "/sweep/pause", &[host, auth], 403),
            ("POST", "/sweep/pause", &[host, auth, post], 503),
            ("POST", "/sweep/pause", &[host, post], 401),
            (
                "POST",
                "/sweep/pause",
                &[host, auth, post, ("origin", "http://evil.example")],
                403,
            ),
        ];
        for (method, target, headers, status) in cases {
            let mut request = Request::builder().method(method).uri(target);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(()).unwrap();
            let r = answer(&admin, request, local, false).await;
            assert_eq!(r.status().as_u16(), status, "{method} {target} {headers:?}");
            if status == 401 {
                assert!(r.headers().contains_key("www-authenticate"));
            }
        }
    }
}
