//! The transparent IMAP proxy: [`server`] binds the listeners and accepts connections,
//! [`session`] runs one client connection (proxy-owned greeting, login checked by NEW, byte relay);
//! the sans-I/O parts: [`framer`] splits a byte stream into lines and streamed literal data without
//! rewriting a byte, [`inspect`] reads a copy of a command line to decide what to do with it.

pub mod framer;
pub mod inspect;
pub mod server;
pub mod session;
