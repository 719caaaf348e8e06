//! The admin endpoint on `[admin] listen`: [`server`] speaks HTTP/1.1 through hyper (a capped
//! number of connections plus a reserve that answers only `/health`, header and idle timeouts),
//! [`access`] decides who may ask (Host, bearer token, Origin, a custom header on POSTs) and
//! [`routes`] answers: `/health`, `/metrics`, the JSON API over `crate::ops` and the sweeper, and
//! `POST /reload`.

mod access;
mod routes;
mod server;

use std::sync::Arc;
use std::time::Duration;

pub use server::{HEALTH_RESERVE, MAX_CONNECTIONS, MAX_REQUEST, serve};

use super::metrics::Metrics;
use super::reload::Reloader;
use crate::config;
use crate::migrate::Migrator;
use crate::store::Store;
use crate::sweep::Control;

/// What the admin endpoint serves, and to whom.
pub struct Admin {
    metrics: Arc<Metrics>,
    store: Option<Arc<dyn Store>>,
    sweep: Option<Arc<Control>>,
    reload: Option<Arc<Reloader>>,
    /// What the migration holds open, for `/metrics`.
    migrator: Option<Arc<Migrator>>,
    access: access::Access,
    header_timeout: Duration,
}

impl Admin {
    /// `config`: the `[admin]` section (validated); `store`: where accounts are read (and
    /// retired); `sweep`: the running sweeper's switches. Routes that need a missing one answer
    /// 503.
    pub fn new(
        config: &config::Admin,
        metrics: Arc<Metrics>,
        store: Option<Arc<dyn Store>>,
        sweep: Option<Arc<Control>>,
    ) -> Admin {
        Admin {
            metrics,
            store,
            sweep,
            reload: None,
            migrator: None,
            access: access::Access::new(config),
            header_timeout: Duration::from_secs(config.header_timeout_secs),
        }
    }

    /// Serves `POST /reload` with `reloader` (503 without one).
    pub fn with_reloader(mut self, reloader: Arc<Reloader>) -> Admin {
        self.reload = Some(reloader);
        self
    }

    /// Adds the migration's connection and live pickup gauges to `/metrics`.
    pub fn with_migrator(mut self, migrator: Option<Arc<Migrator>>) -> Admin {
        self.migrator = migrator;
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::secret::Secret;

    /// An `[admin]` section on 127.0.0.1:9143 with token `t0k`.
    pub(crate) fn section() -> config::Admin {
        config::Admin {
            listen: "127.0.0.1:9143".parse().unwrap(),
            token: Some(Secret::new("t0k")),
            allow_without_token: false,
            host: None,
            header_timeout_secs: 10,
        }
    }

    pub(crate) fn admin(
        metrics: Arc<Metrics>,
        store: Option<Arc<dyn Store>>,
        sweep: Option<Arc<Control>>,
    ) -> Admin {
        Admin::new(&section(), metrics, store, sweep)
    }
}
