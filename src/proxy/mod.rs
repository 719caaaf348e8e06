//! The transparent IMAP proxy, sans-I/O parts: [`framer`] splits a byte stream into lines and
//! streamed literal data without rewriting a byte; [`inspect`] reads a copy of a command line to
//! decide what the proxy must do with it.

pub mod framer;
pub mod inspect;
