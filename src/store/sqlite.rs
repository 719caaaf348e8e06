//! The embedded [`Store`]: one SQLite file (WAL, `synchronous = FULL`, so every acknowledged write
//! survives `kill -9` and power loss), created and migrated on first use. Its statements are the
//! ones shared with PostgreSQL (`statements.rs`); this file owns the connections, each on a
//! thread of its own that runs a whole store operation per hand-off.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;

use super::sql::{Op, Row, Value, sqlite_params};
use super::{PairId, Result, StoreError, Tally};

/// The [`Store`](super::Store) implementation, shared with PostgreSQL.
mod statements {
    type SqlStore = super::SqliteStore;
    type Conn = super::Conn;
    const SHARED: bool = false;
    include!("statements.rs");
}

/// How long a writer waits for another connection (or process) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reader connections (see [`SqliteStore`]).
const READERS: usize = 2;

/// Prepared statements each connection keeps: every statement text of the store, with room
/// for the few lengths of each batch statement.
const CACHED_STATEMENTS: usize = 256;

/// The SQLite [`Store`]. Cloning is cheap and shares the connections.
///
/// Connections each owned by a thread: the writer runs every operation that writes, in a
/// transaction that takes the write lock at its start (`BEGIN IMMEDIATE`), so writers take
/// turns; the readers run the reads beside it (WAL), so no read waits behind a commit's fsync.
/// An operation reaches its thread in one hand-off and runs there whole: a few dozen
/// microseconds of SQLite, instead of a round trip per statement.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Worker,
    /// The first reader takes every read while it is idle (its page cache stays warm); a read
    /// that finds it busy goes to the least busy one, so a long read (the status of thousands
    /// of accounts, a sweep's scan) does not hold up the reads behind it.
    readers: Vec<Worker>,
    counted: Arc<Tally>,
}

impl SqliteStore {
    /// Opens the store file at `path`, creating it (0600, and its parent directory 0700) and
    /// bringing its schema up to date. SQLite gives the WAL and shared-memory files the mode of
    /// the database file.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let dir_err = |source| StoreError::Dir {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_dir_all(dir).map_err(dir_err)?;
        }
        // An empty file is an empty database; an existing one is opened as it is.
        crate::files::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(dir_err)?;
        Self::open_file(path).await
    }

    /// Opens an existing store file (bringing its schema up to date) and never creates one:
    /// a missing file is an error. For tools that only look at (or annotate) existing state.
    pub async fn open_existing(path: &Path) -> Result<SqliteStore> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        Self::open_file(path).await
    }

    async fn open_file(path: &Path) -> Result<SqliteStore> {
        let file = path.to_path_buf();
        let writer = Worker::start("writer", move || open_wal(&file)).await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let file = path.to_path_buf();
            let reader = Worker::start("reader", move || {
                let db = open_conn(&file)?;
                // A read that writes is a bug: this connection refuses it.
                db.pragma_update(None, "query_only", true)?;
                Ok(db)
            });
            readers.push(reader.await?);
        }
        let store = SqliteStore {
            writer,
            readers,
            counted: Arc::default(),
        };
        store.migrate().await?;
        tracing::debug!(path = %path.display(), "state store opened");
        Ok(store)
    }

    /// A private in-memory store (for tests): gone when the store is dropped. An in-memory
    /// database lives and dies with its connection, so reads and writes share the one.
    pub async fn open_memory() -> Result<SqliteStore> {
        let writer = Worker::start("memory", || {
            let db = Connection::open_in_memory()?;
            configure(&db)?;
            Ok(db)
        })
        .await?;
        let store = SqliteStore {
            readers: vec![writer.clone()],
            writer,
            counted: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Runs `op` on a reader, outside a transaction.
    async fn read<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T> + Send + 'static,
    {
        self.counted.read();
        let idle = self.readers.iter().min_by_key(|r| r.in_flight());
        let reader = idle.ok_or_else(closed)?;
        reader.run(move |c, _| ready(op(c))).await
    }

    /// Runs `op` on the writer, in a transaction that holds the write lock from its start
    /// (`BEGIN IMMEDIATE`): it waits for other writers (other processes) up to the busy timeout
    /// instead of failing when it upgrades. An error rolls it back.
    async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T> + Send + 'static,
    {
        self.counted.write();
        self.writer
            .run(move |c, wanted| c.transaction(wanted, |c| ready(op(c))))
            .await
    }

    /// Writers take turns (`BEGIN IMMEDIATE`), so journal ids are assigned in commit order
    /// already.
    async fn journal_write<T, F>(&self, _accounts: Vec<i64>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T> + Send + 'static,
    {
        self.write(op).await
    }

    /// Migrations take the write lock like any writer.
    async fn migration<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T> + Send + 'static,
    {
        self.write(op).await
    }

    /// Nothing to take: a write transaction holds the database's write lock from its start, so
    /// the writers of a pair's links (which read its runs, then rewrite them) take turns already.
    async fn lock_pair(_c: &mut Conn, _pair: PairId) -> Result<()> {
        Ok(())
    }

    /// The migrations are written in SQLite's spelling.
    fn dialect(sql: &str) -> Cow<'_, str> {
        Cow::Borrowed(sql)
    }

    /// Closes both connections (the last one to close checkpoints the WAL into the file).
    /// Operations after this fail.
    async fn close_connections(&self) {
        self.writer.close().await;
        for reader in &self.readers {
            reader.close().await;
        }
    }
}

/// Opens the store file's connection with the store's settings.
fn open_conn(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags)?;
    configure(&db)?;
    Ok(db)
}

fn configure(db: &Connection) -> Result<()> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.pragma_update(None, "foreign_keys", true)?;
    db.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    Ok(())
}

/// Opens the writer's connection and puts the file in WAL mode (a setting the file keeps).
/// Switching needs the file to itself, and SQLite answers "database is locked" at once, without
/// waiting its busy timeout, while another process or store is opening the same new file: so
/// the switch is retried, up to that timeout.
fn open_wal(path: &Path) -> Result<Connection> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        let attempt = open_conn(path).and_then(|db| {
            let mode: String =
                db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Corrupt(format!(
                    "{} stays in journal mode {mode}, not WAL",
                    path.display()
                )));
            }
            Ok(db)
        });
        match attempt {
            Err(StoreError::Sqlite(e)) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// SQLite's `SQLITE_BUSY`, whatever its extended code.
fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

/// Polls an operation that runs on its connection's thread: every await in it is a statement
/// on that connection, ready at once, so it completes in one poll.
fn ready<T>(op: Op<'_, T>) -> Result<T> {
    let mut op = pin!(op);
    match op.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::Corrupt(
            "a state store operation waited for something other than its connection".into(),
        )),
    }
}

/// A connection as the statements use it (see `statements.rs`). Its methods are `async` to
/// match PostgreSQL's; each runs at once, on the connection's thread.
pub(super) struct Conn {
    db: Connection,
}

impl Conn {
    pub(super) async fn execute(&mut self, sql: &str, args: Vec<Value>) -> Result<u64> {
        let mut statement = self.statement(sql, args)?;
        Ok(statement.raw_execute()? as u64)
    }

    pub(super) async fn fetch_all(&mut self, sql: &str, args: Vec<Value>) -> Result<Vec<Row>> {
        let mut statement = self.statement(sql, args)?;
        let columns: Arc<[String]> = statement
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        // Every row is stepped to, and the statement to its end: a RETURNING statement's
        // error (a constraint) comes at its end.
        while let Some(row) = rows.next()? {
            let values = (0..columns.len())
                .map(|i| value_of(row.get_ref(i)?))
                .collect::<Result<Vec<Value>>>()?;
            out.push(Row {
                columns: Arc::clone(&columns),
                values,
            });
        }
        Ok(out)
    }

    pub(super) async fn fetch_optional(
        &mut self,
        sql: &str,
        args: Vec<Value>,
    ) -> Result<Option<Row>> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub(super) async fn fetch_one(&mut self, sql: &str, args: Vec<Value>) -> Result<Row> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from {sql}")))
    }

    /// Statements without parameters, `;` between them (a migration).
    pub(super) async fn execute_script(&mut self, sql: &str) -> Result<()> {
        Ok(self.db.execute_batch(sql)?)
    }

    /// The next statements wait at most `left` for a lock another connection holds.
    fn wait_at_most(&self, left: Duration) -> Result<()> {
        Ok(self.db.busy_timeout(left)?)
    }

    /// `sql` prepared (or taken from the cache) with `args` bound.
    fn statement(&self, sql: &str, args: Vec<Value>) -> Result<rusqlite::CachedStatement<'_>> {
        let mut statement = self.db.prepare_cached(&sqlite_params(sql))?;
        for (i, arg) in args.into_iter().enumerate() {
            match arg {
                Value::Int(v) => statement.raw_bind_parameter(i + 1, v)?,
                Value::Text(v) => statement.raw_bind_parameter(i + 1, v)?,
            }
        }
        Ok(statement)
    }

    /// Runs `op` in a write transaction: committed when it succeeds and its caller still waits
    /// for it (`wanted`), rolled back when it (or the commit) fails or nobody waits any more. A
    /// caller that gave up (its timeout, a session that ended) has reported the write as not
    /// done, as a dropped transaction is.
    fn transaction<T>(
        &mut self,
        wanted: &dyn Fn() -> bool,
        op: impl FnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        self.control("BEGIN IMMEDIATE")?;
        let result = op(self).and_then(|v| {
            if !wanted() {
                return Err(StoreError::Corrupt(
                    "a write whose caller stopped waiting is rolled back".into(),
                ));
            }
            self.control("COMMIT")?;
            Ok(v)
        });
        // A failed COMMIT may leave the transaction open (SQLITE_BUSY), or SQLite may have
        // rolled it back already (a full disk).
        if !self.db.is_autocommit()
            && let Err(e) = self.control("ROLLBACK")
        {
            tracing::warn!("state store: rolling back a failed write: {e}");
        }
        result
    }

    /// A transaction's `BEGIN`, `COMMIT` or `ROLLBACK`, prepared once: every write runs two, and
    /// parsing them each time added about a third to a `BEGIN IMMEDIATE`.
    fn control(&self, sql: &'static str) -> Result<()> {
        self.db.prepare_cached(sql)?.raw_execute()?;
        Ok(())
    }
}

fn value_of(value: rusqlite::types::ValueRef<'_>) -> Result<Value> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => Value::Int(None),
        ValueRef::Integer(v) => Value::Int(Some(v)),
        ValueRef::Text(v) => {
            Value::Text(Some(String::from_utf8(v.to_vec()).map_err(|_| {
                StoreError::Corrupt("a text column that is not UTF-8".into())
            })?))
        }
        ValueRef::Real(_) | ValueRef::Blob(_) => {
            return Err(StoreError::Corrupt(
                "a column that is neither an integer nor text".into(),
            ));
        }
    })
}

/// A job for a connection's thread.
type Job = Box<dyn FnOnce(&mut Conn) + Send>;

enum Message {
    Run(Job),
    /// Closes the connection; the thread ends.
    Close(oneshot::Sender<()>),
}

/// A connection on a thread of its own, running the jobs sent to it in order. The thread ends,
/// closing the connection, on [`Worker::close`] or when the last store holding it is dropped.
#[derive(Clone, Debug)]
struct Worker {
    jobs: mpsc::Sender<Message>,
    /// Jobs sent and not finished.
    in_flight: Arc<AtomicUsize>,
}

impl Worker {
    /// Starts the thread; `open` makes its connection there. Errors when it cannot.
    async fn start(
        role: &'static str,
        open: impl FnOnce() -> Result<Connection> + Send + 'static,
    ) -> Result<Worker> {
        let (jobs, queue) = mpsc::channel::<Message>();
        let (opened_tx, opened) = oneshot::channel();
        // The thread logs where its opener does (the configured logger), not to the default.
        let log = tracing::dispatcher::get_default(tracing::Dispatch::clone);
        std::thread::Builder::new()
            .name(format!("state-{role}"))
            .spawn(move || {
                tracing::dispatcher::with_default(&log, || Worker::serve(open, opened_tx, queue))
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the state {role}: {e}")))?;
        opened.await.map_err(|_| closed())??;
        Ok(Worker {
            jobs,
            in_flight: Arc::default(),
        })
    }

    /// The thread's work: opens the connection, says whether it could, then runs the jobs.
    fn serve(
        open: impl FnOnce() -> Result<Connection>,
        opened_tx: oneshot::Sender<Result<()>>,
        queue: mpsc::Receiver<Message>,
    ) {
        let mut conn = match open() {
            Ok(db) => Conn { db },
            Err(e) => {
                // Nobody waits for the error once the opener is gone.
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        if opened_tx.send(Ok(())).is_err() {
            return;
        }
        while let Ok(message) = queue.recv() {
            match message {
                Message::Run(job) => {
                    // A bug that panics fails its own operation (its caller gets no
                    // answer), not the connection: a transaction it left open is
                    // rolled back, and the thread goes on.
                    let job = std::panic::AssertUnwindSafe(|| job(&mut conn));
                    if std::panic::catch_unwind(job).is_err()
                        && !conn.db.is_autocommit()
                        && let Err(e) = conn.db.execute_batch("ROLLBACK")
                    {
                        tracing::warn!("state store: rolling back after a panic: {e}");
                    }
                }
                Message::Close(done) => {
                    drop(conn);
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Runs `job` on the connection and returns its result. The job is given whether its
    /// caller still waits, and waits for the database's locks at most [`BUSY_TIMEOUT`] from
    /// when it was sent, however long the jobs before it waited: as each connection of a pool
    /// would. A job whose caller stopped waiting before it began is skipped.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Conn, &dyn Fn() -> bool) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (done, result) = oneshot::channel();
        let sent = Instant::now();
        let finished = InFlight::count(&self.in_flight);
        let job: Job = Box::new(move |c| {
            let _finished = finished;
            if done.is_closed() {
                return;
            }
            let result = c
                .wait_at_most(BUSY_TIMEOUT.saturating_sub(sent.elapsed()))
                .and_then(|()| job(c, &|| !done.is_closed()));
            // Nobody to tell when the caller stopped waiting meanwhile (a write was rolled back).
            let _ = done.send(result);
        });
        self.jobs.send(Message::Run(job)).map_err(|_| closed())?;
        result.await.map_err(|_| {
            StoreError::Corrupt("a state store operation failed without an answer".into())
        })?
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Message::Close(done)).is_ok() {
            // The thread answers once the connection is closed; a thread gone already has closed it.
            let _ = closed.await;
        }
    }
}

/// One job counted in its worker's [`Worker::in_flight`] until dropped: when the job ends, or
/// is dropped unrun (the thread gone).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn count(in_flight: &Arc<AtomicUsize>) -> InFlight {
        in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(in_flight))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn closed() -> StoreError {
    StoreError::Corrupt("the state store is closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::{MIGRATIONS, args, now, op};
    use crate::store::{AccountId, AccountKey, AccountState, Link, MailboxState, Phase, Store};

    /// Column 0 of the first row of `sql`, read on the store's reader.
    async fn read_one<T: super::super::sql::FromValue + Send + 'static>(
        store: &SqliteStore,
        sql: &'static str,
        args: Vec<Value>,
    ) -> T {
        store
            .read(move |c| op(async move { c.fetch_one(sql, args).await?.get(0) }))
            .await
            .unwrap()
    }

    /// What runs on the store's threads (a failed write's rollback, a job's panic) logs where
    /// the code that opened the store logs: the configured logger, not the process's default.
    #[tokio::test]
    async fn the_stores_threads_log_where_their_opener_does() {
        use tracing::instrument::WithSubscriber;
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logged = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&logged);
        let configured = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(move || Sink(Arc::clone(&sink)))
                .finish(),
        );
        let store = SqliteStore::open_memory()
            .with_subscriber(configured)
            .await
            .unwrap();
        store
            .read(|_| {
                op(async {
                    tracing::warn!("said on the reader's thread");
                    Ok(())
                })
            })
            .await
            .unwrap();
        let logged = String::from_utf8(logged.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("said on the reader's thread"), "{logged:?}");
    }

    /// A mirror entry's read of its messages' links looks up the runs and the per-message links
    /// of its NEW UIDs (indexes), and does not read every run of the folder.
    #[tokio::test]
    async fn links_are_read_by_their_new_uids() {
        let store = SqliteStore::open_memory().await.unwrap();
        let plan: Vec<String> = store
            .read(|c| {
                op(async move {
                    let sql = format!("EXPLAIN QUERY PLAN {}", statements::links_by_new_sql(2));
                    let rows = c
                        .fetch_all(&sql, args![1_i64, 5_u32, 9_u32, 20_u32, 20_u32])
                        .await?;
                    rows.iter().map(|r| r.get::<String>(3)).collect()
                })
            })
            .await
            .unwrap();
        let has = |step: &str| plan.iter().any(|s| s.contains(step));
        // Both bounds of the runs' NEW UIDs used; neither table read by its pair alone.
        assert!(
            has("link_runs_by_new (pair_id=? AND new_start>? AND new_start<?)")
                && has("links_by_new_uid (pair_id=? AND new_uid>? AND new_uid<?)")
                && !plan.iter().any(|s| s.ends_with("(pair_id=?)")),
            "{plan:?}"
        );
    }

    fn key(user: &str) -> AccountKey {
        AccountKey {
            old_host: "old.example".into(),
            old_user: user.into(),
            new_host: "new.example".into(),
            new_user: user.into(),
        }
    }

    fn link(old_uid: u32, new_uid: u32, flags: &str) -> Link {
        Link {
            old_uid,
            new_uid,
            old_flags: flags.into(),
            new_flags: flags.into(),
            ident: None,
        }
    }

    async fn alice_inbox(store: &SqliteStore) -> (AccountId, PairId) {
        let account = store.account(&key("alice")).await.unwrap();
        let pair = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
        (account, pair.id)
    }

    /// A long read (the status of thousands of accounts, a sweep's scan) does not hold up the
    /// reads behind it: another connection answers them meanwhile.
    #[tokio::test]
    async fn a_long_read_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db"))
            .await
            .unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let long = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .read(move |c| {
                        let _ = started.send(());
                        let _ = gate.recv(); // the long read, until the test releases it
                        op(async move { c.fetch_one("SELECT 1", args![]).await?.get::<i64>(0) })
                    })
                    .await
            }
        });
        running.await.unwrap();
        let short = read_one::<i64>(&store, "SELECT 2", args![]);
        let answered = tokio::time::timeout(Duration::from_secs(10), short).await;
        assert_eq!(
            answered.ok(),
            Some(2),
            "the short read waited behind the long one"
        );
        assert!(!long.is_finished());
        release.send(()).unwrap();
        assert_eq!(long.await.unwrap().unwrap(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn file_store_survives_restart_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("imapferry.db");
        let state = MailboxState {
            uidvalidity: 42,
            uidnext: 3,
            highestmodseq: 0,
            messages: 2,
        };

        let store = SqliteStore::open(&path).await.unwrap();
        let (account, pair) = alice_inbox(&store).await;
        store
            .add_links(pair, &[link(1, 1, "\\Seen"), link(2, 2, "")])
            .await
            .unwrap();
        store.tombstone(pair, &[2]).await.unwrap();
        store
            .save_pair_state(pair, Some(state), Some(state), 3, Phase::Synced)
            .await
            .unwrap();
        store
            .set_account_state(account, AccountState::Partial, None)
            .await
            .unwrap();
        // No close: a crash leaves the WAL behind.
        drop(store);

        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.account(&key("alice")).await.unwrap(), account);
        assert_eq!(
            store.account_state(account).await.unwrap(),
            AccountState::Partial
        );
        let got = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
        assert_eq!(
            (got.id, got.old, got.new, got.adopt_from, got.phase),
            (pair, Some(state), Some(state), 3, Phase::Synced)
        );
        assert_eq!(store.links(pair).await.unwrap(), vec![link(1, 1, "\\Seen")]);
        assert_eq!(store.tombstones(pair).await.unwrap(), vec![2]);

        let mode: String = read_one(&store, "PRAGMA journal_mode", args![]).await;
        assert_eq!(mode.to_lowercase(), "wal");
        for store in store.readers.iter().chain([&store.writer]) {
            let settings = store
                .run(|c, _| {
                    let pragma = |name: &str| -> Result<i64> {
                        Ok(c.db.pragma_query_value(None, name, |row| row.get(0))?)
                    };
                    Ok((pragma("synchronous")?, pragma("foreign_keys")?))
                })
                .await
                .unwrap();
            assert_eq!(settings, (2, 1), "synchronous = FULL, foreign keys on");
        }
        store.close().await;

        // A second open (and a concurrent one) applies nothing again.
        let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
        let (a, b) = (a.unwrap(), b.unwrap());
        let versions: Vec<i64> = a
            .select(
                "SELECT version FROM schema_version ORDER BY version",
                args![],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0).unwrap())
            .collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
        assert_eq!(b.links(pair).await.unwrap().len(), 1);
        a.close().await;
        b.close().await;
    }

    /// A write whose caller stopped waiting (its timeout) while another process held the file
    /// is not committed once the file is free: the caller has reported it as not done. The
    /// writes sent after it go through.
    #[tokio::test]
    async fn a_write_given_up_on_is_not_committed_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let (_, pair) = alice_inbox(&store).await;
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let given_up =
            tokio::time::timeout(Duration::from_millis(200), store.tombstone(pair, &[7])).await;
        assert!(given_up.is_err(), "the write waited for the lock");
        holder.execute_batch("COMMIT").unwrap();
        store.tombstone(pair, &[8]).await.unwrap();
        assert_eq!(store.tombstones(pair).await.unwrap(), vec![8]);
        store.close().await;
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .change(
                "INSERT INTO schema_version (version, applied) VALUES (1000, 0)",
                args![],
            )
            .await
            .unwrap();
        store.close().await;
        assert!(matches!(
            SqliteStore::open(&path).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn journal_table_exists() {
        let store = SqliteStore::open_memory().await.unwrap();
        let account = store.account(&key("alice")).await.unwrap();
        store
            .change(
                "INSERT INTO journal (account_id, created, kind, payload) \
                 VALUES ($1, $2, 'store', '{}')",
                args![account, now()],
            )
            .await
            .unwrap();
        let pending: i64 = read_one(
            &store,
            "SELECT COUNT(*) FROM journal WHERE account_id = $1 AND done = 0",
            args![account],
        )
        .await;
        assert_eq!(pending, 1);
    }

    /// A file written by schema version 7 (migrations 1 to 7, one row per link) converts to
    /// runs on open, keeping keyed links per message; the links read back are the same.
    #[tokio::test]
    async fn version_7_links_become_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.db");
        let mut want: Vec<Link> = (1..=1000).map(|u| link(u, u + 7, "\\Seen")).collect();
        want[499].old_flags = String::new();
        want[700].ident = Some("key701".into());
        want.extend((1001..=1010).map(|u| link(u, 3000 - u, "")));
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE schema_version (version BIGINT NOT NULL PRIMARY KEY, \
                 applied BIGINT NOT NULL)",
            )
            .unwrap();
            for (version, sql) in (1..=7).zip(MIGRATIONS) {
                db.execute_batch(sql).unwrap();
                db.execute(
                    "INSERT INTO schema_version (version, applied) VALUES (?1, 0)",
                    [version],
                )
                .unwrap();
            }
            db.execute_batch(
                "INSERT INTO accounts (old_host, old_user, new_host, new_user, created, updated) \
                 VALUES ('old.example', 'alice', 'new.example', 'alice', 0, 0); \
                 INSERT INTO folder_pairs (account_id, old_name, new_name, updated) \
                 VALUES (1, 'INBOX', 'INBOX', 0);",
            )
            .unwrap();
            for l in &want {
                db.execute(
                    "INSERT INTO links (pair_id, old_uid, new_uid, old_flags, new_flags, ident) \
                     VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![l.old_uid, l.new_uid, l.old_flags, l.new_flags, l.ident],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open_existing(&path).await.unwrap();
        assert_eq!(store.links(1).await.unwrap(), want);
        let runs: i64 = read_one(&store, "SELECT COUNT(*) FROM link_runs", args![]).await;
        let links: i64 = read_one(&store, "SELECT COUNT(*) FROM links", args![]).await;
        // 1-499, 500, 501-700, 702-1000, and ten runs of one (descending NEW UIDs).
        assert_eq!((runs, links), (14, 1));
        store.close().await;
        let store = SqliteStore::open_existing(&path).await.unwrap();
        assert_eq!(store.links(1).await.unwrap(), want);
        store.close().await;
    }

    #[tokio::test]
    async fn version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.db");
        // A database written by the first release: schema version 1 only.
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE schema_version (version BIGINT NOT NULL PRIMARY KEY, \
                 applied BIGINT NOT NULL)",
            )
            .unwrap();
            db.execute_batch(MIGRATIONS[0]).unwrap();
            db.execute_batch(
                "INSERT INTO schema_version (version, applied) VALUES (1, 0); \
                 INSERT INTO accounts (old_host, old_user, new_host, new_user, state, reason, \
                 created, updated) VALUES ('old.example', 'alice', 'new.example', 'alice', \
                 'failed', 'bad password', 0, 0)",
            )
            .unwrap();
        }
        let store = SqliteStore::open_existing(&path).await.unwrap();
        let got = store.account_summaries().await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].state, got[0].reason.as_deref(), got[0].last_activity),
            (AccountState::Failed, Some("bad password"), None)
        );
        store.close().await;
    }
}
