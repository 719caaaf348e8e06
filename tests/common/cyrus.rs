//! A private, real Cyrus IMAP 3.6 per test, to serve as an OLD server (`INBOX.` prefix, `.`
//! separator): Cyrus's master with one imapd service, its own imapd.conf, cyrus.conf, spool,
//! sasldb and syslog, all in a tempdir on a free loopback port; readiness by greeting,
//! SIGTERM-then-SIGKILL on drop.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::courier::as_run_user;
use super::dovecot::{Layout, chown_to_run_as, free_port, run_as};
use super::raw::RawImap;
use super::server::{ImapServer, greets, stop};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Cyrus's `servername`, shown in the greeting; also the SASL realm users are stored under (imapd
/// passes it to libsasl2 as the server's FQDN, the default realm).
const SERVERNAME: &str = "cyrus.test";
/// The instance's administrator (`admins:`): creates the users' INBOXes; has no mailbox itself.
const ADMIN: &str = "cyrusadmin";
const ADMIN_PASSWORD: &str = "cyrusadmin-secret";
/// Where install-cyrus.sh unpacks the packages, then an installed Cyrus.
const ROOTS: [&str; 2] = ["/opt/cyrus-imapd", "/"];
/// Device nodes bound into the instance's private /dev.
const DEV_NODES: &str = "null zero full random urandom";

/// One instance. Login is plain-text LOGIN (or AUTHENTICATE PLAIN) checked by libsasl2's sasldb
/// auxprop plugin against the tempdir's sasldb (saslpasswd2, realm `SERVERNAME`); `add_user` also
/// creates the user's INBOX (`user.NAME`) through an admin login. Cyrus logs only to syslog, so the
/// instance runs in a private mount namespace (`unshare --mount`) whose /dev is a small tmpfs with
/// the real null/zero/urandom/... bound in and /dev/log pointing at the tempdir's socket, which a
/// thread of the test copies into cyrus.log. As root the servers then run as nobody:nogroup
/// (setpriv; `cyrus_user`/`cyrus_group` name them, so Cyrus does not switch to `cyrus`);
/// otherwise in a user namespace as the caller. The binaries come from /opt/cyrus-imapd, where
/// scripts/install-cyrus.sh unpacks Debian's cyrus-common and cyrus-imapd (installing
/// cyrus-imapd would remove dovecot-imapd), or from an installed cyrus-imapd.
pub struct Cyrus {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    syslog: Option<Syslog>,
    /// Serialises sasldb writes (`add_user` from several threads).
    sasldb: Mutex<()>,
}

impl Cyrus {
    /// Starts a fresh instance. Ports are picked by binding :0 and closing, so another process can
    /// grab one in between; a start whose bind fails ("Address already in use") is retried.
    pub fn start() -> Cyrus {
        let bins = Binaries::find();
        assert!(
            Command::new("saslpasswd2")
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "saslpasswd2 missing: run scripts/install-cyrus.sh (sasl2-bin)"
        );
        let dir = tempfile::Builder::new()
            .prefix("imapferry-cyrus-")
            .tempdir()
            .expect("tempdir");
        assert!(
            !dir.path().to_string_lossy().contains(['\'', ' ', '"']),
            "tempdir path must not need quoting"
        );
        let mut c = Cyrus {
            dir,
            port: 0,
            child: None,
            syslog: None,
            sasldb: Mutex::new(()),
        };
        // What Debian's `cyrus makedirs` creates (Cyrus does not create conf/db itself).
        for sub in [
            "conf/db",
            "conf/proc",
            "conf/socket",
            "conf/log",
            "conf/msg",
            "conf/user",
            "conf/quota",
            "conf/lock",
            "conf/sieve",
            "spool/stage.",
            "host-dev",
        ] {
            std::fs::create_dir_all(c.dir().join(sub)).expect("create dir");
        }
        c.syslog = Some(Syslog::start(c.dir()));
        chown_to_run_as(c.dir());
        c.set_password(ADMIN, ADMIN_PASSWORD);
        for attempt in 1.. {
            c.port = free_port();
            c.write_config(&bins);
            // Judge each attempt by its own log lines.
            let log_start = c.log_len();
            c.spawn();
            match c.wait_ready(log_start) {
                Ok(()) => return c,
                Err(why) if attempt < 4 && c.log_since(log_start).contains("in use") => {
                    eprintln!("cyrus port clash ({why}), retrying on a new port");
                    c.terminate();
                }
                Err(why) => {
                    c.terminate();
                    panic!("cyrus did not become ready: {why}\n{}", c.diagnostics());
                }
            }
        }
        unreachable!()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the instance sent to syslog: database recovery, logins (`login: localhost
    /// [127.0.0.1] alice plaintext User logged in`), per-session `USAGE`, errors.
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    /// Adds (or replaces) a user: its password goes into the sasldb (read at each login, so it
    /// can log in at once) and its INBOX (`user.NAME`) is created by the admin if missing.
    pub fn add_user(&self, name: &str, password: &str) {
        assert!(
            !name.is_empty()
                && name != ADMIN
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                && !password.contains(['\n', '\r']),
            "bad user/password for the Cyrus harness: {name:?}"
        );
        self.set_password(name, password);
        let mut admin = RawImap::connect(self.host(), self.port);
        admin.login(ADMIN, ADMIN_PASSWORD);
        let (_, tagged) = admin.raw(&format!("CREATE user.{name}"));
        assert!(
            tagged.starts_with("OK") || tagged.contains("already exists"),
            "creating user.{name} failed: {tagged}\n{}",
            self.log()
        );
        admin.logout();
    }

    /// The process at the root of the instance's tree (Cyrus's master; every imapd and
    /// ctl_cyrusdb descends from it): benchmarks measure the server's CPU from here.
    pub fn root_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log from byte `start` on (see `log_len`).
    fn log_since(&self, start: usize) -> String {
        let bytes = std::fs::read(self.dir().join("cyrus.log")).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(start..).unwrap_or_default()).into_owned()
    }

    fn log_len(&self) -> usize {
        std::fs::metadata(self.dir().join("cyrus.log")).map_or(0, |m| m.len() as usize)
    }

    fn sasldb_path(&self) -> PathBuf {
        self.dir().join("sasldb2")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir().join("cyrus.stderr")
    }

    /// Sets `user`'s password in the sasldb (creating the file on first use), as the user the
    /// servers run as, so that they can read it.
    fn set_password(&self, user: &str, password: &str) {
        let _guard = self.sasldb.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = as_run_user("saslpasswd2")
            .args(["-p", "-c", "-u", SERVERNAME, "-f"])
            .arg(self.sasldb_path())
            .arg(user)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run saslpasswd2 (sasl2-bin)");
        child
            .stdin
            .take()
            .expect("saslpasswd2 stdin")
            .write_all(password.as_bytes())
            .expect("write password to saslpasswd2");
        let out = child.wait_with_output().expect("saslpasswd2");
        assert!(
            out.status.success(),
            "saslpasswd2 for {user} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// imapd.conf, cyrus.conf and `start.sh` (as root or namespace root: private /dev with our
    /// /dev/log, then master as the run user).
    fn write_config(&self, bins: &Binaries) {
        let dir = self.dir().display();
        let run = run_as();
        // Cyrus 3 defaults to altnamespace and unixhierarchysep on (no prefix, `/`): turned off
        // here for the classic `INBOX.` + `.` namespace. No TLS options, so no STARTTLS.
        // allowplaintext lets LOGIN and AUTH=PLAIN work without TLS. Every path Cyrus writes
        // (sockets, proc, lock, databases, sieve) defaults to configdirectory or is set here.
        // Cyrus 3.6 has no switch for its fsyncs (of the message, cyrus.index and cyrus.cache per
        // APPEND) apart from skiplist_unsafe, which covers the skiplist databases only.
        let imapd_conf = format!(
            "# Generated by tests/common/cyrus.rs.\n\
             configdirectory: {dir}/conf\n\
             defaultpartition: default\n\
             partition-default: {dir}/spool\n\
             sievedir: {dir}/conf/sieve\n\
             servername: {SERVERNAME}\n\
             cyrus_user: {user}\n\
             cyrus_group: {group}\n\
             admins: {ADMIN}\n\
             allowplaintext: yes\n\
             sasl_pwcheck_method: auxprop\n\
             sasl_auxprop_plugin: sasldb\n\
             sasl_sasldb_path: {dir}/sasldb2\n\
             sasl_mech_list: PLAIN\n\
             altnamespace: no\n\
             unixhierarchysep: no\n\
             virtdomains: off\n\
             skiplist_unsafe: yes\n",
            user = run.user,
            group = run.group,
        );
        let conf = format!("{dir}/imapd.conf");
        let bin = bins.bin.display();
        // prefork=1: one imapd waits for the first connection; -U 30: an imapd serves up to 30
        // connections in turn. The checkpoint event is Debian's.
        let cyrus_conf = format!(
            "# Generated by tests/common/cyrus.rs.\n\
             START {{\n  recover cmd=\"{bin}/ctl_cyrusdb -C {conf} -r\"\n}}\n\
             SERVICES {{\n  imap cmd=\"{bin}/imapd -C {conf} -U 30\" \
             listen=\"127.0.0.1:{port}\" prefork=1 maxchild=500\n}}\n\
             EVENTS {{\n  checkpoint cmd=\"{bin}/ctl_cyrusdb -C {conf} -c\" period=30\n}}\n",
            port = self.port,
        );
        let setpriv = if run.via_setpriv {
            format!(
                "setpriv --reuid {} --regid {} --clear-groups -- ",
                run.user, run.group
            )
        } else {
            String::new()
        };
        let libpath = bins
            .libdir
            .as_ref()
            .map(|l| format!(" LD_LIBRARY_PATH='{}'", l.display()))
            .unwrap_or_default();
        // Where the host's /dev stays reachable once a tmpfs covers /dev: /mnt of the private
        // namespace where there is one, because a tempdir under /dev/shm (the benchmarks' TMPDIR)
        // would be covered too.
        let host_dev = if Path::new("/mnt").is_dir() {
            "/mnt".to_string()
        } else {
            format!("{dir}/host-dev")
        };
        // `master -D` keeps stderr open (cyrus.stderr); `-l 256`: listen backlog (default 32).
        let start = format!(
            "# Generated by tests/common/cyrus.rs; runs in a private mount namespace.\n\
             set -e\n\
             mount --rbind /dev '{host_dev}'\n\
             mount -t tmpfs -o mode=0755,size=64k cyrus-dev /dev\n\
             for n in {DEV_NODES}; do\n  \
               if [ -e '{host_dev}/'$n ]; then : > /dev/$n; \
             mount --bind '{host_dev}/'$n /dev/$n; fi\n\
             done\n\
             if [ -d '{host_dev}/shm' ]; then mkdir /dev/shm; \
             mount --rbind '{host_dev}/shm' /dev/shm; fi\n\
             ln -s /proc/self/fd /dev/fd\n\
             ln -s '{dir}/syslog.sock' /dev/log\n\
             cd '{dir}'\n\
             exec env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin{libpath} {setpriv}'{master}' \
             -C '{conf}' -M '{dir}/cyrus.conf' -p '{dir}/master.pid' -l 256 -D\n",
            master = bins.bin.join("master").display(),
        );
        std::fs::write(self.dir().join("imapd.conf"), imapd_conf).expect("write imapd.conf");
        std::fs::write(self.dir().join("cyrus.conf"), cyrus_conf).expect("write cyrus.conf");
        std::fs::write(self.dir().join("start.sh"), start).expect("write start.sh");
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "cyrus already running");
        let mut cmd = Command::new("unshare");
        if !run_as().via_setpriv {
            cmd.args(["--user", "--map-current-user", "--keep-caps"]);
        }
        cmd.args(["--mount", "--propagation", "private", "/bin/sh"])
            .arg(self.dir().join("start.sh"));
        // Its own process group: `stop` reaches every imapd too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        self.child = Some(cmd.spawn().expect("spawn unshare (util-linux)"));
    }

    /// Waits for a `* OK` greeting (master runs the recovery, then listens and preforks one
    /// imapd); gives up at once when master exits or logs that it cannot bind the port.
    fn wait_ready(&mut self, log_start: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("cyrus spawned");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("master exited early with {status}"));
            }
            if greets(self.host(), self.port) {
                return Ok(());
            }
            if let Some(line) = self
                .log_since(log_start)
                .lines()
                .find(|l| l.contains("unable to") && l.contains("socket"))
            {
                return Err(format!("master cannot listen: {line}"));
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
            stop(child, true, self.host(), self.port);
        }
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir().join(name)).unwrap_or_default();
        format!(
            "--- stderr ---\n{}\n--- cyrus.log (syslog) ---\n{}\n--- imapd.conf ---\n{}\n\
             --- cyrus.conf ---\n{}\n--- start.sh ---\n{}",
            read("cyrus.stderr"),
            self.log(),
            read("imapd.conf"),
            read("cyrus.conf"),
            read("start.sh")
        )
    }
}

impl ImapServer for Cyrus {
    fn host(&self) -> &str {
        "127.0.0.1"
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn layout(&self) -> Layout {
        Layout::DotInbox
    }

    fn add_user(&self, name: &str, password: &str) {
        Cyrus::add_user(self, name, password)
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.terminate();
        // Then the syslog reader (it drains what the processes sent before they went).
        self.syslog.take();
    }
}

/// Where Cyrus's programs (master, imapd, ctl_cyrusdb) are, and the directory with its own
/// libraries when they are not installed system-wide.
struct Binaries {
    bin: PathBuf,
    libdir: Option<PathBuf>,
}

impl Binaries {
    fn find() -> Binaries {
        for root in ROOTS {
            let root = Path::new(root);
            let bin = root.join("usr/lib/cyrus/bin");
            if !["master", "imapd", "ctl_cyrusdb"]
                .iter()
                .all(|p| bin.join(p).exists())
            {
                continue;
            }
            if root == Path::new("/") {
                return Binaries { bin, libdir: None };
            }
            // usr/lib/<multiarch triplet>/libcyrus_min.so.0
            let libdir = std::fs::read_dir(root.join("usr/lib"))
                .expect("read Cyrus's usr/lib")
                .flatten()
                .map(|e| e.path())
                .find(|p| p.join("libcyrus_min.so.0").exists());
            assert!(
                libdir.is_some(),
                "no libcyrus_min.so.0 under {}/usr/lib: run scripts/install-cyrus.sh",
                root.display()
            );
            return Binaries { bin, libdir };
        }
        panic!("Cyrus IMAP not found in /opt/cyrus-imapd: run scripts/install-cyrus.sh");
    }
}

/// Receives the instance's syslog datagrams on `syslog.sock` (/dev/log inside its namespace) and
/// appends them, without the `<priority>`, to `cyrus.log`; stops on drop once nothing is queued.
struct Syslog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Syslog {
    fn start(dir: &Path) -> Syslog {
        let path = dir.join("syslog.sock");
        let sock = UnixDatagram::bind(&path).expect("bind syslog.sock");
        // The servers run as another user: they must be able to send.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .expect("chmod syslog.sock");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("syslog.sock timeout");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("cyrus.log"))
            .expect("open cyrus.log");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let msg = &buf[..n];
                        let msg = match msg.iter().position(|&b| b == b'>') {
                            Some(i) if msg.first() == Some(&b'<') => &msg[i + 1..],
                            _ => msg,
                        };
                        let msg = msg.trim_ascii_end();
                        // A lost log line must not fail the test.
                        let _ = log.write_all(msg).and_then(|()| log.write_all(b"\n"));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if stopped.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    // A signal to this thread (EINTR) loses nothing: read on.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Syslog {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
