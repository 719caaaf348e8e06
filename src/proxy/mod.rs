//! The transparent IMAP proxy: [`server`] binds the listeners and accepts connections (reading a
//! [`proxy_protocol`] header first when configured), [`session`] runs one client connection:
//! `prelogin` (proxy-owned greeting, login checked by NEW), then `relay` (byte relay both ways),
//! with [`upstream`] opening NEW's connection as the client arrives and logging in to it,
//! [`metrics`] counts what happens and [`admin`] serves `/health`, `/metrics` and the operator's
//! JSON API, [`reload`] applies a changed configuration file to a running proxy; the sans-I/O
//! parts: `capabilities` filters NEW's capability lists (the IMAP framer, `imap::framer`, splits
//! both directions into lines and streamed literal data without rewriting a byte), [`inspect`] reads a copy of a command
//! line to decide what to do with it, [`intercept`] tracks what a session's commands change with
//! [`seqmap`] (its sequence numbers' UIDs), [`proxy_protocol`] parses PROXY v1/v2 headers.

pub mod admin;
mod capabilities;
pub mod inspect;
pub mod intercept;
pub mod metrics;
mod prelogin;
pub mod proxy_protocol;
mod relay;
pub mod reload;
pub mod seqmap;
pub mod server;
pub mod session;
pub mod throttle;
pub mod translate;
pub mod upstream;
