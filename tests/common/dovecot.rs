//! A private, real Dovecot 2.3 instance per test: config + passwd-file in a tempdir, free loopback
//! ports, readiness by greeting, SIGTERM-then-SIGKILL on drop. Three layouts mimic real servers
//! (`/` without prefix, Courier-like `INBOX.` + `.`, and a reduced capability set).
//! As root every Dovecot process runs as nobody:nogroup via setpriv (imap-login refuses root).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::server::{greets, stop, wait_port_closed};

/// The folders every user has: (name, special use, Dovecot's `auto`).
const AUTO_FOLDERS: [(&str, &str, &str); 5] = [
    ("Drafts", "\\Drafts", "subscribe"),
    ("Sent", "\\Sent", "subscribe"),
    ("Trash", "\\Trash", "subscribe"),
    ("Junk", "\\Junk", "create"),
    ("Archive", "\\Archive", "create"),
];

/// Directory holding the development CA and the localhost certificate.
pub fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs")
}

/// PEM file of the development CA that signed `certs/localhost.pem`.
pub fn ca_pem() -> PathBuf {
    certs_dir().join("ca.pem")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Separator `/`, no prefix, `LAYOUT=fs` so names may contain `.`.
    Slash,
    /// Separator `.`, personal namespace prefix `INBOX.` (Courier-like Maildir++).
    DotInbox,
    /// Like `Slash`, but advertises no CONDSTORE, QRESYNC, UIDPLUS, MOVE, LITERAL+, MULTIAPPEND.
    Reduced,
}

impl Layout {
    pub fn sep(self) -> char {
        match self {
            Layout::DotInbox => '.',
            Layout::Slash | Layout::Reduced => '/',
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Layout::DotInbox => "INBOX.",
            Layout::Slash | Layout::Reduced => "",
        }
    }

    /// Server-side name of a layout-independent path ("Projects/2024" -> "INBOX.Projects.2024").
    pub fn server_name(self, path: &str) -> String {
        if path.eq_ignore_ascii_case("INBOX") {
            return "INBOX".to_string();
        }
        format!(
            "{}{}",
            self.prefix(),
            path.replace('/', &self.sep().to_string())
        )
    }

    /// Layout-independent path of a server-side name (inverse of `server_name`).
    pub fn normalize(self, name: &str) -> String {
        if name.eq_ignore_ascii_case("INBOX") {
            return "INBOX".to_string();
        }
        let rest = name.strip_prefix(self.prefix()).unwrap_or(name);
        rest.replace(self.sep(), "/")
    }
}

#[derive(Clone, Debug)]
pub struct DovecotOptions {
    pub layout: Layout,
    /// `ssl = yes` with certs/localhost.pem, plus an implicit-TLS listener (`imaps_port()`).
    pub tls: bool,
    /// Count-quota plugin with `*:storage=<quota_kb>K` for every user.
    pub quota_kb: Option<u64>,
    /// Keep Dovecot's default fsync behaviour; `false` sets `mail_fsync = never`.
    pub fsync: bool,
    /// A master user (login, password) that may log in as any user: SASL PLAIN with
    /// authzid = the user, or `user*master` with LOGIN.
    pub master: Option<(String, String)>,
    /// Room for this many simultaneous IMAP sessions (process and client limits of every
    /// service, `mail_max_userip_connections`); `None` keeps Dovecot's defaults (100 processes).
    pub sessions: Option<u32>,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            layout: Layout::Slash,
            tls: false,
            quota_kb: None,
            fsync: false,
            master: None,
            sessions: None,
        }
    }
}

pub struct Dovecot {
    opts: DovecotOptions,
    dir: tempfile::TempDir,
    port: u16,
    imaps_port: Option<u16>,
    users_added: std::sync::atomic::AtomicUsize,
    child: Option<Child>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl Dovecot {
    pub fn start(layout: Layout) -> Dovecot {
        Dovecot::start_with(DovecotOptions {
            layout,
            ..Default::default()
        })
    }

    /// Starts a fresh instance. Ports are picked by binding :0 and closing, so another process can
    /// grab one in between; a start that fails with "Address already in use" is retried on new ports.
    pub fn start_with(opts: DovecotOptions) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("imapferry-dovecot-")
            .tempdir()
            .expect("tempdir");
        let mut d = Dovecot {
            opts,
            dir,
            port: 0,
            imaps_port: None,
            users_added: std::sync::atomic::AtomicUsize::new(0),
            child: None,
        };
        d.prepare_dir();
        if let Some((user, pw)) = &d.opts.master {
            std::fs::write(
                d.dir().join("master-passwd"),
                format!("{user}:{{PLAIN}}{pw}\n"),
            )
            .expect("write master-passwd");
        }
        for attempt in 1.. {
            d.port = free_port();
            d.imaps_port = d.opts.tls.then(free_port);
            let _ = std::fs::remove_file(d.log_path()); // judge each attempt by its own log
            std::fs::write(d.config_path(), d.config()).expect("write dovecot.conf");
            d.chown_for_dovecot(d.dir());
            d.spawn();
            match d.wait_ready() {
                Ok(()) => return d,
                Err(why) if attempt < 4 && d.log().contains("Address already in use") => {
                    eprintln!("dovecot port clash ({why}), retrying on new ports");
                    d.terminate();
                }
                Err(why) => {
                    d.terminate();
                    panic!("dovecot did not become ready: {why}\n{}", d.diagnostics());
                }
            }
        }
        unreachable!()
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn imaps_port(&self) -> Option<u16> {
        self.imaps_port
    }

    pub fn layout(&self) -> Layout {
        self.opts.layout
    }

    pub fn sep(&self) -> char {
        self.opts.layout.sep()
    }

    pub fn prefix(&self) -> &'static str {
        self.opts.layout.prefix()
    }

    /// Server-side mailbox name of a layout-independent path such as "Projects/2024/Q1".
    pub fn mailbox_name(&self, path: &str) -> String {
        self.opts.layout.server_name(path)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("dovecot.conf")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("dovecot.log")
    }

    /// Contents of dovecot.log (empty if not written yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `doveadm ARGS` against this instance; its standard output.
    fn doveadm(&self, args: &[&str]) -> String {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("run doveadm");
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `(MESSAGES, UIDNEXT, HIGHESTMODSEQ)` of `user`'s `mailbox`, read with doveadm (no IMAP
    /// command, so [`Dovecot::commands`] does not count it).
    pub fn mailbox_status(&self, user: &str, mailbox: &str) -> (u64, u64, u64) {
        let out = self.doveadm(&[
            "mailbox",
            "status",
            "-u",
            user,
            "messages uidnext highestmodseq",
            mailbox,
        ]);
        let field = |name: &str| {
            out.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        };
        (field("messages"), field("uidnext"), field("highestmodseq"))
    }

    /// Logged-in IMAP connections of each user now, as the server counts them (`doveadm who`).
    pub fn connections(&self) -> std::collections::BTreeMap<String, usize> {
        let mut by_user = std::collections::BTreeMap::new();
        for line in self.doveadm(&["who", "-1"]).lines().skip(1) {
            if let Some(user) = line.split_whitespace().next() {
                *by_user.entry(user.to_string()).or_insert(0) += 1;
            }
        }
        by_user
    }

    /// Logged-in connections of `user` now (`doveadm who`).
    pub fn connections_of(&self, user: &str) -> usize {
        self.connections().get(user).copied().unwrap_or(0)
    }

    /// IMAP commands the server finished since it started (or since the last `reset`), by name
    /// (`doveadm stats dump`; LOGIN and AUTHENTICATE happen before the session: see
    /// [`Dovecot::stats`]'s `login`).
    pub fn commands(&self, reset: bool) -> std::collections::BTreeMap<String, u64> {
        (self.command_times(reset).into_iter())
            .map(|(name, (n, _))| (name, n))
            .collect()
    }

    /// [`Dovecot::commands`], each with the time the server spent in it, in µs (the sum of the
    /// commands' durations: wall time, so waits for a CPU or a lock count too).
    #[allow(dead_code)]
    pub fn command_times(&self, reset: bool) -> std::collections::BTreeMap<String, (u64, u64)> {
        (self.dump(reset).into_iter())
            .filter_map(|(metric, n)| Some((metric.strip_prefix("imap_command_")?.to_string(), n)))
            .collect()
    }

    /// Gives `user`'s `mailbox` (which must exist) this UIDVALIDITY: two servers started in
    /// the same second would otherwise give their INBOXes the same one.
    #[allow(dead_code)]
    pub fn set_uidvalidity(&self, user: &str, mailbox: &str, value: u32) {
        let value = value.to_string();
        self.doveadm(&[
            "mailbox",
            "update",
            "-u",
            user,
            "--uid-validity",
            &value,
            mailbox,
        ]);
    }

    /// Every counted metric since the start or the last `reset`: `imap_command` (all commands),
    /// `imap_command_NAME`, and `login` (authentications).
    pub fn stats(&self, reset: bool) -> std::collections::BTreeMap<String, u64> {
        (self.dump(reset).into_iter())
            .map(|(metric, (n, _))| (metric, n))
            .collect()
    }

    /// Every metric's count and duration sum (µs): `doveadm stats dump`'s lines are the metric,
    /// the field (`duration`), the count, the sum, then more.
    fn dump(&self, reset: bool) -> std::collections::BTreeMap<String, (u64, u64)> {
        let args: &[&str] = if reset {
            &["stats", "dump", "-r"]
        } else {
            &["stats", "dump"]
        };
        self.doveadm(args)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let name = cols.next()?;
                let count = cols.nth(1)?.parse().ok()?;
                let sum = cols.next()?.parse().ok()?;
                Some((name.to_string(), (count, sum)))
            })
            .collect()
    }

    /// Adds many users with one passwd-file update (and at most one wait, see `add_user`).
    pub fn add_users(&self, users: &[(String, String)]) {
        let passwd = self.dir().join("passwd");
        let mut text = std::fs::read_to_string(&passwd).unwrap_or_default();
        for (name, password) in users {
            assert!(!name.contains([':', '\n', '/']) && !password.contains([':', '\n']));
            let home = self.dir().join("home").join(name);
            std::fs::create_dir_all(&home).expect("create home");
            self.chown_for_dovecot(&home);
            writeln!(text, "{name}:{{PLAIN}}{password}::::{}::", home.display()).unwrap();
        }
        let tmp = self.dir().join("passwd.tmp");
        std::fs::write(&tmp, text).expect("write passwd");
        std::fs::rename(&tmp, &passwd).expect("rename passwd");
        if self
            .users_added
            .fetch_add(users.len(), std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            std::thread::sleep(std::time::Duration::from_millis(1_100));
        }
        if self.opts.quota_kb.is_some() {
            for (name, password) in users {
                self.open_auto_folders(name, password);
            }
        }
    }

    /// Adds (or replaces) a user; Dovecot notices the changed passwd-file on the next login.
    pub fn add_user(&self, name: &str, password: &str) {
        assert!(
            !name.contains([':', '\n', '/']) && !password.contains([':', '\n']),
            "bad user/password"
        );
        let home = self.dir().join("home").join(name);
        std::fs::create_dir_all(&home).expect("create home");
        self.chown_for_dovecot(&home);
        let passwd = self.dir().join("passwd");
        let old = std::fs::read_to_string(&passwd).unwrap_or_default();
        let mut text: String = old
            .lines()
            .filter(|l| l.split(':').next() != Some(name))
            .map(|l| format!("{l}\n"))
            .collect();
        writeln!(text, "{name}:{{PLAIN}}{password}::::{}::", home.display()).unwrap();
        // Write-then-rename so the auth process never reads a half-written file.
        let tmp = self.dir().join("passwd.tmp");
        std::fs::write(&tmp, text).expect("write passwd");
        std::fs::rename(&tmp, &passwd).expect("rename passwd");
        // Dovecot's auth process checks a passwd-file for changes at most once per second of its
        // clock: a user added in the same second as an earlier login would stay unknown. After the
        // first user (usually added before any login), wait for the next second.
        if self
            .users_added
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            std::thread::sleep(
                std::time::Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()))
                    + std::time::Duration::from_millis(20),
            );
        }
        if self.opts.quota_kb.is_some() {
            self.open_auto_folders(name, password);
        }
    }

    /// Opens the folders Dovecot makes for every user ([`AUTO_FOLDERS`]) in one session. With
    /// the quota plugin, a save while another session of the user creates one of them may find
    /// the folder list unreadable (NEW's log: "lstat(…/mailboxes.lock) failed", then "quota:
    /// Failed to check if user is under quota … saving mail anyway") and take a message over
    /// quota; created here, one after the other, the tests' sessions create none of them.
    fn open_auto_folders(&self, user: &str, password: &str) {
        let mut c = super::RawImap::connect(self.host(), self.port());
        c.login(user, password);
        for (name, _, _) in AUTO_FOLDERS {
            let (_, done) = c.raw(&format!("SELECT {}{name}", self.opts.layout.prefix()));
            assert!(done.starts_with("OK"), "{name}: {done}");
        }
        c.logout();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs the server at scheduling priority `nice` (its processes now, and those its master
    /// starts later, which inherit it): a server that yields the CPU to every other process on
    /// the machine, as one on a host of its own takes none from them.
    #[allow(dead_code)]
    pub fn renice(&self, nice: i32) {
        let child = self.child.as_ref().expect("dovecot is running");
        let group = child.id().to_string();
        // `--priority` is absolute in every util-linux; `-n` is relative from 2.39 on.
        let st = Command::new("renice")
            .args(["--priority", &nice.to_string(), "-g", &group])
            .stdout(Stdio::null())
            .status()
            .expect("run renice");
        assert!(st.success(), "renice of dovecot's process group failed");
    }

    /// Graceful stop (SIGTERM, SIGKILL after 5 s); data and ports are kept for `restart`.
    pub fn stop(&mut self) {
        self.terminate();
    }

    /// Hard stop (SIGKILL of the master), e.g. to simulate a crashed or unreachable server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().expect("reap dovecot");
            wait_port_closed(self.host(), self.port);
        }
    }

    /// SIGKILL of the master and of every session process (they outlive a stopped master):
    /// the server is gone for its clients too, as after a crash or a network cut.
    ///
    /// A session killed while it held a maildir's `dovecot-uidlist.lock` leaves it behind, and
    /// empty when it was killed before writing its PID into it: with no PID to check, Dovecot
    /// waits its stale timeout (2 minutes) before overriding it, and every session that opens
    /// the folder after a restart waits as long. (CI saw a snapshot of OLD time out that way,
    /// after the proxy's mirror had waited the same 2 minutes.) Once every killed process is
    /// gone, their locks are removed, as an administrator would after such a crash.
    pub fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = -(child.id() as libc::pid_t);
            // SAFETY: kill(2) on the process group our own child leads.
            unsafe { libc::kill(group, libc::SIGKILL) };
            child.wait().expect("reap dovecot");
            wait_port_closed(self.host(), self.port);
            let until = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only asks whether any process of the group is left.
            while unsafe { libc::kill(group, 0) } == 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            remove_locks(&self.dir().join("home"));
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the master and every session process: a server that
    /// accepts connections (the kernel's backlog) and answers nothing, as one that hangs.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("dovecot running");
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on the process group our own child leads.
        let r = unsafe { libc::kill(-(child.id() as libc::pid_t), signal) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// A new storage quota for every user (the instance must have started with one), in force
    /// after a restart on the same ports and data.
    pub fn set_quota_kb(&mut self, kb: u64) {
        assert!(self.opts.quota_kb.is_some(), "started without a quota");
        self.opts.quota_kb = Some(kb);
        std::fs::write(self.config_path(), self.config()).expect("write dovecot.conf");
        self.restart();
    }

    /// Stops if running, then starts again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
        if let Err(why) = self.wait_ready() {
            self.terminate();
            panic!(
                "dovecot did not come back after restart: {why}\n{}",
                self.diagnostics()
            );
        }
    }

    fn prepare_dir(&self) {
        std::fs::create_dir_all(self.dir().join("home")).expect("create home dir");
        std::fs::write(self.dir().join("passwd"), "").expect("create passwd");
        if self.opts.tls {
            for f in ["localhost.pem", "localhost-key.pem"] {
                std::fs::copy(certs_dir().join(f), self.dir().join(f)).expect("copy certs/ file");
            }
        }
    }

    fn config(&self) -> String {
        let dir = self.dir().display();
        let RunAs { user, group, .. } = run_as();
        let o = &self.opts;
        let mut c = String::new();
        writeln!(
            c,
            "# Generated by tests/common/dovecot.rs; nothing from /etc/dovecot is included."
        )
        .unwrap();
        writeln!(c, "instance_name = imapferry-test-{}", self.port).unwrap();
        writeln!(c, "base_dir = {dir}/run\nstate_dir = {dir}/state").unwrap();
        writeln!(
            c,
            "log_path = {dir}/dovecot.log\ninfo_log_path = {dir}/dovecot.log"
        )
        .unwrap();
        writeln!(c, "debug_log_path = {dir}/dovecot.log").unwrap();
        c.push_str("protocols = imap\nlisten = 127.0.0.1\n");
        if o.tls {
            writeln!(
                c,
                "ssl = yes\nssl_cert = <{dir}/localhost.pem\nssl_key = <{dir}/localhost-key.pem"
            )
            .unwrap();
        } else {
            c.push_str("ssl = no\n");
        }
        c.push_str("disable_plaintext_auth = no\nauth_mechanisms = plain login\n");
        // A failed login costs ~0.5 s instead of 2 s (failures are flushed on a 500 ms tick).
        c.push_str("auth_failure_delay = 0\n");
        writeln!(
            c,
            "default_internal_user = {user}\ndefault_internal_group = {group}"
        )
        .unwrap();
        writeln!(
            c,
            "default_login_user = {user}\nmail_uid = {user}\nmail_gid = {group}"
        )
        .unwrap();
        c.push_str("first_valid_uid = 0\nfirst_valid_gid = 0\n");
        if !o.fsync {
            c.push_str("mail_fsync = never\n");
        }
        if let Some(n) = o.sessions {
            // Every session is an imap process (client_limit 1) that also holds a connection to
            // anvil, stats and config; login processes come and go (one per login).
            // auth and anvil serve every login process (imap and imap-urlauth): twice as many.
            let n = n + 100;
            let clients = 3 * n;
            writeln!(
                c,
                "default_process_limit = {n}\ndefault_client_limit = {clients}"
            )
            .unwrap();
            writeln!(c, "service imap {{\n  process_limit = {n}\n}}").unwrap();
        }
        if o.quota_kb.is_some() {
            // Must precede `protocol imap`, whose $mail_plugins expands the value set so far.
            c.push_str("mail_plugins = $mail_plugins quota\n");
        }
        if o.master.is_some() {
            // Master users first; `pass = yes` still requires the target user to exist below.
            c.push_str("auth_master_user_separator = *\n");
            writeln!(
                c,
                "passdb {{\n  driver = passwd-file\n  master = yes\n  pass = yes\n  args = scheme=PLAIN username_format=%u {dir}/master-passwd\n}}"
            )
            .unwrap();
        }
        writeln!(
            c,
            "passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {dir}/passwd\n}}"
        )
        .unwrap();
        writeln!(
            c,
            "userdb {{\n  driver = passwd-file\n  args = username_format=%u {dir}/passwd\n}}"
        )
        .unwrap();
        let location = match o.layout {
            Layout::DotInbox => "maildir:~/Maildir",
            Layout::Slash | Layout::Reduced => "maildir:~/Maildir:LAYOUT=fs",
        };
        writeln!(c, "mail_location = {location}").unwrap();
        // Dovecot 2.3.19 panics ("fcntl(dovecot.list.index.log) … Resource deadlock avoided") when
        // several sessions of one user create and fill folders at once, as a migration does; the
        // client sees a dropped connection (imapferry reconnects and retries the folder). The
        // list index is an optimisation; without it the tests are not at the mercy of that bug.
        c.push_str("mailbox_list_index = no\n");
        writeln!(
            c,
            "namespace inbox {{\n  inbox = yes\n  separator = {}",
            o.layout.sep()
        )
        .unwrap();
        writeln!(c, "  prefix = {}", o.layout.prefix()).unwrap();
        for (name, special, auto) in AUTO_FOLDERS {
            writeln!(
                c,
                "  mailbox {name} {{\n    special_use = {special}\n    auto = {auto}\n  }}"
            )
            .unwrap();
        }
        c.push_str("}\n");
        writeln!(c, "service imap-login {{\n  chroot =").unwrap();
        writeln!(
            c,
            "  inet_listener imap {{\n    address = 127.0.0.1\n    port = {}\n  }}",
            self.port
        )
        .unwrap();
        let imaps = self.imaps_port.unwrap_or(0);
        writeln!(
            c,
            "  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps}\n  }}\n}}"
        )
        .unwrap();
        // No per-IP auth penalty (up to 15 s per login after failures): all tests share 127.0.0.1.
        c.push_str("service anvil {\n  chroot =\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n");
        c.push_str(
            "service stats {\n  unix_listener stats-reader {\n    mode = 0600\n  }\n  \
             unix_listener stats-writer {\n    mode = 0666\n  }\n}\n",
        );
        // Commands by name and logins, for `stats()` (what clients cost the server).
        c.push_str(
            "metric imap_command {\n  filter = event=imap_command_finished\n  group_by = cmd_name\n}\n\
             metric login {\n  filter = event=auth_request_finished AND category=auth\n}\n",
        );
        c.push_str("protocol imap {\n");
        // The default of 10 is hit quickly by parallel copies and proxies from one IP.
        let per_ip = o.sessions.map_or(1000, |n| (n + 100).max(1000));
        writeln!(c, "  mail_max_userip_connections = {per_ip}").unwrap();
        if o.layout == Layout::Reduced {
            c.push_str(
                "  imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE NAMESPACE \
                 LIST-EXTENDED SPECIAL-USE I18NLEVEL=1\n",
            );
        }
        if o.quota_kb.is_some() {
            c.push_str("  mail_plugins = $mail_plugins imap_quota\n");
        }
        c.push_str("}\n");
        if let Some(kb) = o.quota_kb {
            writeln!(
                c,
                "plugin {{\n  quota = count:User quota\n  quota_rule = *:storage={kb}K\n  quota_vsizes = yes\n}}"
            )
            .unwrap();
        }
        c
    }

    /// As root, hands `path` (recursively) to the unprivileged user Dovecot runs as.
    pub fn chown_for_dovecot(&self, path: &Path) {
        chown_to_run_as(path);
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "dovecot already running");
        let run = run_as();
        let dovecot = if Path::new("/usr/sbin/dovecot").exists() {
            "/usr/sbin/dovecot"
        } else {
            "dovecot"
        };
        let mut cmd = if run.via_setpriv {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                &run.user,
                "--regid",
                &run.group,
                "--clear-groups",
                dovecot,
            ]);
            c
        } else {
            Command::new(dovecot)
        };
        cmd.arg("-F").arg("-c").arg(self.config_path());
        // Its own process group, so `kill_all` reaches the session processes too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let stderr = std::fs::File::create(self.dir().join("dovecot.stderr")).expect("stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        self.child = Some(
            cmd.spawn()
                .expect("spawn dovecot (is dovecot-imapd installed?)"),
        );
    }

    /// Polls the plain port until a `* OK` greeting arrives.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("master exited early with {status}"));
            }
            if greets(self.host(), self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no `* OK` greeting on port {} within {READY_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child, false, self.host(), self.port);
        }
    }

    fn diagnostics(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir().join("dovecot.stderr")).unwrap_or_default();
        format!(
            "--- {} ---\n{}\n--- stderr ---\n{stderr}\n--- config ---\n{}",
            self.log_path().display(),
            self.log(),
            self.config()
        )
    }
}

impl super::ImapServer for Dovecot {
    fn host(&self) -> &str {
        Dovecot::host(self)
    }

    fn port(&self) -> u16 {
        Dovecot::port(self)
    }

    fn layout(&self) -> Layout {
        Dovecot::layout(self)
    }

    fn add_user(&self, name: &str, password: &str) {
        Dovecot::add_user(self, name, password)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// As root, hands `path` (recursively) to the unprivileged user the servers run as.
pub(super) fn chown_to_run_as(path: &Path) {
    let run = run_as();
    if !run.via_setpriv {
        return;
    }
    let owner = format!("{}:{}", run.user, run.group);
    let st = Command::new("chown")
        .arg("-R")
        .arg(owner)
        .arg(path)
        .status()
        .expect("run chown");
    assert!(st.success(), "chown -R {} failed", path.display());
}

/// A loopback port free right now (the kernel picks it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

pub(super) struct RunAs {
    pub user: String,
    pub group: String,
    pub via_setpriv: bool,
}

/// nobody:nogroup via setpriv when we are root, else the invoking user (looked up once).
pub(super) fn run_as() -> &'static RunAs {
    static RUN_AS: OnceLock<RunAs> = OnceLock::new();
    RUN_AS.get_or_init(|| {
        // SAFETY: geteuid/getegid cannot fail; getpwuid/getgrgid results are copied out at once
        // and this runs only once (OnceLock), so their static buffers are not shared.
        unsafe {
            if libc::geteuid() == 0 {
                return RunAs {
                    user: "nobody".into(),
                    group: "nogroup".into(),
                    via_setpriv: true,
                };
            }
            let uid = libc::geteuid();
            let pw = libc::getpwuid(uid);
            assert!(!pw.is_null(), "no passwd entry for uid {uid}");
            let user = std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
            let gr = libc::getgrgid(libc::getegid());
            assert!(!gr.is_null(), "no group entry for the current gid");
            let group = std::ffi::CStr::from_ptr((*gr).gr_name)
                .to_string_lossy()
                .into_owned();
            RunAs {
                user,
                group,
                via_setpriv: false,
            }
        }
    })
}

/// Removes every `*.lock` file under `dir` (dotlocks of processes that are gone).
fn remove_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_locks(&path);
        } else if path.extension().is_some_and(|e| e == "lock") {
            std::fs::remove_file(&path)
                .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        }
    }
}
