//! The proxy's operations in front of a real Dovecot as NEW: PROXY protocol v1/v2 headers on the
//! plain and implicit-TLS listeners (NEW learns the address from the header, per-address limits
//! count it, a connection without a valid header is closed before any greeting), and the admin
//! endpoint (`/metrics` after a session, `/health`, the bearer token).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// NEW that honours `ID x-originating-ip` from loopback (as a production NEW trusts the proxy),
/// so its log's `rip=` shows the address the proxy passed on.
fn trusted_new(users: &[(&str, &str)]) -> Dovecot {
    let mut d = Dovecot::start(Layout::Slash);
    for (u, p) in users {
        d.add_user(u, p);
    }
    let mut conf = std::fs::read_to_string(d.config_path()).unwrap();
    conf.push_str("login_trusted_networks = 127.0.0.0/8\n");
    std::fs::write(d.config_path(), conf).unwrap();
    d.restart();
    d
}

/// Waits (up to 10 s) until NEW's log contains `needle`.
fn wait_for_log(new: &Dovecot, needle: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !new.log().contains(needle) {
        assert!(
            Instant::now() < until,
            "NEW's log never showed {needle:?}:\n{}",
            new.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn v1(src: &str, dst: &str) -> Vec<u8> {
    let family = if src.contains(':') { "TCP6" } else { "TCP4" };
    format!("PROXY {family} {src} {dst} 50123 143\r\n").into_bytes()
}

/// A v2 PROXY header for TCP over IPv6 (built by hand, independent of the crate's encoder).
fn v2_tcp6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36 + 7]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&50123u16.to_be_bytes());
    h.extend_from_slice(&993u16.to_be_bytes());
    // A TLV (PP2_TYPE_AUTHORITY "abcd"), to be skipped.
    h.extend_from_slice(&[0x02, 0x00, 0x04, b'a', b'b', b'c', b'd']);
    h
}

/// A v2 PROXY header for TCP over IPv4.
fn v2_tcp4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&993u16.to_be_bytes());
    h
}

/// A line-oriented IMAP client that writes its own first bytes (the PROXY header).
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and sends `first` (header, maybe followed by pipelined commands) in one write.
    fn connect(port: u16, first: &[u8]) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        if !first.is_empty() {
            writer.write_all(first).unwrap();
        }
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// One line, "" at end of stream.
    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Reads up to the line tagged `tag`; returns it.
    fn tagged(&mut self, tag: &str) -> String {
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "closed while waiting for {tag}");
            if line.starts_with(&format!("{tag} ")) {
                return line;
            }
        }
    }

    fn cmd(&mut self, tag: &str, cmd: &str) -> String {
        self.writer
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .unwrap();
        self.tagged(tag)
    }

    /// Everything until the proxy closes the connection.
    fn rest(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.reader.read_to_end(&mut out);
        out
    }
}

/// LOGIN, SELECT INBOX, LOGOUT: all OK.
fn session(c: &mut Client, user: &str, pw: &str) {
    let r = c.cmd("a1", &format!("LOGIN {user} {pw}"));
    assert!(r.starts_with("a1 OK"), "{r}");
    let r = c.cmd("a2", "SELECT INBOX");
    assert!(r.starts_with("a2 OK"), "{r}");
    let r = c.cmd("a3", "LOGOUT");
    assert!(r.starts_with("a3 OK"), "{r}");
}

fn proxy_protocol_proxy(new: &Dovecot, extra: &str) -> Proxy {
    let certs = certs_dir();
    let text = format!(
        "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]\nplaintext_login = true\n[tls]\ncert = {:?}\nkey = {:?}\n\
         [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n{extra}",
        certs.join("localhost.pem"),
        certs.join("localhost-key.pem"),
        new.port(),
    );
    Proxy::start_with(&text, true)
}

#[test]
fn proxy_protocol_v1_and_v2_headers_carry_the_client_address() {
    let new = trusted_new(&[("alice", "alicepw")]);
    let proxy = proxy_protocol_proxy(&new, "");

    // v1, with a command pipelined in the same write: the bytes after the header are kept.
    let mut first = v1("192.0.2.7", "198.51.100.1");
    first.extend_from_slice(b"a0 CAPABILITY\r\n");
    let mut c = Client::connect(proxy.port, &first);
    let greeting = c.line();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let r = c.tagged("a0");
    assert!(r.starts_with("a0 OK"), "{r}");
    session(&mut c, "alice", "alicepw");
    wait_for_log(&new, "rip=192.0.2.7,");

    // v2 over IPv6 with a TLV.
    let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let mut c = Client::connect(proxy.port, &v2_tcp6(src, "2001:db8::1".parse().unwrap()));
    assert!(c.line().starts_with("* OK"));
    session(&mut c, "alice", "alicepw");
    wait_for_log(&new, "rip=2001:db8::7,");

    // v2 LOCAL (a balancer's own check) and v1 UNKNOWN keep the socket's address.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    for header in [&local[..], b"PROXY UNKNOWN\r\n"] {
        let mut c = Client::connect(proxy.port, header);
        assert!(c.line().starts_with("* OK"));
        session(&mut c, "alice", "alicepw");
    }
    let log = new.log();
    let logins = log.matches("Login: user=<alice>").count();
    assert_eq!(logins, 4, "{log}");
    assert!(log.matches("rip=127.0.0.1,").count() >= 2, "{log}");
}

/// AUTHENTICATE PLAIN (which the proxy sends NEW in one write with the ID) carries the client's
/// address too, for a login NEW accepts and for one it refuses.
#[test]
fn authenticate_plain_carries_the_client_address() {
    use base64::Engine as _;
    let new = trusted_new(&[("alice", "alicepw")]);
    let proxy = proxy_protocol_proxy(&new, "");
    let plain =
        |pw: &str| base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{pw}"));

    let mut c = Client::connect(proxy.port, &v1("192.0.2.8", "198.51.100.1"));
    assert!(c.line().starts_with("* OK"));
    let r = c.cmd("a1", &format!("AUTHENTICATE PLAIN {}", plain("alicepw")));
    assert!(r.starts_with("a1 OK"), "{r}");
    let r = c.cmd("a2", "LOGOUT");
    assert!(r.starts_with("a2 OK"), "{r}");
    wait_for_log(&new, "rip=192.0.2.8,");

    let mut c = Client::connect(proxy.port, &v1("192.0.2.9", "198.51.100.1"));
    assert!(c.line().starts_with("* OK"));
    let r = c.cmd("b1", &format!("AUTHENTICATE PLAIN {}", plain("wrong")));
    assert!(r.starts_with("b1 NO [AUTHENTICATIONFAILED]"), "{r}");
    wait_for_log(&new, "rip=192.0.2.9,");
    let log = new.log();
    let refused = log.lines().find(|l| l.contains("rip=192.0.2.9,")).unwrap();
    assert!(refused.contains("auth failed"), "{refused}");
}

const TLS_SCRIPT: &str = r#"
import socket, ssl, sys
port, ca, header, user, pw = int(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.create_connection(('127.0.0.1', port))
s.sendall(header)
t = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname='localhost')
f = t.makefile('rb')
def line():
    l = f.readline()
    assert l, 'connection closed'
    return l.decode()
g = line(); assert g.startswith('* OK'), g
def cmd(tag, c):
    t.sendall(('%s %s\r\n' % (tag, c)).encode())
    while True:
        l = line()
        if l.startswith(tag + ' '):
            return l
for tag, c in [('a1', 'LOGIN %s %s' % (user, pw)), ('a2', 'SELECT INBOX'), ('a3', 'LOGOUT')]:
    r = cmd(tag, c); assert r.startswith(tag + ' OK'), r
"#;

#[test]
fn proxy_protocol_header_before_implicit_tls() {
    let new = trusted_new(&[("bob", "bobpw")]);
    let proxy = proxy_protocol_proxy(&new, "");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tls.py");
    std::fs::write(&script, TLS_SCRIPT).unwrap();
    let header: String = v2_tcp4([198, 51, 100, 9], [192, 0, 2, 1])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(proxy.tls_port.to_string())
        .arg(ca_pem())
        .args([header.as_str(), "bob", "bobpw"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_log(&new, "rip=198.51.100.9,");
}

#[test]
fn connections_without_a_valid_header_are_closed_without_a_greeting() {
    let new = trusted_new(&[("carol", "carolpw")]);
    let proxy = proxy_protocol_proxy(&new, "[limits]\nlogin_timeout_secs = 1\n");
    let started = Instant::now();
    for first in [
        &b"a1 LOGIN carol carolpw\r\n"[..],
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
        // Nothing at all: closed when the login timeout expires.
        b"",
    ] {
        let c = Client::connect(proxy.port, first);
        let rest = c.rest();
        assert!(
            rest.is_empty(),
            "{:?}: {:?}",
            String::from_utf8_lossy(first),
            String::from_utf8_lossy(&rest)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // The implicit-TLS listener too (no TLS handshake happens).
    let c = Client::connect(proxy.tls_port, b"GET / HTTP/1.0\r\n\r\n");
    assert!(c.rest().is_empty());
    assert!(!new.log().contains("Login: user=<carol>"));
}

#[test]
fn per_address_limits_count_the_address_from_the_header() {
    let new = trusted_new(&[("dave", "davepw")]);
    let proxy = proxy_protocol_proxy(&new, "[limits]\nmax_connections_per_ip = 1\n");
    let mut first = Client::connect(proxy.port, &v1("192.0.2.7", "198.51.100.1"));
    assert!(first.line().starts_with("* OK"));
    let second = Client::connect(proxy.port, &v1("192.0.2.7", "198.51.100.1"));
    let refused = String::from_utf8(second.rest()).unwrap();
    assert!(
        refused.starts_with("* BYE Too many connections from"),
        "{refused}"
    );
    let mut other = Client::connect(proxy.port, &v1("192.0.2.8", "198.51.100.1"));
    assert!(other.line().starts_with("* OK"));
    session(&mut first, "dave", "davepw");
    session(&mut other, "dave", "davepw");
}

/// A GET on the admin port: (status, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample line `name` (exactly, labels included), 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_after_a_session_and_health() {
    let password = "Pw-4d1f9c-never-in-metrics";
    let new = trusted_new(&[("erin", password)]);
    let proxy = Proxy::start(
        new.port(),
        "[admin]\nlisten = \"127.0.0.1:0\"\nallow_without_token = true\n",
    );
    assert_ne!(proxy.admin_port, 0);
    let (status, body) = http_get(proxy.admin_port, "/health", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(proxy.admin_port, "/nope", None).0, 404);

    let mut c = Client::connect(proxy.port, b"");
    assert!(c.line().starts_with("* OK"));
    let r = c.cmd("a0", "LOGIN erin wrong-Pw-77");
    assert!(r.starts_with("a0 NO"), "{r}");
    let r = c.cmd("a1", &format!("LOGIN erin {password}"));
    assert!(r.starts_with("a1 OK"), "{r}");
    let r = c.cmd("a2", "SELECT INBOX");
    assert!(r.starts_with("a2 OK"), "{r}");
    let r = c.cmd("a3", "NOOP");
    assert!(r.starts_with("a3 OK"), "{r}");
    let r = c.cmd("a4", "LOGOUT");
    assert!(r.starts_with("a4 OK"), "{r}");
    drop(c);

    // The connection's end is counted once the proxy saw it.
    let until = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = http_get(proxy.admin_port, "/metrics", None);
        assert_eq!(status, 200);
        if sample(&metrics, "imapferry_connections_open") == 0.0 || Instant::now() > until {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let get = |name: &str| sample(&metrics, name);
    assert_eq!(get("imapferry_connections_open"), 0.0, "{metrics}");
    assert_eq!(get("imapferry_connections_total"), 1.0, "{metrics}");
    assert_eq!(get("imapferry_login_failures_total"), 1.0, "{metrics}");
    assert_eq!(
        get("imapferry_commands_total{command=\"LOGIN\"}"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        get("imapferry_commands_total{command=\"SELECT\"}"),
        1.0,
        "{metrics}"
    );
    assert!(
        get("imapferry_bytes_total{direction=\"client_to_new\"}")
            >= "a2 SELECT INBOX\r\n".len() as f64,
        "{metrics}"
    );
    assert!(
        get("imapferry_bytes_total{direction=\"new_to_client\"}") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        get("imapferry_upstream_latency_seconds_count"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        get("imapferry_upstream_latency_seconds_bucket{le=\"+Inf\"}"),
        2.0,
        "{metrics}"
    );
    assert!(get("imapferry_upstream_latency_seconds_sum") > 0.0);
    assert!(!metrics.contains(password) && !metrics.contains("wrong-Pw-77"));
    assert!(!metrics.contains("erin"));
}

#[test]
fn admin_token_is_required_except_for_health() {
    let new = trusted_new(&[]);
    let proxy = Proxy::start(
        new.port(),
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"tok-5e2a\"\n",
    );
    let port = proxy.admin_port;
    assert_eq!(http_get(port, "/metrics", None).0, 401);
    assert_eq!(http_get(port, "/metrics", Some("tok-5e2")).0, 401);
    let (status, body) = http_get(port, "/metrics", Some("tok-5e2a"));
    assert_eq!(status, 200);
    assert!(body.contains("imapferry_connections_total 0\n"), "{body}");
    assert!(!body.contains("tok-5e2a"));
    assert_eq!(http_get(port, "/health", None).0, 200);
    assert_eq!(http_get(port, "/nope", None).0, 401);
    assert_eq!(http_get(port, "/nope", Some("tok-5e2a")).0, 404);
    // An oversized request head is refused, not buffered (exactly the limit is sent, no blank
    // line, so the proxy reads all of it before answering).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    head.resize(imapferry::proxy::admin::MAX_REQUEST, b'y');
    s.write_all(&head).unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
}
