//! The command line: `imapferry sync ARGS...`, or the same binary called `imapsync` (a symlink),
//! which is a drop-in for imapsync's options, exit codes and log lines. `main.rs` only calls
//! [`main_with_args`] and exits with its code.

pub mod args;
pub mod batch;
mod host;
pub mod log;
mod observer;
mod proxy;
mod reconcile;
pub mod report;
mod run;
mod status;
mod sweep;
mod verify;

use std::path::Path;

use tracing_subscriber::EnvFilter;

/// Top-level help (`imapferry --help`).
fn top_help() -> String {
    format!(
        "imapferry {} moves mailboxes from an OLD IMAP server to a NEW one.\n\n\
         usage: imapferry <command> [options]\n\n\
         commands:\n  \
         sync      copy one account, imapsync-compatible options (see `imapferry sync --help`)\n  \
         proxy     run the transparent IMAP proxy: `proxy --config FILE` or `proxy --check-config FILE`\n  \
         batch     copy the accounts of an imapsync loop file (host1;user1;password1;host2;user2;password2;extra;),\n            \
         one child sync each, --jobs N at a time; exit 0 if all succeeded, 1 otherwise (see `imapferry batch --help`)\n  \
         status    migration progress from the proxy's state file: `status --config FILE [--json] [USER]`\n  \
         retire    end OLD access for a synced account: `retire USER --config FILE [--force]`\n  \
         reconcile bring OLD back in line with NEW for a diverged account: `reconcile USER --config FILE`\n  \
         sweep     bring accounts nobody opens up to date in the background: `sweep --config FILE [--once]`\n  \
         accounts  `accounts import FILE --config CONF`: record accounts (loop file or logins) as pending\n  \
         verify    compare OLD and NEW per folder (counts, sizes, missing/extra messages, flags), read-only:\n            \
         `verify USER --config FILE` or `verify --all --config FILE` [--json]; exit 0 if equal, 1 otherwise\n  \
         help      this help\n  \
         version   print the version\n\n\
         Called as `imapsync` (e.g. through a symlink), the binary takes imapsync's options directly.\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// True when the program's file name is `imapsync`, so every argument is a sync argument.
fn invoked_as_imapsync(program: &str) -> bool {
    Path::new(program)
        .file_stem()
        .is_some_and(|s| s == "imapsync")
}

/// Logs of the library go to stderr at warn level unless `RUST_LOG` says otherwise; colours
/// only when stderr is a terminal (a file or a pipe gets plain text).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(stderr_is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Whether log lines on stderr may carry colour escapes.
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Runs the program with its full argument vector (program name first); returns the exit code.
pub fn main_with_args(argv: Vec<String>) -> i32 {
    init_tracing();
    let program = argv
        .first()
        .cloned()
        .unwrap_or_else(|| "imapferry".to_string());
    let rest = argv.get(1..).unwrap_or_default();
    if invoked_as_imapsync(&program) {
        return run::sync_command(&program, rest);
    }
    match rest.first().map(String::as_str) {
        Some("sync") => run::sync_command(&format!("{program} sync"), &rest[1..]),
        Some("batch") => batch::batch_command(&format!("{program} batch"), &rest[1..]),
        Some("proxy") => proxy::proxy_command(&rest[1..]),
        Some("status") => status::status_command(&rest[1..]),
        Some("retire") => status::retire_command(&rest[1..]),
        Some("sweep") => sweep::sweep_command(&rest[1..]),
        Some("accounts") => sweep::accounts_command(&rest[1..]),
        Some("verify") => verify::verify_command(&rest[1..]),
        Some("reconcile") => reconcile::reconcile_command(&rest[1..]),
        Some("help" | "--help" | "-h") => {
            print!("{}", top_help());
            report::code::EX_OK
        }
        Some("version" | "--version" | "-V") => {
            println!("imapferry {}", env!("CARGO_PKG_VERSION"));
            report::code::EX_OK
        }
        None => {
            eprint!("{}", top_help());
            report::code::EX_USAGE
        }
        Some(other) => {
            eprintln!("imapferry: unknown command '{other}'\n");
            eprint!("{}", top_help());
            report::code::EX_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names() {
        assert!(invoked_as_imapsync("imapsync"));
        assert!(invoked_as_imapsync("/usr/local/bin/imapsync"));
        assert!(!invoked_as_imapsync("/usr/bin/imapferry"));
        assert!(!invoked_as_imapsync("imapsync2"));
    }

    #[test]
    fn dispatch_without_servers() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(main_with_args(argv(&["imapferry", "--help"])), 0);
        assert_eq!(main_with_args(argv(&["imapferry"])), 64);
        assert_eq!(main_with_args(argv(&["imapferry", "frob"])), 64);
        assert_eq!(
            main_with_args(argv(&["imapferry", "sync", "--pipemess"])),
            64
        );
        assert_eq!(main_with_args(argv(&["/x/imapsync", "--frobnicate"])), 64);
        assert_eq!(main_with_args(argv(&["imapferry", "sync", "--help"])), 0);
        assert_eq!(main_with_args(argv(&["imapferry", "proxy"])), 64);
        assert_eq!(main_with_args(argv(&["imapferry", "status"])), 64);
        assert_eq!(main_with_args(argv(&["imapferry", "status", "--help"])), 0);
        assert_eq!(main_with_args(argv(&["imapferry", "retire", "--help"])), 0);
        assert_eq!(main_with_args(argv(&["imapferry", "verify", "--help"])), 0);
        assert_eq!(main_with_args(argv(&["imapferry", "verify"])), 64);
        assert_eq!(
            main_with_args(argv(&["imapferry", "reconcile", "--help"])),
            0
        );
        assert_eq!(main_with_args(argv(&["imapferry", "reconcile"])), 64);
        assert_eq!(
            main_with_args(argv(&[
                "imapferry",
                "proxy",
                "--check-config",
                "/nonexistent"
            ])),
            78
        );
    }
}
