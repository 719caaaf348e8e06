//! A private, real PostgreSQL (Debian's `postgresql` package) per test: `initdb` once per test
//! process into a template directory, copied for each instance; the server runs in the foreground
//! on a free loopback port, as nobody:nogroup via setpriv when we are root (as Dovecot does), and
//! is stopped on drop. TCP logins need the role's password (`scram-sha-256`), as in a fleet.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::courier::as_run_user;
use super::dovecot::{chown_to_run_as, free_port};
use super::server::stop_with;

/// The role the tests connect as, and its password.
pub const USER: &str = "imapferry";
pub const PASSWORD: &str = "state-secret-7";
/// The database the role owns.
pub const DATABASE: &str = "imapferry";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Postgres {
    /// A fresh cluster whose database [`DATABASE`] is owned by [`USER`] and empty.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("imapferry-pg-")
            .tempdir()
            .expect("tempdir");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(template().join("data"))
            .arg(dir.path())
            .status()
            .expect("run cp");
        assert!(copied.success(), "copying the PostgreSQL template failed");
        chown_to_run_as(dir.path());
        let mut pg = Postgres {
            dir,
            port: 0,
            child: None,
        };
        pg.restart();
        pg
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state URL. It holds no password: that comes from [`Postgres::password_file`] or the
    /// environment.
    pub fn url(&self) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// A file holding the role's password, for `[state] password_file`.
    pub fn password_file(&self) -> PathBuf {
        let path = self.dir.path().join("state-password");
        std::fs::write(&path, format!("{PASSWORD}\n")).expect("write the password file");
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Runs `sql` in [`DATABASE`] as the superuser; returns psql's unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        psql(self.dir.path(), self.port, DATABASE, sql)
    }

    /// Kills the server at once (SIGKILL), as a machine that dies would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts the server again (after [`Postgres::kill`]), on a new port when the old one clashes.
    pub fn restart(&mut self) {
        self.terminate();
        if self.port == 0 {
            self.port = free_port();
        }
        for attempt in 1.. {
            let (child, ready) = serve(self.dir.path(), self.port);
            self.child = Some(child);
            match ready {
                Ok(()) => return,
                Err(why) if attempt < 4 && self.log().contains("could not bind") => {
                    eprintln!("postgres port clash ({why}), retrying on a new port");
                    self.terminate();
                    self.port = free_port();
                }
                Err(why) => {
                    self.terminate();
                    panic!("postgres did not become ready: {why}\n{}", self.log());
                }
            }
        }
    }

    fn terminate(&mut self) {
        if let Some(child) = self.child.take() {
            stop_fast(child, "127.0.0.1", self.port);
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Starts the cluster in `dir/data` on `port` (socket and log in `dir`) and waits until it
/// accepts connections.
fn serve(dir: &Path, port: u16) -> (Child, Result<(), String>) {
    let log_path = dir.join("postgres.log");
    let log = std::fs::File::create(&log_path).expect("create postgres.log");
    chown_to_run_as(&log_path);
    let mut child = as_run_user(&bin("postgres"))
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // The tests need no durability across power loss; the code under test commits as usual.
        .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
        // Shared memory segments as files in the data directory: a server killed (`kill`, or
        // a test process that dies) leaves none behind in /dev/shm.
        .args(["-c", "dynamic_shared_memory_type=mmap"])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log file"))
        .stderr(log)
        .spawn()
        .expect("spawn postgres");
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return (child, Err(format!("postgres exited: {status}")));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && Command::new(bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        {
            return (child, Ok(()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, Err("not ready within 30 s".into()))
}

/// Runs `sql` in `db` as the superuser over the Unix socket in `dir`; returns the output.
fn psql(dir: &Path, port: u16, db: &str, sql: &str) -> String {
    let out = as_run_user(&bin("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(dir)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A program of the newest installed PostgreSQL.
fn bin(program: &str) -> String {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: run scripts/install-deps.sh")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .expect("no PostgreSQL version in /usr/lib/postgresql");
        PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
    })
    .join(program)
    .display()
    .to_string()
}

/// A cluster made once per test process, in `template()/data`: superuser `postgres` (trusted on
/// the socket), role [`USER`] with [`PASSWORD`] owning the database [`DATABASE`]. It lives in
/// `$TMPDIR/imapferry-pg-templates/<pid>` (a static is never dropped): the templates of test
/// processes that have ended are removed when the next one is made.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = std::env::temp_dir().join("imapferry-pg-templates");
        std::fs::create_dir_all(&root).expect("create the templates' directory");
        for entry in std::fs::read_dir(&root)
            .expect("list the templates")
            .flatten()
        {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok());
            // SAFETY: kill(2) with signal 0 only asks whether the process exists.
            if pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0) {
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).expect("create the template directory");
        chown_to_run_as(&dir);
        let data = dir.join("data");
        let made = as_run_user(&bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .expect("run initdb");
        assert!(
            made.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        let port = free_port();
        let (child, ready) = serve(&dir, port);
        if let Err(why) = ready {
            stop_fast(child, "127.0.0.1", port);
            panic!("the template cluster did not start: {why}");
        }
        let role = format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'");
        psql(&dir, port, "postgres", &role);
        let db = format!("CREATE DATABASE {DATABASE} OWNER {USER}");
        psql(&dir, port, "postgres", &db);
        stop_fast(child, "127.0.0.1", port);
        dir
    })
}

/// Stops the server with a fast shutdown (SIGINT: it disconnects its clients and exits
/// cleanly), not SIGTERM's smart one, which waits for clients a test may still hold.
fn stop_fast(child: Child, host: &str, port: u16) {
    stop_with(libc::SIGINT, child, false, host, port);
}
