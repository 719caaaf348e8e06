//! Errors of the IMAP client. Each names the side (host1 = OLD, host2 = NEW) that failed, and their
//! texts follow imapsync's wording where migration scripts grep for it.

use super::Side;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("{} failure: can not open imap connection on {side} [{host}] with port [{port}]: {source}", side.host_n())]
    Connect {
        side: Side,
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("{} failure: Can not go to tls encryption on {side} [{host}]: {message}", side.host_n())]
    Tls {
        side: Side,
        host: String,
        message: String,
    },
    #[error("{} failure: Error login on [{host}] with user [{user}] auth [{mech}]: {text}", side.host_n())]
    Login {
        side: Side,
        host: String,
        user: String,
        mech: &'static str,
        text: String,
    },
    #[error("{side}: timeout after {secs} s waiting for {what}")]
    Timeout { side: Side, what: String, secs: u64 },
    #[error("{side}: connection lost: {source}")]
    Io { side: Side, source: std::io::Error },
    #[error("{side}: server closed the connection{}", if text.is_empty() { String::new() } else { format!(": {text}") })]
    Closed { side: Side, text: String },
    #[error("{side}: protocol error: {message}")]
    Protocol { side: Side, message: String },
    /// A tagged NO or BAD. `command` is the command's name, never its arguments (they may hold secrets).
    #[error("{side}: {command} failed: {status} {text}")]
    Refused {
        side: Side,
        command: String,
        status: &'static str,
        text: String,
        code: Option<String>,
    },
    #[error("{side}: spool file: {source}")]
    Spool { side: Side, source: std::io::Error },
}

impl ImapError {
    pub fn side(&self) -> Side {
        match self {
            ImapError::Connect { side, .. }
            | ImapError::Tls { side, .. }
            | ImapError::Login { side, .. }
            | ImapError::Timeout { side, .. }
            | ImapError::Io { side, .. }
            | ImapError::Closed { side, .. }
            | ImapError::Protocol { side, .. }
            | ImapError::Refused { side, .. }
            | ImapError::Spool { side, .. } => *side,
        }
    }

    /// True when the connection can no longer be used (the caller should reconnect).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ImapError::Refused { .. })
    }
}

pub type Result<T> = std::result::Result<T, ImapError>;
