//! imapferry moves mailboxes from an OLD IMAP server to a NEW one while people keep using their mail.
//!
//! # Layout
//!
//! Dependencies point down: a module may only use the modules listed below it.
//!
//! - [`cli`]: the command line: `imapferry sync` (imapsync's options, output and exit codes), `batch`,
//!   `proxy`, `sweep`, `accounts import`, `status`, `retire`, `verify`.
//! - [`proxy`]: the proxy: listeners (`server`), one client connection (`session`: `prelogin`,
//!   then `relay`), the admin HTTP endpoint (`admin`: server, access rules, routes) and metrics,
//!   and its sans-I/O parts (capability filtering, command inspection, the session tracking the migration needs, PROXY protocol headers).
//! - `ops`: the operator's rules, shared by the command line and the admin API: account lookup,
//!   the status overview, the retire decision, what an import line stands for.
//! - [`sweep`]: background completion of accounts nobody opens (uses `migrate`'s account state).
//! - [`migrate`]: the migration inside the proxy: one shared state per account (OLD access, lazy
//!   per-folder backfill with one owner, in a fleet too, live pickup) and the journal of user
//!   writes mirrored to OLD.
//! - [`config`]: the proxy's TOML configuration file (sections, defaults, validation).
//! - [`sync`]: the engine: per folder pair, plan, copy, adopt, merge flags, propagate deletions.
//! - [`imap`]: an async IMAP client (plain, STARTTLS, TLS) with a streaming response reader, and
//!   the line/literal framer it shares with the proxy. No policy.
//! - [`mapping`]: folder-name translation (separators, prefixes, modified UTF-7). Pure functions.
//! - [`store`]: the `Store` trait (accounts, folder pairs, links, tombstones, the journal, leases)
//!   and its two implementations, SQLite (embedded) and PostgreSQL (a fleet), sharing one SQL text.
//! - [`tls`], [`secret`], [`loopfile`], [`login`], [`cidr`], [`files`], `lock`, [`uidmap`],
//!   `histogram`: foundations (TLS configuration from PEM files, passwords that never print,
//!   imapsync's loop-file format, the account name of a typed login, client address blocks and
//!   the /64 an IPv6 client is counted by, private modes for created files, what a poisoned lock
//!   means, the virtual UIDs of a folder that keeps client caches, durations counted in buckets).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

pub(crate) mod cidr;
pub mod cli;
pub mod config;
pub(crate) mod files;
pub(crate) mod histogram;
pub mod imap;
pub(crate) mod lock;
pub(crate) mod login;
pub mod loopfile;
pub mod mapping;
pub(crate) mod migrate;
pub(crate) mod ops;
pub mod proxy;
pub mod secret;
pub mod store;
pub(crate) mod sweep;
pub mod sync;
pub mod tls;
pub mod uidmap;
