//! `ImapServer`: what seeding, snapshots and engine endpoints need from any harness server
//! (Dovecot, Courier): where it listens, how it names folders, and how to add an account.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use super::dovecot::Layout;

const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub trait ImapServer {
    fn host(&self) -> &str;
    fn port(&self) -> u16;
    fn layout(&self) -> Layout;
    /// Adds (or replaces) a user that can log in with LOGIN at once.
    fn add_user(&self, name: &str, password: &str);

    fn sep(&self) -> char {
        self.layout().sep()
    }

    fn prefix(&self) -> &'static str {
        self.layout().prefix()
    }

    /// Server-side mailbox name of a layout-independent path such as "Projects/2024/Q1".
    fn mailbox_name(&self, path: &str) -> String {
        self.layout().server_name(path)
    }
}

/// Whether `host:port` accepts a connection and greets with `* OK`.
pub fn greets(host: &str, port: u16) -> bool {
    let Ok(stream) = TcpStream::connect((host, port)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("* OK")
}

/// SIGTERM to the server (`group`: to the process group it leads, so that its children go too),
/// up to 5 s grace, then SIGKILL; reaps it and waits until the port is shut (login processes may
/// outlive the master briefly; "unreachable" tests need the port shut).
pub fn stop(child: Child, group: bool, host: &str, port: u16) {
    stop_with(libc::SIGTERM, child, group, host, port);
}

/// [`stop`] asking with `signal` instead of SIGTERM.
pub fn stop_with(signal: libc::c_int, mut child: Child, group: bool, host: &str, port: u16) {
    let pid = child.id() as libc::pid_t;
    let target = if group { -pid } else { pid };
    // SAFETY: kill(2) on our own, not yet reaped, child (or the process group it leads).
    unsafe { libc::kill(target, signal) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above; a no-op for a target that has exited.
    unsafe { libc::kill(target, libc::SIGKILL) };
    child.wait().expect("reap the server");
    wait_port_closed(host, port);
}

/// Waits (up to 5 s) until `host:port` no longer accepts connections.
pub fn wait_port_closed(host: &str, port: u16) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    while TcpStream::connect((host, port)).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
