//! The proxy as a separate process (`imapferry proxy --config FILE`), so its memory can be read
//! from /proc on its own: configuration in a tempdir, a free loopback port, readiness by
//! greeting, SIGTERM (then SIGKILL) on drop. Tests pass `env!("CARGO_BIN_EXE_imapferry")`;
//! examples (which have no such variable) re-execute themselves.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `imapferry proxy` process; dropping it stops it.
pub struct ProxyProcess {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `program args… proxy --config FILE` with a plain listener in front of NEW at
    /// `new_port` (`security = "none"`, no `[old]`), plus the `extra` config sections.
    pub fn start(program: &Path, args: &[&str], new_port: u16, extra: &str) -> ProxyProcess {
        let mut dir = tempfile::Builder::new()
            .prefix("imapferry-proxy-")
            .tempdir()
            .expect("tempdir");
        for attempt in 1.. {
            let port = free_port();
            let config = dir.path().join("proxy.toml");
            let text = format!(
                "[listen]\nimap = \"127.0.0.1:{port}\"\n[new]\naddress = \"127.0.0.1:{new_port}\"\n\
                 security = \"none\"\n[state]\npath = \"{}\"\n{extra}",
                dir.path().join("imapferry.db").display()
            );
            std::fs::write(&config, text).expect("write proxy.toml");
            let stderr = std::fs::File::create(dir.path().join("proxy.stderr")).expect("stderr");
            let child = Command::new(program)
                .args(args)
                .arg("proxy")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
            let mut p = ProxyProcess {
                port,
                child: Some(child),
                dir,
            };
            match p.wait_ready() {
                Ok(()) => return p,
                Err(why) if attempt < 4 && p.stderr().contains("in use") => {
                    eprintln!("proxy port clash ({why}), retrying on a new port");
                    p.terminate();
                    dir = p.take_dir();
                }
                Err(why) => {
                    p.terminate();
                    panic!("proxy did not become ready: {why}\n{}", p.stderr());
                }
            }
        }
        unreachable!()
    }

    /// The process id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("proxy running").id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.stderr")).unwrap_or_default()
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`, …).
    pub fn status_kb(&self, field: &str) -> u64 {
        status_kb(self.pid(), field)
    }

    fn take_dir(&mut self) -> tempfile::TempDir {
        std::mem::replace(
            &mut self.dir,
            tempfile::Builder::new()
                .prefix("imapferry-proxy-")
                .tempdir()
                .expect("tempdir"),
        )
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("proxy running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("proxy exited early with {status}"));
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("set_read_timeout");
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("* OK") {
                    return Ok(());
                }
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

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; always reaps.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on the pid of our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`, …); panics when it is missing.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in {}", path.display()))
}
