//! What the operator's commands (`proxy`, `status`, `retire`, `sweep`, `accounts`, `verify`,
//! `reconcile`) share: their exit codes, the early end of a command with its message
//! ([`Exit`]), and opening the configuration, an async runtime and the state store.

use std::cell::RefCell;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::runtime::Runtime;
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;

pub(super) use super::report::code::{EX_NOINPUT, EX_OK, EX_SOFTWARE, EX_USAGE};
use crate::config::{self, Config};
use crate::store::{self, Location, Store, StoreError};

/// Done, but not what was asked: a retire refused, differences found, an account that could not
/// be reconciled, import lines refused, accounts a `sweep --once` left unsynced.
pub(super) const EX_NOT_DONE: i32 = 1;
/// The output could not be written (sysexits EX_IOERR).
pub(super) const EX_IOERR: i32 = 74;
/// The configuration does not load, or does not fit the command (sysexits EX_CONFIG).
pub(super) const EX_CONFIG: i32 = 78;

/// A command ending early with this exit code; its message is already on stderr.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Exit(pub(super) i32);

/// Says `message` on stderr (as `imapferry: message`) and ends with `code`.
pub(super) fn fail(code: i32, message: impl Display) -> Exit {
    eprintln!("imapferry: {message}");
    Exit(code)
}

/// The exit code of a command's outcome.
pub(super) fn exit_code(outcome: Result<i32, Exit>) -> i32 {
    outcome.unwrap_or_else(|Exit(code)| code)
}

/// Prints `value` as one line of JSON.
pub(super) fn print_json_line(value: &impl serde::Serialize) -> Result<(), Exit> {
    let line = serde_json::to_string(value)
        .map_err(|e| fail(EX_SOFTWARE, format!("cannot write JSON: {e}")))?;
    println!("{line}");
    Ok(())
}

/// Loads and validates the configuration file; EX_CONFIG when it does not.
pub(super) fn load_config(file: &Path) -> Result<Config, Exit> {
    config::load(file).map_err(|e| fail(EX_CONFIG, e))
}

/// The multi-threaded runtime a command's async work runs on.
pub(super) fn runtime() -> Result<Runtime, Exit> {
    build(&mut tokio::runtime::Builder::new_multi_thread())
}

thread_local! {
    /// A runtime thread's logger for its life (see [`runtime_logging_to`]).
    static THREAD_LOG: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// [`runtime`] whose every thread (workers and the blocking pool) logs through `dispatch`: what
/// a spawned task or a blocking closure logs goes where the configuration says, as the rest
/// does, not to the process's default logger (`RUST_LOG`, stderr).
pub(super) fn runtime_logging_to(dispatch: &Dispatch) -> Result<Runtime, Exit> {
    let dispatch = dispatch.clone();
    build(
        tokio::runtime::Builder::new_multi_thread()
            .on_thread_start(move || {
                THREAD_LOG.set(Some(tracing::dispatcher::set_default(&dispatch)));
            })
            .on_thread_stop(|| THREAD_LOG.set(None)),
    )
}

fn build(builder: &mut tokio::runtime::Builder) -> Result<Runtime, Exit> {
    builder
        .enable_all()
        .build()
        .map_err(|e| fail(EX_SOFTWARE, format!("cannot start the async runtime: {e}")))
}

/// A state store error: EX_SOFTWARE.
pub(super) fn store_failed(e: StoreError) -> Exit {
    fail(EX_SOFTWARE, e)
}

/// The store `config`'s `[state]` names, as a location.
fn state_location(config: &Config) -> Result<Location, Exit> {
    config.state.location().map_err(|e| fail(EX_CONFIG, e))
}

/// Opens `config`'s state store, creating it when there is none (a sweep, an import).
pub(super) async fn open_state(config: &Config) -> Result<Arc<dyn Store>, Exit> {
    store::open(&state_location(config)?)
        .await
        .map_err(store_failed)
}

/// Opens `config`'s existing state store (`file` names the configuration in messages) and runs
/// `work` on it, on a current-thread runtime: a missing state store is EX_NOINPUT, and nothing
/// is created.
pub(super) fn with_state<F, Fut>(config: &Config, file: &Path, work: F) -> Result<i32, Exit>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = Result<i32, Exit>>,
{
    let location = state_location(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(EX_SOFTWARE, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let store = match store::open_existing(&location).await {
            Ok(s) => s,
            Err(StoreError::Missing(_)) => {
                let what = match &location {
                    Location::File(path) => format!("no state file at {}", path.display()),
                    Location::Postgres(pg) => format!("no imapferry state in {}", pg.url),
                };
                return Err(fail(
                    EX_NOINPUT,
                    format!(
                        "{what} ([state] of {}): nothing has been migrated with it yet",
                        file.display()
                    ),
                ));
            }
            Err(e) => return Err(store_failed(e)),
        };
        let outcome = work(Arc::clone(&store)).await;
        store.close().await;
        outcome
    })
}

/// `--config FILE` and `--state`, which every operator command takes.
#[derive(clap::Args, Debug)]
pub(super) struct ConfigArg {
    /// The proxy's configuration file; its [state] names the state store
    #[arg(id = "config", long = "config", value_name = "FILE")]
    pub(super) file: PathBuf,
    /// The state store instead of the configuration's [state]: a file, or a postgresql:// URL
    /// (its password from [state] password_file or IMAPFERRY_STATE_PASSWORD)
    #[arg(long = "state", value_name = "PATH|URL")]
    pub(super) state: Option<String>,
}

impl ConfigArg {
    /// Loads and validates the configuration, with `--state` in place of its `[state]`.
    pub(super) fn load(&self) -> Result<Config, Exit> {
        let mut config = load_config(&self.file)?;
        if let Some(state) = &self.state {
            config.state.path = None;
            config.state.url = Some(state.clone());
            if !state.contains("://") {
                config.state.password_file = None;
            }
            state_location(&config)?;
        }
        Ok(config)
    }
}
