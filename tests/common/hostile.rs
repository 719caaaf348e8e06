//! The hostile corpus: `seed_hostile` fills an OLD account with what breaks migrations (odd, long and
//! 8-bit keywords, bogus `\`-flags planted in the maildir, bare CR/LF, 8-bit and 200 KB headers,
//! 100-deep MIME, 20 MB, dates outside 1970–2038, twin/wildcard/mUTF-7 folder names, ghost
//! subscriptions); `HostileSummary` records what OLD really holds, Dovecot's substitutions included.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};

use super::dovecot::{Dovecot, Layout};
use super::raw::{Msg, RawImap, atom_text, parse_items, quote};
use super::seed::{
    Content, Mail, Rng, base64, date_in_range, filler, imap_date, mutf7, parse_imap_date,
    rfc5322_date,
};

/// Keywords that each get a message of their own in `Hostile`.
pub const KEYWORDS: [&str; 12] = [
    "$Label3", "a.b", "a+b=c", "~tilde", "a[b", "what?", "#hash", "a/b", "a:b;c", "a'b", "$", "x-y",
];

/// Dovecot's `mail_max_keyword_length`: longer keywords get `NO [CANNOT] Keyword length too long`.
pub const MAX_KEYWORD_LEN: usize = 50;

/// System-flag lookalikes; Dovecot refuses them in APPEND and STORE (`BAD Invalid system flag`).
pub const BOGUS_FLAGS: [&str; 3] = ["\\Indexed", "\\ReceiptChecked", "\\X-Has-Attach"];

/// 8-bit keywords (latin-1 "été", UTF-8 "café"); IMAP refuses them (`BAD 8bit data in atom`).
pub const LATIN1_KEYWORD: &[u8] = b"\xe9t\xe9";
pub const UTF8_KEYWORD: &[u8] = "café".as_bytes();

/// Messages of `Hostile` (subject, flag names) whose flags are planted in the maildir.
pub const PLANTED: [(&str, &[&[u8]]); 4] = [
    ("Bogus flag Indexed", &[b"\\Indexed"]),
    ("Bogus flag ReceiptChecked", &[b"\\ReceiptChecked"]),
    (
        "Three bogus flags",
        &[b"\\Indexed", b"\\ReceiptChecked", b"\\X-Has-Attach"],
    ),
    ("8-bit keywords", &[LATIN1_KEYWORD, UTF8_KEYWORD]),
];

/// INTERNALDATEs asked for in `Hostile/Dates` (subject, date); see `HostileSummary::dates`.
pub const DATES: [(&str, &str); 7] = [
    ("Date 1900", "01-Jan-1900 00:00:00 +0000"),
    ("Date 1960", "01-Jan-1960 12:00:00 +0000"),
    ("Date 1965 at -1200", "14-Jul-1965 08:30:00 -1200"),
    (
        "Date one second before the epoch",
        "31-Dec-1969 23:59:59 +0000",
    ),
    ("Date the epoch", "01-Jan-1970 00:00:00 +0000"),
    ("Date last 32-bit second", "19-Jan-2038 03:14:07 +0000"),
    ("Date 2040", "01-Jan-2040 00:00:00 +0000"),
];

/// Subjects in `Hostile/Bytes` with odd line ends.
pub const BARE_LF: &str = "Bare LF line ends";
pub const BARE_CR: &str = "Bare CR inside";
pub const MIXED_ENDS: &str = "Mixed line ends, lone CR at the end";

pub const BIG_SIZE: usize = 20 * 1024 * 1024;
pub const HEADER_BLOCK: usize = 200 * 1024;
pub const MIME_DEPTH: usize = 100;

/// A folder whose seven parents exist only as `\Noselect` directories.
pub const DEEP: &str = "a/b/c/d/e/f/g/h";
/// Subscriptions to folders that do not exist: `a/b` is a parent of `DEEP` (listed `\Noselect`
/// in `Slash`, not listed at all in `DotInbox`), the others are gone.
pub const GHOSTS: [&str; 3] = ["Ghost", "Ghost/Child", "a/b"];
/// Names created only where the server accepts them (quotes, backslash, wildcards, spaces).
pub const RISKY_NAMES: [&str; 6] = [
    "Say \"hi\"",
    "back\\slash",
    "pct%x",
    "star*x",
    " lead",
    "trail ",
];

/// Every ATOM-CHAR of RFC 3501 (0x21–0x7E except `( ) { SP % * " \ ]`) in two keywords.
pub fn atom_char_keywords() -> Vec<String> {
    let chars: Vec<u8> = (0x21..=0x7e)
        .filter(|b| !b"(){ %*\"\\]".contains(b))
        .collect();
    chars
        .chunks(chars.len().div_ceil(2))
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect()
}

/// Folder names in modified UTF-7: "ä", "R&D", several scripts with an emoji, a nested pair.
pub fn mutf7_names() -> Vec<String> {
    vec![
        mutf7("ä"),
        mutf7("R&D"),
        mutf7("Ελληνικά Русский 日本語 עברית 😀"),
        format!("{}/{}", mutf7("Übersicht"), mutf7("Größe & Co")),
    ]
}

/// What `seed_hostile` left on OLD, keyed by layout-independent path (see `Layout::normalize`).
#[derive(Clone, Debug, Default)]
pub struct HostileSummary {
    /// Every selectable folder after seeding (INBOX and Dovecot's auto folders included) with the
    /// number of messages appended to it.
    pub counts: BTreeMap<String, usize>,
    /// LIST entries that cannot be selected (`\Noselect`/`\NonExistent`), e.g. parents of `DEEP`.
    pub noselect: BTreeSet<String>,
    /// `RISKY_NAMES` the server refused, with its tagged reply.
    pub refused_folders: BTreeMap<String, String>,
    /// LSUB after seeding: seeded subscriptions, ghosts and Dovecot's `auto = subscribe` ones.
    pub subscribed: BTreeSet<String>,
    /// Subscriptions to folders that cannot be selected (`GHOSTS`).
    pub ghost_subscriptions: BTreeSet<String>,
    /// Every keyword set through APPEND; OLD returns each byte for byte in FETCH FLAGS.
    pub keywords: BTreeSet<String>,
    /// Subject -> complete FLAGS OLD reports for the `PLANTED` messages (`atom_text` spelling).
    pub planted: BTreeMap<String, BTreeSet<String>>,
    /// The tagged reply if OLD refused the APPEND with 100 keywords.
    pub hundred_keywords_refused: Option<String>,
    /// Subject -> (INTERNALDATE asked for, INTERNALDATE OLD holds), for `DATES`.
    pub dates: BTreeMap<String, (String, String)>,
    /// Subjects whose BODY[] on OLD differs from the bytes appended (Dovecot's own rewriting).
    pub served_differently: BTreeSet<String>,
    /// Size of the message in `Hostile/Big`.
    pub big_size: usize,
    pub messages: usize,
}

/// Builds the hostile corpus for `user` (created with `pw`) on `d` (`Slash`, `DotInbox` or
/// `Reduced`); panics if OLD does not end up holding what the summary says.
pub fn seed_hostile(d: &Dovecot, user: &str, pw: &str) -> HostileSummary {
    d.add_user(user, pw);
    let mut imap = RawImap::connect(d.host(), d.port());
    imap.login(user, pw);
    let mut s = Seeder {
        d,
        user,
        pw,
        imap,
        selected: String::new(),
        date_uids: Vec::new(),
        rng: Rng::new(0x0405_711E),
        summary: HostileSummary::default(),
    };
    s.create_folders();
    s.planted_messages();
    s.keyword_messages();
    s.byte_messages();
    s.date_messages();
    s.big_message();
    s.name_messages();
    s.subscribe_all();
    s.record_dates();
    s.finish()
}

struct Seeder<'a> {
    d: &'a Dovecot,
    user: &'a str,
    pw: &'a str,
    imap: RawImap,
    /// Path of the selected folder ("" if none).
    selected: String,
    /// UIDs of the `DATES` messages, in that order.
    date_uids: Vec<u32>,
    rng: Rng,
    summary: HostileSummary,
}

impl Seeder<'_> {
    fn name(&self, path: &str) -> String {
        self.d.layout().server_name(path)
    }

    fn create_folders(&mut self) {
        let mut paths: Vec<String> = [
            "Hostile",
            "Hostile/Bytes",
            "Hostile/Dates",
            "Hostile/Big",
            "Hostile/Case",
            "Hostile/case",
            "Twin",
            "twin",
            DEEP,
        ]
        .map(String::from)
        .into();
        paths.extend(mutf7_names());
        for path in paths {
            self.imap.create(&self.name(&path));
        }
        let mut risky: Vec<&str> = RISKY_NAMES.to_vec();
        if self.d.sep() == '/' {
            risky.push("v1.2.3"); // the other layout's separator
        }
        for path in risky {
            let (_, tagged) = self
                .imap
                .command(&format!("CREATE {}", quote(&self.name(path))));
            if !tagged.starts_with("OK") {
                self.summary.refused_folders.insert(path.into(), tagged);
            }
        }
    }

    fn select(&mut self, path: &str) {
        if self.selected != path {
            self.imap.select(&self.name(path));
            self.selected = path.to_string();
        }
    }

    /// A plain message with a fresh number and date; returns it with its INTERNALDATE.
    fn mail(&mut self, subject: &str) -> (Mail, String) {
        let date = date_in_range(&mut self.rng);
        let mail = Mail::new(self.number(), date, subject.as_bytes().to_vec());
        (mail, imap_date(date.0, date.1))
    }

    fn number(&self) -> u64 {
        0x4057_0000 + self.summary.messages as u64
    }

    /// APPENDs and reads the message back by UID (body included), noting whether OLD serves
    /// other bytes than it was given. Only one copy of `bytes` is alive at a time.
    fn try_append(
        &mut self,
        path: &str,
        subject: &str,
        flags: &[&str],
        date: &str,
        bytes: Vec<u8>,
    ) -> Result<Msg, String> {
        self.select(path);
        let (len, want) = (bytes.len(), digest(&bytes));
        let uid = self
            .imap
            .try_append(&self.name(path), flags, Some(date), &bytes)?;
        drop(bytes);
        let uid = uid.map_or("*".to_string(), |u| u.to_string());
        let msg = self.imap.uid_fetch(&uid).pop().expect("appended message");
        if msg.body.len() != len || digest(&msg.body) != want {
            self.summary.served_differently.insert(subject.to_string());
        }
        *self.summary.counts.entry(path.to_string()).or_default() += 1;
        self.summary.messages += 1;
        Ok(msg)
    }

    fn append(
        &mut self,
        path: &str,
        subject: &str,
        flags: &[&str],
        date: &str,
        bytes: Vec<u8>,
    ) -> Msg {
        self.try_append(path, subject, flags, date, bytes)
            .unwrap_or_else(|tagged| panic!("APPEND {subject:?} to {path} failed: {tagged}"))
    }

    /// `PLANTED`: appended with `\Seen`, then given their flags in the maildir while no session
    /// is open, then checked through IMAP. Runs first, while `Hostile` has no keywords at all.
    fn planted_messages(&mut self) {
        let mut uids = Vec::new();
        for (subject, _) in PLANTED {
            let (m, date) = self.mail(subject);
            let msg = self.append("Hostile", subject, &["\\Seen"], &date, m.to_bytes());
            uids.push(msg.uid);
        }
        let next = RawImap::connect(self.d.host(), self.d.port());
        std::mem::replace(&mut self.imap, next).logout_and_wait();
        let dir = maildir(self.d, self.user, "Hostile");
        plant(self.d, &dir, &PLANTED);
        self.imap.login(self.user, self.pw);
        self.selected.clear();

        self.select("Hostile");
        let msgs = self.imap.uid_fetch("1:*");
        for ((subject, names), uid) in PLANTED.iter().zip(uids) {
            let want: BTreeSet<String> = names
                .iter()
                .map(|n| atom_text(n))
                .chain(["\\Seen".to_string()])
                .collect();
            let got = &msgs
                .iter()
                .find(|m| m.uid == uid)
                .expect("planted message")
                .flags;
            assert_eq!(
                got,
                &want,
                "{subject}: Dovecot does not report the planted flags; maildir: {:?}",
                std::fs::read_dir(dir.join("cur"))
                    .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            );
            self.summary
                .planted
                .insert(subject.to_string(), got.clone());
        }
    }

    /// A message with `flags`; panics unless OLD reports every one of them byte for byte.
    fn keyword_message(&mut self, subject: &str, flags: &[&str]) {
        let (m, date) = self.mail(subject);
        let msg = self.append("Hostile", subject, flags, &date, m.to_bytes());
        self.note_keywords(subject, flags, &msg);
    }

    fn note_keywords(&mut self, subject: &str, flags: &[&str], msg: &Msg) {
        for flag in flags {
            assert!(
                msg.flags.contains(*flag),
                "{subject}: OLD reports {:?}, not {flag}",
                msg.flags
            );
            if !flag.starts_with('\\') {
                self.summary.keywords.insert(flag.to_string());
            }
        }
    }

    fn keyword_messages(&mut self) {
        for (k, keyword) in KEYWORDS.iter().enumerate() {
            let flags: &[&str] = if k % 2 == 0 {
                &[*keyword, "\\Seen"]
            } else {
                &[*keyword]
            };
            self.keyword_message(&format!("Keyword {keyword}"), flags);
        }
        for (k, keyword) in atom_char_keywords().iter().enumerate() {
            self.keyword_message(&format!("Every ATOM-CHAR, part {}", k + 1), &[keyword]);
        }
        let longest = format!("{:-<MAX_KEYWORD_LEN$}", "longest-keyword");
        self.keyword_message("Keyword of 50 bytes", &["\\Flagged", &longest]);

        let forty: Vec<String> = KEYWORDS
            .iter()
            .map(|k| k.to_string())
            .chain((0..28).map(|k| format!("forty-{k:02}")))
            .collect();
        let mut flags: Vec<&str> = forty.iter().map(String::as_str).collect();
        flags.push("\\Answered");
        self.keyword_message("40 keywords", &flags);

        let hundred: Vec<String> = (0..100).map(|k| format!("hundred-{k:03}")).collect();
        let flags: Vec<&str> = hundred.iter().map(String::as_str).collect();
        let subject = "100 keywords";
        let (m, date) = self.mail(subject);
        match self.try_append("Hostile", subject, &flags, &date, m.to_bytes()) {
            Ok(msg) => self.note_keywords(subject, &flags, &msg),
            Err(tagged) => self.summary.hundred_keywords_refused = Some(tagged),
        }
    }

    /// Message-Id oddities, duplicates, bare CR/LF, 8-bit headers, a 200 KB header block and
    /// 100 nested multiparts, in `Hostile/Bytes`.
    fn byte_messages(&mut self) {
        let path = "Hostile/Bytes";
        let subject = "No Message-Id";
        let (mut m, date) = self.mail(subject);
        m.message_id = false;
        self.append(path, subject, &["\\Seen"], &date, m.to_bytes());

        for (subject, text) in [
            (
                "Shared Message-Id, first",
                "The first of two different messages.\r\n",
            ),
            (
                "Shared Message-Id, second",
                "The second, with other text.\r\n",
            ),
        ] {
            let (mut m, date) = self.mail(subject);
            m.message_id = false;
            m.extra = b"Message-Id: <shared-id@hostile.example>\r\n".to_vec();
            m.text = text.as_bytes().to_vec();
            self.append(path, subject, &[], &date, m.to_bytes());
        }

        let subject = "Exact duplicate";
        let (m, date) = self.mail(subject);
        let bytes = m.to_bytes();
        for _ in 0..2 {
            self.append(path, subject, &["\\Seen", "$Label3"], &date, bytes.clone());
        }

        for (subject, bytes) in self.line_end_messages() {
            let date = imap_date(date_in_range(&mut self.rng).0, 0);
            self.append(path, subject, &[], &date, bytes);
        }

        let subject = "Raw UTF-8 headers";
        let (mut m, date) = self.mail(subject);
        m.subject = "Raw UTF-8: Grüße, 日本語, Привет ✓".as_bytes().to_vec();
        m.from = "Jürgen Müller <jürgen@example.de>".as_bytes().to_vec();
        m.extra = "X-Raw-Utf8: naïve café, 😀\r\n".as_bytes().to_vec();
        m.charset = "utf-8";
        m.text = "Grüße.\r\n".as_bytes().to_vec();
        self.append(path, subject, &[], &date, m.to_bytes());

        let subject = "Raw latin-1 headers";
        let (mut m, date) = self.mail(subject);
        m.subject = b"Raw latin-1: R\xe9sum\xe9 f\xfcr Fran\xe7ois".to_vec();
        m.from = b"Fran\xe7ois Gr\xe9goire <fg@example.fr>".to_vec();
        m.extra = b"X-Raw-Latin1: cr\xe8me br\xfbl\xe9e\r\n".to_vec();
        m.charset = "iso-8859-1";
        m.text = b"Ch\xe8re \xc9lodie.\r\n".to_vec();
        self.append(path, subject, &[], &date, m.to_bytes());

        let subject = "200 KB header block";
        let (mut m, date) = self.mail(subject);
        m.extra = huge_header(&mut self.rng, m.date);
        self.append(path, subject, &[], &date, m.to_bytes());

        let subject = "100 nested multiparts";
        let (m, date) = self.mail(subject);
        self.append(path, subject, &[], &date, nested_mime(m, MIME_DEPTH));
    }

    /// Hand-made messages with bare LF, bare CR and mixed line ends.
    fn line_end_messages(&mut self) -> Vec<(&'static str, Vec<u8>)> {
        let head = |s: &mut Self, subject: &str, extra: &[u8]| {
            let (mut m, _) = s.mail(subject);
            m.extra = extra.to_vec();
            m.text.clear();
            m.to_bytes()
        };
        let lf = [
            head(self, BARE_LF, b""),
            b"Every line of this message ends in a bare LF.\r\nSo does this one.\r\n".to_vec(),
        ]
        .concat()
        .split(|&b| b == b'\r')
        .flatten()
        .copied()
        .collect();
        let cr = [
            head(self, BARE_CR, b"X-Bare-Cr: one\rtwo\r\n").as_slice(),
            b"A bare CR\rin the middle of a line.\r\nCR CR LF\r\r\nEnd.\r\n",
        ]
        .concat();
        let mixed = [
            head(self, MIXED_ENDS, b"X-Lf: lf\nX-Cr: cr\rX-Crlf: crlf\r\n").as_slice(),
            b"CRLF\r\nLF\nCR\rThe message ends in a lone CR\r",
        ]
        .concat();
        vec![(BARE_LF, lf), (BARE_CR, cr), (MIXED_ENDS, mixed)]
    }

    fn date_messages(&mut self) {
        for (subject, asked) in DATES {
            let mut m = Mail::new(self.number(), (parse_imap_date(asked), 0), subject.into());
            m.text = format!("INTERNALDATE asked for: {asked}\r\n").into_bytes();
            let msg = self.append("Hostile/Dates", subject, &["\\Seen"], asked, m.to_bytes());
            self.date_uids.push(msg.uid);
        }
    }

    /// Dovecot 2.3 reads INTERNALDATE from the file's mtime once and caches it as an unsigned
    /// 32-bit number: every later read of a pre-1970 date gets the wrapped value (1960 -> 2096).
    /// So the dates are recorded as fresh sessions see them after that, and must not change more.
    fn record_dates(&mut self) {
        let first = self.fresh_dates();
        let held = self.fresh_dates();
        assert_eq!(first, held, "OLD's INTERNALDATEs still change");
        for ((subject, asked), uid) in DATES.iter().zip(&self.date_uids) {
            let date = (asked.to_string(), held[uid].clone());
            self.summary.dates.insert(subject.to_string(), date);
        }
    }

    fn fresh_dates(&self) -> BTreeMap<u32, String> {
        let mut imap = RawImap::connect(self.d.host(), self.d.port());
        imap.login(self.user, self.pw);
        imap.examine(&self.name("Hostile/Dates"));
        let untagged = imap.exec("UID FETCH 1:* (UID INTERNALDATE)");
        imap.logout();
        untagged
            .iter()
            .map(|u| {
                let items = parse_items(&u[2..]);
                let attrs = items[2].list();
                let get = |name: &str| {
                    let at = attrs.iter().position(|a| a.text() == name).unwrap();
                    attrs[at + 1].text()
                };
                (get("UID").parse().unwrap(), get("INTERNALDATE"))
            })
            .collect()
    }

    fn big_message(&mut self) {
        let subject = "20 MB attachment";
        let (m, date) = self.mail(subject);
        let bytes = big_message(&mut self.rng, m, BIG_SIZE);
        self.summary.big_size = bytes.len();
        self.append("Hostile/Big", subject, &["\\Seen"], &date, bytes);
    }

    /// One message in each odd-named folder; twins get one and two, so a mix-up shows.
    fn name_messages(&mut self) {
        let mut folders: Vec<(String, usize)> = vec![
            ("Hostile/Case".into(), 1),
            ("Hostile/case".into(), 2),
            ("Twin".into(), 1),
            ("twin".into(), 2),
            (DEEP.into(), 1),
        ];
        folders.extend(mutf7_names().into_iter().map(|n| (n, 1)));
        for name in RISKY_NAMES.iter().chain(&["v1.2.3"]) {
            let created = self.d.sep() == '/' || *name != "v1.2.3";
            if created && !self.summary.refused_folders.contains_key(*name) {
                folders.push((name.to_string(), 1));
            }
        }
        for (path, n) in folders {
            for k in 1..=n {
                let subject = format!("In {path} #{k}");
                let (m, date) = self.mail(&subject);
                self.append(&path, &subject, &[], &date, m.to_bytes());
            }
        }
    }

    fn subscribe_all(&mut self) {
        let mut paths: Vec<String> = ["INBOX", "Hostile", "Hostile/case", "Twin", DEEP]
            .map(String::from)
            .into();
        paths.extend(mutf7_names());
        if !self.summary.refused_folders.contains_key(RISKY_NAMES[0]) {
            paths.push(RISKY_NAMES[0].to_string());
        }
        for path in paths {
            self.imap.subscribe(&self.name(&path));
        }
        for path in GHOSTS {
            self.ghost_subscribe(path);
        }
        // Creating Ghost/Child in `LAYOUT=fs` left Ghost behind as an empty \Noselect directory.
        for (attrs, _, name) in self.imap.list() {
            let has = |a: &str| attrs.iter().any(|x| x.eq_ignore_ascii_case(a));
            let path = self.d.layout().normalize(&name);
            if GHOSTS.contains(&path.as_str()) && has("\\Noselect") && has("\\HasNoChildren") {
                self.imap.exec(&format!("DELETE {}", quote(&name)));
            }
        }
    }

    /// Dovecot 2.3 refuses SUBSCRIBE to a name that does not exist at all (a `\Noselect` parent
    /// counts as existing) but keeps subscriptions on DELETE: then create, subscribe, delete.
    fn ghost_subscribe(&mut self, path: &str) {
        let name = self.name(path);
        let (_, tagged) = self.imap.command(&format!("SUBSCRIBE {}", quote(&name)));
        if !tagged.starts_with("OK") {
            self.imap.create(&name);
            self.imap.subscribe(&name);
            self.imap.exec(&format!("DELETE {}", quote(&name)));
        }
    }

    /// Reads LIST and LSUB back into the summary.
    fn finish(mut self) -> HostileSummary {
        let layout: Layout = self.d.layout();
        let s = &mut self.summary;
        for (attrs, _, name) in self.imap.list() {
            let path = layout.normalize(&name);
            let unselectable = attrs.iter().any(|a| {
                a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
            });
            if unselectable {
                s.noselect.insert(path);
            } else {
                s.counts.entry(path).or_insert(0);
            }
        }
        assert!(
            s.counts.keys().all(|p| !s.noselect.contains(p)),
            "a folder with messages is not selectable: {s:?}"
        );
        s.subscribed = self
            .imap
            .lsub()
            .into_iter()
            .map(|(_, _, name)| layout.normalize(&name))
            .collect();
        s.ghost_subscriptions = s
            .subscribed
            .iter()
            .filter(|p| !s.counts.contains_key(*p))
            .cloned()
            .collect();
        self.imap.logout();
        self.summary
    }
}

/// Directory of folder `path` in `user`'s maildir (`LAYOUT=fs` or Maildir++).
pub fn maildir(d: &Dovecot, user: &str, path: &str) -> PathBuf {
    let root = d.dir().join("home").join(user).join("Maildir");
    match d.layout() {
        Layout::DotInbox => root.join(format!(".{}", path.replace('/', "."))),
        Layout::Slash | Layout::Reduced => root.join(path),
    }
}

/// Gives messages flags the way Dovecot's maildir stores keywords: name number n on a `n name`
/// line of the folder's `dovecot-keywords`, letter `a`+n after `:2,` in the file name. Dovecot
/// takes any bytes there, `\`-names and 8-bit ones too. Messages are found by Subject. The folder
/// must have no keywords yet and no session may have it open; the next session's maildir sync
/// sees the renames (cur/ changed) and reads the file, so index and cache files can stay.
fn plant(d: &Dovecot, dir: &Path, plants: &[(&str, &[&[u8]])]) {
    let keywords_file = dir.join("dovecot-keywords");
    assert!(
        !keywords_file.exists(),
        "{} has keywords already",
        dir.display()
    );
    let mut names: Vec<&[u8]> = Vec::new();
    for name in plants.iter().flat_map(|(_, names)| names.iter()) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    assert!(names.len() <= 26, "maildir file names carry 26 keywords");
    let mut file = Vec::new();
    for (n, name) in names.iter().enumerate() {
        file.extend_from_slice(format!("{n} ").as_bytes());
        file.extend_from_slice(name);
        file.push(b'\n');
    }
    std::fs::write(&keywords_file, file).expect("write dovecot-keywords");
    d.chown_for_dovecot(&keywords_file);
    for (subject, flags) in plants {
        let letters: String = flags
            .iter()
            .map(|f| char::from(b'a' + names.iter().position(|n| n == f).unwrap() as u8))
            .collect();
        let (from, file_name) = find_by_subject(dir, subject);
        let (base, info) = file_name.split_once(":2,").unwrap_or((&file_name, ""));
        let to = dir.join("cur").join(format!("{base}:2,{info}{letters}"));
        std::fs::rename(&from, &to).expect("rename maildir file");
    }
}

/// The one message file in cur/ or new/ of `dir` with this Subject (Dovecot stores LF line ends).
fn find_by_subject(dir: &Path, subject: &str) -> (PathBuf, String) {
    let needles = [
        format!("\nSubject: {subject}\n"),
        format!("\nSubject: {subject}\r\n"),
    ];
    let mut found = Vec::new();
    for sub in ["cur", "new"] {
        for entry in std::fs::read_dir(dir.join(sub))
            .expect("read maildir")
            .flatten()
        {
            let bytes = std::fs::read(entry.path()).expect("read message file");
            let has = |n: &String| bytes.windows(n.len()).any(|w| w == n.as_bytes());
            if needles.iter().any(has) {
                let name = entry.file_name().into_string().expect("ASCII file name");
                found.push((entry.path(), name));
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "{subject:?} in {}: {found:?}",
        dir.display()
    );
    found.pop().unwrap()
}

/// At least `HEADER_BLOCK` bytes of trace headers: Received lines folded over three lines, every
/// tenth relay an X- report folded every ~70 bytes, and one unfolded 20 KB line.
fn huge_header(rng: &mut Rng, (t, tz): (i64, i32)) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BLOCK + 4096);
    let unfolded: Vec<u8> = filler(rng, 20_000)
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(&b' ');
    h.extend_from_slice(b"X-Unfolded: ");
    h.extend_from_slice(&unfolded);
    h.extend_from_slice(b"\r\n");
    let mut k = 0;
    while h.len() < HEADER_BLOCK {
        h.extend_from_slice(
            format!(
                "Received: from relay{k}.example.net (relay{k}.example.net [198.51.100.{}])\r\n\
                 \tby relay{}.example.net (Postfix) with ESMTPS id {:016X}\r\n\
                 \tfor <alice@example.org>; {}\r\n",
                k % 254 + 1,
                k + 1,
                rng.next_u64(),
                rfc5322_date(t - k, tz)
            )
            .as_bytes(),
        );
        if k % 10 == 0 {
            h.extend_from_slice(format!("X-Scanner-Report-{k}: ").as_bytes());
            let text = filler(rng, 2000);
            let folded: Vec<u8> = text[..text.len() - 2]
                .split(|&b| b == b'\n')
                .collect::<Vec<_>>()
                .join(&b"\n\t"[..]);
            h.extend_from_slice(&folded);
            h.extend_from_slice(b"\r\n");
        }
        k += 1;
    }
    h
}

/// `mail`'s headers over `depth` multiparts nested inside each other around one text part.
fn nested_mime(mut mail: Mail, depth: usize) -> Vec<u8> {
    mail.text.clear();
    let head = mail.to_bytes();
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let mut out: Vec<u8> = head[..end]
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"Content-"))
        .flatten()
        .copied()
        .collect();
    out.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"n0\"\r\n\r\n");
    for k in 0..depth {
        out.extend_from_slice(format!("--n{k}\r\n").as_bytes());
        if k + 1 < depth {
            let next = k + 1;
            out.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"n{next}\"\r\n\r\n").as_bytes(),
            );
        } else {
            out.extend_from_slice(
                format!("Content-Type: text/plain\r\n\r\nInside {depth} multiparts.\r\n")
                    .as_bytes(),
            );
        }
    }
    for k in (0..depth).rev() {
        out.extend_from_slice(format!("--n{k}--\r\n").as_bytes());
    }
    out
}

/// `mail` with a base64 attachment of deterministic noise, at least `size` bytes, written
/// straight into one buffer (no separate attachment or base64 copies).
fn big_message(rng: &mut Rng, mut mail: Mail, size: usize) -> Vec<u8> {
    mail.text = b"Noise attached.\r\n".to_vec();
    mail.content = Content::Mixed {
        attachment: Vec::new(),
        name: "noise.bin".into(),
    };
    let skeleton = mail.to_bytes();
    // The skeleton ends with the empty attachment's blank line and the closing boundary line.
    let tail_at = skeleton[..skeleton.len() - 2]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let mut out = Vec::with_capacity(size + 1024);
    out.extend_from_slice(&skeleton[..tail_at]);
    let mut chunk = [0u8; 57]; // one 76-character base64 line
    while out.len() + (skeleton.len() - tail_at) < size {
        for part in chunk.chunks_mut(8) {
            part.copy_from_slice(&rng.next_u64().to_le_bytes()[..part.len()]);
        }
        out.extend_from_slice(base64(&chunk, true).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&skeleton[tail_at..]);
    out
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}
