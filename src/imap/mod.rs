//! An async IMAP client for the engine: plain, STARTTLS and implicit TLS connections, LOGIN and
//! AUTHENTICATE PLAIN, the commands a migrator needs, and pipelining (several commands in flight).
//! Responses are read by a streaming reader that spools large literals to disk, so message bodies
//! are never held whole in memory and never re-encoded. No policy lives here.

mod client;
mod error;
mod reader;
mod response;
mod transport;
pub mod uidset;

pub use client::{AppendMsg, Capabilities, Client, Done, ListEntry, MailboxInfo, MailboxStatus};
pub use error::{ImapError, Result};
pub use reader::{Body, SPOOL_THRESHOLD};
pub use response::{Code, Fetch, Response, Status, Untagged};
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
