//! The long-running commands' logs (`proxy`, `sweep`): plain lines on stderr (colours only on a
//! terminal, so journald gets plain text), or JSON with `[log] json`. The filter is `[log] level`
//! when set, else `RUST_LOG`, else `warn`; a proxy reload puts a changed `[log] level` in force.

use std::sync::Arc;

use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use super::setup::{EX_CONFIG, Exit, fail};
use crate::config;
use crate::proxy::reload::LogControl;

/// The filter of a running subscriber, replaced by a reload.
struct Filter(reload::Handle<EnvFilter, Registry>);

impl LogControl for Filter {
    fn apply(&self, log: &config::Log) -> Result<(), String> {
        let filter = filter(log).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// `[log] level`, else `RUST_LOG`, else `warn`.
fn filter(log: &config::Log) -> Result<EnvFilter, config::ValidationError> {
    Ok(match log.filter()? {
        Some(filter) => filter,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    })
}

/// The dispatcher a long-running command logs through, scoped to its future (the server passes
/// it on to every task), and the control a reload changes its filter with.
pub(super) fn dispatch(log: &config::Log) -> Result<(Dispatch, Arc<dyn LogControl>), Exit> {
    let (filter, handle) = reload::Layer::new(filter(log).map_err(|e| fail(EX_CONFIG, e))?);
    let output: Box<dyn Layer<_> + Send + Sync> = if log.json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(std::io::stderr),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(super::stderr_is_terminal())
                .with_writer(std::io::stderr),
        )
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(output);
    Ok((Dispatch::new(subscriber), Arc::new(Filter(handle))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_from_the_file_wins() {
        let log = config::Log {
            level: Some("info,imapferry=debug".into()),
            ..Default::default()
        };
        assert_eq!(filter(&log).unwrap().to_string(), "imapferry=debug,info");
        let bad = config::Log {
            level: Some("imapferry=loud".into()),
            ..Default::default()
        };
        assert!(filter(&bad).is_err());
    }
}
