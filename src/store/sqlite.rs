//! The embedded [`Store`]: one SQLite file (WAL, `synchronous = FULL`, so every acknowledged write
//! survives `kill -9` and power loss), created and migrated on first use. Its statements are the
//! ones shared with PostgreSQL (`statements.rs`); this file opens the file and takes SQLite's locks.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection, Transaction};

use super::sql::plain_params;
use super::{PairId, Result, StoreError};

/// The [`Store`](super::Store) implementation, shared with PostgreSQL.
mod statements {
    type SqlStore = super::SqliteStore;
    type Db = sqlx::Sqlite;
    const SHARED: bool = false;
    const JOIN_WRITES: bool = true;
    include!("statements.rs");
}

/// How long a writer waits for another connection (or process) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections of a file store: SQLite has one writer at a time, WAL lets readers run beside it.
const MAX_CONNECTIONS: u32 = 4;

/// The SQLite [`Store`]. Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        Self::open_file(path, true).await
    }

    /// Opens an existing store file (bringing its schema up to date) and never creates one:
    /// a missing file is an error. For tools that only look at (or annotate) existing state.
    pub async fn open_existing(path: &Path) -> Result<SqliteStore> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        Self::open_file(path, false).await
    }

    async fn open_file(path: &Path, create: bool) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        use_wal(&options).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_release(|conn, _| Box::pin(async move { reusable(conn).await }))
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        tracing::debug!(path = %path.display(), "state store opened");
        Ok(store)
    }

    /// A private in-memory store (for tests): gone when the store is dropped.
    pub async fn open_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // An in-memory database lives and dies with its connection: exactly one, kept forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A write transaction that holds the write lock from its start (`BEGIN IMMEDIATE`), so it
    /// waits for other writers up to the busy timeout instead of failing when it upgrades.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Writers take turns (`BEGIN IMMEDIATE`), so ids are assigned in commit order already.
    async fn journal_tx(&self, _accounts: &[i64]) -> Result<Transaction<'static, Sqlite>> {
        self.write_tx().await
    }

    /// Migrations take the write lock like any writer.
    async fn migration_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        self.write_tx().await
    }

    /// Nothing to take: a write transaction holds the database's write lock from its start, so
    /// the writers of a pair's links (which read its runs, then rewrite them) take turns already.
    async fn lock_pair(_tx: &mut Transaction<'static, Sqlite>, _pair: PairId) -> Result<()> {
        Ok(())
    }

    /// The migrations are written in SQLite's spelling.
    fn dialect(sql: &str) -> Cow<'_, str> {
        Cow::Borrowed(sql)
    }

    /// A statement built for a batch, its parameters in SQLite's spelling (see
    /// [`plain_params`]): plain `?` where the statement allows, else `?N`, which is correct but
    /// costs a scan per parameter (debug builds stop on such a statement). SQLite would take
    /// `$N` as a name, looked up by a scan too. The statements use `$` for nothing else.
    fn batch(sql: String) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(plain_params(&sql).unwrap_or_else(|| {
            debug_assert!(false, "batch statement with parameters out of order: {sql}");
            sql.replace('$', "?")
        }))
    }
}

/// Puts the file in WAL mode (a setting the file keeps), on one connection before the pool opens
/// any. Switching needs the file to itself, and SQLite answers "database is locked" at once,
/// without waiting its busy timeout, while another process or pool is opening the same new
/// file: so the switch is retried, up to that timeout.
async fn use_wal(options: &SqliteConnectOptions) -> Result<()> {
    let options = options.clone().journal_mode(SqliteJournalMode::Wal);
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match SqliteConnection::connect_with(&options).await {
            Ok(conn) => return Ok(conn.close().await?),
            Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// SQLite's `SQLITE_BUSY` (5), whatever its extended code.
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

/// Whether a connection going back to the pool can be used again. A COMMIT that fails (the
/// disk is full) leaves sqlx counting the transaction as open, and the ROLLBACK queued when the
/// transaction is dropped fails too when SQLite has already rolled it back: every later
/// `BEGIN` on that connection would fail. The ping runs the queued rollback first; a
/// connection still counted in a transaction is closed and the pool opens a fresh one. One
/// counted in none has no rollback queued (the count drops when it runs): it comes back as it
/// is, without the ping's round trip to its thread.
async fn reusable(conn: &mut SqliteConnection) -> std::result::Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("a state store connection left in a failed transaction is closed");
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::{MIGRATIONS, now};
    use crate::store::{AccountKey, AccountState, Link, MailboxState, Phase, Store};
    use sqlx::{AssertSqlSafe, Row};

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
        let account = store.account(&key("alice")).await.unwrap();
        let pair = store
            .folder_pair(account, "INBOX", "INBOX")
            .await
            .unwrap()
            .id;
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

        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode.to_lowercase(), "wal");
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(sync, 2, "synchronous = FULL");
        let fk: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(fk, 1);
        store.close().await;

        // A second open (and a concurrent one) applies nothing again.
        let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
        let (a, b) = (a.unwrap(), b.unwrap());
        let versions: Vec<i64> = sqlx::query("SELECT version FROM schema_version ORDER BY version")
            .fetch_all(&a.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
        assert_eq!(b.links(pair).await.unwrap().len(), 1);
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.db");
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query("INSERT INTO schema_version (version, applied) VALUES (1000, 0)")
            .execute(&store.pool)
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
        sqlx::query("INSERT INTO journal (account_id, created, kind, payload) VALUES ($1, $2, 'store', '{}')")
            .bind(account)
            .bind(now())
            .execute(&store.pool)
            .await
            .unwrap();
        let pending: i64 =
            sqlx::query("SELECT COUNT(*) FROM journal WHERE account_id = $1 AND done = 0")
                .bind(account)
                .fetch_one(&store.pool)
                .await
                .unwrap()
                .get(0);
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
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TABLE schema_version (version BIGINT NOT NULL PRIMARY KEY, \
                 applied BIGINT NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
            for (version, sql) in (1..=7).zip(MIGRATIONS) {
                sqlx::raw_sql(AssertSqlSafe(*sql))
                    .execute(&pool)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO schema_version (version, applied) VALUES ($1, 0)")
                    .bind(version)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            sqlx::raw_sql(
                "INSERT INTO accounts (old_host, old_user, new_host, new_user, created, updated) \
                 VALUES ('old.example', 'alice', 'new.example', 'alice', 0, 0); \
                 INSERT INTO folder_pairs (account_id, old_name, new_name, updated) \
                 VALUES (1, 'INBOX', 'INBOX', 0);",
            )
            .execute(&pool)
            .await
            .unwrap();
            for l in &want {
                sqlx::query(
                    "INSERT INTO links (pair_id, old_uid, new_uid, old_flags, new_flags, ident) \
                     VALUES (1, $1, $2, $3, $4, $5)",
                )
                .bind(i64::from(l.old_uid))
                .bind(i64::from(l.new_uid))
                .bind(&l.old_flags)
                .bind(&l.new_flags)
                .bind(&l.ident)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open_existing(&path).await.unwrap();
        assert_eq!(store.links(1).await.unwrap(), want);
        let count = |table: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            }
        };
        // 1-499, 500, 501-700, 702-1000, and ten runs of one (descending NEW UIDs).
        assert_eq!((count("link_runs").await, count("links").await), (14, 1));
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
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TABLE schema_version (version BIGINT NOT NULL PRIMARY KEY, \
                 applied BIGINT NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
            sqlx::raw_sql(MIGRATIONS[0]).execute(&pool).await.unwrap();
            sqlx::query("INSERT INTO schema_version (version, applied) VALUES (1, 0); ")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO accounts (old_host, old_user, new_host, new_user, state, reason, \
                 created, updated) VALUES ('old.example', 'alice', 'new.example', 'alice', \
                 'failed', 'bad password', 0, 0)",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
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
