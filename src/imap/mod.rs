//! An async IMAP client for the engine: plain, STARTTLS and implicit TLS connections, LOGIN and
//! AUTHENTICATE PLAIN, the commands a migrator needs, and pipelining (several commands in flight).
//! Responses are read by a streaming reader that spools large literals to disk, so message bodies
//! are never held whole in memory and never re-encoded; it frames them with [`framer`], the same
//! sans-I/O line/literal framer the proxy runs on both directions. No policy lives here.

mod client;
mod error;
pub mod framer;
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

/// Frames `data` into responses with [`framer`], without I/O, and parses each; returns how many parsed. For the
/// `response_parse` fuzz target and the property test: the parser must return (an error is
/// fine) whatever a server sends, never panic or overflow the stack.
pub fn parse_responses(data: &[u8]) -> usize {
    use framer::{Event, Framer, Limits};
    let mut framer = Framer::new(Limits::default());
    let mut rest = data;
    let mut ended = false;
    let mut parts = Vec::new();
    let mut parsed = 0;
    let mut finish = |parts: &mut Vec<reader::Part>| {
        if !parts.is_empty() && response::parse(std::mem::take(parts)).is_ok() {
            parsed += 1;
        }
    };
    loop {
        let (n, event) = framer.advance(rest);
        rest = &rest[n..];
        match event {
            Some(Event::Line { mut bytes, literal }) => {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                parts.push(reader::Part::Text(bytes));
                match literal {
                    Some(_) => parts.push(reader::Part::Literal(Body::Mem(Vec::new()))),
                    None => finish(&mut parts),
                }
            }
            Some(Event::LiteralData(data)) => {
                if let Some(reader::Part::Literal(Body::Mem(body))) = parts.last_mut() {
                    body.extend_from_slice(data);
                }
            }
            // An overlong line or a bad announcement: what came so far is one response.
            Some(Event::Overlong(_) | Event::OverlongEnd { .. } | Event::Error(_)) => {
                finish(&mut parts)
            }
            // A last line without its line end is ended; a literal cut short ends its response.
            None if framer.buffered() > 0 && !ended => {
                rest = b"\n";
                ended = true;
            }
            None => break,
        }
    }
    finish(&mut parts);
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
