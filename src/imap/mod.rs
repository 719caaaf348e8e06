//! An async IMAP client for the engine: plain, STARTTLS and implicit TLS connections, LOGIN and
//! AUTHENTICATE PLAIN, the commands a migrator needs, and pipelining (several commands in flight).
//! Responses are read by a streaming reader that spools large literals to disk, so message bodies
//! are never held whole in memory and never re-encoded. No policy lives here.

mod client;
mod error;
mod reader;
mod response;
#[cfg(test)]
pub(crate) mod script;
mod transport;
pub mod uidset;

pub use client::{AppendMsg, Capabilities, Client, Done, ListEntry, MailboxInfo, MailboxStatus};
pub use error::{ImapError, Result};
pub use reader::{Body, SPOOL_THRESHOLD};
pub use response::{Code, Fetch, Response, Status, Untagged};
pub(crate) use transport::QuickAck;
pub use transport::{ConnectOptions, Security, TlsOptions};

use std::fmt;

/// Which server a connection talks to; every error names it (imapsync calls them host1 and host2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Old,
    New,
}

impl Side {
    /// imapsync's capitalised name ("Host1"/"Host2"), as its log lines use it.
    pub fn host_n(self) -> &'static str {
        match self {
            Side::Old => "Host1",
            Side::New => "Host2",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Old => "host1",
            Side::New => "host2",
        })
    }
}

/// Reads and parses every response in `data`, delivered in `chunk`-byte pieces, as a connection
/// would; returns how many responses were parsed. For the fuzz target and the property test:
/// whatever a server sends, the reader and parser must return (an error is fine), never panic or hang.
pub fn parse_stream(data: &[u8], chunk: usize) -> usize {
    use tokio::io::AsyncWriteExt;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return 0;
    };
    rt.block_on(async {
        let chunk = chunk.clamp(1, 1 << 16);
        let (mut tx, rx) = tokio::io::duplex(chunk);
        let data = data.to_vec();
        let writer = async move {
            for piece in data.chunks(chunk) {
                if tx.write_all(piece).await.is_err() {
                    return;
                }
            }
        };
        let reader = async move {
            let mut rx = tokio::io::BufReader::with_capacity(chunk, rx);
            let mut parsed = 0;
            while let Ok(Some(parts)) =
                reader::read_response(&mut rx, Side::Old, std::time::Duration::from_secs(5)).await
            {
                if response::parse(parts).is_ok() {
                    parsed += 1;
                }
            }
            parsed
        };
        tokio::join!(writer, reader).1
    })
}

/// Frames `data` into responses without I/O (lines, each `{n}` at a line's end taking the next
/// `n` bytes as a literal, as far as they go) and parses each; returns how many parsed. For the
/// `response_parse` fuzz target and the property test: the parser must return (an error is
/// fine) whatever a server sends, never panic or overflow the stack.
pub fn parse_responses(data: &[u8]) -> usize {
    let mut rest = data;
    let mut parsed = 0;
    while !rest.is_empty() {
        let mut parts = Vec::new();
        loop {
            let (line, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = after;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let literal = reader::literal_length(line);
            parts.push(reader::Part::Text(line.to_vec()));
            let Some(n) = literal else { break };
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
            parts.push(reader::Part::Literal(Body::Mem(rest[..n].to_vec())));
            rest = &rest[n..];
        }
        if response::parse(parts).is_ok() {
            parsed += 1;
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes in arbitrary chunks: the reader and parser never panic or hang.
        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
            super::parse_stream(&data, chunk);
        }

        /// Arbitrary bytes straight into the parser: never a panic.
        #[test]
        fn arbitrary_responses_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            super::parse_responses(&data);
        }

        /// Well-formed responses parse the same however the stream is cut.
        #[test]
        fn chunking_does_not_change_the_result(chunk in 1usize..40) {
            let input = b"* OK [CAPABILITY IMAP4rev1] hi\r\n* 1 FETCH (UID 3 BODY[] {5}\r\nhello)\r\n* LIST () \"/\" x\r\nA1 OK done\r\n";
            prop_assert_eq!(super::parse_stream(input, chunk), 4);
            prop_assert_eq!(super::parse_responses(input), 4);
        }
    }
}
