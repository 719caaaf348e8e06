//! `imapferry reconcile USER --config FILE`: brings OLD back in line with NEW for one account
//! whose OLD diverged (a journal entry OLD would never take, a write that could not be
//! journaled), with the configuration's credentials, and lets the account leave `diverged`.

use std::sync::Arc;

use super::setup::{
    ConfigArg, EX_CONFIG, EX_NOT_DONE, EX_OK, Exit, fail, print_json_line, store_failed, with_state,
};
use super::status::no_account;
use crate::migrate::Migrator;
use crate::ops::{find_user, old_login};
use crate::store::Store;

const ABOUT: &str = "Brings OLD back in line with NEW for one account of the state file of \
the proxy configuration FILE: journal entries still waiting or parked are applied again; then, \
NEW winning, OLD takes NEW's flags, messages without a link on either side are matched by \
identity key across folders (a lost move becomes a move on OLD), mail only NEW has is appended \
to OLD, OLD loses the messages NEW no longer has and gets back the linked ones it lost, folders \
only NEW has are created on OLD and those deleted on NEW are deleted on OLD. The account then \
leaves `diverged` (it is `partial` until its next pass). \
Logins come from FILE only ([old] auth = \"master\" or \"accounts\", [new] master_user or the \
accounts file).";

const EXIT: &str = "exit code: 0 reconciled; 1 it could not be (the reason is printed); 64 \
usage error; 66 unknown USER or no state file; 78 bad configuration.";

/// Bring OLD back in line with NEW for a diverged account
#[derive(clap::Args, Debug)]
#[command(long_about = ABOUT, after_help = EXIT)]
pub(super) struct ReconcileArgs {
    /// The account: a NEW user name; else an OLD user name; else OLD user@host
    user: String,
    #[command(flatten)]
    config: ConfigArg,
    /// Print what was done as one JSON object
    #[arg(long)]
    json: bool,
}

/// Runs `imapferry reconcile`.
pub(super) fn reconcile_command(args: ReconcileArgs) -> Result<i32, Exit> {
    let ReconcileArgs { user, config, json } = args;
    let loaded = config.load()?;
    let file = &config.file;
    let config = loaded;
    let config_ref = &config;
    with_state(&config, file, |store| async move {
        let config = config_ref;
        let accounts = store.account_summaries().await.map_err(store_failed)?;
        let account = match find_user(&accounts, &user)[..] {
            [] => return Err(no_account(&user)),
            [one] => one.clone(),
            _ => {
                return Err(fail(
                    EX_NOT_DONE,
                    format!("'{user}' matches several accounts; name one as OLD user@host"),
                ));
            }
        };
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let store: Arc<dyn Store> = store;
        let migrator = match Migrator::new(config, store, stopped) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(fail(
                    EX_CONFIG,
                    format!(
                        "{} has no [old] section: there is nothing to reconcile",
                        file.display()
                    ),
                ));
            }
            Err(e) => return Err(fail(EX_CONFIG, e)),
        };
        let who = format!("{} (OLD {})", account.key.new_user, old_login(&account));
        let done = migrator
            .reconcile(account.id, &account.key)
            .await
            .map_err(|e| fail(EX_NOT_DONE, format!("{who} could not be reconciled: {e}")))?;
        if json {
            print_json_line(&done)?;
            return Ok(EX_OK);
        }
        println!(
            "reconciled {who}: {} journal entries applied, {} flags set from NEW, {} \
             messages removed from OLD, {} copied from NEW, {} linked again, {} moved on OLD, \
             {} folders created and {} deleted on OLD",
            done.entries_applied,
            done.flags_fixed,
            done.removed_on_old,
            done.copied_to_old,
            done.relinked,
            done.moved_on_old,
            done.folders_created_on_old,
            done.folders_deleted_on_old
        );
        for e in &done.entries_replaced {
            println!("  not applicable, reconciled from NEW instead: journal entry {e}");
        }
        Ok(EX_OK)
    })
}
