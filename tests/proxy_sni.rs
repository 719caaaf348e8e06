//! Several names, several certificates (issue 16, item 2): `[[tls.names]]` entries chosen by the
//! client's SNI, on implicit TLS and after STARTTLS, seen by a rustls client (which verifies the
//! name against the development CA) and by `openssl s_client -servername`; the default `[tls]`
//! certificate for no SNI and unknown names; an entry added by a reload serves new connections.
//! The proxy greets by itself, so NEW is never contacted (its address is a closed port).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::certs::{Issued, issue};
use common::tlsimap::TlsImap;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_imapferry");
const TOKEN: &str = "sni-t0k";

/// The default certificate and two named ones.
struct Certs {
    default: Issued,
    example: Issued,
    customers: Issued,
    _dir: tempfile::TempDir,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    Certs {
        default: issue(dir.path(), "default", &["localhost", "127.0.0.1"]),
        example: issue(dir.path(), "example", &["imap.example.com"]),
        customers: issue(dir.path(), "customers", &["*.customers.example.net"]),
        _dir: dir,
    }
}

fn entry(names: &str, cert: &Issued) -> String {
    format!(
        "[[tls.names]]\nnames = {names}\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.cert.display(),
        cert.key.display()
    )
}

/// The configuration after `[listen] imap`, with `entries` after `[tls]`.
fn text(dir: &Path, ports: (u16, u16, u16), c: &Certs, entries: &str) -> String {
    let (imaps, admin, new) = ports;
    format!(
        "imaps = \"127.0.0.1:{imaps}\"\nplaintext_login = true\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n{entries}\
         [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [state]\npath = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n",
        c.default.cert.display(),
        c.default.key.display(),
        new,
        dir.join("imapferry.db").display(),
    )
}

/// Runs `openssl s_client` with `args` (stdin closed) and returns stdout + stderr.
fn s_client(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (scripts/install-deps.sh installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The subject line `openssl s_client` printed for the server's certificate, without spaces
/// (OpenSSL versions differ in `CN = x` and `CN=x`).
fn subject(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in:\n{out}"))
        .replace(' ', "")
}

#[test]
fn sni_chooses_the_certificate() {
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let (imaps, admin) = (free_port(), free_port());
    let ports = (imaps, admin, free_port());
    let entries = format!(
        "{}{}",
        entry("[\"imap.example.com\"]", &c.example),
        entry("[\"*.customers.example.net\"]", &c.customers)
    );
    let proxy = ProxyProc::start(
        Path::new(BIN),
        dir.path(),
        &text(dir.path(), ports, &c, &entries),
    );

    // rustls, which checks the presented certificate against the name it asked for.
    // (SNI sent, certificate expected)
    let cases: &[(&str, &Issued)] = &[
        ("imap.example.com", &c.example),
        ("IMAP.Example.com", &c.example),
        ("shop.customers.example.net", &c.customers),
        ("localhost", &c.default),
        ("127.0.0.1", &c.default), // an address: no SNI at all
    ];
    for (name, cert) in cases {
        let mut s = TlsImap::connect(imaps, name);
        assert_eq!(s.peer_der(), cert.der(), "{name}");
        s.cmd("CAPABILITY");
    }
    // An unknown name gets the default (which does not cover it: checked without verifying).
    let unverified = imapferry::tls::client_config(false, None).unwrap();
    for name in [
        "other.example.org",
        "a.b.customers.example.net",
        "customers.example.net",
    ] {
        let s = TlsImap::connect_with(imaps, name, unverified.clone());
        assert_eq!(s.peer_der(), c.default.der(), "{name}");
    }

    // openssl s_client, verifying the chain and the host name against the development CA.
    let ca = ca_pem();
    let ca = ca.to_str().unwrap();
    let implicit = format!("127.0.0.1:{imaps}");
    let plain = format!("127.0.0.1:{}", proxy.port);
    for (connect, starttls) in [(&implicit, false), (&plain, true)] {
        for (name, cn) in [
            ("imap.example.com", "imap.example.com"),
            ("mail.customers.example.net", "*.customers.example.net"),
            ("localhost", "localhost"),
        ] {
            let mut args = vec!["-connect", connect, "-servername", name, "-CAfile", ca];
            args.extend(["-verify_hostname", name, "-verify_return_error"]);
            if starttls {
                args.extend(["-starttls", "imap"]);
            }
            let out = s_client(&args);
            assert!(
                subject(&out).ends_with(&format!("CN={cn}")),
                "{name}:\n{out}"
            );
            assert!(out.contains("Verify return code: 0 (ok)"), "{name}:\n{out}");
        }
    }
    let out = s_client(&["-connect", &implicit, "-noservername"]);
    assert!(subject(&out).ends_with("CN=localhost"), "{out}");
}

/// A customer's name added to the file is served after a reload, to new connections.
#[test]
fn an_entry_added_by_a_reload_serves_new_connections() {
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let (imaps, admin) = (free_port(), free_port());
    let ports = (imaps, admin, free_port());
    let first = entry("[\"imap.example.com\"]", &c.example);
    let proxy = ProxyProc::start(
        Path::new(BIN),
        dir.path(),
        &text(dir.path(), ports, &c, &first),
    );
    let unverified = imapferry::tls::client_config(false, None).unwrap();
    let before = TlsImap::connect_with(imaps, "shop.customers.example.net", unverified.clone());
    assert_eq!(before.peer_der(), c.default.der());

    let added = format!(
        "{first}{}",
        entry("[\"*.customers.example.net\"]", &c.customers)
    );
    std::fs::write(
        dir.path().join("proxy.toml"),
        format!(
            "[listen]\nimap = \"127.0.0.1:{}\"\n{}",
            proxy.port,
            text(dir.path(), ports, &c, &added)
        ),
    )
    .unwrap();
    let (status, body) = post_reload(admin);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tls"), "{body}");

    let after = TlsImap::connect(imaps, "shop.customers.example.net");
    assert_eq!(after.peer_der(), c.customers.der());
    // The connection made before the reload still has its certificate and still works.
    let mut before = before;
    assert_eq!(before.peer_der(), c.default.der());
    before.cmd("NOOP");
}

fn post_reload(admin: u16) -> (u16, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nAuthorization: Bearer {TOKEN}\r\n\
         X-Imapferry-Admin: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}
