//! `imapferry generate completions DIR` and `imapferry generate man DIR` (hidden; the package
//! build runs them): shell completions (bash, zsh, fish) from the clap definitions, and a man page
//! per command: clap's for the operator commands, and for `sync` and `batch`, whose options
//! imapsync's parser owns, their `--help` text as the page's description.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use super::setup::{EX_IOERR, EX_OK, Exit, fail};

/// Write shell completions or man pages (for packaging)
#[derive(clap::Args)]
pub(super) struct GenerateArgs {
    /// What to write
    what: What,
    /// The directory to write into (created if missing)
    dir: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum What {
    /// imapferry.bash, _imapferry (zsh), imapferry.fish
    Completions,
    /// imapferry.1, imapferry-proxy.1, imapferry-accounts-import.1, ...
    Man,
}

/// The shells completions are written for, and their file names.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "imapferry.bash"),
    (Shell::Zsh, "_imapferry"),
    (Shell::Fish, "imapferry.fish"),
];

/// Runs `imapferry generate`; prints each file written.
pub(super) fn generate_command(args: GenerateArgs) -> Result<i32, Exit> {
    let files = match args.what {
        What::Completions => completions(),
        What::Man => man_pages().map_err(|e| fail(EX_IOERR, format!("man page: {e}")))?,
    };
    crate::files::create_dir_all(&args.dir)
        .map_err(|e| fail(EX_IOERR, format!("{}: {e}", args.dir.display())))?;
    for (name, bytes) in files {
        let path = args.dir.join(&name);
        write(&path, &bytes).map_err(|e| fail(EX_IOERR, format!("{}: {e}", path.display())))?;
        println!("{}", path.display());
    }
    Ok(EX_OK)
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = crate::files::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// (file name, contents) of each shell's completion script.
fn completions() -> Vec<(String, Vec<u8>)> {
    SHELLS
        .iter()
        .map(|(shell, name)| {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut visible_cli(), "imapferry", &mut out);
            (name.to_string(), out)
        })
        .collect()
}

/// The command line without its hidden commands (clap_complete would offer them).
fn visible_cli() -> clap::Command {
    let full = super::Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut cli = clap::Command::new("imapferry")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        cli = cli.about(about.clone());
    }
    cli
}

/// (file name, roff) of the program's page and of each visible command's, nested ones too.
fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cli = super::Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut pages = Vec::new();
    page_and_children(&cli, &mut pages)?;
    Ok(pages)
}

fn page_and_children(
    cmd: &clap::Command,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut roff = Vec::new();
    match cmd.get_name() {
        "sync" => imapsync_page(&mut roff, "sync", &super::args::help_text("imapferry sync")),
        "batch" => imapsync_page(
            &mut roff,
            "batch",
            &super::batch::help_text("imapferry batch"),
        ),
        _ => man.render(&mut roff)?,
    }
    pages.push((man.get_filename(), roff));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page_and_children(sub, pages)?;
    }
    Ok(())
}

/// A page for a command with imapsync's parser: its `--help` text, verbatim.
fn imapsync_page(out: &mut Vec<u8>, name: &str, help: &str) {
    let title = format!("IMAPFERRY-{}", name.to_uppercase());
    let version = env!("CARGO_PKG_VERSION");
    let what = match name {
        "sync" => "copy one account, with imapsync's options, exit codes and log lines",
        _ => "copy the accounts of an imapsync loop file",
    };
    let mut text = format!(
        ".TH {title} 1 \"\" \"imapferry {version}\"\n.SH NAME\nimapferry\\-{name} \\- {what}\n\
         .SH DESCRIPTION\n.nf\n"
    );
    for line in help.lines() {
        text.push_str(&roff_line(line));
        text.push('\n');
    }
    text.push_str(".fi\n.SH SEE ALSO\nimapferry(1)\n");
    out.extend_from_slice(text.as_bytes());
}

/// One line of text for a no-fill block: backslashes escaped, and a leading `.` or `'` (a
/// request to roff) neutralised.
fn roff_line(line: &str) -> String {
    let escaped = line.replace('\\', "\\e");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_lines() {
        for (line, roff) in [
            ("plain", "plain"),
            (".starts with a dot", "\\&.starts with a dot"),
            ("'quote", "\\&'quote"),
            ("back\\slash", "back\\eslash"),
            ("  --host1 HOST", "  --host1 HOST"),
        ] {
            assert_eq!(roff_line(line), roff, "{line:?}");
        }
    }

    #[test]
    fn every_visible_command_has_a_page_and_generate_has_none() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "imapferry.1",
            "imapferry-proxy.1",
            "imapferry-sync.1",
            "imapferry-batch.1",
            "imapferry-status.1",
            "imapferry-retire.1",
            "imapferry-verify.1",
            "imapferry-accounts.1",
            "imapferry-accounts-import.1",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let page = |name: &str| {
            let (_, roff) = pages.iter().find(|(n, _)| n == name).unwrap();
            String::from_utf8(roff.clone()).unwrap()
        };
        assert!(page("imapferry-proxy.1").contains("reload"));
        assert!(page("imapferry-sync.1").contains("host1"));

        let scripts = completions();
        let bash = String::from_utf8(scripts[0].1.clone()).unwrap();
        assert!(bash.contains("--check-config") && bash.contains("accounts"));
        assert!(!bash.contains("generate"));
    }
}
