//! Issue 4 acceptance: a 50 MB APPEND and a 50 MB FETCH pass through the proxy with its memory
//! growing by less than 8 MB. The proxy runs as its own process (`imapferry proxy --config`), so
//! /proc/PID/status is the proxy's alone: VmHWM (peak RSS) before and after the transfers is the
//! honest "peak" measure, VmRSS is reported too. The test streams the message in 64 KiB chunks
//! (synchronising literal, and LITERAL+ when NEW offers it) and reads the FETCH back in chunks,
//! checking its size and MD5.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Dovecot, Layout, ProxyProcess};
use md5::{Digest, Md5};

const SIZE: usize = 50 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// Issue 4: "the proxy's RSS growing by less than 8 MB".
const MAX_GROWTH_KB: u64 = 8 * 1024;

/// A blocking IMAP client that never holds a whole literal.
struct Client {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
    tag: u32,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let wr = s.try_clone().unwrap();
        let mut c = Client {
            rd: BufReader::new(s),
            wr,
            tag: 0,
        };
        let greeting = c.line();
        assert!(greeting.starts_with(b"* OK"), "greeting: {greeting:?}");
        c
    }

    fn line(&mut self) -> Vec<u8> {
        let mut l = Vec::new();
        self.rd.read_until(b'\n', &mut l).expect("read a line");
        assert!(l.ends_with(b"\n"), "connection closed: {l:?}");
        l
    }

    fn send(&mut self, cmd: &str) -> String {
        self.tag += 1;
        let tag = format!("m{}", self.tag);
        self.wr
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .unwrap();
        tag
    }

    /// Reads to the line tagged `tag`; literals go to `literal` (size, reader) and must be read
    /// whole there. Returns the untagged lines (without literal data) and the tagged line.
    fn until(
        &mut self,
        tag: &str,
        mut literal: impl FnMut(u64, &mut BufReader<TcpStream>),
    ) -> (Vec<String>, String) {
        let mut untagged = Vec::new();
        loop {
            let l = self.line();
            let text = String::from_utf8_lossy(&l).trim_end().to_string();
            if let Some(rest) = text.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                return (untagged, rest.to_string());
            }
            if let Some(n) = literal_len(&l) {
                literal(n, &mut self.rd);
            }
            untagged.push(text);
        }
    }

    fn ok(&mut self, cmd: &str) -> Vec<String> {
        let tag = self.send(cmd);
        let (untagged, done) = self.until(&tag, |n, _| panic!("unexpected literal of {n}"));
        assert!(done.starts_with("OK"), "{cmd}: {done}");
        untagged
    }

    /// APPENDs `msg` to INBOX in `CHUNK` writes; returns the APPENDUID's UID.
    fn append(&mut self, msg: &[u8], non_sync: bool) -> u32 {
        let plus = if non_sync { "+" } else { "" };
        let tag = self.send(&format!("APPEND INBOX {{{}{plus}}}", msg.len()));
        if !non_sync {
            let l = self.line();
            assert!(l.starts_with(b"+"), "no continuation: {l:?}");
        }
        for chunk in msg.chunks(CHUNK) {
            self.wr.write_all(chunk).unwrap();
        }
        self.wr.write_all(b"\r\n").unwrap();
        let (_, done) = self.until(&tag, |n, _| panic!("unexpected literal of {n}"));
        assert!(done.starts_with("OK"), "APPEND: {done}");
        let uid = done
            .split("[APPENDUID ")
            .nth(1)
            .and_then(|r| r.split([' ', ']']).nth(1))
            .and_then(|u| u.parse().ok());
        uid.unwrap_or_else(|| panic!("no APPENDUID in {done}"))
    }

    /// UID FETCH BODY.PEEK[] read in chunks: (size, MD5).
    fn fetch(&mut self, uid: u32) -> (u64, [u8; 16]) {
        let tag = self.send(&format!("UID FETCH {uid} BODY.PEEK[]"));
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let (_, done) = self.until(&tag, |n, rd| {
            let mut buf = vec![0u8; CHUNK];
            let mut left = n;
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                let got = rd.read(&mut buf[..want]).expect("read literal");
                assert!(got > 0, "connection closed inside the literal");
                md5.update(&buf[..got]);
                left -= got as u64;
            }
            size += n;
        });
        assert!(done.starts_with("OK"), "UID FETCH: {done}");
        (size, md5.finalize().into())
    }
}

/// `n` when `line` ends with a literal announcement `{n}` / `{n+}` / `~{n}`.
fn literal_len(line: &[u8]) -> Option<u64> {
    let l = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = std::str::from_utf8(&l[open + 1..]).ok()?;
    digits.trim_end_matches('+').parse().ok()
}

/// A deterministic text message of exactly `size` bytes: headers, then 76-character lines.
fn big_message(size: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut m = format!(
        "From: Big Sender <big@example.net>\r\nTo: big@example.org\r\nSubject: {size} bytes\r\n\
         Message-Id: <big-{seed}@imapferry.test>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    m.reserve(size - m.len());
    let mut x = seed | 1;
    while m.len() < size {
        let line = (size - m.len()).min(78);
        for _ in 0..line.saturating_sub(2) {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            m.push(ALPHABET[(x % 64) as usize]);
        }
        m.extend_from_slice(&b"\r\n"[..line.min(2)]);
    }
    m
}

struct Mem {
    rss: u64,
    hwm: u64,
}

fn mem(p: &ProxyProcess) -> Mem {
    Mem {
        rss: p.status_kb("VmRSS"),
        hwm: p.status_kb("VmHWM"),
    }
}

#[test]
fn fifty_mb_append_and_fetch_keep_the_proxy_rss_flat() {
    let new = Dovecot::start(Layout::Slash);
    new.add_user("big", "big-pw");
    let proxy = ProxyProcess::start(
        Path::new(env!("CARGO_BIN_EXE_imapferry")),
        &[],
        new.port(),
        "",
    );
    let mut c = Client::connect(proxy.port);
    c.ok("LOGIN big big-pw");
    let caps = c.ok("CAPABILITY").join(" ");
    c.ok("SELECT INBOX");
    // Warm-up: the session's buffers exist before the baseline, so what follows measures what
    // the size of a message costs.
    let small = big_message(200_000, 7);
    let uid = c.append(&small, false);
    assert_eq!(c.fetch(uid).0, small.len() as u64);
    std::thread::sleep(Duration::from_millis(200));
    let before = mem(&proxy);

    let msg = big_message(SIZE, 42);
    let want: [u8; 16] = Md5::digest(&msg).into();
    let mut uids = Vec::new();
    let t = Instant::now();
    uids.push(("synchronising literal", c.append(&msg, false)));
    eprintln!("APPEND {{{SIZE}}}: {:?}", t.elapsed());
    if caps.contains(" LITERAL+") {
        let t = Instant::now();
        uids.push(("LITERAL+", c.append(&msg, true)));
        eprintln!("APPEND {{{SIZE}+}}: {:?}", t.elapsed());
    } else {
        eprintln!("NEW offers no LITERAL+ through the proxy: {caps}");
    }
    drop(msg);
    for (how, uid) in &uids {
        let t = Instant::now();
        let (size, md5) = c.fetch(*uid);
        eprintln!("UID FETCH {uid} ({how}): {:?}", t.elapsed());
        assert_eq!(
            size, SIZE as u64,
            "size of the message appended with a {how}"
        );
        assert_eq!(md5, want, "MD5 of the message appended with a {how}");
    }
    let after = mem(&proxy);
    c.ok("LOGOUT");

    eprintln!(
        "proxy VmRSS {} -> {} KiB (+{}), VmHWM {} -> {} KiB (+{})",
        before.rss,
        after.rss,
        after.rss.saturating_sub(before.rss),
        before.hwm,
        after.hwm,
        after.hwm.saturating_sub(before.hwm)
    );
    assert!(
        after.hwm.saturating_sub(before.hwm) < MAX_GROWTH_KB,
        "peak RSS (VmHWM) grew by {} KiB",
        after.hwm - before.hwm
    );
    assert!(
        after.rss.saturating_sub(before.rss) < MAX_GROWTH_KB,
        "RSS grew by {} KiB",
        after.rss - before.rss
    );
}
