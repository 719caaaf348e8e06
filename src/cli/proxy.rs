//! `imapferry proxy --config FILE` runs the transparent proxy until SIGTERM or Ctrl-C, reloading
//! its configuration on SIGHUP; `imapferry proxy --check-config FILE` only loads and validates the
//! configuration; `imapferry proxy --reload --config FILE` asks the running proxy to reload,
//! through its admin API (so the answer, reloaded or refused and why, can be printed).
//! Logs: see [`super::logging`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use tracing::instrument::WithSubscriber;

use super::setup::{
    EX_CONFIG, EX_OK, EX_SOFTWARE, EX_USAGE, Exit, fail, load_config, runtime_logging_to,
};
use crate::config::Config;
use crate::proxy::server::{self, Listeners, Reload};

/// sysexits EX_UNAVAILABLE: the running proxy could not be asked.
const EX_UNAVAILABLE: i32 = 69;
/// How long `--reload` waits for the proxy's answer (it reads certificate and accounts files).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Run the transparent IMAP proxy until SIGTERM or Ctrl-C
#[derive(clap::Args)]
#[command(
    long_about = "Runs the transparent IMAP proxy until SIGTERM or Ctrl-C (SIGHUP reloads the \
                  configuration file), only loads and validates its configuration, or asks the \
                  running proxy to reload.",
    after_help = "exit code: 0 stopped by a signal, the configuration is valid, or the proxy \
                  reloaded; 64 usage error; 69 the running proxy cannot be reached (--reload); \
                  70 the proxy cannot listen; 78 bad configuration, or a reload refused."
)]
pub(super) struct ProxyArgs {
    /// Run with the configuration FILE
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "check_config",
        required_unless_present = "check_config"
    )]
    config: Option<PathBuf>,
    /// Only load and validate the configuration FILE
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Ask the proxy running with --config FILE to reload it, through its [admin] API
    #[arg(long, requires = "config", conflicts_with = "check_config")]
    reload: bool,
}

/// Runs `imapferry proxy`.
pub(super) fn proxy_command(args: ProxyArgs) -> Result<i32, Exit> {
    let (check, file) = match (args.config, args.check_config) {
        (Some(file), None) => (false, file),
        (None, Some(file)) => (true, file),
        _ => return Err(Exit(EX_USAGE)), // clap requires exactly one of them
    };
    if args.reload {
        return ask_reload(&file);
    }
    let config = load_config(&file)?;
    if check {
        server::settings(&config).map_err(|e| fail(EX_CONFIG, e))?;
        println!("{}: configuration OK", file.display());
        return Ok(EX_OK);
    }
    let (dispatch, log) = super::logging::dispatch(&config.log)?;
    let rt = runtime_logging_to(&dispatch)?;
    rt.block_on(async {
        let listeners = Listeners::bind(&config)
            .await
            .map_err(|e| fail(EX_SOFTWARE, format!("cannot listen: {e}")))?;
        let reload = Reload {
            file: Some(file.clone()),
            log: Some(log),
        };
        let serve = server::serve_with(listeners, &config, reload, shutdown_signal());
        serve
            .with_subscriber(dispatch)
            .await
            .map_err(|e| fail(EX_CONFIG, e))?;
        Ok(EX_OK)
    })
}

/// `--reload`: `POST /reload` to the admin endpoint `file` names; prints the proxy's answer.
fn ask_reload(file: &std::path::Path) -> Result<i32, Exit> {
    let config = config_for_reload(file)?;
    let (address, request) = reload_request(&config)?;
    let (status, body) = post(address, &request).map_err(|e| {
        fail(
            EX_UNAVAILABLE,
            format!("cannot ask the proxy at {address} to reload: {e}"),
        )
    })?;
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| match v.get("error") {
            Some(e) => e.as_str().map(str::to_string),
            None => v.get("changed").map(|c| format!("reloaded; changed: {c}")),
        })
        .unwrap_or_else(|| body.trim().to_string());
    match status {
        200 => {
            println!("{}: {message}", file.display());
            Ok(EX_OK)
        }
        409 | 422 => Err(fail(EX_CONFIG, format!("reload refused: {message}"))),
        _ => Err(fail(
            EX_UNAVAILABLE,
            format!("the proxy answered {status}: {message}"),
        )),
    }
}

/// The file `--reload` names, loaded: a broken one is reported here and nothing is sent (the
/// running proxy would refuse it with the same words).
fn config_for_reload(file: &std::path::Path) -> Result<Config, Exit> {
    crate::config::load(file).map_err(|e| {
        fail(
            EX_CONFIG,
            format!("{e}\nnothing was sent: the running proxy keeps its configuration"),
        )
    })
}

/// Where the admin endpoint is reached and the request, with the token and the POST header.
fn reload_request(config: &Config) -> Result<(SocketAddr, String), Exit> {
    let Some(admin) = &config.admin else {
        return Err(fail(
            EX_CONFIG,
            "--reload asks the running proxy through its admin API, and the configuration has \
             no [admin] section: send SIGHUP instead (systemctl reload imapferry, or kill -HUP \
             PID); its outcome is logged",
        ));
    };
    let mut address = admin.listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    // No token configured: no header (the admin API then allows loopback without one).
    let authorization = admin
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {}\r\n", t.expose()))
        .unwrap_or_default();
    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: {address}\r\n{authorization}X-Imapferry-Admin: 1\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Ok((address, request))
}

/// Sends one HTTP/1.1 request and reads the answer to the end: (status, body).
fn post(address: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&address, RELOAD_TIMEOUT)?;
    tcp.set_read_timeout(Some(RELOAD_TIMEOUT))?;
    tcp.set_write_timeout(Some(RELOAD_TIMEOUT))?;
    tcp.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
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
