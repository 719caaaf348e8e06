//! `imapferry proxy --config FILE` runs the transparent proxy until SIGTERM or Ctrl-C;
//! `imapferry proxy --check-config FILE` only loads and validates the configuration.
//! With `[log] json = true` the proxy logs one JSON object per event to stderr (the filter is
//! `RUST_LOG`, `warn` by default), otherwise the CLI's plain format.

use std::path::PathBuf;

use tracing::Dispatch;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::EnvFilter;

use super::setup::{EX_CONFIG, EX_OK, EX_SOFTWARE, EX_USAGE, Exit, fail, load_config, runtime};
use crate::proxy::server::{self, Listeners};

/// Run the transparent IMAP proxy until SIGTERM or Ctrl-C
#[derive(clap::Args)]
#[command(
    long_about = "Runs the transparent IMAP proxy until SIGTERM or Ctrl-C, or only loads and \
                  validates its configuration.",
    after_help = "exit code: 0 stopped by a signal, or the configuration is valid; 64 usage \
                  error; 70 the proxy cannot listen; 78 bad configuration."
)]
#[group(id = "file", required = true, multiple = false)]
pub(super) struct ProxyArgs {
    /// Run with the configuration FILE
    #[arg(long, value_name = "FILE", group = "file")]
    config: Option<PathBuf>,
    /// Only load and validate the configuration FILE
    #[arg(long, value_name = "FILE", group = "file")]
    check_config: Option<PathBuf>,
}

/// Runs `imapferry proxy`.
pub(super) fn proxy_command(args: ProxyArgs) -> Result<i32, Exit> {
    let (check, file) = match (args.config, args.check_config) {
        (Some(file), None) => (false, file),
        (None, Some(file)) => (true, file),
        _ => return Err(Exit(EX_USAGE)), // clap requires exactly one of them
    };
    let config = load_config(&file)?;
    if check {
        server::settings(&config).map_err(|e| fail(EX_CONFIG, e))?;
        println!("{}: configuration OK", file.display());
        return Ok(EX_OK);
    }
    let rt = runtime()?;
    let dispatch = log_dispatch(config.log.json);
    rt.block_on(async {
        let listeners = Listeners::bind(&config)
            .await
            .map_err(|e| fail(EX_SOFTWARE, format!("cannot listen: {e}")))?;
        let serve = server::serve(listeners, &config, shutdown_signal());
        serve
            .with_subscriber(dispatch)
            .await
            .map_err(|e| fail(EX_CONFIG, e))?;
        Ok(EX_OK)
    })
}

/// The dispatcher the proxy logs through. The CLI normally installed the plain global subscriber
/// already (`try_init` keeps the first one), so JSON logs are a dispatcher scoped to the proxy's
/// future; the server passes it on to every connection task.
pub(super) fn log_dispatch(json: bool) -> Dispatch {
    if !json {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(env_filter())
            .with_ansi(super::stderr_is_terminal())
            .with_writer(std::io::stderr)
            .try_init();
        return tracing::dispatcher::get_default(Dispatch::clone);
    }
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
        .with_env_filter(env_filter())
        .with_writer(std::io::stderr)
        .finish();
    Dispatch::new(subscriber)
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))
}

/// Completes on SIGTERM or Ctrl-C.
pub(super) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
