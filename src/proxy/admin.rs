//! The admin endpoint on `[admin] listen`: a minimal HTTP/1.1 server (one request per connection,
//! bounded request size, timeouts, a bounded number of connections) serving `GET /metrics`
//! (Prometheus text from [`Metrics`]) and `GET /health`. With `[admin] token` every route but
//! `/health` needs `Authorization: Bearer TOKEN`. Routes live in [`Admin::route`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::instrument::WithSubscriber;
use tracing::{debug, warn};

use super::metrics::Metrics;
use super::session;
use crate::secret::Secret;

/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A connection gets this long to send its request and read the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// The bearer token of an `Authorization: Bearer …` header.
    pub bearer: Option<Secret>,
}

/// A response; always sent with `Content-Length` and `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines (name, value).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "Unknown",
        }
    }

    /// The bytes on the wire; `head_only` for HEAD requests.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request head larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("connection closed before a complete request")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Parses a request head (request line and header lines, CRLF or LF line ends).
pub fn parse_request(head: &[u8]) -> Result<Request, RequestError> {
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text.lines();
    let request_line = lines.next().ok_or(RequestError::Malformed("empty"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("method"));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(RequestError::Malformed("version"));
    }
    if !target.starts_with('/') {
        return Err(RequestError::Malformed("target"));
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let mut bearer = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(RequestError::Malformed("header line"))?;
        if name.trim().eq_ignore_ascii_case("authorization") {
            let value = value.trim();
            if let Some((scheme, token)) = value.split_once(' ')
                && scheme.eq_ignore_ascii_case("bearer")
            {
                bearer = Some(Secret::new(token.trim()));
            }
        }
    }
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        bearer,
    })
}

/// Compares without an early exit, so timing does not tell how much of a token was right.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// What the admin endpoint serves.
pub struct Admin {
    metrics: Arc<Metrics>,
    token: Option<Secret>,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, token: Option<Secret>) -> Admin {
        Admin { metrics, token }
    }

    /// Answers a request: the token check, then [`Admin::route`].
    pub fn handle(&self, request: &Request) -> Response {
        // Load balancers' health checks rarely send credentials; "ok" tells nothing.
        let public = request.path == "/health";
        if let Some(token) = &self.token
            && !public
        {
            let presented = request.bearer.as_ref().map_or("", Secret::expose);
            if !same_secret(presented, token.expose()) {
                let mut r = Response::text(401, "unauthorized\n");
                r.headers
                    .push(("WWW-Authenticate", "Bearer realm=\"imapferry\"".into()));
                return r;
            }
        }
        self.route(&request.method, &request.path)
    }

    /// The routes, for an authorised request. HEAD is answered like GET (the body is dropped on
    /// the wire).
    pub fn route(&self, method: &str, path: &str) -> Response {
        let get = method == "GET" || method == "HEAD";
        match path {
            "/metrics" if get => {
                let mut r = Response::text(200, self.metrics.render());
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r
            }
            "/health" if get => Response::text(200, "ok\n"),
            "/metrics" | "/health" => {
                let mut r = Response::text(405, "method not allowed\n");
                r.headers.push(("Allow", "GET, HEAD".into()));
                r
            }
            _ => Response::text(404, "not found\n"),
        }
    }
}

/// End of the request head in `buf` (after the empty line), if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() >= MAX_REQUEST {
            return Err(RequestError::TooLarge);
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(RequestError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(mut tcp: TcpStream, admin: &Admin) -> io::Result<()> {
    let (response, head_only) = match read_head(&mut tcp).await {
        Ok(head) => match parse_request(&head) {
            Ok(request) => (admin.handle(&request), request.method == "HEAD"),
            Err(e) => (Response::text(400, format!("{e}\n")), false),
        },
        Err(RequestError::TooLarge) => (Response::text(431, "request too large\n"), false),
        Err(RequestError::Closed) => return Ok(()),
        Err(RequestError::Io(e)) => return Err(e),
        Err(e) => (Response::text(400, format!("{e}\n")), false),
    };
    tcp.write_all(&response.to_bytes(head_only)).await?;
    tcp.shutdown().await
}

/// Serves admin requests on `listener` until `stop` turns true (or the future is dropped).
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = session::stopped(&mut stop) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    debug!(%peer, "admin: too many connections");
                    continue;
                };
                let admin = Arc::clone(&admin);
                let task = async move {
                    let _permit = permit;
                    match tokio::time::timeout(REQUEST_TIMEOUT, connection(tcp, &admin)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(%peer, "admin connection: {e}"),
                        Err(_) => debug!(%peer, "admin connection timed out"),
                    }
                };
                tokio::spawn(task.with_current_subscriber());
            }
            Err(e) => {
                warn!("admin accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(head: &str) -> Request {
        parse_request(head.as_bytes()).unwrap()
    }

    #[test]
    fn parses_requests() {
        let r =
            req("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nauthorization:  bearer s3cret \r\n\r\n");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.bearer.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{r:?}").contains("s3cret"));
        let r = req("HEAD /health HTTP/1.0\n\n");
        assert_eq!((r.method.as_str(), r.bearer), ("HEAD", None));
        for bad in [
            "",
            "GET\r\n\r\n",
            "GET /x\r\n\r\n",
            "get /x HTTP/1.1\r\n\r\n",
            "GET x HTTP/1.1\r\n\r\n",
            "GET /x SPDY/3\r\n\r\n",
            "GET /x HTTP/1.1 extra\r\n\r\n",
            "GET /x HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_request(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn routes_and_tokens() {
        let metrics = Arc::new(Metrics::new());
        metrics.login_failure();
        let open = Admin::new(Arc::clone(&metrics), None);
        let r = open.handle(&req("GET /metrics HTTP/1.1\r\n\r\n"));
        assert_eq!(r.status, 200);
        assert!(r.body.contains("imapferry_login_failures_total 1\n"));
        assert_eq!(open.route("GET", "/health").body, "ok\n");
        assert_eq!(open.route("GET", "/nope").status, 404);
        assert_eq!(open.route("POST", "/metrics").status, 405);
        let locked = Admin::new(metrics, Some(Secret::new("t0ken")));
        let status = |head: &str| locked.handle(&req(head)).status;
        assert_eq!(status("GET /metrics HTTP/1.1\r\n\r\n"), 401);
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n"),
            401
        );
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nAuthorization: Bearer t0ken\r\n\r\n"),
            200
        );
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nAuthorization: Basic t0ken\r\n\r\n"),
            401
        );
        assert_eq!(status("GET /nope HTTP/1.1\r\n\r\n"), 401);
        assert_eq!(status("GET /health HTTP/1.1\r\n\r\n"), 200);
        let wire = locked
            .handle(&req("GET /metrics HTTP/1.1\r\n\r\n"))
            .to_bytes(false);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{wire}");
        assert!(wire.contains("WWW-Authenticate: Bearer"), "{wire}");
        assert!(!wire.contains("t0ken"));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(same_secret("", ""));
        for (a, b) in [("abc", "abd"), ("abc", "ab"), ("ab", "abc"), ("", "a")] {
            assert!(!same_secret(a, b), "{a} {b}");
        }
    }

    #[test]
    fn head_responses_have_no_body() {
        let r = Response::text(200, "ok\n");
        let wire = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(
            wire.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{wire}"
        );
    }
}
