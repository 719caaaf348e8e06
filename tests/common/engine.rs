//! Glue for tests that drive imapferry's engine directly: an `Endpoint` for a harness server and
//! an observer that prints what the engine warns about (shown when a test fails).

use std::time::Duration;

use imapferry::imap::{ConnectOptions, Security, TlsOptions};
use imapferry::secret::Secret;
use imapferry::sync::{AuthMech, Endpoint, Event, Observer};

use super::ImapServer;

/// `user` with `password` on `d`, plain IMAP, LOGIN.
pub fn endpoint(d: &impl ImapServer, user: &str, password: &str) -> Endpoint {
    Endpoint {
        connect: ConnectOptions {
            host: d.host().to_string(),
            port: d.port(),
            security: Security::Plain,
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(30),
        },
        user: user.to_string(),
        password: Secret::new(password),
        authuser: None,
        auth: AuthMech::Login,
    }
}

/// Prints the engine's warnings and errors.
pub struct Print;

impl Observer for Print {
    fn event(&self, event: Event) {
        if let Event::Warning(w) | Event::Error(w) = event {
            eprintln!("engine: {w}");
        }
    }
}
