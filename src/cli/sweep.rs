//! `imapferry sweep` (the background completion, standalone) and `imapferry accounts import`
//! (accounts the proxy has never seen, from an imapsync loop file or a list of logins).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use tokio::sync::watch;
use tracing::instrument::WithSubscriber;

use super::proxy::shutdown_signal;
use super::setup::{
    ConfigArg, EX_CONFIG, EX_NOINPUT, EX_NOT_DONE, EX_OK, Exit, fail, open_state, runtime,
    runtime_logging_to, store_failed,
};
use crate::migrate::{Credentials, Migrator};
use crate::ops::{ImportAction, import_action, import_key};
use crate::store::AccountState;
use crate::sweep::{self, Control, Mode};

const SWEEP_ABOUT: &str = "Brings every imported or known account up to date from OLD in the \
background: pending accounts first, then partial ones; synced accounts are looked at again \
after [sweep] revisit_secs. Runs until SIGTERM, or with --once until no pending or partial \
account is left to try.";

const SWEEP_EXIT: &str = "exit code: 0 every account synced (or retired); 1 otherwise; 64 usage \
error; 70 the state file cannot be opened; 78 bad configuration.";

/// Bring accounts nobody opens up to date in the background
#[derive(clap::Args, Debug)]
#[command(long_about = SWEEP_ABOUT, after_help = SWEEP_EXIT)]
pub(super) struct SweepArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Stop when no pending or partial account is left to try
    #[arg(long)]
    once: bool,
}

/// The accounts of the state file
#[derive(clap::Args, Debug)]
pub(super) struct AccountsArgs {
    #[command(subcommand)]
    command: AccountsCommand,
}

const IMPORT_ABOUT: &str = "Records the accounts of ACCOUNTS_FILE as pending in the state file. \
ACCOUNTS_FILE is an imapsync loop file (host1;user1;password1;host2;user2;password2;extra;) or \
a list of logins, one per line (OLD reached with old.auth = \"master\"). Re-importing changes \
nothing already there (a changed OLD user or host for the same NEW login is updated). \
Passwords are never stored: the sweeper takes them from the configuration (master users, or \
the old.accounts file).";

const IMPORT_EXIT: &str = "exit code: 0 every line imported; 1 some lines refused (each is \
named); 64 usage error; 66 ACCOUNTS_FILE cannot be read; 70 the state file cannot be written; \
78 bad configuration.";

#[derive(Subcommand, Debug)]
enum AccountsCommand {
    /// Record accounts (an imapsync loop file or a list of logins) as pending
    #[command(long_about = IMPORT_ABOUT, after_help = IMPORT_EXIT)]
    Import {
        /// An imapsync loop file or a list of logins
        #[arg(value_name = "ACCOUNTS_FILE")]
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs `imapferry sweep`.
pub(super) fn sweep_command(args: SweepArgs) -> Result<i32, Exit> {
    let config = args.config.load()?;
    let once = args.once;
    let (dispatch, _) = super::logging::dispatch(&config.log)?;
    let rt = runtime_logging_to(&dispatch)?;
    rt.block_on(
        async {
            let (stop_tx, stop_rx) = watch::channel(false);
            let store = open_state(&config).await?;
            let migrator = match Migrator::new(&config, store.clone(), stop_rx.clone()) {
                Ok(Some(m)) => Arc::new(m),
                Ok(None) => return Err(fail(EX_CONFIG, "sweeping needs an [old] section")),
                Err(e) => return Err(fail(EX_CONFIG, e)),
            };
            let mode = if once { Mode::Once } else { Mode::Forever };
            let control = Arc::new(Control::new());
            let run = sweep::run(
                Arc::clone(&migrator),
                config.sweep.clone(),
                control.clone(),
                mode,
                stop_rx,
            );
            tokio::select! {
                () = run => {}
                () = shutdown_signal() => {
                    let _ = stop_tx.send(true);
                }
            }
            let stats = control.stats();
            let accounts = store.account_summaries().await.map_err(store_failed)?;
            let count = |s: AccountState| accounts.iter().filter(|a| a.state == s).count();
            println!(
                "swept {} accounts: {} messages, {} bytes copied; accounts synced {}, partial {}, \
                 pending {}, failed {}, retired {}",
                stats.accounts_swept,
                stats.messages_copied,
                stats.bytes_copied,
                count(AccountState::Synced),
                count(AccountState::Partial),
                count(AccountState::Pending),
                count(AccountState::Failed),
                count(AccountState::Retired),
            );
            if let Some(rate) = migrator.sweep_rate() {
                let (messages, bytes, elapsed) = rate.totals();
                let secs = elapsed.as_secs_f64().max(1e-3);
                println!(
                    "average copy rate {:.0} bytes/s, {:.1} messages/s over {secs:.1} s \
                     (ceilings: {} bytes/s, {} messages/s)",
                    bytes as f64 / secs,
                    messages as f64 / secs,
                    config
                        .sweep
                        .max_bytes_per_second
                        .map_or("none".into(), |b| b.to_string()),
                    config
                        .sweep
                        .max_messages_per_second
                        .map_or("none".into(), |m| m.to_string()),
                );
            }
            for a in accounts.iter().filter(|a| a.state == AccountState::Failed) {
                println!(
                    "failed: {}: {}",
                    a.key.new_user,
                    a.reason.as_deref().unwrap_or("")
                );
            }
            let done = accounts
                .iter()
                .all(|a| matches!(a.state, AccountState::Synced | AccountState::Retired));
            Ok(if done { EX_OK } else { EX_NOT_DONE })
        }
        .with_subscriber(dispatch),
    )
}

/// Runs `imapferry accounts`.
pub(super) fn accounts_command(args: AccountsArgs) -> Result<i32, Exit> {
    let AccountsCommand::Import { file, config } = args.command;
    let config = config.load()?;
    let (creds, auth) = match (Credentials::from_config(&config), &config.old) {
        (Ok(Some(c)), Some(old)) => (c, old.auth),
        (Err(e), _) => return Err(fail(EX_CONFIG, e)),
        _ => return Err(fail(EX_CONFIG, "importing accounts needs an [old] section")),
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| fail(EX_NOINPUT, format!("cannot read {}: {e}", file.display())))?;
    let mut keys = Vec::new();
    let mut bad = 0;
    for (i, line) in text.lines().enumerate() {
        match import_key(line, i + 1, &creds, auth) {
            Ok(Some(k)) => keys.push(k),
            Ok(None) => {}
            Err(e) => {
                eprintln!("imapferry: {}: {e}", file.display());
                bad += 1;
            }
        }
    }
    runtime()?.block_on(async {
        let store = open_state(&config).await?;
        let existing = store.account_summaries().await.map_err(store_failed)?;
        let (mut added, mut updated, mut unchanged) = (0, 0, 0);
        for key in keys {
            match import_action(&existing, &key) {
                ImportAction::Unchanged => unchanged += 1,
                ImportAction::UpdateOld { id } => {
                    updated += 1;
                    store
                        .set_account_old(id, &key.old_host, &key.old_user)
                        .await
                        .map_err(store_failed)?;
                }
                ImportAction::Add => {
                    added += 1;
                    store.account(&key).await.map_err(store_failed)?;
                }
            }
        }
        store.close().await;
        println!(
            "imported: {added} added, {updated} updated, {unchanged} unchanged, {bad} lines refused"
        );
        Ok(if bad > 0 { EX_NOT_DONE } else { EX_OK })
    })
}
