//! The proxy and the CLI against hostile clients and careless operators, with real Dovecot
//! servers: the login throttle counts per (client network, user) and is never reset by another
//! user's success; logs written to a file carry no colour escapes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_imapferry");

/// A line-oriented IMAP client that writes its own first bytes (a PROXY header).
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16, first: &[u8]) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer.write_all(first).unwrap();
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

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
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
        self.send(format!("{tag} {cmd}\r\n").as_bytes());
        self.tagged(tag)
    }

    /// Everything until the proxy closes the connection.
    fn rest(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.reader.read_to_end(&mut out);
        out
    }
}

/// A PROXY v1 header claiming `src` as the client's address.
fn v1(src: &str) -> Vec<u8> {
    let (family, dst) = if src.contains(':') {
        ("TCP6", "2001:db8::1")
    } else {
        ("TCP4", "198.51.100.1")
    };
    format!("PROXY {family} {src} {dst} 50123 143\r\n").into_bytes()
}

fn new_server(users: &[(&str, &str)]) -> Dovecot {
    let d = Dovecot::start(Layout::Slash);
    for (u, p) in users {
        d.add_user(u, p);
    }
    d
}

/// `imapferry proxy` (a process, logging at info to a file) in front of `new`, PROXY protocol
/// headers expected.
fn proxy_process(dir: &Path, new: &Dovecot, extra: &str) -> ProxyProc {
    let config = format!(
        "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]\n[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n{extra}",
        new.port()
    );
    ProxyProc::start(Path::new(BIN), dir, &config)
}

/// Waits (up to 10 s) until `log()` has `n` lines containing `needle`; returns those lines.
fn log_lines(log: impl Fn() -> String, needle: &str, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "fewer than {n} lines with {needle:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of ` key=` in a log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        + key.len()
        + 2;
    line[start..].split([' ', ',']).next().unwrap_or_default()
}

/// One LOGIN from `src` (through a PROXY header); true when NEW accepted it.
fn login_from(port: u16, src: &str, user: &str, pw: &str) -> bool {
    let mut c = Client::connect(port, &v1(src));
    assert!(c.line().starts_with("* OK"));
    let r = c.cmd("a1", &format!("LOGIN {user} {pw}"));
    c.send(b"a2 LOGOUT\r\n");
    drop(c.rest());
    r.starts_with("a1 OK")
}

#[test]
fn login_throttle_counts_per_user_and_network() {
    let new = new_server(&[("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_process(dir.path(), &new, "");
    let refused = "login refused by NEW";
    let failures_of = |n: usize| {
        let lines = log_lines(|| proxy.log(), refused, n);
        field(&lines[n - 1], "failures").parse::<u32>().unwrap()
    };

    // bob's password is guessed twice from one address.
    assert!(!login_from(proxy.port, "192.0.2.7", "bob", "guess1"));
    assert!(!login_from(proxy.port, "192.0.2.7", "bob", "guess2"));
    assert_eq!(failures_of(2), 2);
    // The attacker's own account logs in from that address: bob's count goes on.
    assert!(login_from(proxy.port, "192.0.2.7", "alice", "alicepw"));
    assert!(!login_from(proxy.port, "192.0.2.7", "BOB", "guess3"));
    assert_eq!(failures_of(3), 3);
    // Another address is another client.
    assert!(!login_from(proxy.port, "192.0.2.8", "bob", "guess4"));
    assert_eq!(failures_of(4), 1);

    // IPv6: two addresses of one /64 share a count, the next /64 does not.
    let a: Ipv6Addr = "2001:db8:7:1::10".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:7:1:ffff::20".parse().unwrap();
    let other: Ipv6Addr = "2001:db8:7:2::10".parse().unwrap();
    assert!(!login_from(proxy.port, &a.to_string(), "carol", "x"));
    assert!(!login_from(proxy.port, &b.to_string(), "carol", "y"));
    assert_eq!(failures_of(6), 2);
    assert!(!login_from(proxy.port, &other.to_string(), "carol", "z"));
    assert_eq!(failures_of(7), 1);
    // carol's own success clears carol's count in that /64 only.
    assert!(login_from(proxy.port, &b.to_string(), "carol", "carolpw"));
    assert!(!login_from(proxy.port, &a.to_string(), "carol", "w"));
    assert_eq!(failures_of(8), 1);
    assert!(!login_from(proxy.port, &other.to_string(), "carol", "v"));
    assert_eq!(failures_of(9), 2);
    // The delay follows the count, and no password reached the log.
    let lines = log_lines(|| proxy.log(), refused, 9);
    assert_eq!(field(&lines[2], "delay_ms"), "1500", "{}", lines[2]);
    let log = proxy.log();
    assert!(!log.contains("guess") && !log.contains("alicepw"), "{log}");
}

#[test]
fn logs_to_a_file_have_no_colour_escapes() {
    let new = new_server(&[("dan", "danpw")]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_process(dir.path(), &new, "");
    assert!(login_from(proxy.port, "192.0.2.9", "dan", "danpw"));
    assert!(!login_from(proxy.port, "192.0.2.9", "dan", "wrong"));
    let lines = log_lines(|| proxy.log(), "session: connection closed", 2);
    let log = proxy.log();
    assert!(lines[0].contains("client=192.0.2.9"), "{log}");
    // The CLI's subscriber (the proxy logs through it unless `[log] json`) writes plain text.
    assert!(!log.contains('\x1b'), "{log:?}");
}

#[test]
fn connection_limits_count_an_ipv6_client_by_its_slash_64() {
    let new = new_server(&[("erin", "erinpw")]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_process(dir.path(), &new, "[limits]\nmax_connections_per_ip = 1\n");
    let mut first = Client::connect(proxy.port, &v1("2001:db8:9:1::1"));
    assert!(first.line().starts_with("* OK"));
    // Another address of the same /64 is the same client.
    let second = Client::connect(proxy.port, &v1("2001:db8:9:1:ffff::2"));
    let refused = String::from_utf8(second.rest()).unwrap();
    assert!(
        refused.starts_with("* BYE Too many connections from"),
        "{refused}"
    );
    // The next /64 is another client; IPv4 addresses count one by one.
    let mut other = Client::connect(proxy.port, &v1("2001:db8:9:2::1"));
    assert!(other.line().starts_with("* OK"));
    let mut v4 = Client::connect(proxy.port, &v1("192.0.2.1"));
    assert!(v4.line().starts_with("* OK"));
    let mut v4b = Client::connect(proxy.port, &v1("192.0.2.2"));
    assert!(v4b.line().starts_with("* OK"));
    for c in [&mut first, &mut other, &mut v4, &mut v4b] {
        assert!(c.cmd("a1", "LOGIN erin erinpw").starts_with("a1 OK"));
        assert!(c.cmd("a2", "LOGOUT").starts_with("a2 OK"));
    }
}

/// A GET on the admin port with the bearer token: the body.
fn admin_get(port: u16, path: &str, token: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[test]
fn proxy_protocol_headers_are_taken_only_from_listed_sources() {
    let new = new_server(&[("fay", "faypw")]);
    // The proxy trusts one balancer, not the loopback address the test connects from.
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "proxy_protocol = true\nproxy_protocol_from = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n\
         [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"t0k\"\n",
        new.port()
    );
    let proxy = ProxyProc::start(Path::new(BIN), dir.path(), &config);
    for first in [
        v1("192.0.2.7"),
        v1("2001:db8::7"),
        b"a1 LOGIN fay faypw\r\n".to_vec(),
    ] {
        let c = Client::connect(proxy.port, &first);
        let rest = c.rest();
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    let lines = log_lines(|| proxy.log(), "not in listen.proxy_protocol_from", 3);
    assert!(lines[0].contains("peer=127.0.0.1:"), "{}", lines[0]);
    let metrics = admin_get(admin_port, "/metrics", "t0k");
    // At least those three (ProxyProc::start's readiness probe was refused as well).
    let refused: u32 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("imapferry_proxy_protocol_refused_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(refused >= 3, "{metrics}");
    assert!(!new.log().contains("Login: user=<fay>"));
}

/// Permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file and directory below `dir` (not `dir` itself).
fn tree(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(tree(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn files_the_program_creates_are_private() {
    let old = new_server(&[("gus", "guspw")]);
    let new = new_server(&[("gus", "guspw")]);
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("batch");
    std::fs::create_dir(&cwd).unwrap();
    // One account that syncs, one that fails (its line, with both passwords, goes to the
    // failures file).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let loop_file = format!(
        "127.0.0.1;gus;guspw;127.0.0.1;gus;guspw;--port1 {} --port2 {};\n\
         127.0.0.1;gus;guspw;127.0.0.1;gus;guspw;--port1 {closed} --port2 {};\n",
        old.port(),
        new.port(),
        new.port()
    );
    std::fs::write(cwd.join("accounts.txt"), loop_file).unwrap();
    // A failures file an earlier run left world-readable is made private too.
    std::fs::write(cwd.join("accounts_failures.txt"), "").unwrap();
    std::fs::set_permissions(
        cwd.join("accounts_failures.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["batch", "accounts.txt", "--nofoldersizes"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    let failures = std::fs::read_to_string(cwd.join("accounts_failures.txt")).unwrap();
    assert!(
        failures.contains(&format!("--port1 {closed}")),
        "{failures}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(mode(&cwd.join("accounts_failures.txt")), 0o600);
    let created: Vec<_> = tree(&cwd)
        .into_iter()
        .filter(|p| !p.ends_with("accounts.txt"))
        .collect();
    assert!(
        created.iter().any(|p| p.ends_with("LOG_imapsync")),
        "{created:?}"
    );
    assert!(
        created.iter().any(|p| p.ends_with("imapferry-state.db")),
        "{created:?}"
    );
    for path in &created {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(path), expected, "{}", path.display());
    }

    // The migration proxy's state file, its WAL and shared memory, and the directory made for
    // them.
    let state_dir = dir.path().join("proxy-state");
    let config = migration_config(&old, &new, &state_dir.join("imapferry.db"), 1000);
    let proxy = ProxyProc::start(Path::new(BIN), dir.path(), &config);
    let mut c = Client::connect(proxy.port, b"");
    assert!(c.line().starts_with("* OK"));
    assert!(c.cmd("a1", "LOGIN gus guspw").starts_with("a1 OK"));
    assert!(c.cmd("a2", "SELECT INBOX").starts_with("a2 OK"));
    assert_eq!(mode(&state_dir), 0o700);
    let names: Vec<_> = tree(&state_dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in ["imapferry.db", "imapferry.db-wal", "imapferry.db-shm"] {
        assert!(names.iter().any(|n| n == name), "{names:?}");
        assert_eq!(mode(&state_dir.join(name)), 0o600, "{name}");
    }
    assert!(c.cmd("a3", "LOGOUT").starts_with("a3 OK"));
}

/// A Latin-1 password (8-bit bytes that are not UTF-8), with a quote and a backslash.
const LATIN1_PW: &[u8] = b"caf\xe9 \"\xfc\\x\"";

/// Gives `user` (added with a placeholder password) the password `pw` (any bytes) in `d`'s
/// passwd-file, and waits until Dovecot takes it.
fn set_raw_password(d: &Dovecot, user: &str, pw: &[u8]) {
    let passwd = d.dir().join("passwd");
    let text = std::fs::read(&passwd).unwrap();
    let prefix = format!("{user}:{{PLAIN}}");
    let mut out = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(prefix.as_bytes()) {
            Some(rest) => {
                let after = rest.iter().position(|&b| b == b':').unwrap();
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(pw);
                out.extend_from_slice(&rest[after..]);
            }
            None => out.extend_from_slice(line),
        }
    }
    let tmp = d.dir().join("passwd.tmp");
    std::fs::write(&tmp, out).unwrap();
    std::fs::rename(&tmp, &passwd).unwrap();
    // Dovecot notices a changed passwd-file within a second: wait until the new password works.
    let until = Instant::now() + Duration::from_secs(10);
    while !raw_login(d.port(), user, pw) {
        assert!(
            Instant::now() < until,
            "Dovecot never took the new password"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// LOGIN with the password as a literal (any bytes); true on OK.
fn raw_login(port: u16, user: &str, pw: &[u8]) -> bool {
    let mut c = Client::connect(port, b"");
    assert!(c.line().starts_with("* OK"));
    c.send(format!("a1 LOGIN {user} {{{}}}\r\n", pw.len()).as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(&[pw, b"\r\n"].concat());
    let ok = c.tagged("a1").starts_with("a1 OK");
    c.send(b"a2 LOGOUT\r\n");
    drop(c.rest());
    ok
}

/// `s` as a quoted string, bytes kept.
fn quoted(s: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

#[test]
fn eight_bit_passwords_reach_old_and_new_byte_for_byte() {
    let old = new_server(&[("hal", "placeholder")]);
    let new = new_server(&[("hal", "placeholder")]);
    let mut seed = RawImap::connect(old.host(), old.port());
    seed.login("hal", "placeholder");
    seed.append("INBOX", &[], None, &message(1, 300));
    seed.logout();
    set_raw_password(&old, "hal", LATIN1_PW);
    set_raw_password(&new, "hal", LATIN1_PW);

    // Through the migration proxy: NEW checks the login, OLD is opened with the same bytes and
    // INBOX is backfilled from it. LOGIN with a quoted string, with a literal, and AUTHENTICATE.
    let dir = tempfile::tempdir().unwrap();
    let config = migration_config(&old, &new, &dir.path().join("state.db"), 10_000);
    let proxy = ProxyProc::start(Path::new(BIN), dir.path(), &config);
    let mut c = Client::connect(proxy.port, b"");
    assert!(c.line().starts_with("* OK"));
    c.send(&[&b"a1 LOGIN hal "[..], &quoted(LATIN1_PW), b"\r\n"].concat());
    let r = c.tagged("a1");
    assert!(r.starts_with("a1 OK"), "{r}\n{}", proxy.log());
    c.send(b"a2 SELECT INBOX\r\n");
    let mut exists = String::new();
    loop {
        let line = c.line();
        assert!(!line.is_empty(), "closed");
        if line.ends_with("EXISTS\r\n") {
            exists = line.clone();
        }
        if line.starts_with("a2 ") {
            assert!(line.starts_with("a2 OK"), "{line}");
            break;
        }
    }
    assert_eq!(
        exists,
        "* 1 EXISTS\r\n",
        "OLD's message came over\n{}",
        proxy.log()
    );
    assert!(c.cmd("a3", "LOGOUT").starts_with("a3 OK"));

    let mut c = Client::connect(proxy.port, b"");
    assert!(c.line().starts_with("* OK"));
    c.send(format!("b1 LOGIN hal {{{}}}\r\n", LATIN1_PW.len()).as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(&[LATIN1_PW, b"\r\n"].concat());
    assert!(c.tagged("b1").starts_with("b1 OK"));
    assert!(c.cmd("b2", "LOGOUT").starts_with("b2 OK"));

    use base64::Engine as _;
    let plain =
        base64::engine::general_purpose::STANDARD.encode([&b"\0hal\0"[..], LATIN1_PW].concat());
    let mut c = Client::connect(proxy.port, b"");
    assert!(c.line().starts_with("* OK"));
    assert!(
        c.cmd("c1", &format!("AUTHENTICATE PLAIN {plain}"))
            .starts_with("c1 OK")
    );
    assert!(c.cmd("c2", "LOGOUT").starts_with("c2 OK"));
    let log = proxy.log();
    assert!(!log.contains("caf"), "{log}");

    // The sync CLI reads passwords from files and the environment byte for byte.
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, [LATIN1_PW, b"\n"].concat()).unwrap();
    let hosts = |pw: &[&str]| {
        let mut args = vec![
            "sync".to_string(),
            "--host1".into(),
            old.host().into(),
            "--port1".into(),
            old.port().to_string(),
            "--user1".into(),
            "hal".into(),
            "--host2".into(),
            new.host().into(),
            "--port2".into(),
            new.port().to_string(),
            "--user2".into(),
            "hal".into(),
            "--justlogin".into(),
            "--nolog".into(),
        ];
        args.extend(pw.iter().map(|s| s.to_string()));
        args
    };
    let files = [
        "--passfile1",
        pw_file.to_str().unwrap(),
        "--passfile2",
        pw_file.to_str().unwrap(),
    ];
    let out = std::process::Command::new(BIN)
        .args(hosts(&files))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    use std::os::unix::ffi::OsStrExt;
    let env_pw = std::ffi::OsStr::from_bytes(LATIN1_PW);
    let out = std::process::Command::new(BIN)
        .args(hosts(&[]))
        .env("IMAPSYNC_PASSWORD1", env_pw)
        .env("IMAPSYNC_PASSWORD2", env_pw)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // On the command line such a password is refused with a way out, not mangled.
    let out = std::process::Command::new(BIN)
        .args(hosts(&[]))
        .arg("--password1")
        .arg(env_pw)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--passfile1"), "{stderr}");
}
