//! Mail clients' caches across the cutover (issue 15, `[migration] keep_client_caches`). A client
//! syncs an account straight from OLD into its cache; the migration proxy then copies the account
//! to NEW; the same client configuration and state are pointed at the proxy (only the port
//! changes) and the client runs again. Three clients: mbsync (isync 1.4, local Maildir),
//! offlineimap (Debian's offlineimap3, local Maildir) and a QRESYNC client
//! (tests/scripts/qresync_cache.py, raw sockets).
//!
//! What the tests here prove is the behaviour without the feature (the proxy shows NEW's
//! UIDVALIDITY and UIDs), which is what makes the feature worth having:
//! - mbsync prints "Recovered from change of UIDVALIDITY" for every folder (it re-matches its
//!   messages by Message-Id, so nothing is downloaded twice), then keeps working through the
//!   proxy: a local flag change and a local deletion reach NEW and OLD (the proxy's mirror), mail
//!   delivered to NEW meanwhile arrives locally;
//! - offlineimap skips every non-empty folder ("UID validity problem for folder … (saved OLD's;
//!   got NEW's); skipping it") and exits with status 2: the user cannot sync until the cache is
//!   thrown away;
//! - the QRESYNC client gets NEW's UIDVALIDITY back for OLD's, no VANISHED and no FETCH lines, and
//!   downloads every message again.
//!
//! The feature's acceptance (same helpers: no notice, nothing transferred, exit status 0, no body
//! downloaded again) is added to this file with the feature. The clients are required, as in
//! tests/proxy_clients.rs: a missing one fails the test (scripts/install-deps.sh installs them).
//! mbsync prints its progress counters only to a terminal, so it runs under `script` (util-linux).
//! OLD's folders get fixed UIDVALIDITY values far from Dovecot's time-based ones (`doveadm mailbox
//! update`), so OLD's and NEW's can never be equal by chance.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::maildir::{maildir_files, normalize};
use common::{
    Dovecot, Layout, Msg, Proxy, RawImap, migration_config, require, snapshot, wait_until,
};

const USER: &str = "carla";
const PW: &str = "carlapw";
/// OLD's folders with messages, and how many; the seed numbers messages 1.. across them in this
/// order (INBOX holds messages 1..=20, Work 21..=25). Dovecot adds its empty special-use folders.
const SEEDED: [(&str, u64); 2] = [("INBOX", 20), ("Work", 5)];
/// OLD's folders get UIDVALIDITY values from here on (Dovecot's own are Unix times).
const OLD_UIDVALIDITY: u32 = 1_000_001;

/// OLD with the seeded account, an empty NEW, and a directory for the clients and the proxy.
struct Scenario {
    old: Dovecot,
    new: Dovecot,
    dir: tempfile::TempDir,
    /// Every folder of OLD (INBOX, Work, Dovecot's special-use folders) with its UIDVALIDITY.
    old_uidvalidity: BTreeMap<String, u32>,
}

fn scenario() -> Scenario {
    let old = Dovecot::start(Layout::Slash);
    let new = Dovecot::start(Layout::Slash);
    old.add_user(USER, PW);
    new.add_user(USER, PW);
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(USER, PW);
    let mut i = 0;
    for (folder, n) in SEEDED {
        if folder != "INBOX" {
            c.create(folder);
            c.subscribe(folder);
        }
        for _ in 0..n {
            i += 1;
            // Every third message unread, so flags differ from message to message.
            let flags: &[&str] = if i % 3 == 0 { &[] } else { &["\\Seen"] };
            c.append(folder, flags, None, &common::message(i, 1_500));
        }
    }
    let folders: Vec<String> = c.list().into_iter().map(|(_, _, name)| name).collect();
    c.logout_and_wait();
    for (k, folder) in folders.iter().enumerate() {
        old.set_uidvalidity(USER, folder, OLD_UIDVALIDITY + k as u32);
    }
    let old_uidvalidity = uidvalidities(old.port(), &folders);
    for (k, folder) in folders.iter().enumerate() {
        assert_eq!(old_uidvalidity[folder], OLD_UIDVALIDITY + k as u32);
    }
    Scenario {
        old,
        new,
        dir: tempfile::tempdir().unwrap(),
        old_uidvalidity,
    }
}

/// UIDVALIDITY of each of `folders` at `port` (STATUS).
fn uidvalidities(port: u16, folders: &[String]) -> BTreeMap<String, u32> {
    let mut c = RawImap::connect("127.0.0.1", port);
    c.login(USER, PW);
    let map = folders.iter().map(|f| (f.clone(), c.status(f).2)).collect();
    c.logout();
    map
}

/// Every message of `folder` as seen at `port` (the proxy's view, or a server's), in UID order.
fn messages_at(port: u16, folder: &str) -> Vec<Msg> {
    let mut c = RawImap::connect("127.0.0.1", port);
    c.login(USER, PW);
    let msgs = c.uid_fetch_all(folder);
    c.logout();
    msgs
}

/// The message of `msgs` whose subject is `Message {i}` (the seed's numbering).
fn numbered(msgs: &[Msg], i: u64) -> Option<&Msg> {
    msgs.iter().find(|m| subject_is(&m.body, i))
}

fn subject_is(body: &[u8], i: u64) -> bool {
    normalize(body)
        .split(|&b| b == b'\n')
        .any(|line| line == format!("Subject: Message {i}").as_bytes())
}

impl Scenario {
    fn folders(&self) -> Vec<String> {
        self.old_uidvalidity.keys().cloned().collect()
    }

    /// The migration proxy in front of NEW, migrating from OLD, state in the scenario's
    /// directory. `keep_client_caches = true` is written only when asked for: a proxy without the
    /// feature refuses the key.
    fn proxy(&self, keep_client_caches: bool) -> Proxy {
        let mut text = migration_config(
            &self.old,
            &self.new,
            &self.dir.path().join("state.db"),
            10_000,
        );
        if keep_client_caches {
            text.push_str("keep_client_caches = true\n");
        }
        Proxy::start_with(&text, false)
    }

    /// Lets the proxy migrate the account: a login and a SELECT of every folder through it (a
    /// SELECT waits for its folder's backfill, within `select_budget_ms`), then NEW holds every
    /// message of OLD.
    fn migrate(&self, proxy: &Proxy) {
        let mut c = RawImap::connect("127.0.0.1", proxy.port);
        c.login(USER, PW);
        let old = snapshot(&self.old, USER, PW);
        for folder in self.folders() {
            assert_eq!(
                c.select(&folder) as usize,
                old.count(&folder),
                "{folder} through the proxy"
            );
        }
        c.logout();
        let new = snapshot(&self.new, USER, PW);
        for folder in self.folders() {
            assert_eq!(new.count(&folder), old.count(&folder), "{folder} on NEW");
        }
    }

    /// Asserts the cutover has happened: every folder through the proxy shows a UIDVALIDITY
    /// other than OLD's (NEW's, without the feature).
    fn assert_new_uidvalidity(&self, proxy: &Proxy) -> BTreeMap<String, u32> {
        let shown = uidvalidities(proxy.port, &self.folders());
        let on_new = uidvalidities(self.new.port(), &self.folders());
        assert_eq!(shown, on_new, "the proxy shows NEW's UIDVALIDITY");
        for (folder, value) in &shown {
            assert_ne!(*value, self.old_uidvalidity[folder], "{folder}");
        }
        shown
    }
}

/// Exit status and output of one client run.
struct ClientRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for ClientRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run_client(cmd: &mut Command) -> ClientRun {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    ClientRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every message file under a client's Maildir root (state files left out).
fn all_maildir_files(root: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for e in std::fs::read_dir(root).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files.extend(maildir_files(&path));
        }
    }
    files
}

/// The local file holding message `i` (the seed's numbering) in Maildir folder `folder`.
fn local_file(folder: &Path, i: u64) -> PathBuf {
    maildir_files(folder)
        .into_iter()
        .find(|f| subject_is(&std::fs::read(f).unwrap(), i))
        .unwrap_or_else(|| panic!("no local copy of message {i} in {}", folder.display()))
}

/// Adds Maildir flag letters to a local message file (moving it to cur/, as clients do).
fn add_maildir_flags(file: &Path, add: &str) -> PathBuf {
    let name = file.file_name().unwrap().to_str().unwrap();
    let (base, flags) = name.split_once(":2,").unwrap_or((name, ""));
    let mut flags: Vec<char> = flags.chars().chain(add.chars()).collect();
    flags.sort();
    flags.dedup();
    let folder = file.parent().unwrap().parent().unwrap();
    let to = folder
        .join("cur")
        .join(format!("{base}:2,{}", flags.iter().collect::<String>()));
    std::fs::rename(file, &to).unwrap();
    to
}

/// Asserts that local Maildir folder `local` holds exactly the messages of `remote`, each once.
fn assert_local_equals(local: &Path, remote: &[Msg], what: &str) {
    let count = |bodies: Vec<Vec<u8>>| {
        let mut m = BTreeMap::new();
        for b in bodies {
            *m.entry(b).or_insert(0) += 1;
        }
        m
    };
    let local_bodies = count(
        maildir_files(local)
            .iter()
            .map(|f| normalize(&std::fs::read(f).unwrap()))
            .collect(),
    );
    let dups = local_bodies.values().filter(|&&n| n > 1).count();
    assert_eq!(dups, 0, "{what}: duplicates in {}", local.display());
    let remote_bodies = count(remote.iter().map(|m| normalize(&m.body)).collect());
    assert_eq!(
        local_bodies.len(),
        remote_bodies.len(),
        "{what}: {} count",
        local.display()
    );
    assert!(
        local_bodies == remote_bodies,
        "{what}: {} differs from the server",
        local.display()
    );
}

/// One side's progress counters of an mbsync run: messages added, messages whose flags were
/// updated, messages trashed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    added: u32,
    flagged: u32,
    trashed: u32,
}

/// An mbsync run: its output (under a terminal, so with progress counters; notices on stdout)
/// and its final counters (`C: 1/1  B: 7/7  F: +0/0 *0/0 #0/0  N: +25/25 *0/0 #0/0`: far and
/// near side).
struct MbsyncRun {
    run: ClientRun,
    far: Counts,
    near: Counts,
}

impl MbsyncRun {
    /// Output lines that are not progress counters (notices, warnings, errors).
    fn messages(&self) -> Vec<String> {
        self.run
            .stdout
            .split(['\r', '\n'])
            .chain(self.run.stderr.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("C: "))
            .map(str::to_string)
            .collect()
    }
}

/// One mbsync configuration (`mbsyncrc`) and its local Maildir, with mbsync's state in the
/// Maildir (`SyncState *`).
struct Mbsync {
    rc: PathBuf,
    err: PathBuf,
    mail: PathBuf,
}

impl Mbsync {
    fn new(root: &Path) -> Mbsync {
        let dir = root.join("mbsync");
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        Mbsync {
            rc: dir.join("mbsyncrc"),
            err: dir.join("stderr"),
            mail,
        }
    }

    /// Writes the configuration for the server at `port`; nothing else changes between servers.
    fn point_at(&self, port: u16) {
        let text = format!(
            "IMAPAccount mail\nHost 127.0.0.1\nPort {port}\nUser {USER}\nPass {PW}\n\
             SSLType None\n\n\
             IMAPStore remote\nAccount mail\n\n\
             MaildirStore local\nPath {mail}/\nInbox {mail}/INBOX\nSubFolders Verbatim\n\n\
             Channel all\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\n\
             SyncState *\n",
            mail = self.mail.display(),
        );
        std::fs::write(&self.rc, text).unwrap();
    }

    /// `mbsync -a` under `script`, so that it prints its counters (only to a terminal).
    fn run(&self) -> MbsyncRun {
        let shell = format!(
            "mbsync -c '{}' -a 2>'{}'",
            self.rc.display(),
            self.err.display()
        );
        let mut run = run_client(Command::new("script").args(["-qec", &shell, "/dev/null"]));
        run.stderr = std::fs::read_to_string(&self.err).unwrap_or_default();
        let last = run
            .stdout
            .split(['\r', '\n'])
            .rfind(|l| l.starts_with("C: "))
            .unwrap_or_else(|| panic!("no mbsync counters: {run:?}"))
            .to_string();
        let done = |token: &str| -> u32 {
            token
                .trim_start_matches(['+', '*', '#'])
                .split('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("counter {token:?} in {last:?}"))
        };
        let tokens: Vec<&str> = last.split_whitespace().collect();
        let side = |label: &str| {
            let at = tokens
                .iter()
                .position(|t| *t == label)
                .unwrap_or_else(|| panic!("no {label} in {last:?}"));
            Counts {
                added: done(tokens[at + 1]),
                flagged: done(tokens[at + 2]),
                trashed: done(tokens[at + 3]),
            }
        };
        let (far, near) = (side("F:"), side("N:"));
        assert_eq!(tokens.get(1), Some(&"1/1"), "channel not done: {run:?}");
        MbsyncRun { run, far, near }
    }
}

/// An offlineimap run: its output and what it logged (basic UI).
struct OfflineRun {
    run: ClientRun,
}

impl OfflineRun {
    fn lines(&self) -> Vec<&str> {
        self.run
            .stdout
            .lines()
            .chain(self.run.stderr.lines())
            .collect()
    }

    /// `Copy message UID 3 (3/20) Remote:INBOX -> Local:INBOX` lines: messages downloaded or
    /// uploaded.
    fn copies(&self) -> Vec<&str> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with("Copy message "))
            .collect()
    }

    /// `(folder, saved, got)` of each `UID validity problem for folder INBOX (repo Remote)
    /// (saved 1000001; got 1796444426); skipping it. …` line.
    fn validity_problems(&self) -> BTreeMap<String, (u32, u32)> {
        let mut problems = BTreeMap::new();
        for line in self.lines() {
            let Some(rest) = line.strip_prefix("UID validity problem for folder ") else {
                continue;
            };
            let (folder, rest) = rest.split_once(" (repo ").expect(line);
            let saved = rest.split_once("(saved ").expect(line).1;
            let (saved, got) = saved.split_once("; got ").expect(line);
            let got = got.split_once(')').expect(line).0;
            problems.insert(
                folder.to_string(),
                (saved.parse().expect(line), got.parse().expect(line)),
            );
        }
        problems
    }
}

/// One offlineimap configuration, its local Maildir and its metadata (status and UIDVALIDITY
/// caches) directory.
struct OfflineImap {
    rc: PathBuf,
    mail: PathBuf,
    meta: PathBuf,
}

impl OfflineImap {
    fn new(root: &Path) -> OfflineImap {
        let dir = root.join("offlineimap");
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        OfflineImap {
            rc: dir.join("offlineimaprc"),
            meta: dir.join("meta"),
            mail,
        }
    }

    /// Writes the configuration for the server at `port`; nothing else changes between servers.
    fn point_at(&self, port: u16) {
        let text = format!(
            "[general]\naccounts = mail\nmetadata = {meta}\n\n\
             [Account mail]\nlocalrepository = Local\nremoterepository = Remote\n\n\
             [Repository Local]\ntype = Maildir\nlocalfolders = {mail}\n\n\
             [Repository Remote]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {port}\n\
             remoteuser = {USER}\nremotepass = {PW}\nssl = no\nstarttls = no\n",
            meta = self.meta.display(),
            mail = self.mail.display(),
        );
        std::fs::write(&self.rc, text).unwrap();
    }

    /// One sync (`-o`) with the basic UI, which logs every copy, flag change and deletion.
    fn run(&self) -> OfflineRun {
        OfflineRun {
            run: run_client(
                Command::new("offlineimap")
                    .arg("-c")
                    .arg(&self.rc)
                    .args(["-o", "-u", "basic"]),
            ),
        }
    }
}

/// What the QRESYNC client (tests/scripts/qresync_cache.py) printed.
fn qresync_client(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/qresync_cache.py");
    let run = run_client(Command::new("python3").arg(script).args(args));
    assert_eq!(run.code, Some(0), "qresync_cache.py {args:?}: {run:?}");
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// The QRESYNC client's cache of `folder`, filled from the server at `port`.
fn qresync_record(port: u16, folder: &str) -> serde_json::Value {
    qresync_client(&["record", "127.0.0.1", &port.to_string(), USER, PW, folder])
}

/// The QRESYNC client bringing `cache` (saved in `dir`) up to date from the server at `port`.
fn qresync_resync(
    dir: &Path,
    port: u16,
    folder: &str,
    cache: &serde_json::Value,
) -> serde_json::Value {
    let file = dir.join("qresync-cache.json");
    std::fs::write(&file, cache.to_string()).unwrap();
    qresync_client(&[
        "resync",
        "127.0.0.1",
        &port.to_string(),
        USER,
        PW,
        folder,
        file.to_str().unwrap(),
    ])
}

fn json_u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|n| n.as_u64().unwrap() as u32)
        .collect()
}

/// UID -> flags of a QRESYNC client's cache (or of its report).
fn json_flags(v: &serde_json::Value) -> BTreeMap<u32, BTreeSet<String>> {
    v["flags"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(uid, flags)| {
            let flags = flags
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            (uid.parse().unwrap(), flags)
        })
        .collect()
}

/// UID -> flags of `folder` as the server (or proxy) at `port` shows it.
fn flags_at(port: u16, folder: &str) -> BTreeMap<u32, BTreeSet<String>> {
    messages_at(port, folder)
        .into_iter()
        .map(|m| (m.uid, m.flags))
        .collect()
}

/// Changes made through the proxy by another device while the QRESYNC client is away: message 3
/// (by sequence number) flagged, message 5 expunged.
fn change_inbox_through(proxy: &Proxy) {
    let mut c = RawImap::connect("127.0.0.1", proxy.port);
    c.login(USER, PW);
    c.select("INBOX");
    c.exec("STORE 3 +FLAGS (\\Flagged)");
    c.exec("STORE 5 +FLAGS.SILENT (\\Deleted)");
    c.exec("EXPUNGE");
    c.logout();
}

/// The user keeps working with the same mbsync (`mb`, pointed at the proxy): message 3 flagged
/// locally, message 7 trashed locally (`T`, expunged by `Expunge Both`), and message 100 delivered
/// to NEW meanwhile (APPEND straight to NEW). One run takes each change where it belongs: far side
/// one flag update (\Flagged) and one (\Deleted, then expunged), near side one new message; NEW
/// and, through the proxy's mirror, OLD get the flag and lose message 7; the Maildir equals NEW.
fn mbsync_story(s: &Scenario, mb: &Mbsync) {
    let inbox = mb.mail.join("INBOX");
    add_maildir_flags(&local_file(&inbox, 3), "F");
    add_maildir_flags(&local_file(&inbox, 7), "T");
    let mut c = RawImap::connect(s.new.host(), s.new.port());
    c.login(USER, PW);
    c.append("INBOX", &[], None, &common::message(100, 1_500));
    c.logout();

    let r = mb.run();
    assert_eq!(r.run.code, Some(0), "{:?}", r.run);
    assert_eq!(
        (r.far, r.near),
        (
            Counts {
                added: 0,
                flagged: 2,
                trashed: 0
            },
            Counts {
                added: 1,
                flagged: 0,
                trashed: 0
            }
        ),
        "{:?}",
        r.run
    );
    let on_new = messages_at(s.new.port(), "INBOX");
    assert!(numbered(&on_new, 3).unwrap().flags.contains("\\Flagged"));
    assert!(numbered(&on_new, 7).is_none(), "message 7 still on NEW");
    assert!(numbered(&on_new, 100).is_some());
    assert_eq!(on_new.len(), 20, "{on_new:?}");
    assert_local_equals(&inbox, &on_new, "after the story");
    wait_until("OLD to mirror the story", Duration::from_secs(30), || {
        let on_old = messages_at(s.old.port(), "INBOX");
        numbered(&on_old, 7).is_none()
            && numbered(&on_old, 3).is_some_and(|m| m.flags.contains("\\Flagged"))
    });
    assert!(numbered(&messages_at(s.old.port(), "INBOX"), 100).is_none());
}

#[test]
fn mbsync_recovers_from_the_uidvalidity_change_of_every_folder_without_the_feature() {
    require("mbsync");
    require("script");
    require("doveadm");
    let s = scenario();
    let mb = Mbsync::new(s.dir.path());
    mb.point_at(s.old.port());
    let first = mb.run();
    assert_eq!(first.run.code, Some(0), "{:?}", first.run);
    assert_eq!(first.near.added, 25, "{:?}", first.run);
    assert_eq!(first.far, Counts::default(), "{:?}", first.run);
    let cached = all_maildir_files(&mb.mail);
    assert_eq!(cached.len(), 25);

    let proxy = s.proxy(false);
    s.migrate(&proxy);
    s.assert_new_uidvalidity(&proxy);
    mb.point_at(proxy.port);
    let second = mb.run();
    assert_eq!(second.run.code, Some(0), "{:?}", second.run);
    let expected: Vec<String> = s
        .folders()
        .iter()
        .map(|f| {
            format!("Notice: channel all, far side box {f}: Recovered from change of UIDVALIDITY.")
        })
        .collect();
    let mut notices = second.messages();
    notices.retain(|l| l.contains("UIDVALIDITY"));
    notices.sort();
    assert_eq!(notices, expected, "{:?}", second.run);
    assert_eq!(
        (second.far, second.near),
        (Counts::default(), Counts::default()),
        "{:?}",
        second.run
    );
    assert_eq!(all_maildir_files(&mb.mail), cached, "local files changed");
    for (folder, _) in SEEDED {
        assert_local_equals(
            &mb.mail.join(folder),
            &messages_at(s.new.port(), folder),
            "after the cutover",
        );
    }

    // mbsync has taken NEW's UIDVALIDITY: from now on it just works through the proxy.
    mbsync_story(&s, &mb);
}

#[test]
fn offlineimap_skips_every_nonempty_folder_without_the_feature() {
    require("offlineimap");
    require("doveadm");
    let s = scenario();
    let oi = OfflineImap::new(s.dir.path());
    oi.point_at(s.old.port());
    let first = oi.run();
    assert_eq!(first.run.code, Some(0), "{:?}", first.run);
    assert_eq!(first.copies().len(), 25, "{:?}", first.run);
    assert!(first.validity_problems().is_empty(), "{:?}", first.run);
    let cached = all_maildir_files(&oi.mail);
    assert_eq!(cached.len(), 25);

    let proxy = s.proxy(false);
    s.migrate(&proxy);
    let shown = s.assert_new_uidvalidity(&proxy);
    oi.point_at(proxy.port);
    let second = oi.run();
    assert_eq!(second.run.code, Some(2), "{:?}", second.run);
    // Empty folders are not checked (offlineimap just saves the new UIDVALIDITY).
    let expected: BTreeMap<String, (u32, u32)> = SEEDED
        .iter()
        .map(|(f, _)| (f.to_string(), (s.old_uidvalidity[*f], shown[*f])))
        .collect();
    assert_eq!(second.validity_problems(), expected, "{:?}", second.run);
    for (folder, _) in SEEDED {
        let line = format!(
            "UID validity problem for folder {folder} (repo Remote) (saved {}; got {}); \
             skipping it. Please see FAQ and manual on how to handle this.",
            s.old_uidvalidity[folder], shown[folder]
        );
        assert!(
            second.lines().contains(&line.as_str()),
            "{line}\n{:?}",
            second.run
        );
    }
    assert!(
        second
            .lines()
            .contains(&"At least one folder skipped due to UID validity problem"),
        "{:?}",
        second.run
    );
    assert!(second.copies().is_empty(), "{:?}", second.run);
    assert_eq!(all_maildir_files(&oi.mail), cached, "local files changed");

    // It stays stuck: the next run refuses the same folders again.
    let third = oi.run();
    assert_eq!(third.run.code, Some(2), "{:?}", third.run);
    assert_eq!(third.validity_problems(), expected, "{:?}", third.run);
}

#[test]
fn qresync_client_downloads_everything_again_without_the_feature() {
    require("python3");
    require("doveadm");
    let s = scenario();
    let cache = qresync_record(s.old.port(), "INBOX");
    assert_eq!(
        cache["uidvalidity"].as_u64(),
        Some(u64::from(s.old_uidvalidity["INBOX"]))
    );
    assert_eq!(json_u32s(&cache["uids"]), (1..=20).collect::<Vec<u32>>());

    let proxy = s.proxy(false);
    s.migrate(&proxy);
    let shown = s.assert_new_uidvalidity(&proxy);
    change_inbox_through(&proxy);
    let report = qresync_resync(s.dir.path(), proxy.port, "INBOX", &cache);
    assert_eq!(
        report["uidvalidity"].as_u64(),
        Some(u64::from(shown["INBOX"])),
        "{report}"
    );
    assert_eq!(report["cache_valid"], false, "{report}");
    // NEW ignores QRESYNC parameters of another UIDVALIDITY: no VANISHED, no FETCH.
    assert_eq!(
        json_u32s(&report["vanished"]),
        Vec::<u32>::new(),
        "{report}"
    );
    assert_eq!(
        report["fetches"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let truth = flags_at(proxy.port, "INBOX");
    assert_eq!(truth.len(), 19);
    let everything: Vec<u32> = truth.keys().copied().collect();
    assert_eq!(json_u32s(&report["body_uids"]), everything, "{report}");
    assert_eq!(json_flags(&report), truth, "{report}");
}

// ---- With the feature: `[migration] keep_client_caches = true` (issue 15's acceptance). ----
// The proxy shows OLD's UIDVALIDITY and UIDs for migrated folders, so the cache each client
// filled from OLD stays valid through the proxy.

#[test]
fn mbsync_keeps_its_cache_through_the_proxy() {
    require("mbsync");
    require("script");
    require("doveadm");
    let s = scenario();
    let mb = Mbsync::new(s.dir.path());
    mb.point_at(s.old.port());
    let first = mb.run();
    assert_eq!(first.run.code, Some(0), "{:?}", first.run);
    assert_eq!(first.near.added, 25, "{:?}", first.run);
    let cached = all_maildir_files(&mb.mail);
    assert_eq!(cached.len(), 25);

    let proxy = s.proxy(true);
    s.migrate(&proxy);
    assert_eq!(
        uidvalidities(proxy.port, &s.folders()),
        s.old_uidvalidity,
        "the proxy shows OLD's UIDVALIDITY"
    );
    mb.point_at(proxy.port);
    let second = mb.run();
    assert_eq!(second.run.code, Some(0), "{:?}", second.run);
    let notices: Vec<String> = second
        .messages()
        .into_iter()
        .filter(|l| l.contains("UIDVALIDITY"))
        .collect();
    assert!(notices.is_empty(), "{notices:?}\n{:?}", second.run);
    assert_eq!(
        (second.far, second.near),
        (Counts::default(), Counts::default()),
        "nothing may be transferred: {:?}",
        second.run
    );
    assert_eq!(all_maildir_files(&mb.mail), cached, "local files changed");

    // The user keeps working: a flag and a deletion reach NEW and OLD, new mail arrives.
    mbsync_story(&s, &mb);
    let third = mb.run();
    assert_eq!(third.run.code, Some(0), "{:?}", third.run);
    assert_eq!(
        (third.far, third.near),
        (Counts::default(), Counts::default()),
        "{:?}",
        third.run
    );
    assert!(
        !third.messages().iter().any(|l| l.contains("UIDVALIDITY")),
        "{:?}",
        third.run
    );
}

#[test]
fn offlineimap_keeps_its_cache_through_the_proxy() {
    require("offlineimap");
    require("doveadm");
    let s = scenario();
    let oi = OfflineImap::new(s.dir.path());
    oi.point_at(s.old.port());
    let first = oi.run();
    assert_eq!(first.run.code, Some(0), "{:?}", first.run);
    assert_eq!(first.copies().len(), 25, "{:?}", first.run);
    let cached = all_maildir_files(&oi.mail);
    assert_eq!(cached.len(), 25);

    let proxy = s.proxy(true);
    s.migrate(&proxy);
    assert_eq!(
        uidvalidities(proxy.port, &s.folders()),
        s.old_uidvalidity,
        "the proxy shows OLD's UIDVALIDITY"
    );
    oi.point_at(proxy.port);
    let second = oi.run();
    assert_eq!(second.run.code, Some(0), "{:?}", second.run);
    assert!(second.validity_problems().is_empty(), "{:?}", second.run);
    assert!(
        !second.lines().iter().any(|l| l.contains("UID validity")),
        "{:?}",
        second.run
    );
    assert!(second.copies().is_empty(), "{:?}", second.run);
    assert_eq!(all_maildir_files(&oi.mail), cached, "local files changed");

    // The user keeps working: message 3 flagged and message 7 deleted locally, message 100
    // delivered to NEW meanwhile.
    let inbox = oi.mail.join("INBOX");
    add_maildir_flags(&local_file(&inbox, 3), "F");
    std::fs::remove_file(local_file(&inbox, 7)).unwrap();
    let mut c = RawImap::connect(s.new.host(), s.new.port());
    c.login(USER, PW);
    c.append("INBOX", &[], None, &common::message(100, 1_500));
    c.logout();
    let third = oi.run();
    assert_eq!(third.run.code, Some(0), "{:?}", third.run);
    assert!(third.validity_problems().is_empty(), "{:?}", third.run);
    // OLD's UIDs: message 7 is UID 7; the new message gets a UID above all of OLD's.
    assert!(
        third
            .lines()
            .contains(&"Deleting 1 messages (7) in IMAP[INBOX]"),
        "{:?}",
        third.run
    );
    assert!(
        third
            .lines()
            .contains(&"Adding flag F to 1 messages on INBOX"),
        "{:?}",
        third.run
    );
    let copies = third.copies();
    assert_eq!(copies.len(), 1, "{:?}", third.run);
    let uid: u32 = copies[0]
        .strip_prefix("Copy message UID ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("{}", copies[0]));
    assert!(uid > 20, "{}", copies[0]);
    assert!(
        copies[0].ends_with("(1/1) Remote:INBOX -> Local:INBOX"),
        "{}",
        copies[0]
    );

    let on_new = messages_at(s.new.port(), "INBOX");
    assert!(numbered(&on_new, 3).unwrap().flags.contains("\\Flagged"));
    assert!(numbered(&on_new, 7).is_none(), "message 7 still on NEW");
    assert!(numbered(&on_new, 100).is_some());
    assert_eq!(on_new.len(), 20, "{on_new:?}");
    assert_local_equals(&inbox, &on_new, "after the story");
    assert_local_equals(
        &oi.mail.join("Work"),
        &messages_at(s.new.port(), "Work"),
        "after the story",
    );
    wait_until("OLD to mirror the story", Duration::from_secs(30), || {
        let on_old = messages_at(s.old.port(), "INBOX");
        numbered(&on_old, 7).is_none()
            && numbered(&on_old, 3).is_some_and(|m| m.flags.contains("\\Flagged"))
    });

    let fourth = oi.run();
    assert_eq!(fourth.run.code, Some(0), "{:?}", fourth.run);
    assert!(fourth.copies().is_empty(), "{:?}", fourth.run);
}

#[test]
fn qresync_client_resyncs_through_the_proxy_without_downloading_anything() {
    require("python3");
    require("doveadm");
    let s = scenario();
    let cache = qresync_record(s.old.port(), "INBOX");
    assert_eq!(
        cache["uidvalidity"].as_u64(),
        Some(u64::from(s.old_uidvalidity["INBOX"]))
    );
    let cached_uids = json_u32s(&cache["uids"]);
    assert_eq!(cached_uids, (1..=20).collect::<Vec<u32>>());

    let proxy = s.proxy(true);
    s.migrate(&proxy);
    change_inbox_through(&proxy);
    let report = qresync_resync(s.dir.path(), proxy.port, "INBOX", &cache);
    assert_eq!(
        report["uidvalidity"].as_u64(),
        Some(u64::from(s.old_uidvalidity["INBOX"])),
        "{report}"
    );
    assert_eq!(report["cache_valid"], true, "{report}");
    assert_eq!(
        json_u32s(&report["body_uids"]),
        Vec::<u32>::new(),
        "{report}"
    );
    assert_eq!(report["body_bytes"].as_u64(), Some(0), "{report}");
    // Message 5 (OLD's UID 5) was expunged: it must be reported as vanished.
    assert!(
        json_u32s(&report["vanished"]).contains(&cached_uids[4]),
        "{report}"
    );
    // Only flag updates in FETCH lines, none for the vanished message.
    for fetch in report["fetches"].as_array().unwrap() {
        assert_eq!(fetch["body"], false, "{report}");
        assert!(fetch["flags"].is_array(), "{report}");
        assert_ne!(
            fetch["uid"].as_u64(),
            Some(u64::from(cached_uids[4])),
            "{report}"
        );
    }
    // Nothing but the usual SELECT lines, VANISHED and FETCH.
    for line in report["select"].as_array().unwrap() {
        let line = line.as_str().unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let known = line.starts_with("* FLAGS ")
            || line.starts_with("* OK ")
            || line.starts_with("* VANISHED ")
            || matches!(words.get(2), Some(&"EXISTS" | &"RECENT" | &"FETCH"));
        assert!(known, "{line}\n{report}");
    }
    assert!(
        report["highestmodseq"].as_u64() > cache["highestmodseq"].as_u64(),
        "MODSEQ must stay above OLD's: {report}"
    );
    // The resynced cache is what the proxy shows: OLD's UIDs but 5, message 3 flagged.
    let truth = flags_at(proxy.port, "INBOX");
    assert_eq!(json_flags(&report), truth, "{report}");
    let expected: Vec<u32> = cached_uids
        .iter()
        .copied()
        .filter(|&u| u != cached_uids[4])
        .collect();
    assert_eq!(json_u32s(&report["uids"]), expected, "{report}");
    assert!(truth[&cached_uids[2]].contains("\\Flagged"), "{truth:?}");

    // A second resync from the updated cache finds nothing to do.
    let again = qresync_resync(s.dir.path(), proxy.port, "INBOX", &report);
    assert_eq!(again["cache_valid"], true, "{again}");
    assert_eq!(json_u32s(&again["vanished"]), Vec::<u32>::new(), "{again}");
    assert_eq!(
        again["fetches"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );
    assert_eq!(json_u32s(&again["body_uids"]), Vec::<u32>::new(), "{again}");
}
