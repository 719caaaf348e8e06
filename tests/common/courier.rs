//! A private, real Courier-IMAP 5 per test, to serve as an OLD server (Maildir++: `INBOX.` prefix,
//! `.` separator): couriertcpd + imaplogin + imapd with its own authdaemond and userdb, all in a
//! tempdir on a free loopback port; readiness by greeting, SIGTERM-then-SIGKILL on drop.
//!
//! Login is Courier's own: imaplogin asks authdaemond (authuserdb) and execs imapd. The socket
//! path (/run/courier/authdaemon/socket) and /etc/courier/{authdaemonrc,userdb.dat} are compiled
//! into courier-authlib, so each instance runs in a private mount namespace (`unshare --mount`)
//! with its tempdir's `etc` bound on /etc/courier and its socket directory on /run/courier/
//! authdaemon: instances stay independent and nothing outside the tempdir is touched. As root the
//! servers then run as nobody:nogroup (setpriv); otherwise in a user namespace as the caller.
//! imapd and imaplogin come from /opt/courier-imap, where scripts/install-deps.sh unpacks Debian's
//! courier-imap (installing it would remove dovecot-imapd), or from an installed courier-imap.

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::dovecot::{Layout, chown_to_run_as, free_port, run_as};
use super::server::{ImapServer, greets, stop, wait_port_closed};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const AUTHDAEMOND: &str = "/usr/lib/courier/courier-authlib/authdaemond";
/// The socket path compiled into courier-authlib, and its directory.
const AUTH_DIR: &str = "/run/courier/authdaemon";

/// Debian's default `IMAP_CAPABILITY` (/etc/courier/imapd). Courier adds ACL, ACL2=UNION, ENABLE
/// and UTF8=ACCEPT itself; AUTH=PLAIN is only advertised after STARTTLS (not offered here).
const CAPABILITY: &str =
    "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE";

pub struct Courier {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Serialises userdb rewrites (`add_user` from several threads).
    userdb: Mutex<()>,
}

impl Courier {
    /// Starts a fresh instance. Ports are picked by binding :0 and closing, so another process can
    /// grab one in between; a start that fails with "Address already in use" is retried.
    pub fn start() -> Courier {
        let (imapd, imaplogin) = binaries();
        for path in [AUTHDAEMOND, "/usr/sbin/couriertcpd", "/usr/sbin/makeuserdb"] {
            assert!(
                Path::new(path).exists(),
                "{path} missing: run scripts/install-deps.sh (courier-base)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("imapferry-courier-")
            .tempdir()
            .expect("tempdir");
        assert!(
            !dir.path().to_string_lossy().contains(['\'', ' ']),
            "tempdir path must not need shell quoting"
        );
        let mut c = Courier {
            dir,
            port: 0,
            child: None,
            userdb: Mutex::new(()),
        };
        for sub in ["etc", "run/courier/authdaemon", "home"] {
            std::fs::create_dir_all(c.dir().join(sub)).expect("create dir");
        }
        std::fs::write(
            c.dir().join("etc/authdaemonrc"),
            "authmodulelist=\"authuserdb\"\ndaemons=3\n",
        )
        .expect("write authdaemonrc");
        chown_to_run_as(c.dir());
        c.write_userdb("");
        for attempt in 1.. {
            c.port = free_port();
            let _ = std::fs::remove_file(c.stderr_path()); // judge each attempt by its own output
            c.write_scripts(&imapd, &imaplogin);
            chown_to_run_as(c.dir());
            c.spawn();
            match c.wait_ready() {
                Ok(()) => return c,
                Err(why) if attempt < 4 && c.stderr().contains("Address already in use") => {
                    eprintln!("courier port clash ({why}), retrying on a new port");
                    c.terminate();
                }
                Err(why) => {
                    c.terminate();
                    panic!("courier did not become ready: {why}\n{}", c.diagnostics());
                }
            }
        }
        unreachable!()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user's Maildir (INBOX; folders are `.Name` subdirectories, Maildir++).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir().join("home").join(user).join("Maildir")
    }

    /// couriertcpd, imaplogin and imapd log lines (connections, logins, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("courier.log")).unwrap_or_default()
    }

    /// Adds (or replaces) a user, creating its Maildir if needed; it can log in at once (authuserdb
    /// reopens userdb.dat when makeuserdb renames a new one into place).
    pub fn add_user(&self, name: &str, password: &str) {
        assert!(
            !name.is_empty()
                && !name.contains(['/', '\t', '\n', '|', ' '])
                && !password.contains('\n'),
            "bad user/password"
        );
        let _guard = self.userdb.lock().unwrap_or_else(|e| e.into_inner());
        let home = self.dir().join("home").join(name);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(self.maildir(name).join(sub)).expect("create Maildir");
        }
        chown_to_run_as(&home);
        let (uid, gid) = run_ids();
        let path = self.dir().join("etc/userdb");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut text: String = old
            .lines()
            .filter(|l| l.split('\t').next() != Some(name))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "{name}\tuid={uid}|gid={gid}|home={}|systempw={}\n",
            home.display(),
            crypt(password)
        ));
        self.write_userdb(&text);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process at the root of the instance's tree (authdaemond, couriertcpd and every
    /// session descend from it): benchmarks measure the server's CPU from here.
    pub fn root_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Graceful stop (SIGTERM to every process, SIGKILL after 5 s); data and port are kept.
    pub fn stop(&mut self) {
        self.terminate();
    }

    /// SIGKILL of every process (listener, authdaemond, sessions), as after a crash.
    pub fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group our own child leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            child.wait().expect("reap couriertcpd");
            wait_port_closed(self.host(), self.port);
        }
    }

    /// Stops if running, then starts again on the same port with the same data.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
        if let Err(why) = self.wait_ready() {
            self.terminate();
            panic!(
                "courier did not come back after restart: {why}\n{}",
                self.diagnostics()
            );
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir().join("courier.stderr")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn socket_path(&self) -> PathBuf {
        self.dir().join("run/courier/authdaemon/socket")
    }

    /// Writes the userdb source (mode 0600, as makeuserdb demands) and compiles it to userdb.dat
    /// and userdbshadow.dat, as the user authdaemond runs as.
    fn write_userdb(&self, text: &str) {
        let path = self.dir().join("etc/userdb");
        let tmp = self.dir().join("etc/userdb.new");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .expect("write userdb");
        f.write_all(text.as_bytes()).expect("write userdb");
        drop(f);
        chown_to_run_as(&tmp);
        std::fs::rename(&tmp, &path).expect("rename userdb");
        let out = as_run_user("/usr/sbin/makeuserdb")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run makeuserdb");
        assert!(
            out.status.success(),
            "makeuserdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `start.sh` (as root or namespace root: private mounts, then drop privileges) and
    /// `serve.sh` (authdaemond in the background, couriertcpd in the foreground).
    fn write_scripts(&self, imapd: &Path, imaplogin: &Path) {
        let dir = self.dir().display();
        let run = run_as();
        // Bind over the deepest existing ancestor of the compiled-in socket directory.
        let auth_target = [AUTH_DIR, "/run/courier", "/run"]
            .into_iter()
            .find(|p| Path::new(p).is_dir())
            .expect("/run exists");
        let setpriv = if run.via_setpriv {
            format!(
                "setpriv --reuid {} --regid {} --clear-groups -- ",
                run.user, run.group
            )
        } else {
            String::new()
        };
        let start = format!(
            "# Generated by tests/common/courier.rs; runs in a private mount namespace.\n\
             set -e\n\
             mount --bind '{dir}/etc' /etc/courier\n\
             mount --bind '{dir}{auth_target}' {auth_target}\n\
             cd '{dir}'\n\
             exec {setpriv}/bin/sh '{dir}/serve.sh'\n"
        );
        // Courier's settings are environment variables (what /usr/lib/courier/imapd exports
        // from /etc/courier/imapd); `env -i` keeps the test's environment out. No IMAP_EMPTYTRASH:
        // Debian's `Trash:7` would purge seeded Trash messages with old dates at logout.
        let env = [
            "PATH=/usr/bin:/bin:/usr/sbin:/sbin".to_string(),
            format!("IMAP_CAPABILITY='{CAPABILITY}'"),
            "IMAP_KEYWORDS=1".into(),
            "IMAP_ACL=1".into(),
            "IMAP_IDLE_TIMEOUT=60".into(),
            "IMAP_MAILBOX_SANITY_CHECK=1".into(),
            "IMAP_USELOCKS=1".into(),
            "IMAP_ENHANCEDIDLE=0".into(),
            "IMAP_TRASHFOLDERNAME=Trash".into(),
            "IMAP_MOVE_EXPUNGE_TO_TRASH=0".into(),
            format!("IMAP_SHAREDINDEXFILE='{dir}/etc/shared/index'"),
        ]
        .join(" ");
        let serve = format!(
            "# Generated by tests/common/courier.rs.\n\
             umask 022\n\
             env -i DEBUG_LOGIN=0 {AUTHDAEMOND} 2>>'{dir}/authdaemond.log' &\n\
             exec env -i {env} /usr/sbin/couriertcpd -address=127.0.0.1 -nodnslookup \
             -noidentlookup -maxprocs=500 -maxperc=500 -maxperip=500 \
             -stderr='{dir}/courier.log' {port} '{imaplogin}' '{imapd}' Maildir\n",
            port = self.port,
            imaplogin = imaplogin.display(),
            imapd = imapd.display(),
        );
        std::fs::write(self.dir().join("start.sh"), start).expect("write start.sh");
        std::fs::write(self.dir().join("serve.sh"), serve).expect("write serve.sh");
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "courier already running");
        // A stale socket from the last run would pass for readiness.
        let _ = std::fs::remove_file(self.socket_path());
        let mut cmd = Command::new("unshare");
        if !run_as().via_setpriv {
            cmd.args(["--user", "--map-current-user", "--keep-caps"]);
        }
        cmd.args(["--mount", "--propagation", "private", "/bin/sh"])
            .arg(self.dir().join("start.sh"));
        // Its own process group: `stop` and `kill_all` reach authdaemond and sessions too.
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

    /// Waits for authdaemond's socket (it appears once listening) and a `* OK` greeting.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("couriertcpd exited early with {status}"));
            }
            if self.socket_path().exists() && greets(self.host(), self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no authdaemond socket or `* OK` greeting on port {} within {READY_TIMEOUT:?}",
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
            "--- stderr ---\n{}\n--- courier.log ---\n{}\n--- authdaemond.log ---\n{}\n\
             --- start.sh ---\n{}\n--- serve.sh ---\n{}",
            self.stderr(),
            self.log(),
            read("authdaemond.log"),
            read("start.sh"),
            read("serve.sh")
        )
    }
}

impl ImapServer for Courier {
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
        Courier::add_user(self, name, password)
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// (imapd, imaplogin): unpacked by scripts/install-deps.sh, or from an installed courier-imap.
fn binaries() -> (PathBuf, PathBuf) {
    for root in ["/opt/courier-imap", "/"] {
        let root = Path::new(root);
        let imapd = root.join("usr/bin/imapd");
        let imaplogin = root.join("usr/lib/courier/courier/imaplogin");
        if imapd.exists() && imaplogin.exists() {
            return (imapd, imaplogin);
        }
    }
    panic!("Courier-IMAP not found in /opt/courier-imap: run scripts/install-deps.sh");
}

/// A command run as the user the servers run as (nobody:nogroup via setpriv when root).
pub(super) fn as_run_user(program: &str) -> Command {
    let run = run_as();
    if !run.via_setpriv {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &run.user,
        "--regid",
        &run.group,
        "--clear-groups",
        "--",
        program,
    ]);
    c
}

/// Numeric uid and gid of the user the servers run as (what userdb entries must name).
fn run_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let run = run_as();
        // SAFETY: getpwnam/getgrnam with NUL-terminated names; the numbers are copied out at
        // once, and this runs only once (OnceLock), so their static buffers are not shared.
        unsafe {
            if !run.via_setpriv {
                return (libc::geteuid(), libc::getegid());
            }
            let user = std::ffi::CString::new(run.user.as_str()).unwrap();
            let group = std::ffi::CString::new(run.group.as_str()).unwrap();
            let pw = libc::getpwnam(user.as_ptr());
            let gr = libc::getgrnam(group.as_ptr());
            assert!(
                !pw.is_null() && !gr.is_null(),
                "no {}:{}",
                run.user,
                run.group
            );
            ((*pw).pw_uid, (*gr).gr_gid)
        }
    })
}

/// SHA-512 crypt(3) hash of `password` (what authuserdb checks `systempw` against).
fn crypt(password: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl passwd");
    writeln!(child.stdin.take().unwrap(), "{password}").expect("write password");
    let out = child.wait_with_output().expect("openssl passwd");
    assert!(out.status.success(), "openssl passwd failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
