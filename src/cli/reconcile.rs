//! `imapferry reconcile USER --config FILE`: brings OLD back in line with NEW for one account
//! whose OLD diverged (a journal entry OLD would never take, a write that could not be
//! journaled), with the configuration's credentials, and lets the account leave `diverged`.

use std::path::Path;
use std::sync::Arc;

use super::report::code;
use super::status::{parse_command_args, with_state};
use crate::config;
use crate::migrate::Migrator;
use crate::ops::{find_user, old_login};
use crate::store::Store;

const EX_CONFIG: i32 = 78;
/// The account could not be reconciled (it says why).
const EX_FAILED: i32 = 1;

pub fn reconcile_help() -> String {
    "usage: imapferry reconcile USER --config FILE [--json]\n\n\
     Brings OLD back in line with NEW for one account of the state file of the proxy\n\
     configuration FILE: journal entries still waiting or parked are applied again; then, for\n\
     every folder pair, OLD takes NEW's flags (NEW wins), loses the messages NEW no longer has,\n\
     and gets back from NEW the linked messages it lost (a folder or a move that never reached\n\
     it); folders deleted on NEW are deleted on OLD. New mail that only NEW has is left alone.\n\
     The account then leaves `diverged` (it is `partial` until its next pass).\n\
     Logins come from FILE only ([old] auth = \"master\" or \"accounts\", [new] master_user or\n\
     the accounts file).\n\n\
     exit code: 0 reconciled; 1 it could not be (the reason is printed); 64 usage error;\n\
     66 unknown USER or no state file; 78 bad configuration.\n"
        .to_string()
}

pub fn reconcile_command(argv: &[String]) -> i32 {
    let usage = |message: &str| {
        eprintln!("imapferry reconcile: {message}\n");
        eprint!("{}", reconcile_help());
        code::EX_USAGE
    };
    let args = match parse_command_args(argv, &["--json"]) {
        Ok(a) if a.help => {
            print!("{}", reconcile_help());
            return code::EX_OK;
        }
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let (Some(user), Some(file)) = (args.user.clone(), args.config.clone()) else {
        return usage("USER and --config FILE are required");
    };
    let config = match config::load(Path::new(&file)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imapferry: {e}");
            return EX_CONFIG;
        }
    };
    let (config_ref, file_ref) = (&config, file.as_str());
    with_state(&config, &file, |store| async move {
        let (config, file) = (config_ref, file_ref);
        let accounts = match store.account_summaries().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("imapferry: {e}");
                return code::EX_SOFTWARE;
            }
        };
        let account = match find_user(&accounts, &user)[..] {
            [] => {
                eprintln!("imapferry: no account '{user}' in the state file");
                return code::EX_NOINPUT;
            }
            [one] => one.clone(),
            _ => {
                eprintln!(
                    "imapferry: '{user}' matches several accounts; name one as OLD user@host"
                );
                return EX_FAILED;
            }
        };
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let store: Arc<dyn Store> = Arc::new(store);
        let migrator = match Migrator::new(config, store, stopped) {
            Ok(Some(m)) => m,
            Ok(None) => {
                eprintln!("imapferry: {file} has no [old] section: there is nothing to reconcile");
                return EX_CONFIG;
            }
            Err(e) => {
                eprintln!("imapferry: {e}");
                return EX_CONFIG;
            }
        };
        let who = format!("{} (OLD {})", account.key.new_user, old_login(&account));
        match migrator.reconcile(account.id, &account.key).await {
            Ok(done) if args.json => match serde_json::to_string(&done) {
                Ok(line) => {
                    println!("{line}");
                    code::EX_OK
                }
                Err(e) => {
                    eprintln!("imapferry: cannot write JSON: {e}");
                    code::EX_SOFTWARE
                }
            },
            Ok(done) => {
                println!(
                    "reconciled {who}: {} journal entries applied, {} flags set from NEW, {} \
                     messages removed from OLD, {} copied back from NEW, {} folders deleted on OLD",
                    done.entries_applied,
                    done.flags_fixed,
                    done.removed_on_old,
                    done.copied_to_old,
                    done.folders_deleted_on_old
                );
                for e in &done.entries_replaced {
                    println!("  not applicable, reconciled from NEW instead: journal entry {e}");
                }
                code::EX_OK
            }
            Err(e) => {
                eprintln!("imapferry: {who} could not be reconciled: {e}");
                EX_FAILED
            }
        }
    })
}
