//! The proxy's counters, shared by every session through [`Settings`](super::session::Settings):
//! plain atomics (commands by name over a fixed list of IMAP command names, so label cardinality
//! stays bounded whatever clients send) and [`Metrics::render`] in Prometheus' text format, served
//! by [`admin`](super::admin) on `/metrics`, which appends [`render_accounts`] (accounts by state,
//! read from the store per scrape), [`render_sweep`] (the sweeper's counters) and
//! [`render_engine`] (what the migration holds open). No user name, address or credential is ever
//! a label.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::histogram::{Histogram, INF};
use crate::migrate::{Held, JournalWait};
use crate::sweep::SweepStats;

/// Command names counted under their own label, sorted; anything else counts as `OTHER`.
pub const COMMANDS: &[&str] = &[
    "APPEND",
    "AUTHENTICATE",
    "CAPABILITY",
    "CHECK",
    "CLOSE",
    "COMPRESS",
    "COPY",
    "CREATE",
    "DELETE",
    "DONE",
    "ENABLE",
    "EXAMINE",
    "EXPUNGE",
    "FETCH",
    "GETACL",
    "GETMETADATA",
    "GETQUOTA",
    "GETQUOTAROOT",
    "ID",
    "IDLE",
    "LIST",
    "LISTRIGHTS",
    "LOGIN",
    "LOGOUT",
    "LSUB",
    "MOVE",
    "MYRIGHTS",
    "NAMESPACE",
    "NOOP",
    "RENAME",
    "SEARCH",
    "SELECT",
    "SETACL",
    "SETMETADATA",
    "SETQUOTA",
    "SORT",
    "STARTTLS",
    "STATUS",
    "STORE",
    "SUBSCRIBE",
    "THREAD",
    "UID COPY",
    "UID EXPUNGE",
    "UID FETCH",
    "UID MOVE",
    "UID SEARCH",
    "UID SORT",
    "UID STORE",
    "UID THREAD",
    "UNSELECT",
    "UNSUBSCRIBE",
    "XLIST",
];

/// The label of every name not in [`COMMANDS`].
pub const OTHER: &str = "OTHER";

/// Upper bounds (seconds) of the upstream latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, INF,
];

/// Counters of one proxy process.
#[derive(Debug)]
pub struct Metrics {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    /// One per [`COMMANDS`] entry, then `OTHER`.
    commands: Box<[AtomicU64]>,
    bytes_client_to_new: AtomicU64,
    bytes_new_to_client: AtomicU64,
    login_failures: AtomicU64,
    proxy_protocol_refused: AtomicU64,
    upstream_latency: Histogram<12>,
}

impl Default for Metrics {
    fn default() -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            commands: zeros(COMMANDS.len() + 1),
            bytes_client_to_new: AtomicU64::new(0),
            bytes_new_to_client: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            proxy_protocol_refused: AtomicU64::new(0),
            upstream_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// Index of `name` in [`COMMANDS`] (ASCII case-insensitive, `UID` and its command separated by
/// any whitespace), or `COMMANDS.len()` for `OTHER`.
fn command_index(name: &str) -> usize {
    let mut words = name.split_ascii_whitespace();
    let found = match (words.next(), words.next(), words.next()) {
        (Some(one), None, None) => COMMANDS
            .iter()
            .position(|c| !c.contains(' ') && c.eq_ignore_ascii_case(one)),
        (Some(uid), Some(sub), None) if uid.eq_ignore_ascii_case("UID") => {
            COMMANDS.iter().position(|c| {
                c.strip_prefix("UID ")
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(sub))
            })
        }
        _ => None,
    };
    found.unwrap_or(COMMANDS.len())
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Counts an accepted client connection; it counts as open until the guard drops.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
        ConnectionGuard {
            metrics: Arc::clone(self),
        }
    }

    /// Counts one client command by name (`FETCH`, `uid fetch`…); unknown names count as `OTHER`.
    pub fn command(&self, name: &str) {
        if let Some(c) = self.commands.get(command_index(name)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Bytes relayed from the client to NEW.
    pub fn bytes_client_to_new(&self, n: u64) {
        self.bytes_client_to_new.fetch_add(n, Relaxed);
    }

    /// Bytes relayed from NEW to the client.
    pub fn bytes_new_to_client(&self, n: u64) {
        self.bytes_new_to_client.fetch_add(n, Relaxed);
    }

    /// A login refused by NEW.
    pub fn login_failure(&self) {
        self.login_failures.fetch_add(1, Relaxed);
    }

    /// A connection closed because its source may not send PROXY protocol headers.
    pub fn proxy_protocol_refused(&self) {
        self.proxy_protocol_refused.fetch_add(1, Relaxed);
    }

    /// How long the client waited for NEW to answer its login (from its LOGIN/AUTHENTICATE: what is
    /// left of connecting, then ID and LOGIN/AUTHENTICATE).
    pub fn upstream_latency(&self, took: Duration) {
        self.upstream_latency.observe(took);
    }

    /// All metrics in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Relaxed);
        let mut single = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        single(
            "imapferry_connections_open",
            "gauge",
            "Client connections open now.",
            load(&self.connections_open),
        );
        single(
            "imapferry_connections_total",
            "counter",
            "Client connections accepted.",
            load(&self.connections_total),
        );
        single(
            "imapferry_login_failures_total",
            "counter",
            "Logins refused by NEW.",
            load(&self.login_failures),
        );
        single(
            "imapferry_proxy_protocol_refused_total",
            "counter",
            "Connections closed because their source is not in listen.proxy_protocol_from.",
            load(&self.proxy_protocol_refused),
        );
        out.push_str(
            "# HELP imapferry_commands_total Client commands by name (OTHER: names outside the known list).\n\
             # TYPE imapferry_commands_total counter\n",
        );
        let names = COMMANDS.iter().copied().chain(std::iter::once(OTHER));
        for (name, count) in names.zip(self.commands.iter()) {
            let n = load(count);
            if n > 0 {
                let _ = writeln!(out, "imapferry_commands_total{{command=\"{name}\"}} {n}");
            }
        }
        out.push_str(
            "# HELP imapferry_bytes_total Bytes relayed between clients and NEW.\n\
             # TYPE imapferry_bytes_total counter\n",
        );
        let _ = writeln!(
            out,
            "imapferry_bytes_total{{direction=\"client_to_new\"}} {}",
            load(&self.bytes_client_to_new)
        );
        let _ = writeln!(
            out,
            "imapferry_bytes_total{{direction=\"new_to_client\"}} {}",
            load(&self.bytes_new_to_client)
        );
        self.upstream_latency.counts().render(
            &mut out,
            "imapferry_upstream_latency_seconds",
            "Time NEW took to answer a login (the client's LOGIN to NEW's tagged reply).",
        );
        out
    }
}

/// A Prometheus label value: `\`, `"` and line feeds escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the state store says, as gauges read at each scrape: `imapferry_accounts{state}`
/// (accounts by lifecycle state, zeros included), `imapferry_message_errors` (OLD messages the
/// last passes could not copy), `imapferry_journal_pending` (user writes not yet on OLD) and
/// `imapferry_journal_parked` (user writes OLD never took).
pub fn render_accounts(
    counts: &[(&str, u64)],
    message_errors: u64,
    (journal_pending, journal_parked): (u64, u64),
) -> String {
    let mut out = String::from(
        "# HELP imapferry_accounts Accounts in the state store by lifecycle state.\n\
         # TYPE imapferry_accounts gauge\n",
    );
    for (state, n) in counts {
        let _ = writeln!(out, "imapferry_accounts{{state=\"{}\"}} {n}", label(state));
    }
    let _ = write!(
        out,
        "# HELP imapferry_message_errors OLD messages the last passes could not copy.\n\
         # TYPE imapferry_message_errors gauge\nimapferry_message_errors {message_errors}\n\
         # HELP imapferry_journal_pending User writes journaled and not yet mirrored to OLD.\n\
         # TYPE imapferry_journal_pending gauge\nimapferry_journal_pending {journal_pending}\n\
         # HELP imapferry_journal_parked User writes OLD never took (their accounts are diverged).\n\
         # TYPE imapferry_journal_parked gauge\nimapferry_journal_parked {journal_parked}\n"
    );
    out
}

/// The sweeper's counters: messages and bytes copied, queue length, failed sweeps by kind.
pub fn render_sweep(stats: &SweepStats) -> String {
    let mut out = String::with_capacity(1024);
    let mut single = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    single(
        "imapferry_sweep_messages_copied_total",
        "counter",
        "Messages the sweeper copied from OLD to NEW.",
        stats.messages_copied,
    );
    single(
        "imapferry_sweep_bytes_copied_total",
        "counter",
        "Bytes of messages the sweeper copied from OLD to NEW.",
        stats.bytes_copied,
    );
    single(
        "imapferry_sweep_queue_length",
        "gauge",
        "Accounts waiting for a sweep.",
        stats.queue,
    );
    single(
        "imapferry_sweep_running",
        "gauge",
        "Accounts being swept now.",
        stats.running,
    );
    single(
        "imapferry_sweep_paused",
        "gauge",
        "1 while the sweeper is paused.",
        u64::from(stats.paused),
    );
    out.push_str(
        "# HELP imapferry_sweep_errors_total Failed sweeps by kind.\n\
         # TYPE imapferry_sweep_errors_total counter\n",
    );
    for (kind, n) in &stats.errors {
        let _ = writeln!(
            out,
            "imapferry_sweep_errors_total{{kind=\"{}\"}} {n}",
            label(kind)
        );
    }
    out
}

/// What the migration holds open: the engine's connections to OLD and NEW (pooled pairs and
/// live pickup's) and the accounts whose live pickup IDLEs on OLD or polls it; the journal's
/// entries and commits, and how long writes waited for them (`journal_wait`); the backfills
/// started; whether the mirror is paused; the state store's operations.
pub fn render_engine(held: &Held, journal_wait: &JournalWait) -> String {
    let mut out = format!(
        "# HELP imapferry_engine_connections Connections the migration holds open (not the \
         sessions' own), by server.\n\
         # TYPE imapferry_engine_connections gauge\n\
         imapferry_engine_connections{{side=\"old\"}} {}\n\
         imapferry_engine_connections{{side=\"new\"}} {}\n\
         # HELP imapferry_live_pickup_accounts Accounts whose live pickup runs, by how it asks OLD.\n\
         # TYPE imapferry_live_pickup_accounts gauge\n\
         imapferry_live_pickup_accounts{{mode=\"idle\"}} {}\n\
         imapferry_live_pickup_accounts{{mode=\"poll\"}} {}\n\
         # HELP imapferry_journal_entries_total User writes journaled for OLD.\n\
         # TYPE imapferry_journal_entries_total counter\n\
         imapferry_journal_entries_total {}\n\
         # HELP imapferry_journal_commits_total Journal commits (one holds the entries of every \
         session that journaled while the one before ran).\n\
         # TYPE imapferry_journal_commits_total counter\n\
         imapferry_journal_commits_total {}\n\
         # HELP imapferry_backfills_total Folder backfills started: first fills, and checks of \
         what OLD got since (for a command, live pickup or the sweeper).\n\
         # TYPE imapferry_backfills_total counter\n\
         imapferry_backfills_total {}\n\
         # HELP imapferry_mirror_paused 1 while [migration] mirror_paused keeps users' writes from \
         OLD (they wait in the journal: imapferry_journal_pending).\n\
         # TYPE imapferry_mirror_paused gauge\n\
         imapferry_mirror_paused {}\n\
         # HELP imapferry_store_operations_total State store operations: reads, and write \
         transactions (each a hand-off to one of the store's connections).\n\
         # TYPE imapferry_store_operations_total counter\n\
         imapferry_store_operations_total{{kind=\"read\"}} {}\n\
         imapferry_store_operations_total{{kind=\"write\"}} {}\n",
        held.old,
        held.new,
        held.idling,
        held.polling,
        held.journaled,
        held.commits,
        held.backfills,
        u8::from(held.mirror_paused),
        held.store.reads,
        held.store.writes
    );
    journal_wait.render(
        &mut out,
        "imapferry_journal_wait_seconds",
        "Time a user's write waited for its journal commit before the client heard NEW's OK.",
    );
    out
}

/// Keeps a connection counted as open (see [`Metrics::connection`]).
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_bounded() {
        assert!(COMMANDS.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
        assert_eq!(COMMANDS[command_index("fetch")], "FETCH");
        assert_eq!(COMMANDS[command_index("Uid  Fetch")], "UID FETCH");
        assert_eq!(COMMANDS[command_index("UID MOVE")], "UID MOVE");
        for other in [
            "",
            "FETCHX",
            "UID",
            "UID LOGIN",
            "UID FETCH X",
            "x\"y",
            "ÉTAT",
        ] {
            assert_eq!(command_index(other), COMMANDS.len(), "{other:?}");
        }
        let m = Metrics::new();
        m.command("select");
        m.command("SELECT");
        m.command("uid fetch");
        m.command("X-EVIL\"} 99\n");
        m.command("frobnicate");
        let text = m.render();
        assert!(text.contains("imapferry_commands_total{command=\"SELECT\"} 2\n"));
        assert!(text.contains("imapferry_commands_total{command=\"UID FETCH\"} 1\n"));
        assert!(text.contains("imapferry_commands_total{command=\"OTHER\"} 2\n"));
        assert!(!text.contains("EVIL") && !text.contains("frobnicate"));
        assert!(
            !text.contains("command=\"FETCH\""),
            "zero counts are left out"
        );
    }

    #[test]
    fn renders_every_metric() {
        let m = Arc::new(Metrics::new());
        let a = m.connection();
        let b = m.connection();
        drop(a);
        m.bytes_client_to_new(10);
        m.bytes_new_to_client(2000);
        m.login_failure();
        m.proxy_protocol_refused();
        m.upstream_latency(Duration::from_millis(7));
        m.upstream_latency(Duration::from_millis(300));
        m.upstream_latency(Duration::from_secs(60));
        let text = m.render();
        for line in [
            "imapferry_connections_open 1",
            "imapferry_connections_total 2",
            "imapferry_login_failures_total 1",
            "imapferry_proxy_protocol_refused_total 1",
            "imapferry_bytes_total{direction=\"client_to_new\"} 10",
            "imapferry_bytes_total{direction=\"new_to_client\"} 2000",
            "imapferry_upstream_latency_seconds_bucket{le=\"0.005\"} 0",
            "imapferry_upstream_latency_seconds_bucket{le=\"0.01\"} 1",
            "imapferry_upstream_latency_seconds_bucket{le=\"0.25\"} 1",
            "imapferry_upstream_latency_seconds_bucket{le=\"0.5\"} 2",
            "imapferry_upstream_latency_seconds_bucket{le=\"10\"} 2",
            "imapferry_upstream_latency_seconds_bucket{le=\"+Inf\"} 3",
            "imapferry_upstream_latency_seconds_sum 60.307",
            "imapferry_upstream_latency_seconds_count 3",
            "# TYPE imapferry_upstream_latency_seconds histogram",
            "# TYPE imapferry_connections_open gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        drop(b);
        assert!(m.render().contains("imapferry_connections_open 0\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(line.starts_with("imapferry_"), "{line}");
        }
    }

    #[test]
    fn renders_accounts_and_sweep() {
        let text = render_accounts(&[("pending", 2), ("synced", 0)], 3, (0, 1));
        assert!(text.contains("\nimapferry_journal_parked 1\n"));
        assert!(text.contains("\nimapferry_message_errors 3\n"));
        assert!(text.contains("\nimapferry_journal_pending 0\n"));
        assert!(text.contains("# TYPE imapferry_accounts gauge\n"));
        assert!(text.contains("imapferry_accounts{state=\"pending\"} 2\n"));
        assert!(text.contains("imapferry_accounts{state=\"synced\"} 0\n"));
        let mut stats = SweepStats {
            queue: 4,
            messages_copied: 120,
            bytes_copied: 9000,
            paused: true,
            ..SweepStats::default()
        };
        stats.errors.insert("login".into(), 2);
        stats.errors.insert("we\"ird\n".into(), 1);
        let text = render_sweep(&stats);
        for line in [
            "imapferry_sweep_messages_copied_total 120",
            "imapferry_sweep_bytes_copied_total 9000",
            "imapferry_sweep_queue_length 4",
            "imapferry_sweep_paused 1",
            "imapferry_sweep_errors_total{kind=\"login\"} 2",
            "imapferry_sweep_errors_total{kind=\"we\\\"ird\\n\"} 1",
            "# TYPE imapferry_sweep_errors_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn says_whether_the_mirror_is_paused_and_how_long_writes_waited() {
        for (paused, line) in [
            (false, "imapferry_mirror_paused 0"),
            (true, "imapferry_mirror_paused 1"),
        ] {
            let gauges = crate::migrate::Gauges::default();
            gauges.journal_wait(Duration::from_micros(300));
            let text = render_engine(
                &Held {
                    mirror_paused: paused,
                    ..Held::default()
                },
                &gauges.journal_waits(),
            );
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
            assert!(text.contains("\nimapferry_journal_wait_seconds_count 1\n"));
        }
    }
}
