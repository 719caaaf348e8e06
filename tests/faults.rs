//! Fault injection (issue 12), scripted and repeatable: a migration in progress through the proxy
//! process, three users' mail clients (Python's imaplib, `tests/scripts/fault_client.py`) moving,
//! flagging, deleting and appending, the sweeper on for them and three accounts nobody opens. The
//! proxy is killed with SIGKILL at 20 seeded moments, OLD and NEW are each restarted twice mid
//! session, and the state file's disk (a tmpfs) fills up and later has room again. After every
//! fault NEW holds what the clients were told OK (nothing lost, nothing duplicated, flags equal),
//! and once the journal drains OLD equals NEW. (A write cut off by NEW's own SIGKILL may leave
//! NEW holding a moved message twice, as Dovecot's MOVE copies and then expunges: NEW is not
//! checked for those messages, OLD = NEW still is.) The seed is printed; `FAULT_SEED=N` replays a run
//! (the same fault moments, counted in client commands, and the same client scripts; the suite
//! runs [`DEFAULT_SEED`], `FAULT_SEED=random` picks one);
//! `FAULT_KEEP=1` keeps the proxy log and the clients' traces, `PROXY_LOG` sets the proxy's
//! `RUST_LOG`.
//!
//! Runs as root (it mounts a tmpfs; CI is root) and fails, never skips, otherwise.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::seed::Rng;
use common::state::account_summaries;
use common::{
    Dovecot, DovecotOptions, Layout, RawImap, Snapshot, assert_same_mail, free_port, snapshot,
};
use imapferry::store::AccountState;

const MASTER: (&str, &str) = ("admin", "Adm1n-fault");
/// Users with a mail client at work through the proxy.
const ACTIVE: [(&str, &str); 3] = [("ann", "ann-Pw1"), ("ben", "ben-Pw2"), ("cat", "cat-Pw3")];
/// Accounts nobody opens: only the sweeper migrates them.
const QUIET: [(&str, &str); 3] = [("dan", "dan-Pw4"), ("eve", "eve-Pw5"), ("fay", "fay-Pw6")];
/// The folders the clients work in (NEW's names; Archive and Trash exist on both servers).
const FOLDERS: [&str; 4] = ["INBOX", "Archive", "Trash", "Work"];
const SEED_FLAGS: [&str; 4] = ["\\Seen", "\\Flagged", "\\Answered", "$Fault"];

/// The fault moments and client scripts the suite runs (CI must be repeatable); `FAULT_SEED=N`
/// or `FAULT_SEED=random` explores others.
const DEFAULT_SEED: u64 = 910_747_083;
const KILLS: usize = 20;
const SERVER_RESTARTS: usize = 2;
/// The tmpfs the state file lives on.
const STATE_DISK_KB: u64 = 32 * 1024;
/// Commands each client must get OK after a fault before the round is checked (it reconnected,
/// resynchronised and works again).
const OK_AFTER_FAULT: u64 = 3;

/// How long the clients may take to work again after a fault. A server's new processes after a
/// SIGKILL of the old ones have been seen to leave commands unanswered for about two minutes
/// (OLD and NEW alike; see [`DRAIN`]): longer than that.
const CLIENT_WAIT: Duration = Duration::from_secs(300);
const CONVERGE: Duration = Duration::from_secs(30);
/// Longer than the proxy's own bound on an OLD command (120 s): after OLD's SIGKILL its new
/// processes have been seen to leave a command unanswered until then (a mailbox the killed ones
/// left locked or half-written), and the journal drains only after that command times out.
const DRAIN: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillProxy,
    RestartOld,
    RestartNew,
}

#[test]
fn proxy_kills_server_restarts_and_a_full_state_disk_lose_nothing() {
    require_root();
    let started = Instant::now();
    let seed: u64 = match std::env::var("FAULT_SEED").as_deref() {
        Ok("random") => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_007
        }
        Ok(s) => s.parse().expect("FAULT_SEED must be a number or `random`"),
        Err(_) => DEFAULT_SEED,
    };
    eprintln!("fault injection seed {seed} (replay: FAULT_SEED={seed} cargo test --test faults)");
    let mut rng = Rng::new(seed);
    let mut run = Run::start(seed);

    let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::KillProxy, KILLS)
        .chain(std::iter::repeat_n(Fault::RestartOld, SERVER_RESTARTS))
        .chain(std::iter::repeat_n(Fault::RestartNew, SERVER_RESTARTS))
        .collect();
    shuffle(&mut rng, &mut faults);
    let disk_full_after = faults.len() / 2;

    for (round, fault) in faults.iter().enumerate() {
        let after = 4 + rng.below(40);
        run.round(round + 1, *fault, after);
        if round + 1 == disk_full_after {
            run.disk_full_phase();
        }
    }
    run.finish();
    run.print_figures(seed, started.elapsed());
}

/// What the state store says it committed is in the journal, also when the disk fills up: SQLite
/// writes its log at the commit, after `INSERT … RETURNING` has produced its row, so a write
/// whose commit failed must come back as an error, never as an id.
#[test]
fn a_full_state_disk_refuses_journal_entries_and_recovers_when_it_has_room() {
    use imapferry::store::{AccountKey, SqliteStore, Store};
    require_root();
    let disk = Tmpfs::mount(1024);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&disk.path().join("state.db"))
            .await
            .unwrap();
        let key = AccountKey {
            old_host: "old".into(),
            old_user: "u".into(),
            new_host: "new".into(),
            new_user: "u".into(),
        };
        let account = store.account(&key).await.unwrap();
        let filler = disk.fill();
        let payload = format!(
            "{{\"kind\":\"expunge\",\"folder\":\"{}\"}}",
            "x".repeat(900)
        );
        let (mut confirmed, mut refused) = (Vec::new(), 0);
        for _ in 0..3_000 {
            match store.journal_append(account, "expunge", &payload).await {
                Ok(id) => confirmed.push(id),
                Err(_) => refused += 1,
            }
        }
        let kept: BTreeSet<i64> = store
            .journal_pending(account, u32::MAX)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        let lost: Vec<i64> = confirmed
            .iter()
            .copied()
            .filter(|id| !kept.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} entries confirmed on a full disk are not in the journal (ids {:?}...)",
            lost.len(),
            confirmed.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(refused > 0, "the full disk never refused an entry");
        // Room again: every pooled connection journals again (a COMMIT that failed on the full
        // disk must not leave a connection stuck "in a transaction").
        std::fs::remove_file(&filler).unwrap();
        for i in 0..50 {
            if let Err(e) = store.journal_append(account, "expunge", &payload).await {
                panic!("entry {i} after the disk has room again: {e}");
            }
        }
        store.close().await;
    });
}

/// Everything one run needs: the servers, the state disk, the proxy process, the clients, and
/// the figures so far.
struct Run {
    old: Dovecot,
    new: Dovecot,
    /// Logs, configuration and the clients' seed models (not on the small disk).
    _work: tempfile::TempDir,
    disk: Tmpfs,
    proxy: ProxyRun,
    clients: Clients,
    /// Each quiet account's seeded message ids.
    quiet_ids: Vec<BTreeSet<u64>>,
    old_restarts: usize,
    new_restarts: usize,
    kills: usize,
    rounds: usize,
    converge_waits: Vec<String>,
    disk_full: Option<DiskFullFigures>,
    /// Per user at work, the messages of writes cut off before their answer (see [`Model`]):
    /// NEW may have done them without the proxy journaling them.
    tainted: Vec<BTreeSet<u64>>,
}

#[derive(Debug, Default)]
struct DiskFullFigures {
    writes: u64,
    ok: u64,
    refused: u64,
    dropped: u64,
    journal_errors_logged: usize,
}

impl Run {
    fn start(seed: u64) -> Run {
        let opts = |layout| DovecotOptions {
            layout,
            master: Some((MASTER.0.into(), MASTER.1.into())),
            ..Default::default()
        };
        let old = Dovecot::start_with(opts(Layout::DotInbox));
        let new = Dovecot::start_with(opts(Layout::Slash));
        let everyone: Vec<(String, String)> = ACTIVE
            .iter()
            .chain(QUIET.iter())
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        old.add_users(&everyone);
        new.add_users(&everyone);
        let work = tempfile::Builder::new()
            .prefix("imapferry-faults-")
            .disable_cleanup(std::env::var_os("FAULT_KEEP").is_some())
            .tempdir()
            .unwrap();
        eprintln!(
            "proxy log, client traces: {} (FAULT_KEEP=1 keeps them)",
            work.path().display()
        );
        let disk = Tmpfs::mount(STATE_DISK_KB);

        let mut rng = Rng::new(seed ^ 0xFA17);
        let mut seeds = Vec::new();
        let mut quiet_ids = Vec::new();
        for (i, (user, pw)) in ACTIVE.iter().chain(QUIET.iter()).enumerate() {
            let counts: &[(&str, u64)] = if i < ACTIVE.len() {
                &[("INBOX", 30), ("Archive", 20), ("Trash", 5), ("Work", 15)]
            } else {
                &[("INBOX", 40), ("Archive", 25), ("Work", 15)]
            };
            let model = seed_old(&old, user, pw, (i as u64 + 1) * 100_000, counts, &mut rng);
            if i < ACTIVE.len() {
                seeds.push(model);
            } else {
                quiet_ids.push(model.keys().copied().collect());
            }
        }

        let secret = work.path().join("master.secret");
        std::fs::write(&secret, format!("{}\n", MASTER.1)).unwrap();
        let port = free_port();
        let config = work.path().join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\nimap = \"127.0.0.1:{port}\"\n\
                 [new]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\n\
                 master_user = \"{}\"\nmaster_password_file = \"{}\"\n\
                 [old]\naddress = \"127.0.0.1:{}\"\nsecurity = \"none\"\nauth = \"master\"\n\
                 master_user = \"{}\"\nmaster_password_file = \"{}\"\n\
                 [state]\npath = \"{}\"\n\
                 [migration]\nselect_budget_ms = 10000\nmirror_retry_secs = 1\n\
                 [sweep]\nenabled = true\naccounts_in_parallel = 2\nmax_messages_per_second = 40\n",
                new.port(),
                MASTER.0,
                secret.display(),
                old.port(),
                MASTER.0,
                secret.display(),
                disk.path().join("state.db").display()
            ),
        )
        .unwrap();
        let logins: String = ACTIVE
            .iter()
            .chain(QUIET.iter())
            .map(|(u, _)| format!("{u}\n"))
            .collect();
        let logins_file = work.path().join("logins.txt");
        std::fs::write(&logins_file, logins).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_imapferry"))
            .args(["accounts", "import"])
            .arg(&logins_file)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "accounts import: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let mut proxy = ProxyRun {
            config,
            log: work.path().join("proxy.log"),
            port,
            child: None,
            starts: 0,
        };
        proxy.start();
        let clients = Clients::start(&work, port, seed, &seeds);
        Run {
            old,
            new,
            _work: work,
            disk,
            proxy,
            clients,
            quiet_ids,
            old_restarts: 0,
            new_restarts: 0,
            kills: 0,
            rounds: 0,
            converge_waits: Vec::new(),
            disk_full: None,
            tainted: vec![BTreeSet::new(); ACTIVE.len()],
        }
    }

    fn state(&self) -> PathBuf {
        self.disk.path().join("state.db")
    }

    /// One round: the clients work; after `after` more commands (all clients together) `fault`
    /// strikes; the clients go on until each got [`OK_AFTER_FAULT`] OKs; then NEW is checked
    /// against what they were told, and OLD against NEW once the journal drained.
    fn round(&mut self, round: usize, fault: Fault, after: u64) {
        self.rounds = round;
        eprintln!("round {round}: {fault:?} after {after} commands");
        self.clients.go();
        let start: u64 = self.clients.total_ops();
        self.wait_clients(&format!("{after} commands before the fault"), |c| {
            c.total_ops() >= start + after
        });
        let marks: Vec<u64> = self.clients.tally.iter().map(|t| t.ok).collect();
        match fault {
            Fault::KillProxy => {
                self.proxy.kill9();
                self.kills += 1;
                self.proxy.start();
            }
            Fault::RestartOld => {
                // The first restart is a clean stop, the second a crash of every process.
                if self.old_restarts > 0 {
                    self.old.kill_all();
                }
                self.old.restart();
                self.old_restarts += 1;
            }
            Fault::RestartNew => {
                if self.new_restarts > 0 {
                    self.clients.new_crashing = true;
                    self.new.kill_all();
                }
                self.new.restart();
                self.new_restarts += 1;
            }
        }
        self.wait_clients(
            &format!("{OK_AFTER_FAULT} OKs per client after the fault"),
            |c| {
                c.tally
                    .iter()
                    .zip(&marks)
                    .all(|(t, m)| t.ok >= m + OK_AFTER_FAULT)
            },
        );
        let models = self.stop_clients();
        self.clients.new_crashing = false;
        self.check_new(&format!("round {round} ({fault:?})"), &models);
        self.check_drained(&format!("round {round} ({fault:?})"));
    }

    /// The state file's disk fills up while the clients write: every write is either refused
    /// (NO, or BYE and a dropped connection) or journaled; then there is room again and the
    /// proxy takes writes again without a restart.
    fn disk_full_phase(&mut self) {
        eprintln!("state disk full");
        let log_before = self.proxy.log().len();
        let filler = self.disk.fill();
        let ops_before: Vec<Tally> = self.clients.tally.clone();
        self.clients.go();
        // SQLite reuses its write-ahead log's space: the first refusal comes once that is used.
        self.wait_clients("the first writes refused on the full disk", |c| {
            c.tally
                .iter()
                .zip(&ops_before)
                .map(|(t, b)| t.no + t.drop - b.no - b.drop)
                .sum::<u64>()
                >= 3
        });
        let refusing: Vec<u64> = self.clients.tally.iter().map(|t| t.ops).collect();
        self.wait_clients("10 more writes per client on the full disk", |c| {
            c.tally.iter().zip(&refusing).all(|(t, b)| t.ops >= b + 10)
        });
        let models = self.stop_clients();
        let during: Vec<Tally> = self
            .clients
            .tally
            .iter()
            .zip(&ops_before)
            .map(|(t, b)| t.minus(b))
            .collect();
        let mut figures = DiskFullFigures::default();
        for t in &during {
            figures.writes += t.ops;
            figures.ok += t.ok;
            figures.refused += t.no;
            figures.dropped += t.drop;
        }
        let log = self.proxy.log()[log_before..].to_string();
        figures.journal_errors_logged = log
            .lines()
            .filter(|l| l.contains("could not be journaled"))
            .count();
        eprintln!("on a full disk: {figures:?}");
        self.check_new("full state disk", &models);
        assert!(
            figures.refused + figures.dropped > 0,
            "no write was refused while the state disk was full ({figures:?}): the phase tested \
             nothing\n{}",
            tail(&log, 40)
        );
        std::fs::remove_file(&filler).unwrap();
        eprintln!("state disk has room again");
        let marks: Vec<u64> = self.clients.tally.iter().map(|t| t.ok).collect();
        self.clients.go();
        self.wait_clients("10 OKs per client once the disk has room", |c| {
            c.tally.iter().zip(&marks).all(|(t, m)| t.ok >= m + 10)
        });
        let models = self.stop_clients();
        self.check_new("after the full state disk", &models);
        self.check_drained("after the full state disk");
        self.disk_full = Some(figures);
    }

    /// The end: the sweeper finishes every account; all are synced, OLD equals NEW everywhere.
    fn finish(&mut self) {
        self.clients.go();
        let start = self.clients.total_ops();
        self.wait_clients("a last stretch of work", |c| c.total_ops() >= start + 30);
        let models = self.stop_clients();
        self.check_new("end", &models);
        self.check_drained("end");
        self.clients.quit();
        let state = self.state();
        let deadline = Instant::now() + DRAIN;
        loop {
            let summaries = account_summaries(&state);
            if summaries
                .iter()
                .all(|a| a.state == AccountState::Synced && a.pending_journal == 0)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not every account synced within {DRAIN:?}: {summaries:#?}\n{}",
                tail(&self.proxy.log(), 80)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for ((user, pw), ids) in QUIET.iter().zip(&self.quiet_ids) {
            let on_new = snapshot(&self.new, user, pw);
            let found: Vec<u64> = on_new
                .folders
                .values()
                .flatten()
                .filter_map(|m| message_id(&m.subject))
                .collect();
            let unique: BTreeSet<u64> = found.iter().copied().collect();
            assert_eq!(
                (found.len(), &unique),
                (ids.len(), ids),
                "{user}: NEW must hold every seeded message once"
            );
            assert_same_mail(&snapshot(&self.old, user, pw), &on_new);
        }
    }

    fn wait_clients(&mut self, what: &str, done: impl Fn(&Clients) -> bool) {
        let deadline = Instant::now() + CLIENT_WAIT;
        while !done(&self.clients) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {CLIENT_WAIT:?} waiting for {what}\n{}\n--- proxy log ---\n{}",
                    self.clients.describe(),
                    tail(&self.proxy.log(), 60)
                );
            }
            self.clients.pump(deadline);
        }
    }

    fn stop_clients(&mut self) -> Vec<Model> {
        let models = self.clients.stop();
        for (t, m) in self.tainted.iter_mut().zip(&models) {
            t.extend(&m.tainted);
        }
        for (i, m) in models.iter().enumerate() {
            let skip = &self.clients.cut_by_new_crash[i];
            let anomalies: Vec<&String> = m
                .anomalies
                .iter()
                .filter(|a| anomaly_id(a).is_none_or(|id| !skip.contains(&id)))
                .collect();
            assert!(
                anomalies.is_empty(),
                "{} saw through the proxy: {:#?}\n--- proxy log ---\n{}",
                ACTIVE[i].0,
                anomalies,
                tail(&self.proxy.log(), 60)
            );
        }
        models
    }

    /// NEW (read directly) against each client's model: duplicates and messages deleted with OK
    /// fail at once; anything else may still be on its way (a backfill after a restart) and is
    /// waited for, up to [`CONVERGE`].
    fn check_new(&mut self, when: &str, models: &[Model]) {
        for (i, ((user, pw), model)) in ACTIVE.iter().zip(models).enumerate() {
            let skip = self.clients.cut_by_new_crash[i].clone();
            let deadline = Instant::now() + CONVERGE;
            let mut first: Option<String> = None;
            loop {
                let snap = snapshot(&self.new, user, pw);
                let (fatal, pending) = compare(model, &snap, &skip);
                assert!(
                    fatal.is_empty(),
                    "{when}: {user} on NEW:\n{}\n--- proxy log ---\n{}",
                    fatal.join("\n"),
                    tail(&self.proxy.log(), 60)
                );
                if pending.is_empty() {
                    break;
                }
                let text = pending.join("\n");
                assert!(
                    Instant::now() < deadline,
                    "{when}: {user} on NEW after {CONVERGE:?}:\n{text}\n--- proxy log ---\n{}",
                    tail(&self.proxy.log(), 60)
                );
                first.get_or_insert(text);
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Some(first) = first {
                self.converge_waits.push(format!(
                    "{when}: {user}: {}",
                    first.lines().next().unwrap_or("")
                ));
            }
        }
        for ((user, pw), ids) in QUIET.iter().zip(&self.quiet_ids) {
            let snap = snapshot(&self.new, user, pw);
            let mut seen = BTreeSet::new();
            for (folder, msgs) in &snap.folders {
                for m in msgs {
                    let id = message_id(&m.subject);
                    assert!(
                        id.is_some_and(|id| ids.contains(&id) && seen.insert(id)),
                        "{when}: {user}: {:?} in {folder} on NEW is not a seeded message or a \
                         second copy",
                        m.subject
                    );
                }
            }
        }
    }

    /// Waits until no journal entry waits for OLD (none parked, no account diverged), then OLD
    /// must equal NEW for the users at work, the messages of writes cut off before their answer
    /// included (a SIGKILL or NEW's restart between NEW doing a write and the proxy journaling
    /// it: the write-ahead mark has OLD reconciled with NEW).
    fn check_drained(&mut self, when: &str) {
        let state = self.state();
        let deadline = Instant::now() + DRAIN;
        loop {
            let summaries = account_summaries(&state);
            let parked: Vec<_> = summaries.iter().filter(|a| a.parked_journal > 0).collect();
            assert!(
                parked.is_empty(),
                "{when}: journal entries OLD refused: {parked:#?}\n--- proxy log ---\n{}",
                tail(&self.proxy.log(), 80)
            );
            // A write that could not be journaled (the full disk) diverges its account until the
            // proxy has reconciled OLD by itself, within the drain time.
            let diverged: Vec<_> = summaries
                .iter()
                .filter(|a| a.state == AccountState::Diverged)
                .collect();
            assert!(
                diverged.is_empty() || Instant::now() < deadline,
                "{when}: accounts still diverged after {DRAIN:?}: {diverged:#?}\n\
                 --- proxy log ---\n{}",
                tail(&self.proxy.log(), 80)
            );
            if diverged.is_empty() && summaries.iter().all(|a| a.pending_journal == 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{when}: the journal did not drain within {DRAIN:?}: {summaries:#?}\n\
                 --- proxy log ---\n{}",
                tail(&self.proxy.log(), 80)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for (user, pw) in ACTIVE {
            let deadline = Instant::now() + CONVERGE;
            let mut waited = false;
            loop {
                let (o, n) = (snapshot(&self.old, user, pw), snapshot(&self.new, user, pw));
                if o == n {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("{when}: {user}: OLD differs from NEW after the journal drained");
                    eprintln!("--- proxy log ---\n{}", tail(&self.proxy.log(), 80));
                    assert_same_mail(&o, &n);
                }
                waited = true;
                std::thread::sleep(Duration::from_millis(200));
            }
            if waited {
                self.converge_waits
                    .push(format!("{when}: {user}: OLD = NEW only after a wait"));
            }
        }
    }

    fn print_figures(&self, seed: u64, elapsed: Duration) {
        let mut kinds: BTreeMap<String, [u64; 3]> = BTreeMap::new();
        let mut total = Tally::default();
        for t in &self.clients.tally {
            for (k, v) in &t.by_kind {
                let e = kinds.entry(k.clone()).or_default();
                for i in 0..3 {
                    e[i] += v[i];
                }
            }
            total.ops += t.ops;
            total.ok += t.ok;
            total.no += t.no;
            total.drop += t.drop;
            total.logins += t.logins;
        }
        eprintln!("\n=== fault injection figures (seed {seed}) ===");
        eprintln!(
            "rounds {}; proxy SIGKILLs {}; OLD restarts {}; NEW restarts {}; proxy starts {}",
            self.rounds, self.kills, self.old_restarts, self.new_restarts, self.proxy.starts
        );
        eprintln!(
            "client commands {} (OK {}, NO/BAD {}, connection lost {}); sessions {}",
            total.ops, total.ok, total.no, total.drop, total.logins
        );
        for (kind, [ok, no, drop]) in &kinds {
            eprintln!("  {kind:<7} OK {ok:>5}  NO {no:>4}  lost {drop:>4}");
        }
        if let Some(d) = &self.disk_full {
            eprintln!(
                "full state disk: {} writes: {} OK (journaled), {} refused with NO, {} ended by \
                 BYE/close; {} journal failures logged",
                d.writes, d.ok, d.refused, d.dropped, d.journal_errors_logged
            );
        }
        let tainted: usize = self.tainted.iter().map(BTreeSet::len).sum();
        eprintln!(
            "writes cut off before their answer touched {tainted} messages (each left to the \
             reconcile the write-ahead mark starts; OLD = NEW for them too)"
        );
        for w in &self.converge_waits {
            eprintln!("  waited: {w}");
        }
        eprintln!(
            "SUMMARY fault injection seed {seed}: {} rounds, {} proxy kill -9, {}+{} OLD/NEW \
             restarts, a full state disk; {} client commands ({} OK); nothing lost or duplicated, \
             flags equal, OLD = NEW after every drain; {:.0} s",
            self.rounds,
            self.kills,
            self.old_restarts,
            self.new_restarts,
            total.ops,
            total.ok,
            elapsed.as_secs_f64()
        );
    }
}

/// (failures that must never happen, differences that may still resolve)
/// Messages in `skip` are not looked at (see [`Clients::cut_by_new_crash`]).
fn compare(model: &Model, snap: &Snapshot, skip: &BTreeSet<u64>) -> (Vec<String>, Vec<String>) {
    let mut fatal = Vec::new();
    let mut pending = Vec::new();
    let mut seen: HashMap<u64, Vec<(&str, &BTreeSet<String>)>> = HashMap::new();
    for (folder, msgs) in &snap.folders {
        for m in msgs {
            match message_id(&m.subject) {
                Some(id) => seen.entry(id).or_default().push((folder, &m.flags)),
                None => fatal.push(format!(
                    "{folder}: a message without an id: {:?}",
                    m.subject
                )),
            }
        }
    }
    for (id, occ) in &seen {
        if !model.messages.contains_key(id) {
            fatal.push(format!("message {id} unknown to the client, in {occ:?}"));
        }
    }
    for (id, e) in model.messages.iter().filter(|(id, _)| !skip.contains(id)) {
        let occ = seen.get(id).map_or(&[][..], Vec::as_slice);
        match (e.gone, occ) {
            (_, [_, _, ..]) => fatal.push(format!("message {id} duplicated: {occ:?}")),
            (2, [o]) => fatal.push(format!("message {id} deleted with OK, still in {}", o.0)),
            (0, []) => pending.push(format!("message {id} lost: expected {e:?}")),
            (_, [(folder, flags)]) => {
                let wrong_folder = !e.folders.iter().any(|f| f == folder);
                let wrong_flags: Vec<String> = flags
                    .iter()
                    .filter(|f| !e.flags.contains_key(*f))
                    .map(|f| format!("+{f}"))
                    .chain(e.flags.iter().filter_map(|(f, want)| match want {
                        Some(true) if !flags.contains(f) => Some(format!("missing {f}")),
                        Some(false) if flags.contains(f) => Some(format!("extra {f}")),
                        _ => None,
                    }))
                    .collect();
                if wrong_folder || !wrong_flags.is_empty() {
                    pending.push(format!(
                        "message {id} in {folder} with {flags:?}: expected {e:?} ({})",
                        wrong_flags.join(", ")
                    ));
                }
            }
            _ => {}
        }
    }
    fatal.sort();
    pending.sort();
    (fatal, pending)
}

/// The message a client's anomaly is about (`message N ...`).
fn anomaly_id(anomaly: &str) -> Option<u64> {
    anomaly
        .strip_prefix("message ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// The id of a "Message N" subject.
fn message_id(subject: &str) -> Option<u64> {
    subject.strip_prefix("Message ")?.trim().parse().ok()
}

/// What a client was told: per message, where it may be, whether it may be gone, its flags.
#[derive(Debug)]
struct Model {
    messages: BTreeMap<u64, Expect>,
    anomalies: Vec<String>,
    /// Messages written by a command whose connection dropped before its tagged answer: NEW
    /// may have done it while the proxy never journaled it.
    tainted: BTreeSet<u64>,
}

#[derive(Debug)]
struct Expect {
    folders: Vec<String>,
    /// 0 present, 1 maybe gone, 2 gone.
    gone: u8,
    /// `None`: a change without OK left it open.
    flags: BTreeMap<String, Option<bool>>,
}

impl Model {
    fn parse(json: &str) -> Model {
        let v: serde_json::Value = serde_json::from_str(json).expect("client model JSON");
        let messages = v["messages"]
            .as_object()
            .expect("messages")
            .iter()
            .map(|(id, m)| {
                let e = Expect {
                    folders: m["f"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap().to_string())
                        .collect(),
                    gone: m["g"].as_u64().unwrap() as u8,
                    flags: m["fl"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(f, b)| (f.clone(), b.as_bool()))
                        .collect(),
                };
                (id.parse().unwrap(), e)
            })
            .collect();
        let anomalies = v["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let tainted = v["tainted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_u64().unwrap())
            .collect();
        Model {
            messages,
            anomalies,
            tainted,
        }
    }
}

/// Seeds `user`'s OLD folders with numbered messages (ids from `base`) and random flags; returns
/// what was seeded (id -> (NEW folder name, flags)).
fn seed_old(
    old: &Dovecot,
    user: &str,
    pw: &str,
    base: u64,
    counts: &[(&str, u64)],
    rng: &mut Rng,
) -> BTreeMap<u64, (String, Vec<String>)> {
    let mut c = RawImap::connect(old.host(), old.port());
    c.login(user, pw);
    let existing: BTreeSet<String> = c.list().into_iter().map(|(_, _, n)| n).collect();
    let mut seeded = BTreeMap::new();
    let mut id = base;
    for (folder, n) in counts {
        let name = old.mailbox_name(folder);
        if !existing.contains(&name) {
            c.create(&name);
        }
        for _ in 0..*n {
            let flags: Vec<&str> = SEED_FLAGS
                .iter()
                .copied()
                .filter(|_| rng.chance(0.3))
                .collect();
            let size = 500 + rng.below(5_000) as usize;
            c.append(&name, &flags, None, &common::message(id, size));
            seeded.insert(
                id,
                (
                    folder.to_string(),
                    flags.iter().map(|f| f.to_string()).collect(),
                ),
            );
            id += 1;
        }
    }
    c.logout();
    seeded
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn require_root() {
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "tests/faults.rs mounts a tmpfs for the state file's disk and must run as root (CI runs \
         as root); this run is uid {uid}"
    );
}

/// A small tmpfs for the state file, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_kb: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("imapferry-statedisk-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_kb}k,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk to the last byte with one file; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a_u8; 1 << 20];
        let mut size = chunk.len();
        while size > 0 {
            match f.write(&chunk[..size]) {
                Ok(0) => size /= 2,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => size /= 2,
                Err(e) => panic!("filling the state disk: {e}"),
            }
        }
        f.sync_all().unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A failed run kept with FAULT_KEEP=1 keeps the state file too.
        if std::env::var_os("FAULT_KEEP").is_some()
            && std::thread::panicking()
            && let Ok(entries) = std::fs::read_dir(self.path())
        {
            let to =
                std::env::temp_dir().join(format!("imapferry-faults-state-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&to);
            for e in entries.flatten() {
                if e.file_name() != "filler" {
                    let _ = std::fs::copy(e.path(), to.join(e.file_name()));
                }
            }
            eprintln!("state file kept in {}", to.display());
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `imapferry proxy` as a child process on a fixed port (clients reconnect to the same address),
/// its stderr appended to one log across restarts.
struct ProxyRun {
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: usize,
}

impl ProxyRun {
    fn start(&mut self) {
        assert!(self.child.is_none(), "proxy already running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            self.starts += 1;
            writeln!(log, "=== proxy start {} ===", self.starts).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_imapferry"))
                .arg("proxy")
                .arg("--config")
                .arg(&self.config)
                .env(
                    "RUST_LOG",
                    std::env::var("PROXY_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    // The port may be held for a moment by another process: try again.
                    assert!(
                        Instant::now() < deadline,
                        "the proxy exits at start ({status})\n{}",
                        tail(&self.log(), 40)
                    );
                    break;
                }
                if common::server::greets("127.0.0.1", self.port) {
                    self.child = Some(child);
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no greeting from the proxy on {} within 30 s\n{}",
                        self.port,
                        tail(&self.log(), 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("proxy running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProxyRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What one client did so far, from its OP lines.
#[derive(Clone, Debug, Default)]
struct Tally {
    ops: u64,
    ok: u64,
    no: u64,
    drop: u64,
    logins: u64,
    /// kind -> [ok, no, dropped]
    by_kind: BTreeMap<String, [u64; 3]>,
}

impl Tally {
    fn minus(&self, before: &Tally) -> Tally {
        Tally {
            ops: self.ops - before.ops,
            ok: self.ok - before.ok,
            no: self.no - before.no,
            drop: self.drop - before.drop,
            logins: self.logins - before.logins,
            by_kind: BTreeMap::new(),
        }
    }
}

/// The three mail-client processes and what they reported.
struct Clients {
    procs: Vec<(Child, ChildStdin)>,
    rx: mpsc::Receiver<(usize, String)>,
    tally: Vec<Tally>,
    recent: Vec<VecDeque<String>>,
    models: Vec<Option<String>>,
    /// While NEW is being killed (SIGKILL of every process) and until the clients work again.
    new_crashing: bool,
    /// Per client, the messages of writes cut off by NEW's crash: NEW itself may hold two copies
    /// of one (Dovecot's MOVE is a copy, then an expunge of the source). NEW is not checked for
    /// them; OLD = NEW still is.
    cut_by_new_crash: Vec<BTreeSet<u64>>,
}

impl Clients {
    fn start(
        work: &tempfile::TempDir,
        port: u16,
        seed: u64,
        seeds: &[BTreeMap<u64, (String, Vec<String>)>],
    ) -> Clients {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/fault_client.py");
        let (tx, rx) = mpsc::channel();
        let mut procs = Vec::new();
        for (i, ((user, pw), seeded)) in ACTIVE.iter().zip(seeds).enumerate() {
            let messages: serde_json::Map<String, serde_json::Value> = seeded
                .iter()
                .map(|(id, (folder, flags))| {
                    (
                        id.to_string(),
                        serde_json::json!({"folder": folder, "flags": flags}),
                    )
                })
                .collect();
            let model_path = work.path().join(format!("{user}.seed.json"));
            std::fs::write(
                &model_path,
                serde_json::json!({"folders": FOLDERS, "messages": messages}).to_string(),
            )
            .unwrap();
            let stderr = std::fs::File::create(work.path().join(format!("{user}.stderr"))).unwrap();
            let mut child = Command::new("python3")
                .arg(&script)
                .args(["127.0.0.1", &port.to_string(), user, pw])
                .arg((seed ^ ((i as u64 + 1) * 0x9E37)).to_string())
                .arg(&model_path)
                .arg(((i as u64 + 1) * 100_000 + 50_000).to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .expect("python3 (the mail clients are Python's imaplib)");
            let stdin = child.stdin.take().unwrap();
            let stdout = child.stdout.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
                let _ = tx.send((i, "EXIT".into()));
            });
            procs.push((child, stdin));
        }
        let n = procs.len();
        let mut c = Clients {
            procs,
            rx,
            tally: vec![Tally::default(); n],
            recent: vec![VecDeque::new(); n],
            models: vec![None; n],
            new_crashing: false,
            cut_by_new_crash: vec![BTreeSet::new(); n],
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.recent.iter().any(|r| !r.iter().any(|l| l == "READY")) {
            assert!(
                Instant::now() < deadline,
                "clients not ready: {}",
                c.describe()
            );
            c.pump(deadline);
        }
        c
    }

    fn total_ops(&self) -> u64 {
        self.tally.iter().map(|t| t.ops).sum()
    }

    fn send(&mut self, line: &str) {
        for (i, (_, stdin)) in self.procs.iter_mut().enumerate() {
            writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .unwrap_or_else(|e| panic!("client {}: {e}", ACTIVE[i].0));
        }
    }

    fn go(&mut self) {
        self.send("GO");
    }

    /// STOP, and every client's model once it answered.
    fn stop(&mut self) -> Vec<Model> {
        self.models.iter_mut().for_each(|m| *m = None);
        self.send("STOP");
        let deadline = Instant::now() + CLIENT_WAIT;
        while self.models.iter().any(Option::is_none) {
            assert!(
                Instant::now() < deadline,
                "clients did not report their model: {}",
                self.describe()
            );
            self.pump(deadline);
        }
        self.models
            .iter_mut()
            .map(|m| Model::parse(&m.take().unwrap()))
            .collect()
    }

    fn quit(&mut self) {
        self.send("QUIT");
        for (child, _) in &mut self.procs {
            let _ = child.wait();
        }
    }

    /// Handles one line from a client (waiting until `deadline` at most).
    fn pump(&mut self, deadline: Instant) {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok((i, line)) = self.rx.recv_timeout(wait) else {
            return;
        };
        if let Some(json) = line.strip_prefix("MODEL ") {
            self.models[i] = Some(json.to_string());
            return;
        }
        let t = &mut self.tally[i];
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("OP"), Some(kind), Some(result)) => {
                t.ops += 1;
                let slot = match result {
                    "ok" => {
                        t.ok += 1;
                        0
                    }
                    "no" => {
                        t.no += 1;
                        1
                    }
                    _ => {
                        t.drop += 1;
                        2
                    }
                };
                t.by_kind.entry(kind.to_string()).or_default()[slot] += 1;
            }
            (Some("LOGIN"), ..) => t.logins += 1,
            (Some("CUT"), ..) if self.new_crashing => self.cut_by_new_crash[i].extend(
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|w| w.parse::<u64>().ok()),
            ),
            (Some("FATAL"), ..) | (Some("EXIT"), ..) => {
                panic!("client {} ended: {line}\n{}", ACTIVE[i].0, self.describe())
            }
            _ => {}
        }
        let r = &mut self.recent[i];
        r.push_back(line);
        if r.len() > 12 {
            r.pop_front();
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (i, (t, r)) in self.tally.iter().zip(&self.recent).enumerate() {
            s.push_str(&format!(
                "client {}: {t:?}\n  {}\n",
                ACTIVE[i].0,
                r.iter().cloned().collect::<Vec<_>>().join("\n  ")
            ));
        }
        s
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for (child, _) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
