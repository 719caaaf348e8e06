//! An IMAP client over TLS for tests (rustls, the development CA trusted), line by line, that
//! shows which certificate the server presented.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::dovecot::ca_pem;

/// An IMAP client over TLS (rustls, the development CA trusted), line by line.
pub struct TlsImap {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
    next_tag: u32,
}

pub fn client_config() -> Arc<ClientConfig> {
    imapferry::tls::client_config(true, Some(&ca_pem())).unwrap()
}

impl TlsImap {
    /// Connects to `port` sending SNI `name` (none for an IP address) and reads the greeting.
    pub fn connect(port: u16, name: &str) -> TlsImap {
        TlsImap::connect_with(port, name, client_config())
    }

    /// [`TlsImap::connect`] with another client configuration (e.g. one that verifies nothing).
    pub fn connect_with(port: u16, name: &str, config: Arc<ClientConfig>) -> TlsImap {
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let conn = ClientConnection::new(config, server_name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = TlsImap {
            stream: BufReader::new(StreamOwned::new(conn, tcp)),
            next_tag: 1,
        };
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    /// The certificate the proxy presented.
    pub fn peer_der(&self) -> Vec<u8> {
        let conn = &self.stream.get_ref().conn;
        conn.peer_certificates().unwrap()[0].as_ref().to_vec()
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "connection closed");
        line
    }

    pub fn send(&mut self, text: &str) {
        let s = self.stream.get_mut();
        s.write_all(text.as_bytes()).unwrap();
        s.flush().unwrap();
    }

    /// Sends `cmd` and returns the lines up to and including the tagged one, which must be OK.
    pub fn cmd(&mut self, cmd: &str) -> Vec<String> {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        self.send(&format!("{tag} {cmd}\r\n"));
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                let tagged = &lines[lines.len() - 1];
                assert!(tagged.starts_with(&format!("{tag} OK")), "{cmd}: {tagged}");
                return lines;
            }
        }
    }
}
