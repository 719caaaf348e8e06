//! `imapferry sync` (and `imapsync`): one account pass in imapsync's order: header, connect or
//! log in on both sides, folder sizes, the pass, sizes again, statistics, error listing and the
//! exit line. Every way out after option parsing goes through [`Run::finish`].

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Local};

use super::args::{self, ArgError, SyncArgs};
use super::host;
use super::log::{self, DEFAULT_LOGDIR, Output};
use super::observer::Printer;
use super::report::{self, DEFAULT_ERRORS_MAX, SideTotals, code};
use crate::imap::{Client, ConnectOptions, ImapError, Security, Side, TlsOptions};
use crate::mapping::{MapperOptions, Selection};
use crate::secret::Secret;
use crate::store::{self, Location, Store};
use crate::sync::identity::IdentityOptions;
use crate::sync::{self, AuthMech, Endpoint, FolderDeletion, MessageSelection, Options};

/// The state file name inside the log directory.
pub const STATE_FILE: &str = "imapferry-state.db";

/// Runs the sync command. `shown` is how the program was invoked ("imapsync", or
/// "imapferry sync"), `argv` the arguments after it.
pub fn sync_command(shown: &str, argv: &[String]) -> i32 {
    let parsed = match args::parse(argv) {
        Ok(a) => a,
        Err(ArgError::Usage(messages)) => {
            for m in messages {
                eprintln!("{m}");
            }
            eprintln!("Run '{shown} --help' for the options imapferry understands.");
            return code::EX_USAGE;
        }
    };
    if parsed.help || argv.is_empty() {
        print!("{}", args::help_text(shown));
        return code::EX_OK;
    }
    if parsed.version {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return code::EX_OK;
    }
    // One thread runs the pass and its sockets: a multi-thread runtime would hand every socket
    // event from the worker that sees it to this thread (block_on), at a cost of about 14 % of
    // the pass's CPU (`examples/bench.rs`). Spool files and SQLite have threads of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run(parsed, shown, argv)),
        Err(e) => {
            eprintln!("imapferry: cannot start the async runtime: {e}");
            code::EX_SOFTWARE
        }
    }
}

async fn run(parsed: SyncArgs, shown: &str, argv: &[String]) -> i32 {
    let started = Local::now();
    let logdir = parsed
        .logdir
        .clone()
        .unwrap_or_else(|| DEFAULT_LOGDIR.to_string());
    let output = if parsed.logging() {
        let user = |n: u8| parsed.side(n).user.clone().unwrap_or_default();
        let path = log::log_path(
            &logdir,
            parsed.logfile.as_deref(),
            &started,
            &user(1),
            &user(2),
        );
        match Output::with_log_file(&path) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("Can not open log file {}: {e}", path.display());
                return code::EXIT_CATCH_ALL;
            }
        }
    } else {
        Output::stdout_only()
    };
    let state = match &parsed.state {
        // A URL that holds a password is refused before it could reach the log.
        Some(text) => match Location::parse(&text.to_string_lossy(), None) {
            Ok(location) => location,
            Err(e) => {
                eprintln!("--state: {e}");
                return code::EXIT_CATCH_ALL;
            }
        },
        None => Location::File(Path::new(&logdir).join(STATE_FILE)),
    };
    let run = Run {
        args: parsed,
        out: Arc::new(output),
        started,
        state,
        errors: Vec::new(),
        silent_errors: 0,
    };
    run.header(shown, argv);
    run.main().await
}

struct Run {
    args: SyncArgs,
    out: Arc<Output>,
    started: DateTime<Local>,
    state: Location,
    /// Errors counted so far, in imapsync's wording.
    errors: Vec<String>,
    /// Errors counted without a text (imapsync's bare `nb_errors++`).
    silent_errors: u64,
}

fn side_of(n: u8) -> Side {
    if n == 1 { Side::Old } else { Side::New }
}

/// First line of a password file (imapsync's `firstline`), byte for byte (a Latin-1 password
/// stays Latin-1), `None` when unreadable.
fn first_line(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

fn seconds(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{secs:.0}")
    } else {
        secs.to_string()
    }
}

impl Run {
    fn say(&self, line: &str) {
        self.out.line(line);
    }

    fn error(&mut self, text: String) {
        self.say(text.trim_end());
        self.errors.push(text);
    }

    fn nb_errors(&self) -> u64 {
        self.errors.len() as u64 + self.silent_errors
    }

    fn errors_max(&self) -> u64 {
        self.args.errorsmax.unwrap_or(DEFAULT_ERRORS_MAX)
    }

    fn host(&self, n: u8) -> String {
        self.args.side(n).host.clone().unwrap_or_default()
    }

    fn user(&self, n: u8) -> String {
        self.args.side(n).user.clone().unwrap_or_default()
    }

    fn port(&self, n: u8) -> u16 {
        let side = self.args.side(n);
        let default = if side.ssl == Some(true) { 993 } else { 143 };
        side.port.filter(|p| *p != 0).unwrap_or(default)
    }

    fn security(&self, n: u8) -> Security {
        let side = self.args.side(n);
        match (side.ssl, side.tls) {
            (Some(true), _) => Security::Tls,
            (_, Some(true)) => Security::StartTls,
            _ => Security::Plain,
        }
    }

    fn connect_options(&self, n: u8) -> ConnectOptions {
        let ssl = &self.args.side(n).sslargs;
        ConnectOptions {
            host: self.host(n),
            port: self.port(n),
            security: self.security(n),
            tls: TlsOptions {
                verify: ssl.verify.unwrap_or(true),
                ca_file: ssl.ca_file.clone(),
            },
            timeout: self.args.timeout(n),
        }
    }

    /// LOGIN unless `--authmechN PLAIN`; a master user (`--authuserN`) always logs in with PLAIN.
    fn auth_mech(&self, n: u8) -> AuthMech {
        let side = self.args.side(n);
        match (&side.authuser, side.authmech) {
            (Some(_), _) => AuthMech::Plain,
            (None, mech) => mech.unwrap_or(AuthMech::Login),
        }
    }

    fn account(&self) -> report::Account {
        report::Account {
            host1: self.host(1),
            port1: self.port(1),
            user1: self.user(1),
            host2: self.host(2),
            port2: self.port(2),
            user2: self.user(2),
        }
    }

    /// Ends the run: optional message, the exit line, the log file line. Returns `exit`.
    fn finish(&self, exit: i32, message: Option<&str>) -> i32 {
        if let Some(m) = message {
            self.say(m);
        }
        self.say(&report::exit_line(
            exit,
            self.nb_errors(),
            self.errors_max(),
            std::process::id(),
        ));
        match self.out.log_path() {
            Some(p) => self.say(&format!(
                "Log file is {} ( to change it, use --logfile filepath ; or use --nolog to turn off logging )",
                p.display()
            )),
            None => self.say("No log file because of option --nolog"),
        }
        exit
    }

    /// imapsync's `exit_most_errors`: the error listing, then the most frequent error's code.
    fn finish_with_errors(&self) -> i32 {
        self.out.lines(&self.listing());
        self.finish(report::exit_code_for(&self.errors), None)
    }

    fn listing(&self) -> Vec<String> {
        let dump = self.args.errorsdump.unwrap_or(true);
        report::error_listing(&self.errors, self.nb_errors(), dump, &self.account())
    }

    fn header(&self, shown: &str, argv: &[String]) {
        let version = env!("CARGO_PKG_VERSION");
        self.say(&format!(
            "Here is imapferry {version} on host {}, a {} system",
            host::hostname(),
            std::env::consts::OS
        ));
        self.say(&format!(
            "Transfer started at {}",
            report::localtimez(&self.started)
        ));
        self.say(&format!(
            "PID is {} my PPID is {}",
            std::process::id(),
            std::os::unix::process::parent_id()
        ));
        match self.out.log_path() {
            Some(p) => self.say(&format!(
                "Log file is {} ( to change it, use --logfile path ; or use --nolog to turn off logging )",
                p.display()
            )),
            None => self.say("No log file because of option --nolog"),
        }
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        self.say(&format!("Current directory is {cwd}"));
        self.say(&format!(
            "imapferry {version}, command line compatible with imapsync 2.229"
        ));
        let exe = std::env::current_exe()
            .map(|e| e.display().to_string())
            .unwrap_or_default();
        self.say(&format!("Command line used, run by {exe}:"));
        self.say(&format!(
            "{shown} {}",
            args::masked_command_line(argv, self.args.showpasswords)
        ));
        self.say(&format!(
            "State file is {} ( imapferry remembers there what it copied; change it with --state path )",
            self.state
        ));
    }

    fn describe_tls(&self) {
        for n in [1, 2] {
            let side = self.args.side(n);
            if self.security(n) != Security::Plain {
                let check = match (&side.sslargs.verify, &side.sslargs.ca_file) {
                    (Some(false), _) => format!("is NOT checked (--sslargs{n} SSL_verify_mode=0)"),
                    (_, Some(ca)) => format!("is checked against the CA file {}", ca.display()),
                    _ => "is checked against the system's CAs (imapsync does not check it)"
                        .to_string(),
                };
                self.say(&format!("Host{n}: the server certificate {check}"));
            }
            for kv in &side.sslargs.ignored {
                self.say(&format!(
                    "Host{n}: --sslargs{n} {kv} is ignored by imapferry"
                ));
            }
        }
    }

    fn describe_sides(&self) {
        for n in [1, 2] {
            let mech = if self.auth_mech(n) == AuthMech::Plain {
                "PLAIN"
            } else {
                "LOGIN"
            };
            self.say(&format!(
                "Host{n}: will try to use {mech} authentication on host{n}"
            ));
        }
        for n in [1, 2] {
            self.say(&format!(
                "Host{n}: imap connection timeout is {} seconds",
                seconds(self.args.timeout_secs(n))
            ));
        }
        for n in [1, 2] {
            self.say(&format!(
                "Host{n}: IMAP server [{}] port [{}] user [{}]",
                self.host(n),
                self.port(n),
                self.user(n)
            ));
        }
    }

    async fn main(mut self) -> i32 {
        self.describe_tls();
        if self.args.acts_as_justconnect() {
            return self.justconnect().await;
        }
        self.describe_sides();
        let (old, new) = match (self.endpoint(1), self.endpoint(2)) {
            (Ok(old), Ok(new)) => (old, new),
            (Err(exit), _) | (_, Err(exit)) => return exit,
        };
        if !self.preflight(&old, &new).await {
            return self.finish_with_errors();
        }
        if self.args.justlogin {
            return self.finish(code::EX_OK, Some("Exiting because of --justlogin"));
        }
        let opts = self.options();
        if self.args.justfoldersizes {
            if self.sizes(&old, &new, &opts, None, true).await.is_none() {
                return self.finish_with_errors();
            }
            return self.finish(code::EX_OK, Some("Exiting because of --justfoldersizes"));
        }
        let store = match store::open(&self.state).await {
            Ok(s) => s,
            Err(e) => {
                self.error(format!(
                    "Failure: can not open the state file {}: {e}",
                    self.state
                ));
                return self.finish_with_errors();
            }
        };
        let start = if self.args.foldersizes.unwrap_or(true) {
            self.sizes(&old, &new, &opts, Some(&*store), true).await
        } else {
            None
        };
        self.transfer(&old, &new, &opts, &*store, start).await
    }

    /// `--justconnect`, or credentials incomplete: connect to the hosts given, no login.
    async fn justconnect(&mut self) -> i32 {
        let mut hosts = Vec::new();
        for n in [1, 2] {
            let host = self.host(n);
            if host.is_empty() {
                continue;
            }
            self.say(&format!(
                "Host{n}: will just connect to {host} without login"
            ));
            self.say(&format!(
                "Host{n}: connecting on host{n} [{host}] port [{}]",
                self.port(n)
            ));
            match Client::connect(&self.connect_options(n), side_of(n)).await {
                Ok(client) => {
                    self.say(&format!("Host{n} banner: {}", client.greeting()));
                    let caps: Vec<&str> = client.capabilities().iter().collect();
                    self.say(&format!("Host{n} capability: {}", caps.join(" ")));
                    client.logout().await;
                    hosts.push(host);
                }
                Err(e) => {
                    self.silent_errors += 1;
                    let exit = if matches!(e, ImapError::Tls { .. }) {
                        code::EXIT_TLS_FAILURE
                    } else {
                        code::EXIT_CONNECTION_FAILURE
                    };
                    return self.finish(exit, Some(&e.to_string()));
                }
            }
        }
        self.finish(
            code::EX_OK,
            Some(&format!(
                "Exiting after a justconnect on host(s): {}",
                hosts.join(" ")
            )),
        )
    }

    /// The password of one side: `--passfileN` (unreadable: exit 66), else `IMAPSYNC_PASSWORDN`,
    /// else `--passwordN` (imapsync's precedence). imapsync would prompt on the terminal next.
    fn password(&mut self, n: u8) -> Result<Secret, i32> {
        let side = self.args.side(n).clone();
        if let Some(file) = &side.passfile {
            return first_line(file).map(Secret::from_bytes).ok_or_else(|| {
                self.silent_errors += 1;
                let msg = format!(
                    "Failure: file from parameter --passfile{n} {} does not exist or is not readable",
                    file.display()
                );
                self.finish(code::EX_NOINPUT, Some(&msg))
            });
        }
        if let Some(pw) =
            std::env::var_os(format!("IMAPSYNC_PASSWORD{n}")).filter(|p| !p.is_empty())
        {
            return Ok(Secret::from_bytes(
                std::os::unix::ffi::OsStringExt::into_vec(pw),
            ));
        }
        side.password.ok_or_else(|| {
            self.silent_errors += 1;
            let msg = format!(
                "Failure: no password for user{n}: give --password{n}, --passfile{n} or the environment variable IMAPSYNC_PASSWORD{n}"
            );
            self.finish(code::EX_USAGE, Some(&msg))
        })
    }

    fn endpoint(&mut self, n: u8) -> Result<Endpoint, i32> {
        let password = self.password(n)?;
        Ok(Endpoint {
            connect: self.connect_options(n),
            user: self.user(n),
            password,
            authuser: self.args.side(n).authuser.clone(),
            auth: self.auth_mech(n),
        })
    }

    fn options(&self) -> Options {
        let a = &self.args;
        Options {
            selection: Selection {
                folders: a.folders.clone(),
                include: a.include.clone(),
                exclude: a.exclude.clone(),
            },
            folderrec: a.folderrec.clone(),
            mapping: MapperOptions {
                f1f2: a.f1f2.clone(),
                automap: a.automap,
                subfolder1: a.subfolder1.clone(),
                subfolder2: a.subfolder2.clone(),
                regextrans2: a.regextrans2.clone(),
                ..MapperOptions::default()
            },
            sep1: a.side1.sep,
            sep2: a.side2.sep,
            prefix1: a.side1.prefix.clone(),
            prefix2: a.side2.prefix.clone(),
            dry: a.dry,
            subscribe: a.subscribe.unwrap_or(true),
            delete1: a.delete1,
            expunge1: a.expunge1.unwrap_or(a.delete1),
            delete2: a.delete2,
            // imapsync: --delete2 implies --delete2duplicates unless --syncduplicates or
            // --nodelete2duplicates is given.
            delete2_duplicates: a
                .delete2duplicates
                .unwrap_or(a.delete2 && a.syncduplicates != Some(true)),
            delete2_folders: (a.delete2folders
                || a.delete2foldersonly.is_some()
                || a.delete2foldersbutnot.is_some())
            .then(|| FolderDeletion {
                only: a.delete2foldersonly.clone(),
                but_not: a.delete2foldersbutnot.clone(),
            }),
            // Deleting NEW duplicates while copying OLD ones would churn: with
            // --delete2duplicates, duplicates are not copied unless --syncduplicates says so.
            sync_duplicates: a
                .syncduplicates
                .unwrap_or(!a.delete2duplicates.unwrap_or(a.delete2)),
            add_header: a.addheader,
            identity: IdentityOptions {
                use_headers: if a.useheader.is_empty() {
                    IdentityOptions::default().use_headers
                } else {
                    a.useheader.clone()
                },
                skip_size: a.skipsize.unwrap_or(true),
            },
            subscribe_all: a.subscribeall,
            just_folders: a.justfolders,
            skip_empty_folders: a.skipemptyfolders,
            messages: MessageSelection {
                search: a.search1.clone().or_else(|| a.search.clone()),
                maxage: a.maxage,
                minage: a.minage,
                maxsize: a.maxsize,
                minsize: a.minsize,
            },
            filter_buggy_flags: a.filterbuggyflags,
            regexflag: a.regexflag.clone(),
            resync_flags_host1_wins: a.resyncflags.unwrap_or(false),
            // imapsync: --idatefromheader turns --syncinternaldates off.
            dates: if a.idatefromheader {
                sync::DateSource::Header
            } else if a.syncinternaldates.unwrap_or(true) {
                sync::DateSource::Internal
            } else {
                sync::DateSource::None
            },
            max_bytes_per_second: a.maxbytespersecond.filter(|b| *b > 0),
            max_messages_per_second: a.maxmessagespersecond.filter(|m| *m > 0.0),
            ..Options::default()
        }
    }

    /// Logs in on both sides (both are tried, as imapsync does) and logs out again.
    async fn preflight(&mut self, old: &Endpoint, new: &Endpoint) -> bool {
        let mut ok = true;
        for (n, ep) in [(1u8, old), (2, new)] {
            let (host, port, user) = (&ep.connect.host, ep.connect.port, &ep.user);
            self.say(&format!(
                "Host{n}: connecting and login on host{n} [{host}] port [{port}] with user [{user}]"
            ));
            match sync::login(ep, side_of(n)).await {
                Ok(client) => {
                    let mech = if ep.auth == AuthMech::Plain {
                        "PLAIN"
                    } else {
                        "LOGIN"
                    };
                    self.say(&format!("Host{n} banner: {}", client.greeting()));
                    self.say(&format!(
                        "Host{n}: success login on [{host}] with user [{user}] auth [{mech}]"
                    ));
                    let caps: Vec<&str> = client.capabilities().iter().collect();
                    self.say(&format!(
                        "Host{n} capability once authenticated: {}",
                        caps.join(" ")
                    ));
                    client.logout().await;
                }
                Err(e) => {
                    self.error(e.to_string());
                    ok = false;
                }
            }
        }
        if ok {
            self.say("Host1: state Authenticated");
            self.say("Host2: state Authenticated");
        }
        ok
    }

    /// Folder sizes with imapsync's header and table; a failure is counted, the run goes on.
    async fn sizes(
        &mut self,
        old: &Endpoint,
        new: &Endpoint,
        opts: &Options,
        store: Option<&dyn Store>,
        at_start: bool,
    ) -> Option<(SideTotals, SideTotals)> {
        self.say("");
        if at_start {
            self.say(
                "Folders sizes before the synchronization. It can take some time. Be patient.",
            );
            self.say("You can remove foldersizes listings by using \"--nofoldersizes\" and \"--nofoldersizesatend\"");
            self.say("but then you will also lose the ETA (Estimation Time of Arrival) given after each message copy.");
        } else {
            self.say("Folders sizes after the synchronization.");
            self.say("You can remove this foldersizes listing by using  \"--nofoldersizesatend\"");
        }
        let clock = Instant::now();
        match sync::folder_sizes(old, new, opts, store).await {
            Ok(sizes) => {
                self.out.lines(&report::folder_size_table(
                    &sizes,
                    clock.elapsed().as_secs_f64(),
                ));
                Some(report::size_totals(&sizes))
            }
            Err(e) => {
                self.error(e.to_string());
                let what = if at_start {
                    "ETA and final diff"
                } else {
                    "final differences"
                };
                self.error(format!(
                    "Failure getting foldersizes, {what} will not be displayed"
                ));
                None
            }
        }
    }

    async fn transfer(
        mut self,
        old: &Endpoint,
        new: &Endpoint,
        opts: &Options,
        store: &dyn Store,
        start: Option<(SideTotals, SideTotals)>,
    ) -> i32 {
        let memory_start = host::memory_mib();
        let allowed = self.errors_max().saturating_sub(self.nb_errors());
        let printer = Printer::new(self.out.clone(), allowed, log::interactive());
        let outcome = tokio::select! {
            r = sync::sync_account(store, old, new, opts, &printer) => Some(r),
            () = printer.max_reached() => None,
        };
        printer.finish();
        let report = match outcome {
            None => return self.errors_max_reached(printer.errors()),
            Some(Err(e @ sync::SyncError::Subfolder1Missing(_))) => {
                self.error(e.to_string());
                return self.finish(code::EXIT_SUBFOLDER1_NO_EXISTS, None);
            }
            Some(Err(e)) => {
                self.errors.extend(printer.errors());
                self.error(e.to_string());
                return self.finish_with_errors();
            }
            Some(Ok(report)) => report,
        };
        self.errors.extend(report.errors);
        self.say("++++ End looping on each folder");
        let sizes_at_end = self
            .args
            .foldersizesatend
            .or(self.args.foldersizes)
            .unwrap_or(true);
        let end = if sizes_at_end {
            self.sizes(old, new, opts, Some(store), false).await
        } else {
            None
        };
        let stats = report::stats_block(&report::StatsInput {
            started: self.started,
            ended: Local::now(),
            dry: self.args.dry,
            stats: &report.stats,
            nb_errors: self.nb_errors(),
            start,
            end,
            process: host::process_figures(memory_start),
        });
        self.out.lines(&stats);
        if !self.errors.is_empty() {
            self.out.lines(&self.listing());
        }
        self.finish(report::exit_code_for(&self.errors), None)
    }

    /// imapsync's errors_incr at `--errorsmax`: message, listing, message again, exit.
    fn errors_max_reached(mut self, errors: Vec<String>) -> i32 {
        self.errors.extend(errors);
        let max = self.errors_max();
        let msg = format!(
            "Maximum number of errors {max} reached ( you can change {max} to any value, for example 100 with --errorsmax 100 ). Exiting."
        );
        self.say(&msg);
        self.out.lines(&self.listing());
        if self.args.errorsdump.unwrap_or(true) {
            self.say(&msg);
        }
        self.finish(report::exit_code_for(&self.errors), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_helpers() {
        assert_eq!(seconds(120.0), "120");
        assert_eq!(seconds(2.5), "2.5");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\r\nsecond line\n").unwrap();
        assert_eq!(first_line(&file).as_deref(), Some(&b"s3cret"[..]));
        std::fs::write(&file, "").unwrap();
        assert_eq!(first_line(&file).as_deref(), Some(&b""[..]));
        std::fs::write(&file, b"caf\xe9\n").unwrap();
        assert_eq!(first_line(&file).as_deref(), Some(&b"caf\xe9"[..]));
        assert_eq!(first_line(&dir.path().join("missing")), None);
    }
}
