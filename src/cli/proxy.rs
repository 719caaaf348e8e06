//! `imapferry proxy --config FILE` runs the transparent proxy until SIGTERM or Ctrl-C;
//! `imapferry proxy --check-config FILE` only loads and validates the configuration.
//! With `[log] json = true` the proxy logs one JSON object per event to stderr (the filter is
//! `RUST_LOG`, `warn` by default), otherwise the CLI's plain format.

use std::path::Path;

use tracing::Dispatch;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::EnvFilter;

use super::report::code;
use crate::config;
use crate::proxy::server::{self, Listeners};

const USAGE: &str =
    "usage: imapferry proxy --config FILE\n       imapferry proxy --check-config FILE\n";

/// Configuration errors (sysexits EX_CONFIG).
const EX_CONFIG: i32 = 78;

/// Runs the `proxy` subcommand; returns the exit code.
pub fn proxy_command(args: &[String]) -> i32 {
    let (check, file) = match args {
        [flag, file] if flag == "--config" => (false, file),
        [flag, file] if flag == "--check-config" => (true, file),
        [flag] if flag == "--help" || flag == "-h" => {
            print!("{USAGE}");
            return code::EX_OK;
        }
        _ => {
            eprint!("{USAGE}");
            return code::EX_USAGE;
        }
    };
    let config = match config::load(Path::new(file)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imapferry: {e}");
            return EX_CONFIG;
        }
    };
    if check {
        if let Err(e) = server::settings(&config) {
            eprintln!("imapferry: {e}");
            return EX_CONFIG;
        }
        println!("{file}: configuration OK");
        return code::EX_OK;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let rt = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imapferry: cannot start the async runtime: {e}");
            return code::EX_SOFTWARE;
        }
    };
    let dispatch = log_dispatch(config.log.json);
    rt.block_on(async {
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("imapferry: cannot listen: {e}");
                return code::EX_SOFTWARE;
            }
        };
        let serve = server::serve(listeners, &config, shutdown_signal());
        match serve.with_subscriber(dispatch).await {
            Ok(()) => code::EX_OK,
            Err(e) => {
                eprintln!("imapferry: {e}");
                EX_CONFIG
            }
        }
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
