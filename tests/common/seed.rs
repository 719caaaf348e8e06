//! Deterministic test mail: a tiny PRNG, RFC 5322 message generators (CRLF, attachments, 8-bit and
//! RFC 2047 headers, log-normal sizes) reusable by benchmarks, and `seed_account`, which builds a
//! realistic account (nested/non-ASCII folders, keywords, duplicates, \Deleted, subscriptions)
//! through `RawImap` APPEND in any layout.

use std::collections::{BTreeMap, BTreeSet};

use super::dovecot::Layout;
use super::raw::RawImap;
use super::server::ImapServer;

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Log-normal message size around `median` (sigma ~1.0 resembles real mailboxes: mostly a few KB,
/// a long tail of attachments), clamped to `300..=max`.
pub fn lognormal_size(rng: &mut Rng, median: usize, sigma: f64, max: usize) -> usize {
    let z = (-2.0 * rng.unit().ln()).sqrt() * (std::f64::consts::TAU * rng.unit()).cos();
    ((median as f64 * (sigma * z).exp()) as usize).clamp(300, max.max(300))
}

/// A plain ASCII message number `i` of about `size_hint` bytes, with Message-Id, Received and Date
/// derived from `i`; above 16 KiB it becomes multipart/mixed with a base64 attachment.
pub fn message(i: u64, size_hint: usize) -> Vec<u8> {
    let mut rng = Rng::new(i ^ 0x5EED);
    let date = date_in_range(&mut rng);
    let mut m = Mail::new(i, date, format!("Message {i}").into_bytes());
    if size_hint > 16 * 1024 {
        m.content = Content::Mixed {
            attachment: rng.bytes(size_hint * 3 / 4),
            name: format!("file-{i}.bin"),
        };
        m.text = filler(&mut rng, 600);
    } else {
        m.text = filler(&mut rng, size_hint.saturating_sub(600).max(80));
    }
    m.to_bytes()
}

/// What `seed_account` builds. `small()` keeps tests fast; `default()` includes a 3 MiB attachment.
#[derive(Clone, Debug)]
pub struct SeedSpec {
    pub seed: u64,
    /// Ordinary INBOX messages besides the special cases (which are always present).
    pub inbox_messages: usize,
    /// Messages in each non-empty folder other than INBOX.
    pub folder_messages: usize,
    /// Median of the log-normal size of ordinary messages.
    pub median_size: usize,
    /// Size of the one big attachment in INBOX.
    pub big_attachment: usize,
    /// Also create "v1.2 release" (a '.' in a name); only for layouts with separator '/'.
    pub dotted_names: bool,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            seed: 1,
            inbox_messages: 40,
            folder_messages: 6,
            median_size: 6 * 1024,
            big_attachment: 3 * 1024 * 1024,
            dotted_names: false,
        }
    }
}

impl SeedSpec {
    pub fn small() -> Self {
        SeedSpec {
            inbox_messages: 10,
            folder_messages: 3,
            median_size: 2048,
            big_attachment: 64 * 1024,
            ..Self::default()
        }
    }
}

/// What was seeded, keyed by layout-independent path (see `Layout::normalize`).
#[derive(Clone, Debug, Default)]
pub struct SeedSummary {
    /// Every folder that exists after seeding (INBOX, special-use and created ones, empty ones
    /// included) with the number of messages appended (duplicates and \Deleted ones included).
    pub counts: BTreeMap<String, usize>,
    /// Subscribed folders: the seeded ones, including Drafts, Sent and Trash (Dovecot's
    /// `auto = subscribe`; the seed subscribes them where the server does not).
    pub subscribed: BTreeSet<String>,
    pub messages: usize,
    pub bytes: usize,
}

/// Entwürfe, Архив, 日本語 and "Family & Friends" in modified UTF-7.
pub const ENTWUERFE: &str = "Entw&APw-rfe";
pub const ARCHIV_RU: &str = "&BBAEQARFBDgEMg-";
pub const NIHONGO: &str = "&ZeVnLIqe-";
pub const FAMILY: &str = "Family &- Friends";

/// Keywords the seed always uses somewhere.
pub const KEYWORDS: [&str; 5] = ["$Label1", "$Forwarded", "Junk", "NonJunk", "ProjectX"];

/// Builds a realistic account for `user` (created with `pw` if needed) through IMAP APPEND.
pub fn seed_account(d: &impl ImapServer, user: &str, pw: &str, spec: &SeedSpec) -> SeedSummary {
    assert!(
        !spec.dotted_names || d.sep() == '/',
        "dotted folder names need a '/' layout"
    );
    d.add_user(user, pw);
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login(user, pw);
    let mut s = Seeder {
        imap,
        layout: d.layout(),
        rng: Rng::new(spec.seed),
        spec,
        summary: SeedSummary::default(),
    };
    let n = spec.folder_messages;

    // (path, subscribe, number of ordinary messages)
    let mut folders: Vec<(String, bool, usize)> = vec![
        ("Projects".into(), true, n),
        ("Projects/2024".into(), false, 0),
        ("Projects/2024/Q1".into(), true, n),
        (ENTWUERFE.into(), true, n),
        (ARCHIV_RU.into(), true, n),
        (NIHONGO.into(), false, n),
        (FAMILY.into(), true, n),
        ("Empty".into(), false, 0),
        ("Receipts".into(), true, 0),
    ];
    if spec.dotted_names {
        folders.push(("v1.2 release".into(), true, n));
    }
    // Dovecot creates the special folders itself (`auto = create/subscribe`); on servers that do
    // not (Courier), the seed creates them the same way, so both accounts look alike.
    let existing: BTreeSet<String> = s
        .imap
        .list()
        .into_iter()
        .map(|(_, _, name)| s.layout.normalize(&name))
        .collect();
    s.summary.counts.insert("INBOX".into(), 0);
    s.subscribe("INBOX");
    for (special, subscribe) in [
        ("Drafts", true),
        ("Sent", true),
        ("Trash", true),
        ("Junk", false),
        ("Archive", false),
    ] {
        s.summary.counts.insert(special.into(), 0);
        if !existing.contains(special) {
            s.imap.create(&s.layout.server_name(special));
        }
        if subscribe {
            s.subscribe(special);
        }
    }
    for (path, subscribe, _) in &folders {
        s.imap.create(&s.layout.server_name(path));
        s.summary.counts.insert(path.clone(), 0);
        if *subscribe {
            s.subscribe(path);
        }
    }

    s.seed_inbox();
    s.seed_special_folders();
    for (path, _, count) in folders.iter().filter(|f| f.2 > 0) {
        s.imap.select(&s.layout.server_name(path));
        for _ in 0..*count {
            let flags = s.random_flags();
            s.ordinary(path, &flags);
        }
    }
    s.imap.logout();
    s.summary
}

struct Seeder<'a> {
    imap: RawImap,
    layout: Layout,
    rng: Rng,
    spec: &'a SeedSpec,
    summary: SeedSummary,
}

impl Seeder<'_> {
    fn subscribe(&mut self, path: &str) {
        self.imap.subscribe(&self.layout.server_name(path));
        self.summary.subscribed.insert(path.to_string());
    }

    /// Every seeded message has an explicit INTERNALDATE, so two seeded accounts compare equal.
    fn append(&mut self, path: &str, flags: &[&str], (t, tz): (i64, i32), bytes: &[u8]) {
        self.imap.append(
            &self.layout.server_name(path),
            flags,
            Some(&imap_date(t, tz)),
            bytes,
        );
        *self
            .summary
            .counts
            .get_mut(path)
            .expect("unknown seed folder") += 1;
        self.summary.messages += 1;
        self.summary.bytes += bytes.len();
    }

    fn next_mail(&mut self, subject: &str) -> (Mail, (i64, i32)) {
        let i = self.spec.seed.wrapping_mul(1_000_000) + self.summary.messages as u64;
        let date = date_in_range(&mut self.rng);
        (Mail::new(i, date, subject.as_bytes().to_vec()), date)
    }

    /// A message of log-normal size: text only, or multipart with an attachment when large.
    fn ordinary(&mut self, path: &str, flags: &[&str]) {
        let size = lognormal_size(
            &mut self.rng,
            self.spec.median_size,
            1.0,
            self.spec.median_size * 30,
        );
        let subject = format!("{} #{}", self.rng.pick(&SUBJECTS), self.summary.messages);
        let (mut m, date) = self.next_mail(&subject);
        if size > 4 * self.spec.median_size {
            m.text = filler(&mut self.rng, 400);
            let name = format!(
                "{}.pdf",
                self.rng.pick(&["invoice", "scan", "report", "photo"])
            );
            m.content = Content::Mixed {
                attachment: self.rng.bytes(size * 3 / 4),
                name,
            };
        } else if self.rng.chance(0.2) {
            m.text = filler(&mut self.rng, size / 2);
            m.content = Content::Alternative;
        } else {
            m.text = filler(&mut self.rng, size);
        }
        self.append(path, flags, date, &m.to_bytes());
    }

    fn random_flags(&mut self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        for (flag, p) in [
            ("\\Seen", 0.7),
            ("\\Flagged", 0.1),
            ("\\Answered", 0.15),
            ("$Forwarded", 0.08),
            ("$Label1", 0.08),
            ("NonJunk", 0.05),
        ] {
            if self.rng.chance(p) {
                flags.push(flag);
            }
        }
        flags
    }

    fn seed_inbox(&mut self) {
        self.imap.select("INBOX");
        // One big attachment.
        let (mut m, date) = self.next_mail("Holiday photos");
        m.text = filler(&mut self.rng, 500);
        m.content = Content::Mixed {
            attachment: self.rng.bytes(self.spec.big_attachment),
            name: "photos.zip".into(),
        };
        self.append("INBOX", &["\\Seen", "$Label1"], date, &m.to_bytes());

        // Raw 8-bit UTF-8 in headers and body.
        let (mut m, date) = self.next_mail("");
        m.subject = "Grüße aus Köln – Überweisung ✓".as_bytes().to_vec();
        m.from = "Jürgen Müller <juergen@example.de>".as_bytes().to_vec();
        m.charset = "utf-8";
        m.text = "Hallo!\r\nGröße, naïve café, 日本語, Привет.\r\n"
            .as_bytes()
            .to_vec();
        self.append("INBOX", &["\\Seen", "\\Flagged"], date, &m.to_bytes());

        // Raw latin-1 bytes in headers and body.
        let (mut m, date) = self.next_mail("");
        m.subject = b"R\xe9sum\xe9 f\xfcr Fran\xe7ois".to_vec();
        m.from = b"Fran\xe7ois Gr\xe9goire <fg@example.fr>".to_vec();
        m.charset = "iso-8859-1";
        m.text = b"Ch\xe8re \xc9lodie,\r\nvoil\xe0 le r\xe9sum\xe9.\r\n".to_vec();
        self.append("INBOX", &["\\Answered", "$Forwarded"], date, &m.to_bytes());

        // RFC 2047 encoded words.
        let (mut m, date) = self.next_mail("");
        m.subject = format!(
            "=?UTF-8?B?{}?=",
            base64("Привет из Москвы".as_bytes(), false)
        )
        .into_bytes();
        m.from = b"=?ISO-8859-1?Q?Andr=E9_L=F6we?= <andre@example.fr>".to_vec();
        self.append("INBOX", &[], date, &m.to_bytes());

        // No Message-Id; then neither Message-Id nor Received.
        let (mut m, date) = self.next_mail("No Message-Id here");
        m.message_id = false;
        self.append("INBOX", &["\\Seen"], date, &m.to_bytes());
        let (mut m, date) = self.next_mail("No Message-Id, no Received");
        m.message_id = false;
        m.received = false;
        self.append(
            "INBOX",
            &["\\Seen", "\\Answered", "\\Flagged"],
            date,
            &m.to_bytes(),
        );

        // Byte-identical duplicate, same flags and date.
        let (m, date) = self.next_mail("Sent twice by a flaky client");
        let bytes = m.to_bytes();
        self.append("INBOX", &["\\Seen"], date, &bytes);
        self.append("INBOX", &["\\Seen"], date, &bytes);

        // \Deleted but not expunged; custom keywords.
        let (m, date) = self.next_mail("Deleted but not expunged");
        self.append("INBOX", &["\\Seen", "\\Deleted"], date, &m.to_bytes());
        let (m, date) = self.next_mail("Labelled");
        self.append(
            "INBOX",
            &["$Label1", "ProjectX", "NonJunk"],
            date,
            &m.to_bytes(),
        );

        for _ in 0..self.spec.inbox_messages {
            let flags = self.random_flags();
            self.ordinary("INBOX", &flags);
        }
    }

    fn seed_special_folders(&mut self) {
        let n = self.spec.folder_messages;
        self.imap.select(&self.layout.server_name("Drafts"));
        self.ordinary("Drafts", &["\\Draft"]);
        self.ordinary("Drafts", &["\\Draft", "\\Seen"]);
        self.imap.select(&self.layout.server_name("Sent"));
        for _ in 0..n {
            self.ordinary("Sent", &["\\Seen"]);
        }
        self.imap.select(&self.layout.server_name("Trash"));
        self.ordinary("Trash", &["\\Seen", "\\Deleted"]);
        self.ordinary("Trash", &["\\Seen"]);
        self.imap.select(&self.layout.server_name("Junk"));
        self.ordinary("Junk", &["Junk"]);
        self.ordinary("Junk", &["Junk", "\\Seen"]);
        self.imap.select(&self.layout.server_name("Archive"));
        for _ in 0..n {
            let flags = self.random_flags();
            self.ordinary("Archive", &flags);
        }
        let (m, date) = self.next_mail("Archived twice");
        let bytes = m.to_bytes();
        self.append("Archive", &["\\Seen", "\\Flagged"], date, &bytes);
        self.append("Archive", &["\\Seen", "\\Flagged"], date, &bytes);
    }
}

const SUBJECTS: [&str; 8] = [
    "Meeting notes",
    "Re: quarterly report",
    "Invoice",
    "Fwd: travel plans",
    "Your order has shipped",
    "Lunch?",
    "Build failed",
    "Newsletter",
];

const WORDS: [&str; 16] = [
    "the",
    "mailbox",
    "server",
    "migration",
    "please",
    "review",
    "attached",
    "tomorrow",
    "budget",
    "meeting",
    "folder",
    "thanks",
    "regards",
    "project",
    "schedule",
    "update",
];

/// About `len` bytes of ASCII text in CRLF lines of at most 72 characters.
pub fn filler(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 80);
    let mut line = String::new();
    while out.len() + line.len() < len {
        let word = rng.pick(&WORDS);
        if line.len() + word.len() + 1 > 72 {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

pub enum Content {
    Text,
    Alternative,
    Mixed { attachment: Vec<u8>, name: String },
}

/// A message under construction; header values are raw bytes so 8-bit headers are possible.
pub struct Mail {
    pub i: u64,
    pub date: (i64, i32),
    pub message_id: bool,
    pub received: bool,
    pub subject: Vec<u8>,
    pub from: Vec<u8>,
    /// Extra raw header lines (each ending in CRLF), placed before `MIME-Version`.
    pub extra: Vec<u8>,
    pub charset: &'static str,
    pub text: Vec<u8>,
    pub content: Content,
}

impl Mail {
    pub fn new(i: u64, date: (i64, i32), subject: Vec<u8>) -> Mail {
        Mail {
            i,
            date,
            message_id: true,
            received: true,
            subject,
            from: format!("User {} <user{}@example.net>", i % 97, i % 97).into_bytes(),
            extra: Vec::new(),
            charset: "us-ascii",
            text: b"Hello.\r\n".to_vec(),
            content: Content::Text,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let (t, tz) = self.date;
        let mut h = Vec::new();
        if self.received {
            h.extend_from_slice(
                format!(
                    "Received: from mx{0}.example.net (mx{0}.example.net [192.0.2.{0}])\r\n\tby mail.example.org \
                     with ESMTP id {1:X}; {2}\r\n",
                    self.i % 250 + 1,
                    self.i,
                    rfc5322_date(t + 3, tz)
                )
                .as_bytes(),
            );
        }
        for (name, value) in [("From: ", &self.from[..]), ("Subject: ", &self.subject[..])] {
            h.extend_from_slice(name.as_bytes());
            h.extend_from_slice(value);
            h.extend_from_slice(b"\r\n");
        }
        h.extend_from_slice(b"To: Alice Example <alice@example.org>\r\n");
        h.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(t, tz)).as_bytes());
        if self.message_id {
            h.extend_from_slice(
                format!("Message-Id: <{}.{:x}@example.net>\r\n", self.i, t).as_bytes(),
            );
        }
        h.extend_from_slice(&self.extra);
        h.extend_from_slice(b"MIME-Version: 1.0\r\n");
        let cte = if self.text.is_ascii() { "7bit" } else { "8bit" };
        let text_headers = format!(
            "Content-Type: text/plain; charset={}\r\nContent-Transfer-Encoding: {cte}\r\n",
            self.charset
        );
        let boundary = format!("=_imapferry_{:x}", self.i);
        match &self.content {
            Content::Text => {
                h.extend_from_slice(text_headers.as_bytes());
                h.extend_from_slice(b"\r\n");
                h.extend_from_slice(&self.text);
            }
            Content::Alternative => {
                h.extend_from_slice(
                    format!("Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n")
                        .as_bytes(),
                );
                h.extend_from_slice(format!("--{boundary}\r\n{text_headers}\r\n").as_bytes());
                h.extend_from_slice(&self.text);
                h.extend_from_slice(format!("--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<html><body><p>").as_bytes());
                h.extend_from_slice(&self.text);
                h.extend_from_slice(format!("</p></body></html>\r\n--{boundary}--\r\n").as_bytes());
            }
            Content::Mixed { attachment, name } => {
                h.extend_from_slice(
                    format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n")
                        .as_bytes(),
                );
                h.extend_from_slice(b"This is a multi-part message in MIME format.\r\n");
                h.extend_from_slice(format!("--{boundary}\r\n{text_headers}\r\n").as_bytes());
                h.extend_from_slice(&self.text);
                h.extend_from_slice(
                    format!(
                        "--{boundary}\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
                         Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
                    )
                    .as_bytes(),
                );
                for line in base64(attachment, true).as_bytes().chunks(76) {
                    h.extend_from_slice(line);
                    h.extend_from_slice(b"\r\n");
                }
                h.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
        }
        h
    }
}

/// Standard base64 (`+/`), optionally padded.
pub fn base64(bytes: &[u8], pad: bool) -> String {
    encode64(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        pad,
    )
}

fn encode64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for k in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * k)) as usize & 63] as char);
        }
        if pad {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

/// Modified UTF-7 (RFC 3501 §5.1.3) encoding of a mailbox name, e.g. "Entwürfe" -> "Entw&APw-rfe".
pub fn mutf7(name: &str) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<u8>| {
        if !pending.is_empty() {
            out.push('&');
            out.push_str(&encode64(pending, alphabet, false));
            out.push('-');
            pending.clear();
        }
    };
    for ch in name.chars() {
        if ch == '&' {
            flush(&mut out, &mut pending);
            out.push_str("&-");
        } else if (' '..='~').contains(&ch) {
            flush(&mut out, &mut pending);
            out.push(ch);
        } else {
            for unit in ch.encode_utf16(&mut [0; 2]) {
                pending.extend_from_slice(&unit.to_be_bytes());
            }
        }
    }
    flush(&mut out, &mut pending);
    out
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const TZ_MINUTES: [i32; 7] = [0, 60, 120, -300, 330, -480, 540];

/// A (UTC seconds, zone offset in minutes) pair between 2009 and 2024.
pub fn date_in_range(rng: &mut Rng) -> (i64, i32) {
    let start = 1_230_768_000; // 2009-01-01
    let end = 1_735_689_600; // 2025-01-01
    (
        start + rng.below((end - start) as u64) as i64,
        *rng.pick(&TZ_MINUTES),
    )
}

/// IMAP date-time, e.g. "05-Mar-2015 10:00:00 +0100".
pub fn imap_date(utc: i64, tz_minutes: i32) -> String {
    let (y, mo, d, h, mi, s) = civil(utc + tz_minutes as i64 * 60);
    format!(
        "{d:02}-{}-{y} {h:02}:{mi:02}:{s:02} {}",
        MONTHS[mo as usize - 1],
        zone(tz_minutes)
    )
}

/// RFC 5322 date, e.g. "Thu, 05 Mar 2015 10:00:00 +0100".
pub fn rfc5322_date(utc: i64, tz_minutes: i32) -> String {
    let local = utc + tz_minutes as i64 * 60;
    let (y, mo, d, h, mi, s) = civil(local);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        [local.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{weekday}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} {}",
        MONTHS[mo as usize - 1],
        zone(tz_minutes)
    )
}

fn zone(tz_minutes: i32) -> String {
    let sign = if tz_minutes < 0 { '-' } else { '+' };
    format!(
        "{sign}{:02}{:02}",
        tz_minutes.abs() / 60,
        tz_minutes.abs() % 60
    )
}

/// UTC seconds of an IMAP date-time ("5-Mar-2015 10:00:00 +0100", day may be space-padded).
pub fn parse_imap_date(s: &str) -> i64 {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [date, time, zone] = parts[..] else {
        panic!("bad IMAP date-time {s:?}")
    };
    let dmy: Vec<&str> = date.split('-').collect();
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(dmy[1]))
        .expect("month") as i64
        + 1;
    let hms: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    let z: i64 = zone[1..].parse().unwrap();
    let offset = (z / 100 * 60 + z % 100) * if zone.starts_with('-') { -1 } else { 1 };
    let days = days_from_civil(dmy[2].parse().unwrap(), month, dmy[0].parse().unwrap());
    days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2] - offset * 60
}

/// (year, month, day, hour, minute, second) of seconds since the epoch (Howard Hinnant's algorithm).
fn civil(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
