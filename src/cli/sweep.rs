//! `imapferry sweep` (the background completion, standalone) and `imapferry accounts import`
//! (accounts the proxy has never seen, from an imapsync loop file or a list of logins).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::instrument::WithSubscriber;

use super::proxy::{log_dispatch, shutdown_signal};
use super::report::code;
use crate::config::{self, Config};
use crate::migrate::{Credentials, Migrator};
use crate::ops::{ImportAction, import_action, import_key};
use crate::store::{AccountState, SqliteStore, Store};
use crate::sweep::{self, Control, Mode};

const EX_CONFIG: i32 = 78;

const SWEEP_USAGE: &str = "usage: imapferry sweep --config FILE [--once]\n\n\
    Brings every imported or known account up to date from OLD in the background: pending\n\
    accounts first, then partial ones; synced accounts are looked at again after\n\
    [sweep] revisit_secs. Runs until SIGTERM, or with --once until no pending or partial\n\
    account is left to try (exit 0 when all are synced, 1 otherwise).\n";

const IMPORT_USAGE: &str = "usage: imapferry accounts import FILE --config CONF\n\n\
    FILE is an imapsync loop file (host1;user1;password1;host2;user2;password2;extra;) or a list\n\
    of logins, one per line (OLD reached with old.auth = \"master\"). Accounts are recorded as\n\
    pending; re-importing changes nothing already there (a changed OLD user or host for the same\n\
    NEW login is updated). Passwords are never stored: the sweeper takes them from the\n\
    configuration (master users, or the old.accounts file).\n";

fn load(file: &str) -> Result<Config, i32> {
    config::load(Path::new(file)).map_err(|e| {
        eprintln!("imapferry: {e}");
        EX_CONFIG
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("imapferry: cannot start the async runtime: {e}");
            code::EX_SOFTWARE
        })
}

pub fn sweep_command(args: &[String]) -> i32 {
    let mut file = None;
    let mut once = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => file = it.next(),
            "--once" => once = true,
            "--help" | "-h" => {
                print!("{SWEEP_USAGE}");
                return code::EX_OK;
            }
            _ => {
                eprint!("{SWEEP_USAGE}");
                return code::EX_USAGE;
            }
        }
    }
    let Some(file) = file else {
        eprint!("{SWEEP_USAGE}");
        return code::EX_USAGE;
    };
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let dispatch = log_dispatch(config.log.json);
    rt.block_on(
        async {
            let (stop_tx, stop_rx) = watch::channel(false);
            let store = match SqliteStore::open(&config.state.path).await {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    eprintln!("imapferry: {e}");
                    return code::EX_SOFTWARE;
                }
            };
            let migrator = match Migrator::new(&config, store.clone(), stop_rx.clone()) {
                Ok(Some(m)) => Arc::new(m),
                Ok(None) => {
                    eprintln!("imapferry: sweeping needs an [old] section");
                    return EX_CONFIG;
                }
                Err(e) => {
                    eprintln!("imapferry: {e}");
                    return EX_CONFIG;
                }
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
            let accounts = store.account_summaries().await.unwrap_or_default();
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
            if done { code::EX_OK } else { 1 }
        }
        .with_subscriber(dispatch),
    )
}

pub fn accounts_command(args: &[String]) -> i32 {
    let (file, conf) = match args {
        [sub, file, flag, conf] if sub == "import" && flag == "--config" => (file, conf),
        [sub, flag, conf, file] if sub == "import" && flag == "--config" => (file, conf),
        [flag] if flag == "--help" || flag == "-h" => {
            print!("{IMPORT_USAGE}");
            return code::EX_OK;
        }
        _ => {
            eprint!("{IMPORT_USAGE}");
            return code::EX_USAGE;
        }
    };
    let config = match load(conf) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (creds, auth) = match (Credentials::from_config(&config), &config.old) {
        (Ok(Some(c)), Some(old)) => (c, old.auth),
        (Err(e), _) => {
            eprintln!("imapferry: {e}");
            return EX_CONFIG;
        }
        _ => {
            eprintln!("imapferry: importing accounts needs an [old] section");
            return EX_CONFIG;
        }
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("imapferry: cannot read {file}: {e}");
            return code::EX_NOINPUT;
        }
    };
    let mut keys = Vec::new();
    let mut bad = 0;
    for (i, line) in text.lines().enumerate() {
        match import_key(line, i + 1, &creds, auth) {
            Ok(Some(k)) => keys.push(k),
            Ok(None) => {}
            Err(e) => {
                eprintln!("imapferry: {file}: {e}");
                bad += 1;
            }
        }
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let store = match SqliteStore::open(&config.state.path).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("imapferry: {e}");
                return code::EX_SOFTWARE;
            }
        };
        let existing = match store.account_summaries().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("imapferry: {e}");
                return code::EX_SOFTWARE;
            }
        };
        let (mut added, mut updated, mut unchanged) = (0, 0, 0);
        for key in keys {
            let result = match import_action(&existing, &key) {
                ImportAction::Unchanged => {
                    unchanged += 1;
                    Ok(())
                }
                ImportAction::UpdateOld { id } => {
                    updated += 1;
                    store
                        .set_account_old(id, &key.old_host, &key.old_user)
                        .await
                }
                ImportAction::Add => {
                    added += 1;
                    store.account(&key).await.map(|_| ())
                }
            };
            if let Err(e) = result {
                eprintln!("imapferry: {e}");
                return code::EX_SOFTWARE;
            }
        }
        store.close().await;
        println!(
            "imported: {added} added, {updated} updated, {unchanged} unchanged, {bad} lines refused"
        );
        if bad > 0 { 1 } else { code::EX_OK }
    })
}
