//! The command line. `imapferry sync ARGS...`, or the same binary called `imapsync` (a symlink),
//! is a drop-in for imapsync's options, exit codes and log lines, as is `batch` (parsed in
//! `args`); the operator's commands (`proxy`, `status`, ...) are parsed by `clap`. `main.rs` only
//! calls [`main_with_args`] and exits with its code.

pub mod args;
pub mod batch;
mod generate;
mod host;
pub mod log;
mod logging;
mod observer;
mod proxy;
mod reconcile;
pub mod report;
mod run;
mod setup;
mod status;
mod sweep;
mod verify;

use std::path::Path;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use setup::{EX_OK, EX_USAGE, exit_code};

/// imapferry moves mailboxes from an OLD IMAP server to a NEW one.
///
/// Called as `imapsync` (e.g. through a symlink), the binary takes imapsync's options directly.
#[derive(Parser)]
#[command(
    name = "imapferry",
    version,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy one account, imapsync-compatible options (see `imapferry sync --help`)
    #[command(disable_help_flag = true)]
    Sync(Passed),
    /// Copy the accounts of an imapsync loop file, one child sync each, --jobs N at a time (see
    /// `imapferry batch --help`)
    #[command(disable_help_flag = true)]
    Batch(Passed),
    Proxy(proxy::ProxyArgs),
    Status(status::StatusArgs),
    Retire(status::RetireArgs),
    Reconcile(reconcile::ReconcileArgs),
    Sweep(sweep::SweepArgs),
    Accounts(sweep::AccountsArgs),
    Verify(verify::VerifyArgs),
    /// Print the version
    Version,
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// The arguments of a command with imapsync's own parser, passed on as they are.
#[derive(clap::Args)]
struct Passed {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<String>,
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
    if invoked_as_imapsync(&program) {
        return run::sync_command(&program, argv.get(1..).unwrap_or_default());
    }
    let command = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli.command,
        Err(e) => return usage_error(&e),
    };
    match command {
        Command::Sync(Passed { args }) => run::sync_command(&format!("{program} sync"), &args),
        Command::Batch(Passed { args }) => batch::batch_command(&format!("{program} batch"), &args),
        Command::Proxy(args) => exit_code(proxy::proxy_command(args)),
        Command::Status(args) => exit_code(status::status_command(args)),
        Command::Retire(args) => exit_code(status::retire_command(args)),
        Command::Reconcile(args) => exit_code(reconcile::reconcile_command(args)),
        Command::Sweep(args) => exit_code(sweep::sweep_command(args)),
        Command::Accounts(args) => exit_code(sweep::accounts_command(args)),
        Command::Verify(args) => exit_code(verify::verify_command(args)),
        Command::Version => {
            println!("imapferry {}", env!("CARGO_PKG_VERSION"));
            EX_OK
        }
        Command::Generate(args) => exit_code(generate::generate_command(args)),
    }
}

/// Prints clap's help, version or error; a usage error is EX_USAGE (as imapsync's), not clap's 2.
fn usage_error(e: &clap::Error) -> i32 {
    // Nothing more can be said when stdout or stderr cannot be written.
    let _ = e.print();
    if e.use_stderr() { EX_USAGE } else { EX_OK }
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

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dispatch_without_servers() {
        // (argv, exit code)
        let cases: &[(&[&str], i32)] = &[
            (&["imapferry", "--help"], 0),
            (&["imapferry", "help"], 0),
            (&["imapferry", "help", "status"], 0),
            (&["imapferry", "--version"], 0),
            (&["imapferry", "version"], 0),
            (&["imapferry"], 64),
            (&["imapferry", "frob"], 64),
            (&["imapferry", "sync", "--pipemess"], 64),
            (&["/x/imapsync", "--frobnicate"], 64),
            (&["imapferry", "sync", "--help"], 0),
            (&["imapferry", "batch", "--help"], 0),
            (&["imapferry", "proxy"], 64),
            (
                &["imapferry", "proxy", "--config", "a", "--check-config", "a"],
                64,
            ),
            (
                &["imapferry", "proxy", "--check-config", "/nonexistent"],
                78,
            ),
            (&["imapferry", "proxy", "--help"], 0),
            (&["imapferry", "status"], 64),
            (&["imapferry", "status", "--help"], 0),
            (&["imapferry", "status", "-h"], 0),
            (&["imapferry", "status", "--config", "a", "--force"], 64),
            (&["imapferry", "status", "--config=/nonexistent/c.toml"], 78),
            (&["imapferry", "retire", "--help"], 0),
            (&["imapferry", "retire", "--config", "a"], 64),
            (
                &[
                    "imapferry",
                    "retire",
                    "joe",
                    "--config",
                    "/nonexistent/c.toml",
                ],
                78,
            ),
            (&["imapferry", "verify", "--help"], 0),
            (&["imapferry", "verify"], 64),
            (&["imapferry", "verify", "--all"], 64),
            (
                &["imapferry", "verify", "--config", "/nonexistent/c.toml"],
                64,
            ),
            (
                &[
                    "imapferry",
                    "verify",
                    "--all",
                    "--config",
                    "/nonexistent/c.toml",
                ],
                78,
            ),
            (&["imapferry", "reconcile", "--help"], 0),
            (&["imapferry", "reconcile"], 64),
            (&["imapferry", "sweep", "--help"], 0),
            (&["imapferry", "sweep", "--once"], 64),
            (&["imapferry", "accounts", "--help"], 0),
            (&["imapferry", "accounts", "import", "--help"], 0),
            (&["imapferry", "accounts"], 64),
            (&["imapferry", "accounts", "import", "f"], 64),
            (
                &[
                    "imapferry",
                    "accounts",
                    "import",
                    "f",
                    "--config",
                    "/nonexistent/c",
                ],
                78,
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(main_with_args(argv(args)), *expected, "{args:?}");
        }
    }

    /// The operator commands' options: every spelling the tests and the README use parses, and
    /// clap refuses the rest.
    #[test]
    fn operator_arguments() {
        // (argv after `imapferry`, parses)
        let cases: &[(&[&str], bool)] = &[
            (&["status", "--config", "c.toml"], true),
            (&["status", "--config=c.toml", "joe"], true),
            (&["status", "--json", "--config", "c.toml", "joe"], true),
            (&["status", "joe", "--config", "c.toml", "--json"], true),
            (&["status", "joe"], false),
            (&["status", "--config"], false),
            (&["status", "--config="], false),
            (&["status", "--config", "a", "--config", "b"], false),
            (&["status", "--config", "a", "x", "y"], false),
            (&["status", "--frob", "--config", "a"], false),
            (&["retire", "joe", "--config", "c.toml", "--force"], true),
            (&["retire", "joe", "--force", "--config", "c.toml"], true),
            (&["retire", "joe", "--config", "c.toml", "--json"], false),
            (&["retire", "joe", "--config", "c.toml", "--frob"], false),
            (&["verify", "joe", "--config", "c.toml"], true),
            (&["verify", "--all", "--config=c.toml", "--json"], true),
            (&["verify", "--config", "c.toml"], false),
            (&["verify", "joe", "--all", "--config", "c.toml"], false),
            (&["verify", "a", "b", "--config", "c.toml"], false),
            (&["reconcile", "joe", "--config", "c.toml"], true),
            (&["reconcile", "joe", "--config", "c.toml", "--json"], true),
            (&["reconcile", "--config", "c.toml"], false),
            (&["sweep", "--config", "c.toml"], true),
            (&["sweep", "--once", "--config", "c.toml"], true),
            (&["sweep", "--config", "c.toml", "--frob"], false),
            (&["accounts", "import", "f", "--config", "c.toml"], true),
            (&["accounts", "import", "--config", "c.toml", "f"], true),
            (
                &["accounts", "import", "f", "g", "--config", "c.toml"],
                false,
            ),
            (&["accounts", "export", "f", "--config", "c.toml"], false),
            (&["proxy", "--config", "c.toml"], true),
            (&["proxy", "--check-config", "c.toml"], true),
            (&["proxy", "--config", "c.toml", "x"], false),
            (&["proxy", "--reload", "--config", "c.toml"], true),
            (&["proxy", "--config", "c.toml", "--reload"], true),
            (&["proxy", "--reload"], false),
            (&["proxy", "--reload", "--check-config", "c.toml"], false),
        ];
        for (args, parses) in cases {
            let all = [&["imapferry"], *args].concat();
            assert_eq!(Cli::try_parse_from(all).is_ok(), *parses, "{args:?}");
        }
    }

    /// Every `imapferry` command the README's operations sections show (reload, SNI, the
    /// package, the cutover runbook) parses as written (issue 16: the runbook matches the
    /// commands as they exist).
    #[test]
    fn readme_operations_commands_parse() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("### Reloading without dropping sessions")
            .unwrap();
        let end = readme
            .find("## `imapferry sync`: imapsync's command line")
            .unwrap();
        let mut in_block = false;
        let mut seen = Vec::new();
        for line in readme[start..end].lines() {
            if line.starts_with("```") {
                in_block = line == "```sh";
                continue;
            }
            let code = line.split(" # ").next().unwrap_or("");
            // Outside code blocks: the `imapferry ...` spans of the text.
            let spans: Vec<&str> = if in_block {
                vec![code]
            } else {
                line.split('`').skip(1).step_by(2).collect()
            };
            for part in spans.iter().flat_map(|s| s.split(['|', ';', '&'])) {
                let part = part.trim().trim_start_matches("do ").trim();
                let Some(rest) = part.strip_prefix("imapferry ") else {
                    continue;
                };
                let rest = rest.split('>').next().unwrap_or("");
                let mut argv = vec!["imapferry".to_string()];
                argv.extend(rest.split_whitespace().map(|w| match w {
                    "$C" => "c.toml".to_string(),
                    "USER" => "joe".to_string(),
                    "DIR" => "d".to_string(),
                    "FILE" => "c.toml".to_string(),
                    "\"$u\"" => "joe".to_string(),
                    w => w.to_string(),
                }));
                assert!(Cli::try_parse_from(&argv).is_ok(), "README: {part}");
                seen.push(argv[1].clone());
            }
        }
        for command in [
            "proxy",
            "accounts",
            "status",
            "verify",
            "retire",
            "reconcile",
        ] {
            assert!(
                seen.iter().any(|c| c == command),
                "{command} not in {seen:?}"
            );
        }
    }

    /// `sync` and `batch` get their arguments exactly as given, for imapsync's parser.
    #[test]
    fn imapsync_arguments_pass_untouched() {
        for args in [
            &["--host1", "h", "--", "-x", "--help"][..],
            &["-V"],
            &["--version", "--", "--"],
            &[],
        ] {
            for command in ["sync", "batch"] {
                let all = [&["imapferry", command], args].concat();
                let Ok(Cli {
                    command:
                        Command::Sync(Passed { args: got }) | Command::Batch(Passed { args: got }),
                }) = Cli::try_parse_from(&all)
                else {
                    panic!("{all:?} did not parse");
                };
                assert_eq!(got, args, "{all:?}");
            }
        }
    }
}
