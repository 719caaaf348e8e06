//! The transparent proxy (`proxy::server::serve`) in front of a real Dovecot as NEW: Python imaplib
//! through the proxy, login refusals with NEW's text, scripted dialogues that must give the same
//! responses directly and through the proxy, pre-login limits that refuse without hanging, and
//! graceful shutdown (BYE to every session, then serve returns).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn new_server(users: &[(&str, &str)]) -> Dovecot {
    let d = Dovecot::start(Layout::Slash);
    for (u, p) in users {
        d.add_user(u, p);
    }
    d
}

const SCRIPT: &str = r#"
import imaplib, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = imaplib.IMAP4(host, port)
assert 'AUTH=PLAIN' in m.capabilities, m.capabilities
typ, _ = m.login(user, pw); assert typ == 'OK'
assert 'COMPRESS=DEFLATE' not in m.capabilities and 'STARTTLS' not in m.capabilities, m.capabilities
typ, boxes = m.list(); assert typ == 'OK' and any(b'INBOX' in b for b in boxes), boxes
typ, _ = m.select('INBOX'); assert typ == 'OK'
msg = b'From: a@example.org\r\nTo: b@example.org\r\nSubject: through the proxy\r\n\r\nhello proxy\r\n'
typ, _ = m.append('INBOX', None, None, msg); assert typ == 'OK'
big = b'Subject: big\r\n\r\n' + (b'x' * 998 + b'\r\n') * 3000
typ, _ = m.append('INBOX', None, None, big); assert typ == 'OK'
typ, data = m.search(None, 'ALL'); assert typ == 'OK' and data[0].split() == [b'1', b'2'], data
typ, data = m.fetch('1', '(RFC822)'); assert typ == 'OK' and data[0][1] == msg, data
typ, data = m.fetch('2', '(RFC822)'); assert typ == 'OK' and data[0][1] == big
typ, _ = m.store('1', '+FLAGS', '(\\Flagged)'); assert typ == 'OK'
typ, _ = m.store('2', '+FLAGS', '(\\Deleted)'); assert typ == 'OK'
typ, data = m.expunge(); assert typ == 'OK' and data == [b'2'], data
typ, _ = m.logout(); assert typ == 'BYE'
m = imaplib.IMAP4(host, port)
typ, _ = m.authenticate('PLAIN', lambda _: ('\0' + user + '\0' + pw).encode()); assert typ == 'OK'
typ, data = m.select('INBOX'); assert typ == 'OK' and data == [b'1'], data
m.logout()
"#;

#[test]
fn python_imaplib_session_through_the_proxy() {
    let new = new_server(&[("alice", "alicepw")]);
    let proxy = Proxy::start(new.port(), "");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("session.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["127.0.0.1", &proxy.port.to_string(), "alice", "alicepw"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut direct = RawImap::connect(new.host(), new.port());
    direct.login("alice", "alicepw");
    let msgs = direct.uid_fetch_all("INBOX");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].flags.contains("\\Flagged"));
    assert!(msgs[0].body.ends_with(b"hello proxy\r\n"));
}

#[test]
fn wrong_password_gets_news_refusal() {
    let new = new_server(&[("bob", "bobpw")]);
    let proxy = Proxy::start(new.port(), "");
    let mut via = RawImap::connect("127.0.0.1", proxy.port);
    assert!(via.greeting.contains("imapferry ready"), "{}", via.greeting);
    let (_, refused) = via.raw("LOGIN bob wrong");
    let mut direct = RawImap::connect(new.host(), new.port());
    let (_, direct_refused) = direct.raw("LOGIN bob wrong");
    assert!(refused.starts_with("NO"), "{refused}");
    assert_eq!(refused, direct_refused);
    // The connection stays usable; the right password then works.
    let (_, ok) = via.raw("LOGIN bob bobpw");
    assert!(ok.starts_with("OK [CAPABILITY "), "{ok}");
    assert!(!ok.contains("AUTH=") && !ok.contains("STARTTLS"), "{ok}");
}

#[test]
fn shutdown_sends_bye_to_every_session_and_serve_returns() {
    let new = new_server(&[("judy", "judypw")]);
    let mut proxy = Proxy::start(new.port(), "");
    let mut logged_in = Wire::connect(proxy.port);
    logged_in.send(b"a1 LOGIN judy judypw\r\na2 SELECT INBOX\r\n");
    assert!(logged_in.until("a2").last().unwrap().starts_with("a2 OK"));
    let mut anonymous = Wire::connect(proxy.port);
    anonymous.send(b"a1 NOOP\r\n");
    assert!(anonymous.until("a1").last().unwrap().starts_with("a1 OK"));

    proxy.stop.take().unwrap().send(()).unwrap();
    for w in [&mut logged_in, &mut anonymous] {
        assert_eq!(w.response(), "* BYE Server shutting down\r\n");
        assert_eq!(w.response(), "", "connection must be closed");
    }
    // serve() returned (without error) once the sessions were gone.
    proxy.thread.take().unwrap().join().unwrap();
}

/// A line-level IMAP conversation over a raw socket.
struct Wire {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Wire {
    fn connect(port: u16) -> Wire {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let writer = s.try_clone().unwrap();
        let mut w = Wire {
            reader: BufReader::new(s),
            writer,
        };
        let greeting = w.response();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        w
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// One response with its literals inline; empty at end of stream.
    fn response(&mut self) -> String {
        let mut buf = Vec::new();
        loop {
            let start = buf.len();
            if self.reader.read_until(b'\n', &mut buf).unwrap() == 0 {
                break;
            }
            let line = &buf[start..];
            let Some(len) = line
                .strip_suffix(b"}\r\n")
                .and_then(|b| b.iter().rposition(|&c| c == b'{').map(|o| &b[o + 1..]))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok())
            else {
                break;
            };
            let at = buf.len();
            buf.resize(at + len, 0);
            self.reader.read_exact(&mut buf[at..]).unwrap();
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Responses up to and including the one tagged `tag`.
    fn until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let r = self.response();
            assert!(
                !r.is_empty(),
                "connection closed waiting for {tag}: {out:?}"
            );
            let done = r.starts_with(&format!("{tag} "));
            out.push(r);
            if done {
                return out;
            }
        }
    }
}

/// Digits, Dovecot's timings and capability lists vary between runs and legs.
fn normalise(responses: &[String]) -> Vec<String> {
    responses
        .iter()
        .filter(|r| !r.starts_with("* CAPABILITY"))
        .map(|r| {
            let mut r = r.clone();
            if let Some(s) = r.find("[CAPABILITY ")
                && let Some(e) = r[s..].find(']')
            {
                r.replace_range(s..s + e + 1, "[CAPS]");
            }
            if let Some(s) = r.find(" (")
                && let Some(e) = r[s..].find("secs)")
            {
                r.replace_range(s..s + e + 5, "");
            }
            r.chars()
                .map(|c| if c.is_ascii_digit() { 'N' } else { c })
                .collect::<String>()
                .split("N")
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("N")
        })
        .collect()
}

/// Runs the scripted dialogue and returns every response after the greeting.
fn dialogue(port: u16, user: &str, pw: &str) -> Vec<String> {
    let mut w = Wire::connect(port);
    let mut all = Vec::new();
    fn step(w: &mut Wire, tag: &str, bytes: &[u8], all: &mut Vec<String>) {
        w.send(bytes);
        all.extend(w.until(tag));
    }
    step(
        &mut w,
        "a1",
        format!("a1 LOGIN {user} {pw}\r\n").as_bytes(),
        &mut all,
    );
    step(&mut w, "a2", b"a2 FROBNICATE now\r\n", &mut all);
    step(&mut w, "a3", b"a3 SELECT INBOX\r\n", &mut all);
    let msg = b"Subject: sync\r\n\r\nsynchronising literal\r\n";
    w.send(format!("a4 APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes());
    let cont = w.response();
    assert!(cont.starts_with('+'), "{cont}");
    all.push(cont);
    step(&mut w, "a4", &[&msg[..], b"\r\n"].concat(), &mut all);
    let msg2 = b"Subject: nonsync\r\n\r\nnon-synchronising literal\r\n";
    let cmd = [
        format!("a5 APPEND INBOX (\\Seen) {{{}+}}\r\n", msg2.len()).as_bytes(),
        &msg2[..],
        b"\r\n",
    ]
    .concat();
    step(&mut w, "a5", &cmd, &mut all);
    step(&mut w, "a6", b"a6 UID SEARCH ALL\r\n", &mut all);
    step(
        &mut w,
        "a7",
        b"a7 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT])\r\n",
        &mut all,
    );
    step(&mut w, "a8", b"a8 SELECT Nonexistent\r\n", &mut all);
    step(&mut w, "a9", b"a9 CAPABILITY\r\n", &mut all);
    step(&mut w, "b2", b"b2 ENABLE QRESYNC\r\n", &mut all);
    step(&mut w, "b3", b"b3 SELECT INBOX\r\n", &mut all);
    w.send(b"b4 IDLE\r\n");
    let idling = w.response();
    assert!(idling.starts_with('+'), "{idling}");
    all.push(idling);
    step(&mut w, "b4", b"DONE\r\n", &mut all);
    step(&mut w, "b1", b"b1 LOGOUT\r\n", &mut all);
    all
}

#[test]
fn scripted_dialogue_matches_direct() {
    let new = new_server(&[("carol", "carolpw"), ("dave", "davepw")]);
    let proxy = Proxy::start(new.port(), "");
    let direct = dialogue(new.port(), "carol", "carolpw");
    let via = dialogue(proxy.port, "dave", "davepw");
    assert!(via.iter().any(|r| r.starts_with("a2 BAD")), "{via:?}");
    assert!(via.iter().any(|r| r.starts_with("a8 NO")), "{via:?}");
    assert_eq!(normalise(&direct), normalise(&via));
    let caps: Vec<&String> = via
        .iter()
        .filter(|r| r.starts_with("* CAPABILITY"))
        .collect();
    assert_eq!(caps.len(), 1);
    assert!(
        !caps[0].contains("AUTH=") && !caps[0].contains("COMPRESS"),
        "{caps:?}"
    );
}

#[test]
fn prelogin_literal_over_the_limit_is_refused() {
    let new = new_server(&[("erin", "erinpw")]);
    let proxy = Proxy::start(new.port(), "[limits]\nmax_literal_before_login = 1024\n");
    let mut w = Wire::connect(proxy.port);
    // Synchronising: refused with BAD, the connection stays in sync.
    w.send(b"a1 LOGIN {5000}\r\n");
    let r = w.until("a1");
    assert!(r.last().unwrap().starts_with("a1 BAD"), "{r:?}");
    w.send(b"a2 NOOP\r\n");
    assert!(w.until("a2").last().unwrap().starts_with("a2 OK"));
    // A small literal is accepted before login.
    w.send(b"a3 LOGIN {4}\r\n");
    assert!(w.response().starts_with('+'));
    w.send(b"erin erinpw\r\n");
    assert!(w.until("a3").last().unwrap().starts_with("a3 OK"));

    // Non-synchronising: cannot be skipped safely, so BYE and close.
    let mut w = Wire::connect(proxy.port);
    let mut cmd = b"a1 LOGIN {5000+}\r\n".to_vec();
    cmd.extend(std::iter::repeat_n(b'x', 5000));
    w.send(&cmd);
    let bye = w.response();
    assert!(bye.starts_with("* BYE"), "{bye}");
    assert_eq!(w.response(), "", "connection must be closed");
}

#[test]
fn overlong_line_and_compress_after_login_get_tagged_bad() {
    let new = new_server(&[("frank", "frankpw")]);
    let proxy = Proxy::start(new.port(), "[limits]\nmax_line_length = 2048\n");
    let mut w = Wire::connect(proxy.port);
    w.send(b"a1 LOGIN frank frankpw\r\n");
    assert!(w.until("a1").last().unwrap().starts_with("a1 OK"));
    let mut line = b"a2 SEARCH SUBJECT \"".to_vec();
    line.extend(std::iter::repeat_n(b'y', 5000));
    line.extend_from_slice(b"\"\r\n");
    w.send(&line);
    let r = w.until("a2");
    assert_eq!(r.last().unwrap(), "a2 BAD line too long\r\n");
    w.send(b"a3 NOOP\r\n");
    assert!(w.until("a3").last().unwrap().starts_with("a3 OK"));
    // COMPRESS is not advertised and not passed on: NEW's stream must stay uncompressed. The
    // proxy's BAD keeps its place: before NEW's answer to the command pipelined after it.
    // Each pair is a fresh race between the BAD and NEW's answer.
    for i in 0..200 {
        w.send(format!("c{i} COMPRESS DEFLATE\r\nn{i} NOOP\r\n").as_bytes());
        let answers = w.until(&format!("n{i}"));
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert!(answers[0].starts_with(&format!("c{i} BAD")), "{answers:?}");
        assert!(answers[1].starts_with(&format!("n{i} OK")), "{answers:?}");
    }
}

const TLS_SCRIPT: &str = r#"
import imaplib, socket, ssl, sys
host, port, tls_port, user, pw, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(cafile=ca)

# Implicit TLS.
m = imaplib.IMAP4_SSL(host, tls_port, ssl_context=ctx)
assert 'STARTTLS' not in m.capabilities and 'AUTH=PLAIN' in m.capabilities, m.capabilities
typ, _ = m.login(user, pw); assert typ == 'OK'
typ, _ = m.select('INBOX'); assert typ == 'OK'
typ, _ = m.append('INBOX', None, None, b'Subject: tls\r\n\r\nover tls\r\n'); assert typ == 'OK'
m.logout()

# Plain listener: LOGINDISABLED until STARTTLS.
m = imaplib.IMAP4(host, port)
assert 'STARTTLS' in m.capabilities and 'LOGINDISABLED' in m.capabilities, m.capabilities
try:
    m.login(user, pw)
    raise SystemExit('plaintext login accepted')
except imaplib.IMAP4.error:
    pass
m.starttls(ssl_context=ctx)
assert 'LOGINDISABLED' not in m.capabilities, m.capabilities
typ, _ = m.login(user, pw); assert typ == 'OK'
typ, data = m.select('INBOX'); assert typ == 'OK' and data == [b'1'], data
m.logout()

# STARTTLS injection: what follows STARTTLS in the same packet is discarded.
s = socket.create_connection((host, port))
f = s.makefile('rb')
assert f.readline().startswith(b'* OK')
s.sendall(b'a1 STARTTLS\r\na2 LOGIN ' + user.encode() + b' ' + pw.encode() + b'\r\n')
line = f.readline(); assert line.startswith(b'a1 OK'), line
t = ctx.wrap_socket(s, server_hostname=host)
t.sendall(b'a3 SELECT INBOX\r\n')
tf = t.makefile('rb')
line = tf.readline()
assert line.startswith(b'a3 BAD'), line
t.sendall(b'a4 LOGOUT\r\n')
rest = tf.read()
assert b'a2 ' not in rest and b'a4 OK' in rest, rest
"#;

#[test]
fn tls_listeners_starttls_injection_and_tls_to_new() {
    let new = Dovecot::start_with(DovecotOptions {
        tls: true,
        ..Default::default()
    });
    new.add_user("gina", "ginapw");
    let certs = certs_dir();
    let text = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"tls\"\nca = {:?}\n",
        certs.join("localhost.pem"),
        certs.join("localhost-key.pem"),
        new.imaps_port().unwrap(),
        ca_pem(),
    );
    let proxy = Proxy::start_with(&text, true);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tls.py");
    std::fs::write(&script, TLS_SCRIPT).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([
            "127.0.0.1",
            &proxy.port.to_string(),
            &proxy.tls_port.to_string(),
            "gina",
            "ginapw",
        ])
        .arg(ca_pem())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn starttls_to_new_and_unverifiable_new_is_refused() {
    let new = Dovecot::start_with(DovecotOptions {
        tls: true,
        ..Default::default()
    });
    new.add_user("hank", "hankpw");
    let starttls = format!(
        "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"starttls\"\nca = {:?}\n",
        new.port(),
        ca_pem()
    );
    let proxy = Proxy::start_with(&starttls, false);
    let mut via = RawImap::connect("127.0.0.1", proxy.port);
    via.login("hank", "hankpw");
    assert_eq!(via.select("INBOX"), 0);
    drop(proxy);

    // The system roots do not know the development CA: the login must fail.
    let untrusted = format!(
        "[new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"tls\"\n",
        new.imaps_port().unwrap()
    );
    let proxy = Proxy::start_with(&untrusted, false);
    let mut via = RawImap::connect("127.0.0.1", proxy.port);
    let (_, refused) = via.raw("LOGIN hank hankpw");
    assert!(refused.starts_with("NO [UNAVAILABLE]"), "{refused}");
}
