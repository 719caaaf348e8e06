//! A loopback forwarder in front of a real IMAP server that keeps one answer from its client:
//! bytes pass both ways until the server answers the first command of a given name, and that
//! answer (and all after it) is held back. A test can then kill the client at the moment the
//! server has done a write the client never heard of.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Cutoff {
    /// Where clients connect (127.0.0.1).
    pub port: u16,
    answered: mpsc::Receiver<String>,
}

impl Cutoff {
    /// Forwards every connection to `host:port`; cuts at the tagged answer to the first
    /// `command` (e.g. `APPEND`, or `MOVE` for `UID MOVE`) any connection sends.
    pub fn start(host: &str, port: u16, command: &'static str) -> Cutoff {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let local = listener.local_addr().unwrap().port();
        let target = format!("{host}:{port}");
        let (tx, answered) = mpsc::channel();
        thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(&target)) else {
                    return;
                };
                let tag = Arc::new(Mutex::new(None));
                let up = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up_tag = tag.clone();
                thread::spawn(move || forward_up(up.0, up.1, command, &up_tag));
                let tx = tx.clone();
                thread::spawn(move || forward_down(server, client, &tag, &tx));
            }
        });
        Cutoff {
            port: local,
            answered,
        }
    }

    /// Waits until the server has answered the command (the client has not seen the answer);
    /// returns the answer.
    pub fn wait_answered(&self, limit: Duration) -> String {
        self.answered
            .recv_timeout(limit)
            .expect("the server answered the command within the limit")
    }
}

/// Client to server, line by line (literals pass as lines too); notes the tag of the first
/// `command`.
fn forward_up(from: TcpStream, mut to: TcpStream, command: &str, tag: &Mutex<Option<String>>) {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if !matches!(from.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let words: Vec<&str> = text.split_ascii_whitespace().take(3).collect();
        let named = match words[..] {
            [_, "UID" | "uid", c, ..] | [_, c, ..] => c.eq_ignore_ascii_case(command),
            _ => false,
        };
        if named {
            tag.lock().unwrap().get_or_insert(words[0].to_string());
        }
        if to.write_all(&line).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Server to client until the tagged answer to the noted command: that line is not passed on,
/// nor anything after it (the client's socket stays open until the server closes).
fn forward_down(
    from: TcpStream,
    mut to: TcpStream,
    tag: &Mutex<Option<String>>,
    answered: &mpsc::Sender<String>,
) {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    let mut cut = false;
    loop {
        line.clear();
        if !matches!(from.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            break;
        }
        let noted = tag.lock().unwrap().clone();
        if !cut && noted.is_some_and(|t| line.starts_with(format!("{t} ").as_bytes())) {
            cut = true;
            let _ = answered.send(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        if !cut && to.write_all(&line).is_err() {
            break;
        }
    }
}
