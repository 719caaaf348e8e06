//! imapsync's command line, parsed the Getopt::Long way: `--opt value`, `--opt=value`, `-opt`,
//! names in any case, `--noX`/`--no-X` for switches, repeatable list options. Every option
//! imapferry knows is in [`OPTIONS`], which also writes `--help`.

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use crate::mapping::perl_regex;
use crate::secret::Secret;
use crate::sync::AuthMech;

/// What kind of value an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A switch; `--noX` turns it off (Getopt's `!`).
    Flag,
    Str,
    Int,
    Float,
    /// A string, repeatable; values keep their order.
    List,
    /// `KEY=VALUE`, repeatable (Getopt's `=s%`).
    Map,
}

/// The `--help` sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Connection,
    Tls,
    Folders,
    Run,
    Logging,
    Imapferry,
}

impl Group {
    pub const ALL: [Group; 6] = [
        Group::Connection,
        Group::Tls,
        Group::Folders,
        Group::Run,
        Group::Logging,
        Group::Imapferry,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::Connection => "Connection and authentication (host1 = OLD, host2 = NEW)",
            Group::Tls => "TLS",
            Group::Folders => "Folder selection and mapping",
            Group::Run => "Run control",
            Group::Logging => "Logging",
            Group::Imapferry => "imapferry only",
        }
    }
}

/// One option: its lower-case name, value kind, help section, value placeholder and help line.
/// A help line starting with `*` marks a difference from imapsync.
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub group: Group,
    pub arg: &'static str,
    pub help: &'static str,
}

const fn opt(
    name: &'static str,
    kind: Kind,
    group: Group,
    arg: &'static str,
    help: &'static str,
) -> Spec {
    Spec {
        name,
        kind,
        group,
        arg,
        help,
    }
}

use Group as G;
use Kind as K;

/// Every option imapferry accepts. Anything else is an unknown option (exit 64).
#[rustfmt::skip]
pub const OPTIONS: &[Spec] = &[
    opt("host1", K::Str, G::Connection, "HOST", "OLD server name or address (blanks and '/' are removed)"),
    opt("host2", K::Str, G::Connection, "HOST", "NEW server name or address"),
    opt("port1", K::Int, G::Connection, "PORT", "OLD port (default 993 with --ssl1, else 143)"),
    opt("port2", K::Int, G::Connection, "PORT", "NEW port (default 993 with --ssl2, else 143)"),
    opt("user1", K::Str, G::Connection, "USER", "OLD login"),
    opt("user2", K::Str, G::Connection, "USER", "NEW login"),
    opt("password1", K::Str, G::Connection, "PW", "OLD password (shown as MASKED; env IMAPSYNC_PASSWORD1 overrides it)"),
    opt("password2", K::Str, G::Connection, "PW", "NEW password (shown as MASKED; env IMAPSYNC_PASSWORD2 overrides it)"),
    opt("passfile1", K::Str, G::Connection, "FILE", "read the OLD password from the first line of FILE (unreadable: exit 66)"),
    opt("passfile2", K::Str, G::Connection, "FILE", "read the NEW password from the first line of FILE (unreadable: exit 66)"),
    opt("authuser1", K::Str, G::Connection, "ADMIN", "OLD master/admin login: AUTHENTICATE PLAIN as ADMIN for --user1, with ADMIN's password"),
    opt("authuser2", K::Str, G::Connection, "ADMIN", "NEW master/admin login: AUTHENTICATE PLAIN as ADMIN for --user2"),
    opt("authmech1", K::Str, G::Connection, "MECH", "* LOGIN or PLAIN only (default PLAIN with --authuser1, else LOGIN)"),
    opt("authmech2", K::Str, G::Connection, "MECH", "* LOGIN or PLAIN only (default PLAIN with --authuser2, else LOGIN)"),
    opt("timeout", K::Float, G::Connection, "SECS", "I/O timeout for both sides (default 120, 0 = none)"),
    opt("timeout1", K::Float, G::Connection, "SECS", "I/O timeout on OLD (overrides --timeout)"),
    opt("timeout2", K::Float, G::Connection, "SECS", "I/O timeout on NEW (overrides --timeout)"),
    opt("ssl1", K::Flag, G::Tls, "", "implicit TLS to OLD (port 993 by default)"),
    opt("ssl2", K::Flag, G::Tls, "", "implicit TLS to NEW"),
    opt("tls1", K::Flag, G::Tls, "", "* STARTTLS on OLD (imapferry never switches to STARTTLS on its own)"),
    opt("tls2", K::Flag, G::Tls, "", "* STARTTLS on NEW (imapferry never switches to STARTTLS on its own)"),
    opt("sslargs1", K::Map, G::Tls, "K=V", "* SSL_verify_mode=0 skips the certificate check, SSL_ca_file=FILE trusts a private CA"),
    opt("sslargs2", K::Map, G::Tls, "K=V", "* same for NEW; certificates are VERIFIED by default, unlike imapsync"),
    opt("sslcheck", K::Flag, G::Tls, "", "* accepted and ignored: imapferry does not probe port 993"),
    opt("folder", K::List, G::Folders, "NAME", "sync this OLD folder (repeatable, modified UTF-7 name)"),
    opt("include", K::List, G::Folders, "REGEX", "add the OLD folders matching REGEX (repeatable)"),
    opt("exclude", K::List, G::Folders, "REGEX", "skip the selected folders matching REGEX (repeatable)"),
    opt("folderrec", K::List, G::Folders, "NAME", "sync this OLD folder and every folder below it (repeatable)"),
    opt("f1f2", K::List, G::Folders, "OLD=NEW", "map this OLD folder to exactly this NEW folder (repeatable; no other rule applies)"),
    opt("automap", K::Flag, G::Folders, "", "map special folders (Sent, Trash, Junk, ...) by special-use attributes, then by name"),
    opt("regextrans2", K::List, G::Folders, "S///", "Perl s/// or tr/// applied to NEW names, in order (repeatable; /e refused)"),
    opt("subfolder1", K::Str, G::Folders, "NAME", "sync only this OLD folder and below, as the top of NEW (missing: exit 21)"),
    opt("subfolder2", K::Str, G::Folders, "NAME", "put everything under this NEW folder"),
    opt("sep1", K::Str, G::Folders, "CHAR", "OLD hierarchy separator (default: from NAMESPACE)"),
    opt("sep2", K::Str, G::Folders, "CHAR", "NEW hierarchy separator"),
    opt("prefix1", K::Str, G::Folders, "PREFIX", "OLD personal namespace prefix (default: from NAMESPACE)"),
    opt("prefix2", K::Str, G::Folders, "PREFIX", "NEW personal namespace prefix"),
    opt("subscribe", K::Flag, G::Folders, "", "subscribe on NEW what is subscribed on OLD (default on)"),
    opt("subscribeall", K::Flag, G::Folders, "", "subscribe every synced NEW folder"),
    opt("justfolders", K::Flag, G::Folders, "", "create (and subscribe) the folders on NEW, copy no message"),
    opt("skipemptyfolders", K::Flag, G::Folders, "", "skip OLD folders holding no message (their NEW folder is not created)"),
    opt("search", K::Str, G::Folders, "CRITERIA", "copy only the OLD messages matching this IMAP SEARCH (maxage/minage then ignored)"),
    opt("search1", K::Str, G::Folders, "CRITERIA", "same as --search, for OLD"),
    opt("maxage", K::Float, G::Folders, "DAYS", "copy only messages sent in the last DAYS days (SEARCH SENTSINCE)"),
    opt("minage", K::Float, G::Folders, "DAYS", "copy only messages sent more than DAYS days ago (SEARCH SENTBEFORE)"),
    opt("maxsize", K::Int, G::Folders, "BYTES", "skip messages larger than BYTES (counted as skipped)"),
    opt("minsize", K::Int, G::Folders, "BYTES", "skip messages of BYTES or less (counted as skipped)"),
    opt("filterbuggyflags", K::Flag, G::Folders, "", "drop bogus backslash flags (\\JUNK, \\X-EON-HAS-ATTACHMENT, ...) before NEW sees them"),
    opt("regexflag", K::List, G::Folders, "S///", "Perl s/// applied to the space-separated flag list of each message, in order (repeatable)"),
    opt("resyncflags", K::Flag, G::Folders, "", "* host1 wins: linked NEW messages get OLD's flags again (default off: three-way merge)"),
    opt("syncinternaldates", K::Flag, G::Folders, "", "give copies OLD's INTERNALDATE (default on; --nosyncinternaldates: time of the copy)"),
    opt("idatefromheader", K::Flag, G::Folders, "", "give copies the date of their Date: header (turns --syncinternaldates off)"),
    opt("dry", K::Flag, G::Run, "", "change nothing (servers and state file), only report"),
    opt("delete1", K::Flag, G::Run, "", "delete OLD messages once their copy is on NEW (implies --expunge1)"),
    opt("delete", K::Flag, G::Run, "", "same as --delete1"),
    opt("expunge1", K::Flag, G::Run, "", "expunge what --delete1 marks (default with --delete1; --noexpunge1 only marks)"),
    opt("expungeaftereach", K::Flag, G::Run, "", "* accepted: imapferry expunges OLD once per folder"),
    opt("delete2", K::Flag, G::Run, "", "delete NEW messages without an OLD counterpart (a strict mirror; implies --delete2duplicates)"),
    opt("delete2duplicates", K::Flag, G::Run, "", "delete NEW messages whose identity repeats in a folder (keeps the lowest UID)"),
    opt("delete2folders", K::Flag, G::Run, "", "delete NEW folders that no OLD folder maps to (never INBOX)"),
    opt("delete2foldersonly", K::Str, G::Run, "/REGEX/", "with --delete2folders: only folders matching (value with delimiters)"),
    opt("delete2foldersbutnot", K::Str, G::Run, "/REGEX/", "with --delete2folders: never folders matching (value with delimiters)"),
    opt("syncduplicates", K::Flag, G::Run, "", "* copy OLD messages whose identity repeats (imapferry's default; --nosyncduplicates copies one)"),
    opt("useheader", K::List, G::Run, "HEADER", "identity headers (repeatable; default Message-Id and Received; ALL = whole header)"),
    opt("skipsize", K::Flag, G::Run, "", "leave the size out of the identity key (default on)"),
    opt("addheader", K::Flag, G::Run, "", "add 'Message-Id: <UID@imapsync>' to messages without identifying headers"),
    opt("justconnect", K::Flag, G::Run, "", "connect, print banners and capabilities, exit (implied without host1/host2/user1/user2)"),
    opt("justlogin", K::Flag, G::Run, "", "log in on both sides and exit"),
    opt("justfoldersizes", K::Flag, G::Run, "", "print the folder sizes and exit"),
    opt("foldersizes", K::Flag, G::Run, "", "compute folder sizes before the sync (default on)"),
    opt("foldersizesatend", K::Flag, G::Run, "", "compute folder sizes after the sync (default: as --foldersizes)"),
    opt("errorsmax", K::Int, G::Run, "N", "stop after N errors (default 50)"),
    opt("maxbytespersecond", K::Int, G::Run, "BYTES", "average copy rate ceiling in bytes per second (default 0: none)"),
    opt("maxmessagespersecond", K::Float, G::Run, "N", "average copy rate ceiling in messages per second (default 0: none)"),
    opt("errorsdump", K::Flag, G::Run, "", "list the errors at the end (default on)"),
    opt("showpasswords", K::Flag, G::Run, "", "print passwords instead of MASKED"),
    opt("help", K::Flag, G::Run, "", "this help"),
    opt("version", K::Flag, G::Run, "", "print the version"),
    opt("log", K::Flag, G::Logging, "", "write the log file (default on; --nolog turns it off)"),
    opt("logdir", K::Str, G::Logging, "DIR", "log directory (default LOG_imapsync)"),
    opt("logfile", K::Str, G::Logging, "FILE", "log file name, placed inside the log directory"),
    opt("state", K::Str, G::Imapferry, "FILE", "* state file (default LOG_imapsync/imapferry-state.db, or in --logdir)"),
];

/// Notes printed at the end of `--help`.
pub const DIFFERENCES: &[&str] = &[
    "Where imapferry differs from imapsync (marked * above):",
    "  - TLS certificates are verified (system CAs or --sslargsN SSL_ca_file=FILE); opt out with --sslargsN SSL_verify_mode=0.",
    "  - Flags are merged three ways against the last pass by default; --resyncflags gives imapsync's \"host1 wins\".",
    "  - Exact duplicates are copied too (every OLD message gets its own NEW copy, tracked in the state file).",
    "  - No automatic port-993 probe and no automatic STARTTLS: say --ssl1/--tls1 (and 2) explicitly.",
    "  - Options not listed here are refused (exit 64) rather than silently ignored.",
];

/// An error that ends the run before logging starts.
#[derive(Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Bad command line: exit 64 (EX_USAGE). One message per problem found.
    Usage(Vec<String>),
}

/// TLS settings from `--sslargsN`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslArgs {
    /// `SSL_verify_mode`: 0 turns verification off; any other value keeps it on.
    pub verify: Option<bool>,
    pub ca_file: Option<PathBuf>,
    /// Keys imapferry does not use (e.g. `SSL_version`), reported and ignored.
    pub ignored: Vec<String>,
}

/// One side's options, as given.
#[derive(Clone, Debug, Default)]
pub struct SideArgs {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub passfile: Option<PathBuf>,
    pub authuser: Option<String>,
    pub authmech: Option<AuthMech>,
    pub ssl: Option<bool>,
    pub tls: Option<bool>,
    pub timeout: Option<f64>,
    pub sslargs: SslArgs,
    pub sep: Option<char>,
    pub prefix: Option<String>,
}

/// The parsed command line of `imapferry sync` / `imapsync`.
#[derive(Clone, Debug, Default)]
pub struct SyncArgs {
    pub side1: SideArgs,
    pub side2: SideArgs,
    pub timeout: Option<f64>,
    pub folders: Vec<String>,
    pub include: Vec<Regex>,
    pub exclude: Vec<Regex>,
    pub subscribe: Option<bool>,
    pub folderrec: Vec<String>,
    pub f1f2: Vec<(String, String)>,
    pub automap: bool,
    pub regextrans2: Vec<String>,
    pub subfolder1: Option<String>,
    pub subfolder2: Option<String>,
    pub subscribeall: bool,
    pub justfolders: bool,
    pub skipemptyfolders: bool,
    /// `--search1`, else `--search`.
    pub search1: Option<String>,
    pub search: Option<String>,
    pub maxage: Option<f64>,
    pub minage: Option<f64>,
    pub maxsize: Option<u64>,
    pub minsize: Option<u64>,
    pub dry: bool,
    pub delete1: bool,
    pub expunge1: Option<bool>,
    pub delete2: bool,
    pub delete2duplicates: Option<bool>,
    pub delete2folders: bool,
    pub delete2foldersonly: Option<Regex>,
    pub delete2foldersbutnot: Option<Regex>,
    pub syncduplicates: Option<bool>,
    pub useheader: Vec<String>,
    pub skipsize: Option<bool>,
    pub addheader: bool,
    pub justconnect: bool,
    pub justlogin: bool,
    pub justfoldersizes: bool,
    pub foldersizes: Option<bool>,
    pub foldersizesatend: Option<bool>,
    pub errorsmax: Option<u64>,
    pub errorsdump: Option<bool>,
    pub showpasswords: bool,
    pub help: bool,
    pub version: bool,
    pub log: Option<bool>,
    pub logdir: Option<String>,
    pub logfile: Option<String>,
    pub state: Option<PathBuf>,
    pub filterbuggyflags: bool,
    pub regexflag: Vec<String>,
    /// `--resyncflags` (imapsync's default is on; imapferry's off: the three-way merge).
    pub resyncflags: Option<bool>,
    pub syncinternaldates: Option<bool>,
    pub idatefromheader: bool,
    pub maxbytespersecond: Option<u64>,
    pub maxmessagespersecond: Option<f64>,
}

/// imapsync's default timeout.
pub const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
/// What "no timeout" (`--timeout 0`) becomes: long enough, and safe to add to an `Instant`.
const NO_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 86_400);

impl SyncArgs {
    pub fn side(&self, n: u8) -> &SideArgs {
        if n == 1 { &self.side1 } else { &self.side2 }
    }

    /// The I/O timeout of one side: `--timeoutN`, else `--timeout`, else 120 s; 0 means none.
    pub fn timeout_secs(&self, n: u8) -> f64 {
        self.side(n)
            .timeout
            .or(self.timeout)
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
    }

    pub fn timeout(&self, n: u8) -> Duration {
        let secs = self.timeout_secs(n);
        if secs <= 0.0 {
            NO_TIMEOUT
        } else {
            Duration::try_from_secs_f64(secs).unwrap_or(NO_TIMEOUT)
        }
    }

    /// Whether logging to a file is on (`--nolog` turns it off).
    pub fn logging(&self) -> bool {
        self.log.unwrap_or(true)
    }

    /// True when credentials are incomplete, which makes the run act as `--justconnect`.
    pub fn acts_as_justconnect(&self) -> bool {
        self.justconnect
            || [
                &self.side1.host,
                &self.side2.host,
                &self.side1.user,
                &self.side2.user,
            ]
            .iter()
            .any(|v| v.as_deref().is_none_or(str::is_empty))
    }
}

/// A value as found on the command line.
enum Value {
    Bool(bool),
    Text(String),
}

/// Finds the option named `name` (already lower-cased); `--noX`/`--no-X` negate switches.
fn lookup(name: &str) -> Option<(&'static Spec, bool)> {
    if let Some(spec) = OPTIONS.iter().find(|s| s.name == name) {
        return Some((spec, true));
    }
    let base = name
        .strip_prefix("no-")
        .or_else(|| name.strip_prefix("no"))?;
    OPTIONS
        .iter()
        .find(|s| s.name == base && s.kind == Kind::Flag)
        .map(|s| (s, false))
}

/// Splits `--name=value` / `-name` into the lower-case name and the inline value.
fn split_option(arg: &str) -> Option<(String, Option<String>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
        None => (body.to_ascii_lowercase(), None),
    })
}

/// Checks a value against its option's kind (Getopt's wording for bad numbers).
fn check_kind(spec: &Spec, value: &str) -> Result<(), String> {
    let ok = match spec.kind {
        Kind::Int => value.parse::<i64>().is_ok(),
        Kind::Float => value.parse::<f64>().is_ok_and(f64::is_finite),
        Kind::Map => value.contains('='),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(match spec.kind {
        Kind::Int => format!(
            "Value \"{value}\" invalid for option {} (number expected)",
            spec.name
        ),
        Kind::Float => format!(
            "Value \"{value}\" invalid for option {} (real number expected)",
            spec.name
        ),
        _ => format!("Option {}, key \"{value}\", requires a value", spec.name),
    })
}

/// Parses the arguments after the program name (or after `sync`).
pub fn parse(argv: &[String]) -> Result<SyncArgs, ArgError> {
    let mut errors = Vec::new();
    let mut extra = Vec::new();
    let mut values: Vec<(&'static Spec, Value)> = Vec::new();
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            extra.extend(args.by_ref().cloned());
            break;
        }
        let Some((name, inline)) = split_option(arg) else {
            extra.push(arg.clone());
            continue;
        };
        let Some((spec, positive)) = lookup(&name) else {
            errors.push(format!("Unknown option: {name}"));
            continue;
        };
        if spec.kind == Kind::Flag {
            match inline {
                Some(_) => errors.push(format!("Option {name} does not take an argument")),
                None => values.push((spec, Value::Bool(positive))),
            }
            continue;
        }
        let Some(value) = inline.or_else(|| args.next().cloned()) else {
            errors.push(format!("Option {name} requires an argument"));
            continue;
        };
        match check_kind(spec, &value) {
            Ok(()) => values.push((spec, Value::Text(value))),
            Err(e) => errors.push(e),
        }
    }
    if !extra.is_empty() {
        errors.push(format!(
            "Found {} extra arguments : [{}]\nIt usually means a quoting issue in the command line or some misspelling options.",
            extra.len(),
            extra.join(" ")
        ));
    }
    let mut parsed = SyncArgs::default();
    for (spec, value) in values {
        if let Err(e) = apply(&mut parsed, spec, value) {
            errors.push(e);
        }
    }
    if parsed.delete1 && parsed.delete2 {
        errors.push("Do not use --delete1 and --delete2 together: it would delete everything on both sides.".into());
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(ArgError::Usage(errors))
    }
}

/// imapsync's `sanitize_host`: no blanks, no slashes.
fn sanitize_host(host: &str) -> String {
    host.chars()
        .filter(|c| !c.is_whitespace() && *c != '/')
        .collect()
}

fn parse_port(name: &str, v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| format!("Value \"{v}\" invalid for option {name} (port number expected)"))
}

fn parse_authmech(name: &str, v: &str) -> Result<AuthMech, String> {
    match v.trim().to_ascii_uppercase().as_str() {
        "LOGIN" => Ok(AuthMech::Login),
        "PLAIN" => Ok(AuthMech::Plain),
        other => Err(format!(
            "--{name} {other}: imapferry supports only LOGIN and PLAIN"
        )),
    }
}

fn parse_sep(name: &str, v: &str) -> Result<char, String> {
    let mut chars = v.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(format!("--{name} {v}: a separator is a single character")),
    }
}

/// A `--regextrans2` value must compile (imapsync exits 64 otherwise). Its `$h1_prefix`-style
/// variables are filled in per server later; placeholders stand in for them here.
fn check_regextrans2(v: &str) -> Result<(), String> {
    let mut probe = v.to_string();
    for var in ["h1_prefix", "h2_prefix", "h1_sep", "h2_sep"] {
        probe = probe
            .replace(&format!("${{{var}}}"), "P")
            .replace(&format!("${var}"), "P");
    }
    crate::mapping::PerlSubst::parse(&probe)
        .map(|_| ())
        .map_err(|e| format!("--regextrans2 '{v}': {e}"))
}

/// imapsync's `--delete2foldersonly` / `--delete2foldersbutnot` values are Perl match
/// expressions with their delimiters (`/^Junk$/`, `m{x}i`); the regex between them is used.
fn delimited_regex(name: &str, v: &str) -> Result<Regex, String> {
    let bad = || format!("--{name} {v}: expected a regex between delimiters, e.g. /^Junk$/");
    let body = v.trim().strip_prefix('m').unwrap_or(v.trim());
    let open = body.chars().next().ok_or_else(bad)?;
    let close = match open {
        '{' => '}',
        '(' => ')',
        '[' => ']',
        '<' => '>',
        c if !c.is_alphanumeric() && !c.is_whitespace() => c,
        _ => return Err(bad()),
    };
    let end = body.rfind(close).filter(|&i| i > 0).ok_or_else(bad)?;
    let flags = &body[end + close.len_utf8()..];
    if !flags.chars().all(|c| "imsx".contains(c)) {
        return Err(bad());
    }
    let inline = if flags.is_empty() {
        String::new()
    } else {
        format!("(?{flags})")
    };
    parse_regex(name, &format!("{inline}{}", &body[open.len_utf8()..end]))
}

fn parse_days(name: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(d) if d >= 0.0 && d.is_finite() => Ok(d),
        _ => Err(format!("--{name} {v}: a number of days is expected")),
    }
}

fn parse_bytes(name: &str, v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("--{name} {v}: a size in bytes is expected"))
}

fn parse_regex(name: &str, v: &str) -> Result<Regex, String> {
    perl_regex(v).map_err(|e| format!("--{name} '{v}' is not a usable regex: {e}"))
}

/// Records one `--sslargsN KEY=VALUE`.
fn apply_sslarg(ssl: &mut SslArgs, kv: &str) {
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    match key {
        "SSL_verify_mode" => ssl.verify = Some(value.trim() != "0"),
        "SSL_ca_file" => ssl.ca_file = Some(PathBuf::from(value)),
        _ => ssl.ignored.push(kv.to_string()),
    }
}

/// The side an option name ending in 1 or 2 is about.
fn side_mut<'a>(a: &'a mut SyncArgs, name: &str) -> &'a mut SideArgs {
    if name.ends_with('1') {
        &mut a.side1
    } else {
        &mut a.side2
    }
}

/// Stores one value into `a`; the last occurrence of a single-valued option wins (as Getopt).
fn apply(a: &mut SyncArgs, spec: &Spec, value: Value) -> Result<(), String> {
    let name = spec.name;
    let text = match value {
        Value::Bool(on) => return apply_flag(a, name, on),
        Value::Text(t) => t,
    };
    match name {
        "host1" | "host2" => side_mut(a, name).host = Some(sanitize_host(&text)),
        "port1" | "port2" => side_mut(a, name).port = Some(parse_port(name, &text)?),
        "user1" | "user2" => side_mut(a, name).user = Some(text.trim().to_string()),
        "password1" | "password2" => side_mut(a, name).password = Some(Secret::new(text.trim())),
        "passfile1" | "passfile2" => side_mut(a, name).passfile = Some(PathBuf::from(text)),
        "authuser1" | "authuser2" => side_mut(a, name).authuser = Some(text.trim().to_string()),
        "authmech1" | "authmech2" => {
            side_mut(a, name).authmech = Some(parse_authmech(name, &text)?)
        }
        "timeout" => a.timeout = text.parse().ok(),
        "timeout1" | "timeout2" => side_mut(a, name).timeout = text.parse().ok(),
        "sslargs1" | "sslargs2" => apply_sslarg(&mut side_mut(a, name).sslargs, &text),
        "sep1" | "sep2" => side_mut(a, name).sep = Some(parse_sep(name, &text)?),
        "prefix1" | "prefix2" => side_mut(a, name).prefix = Some(text),
        "folder" => a.folders.push(text),
        "include" => a.include.push(parse_regex(name, &text)?),
        "exclude" => a.exclude.push(parse_regex(name, &text)?),
        "errorsmax" => {
            a.errorsmax = Some(
                text.parse::<u64>()
                    .map_err(|_| format!("--errorsmax {text}: a count is expected"))?,
            )
        }
        "folderrec" => a.folderrec.push(text),
        "f1f2" => {
            let (from, to) = text
                .split_once('=')
                .ok_or_else(|| format!("--f1f2 {text}: expected OLD=NEW"))?;
            a.f1f2.push((from.to_string(), to.to_string()));
        }
        "regextrans2" => {
            check_regextrans2(&text)?;
            a.regextrans2.push(text);
        }
        "subfolder1" => a.subfolder1 = Some(text),
        "subfolder2" => a.subfolder2 = Some(text),
        "delete2foldersonly" => a.delete2foldersonly = Some(delimited_regex(name, &text)?),
        "delete2foldersbutnot" => a.delete2foldersbutnot = Some(delimited_regex(name, &text)?),
        "useheader" => a.useheader.push(text),
        "search" => a.search = Some(text),
        "search1" => a.search1 = Some(text),
        "maxage" => a.maxage = Some(parse_days(name, &text)?),
        "minage" => a.minage = Some(parse_days(name, &text)?),
        "maxsize" => a.maxsize = Some(parse_bytes(name, &text)?),
        "minsize" => a.minsize = Some(parse_bytes(name, &text)?),
        "logdir" => a.logdir = Some(text),
        "logfile" => a.logfile = Some(text),
        "state" => a.state = Some(PathBuf::from(text)),
        "regexflag" => {
            crate::mapping::PerlSubst::parse(&text)
                .map_err(|e| format!("--regexflag '{text}': {e}"))?;
            a.regexflag.push(text);
        }
        "maxbytespersecond" => {
            a.maxbytespersecond = Some(text.parse::<u64>().map_err(|_| {
                format!("--maxbytespersecond {text}: a number of bytes is expected")
            })?)
        }
        "maxmessagespersecond" => match text.parse::<f64>() {
            Ok(m) if m >= 0.0 && m.is_finite() => a.maxmessagespersecond = Some(m),
            _ => {
                return Err(format!(
                    "--maxmessagespersecond {text}: a number of messages is expected"
                ));
            }
        },
        _ => return Err(format!("Unknown option: {name}")),
    }
    Ok(())
}

fn apply_flag(a: &mut SyncArgs, name: &str, on: bool) -> Result<(), String> {
    match name {
        "ssl1" => a.side1.ssl = Some(on),
        "ssl2" => a.side2.ssl = Some(on),
        "tls1" => a.side1.tls = Some(on),
        "tls2" => a.side2.tls = Some(on),
        "sslcheck" => {}
        "subscribe" => a.subscribe = Some(on),
        "subscribeall" => a.subscribeall = on,
        "automap" => a.automap = on,
        "justfolders" => a.justfolders = on,
        "skipemptyfolders" => a.skipemptyfolders = on,
        "dry" => a.dry = on,
        "delete1" | "delete" => a.delete1 = on,
        "expunge1" => a.expunge1 = Some(on),
        "expungeaftereach" => {}
        "delete2" => a.delete2 = on,
        "delete2duplicates" => a.delete2duplicates = Some(on),
        "delete2folders" => a.delete2folders = on,
        "syncduplicates" => a.syncduplicates = Some(on),
        "skipsize" => a.skipsize = Some(on),
        "addheader" => a.addheader = on,
        "justconnect" => a.justconnect = on,
        "justlogin" => a.justlogin = on,
        "justfoldersizes" => a.justfoldersizes = on,
        "foldersizes" => a.foldersizes = Some(on),
        "foldersizesatend" => a.foldersizesatend = Some(on),
        "errorsdump" => a.errorsdump = Some(on),
        "showpasswords" => a.showpasswords = on,
        "help" => a.help = on,
        "version" => a.version = on,
        "log" => a.log = Some(on),
        "filterbuggyflags" => a.filterbuggyflags = on,
        "resyncflags" => a.resyncflags = Some(on),
        "syncinternaldates" => a.syncinternaldates = Some(on),
        "idatefromheader" => a.idatefromheader = on,
        _ => return Err(format!("Unknown option: {name}")),
    }
    Ok(())
}

/// `--help`: every option, grouped, one line each, then the differences from imapsync.
pub fn help_text(program: &str) -> String {
    let mut out = format!(
        "usage: {program} --host1 HOST --user1 USER --password1 PW --host2 HOST --user2 USER --password2 PW [options]\n\n\
         Copies one account from OLD (host1) to NEW (host2), imapsync-compatible: same options, exit codes and log lines.\n"
    );
    for group in Group::ALL {
        out.push_str(&format!("\n{}:\n", group.title()));
        for s in OPTIONS.iter().filter(|s| s.group == group) {
            let negatable = s.kind == Kind::Flag && !matches!(s.name, "help" | "version");
            let name = if negatable {
                format!("--[no]{}", s.name)
            } else {
                format!("--{} {}", s.name, s.arg).trim_end().to_string()
            };
            out.push_str(&format!("  {name:<24} {}\n", s.help));
        }
    }
    out.push('\n');
    for line in DIFFERENCES {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The command line as imapsync logs it: every value after an option named like `password1`
/// or `password2` (in any case, with one or two dashes, or after `=`) becomes MASKED.
pub fn masked_command_line(argv: &[String], show_passwords: bool) -> String {
    if show_passwords {
        return argv.join(" ");
    }
    let is_password_opt = |a: &str| {
        split_option(a)
            .is_some_and(|(n, inline)| inline.is_none() && (n == "password1" || n == "password2"))
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut mask_next = false;
    for arg in argv {
        if mask_next {
            out.push("MASKED".to_string());
            mask_next = false;
            continue;
        }
        match split_option(arg) {
            Some((n, Some(_))) if n == "password1" || n == "password2" => {
                let (opt, _) = arg.split_once('=').unwrap_or((arg, ""));
                out.push(format!("{opt}=MASKED"));
            }
            _ => {
                mask_next = is_password_opt(arg);
                out.push(arg.clone());
            }
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn ok(v: &[&str]) -> SyncArgs {
        match parse(&args(v)) {
            Ok(a) => a,
            Err(e) => panic!("{v:?}: {e:?}"),
        }
    }

    fn usage(v: &[&str]) -> Vec<String> {
        match parse(&args(v)) {
            Err(ArgError::Usage(m)) => m,
            Ok(_) => panic!("{v:?} should be refused"),
        }
    }

    #[test]
    fn option_spellings() {
        for v in [
            &["--host1", "x"][..],
            &["-host1", "x"],
            &["--host1=x"],
            &["-host1=x"],
            &["--HOST1", "x"],
            &["--Host1=x"],
            &["--host1", " x/ "],
        ] {
            assert_eq!(ok(v).side1.host.as_deref(), Some("x"), "{v:?}");
        }
    }

    #[test]
    fn switches_and_negations() {
        assert!(ok(&["--dry"]).dry);
        assert!(!ok(&["--dry", "--nodry"]).dry);
        assert!(!ok(&["--dry", "--no-dry"]).dry);
        assert!(ok(&["--nodry", "-DRY"]).dry);
        assert_eq!(ok(&["--nossl1"]).side1.ssl, Some(false));
        assert_eq!(ok(&["--ssl1"]).side1.ssl, Some(true));
        assert_eq!(ok(&["--tls2"]).side2.tls, Some(true));
        assert_eq!(ok(&[]).side1.ssl, None);
        assert!(!ok(&["--nolog"]).logging());
        assert!(ok(&[]).logging());
        assert_eq!(ok(&["--nofoldersizes"]).foldersizes, Some(false));
        assert_eq!(
            usage(&["--dry=1"]),
            ["Option dry does not take an argument"]
        );
        // Only switches have a --no form.
        assert_eq!(
            usage(&["--nohost1", "x"]),
            [
                "Unknown option: nohost1",
                "Found 1 extra arguments : [x]\nIt usually means a quoting issue in the command line or some misspelling options."
            ]
        );
    }

    #[test]
    fn repeated_options_keep_their_order() {
        let a = ok(&[
            "--folder",
            "INBOX",
            "--folder=Sent",
            "-folder",
            "Archive/2020",
            "--include",
            "^A",
            "--exclude",
            "(?i)spam",
            "--exclude",
            "Trash",
        ]);
        assert_eq!(a.folders, ["INBOX", "Sent", "Archive/2020"]);
        assert_eq!(a.include.len(), 1);
        let ex: Vec<&str> = a.exclude.iter().map(Regex::as_str).collect();
        assert_eq!(ex, ["(?i)spam", "Trash"]);
        // A single-valued option: the last one wins.
        assert_eq!(
            ok(&["--user1", "a", "--user1", "b"]).side1.user.as_deref(),
            Some("b")
        );
    }

    #[test]
    fn values() {
        let a = ok(&[
            "--port1",
            "993",
            "--user1",
            " alice ",
            "--password1",
            " pw ",
            "--timeout",
            "30",
            "--timeout2",
            "0",
            "--authuser2",
            "admin",
            "--authmech1",
            "plain",
            "--sep2",
            ".",
            "--prefix2",
            "INBOX.",
            "--errorsmax",
            "5",
            "--logdir",
            "/tmp/l",
            "--logfile",
            "x.txt",
            "--state",
            "s.db",
            "--passfile2",
            "/p",
        ]);
        assert_eq!(a.side1.port, Some(993));
        assert_eq!(a.side1.user.as_deref(), Some("alice"));
        assert_eq!(a.side1.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(a.timeout_secs(1), 30.0);
        assert_eq!(a.timeout_secs(2), 0.0);
        assert!(a.timeout(2) > Duration::from_secs(86_400 * 365));
        assert_eq!(ok(&[]).timeout(1), Duration::from_secs(120));
        assert_eq!(a.side2.authuser.as_deref(), Some("admin"));
        assert_eq!(a.side1.authmech, Some(AuthMech::Plain));
        assert_eq!(a.side2.sep, Some('.'));
        assert_eq!(a.side2.prefix.as_deref(), Some("INBOX."));
        assert_eq!(a.errorsmax, Some(5));
        assert_eq!(
            (a.logdir.as_deref(), a.logfile.as_deref()),
            (Some("/tmp/l"), Some("x.txt"))
        );
        assert_eq!(a.state, Some(PathBuf::from("s.db")));
        assert_eq!(a.side2.passfile, Some(PathBuf::from("/p")));
        // A password may start with a dash: a mandatory value is always the next argument.
        assert_eq!(
            ok(&["--password2", "--x"])
                .side2
                .password
                .as_ref()
                .map(Secret::expose),
            Some("--x")
        );
    }

    #[test]
    fn sslargs() {
        let a = ok(&[
            "--sslargs1",
            "SSL_verify_mode=0",
            "--sslargs2",
            "SSL_ca_file=certs/ca.pem",
            "--sslargs2=SSL_version=TLSv1_2",
        ]);
        assert_eq!(a.side1.sslargs.verify, Some(false));
        assert_eq!(a.side2.sslargs.ca_file, Some(PathBuf::from("certs/ca.pem")));
        assert_eq!(a.side2.sslargs.ignored, ["SSL_version=TLSv1_2"]);
        assert_eq!(
            ok(&["--sslargs1", "SSL_verify_mode=1"])
                .side1
                .sslargs
                .verify,
            Some(true)
        );
        assert_eq!(
            usage(&["--sslargs1", "SSL_verify_mode"]),
            ["Option sslargs1, key \"SSL_verify_mode\", requires a value"]
        );
    }

    #[test]
    fn refused() {
        assert_eq!(
            usage(&["--pipemess", "cat"]),
            [
                "Unknown option: pipemess",
                "Found 1 extra arguments : [cat]\nIt usually means a quoting issue in the command line or some misspelling options."
            ]
        );
        assert_eq!(
            usage(&["--delete1", "--delete2"]),
            [
                "Do not use --delete1 and --delete2 together: it would delete everything on both sides."
            ]
        );
        assert_eq!(usage(&["--frobnicate"]), ["Unknown option: frobnicate"]);
        assert_eq!(usage(&["--host1"]), ["Option host1 requires an argument"]);
        assert_eq!(
            usage(&["--port1", "abc"]),
            ["Value \"abc\" invalid for option port1 (number expected)"]
        );
        assert_eq!(
            usage(&["--port1", "70000"]),
            ["Value \"70000\" invalid for option port1 (port number expected)"]
        );
        assert_eq!(
            usage(&["--timeout", "soon"]),
            ["Value \"soon\" invalid for option timeout (real number expected)"]
        );
        assert_eq!(
            usage(&["--authmech1", "CRAM-MD5"]),
            ["--authmech1 CRAM-MD5: imapferry supports only LOGIN and PLAIN"]
        );
        assert_eq!(
            usage(&["--sep1", "ab"]),
            ["--sep1 ab: a separator is a single character"]
        );
        assert!(
            usage(&["--include", "(unclosed"])[0]
                .starts_with("--include '(unclosed' is not a usable regex")
        );
        assert!(usage(&["stray"])[0].starts_with("Found 1 extra arguments : [stray]"));
        assert!(usage(&["--", "--dry"])[0].starts_with("Found 1 extra arguments : [--dry]"));
        // Every problem is reported, not only the first.
        assert_eq!(usage(&["--a", "--b"]).len(), 2);
    }

    #[test]
    fn justconnect_when_credentials_are_incomplete() {
        let full = [
            "--host1", "h", "--user1", "u", "--host2", "h", "--user2", "v",
        ];
        assert!(!ok(&full).acts_as_justconnect());
        assert!(ok(&full[..6]).acts_as_justconnect());
        assert!(ok(&[&full[..], &["--justconnect"]].concat()).acts_as_justconnect());
        assert!(
            ok(&[
                "--host1", "h", "--user1", "u", "--host2", "h", "--user2", ""
            ])
            .acts_as_justconnect()
        );
    }

    #[test]
    fn passwords_are_masked() {
        let argv = args(&[
            "--host1",
            "h",
            "--password1",
            "s3cret",
            "-PASSWORD2",
            "other",
            "--password1=inline",
            "--user1",
            "u",
        ]);
        let shown = masked_command_line(&argv, false);
        assert_eq!(
            shown,
            "--host1 h --password1 MASKED -PASSWORD2 MASKED --password1=MASKED --user1 u"
        );
        assert_eq!(masked_command_line(&argv, true), argv.join(" "));
    }

    #[test]
    fn help_lists_every_option() {
        let help = help_text("imapsync");
        for s in OPTIONS {
            assert!(
                help.contains(&format!("{} ", s.name)) || help.contains(&format!("]{} ", s.name)),
                "{}",
                s.name
            );
        }
        assert!(help.contains("VERIFIED by default"));
        assert!(help.contains("three ways"));
        assert!(help.contains("duplicates"));
    }
}
