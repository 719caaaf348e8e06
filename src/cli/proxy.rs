//! `imapferry proxy --config FILE` runs the transparent proxy until SIGTERM or Ctrl-C;
//! `imapferry proxy --check-config FILE` only loads and validates the configuration.

use std::path::Path;

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
    rt.block_on(async {
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("imapferry: cannot listen: {e}");
                return code::EX_SOFTWARE;
            }
        };
        match server::serve(listeners, &config, shutdown_signal()).await {
            Ok(()) => code::EX_OK,
            Err(e) => {
                eprintln!("imapferry: {e}");
                EX_CONFIG
            }
        }
    })
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
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
