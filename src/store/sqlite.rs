//! The embedded [`Store`]: one SQLite file (WAL, `synchronous = FULL`, so every acknowledged write
//! survives `kill -9` and power loss), created and migrated on first use. The schema
//! (`schema.sql`) is written in the SQL subset shared with PostgreSQL, and so is every statement
//! here (`$n` parameters, `ON CONFLICT`, multi-row `VALUES`), for the PostgreSQL store to reuse.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, Sqlite, SqliteConnection, Transaction};

use super::{
    AccountId, AccountKey, AccountState, AccountSummary, FolderPair, FolderSummary, JournalEntry,
    Link, LinkFlags, MailboxState, PairId, Phase, Result, Store, StoreError,
};

/// The schema migrations, in order: migration `i` brings the database to version `i + 1`.
/// Each runs in one transaction, together with its row in `schema_version`.
/// Released migrations are never edited; changes are new entries at the end.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("0002_activity.sql"),
    include_str!("0003_message_errors.sql"),
    include_str!("0004_journal_retries.sql"),
    include_str!("0005_writes_in_flight.sql"),
];

/// How long a writer waits for another connection (or process) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections of a file store: SQLite has one writer at a time, WAL lets readers run beside it.
const MAX_CONNECTIONS: u32 = 4;

/// Most parameters in one statement: below SQLite's historic limit of 999
/// (and PostgreSQL's 65535), while large enough that a batch costs a few statements per thousand rows.
const MAX_PARAMS: usize = 900;

/// Columns of `folder_pairs`, in the order [`pair_from_row`] reads them.
const PAIR_COLUMNS: &str = "id, account_id, old_name, new_name, \
     old_uidvalidity, old_uidnext, old_highestmodseq, old_messages, \
     new_uidvalidity, new_uidnext, new_highestmodseq, new_messages, adopt_from, phase";

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
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
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

    /// Closes the connections after the pending operations (the WAL is checkpointed).
    /// Dropping the store without closing it loses nothing that was committed.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Applies the migrations this database has not seen yet, each in one transaction.
    async fn migrate(&self) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_version (\
             version BIGINT NOT NULL PRIMARY KEY, applied BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let known = i64::try_from(MIGRATIONS.len())
            .map_err(|_| StoreError::Corrupt("too many migrations".into()))?;
        let current = schema_version(&self.pool).await?;
        if current > known {
            return Err(StoreError::Corrupt(format!(
                "schema version {current} is newer than this imapferry knows ({known}); \
                 use a newer imapferry"
            )));
        }
        for (version, sql) in (1..).zip(MIGRATIONS.iter().copied()) {
            if version <= current {
                continue;
            }
            let mut tx = self.write_tx().await?;
            // Another process may have migrated since we looked.
            if schema_version(&mut *tx).await? >= version {
                tx.rollback().await?;
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version, applied) VALUES ($1, $2)")
                .bind(version)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "state store schema migrated");
        }
        Ok(())
    }

    /// `rows` accounts were updated: `true`, or `false` when the account exists but its state
    /// did not allow the change (an error when there is no such account).
    async fn changed(&self, account: AccountId, rows: u64) -> Result<bool> {
        if rows > 0 {
            return Ok(true);
        }
        self.account_state(account).await.map(|_| false)
    }

    /// `from` → `to` in one conditional statement.
    async fn move_state(
        &self,
        account: AccountId,
        from: AccountState,
        to: AccountState,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET state = $1, reason = NULL, updated = $2 WHERE id = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(now())
        .bind(account)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        self.changed(account, done.rows_affected()).await
    }

    /// A write transaction that holds the write lock from its start (`BEGIN IMMEDIATE`), so it
    /// waits for other writers up to the busy timeout instead of failing when it upgrades.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn find_pair(&self, account: AccountId, old_name: &str) -> Result<Option<FolderPair>> {
        let sql = format!(
            "SELECT {PAIR_COLUMNS} FROM folder_pairs WHERE account_id = $1 AND old_name = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(account)
            .bind(old_name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(pair_from_row).transpose()
    }

    /// Deletes the rows of `table` (`links` or `tombstones`) for these OLD UIDs, in `tx`.
    async fn delete_uids(
        tx: &mut Transaction<'static, Sqlite>,
        table: &str,
        pair: PairId,
        old_uids: &[u32],
    ) -> Result<()> {
        for chunk in old_uids.chunks(MAX_PARAMS - 1) {
            let sql = format!(
                "DELETE FROM {table} WHERE pair_id = $1 AND old_uid IN {}",
                tuples(1, chunk.len(), 2, "")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(pair);
            for uid in chunk {
                query = query.bind(i64::from(*uid));
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn delete_batch(&self, table: &str, pair: PairId, old_uids: &[u32]) -> Result<()> {
        if old_uids.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        Self::delete_uids(&mut tx, table, pair, old_uids).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Whether a connection going back to the pool can be used again. A COMMIT that fails (the
/// disk is full) leaves sqlx counting the transaction as open, and the ROLLBACK queued when the
/// transaction is dropped fails too when SQLite has already rolled it back: every later
/// `BEGIN` on that connection would fail. The ping runs the queued rollback first; a
/// connection still counted in a transaction is closed and the pool opens a fresh one.
async fn reusable(conn: &mut SqliteConnection) -> std::result::Result<bool, sqlx::Error> {
    conn.ping().await?;
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("a state store connection left in a failed transaction is closed");
    }
    Ok(clean)
}

#[async_trait]
impl Store for SqliteStore {
    async fn account(&self, key: &AccountKey) -> Result<AccountId> {
        const FIND: &str = "SELECT id FROM accounts \
             WHERE old_host = $1 AND old_user = $2 AND new_host = $3 AND new_user = $4";
        let find = || {
            sqlx::query(FIND)
                .bind(key.old_host.as_str())
                .bind(key.old_user.as_str())
                .bind(key.new_host.as_str())
                .bind(key.new_user.as_str())
        };
        if let Some(row) = find().fetch_optional(&self.pool).await? {
            return Ok(row.try_get(0)?);
        }
        let now = now();
        sqlx::query(
            "INSERT INTO accounts (old_host, old_user, new_host, new_user, state, created, updated) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (old_host, old_user, new_host, new_user) DO NOTHING",
        )
        .bind(key.old_host.as_str())
        .bind(key.old_user.as_str())
        .bind(key.new_host.as_str())
        .bind(key.new_user.as_str())
        .bind(AccountState::Pending.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        match find().fetch_optional(&self.pool).await? {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(StoreError::Corrupt(format!(
                "account {}@{} was inserted but cannot be found",
                key.old_user, key.old_host
            ))),
        }
    }

    async fn account_state(&self, account: AccountId) -> Result<AccountState> {
        let row = sqlx::query("SELECT state FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no account {account}")))?;
        let state: String = row.try_get(0)?;
        AccountState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("account {account} has unknown state {state:?}"))
        })
    }

    async fn set_account_state(
        &self,
        account: AccountId,
        state: AccountState,
        reason: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET state = $1, reason = $2, updated = $3 \
             WHERE id = $4 AND state <> $5 AND state <> $6",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now())
        .bind(account)
        .bind(AccountState::Retired.as_str())
        .bind(AccountState::Diverged.as_str())
        .execute(&self.pool)
        .await?;
        self.changed(account, done.rows_affected()).await
    }

    async fn mark_diverged(&self, account: AccountId, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE accounts SET state = $1, reason = $2, updated = $3 WHERE id = $4 AND state <> $5",
        )
        .bind(AccountState::Diverged.as_str())
        .bind(reason)
        .bind(now())
        .bind(account)
        .bind(AccountState::Retired.as_str())
        .execute(&self.pool)
        .await?;
        self.changed(account, done.rows_affected()).await
    }

    async fn mark_writes_in_flight(&self, account: AccountId, on: bool) -> Result<()> {
        sqlx::query("UPDATE accounts SET writes_in_flight = $1 WHERE id = $2")
            .bind(on.then(now))
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn writes_in_flight(&self, account: AccountId) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT writes_in_flight FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get(0)?,
            None => None,
        })
    }

    async fn clear_diverged(&self, account: AccountId, state: AccountState) -> Result<bool> {
        self.move_state(account, AccountState::Diverged, state)
            .await
    }

    async fn unretire(&self, account: AccountId) -> Result<bool> {
        self.move_state(account, AccountState::Retired, AccountState::Partial)
            .await
    }

    async fn folder_pair(
        &self,
        account: AccountId,
        old_name: &str,
        new_name: &str,
    ) -> Result<FolderPair> {
        let mut pair = match self.find_pair(account, old_name).await? {
            Some(pair) => pair,
            None => {
                sqlx::query(
                    "INSERT INTO folder_pairs (account_id, old_name, new_name, adopt_from, phase, updated) \
                     VALUES ($1, $2, $3, 1, $4, $5) \
                     ON CONFLICT (account_id, old_name) DO NOTHING",
                )
                .bind(account)
                .bind(old_name)
                .bind(new_name)
                .bind(Phase::New.as_str())
                .bind(now())
                .execute(&self.pool)
                .await?;
                self.find_pair(account, old_name).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "folder pair {old_name:?} of account {account} was inserted but cannot be found"
                    ))
                })?
            }
        };
        if pair.new_name != new_name {
            sqlx::query("UPDATE folder_pairs SET new_name = $1, updated = $2 WHERE id = $3")
                .bind(new_name)
                .bind(now())
                .bind(pair.id)
                .execute(&self.pool)
                .await?;
            tracing::info!(
                account,
                old = old_name,
                was = %pair.new_name,
                now = new_name,
                "folder pair maps to a new NEW folder"
            );
            pair.new_name = new_name.to_owned();
        }
        Ok(pair)
    }

    async fn folder_pairs(&self, account: AccountId) -> Result<Vec<FolderPair>> {
        let sql = format!(
            "SELECT {PAIR_COLUMNS} FROM folder_pairs WHERE account_id = $1 ORDER BY old_name"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pair_from_row).collect()
    }

    async fn save_pair_state(
        &self,
        pair: PairId,
        old: Option<MailboxState>,
        new: Option<MailboxState>,
        adopt_from: u32,
        phase: Phase,
    ) -> Result<()> {
        let old = DbSide::from_state(old)?;
        let new = DbSide::from_state(new)?;
        let done = sqlx::query(
            "UPDATE folder_pairs SET \
             old_uidvalidity = $1, old_uidnext = $2, old_highestmodseq = $3, old_messages = $4, \
             new_uidvalidity = $5, new_uidnext = $6, new_highestmodseq = $7, new_messages = $8, \
             adopt_from = $9, phase = $10, updated = $11 WHERE id = $12",
        )
        .bind(old.uidvalidity)
        .bind(old.uidnext)
        .bind(old.highestmodseq)
        .bind(old.messages)
        .bind(new.uidvalidity)
        .bind(new.uidnext)
        .bind(new.highestmodseq)
        .bind(new.messages)
        .bind(i64::from(adopt_from))
        .bind(phase.as_str())
        .bind(now())
        .bind(pair)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!("no folder pair {pair}")));
        }
        Ok(())
    }

    async fn reset_pair(&self, pair: PairId) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM links WHERE pair_id = $1")
            .bind(pair)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tombstones WHERE pair_id = $1")
            .bind(pair)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "UPDATE folder_pairs SET \
             old_uidvalidity = NULL, old_uidnext = NULL, old_highestmodseq = NULL, old_messages = NULL, \
             new_uidvalidity = NULL, new_uidnext = NULL, new_highestmodseq = NULL, new_messages = NULL, \
             adopt_from = 1, phase = $1, updated = $2 WHERE id = $3",
        )
        .bind(Phase::New.as_str())
        .bind(now())
        .bind(pair)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!("no folder pair {pair}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn links(&self, pair: PairId) -> Result<Vec<Link>> {
        let rows = sqlx::query(
            "SELECT old_uid, new_uid, old_flags, new_flags, ident FROM links \
             WHERE pair_id = $1 ORDER BY old_uid",
        )
        .bind(pair)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Link {
                    old_uid: get_u32(row, "old_uid")?,
                    new_uid: get_u32(row, "new_uid")?,
                    old_flags: row.try_get("old_flags")?,
                    new_flags: row.try_get("new_flags")?,
                    ident: row.try_get("ident")?,
                })
            })
            .collect()
    }

    /// Also drops any tombstone of these OLD UIDs: a (pair, OLD UID) is linked or tombstoned,
    /// never both. When `links` holds an OLD UID twice, the last one is kept.
    async fn add_links(&self, pair: PairId, links: &[Link]) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        // One row per OLD UID, ascending (PostgreSQL refuses an upsert touching a row twice, and
        // ascending keys fill the b-tree in order).
        let by_uid: BTreeMap<u32, &Link> = links.iter().map(|l| (l.old_uid, l)).collect();
        let links: Vec<&Link> = by_uid.into_values().collect();
        let uids: Vec<u32> = links.iter().map(|l| l.old_uid).collect();
        let mut tx = self.write_tx().await?;
        for chunk in links.chunks((MAX_PARAMS - 1) / 5) {
            let sql = format!(
                "INSERT INTO links (pair_id, old_uid, new_uid, old_flags, new_flags, ident) VALUES {} \
                 ON CONFLICT (pair_id, old_uid) DO UPDATE SET new_uid = excluded.new_uid, \
                 old_flags = excluded.old_flags, new_flags = excluded.new_flags, ident = excluded.ident",
                tuples(chunk.len(), 5, 2, "$1, ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(pair);
            for link in chunk {
                query = query
                    .bind(i64::from(link.old_uid))
                    .bind(i64::from(link.new_uid))
                    .bind(link.old_flags.as_str())
                    .bind(link.new_flags.as_str())
                    .bind(link.ident.as_deref());
            }
            query.execute(&mut *tx).await?;
        }
        Self::delete_uids(&mut tx, "tombstones", pair, &uids).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Updates for OLD UIDs without a link are ignored. When `updates` holds an OLD UID twice,
    /// the last one is kept.
    async fn update_link_flags(&self, pair: PairId, updates: &[LinkFlags]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let by_uid: BTreeMap<u32, &LinkFlags> = updates.iter().map(|u| (u.old_uid, u)).collect();
        let updates: Vec<&LinkFlags> = by_uid.into_values().collect();
        let mut tx = self.write_tx().await?;
        for chunk in updates.chunks((MAX_PARAMS - 1) / 3) {
            // `UPDATE … FROM (VALUES …)`: SQLite ≥ 3.33 and PostgreSQL; both name the columns of
            // a VALUES list column1, column2, …
            let sql = format!(
                "UPDATE links SET old_flags = v.column2, new_flags = v.column3 \
                 FROM (VALUES {}) AS v \
                 WHERE links.pair_id = $1 AND links.old_uid = v.column1",
                tuples(chunk.len(), 3, 2, "")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(pair);
            for update in chunk {
                query = query
                    .bind(i64::from(update.old_uid))
                    .bind(update.old_flags.as_str())
                    .bind(update.new_flags.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn remove_links(&self, pair: PairId, old_uids: &[u32]) -> Result<()> {
        self.delete_batch("links", pair, old_uids).await
    }

    /// OLD UIDs without a link are tombstoned too (they must not be copied either).
    async fn tombstone(&self, pair: PairId, old_uids: &[u32]) -> Result<()> {
        if old_uids.is_empty() {
            return Ok(());
        }
        let uids: Vec<u32> = old_uids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let now = now();
        let mut tx = self.write_tx().await?;
        Self::delete_uids(&mut tx, "links", pair, &uids).await?;
        for chunk in uids.chunks(MAX_PARAMS - 2) {
            let sql = format!(
                "INSERT INTO tombstones (pair_id, created, old_uid) VALUES {} \
                 ON CONFLICT (pair_id, old_uid) DO NOTHING",
                tuples(chunk.len(), 1, 3, "$1, $2, ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(pair).bind(now);
            for uid in chunk {
                query = query.bind(i64::from(*uid));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_message_errors(&self, pair: PairId, errors: &[(u32, String)]) -> Result<()> {
        let now = now();
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM message_errors WHERE pair_id = $1")
            .bind(pair)
            .execute(&mut *tx)
            .await?;
        for chunk in errors.chunks((MAX_PARAMS - 2) / 2) {
            let sql = format!(
                "INSERT INTO message_errors (pair_id, created, old_uid, reason) VALUES {} \
                 ON CONFLICT (pair_id, old_uid) DO UPDATE SET reason = excluded.reason",
                tuples(chunk.len(), 2, 3, "$1, $2, ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(pair).bind(now);
            for (uid, reason) in chunk {
                query = query.bind(i64::from(*uid)).bind(reason);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn message_errors(&self, pair: PairId) -> Result<Vec<(u32, String)>> {
        let rows = sqlx::query(
            "SELECT old_uid, reason FROM message_errors WHERE pair_id = $1 ORDER BY old_uid",
        )
        .bind(pair)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((get_u32(row, "old_uid")?, row.try_get("reason")?)))
            .collect()
    }

    async fn tombstones(&self, pair: PairId) -> Result<Vec<u32>> {
        let rows =
            sqlx::query("SELECT old_uid FROM tombstones WHERE pair_id = $1 ORDER BY old_uid")
                .bind(pair)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|row| get_u32(row, "old_uid")).collect()
    }

    async fn remove_tombstones(&self, pair: PairId, old_uids: &[u32]) -> Result<()> {
        self.delete_batch("tombstones", pair, old_uids).await
    }

    /// In an explicit transaction: SQLite writes the log at the commit, after `RETURNING` has
    /// produced its row, and a commit that fails there (a full disk) is reported only by the
    /// statement's end, which a caller that stops at the first row never sees. Autocommitted,
    /// every entry on a full disk came back with an id and was not in the journal.
    async fn journal_append(&self, account: AccountId, kind: &str, payload: &str) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO journal (account_id, created, kind, payload, done) \
             VALUES ($1, $2, $3, $4, 0) RETURNING id",
        )
        .bind(account)
        .bind(now())
        .bind(kind)
        .bind(payload)
        .fetch_one(&mut *tx)
        .await?;
        let id = row.try_get(0)?;
        tx.commit().await?;
        Ok(id)
    }

    async fn journal_pending(&self, account: AccountId, limit: u32) -> Result<Vec<JournalEntry>> {
        let rows = sqlx::query(
            "SELECT id, created, kind, payload, attempts, reason, retry_at FROM journal \
             WHERE account_id = $1 AND done = 0 ORDER BY id LIMIT $2",
        )
        .bind(account)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(journal_entry).collect()
    }

    /// In an explicit transaction, as [`Self::journal_append`].
    async fn journal_retry(&self, id: i64, reason: &str, retry_at: i64) -> Result<u32> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE journal SET attempts = attempts + 1, reason = $1, retry_at = $2 \
             WHERE id = $3 AND done = 0 RETURNING attempts",
        )
        .bind(reason)
        .bind(retry_at)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("no pending journal entry {id}")))?;
        let attempts = get_u32(&row, "attempts")?;
        tx.commit().await?;
        Ok(attempts)
    }

    async fn journal_park(&self, id: i64, reason: &str) -> Result<()> {
        let done = sqlx::query("UPDATE journal SET done = 2, reason = $1 WHERE id = $2")
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!("no journal entry {id}")));
        }
        Ok(())
    }

    async fn journal_parked(&self, account: AccountId) -> Result<Vec<JournalEntry>> {
        let rows = sqlx::query(
            "SELECT id, created, kind, payload, attempts, reason, retry_at FROM journal \
             WHERE account_id = $1 AND done = 2 ORDER BY id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(journal_entry).collect()
    }

    async fn journal_purge(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM journal WHERE done = 1 AND created < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn journal_done(&self, id: i64) -> Result<()> {
        let done = sqlx::query("UPDATE journal SET done = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!("no journal entry {id}")));
        }
        Ok(())
    }

    async fn journal_pending_count(&self, account: AccountId) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) FROM journal WHERE account_id = $1 AND done = 0")
            .bind(account)
            .fetch_one(&self.pool)
            .await?;
        get_u64(&row, 0)
    }

    async fn find_account(&self, key: &AccountKey) -> Result<Option<AccountId>> {
        let row = sqlx::query(
            "SELECT id FROM accounts \
             WHERE old_host = $1 AND old_user = $2 AND new_host = $3 AND new_user = $4",
        )
        .bind(key.old_host.as_str())
        .bind(key.old_user.as_str())
        .bind(key.new_host.as_str())
        .bind(key.new_user.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn retire(&self, account: AccountId, forced: Option<&str>) -> Result<bool> {
        let done = match forced {
            Some(reason) => {
                sqlx::query(
                    "UPDATE accounts SET state = $1, reason = $2, updated = $3 WHERE id = $4",
                )
                .bind(AccountState::Retired.as_str())
                .bind(reason)
                .bind(now())
                .bind(account)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE accounts SET state = $1, reason = NULL, updated = $2 \
                     WHERE id = $3 AND state = $4 \
                     AND NOT EXISTS (SELECT 1 FROM journal WHERE account_id = $3 AND done <> 1) \
                     AND NOT EXISTS (SELECT 1 FROM message_errors e \
                                     JOIN folder_pairs p ON p.id = e.pair_id \
                                     WHERE p.account_id = $3)",
                )
                .bind(AccountState::Retired.as_str())
                .bind(now())
                .bind(account)
                .bind(AccountState::Synced.as_str())
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    async fn set_account_old(
        &self,
        account: AccountId,
        old_host: &str,
        old_user: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE accounts SET old_host = $1, old_user = $2, updated = $3 WHERE id = $4",
        )
        .bind(old_host)
        .bind(old_user)
        .bind(now())
        .bind(account)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!("no account {account}")));
        }
        Ok(())
    }

    async fn touch_account(&self, account: AccountId) -> Result<()> {
        let done = sqlx::query("UPDATE accounts SET last_activity = $1 WHERE id = $2")
            .bind(now())
            .bind(account)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!("no account {account}")));
        }
        Ok(())
    }

    async fn rename_pair(&self, pair: PairId, old_name: &str, new_name: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE folder_pairs SET old_name = $1, new_name = $2, updated = $3 WHERE id = $4",
        )
        .bind(old_name)
        .bind(new_name)
        .bind(now())
        .bind(pair)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!("no folder pair {pair}")));
        }
        Ok(())
    }

    async fn delete_pair(&self, pair: PairId) -> Result<()> {
        // Explicit deletes rather than relying on ON DELETE CASCADE alone: the same statements
        // work whatever the connection's foreign-key setting.
        let mut tx = self.write_tx().await?;
        for sql in [
            "DELETE FROM links WHERE pair_id = $1",
            "DELETE FROM tombstones WHERE pair_id = $1",
            "DELETE FROM folder_pairs WHERE id = $1",
        ] {
            sqlx::query(sql).bind(pair).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn account_summaries(&self) -> Result<Vec<AccountSummary>> {
        // Correlated subqueries, each served by an index (folder_pairs by account, links and
        // tombstones by pair, the pending-journal index); CAST keeps SUM a BIGINT in PostgreSQL.
        let rows = sqlx::query(
            "SELECT a.id, a.old_host, a.old_user, a.new_host, a.new_user, a.state, a.reason, \
             a.last_activity, \
             (SELECT COUNT(*) FROM folder_pairs p WHERE p.account_id = a.id) AS folders, \
             (SELECT COUNT(*) FROM folder_pairs p \
              WHERE p.account_id = a.id AND p.phase = 'synced') AS folders_synced, \
             (SELECT CAST(COALESCE(SUM(p.old_messages), 0) AS BIGINT) FROM folder_pairs p \
              WHERE p.account_id = a.id) AS messages_old, \
             (SELECT CAST(COALESCE(SUM(p.new_messages), 0) AS BIGINT) FROM folder_pairs p \
              WHERE p.account_id = a.id) AS messages_new, \
             (SELECT COUNT(*) FROM links l JOIN folder_pairs p ON p.id = l.pair_id \
              WHERE p.account_id = a.id) AS linked, \
             (SELECT COUNT(*) FROM tombstones t JOIN folder_pairs p ON p.id = t.pair_id \
              WHERE p.account_id = a.id) AS tombstones, \
             (SELECT COUNT(*) FROM journal j \
              WHERE j.account_id = a.id AND j.done = 0) AS pending_journal, \
             (SELECT COUNT(*) FROM journal j \
              WHERE j.account_id = a.id AND j.done = 2) AS parked_journal, \
             (SELECT COUNT(*) FROM message_errors e JOIN folder_pairs p ON p.id = e.pair_id \
              WHERE p.account_id = a.id) AS message_errors \
             FROM accounts a ORDER BY a.new_user, a.old_user, a.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: AccountId = row.try_get("id")?;
                let state: String = row.try_get("state")?;
                Ok(AccountSummary {
                    id,
                    key: AccountKey {
                        old_host: row.try_get("old_host")?,
                        old_user: row.try_get("old_user")?,
                        new_host: row.try_get("new_host")?,
                        new_user: row.try_get("new_user")?,
                    },
                    state: AccountState::parse(&state).ok_or_else(|| {
                        StoreError::Corrupt(format!("account {id} has unknown state {state:?}"))
                    })?,
                    reason: row.try_get("reason")?,
                    last_activity: row.try_get("last_activity")?,
                    folders: get_u64(row, "folders")?,
                    folders_synced: get_u64(row, "folders_synced")?,
                    messages_old: get_u64(row, "messages_old")?,
                    messages_new: get_u64(row, "messages_new")?,
                    linked: get_u64(row, "linked")?,
                    tombstones: get_u64(row, "tombstones")?,
                    pending_journal: get_u64(row, "pending_journal")?,
                    parked_journal: get_u64(row, "parked_journal")?,
                    message_errors: get_u64(row, "message_errors")?,
                })
            })
            .collect()
    }

    async fn folder_summaries(&self, account: AccountId) -> Result<Vec<FolderSummary>> {
        let sql = format!(
            "SELECT {PAIR_COLUMNS}, \
             (SELECT COUNT(*) FROM links l WHERE l.pair_id = folder_pairs.id) AS linked, \
             (SELECT COUNT(*) FROM tombstones t WHERE t.pair_id = folder_pairs.id) AS tombstones, \
             (SELECT COUNT(*) FROM message_errors e WHERE e.pair_id = folder_pairs.id) \
             AS message_errors \
             FROM folder_pairs WHERE account_id = $1 ORDER BY old_name"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(FolderSummary {
                    pair: pair_from_row(row)?,
                    linked: get_u64(row, "linked")?,
                    tombstones: get_u64(row, "tombstones")?,
                    message_errors: get_u64(row, "message_errors")?,
                })
            })
            .collect()
    }
}

/// The highest applied schema version, 0 for a new database.
async fn schema_version<'e, E>(executor: E) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let row = sqlx::query("SELECT MAX(version) FROM schema_version")
        .fetch_one(executor)
        .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
}

fn journal_entry(row: &sqlx::sqlite::SqliteRow) -> Result<JournalEntry> {
    Ok(JournalEntry {
        id: row.try_get("id")?,
        created: row.try_get("created")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        attempts: get_u32(row, "attempts")?,
        reason: row.try_get("reason")?,
        retry_at: row.try_get("retry_at")?,
    })
}

/// `rows` comma-separated tuples `(fixed$n, $n+1, …)` of `width` fresh parameters each,
/// numbered from `first`: `tuples(2, 2, 2, "$1, ")` is `($1, $2, $3), ($1, $4, $5)`.
fn tuples(rows: usize, width: usize, first: usize, fixed: &str) -> String {
    let mut sql = String::with_capacity(rows * (fixed.len() + width * 7 + 4));
    let mut n = first;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(fixed);
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&n.to_string());
            n += 1;
        }
        sql.push(')');
    }
    sql
}

/// Unix seconds.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn get_u32(row: &SqliteRow, column: &str) -> Result<u32> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

/// A count or sum (BIGINT, never negative) as u64; `column` is a name or an index.
fn get_u64<I>(row: &SqliteRow, column: I) -> Result<u64>
where
    I: sqlx::ColumnIndex<SqliteRow> + std::fmt::Debug + Copy,
{
    let value: i64 = row.try_get(column)?;
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{column:?} is negative: {value}")))
}

/// One side's state columns as stored: all NULL when unknown.
#[derive(Default)]
struct DbSide {
    uidvalidity: Option<i64>,
    uidnext: Option<i64>,
    highestmodseq: Option<i64>,
    messages: Option<i64>,
}

impl DbSide {
    fn from_state(state: Option<MailboxState>) -> Result<DbSide> {
        let Some(state) = state else {
            return Ok(DbSide::default());
        };
        // RFC 7162 bounds mod-sequences to 63 bits.
        let highestmodseq = i64::try_from(state.highestmodseq).map_err(|_| {
            StoreError::Corrupt(format!(
                "HIGHESTMODSEQ {} exceeds 63 bits",
                state.highestmodseq
            ))
        })?;
        Ok(DbSide {
            uidvalidity: Some(i64::from(state.uidvalidity)),
            uidnext: Some(i64::from(state.uidnext)),
            highestmodseq: Some(highestmodseq),
            messages: Some(i64::from(state.messages)),
        })
    }

    fn read(row: &SqliteRow, side: &str) -> Result<DbSide> {
        let get = |what: &str| -> Result<Option<i64>> {
            Ok(row.try_get::<Option<i64>, _>(format!("{side}_{what}").as_str())?)
        };
        Ok(DbSide {
            uidvalidity: get("uidvalidity")?,
            uidnext: get("uidnext")?,
            highestmodseq: get("highestmodseq")?,
            messages: get("messages")?,
        })
    }

    fn into_state(self, pair: PairId, side: &str) -> Result<Option<MailboxState>> {
        let u32_of = |what: &str, v: i64| {
            u32::try_from(v).map_err(|_| {
                StoreError::Corrupt(format!(
                    "folder pair {pair}: {side}_{what} out of range: {v}"
                ))
            })
        };
        match (
            self.uidvalidity,
            self.uidnext,
            self.highestmodseq,
            self.messages,
        ) {
            (None, None, None, None) => Ok(None),
            (Some(uidvalidity), Some(uidnext), Some(highestmodseq), Some(messages)) => {
                Ok(Some(MailboxState {
                    uidvalidity: u32_of("uidvalidity", uidvalidity)?,
                    uidnext: u32_of("uidnext", uidnext)?,
                    highestmodseq: u64::try_from(highestmodseq).map_err(|_| {
                        StoreError::Corrupt(format!(
                            "folder pair {pair}: {side}_highestmodseq out of range: {highestmodseq}"
                        ))
                    })?,
                    messages: u32_of("messages", messages)?,
                }))
            }
            _ => Err(StoreError::Corrupt(format!(
                "folder pair {pair}: {side} state is partly NULL"
            ))),
        }
    }
}

fn pair_from_row(row: &SqliteRow) -> Result<FolderPair> {
    let id: PairId = row.try_get("id")?;
    let phase: String = row.try_get("phase")?;
    Ok(FolderPair {
        id,
        account: row.try_get("account_id")?,
        old_name: row.try_get("old_name")?,
        new_name: row.try_get("new_name")?,
        old: DbSide::read(row, "old")?.into_state(id, "old")?,
        new: DbSide::read(row, "new")?.into_state(id, "new")?,
        adopt_from: get_u32(row, "adopt_from")?,
        phase: Phase::parse(&phase).ok_or_else(|| {
            StoreError::Corrupt(format!("folder pair {id} has unknown phase {phase:?}"))
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    async fn pair(store: &SqliteStore) -> PairId {
        let account = store.account(&key("alice")).await.unwrap();
        store
            .folder_pair(account, "INBOX", "INBOX")
            .await
            .unwrap()
            .id
    }

    #[test]
    fn tuples_numbering() {
        assert_eq!(tuples(2, 2, 2, "$1, "), "($1, $2, $3), ($1, $4, $5)");
        assert_eq!(tuples(1, 3, 2, ""), "($2, $3, $4)");
        assert_eq!(
            tuples(3, 1, 3, "$1, $2, "),
            "($1, $2, $3), ($1, $2, $4), ($1, $2, $5)"
        );
    }

    #[tokio::test]
    async fn account_get_or_create_is_idempotent() {
        let store = SqliteStore::open_memory().await.unwrap();
        let a = store.account(&key("alice")).await.unwrap();
        let b = store.account(&key("bob")).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(store.account(&key("alice")).await.unwrap(), a);
        assert_eq!(store.account_state(a).await.unwrap(), AccountState::Pending);

        store
            .set_account_state(a, AccountState::Failed, Some("bad password"))
            .await
            .unwrap();
        assert_eq!(store.account_state(a).await.unwrap(), AccountState::Failed);
        assert_eq!(store.account(&key("alice")).await.unwrap(), a);
        let reason: Option<String> = sqlx::query("SELECT reason FROM accounts WHERE id = $1")
            .bind(a)
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(reason.as_deref(), Some("bad password"));
        store
            .set_account_state(a, AccountState::Synced, None)
            .await
            .unwrap();
        assert_eq!(store.account_state(a).await.unwrap(), AccountState::Synced);
        assert_eq!(store.account_state(b).await.unwrap(), AccountState::Pending);

        assert!(matches!(
            store.account_state(999).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store
                .set_account_state(999, AccountState::Synced, None)
                .await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn folder_pair_get_or_create_and_rename() {
        let store = SqliteStore::open_memory().await.unwrap();
        let account = store.account(&key("alice")).await.unwrap();
        let other = store.account(&key("bob")).await.unwrap();

        let sent = store
            .folder_pair(account, "Sent", "INBOX.Sent")
            .await
            .unwrap();
        assert_eq!(sent.account, account);
        assert_eq!(sent.old_name, "Sent");
        assert_eq!(sent.new_name, "INBOX.Sent");
        assert_eq!(sent.old, None);
        assert_eq!(sent.new, None);
        assert_eq!(sent.adopt_from, 1);
        assert_eq!(sent.phase, Phase::New);
        assert_eq!(
            store
                .folder_pair(account, "Sent", "INBOX.Sent")
                .await
                .unwrap(),
            sent
        );

        let renamed = store
            .folder_pair(account, "Sent", "Sent Items")
            .await
            .unwrap();
        assert_eq!(renamed.id, sent.id);
        assert_eq!(renamed.new_name, "Sent Items");

        let inbox = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
        let bobs = store.folder_pair(other, "INBOX", "INBOX").await.unwrap();
        assert_ne!(inbox.id, sent.id);
        assert_ne!(inbox.id, bobs.id);

        let all = store.folder_pairs(account).await.unwrap();
        assert_eq!(all, vec![inbox, renamed]);
        assert_eq!(store.folder_pairs(other).await.unwrap(), vec![bobs]);

        // The account must exist.
        assert!(store.folder_pair(12345, "INBOX", "INBOX").await.is_err());
    }

    #[tokio::test]
    async fn pair_state_round_trip() {
        let store = SqliteStore::open_memory().await.unwrap();
        let pair = pair(&store).await;
        let old = MailboxState {
            uidvalidity: u32::MAX,
            uidnext: 4_000_000_000,
            highestmodseq: i64::MAX as u64,
            messages: 12,
        };
        let new = MailboxState {
            uidvalidity: 7,
            uidnext: 13,
            highestmodseq: 0,
            messages: 11,
        };

        store
            .save_pair_state(pair, Some(old), Some(new), 13, Phase::Synced)
            .await
            .unwrap();
        let got = &store
            .folder_pairs(store.account(&key("alice")).await.unwrap())
            .await
            .unwrap()[0];
        assert_eq!(
            (got.old, got.new, got.adopt_from, got.phase),
            (Some(old), Some(new), 13, Phase::Synced)
        );

        store
            .save_pair_state(pair, None, Some(new), 5, Phase::Partial)
            .await
            .unwrap();
        let got = store
            .folder_pair(got.account, "INBOX", "INBOX")
            .await
            .unwrap();
        assert_eq!(
            (got.old, got.new, got.adopt_from, got.phase),
            (None, Some(new), 5, Phase::Partial)
        );

        store
            .save_pair_state(pair, Some(old), None, 1, Phase::New)
            .await
            .unwrap();
        let got = store
            .folder_pair(got.account, "INBOX", "INBOX")
            .await
            .unwrap();
        assert_eq!(
            (got.old, got.new, got.adopt_from, got.phase),
            (Some(old), None, 1, Phase::New)
        );

        let too_big = MailboxState {
            highestmodseq: u64::MAX,
            ..old
        };
        assert!(matches!(
            store
                .save_pair_state(pair, Some(too_big), None, 1, Phase::New)
                .await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.save_pair_state(999, None, None, 1, Phase::New).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn links_add_replace_update_remove() {
        let store = SqliteStore::open_memory().await.unwrap();
        let pair = pair(&store).await;
        assert!(store.links(pair).await.unwrap().is_empty());
        store.add_links(pair, &[]).await.unwrap();

        store
            .add_links(
                pair,
                &[
                    link(3, 30, "\\Seen"),
                    link(1, 10, ""),
                    link(u32::MAX, u32::MAX, ""),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            store.links(pair).await.unwrap(),
            vec![
                link(1, 10, ""),
                link(3, 30, "\\Seen"),
                link(u32::MAX, u32::MAX, "")
            ]
        );

        // Replace by old_uid; a duplicate in one batch keeps the last.
        store
            .add_links(
                pair,
                &[
                    link(3, 31, "\\Flagged"),
                    link(2, 20, ""),
                    link(2, 21, "$Junk"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            store.links(pair).await.unwrap(),
            vec![
                link(1, 10, ""),
                link(2, 21, "$Junk"),
                link(3, 31, "\\Flagged"),
                link(u32::MAX, u32::MAX, "")
            ]
        );

        store
            .update_link_flags(
                pair,
                &[
                    LinkFlags {
                        old_uid: 1,
                        old_flags: "\\Seen".into(),
                        new_flags: "\\Answered \\Seen".into(),
                    },
                    LinkFlags {
                        old_uid: 99,
                        old_flags: "x".into(),
                        new_flags: "y".into(),
                    },
                ],
            )
            .await
            .unwrap();
        let links = store.links(pair).await.unwrap();
        assert_eq!(
            links[0],
            Link {
                old_uid: 1,
                new_uid: 10,
                old_flags: "\\Seen".into(),
                new_flags: "\\Answered \\Seen".into(),
                ident: None,
            }
        );
        assert_eq!(links[1], link(2, 21, "$Junk"));
        assert_eq!(links.len(), 4);

        store.remove_links(pair, &[2, u32::MAX, 77]).await.unwrap();
        let uids: Vec<u32> = store
            .links(pair)
            .await
            .unwrap()
            .iter()
            .map(|l| l.old_uid)
            .collect();
        assert_eq!(uids, vec![1, 3]);

        // Links are per pair.
        let account = store.account(&key("alice")).await.unwrap();
        let other = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
        assert!(store.links(other).await.unwrap().is_empty());
        store.remove_links(other, &[1, 3]).await.unwrap();
        assert_eq!(store.links(pair).await.unwrap().len(), 2);

        // The pair must exist.
        assert!(store.add_links(999, &[link(1, 1, "")]).await.is_err());
    }

    #[tokio::test]
    async fn tombstone_moves_links_to_tombstones() {
        let store = SqliteStore::open_memory().await.unwrap();
        let pair = pair(&store).await;
        store
            .add_links(pair, &[link(1, 10, ""), link(2, 20, ""), link(3, 30, "")])
            .await
            .unwrap();

        store.tombstone(pair, &[2, 5, 2]).await.unwrap();
        let uids: Vec<u32> = store
            .links(pair)
            .await
            .unwrap()
            .iter()
            .map(|l| l.old_uid)
            .collect();
        assert_eq!(uids, vec![1, 3]);
        assert_eq!(store.tombstones(pair).await.unwrap(), vec![2, 5]);

        // Idempotent.
        store.tombstone(pair, &[2]).await.unwrap();
        assert_eq!(store.tombstones(pair).await.unwrap(), vec![2, 5]);

        store.remove_tombstones(pair, &[5, 6]).await.unwrap();
        assert_eq!(store.tombstones(pair).await.unwrap(), vec![2]);

        // A new link supersedes a tombstone.
        store.add_links(pair, &[link(2, 22, "")]).await.unwrap();
        assert!(store.tombstones(pair).await.unwrap().is_empty());
        assert_eq!(store.links(pair).await.unwrap()[1], link(2, 22, ""));
    }

    #[tokio::test]
    async fn reset_pair_forgets_everything() {
        let store = SqliteStore::open_memory().await.unwrap();
        let pair = pair(&store).await;
        let account = store.account(&key("alice")).await.unwrap();
        let other = store.folder_pair(account, "Sent", "Sent").await.unwrap().id;
        let state = MailboxState {
            uidvalidity: 1,
            uidnext: 5,
            highestmodseq: 9,
            messages: 4,
        };
        for p in [pair, other] {
            store
                .add_links(p, &[link(1, 1, ""), link(2, 2, "")])
                .await
                .unwrap();
            store.tombstone(p, &[2]).await.unwrap();
            store
                .save_pair_state(p, Some(state), Some(state), 3, Phase::Synced)
                .await
                .unwrap();
        }

        store.reset_pair(pair).await.unwrap();
        let got = store.folder_pair(account, "INBOX", "INBOX").await.unwrap();
        assert_eq!(
            (got.old, got.new, got.adopt_from, got.phase),
            (None, None, 1, Phase::New)
        );
        assert!(store.links(pair).await.unwrap().is_empty());
        assert!(store.tombstones(pair).await.unwrap().is_empty());

        // The other pair is untouched.
        let kept = store.folder_pair(account, "Sent", "Sent").await.unwrap();
        assert_eq!(
            (kept.old, kept.new, kept.adopt_from, kept.phase),
            (Some(state), Some(state), 3, Phase::Synced)
        );
        assert_eq!(store.links(other).await.unwrap(), vec![link(1, 1, "")]);
        assert_eq!(store.tombstones(other).await.unwrap(), vec![2]);

        assert!(matches!(
            store.reset_pair(999).await,
            Err(StoreError::Corrupt(_))
        ));
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

    #[tokio::test]
    async fn retire_is_conditional_unless_forced() {
        let store = SqliteStore::open_memory().await.unwrap();
        let a = store.account(&key("alice")).await.unwrap();
        // pending: refused
        assert!(!store.retire(a, None).await.unwrap());
        store
            .set_account_state(a, AccountState::Synced, None)
            .await
            .unwrap();
        let entry = store.journal_append(a, "flags", "{}").await.unwrap();
        // synced, but a journal entry is pending: refused
        assert!(!store.retire(a, None).await.unwrap());
        assert_eq!(store.account_state(a).await.unwrap(), AccountState::Synced);
        store.journal_done(entry).await.unwrap();
        assert!(store.retire(a, None).await.unwrap());
        assert_eq!(store.account_state(a).await.unwrap(), AccountState::Retired);
        let b = store.account(&key("bob")).await.unwrap();
        assert!(store.retire(b, Some("forced from pending")).await.unwrap());
        let bob = store
            .account_summaries()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.id == b)
            .unwrap();
        assert_eq!(bob.state, AccountState::Retired);
        assert_eq!(bob.reason.as_deref(), Some("forced from pending"));
    }

    #[tokio::test]
    async fn the_write_ahead_mark_survives_a_reopen_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let (a, b) = (
            store.account(&key("alice")).await.unwrap(),
            store.account(&key("bob")).await.unwrap(),
        );
        assert_eq!(store.writes_in_flight(a).await.unwrap(), None);
        store.mark_writes_in_flight(a, true).await.unwrap();
        store.close().await;
        // What a process that died with a write in flight leaves behind: only its account.
        let store = SqliteStore::open(&path).await.unwrap();
        assert!(
            store
                .writes_in_flight(a)
                .await
                .unwrap()
                .is_some_and(|t| t > 0)
        );
        assert_eq!(store.writes_in_flight(b).await.unwrap(), None);
        store.mark_writes_in_flight(a, false).await.unwrap();
        assert_eq!(store.writes_in_flight(a).await.unwrap(), None);
    }

    #[tokio::test]
    async fn retired_and_diverged_are_left_only_by_their_own_commands() {
        use AccountState::*;
        let store = SqliteStore::open_memory().await.unwrap();
        let a = store.account(&key("alice")).await.unwrap();
        assert!(store.retire(a, Some("forced")).await.unwrap());
        // A failed OLD login or a pass's end never moves a retired account.
        for state in [Failed, Synced, Partial, Pending] {
            assert!(!store.set_account_state(a, state, Some("x")).await.unwrap());
            assert_eq!(store.account_state(a).await.unwrap(), Retired);
        }
        assert!(!store.mark_diverged(a, "x").await.unwrap());
        assert!(store.unretire(a).await.unwrap());
        assert_eq!(store.account_state(a).await.unwrap(), Partial);
        // Diverged: only reconcile clears it.
        assert!(
            store
                .mark_diverged(a, "journal entry 3 parked")
                .await
                .unwrap()
        );
        assert!(!store.set_account_state(a, Synced, None).await.unwrap());
        assert_eq!(store.account_state(a).await.unwrap(), Diverged);
        assert!(store.clear_diverged(a, Partial).await.unwrap());
        assert!(!store.clear_diverged(a, Partial).await.unwrap());
        assert!(store.set_account_state(a, Synced, None).await.unwrap());
        assert!(store.set_account_state(999, Synced, None).await.is_err());
    }

    #[tokio::test]
    async fn refused_entries_are_retried_then_parked() {
        let store = SqliteStore::open_memory().await.unwrap();
        let a = store.account(&key("alice")).await.unwrap();
        let first = store.journal_append(a, "flags", "{}").await.unwrap();
        let second = store.journal_append(a, "append", "{}").await.unwrap();
        assert_eq!(
            store
                .journal_retry(first, "NO [NONEXISTENT]", 42)
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.journal_retry(first, "NO again", 43).await.unwrap(), 2);
        let pending = store.journal_pending(a, 10).await.unwrap();
        assert_eq!(pending[0].attempts, 2);
        assert_eq!(pending[0].reason.as_deref(), Some("NO again"));
        assert_eq!(pending[0].retry_at, Some(43));
        store.journal_park(first, "refused 2 times").await.unwrap();
        assert_eq!(store.journal_pending_count(a).await.unwrap(), 1);
        let parked = store.journal_parked(a).await.unwrap();
        assert_eq!((parked.len(), parked[0].id), (1, first));
        let summary = store.account_summaries().await.unwrap().remove(0);
        assert_eq!((summary.pending_journal, summary.parked_journal), (1, 1));
        // Only mirrored entries are purged, and only old enough ones.
        store.journal_done(second).await.unwrap();
        assert_eq!(store.journal_purge(0).await.unwrap(), 0);
        assert_eq!(store.journal_purge(i64::MAX).await.unwrap(), 1);
        assert_eq!(store.journal_parked(a).await.unwrap().len(), 1);
        // A parked entry blocks retire, forced or not the journal says so.
        store
            .set_account_state(a, AccountState::Synced, None)
            .await
            .unwrap();
        assert!(!store.retire(a, None).await.unwrap());
    }

    #[tokio::test]
    async fn journal_order_done_and_counts() {
        let store = SqliteStore::open_memory().await.unwrap();
        let alice = store.account(&key("alice")).await.unwrap();
        let bob = store.account(&key("bob")).await.unwrap();
        assert!(store.journal_pending(alice, 10).await.unwrap().is_empty());
        assert_eq!(store.journal_pending_count(alice).await.unwrap(), 0);

        // (account, kind, payload), appended in this order.
        let appends = [
            (alice, "store", "1 +FLAGS (\\Seen)"),
            (bob, "create", "Projects"),
            (alice, "expunge", "2"),
            (alice, "move", "{\"to\": \"Archive\"}"),
        ];
        let mut ids = Vec::new();
        for (account, kind, payload) in appends {
            ids.push(store.journal_append(account, kind, payload).await.unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

        let pending = store.journal_pending(alice, 10).await.unwrap();
        let got: Vec<(i64, &str, &str)> = pending
            .iter()
            .map(|e| (e.id, e.kind.as_str(), e.payload.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (ids[0], "store", "1 +FLAGS (\\Seen)"),
                (ids[2], "expunge", "2"),
                (ids[3], "move", "{\"to\": \"Archive\"}"),
            ]
        );
        assert!(pending.iter().all(|e| (now() - e.created).abs() < 60));
        assert_eq!(store.journal_pending(alice, 2).await.unwrap(), pending[..2]);
        assert!(store.journal_pending(alice, 0).await.unwrap().is_empty());

        // (entry marked done, alice's pending ids after, alice's count, bob's count)
        let steps = [
            (ids[2], vec![ids[0], ids[3]], 2, 1),
            (ids[2], vec![ids[0], ids[3]], 2, 1), // twice is harmless
            (ids[0], vec![ids[3]], 1, 1),
            (ids[1], vec![ids[3]], 1, 0),
            (ids[3], vec![], 0, 0),
        ];
        for (done, left, alice_count, bob_count) in steps {
            store.journal_done(done).await.unwrap();
            let pending: Vec<i64> = store
                .journal_pending(alice, 10)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            assert_eq!(pending, left, "after {done}");
            assert_eq!(
                store.journal_pending_count(alice).await.unwrap(),
                alice_count
            );
            assert_eq!(store.journal_pending_count(bob).await.unwrap(), bob_count);
        }

        assert!(matches!(
            store.journal_done(9999).await,
            Err(StoreError::Corrupt(_))
        ));
        // The account must exist.
        assert!(store.journal_append(9999, "store", "").await.is_err());
    }

    #[tokio::test]
    async fn find_and_touch_account() {
        let store = SqliteStore::open_memory().await.unwrap();
        assert_eq!(store.find_account(&key("alice")).await.unwrap(), None);
        let alice = store.account(&key("alice")).await.unwrap();
        // (key, expected)
        let cases = [
            (key("alice"), Some(alice)),
            (key("bob"), None),
            (
                AccountKey {
                    new_user: "alice2".into(),
                    ..key("alice")
                },
                None,
            ),
            (
                AccountKey {
                    old_host: "elsewhere".into(),
                    ..key("alice")
                },
                None,
            ),
        ];
        for (k, expected) in cases {
            assert_eq!(store.find_account(&k).await.unwrap(), expected, "{k:?}");
        }
        // find_account never creates.
        assert_eq!(store.account_summaries().await.unwrap().len(), 1);

        let last = |store: SqliteStore| async move {
            store.account_summaries().await.unwrap()[0].last_activity
        };
        assert_eq!(last(store.clone()).await, None);
        store.touch_account(alice).await.unwrap();
        let touched = last(store.clone()).await.unwrap();
        assert!((now() - touched).abs() < 60, "{touched}");
        assert!(matches!(
            store.touch_account(9999).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn rename_pair_keeps_links_and_tombstones() {
        let store = SqliteStore::open_memory().await.unwrap();
        let account = store.account(&key("alice")).await.unwrap();
        let pair = store.folder_pair(account, "Work", "Work").await.unwrap();
        let other = store.folder_pair(account, "Sent", "Sent").await.unwrap();
        store
            .add_links(pair.id, &[link(1, 10, "\\Seen"), link(2, 20, "")])
            .await
            .unwrap();
        store.tombstone(pair.id, &[2, 3]).await.unwrap();

        // (old name, new name): renames in a row, including back and a no-op.
        let renames = [
            ("Projects", "INBOX.Projects"),
            ("Projects", "INBOX.Projects"),
            ("Archive/2024", "Archive.2024"),
            ("Work", "Work"),
        ];
        for (old_name, new_name) in renames {
            store
                .rename_pair(pair.id, old_name, new_name)
                .await
                .unwrap();
            // The engine finds the pair under its new OLD name.
            let got = store
                .folder_pair(account, old_name, new_name)
                .await
                .unwrap();
            assert_eq!(got.id, pair.id, "{old_name}");
            let pairs = store.folder_pairs(account).await.unwrap();
            let renamed = pairs.iter().find(|p| p.id == pair.id).unwrap();
            assert_eq!(
                (renamed.old_name.as_str(), renamed.new_name.as_str()),
                (old_name, new_name)
            );
            assert_eq!(pairs.len(), 2);
            assert_eq!(
                store.links(pair.id).await.unwrap(),
                vec![link(1, 10, "\\Seen")]
            );
            assert_eq!(store.tombstones(pair.id).await.unwrap(), vec![2, 3]);
        }

        // Renaming onto another pair's OLD name is refused and changes nothing.
        assert!(store.rename_pair(pair.id, "Sent", "Sent").await.is_err());
        let sent = store.folder_pair(account, "Sent", "Sent").await.unwrap();
        assert_eq!(sent.id, other.id);
        assert!(matches!(
            store.rename_pair(9999, "x", "y").await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn delete_pair_removes_links_and_tombstones() {
        let store = SqliteStore::open_memory().await.unwrap();
        let account = store.account(&key("alice")).await.unwrap();
        let gone = store
            .folder_pair(account, "Trash", "Trash")
            .await
            .unwrap()
            .id;
        let kept = store
            .folder_pair(account, "INBOX", "INBOX")
            .await
            .unwrap()
            .id;
        for p in [gone, kept] {
            store
                .add_links(p, &[link(1, 1, ""), link(2, 2, "")])
                .await
                .unwrap();
            store.tombstone(p, &[2]).await.unwrap();
        }

        store.delete_pair(gone).await.unwrap();
        let names: Vec<String> = store
            .folder_pairs(account)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.old_name)
            .collect();
        assert_eq!(names, vec!["INBOX"]);
        // (pair, links left, tombstones left), counted in the tables themselves.
        for (p, links, tombstones) in [(gone, 0, 0), (kept, 1, 1)] {
            let count = |table: &'static str| {
                let store = store.clone();
                async move {
                    let sql = format!("SELECT COUNT(*) FROM {table} WHERE pair_id = $1");
                    let n: i64 = sqlx::query(AssertSqlSafe(sql))
                        .bind(p)
                        .fetch_one(&store.pool)
                        .await
                        .unwrap()
                        .get(0);
                    n
                }
            };
            assert_eq!(count("links").await, links, "pair {p}");
            assert_eq!(count("tombstones").await, tombstones, "pair {p}");
        }
        // Idempotent; a pair of the same name starts afresh.
        store.delete_pair(gone).await.unwrap();
        store.delete_pair(9999).await.unwrap();
        let again = store.folder_pair(account, "Trash", "Trash").await.unwrap();
        assert_ne!(again.id, kept);
        assert_eq!(again.phase, Phase::New);
        assert!(store.links(again.id).await.unwrap().is_empty());
        assert!(store.tombstones(again.id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn summaries_count_progress() {
        let store = SqliteStore::open_memory().await.unwrap();
        assert!(store.account_summaries().await.unwrap().is_empty());
        let state = |messages| MailboxState {
            uidvalidity: 1,
            uidnext: messages + 1,
            highestmodseq: 0,
            messages,
        };
        // Created out of order: summaries sort by new_user, then old_user.
        let zed = store
            .account(&AccountKey {
                old_user: "a-old".into(),
                ..key("zed")
            })
            .await
            .unwrap();
        let bob = store.account(&key("bob")).await.unwrap();
        let alice = store.account(&key("alice")).await.unwrap();
        let alice_b = store
            .account(&AccountKey {
                old_user: "b-alice".into(),
                ..key("alice")
            })
            .await
            .unwrap();

        // alice: INBOX synced (3 old, 4 new, 3 links, 1 tombstone), Sent partial (2 old,
        // 1 new, 1 link), Drafts never reconciled; two journal entries, one done.
        let inbox = store.folder_pair(alice, "INBOX", "INBOX").await.unwrap().id;
        let sent = store
            .folder_pair(alice, "Sent", "INBOX.Sent")
            .await
            .unwrap()
            .id;
        let drafts = store
            .folder_pair(alice, "Drafts", "Drafts")
            .await
            .unwrap()
            .id;
        store
            .add_links(inbox, &[link(1, 1, ""), link(2, 2, ""), link(3, 3, "")])
            .await
            .unwrap();
        store.tombstone(inbox, &[4]).await.unwrap();
        store
            .save_pair_state(inbox, Some(state(3)), Some(state(4)), 5, Phase::Synced)
            .await
            .unwrap();
        store.add_links(sent, &[link(7, 1, "")]).await.unwrap();
        store
            .save_pair_state(sent, Some(state(2)), Some(state(1)), 2, Phase::Partial)
            .await
            .unwrap();
        store.journal_append(alice, "store", "x").await.unwrap();
        let done = store.journal_append(alice, "store", "y").await.unwrap();
        store.journal_done(done).await.unwrap();
        store.journal_append(bob, "create", "z").await.unwrap();
        store
            .set_account_state(alice, AccountState::Partial, None)
            .await
            .unwrap();
        store
            .set_account_state(bob, AccountState::Failed, Some("LOGIN failed on OLD"))
            .await
            .unwrap();
        store.touch_account(zed).await.unwrap();

        let got = store.account_summaries().await.unwrap();
        let row = |s: &AccountSummary| {
            (
                s.id,
                s.key.old_user.clone(),
                s.state,
                s.reason.clone(),
                s.last_activity.is_some(),
                [
                    s.folders,
                    s.folders_synced,
                    s.messages_old,
                    s.messages_new,
                    s.linked,
                    s.tombstones,
                    s.pending_journal,
                ],
            )
        };
        let got: Vec<_> = got.iter().map(row).collect();
        let expected = vec![
            // (id, old_user, state, reason, active, [folders, synced, old, new, linked, tombstones, journal])
            (
                alice,
                "alice".to_string(),
                AccountState::Partial,
                None,
                false,
                [3, 1, 5, 5, 4, 1, 1],
            ),
            (
                alice_b,
                "b-alice".to_string(),
                AccountState::Pending,
                None,
                false,
                [0; 7],
            ),
            (
                bob,
                "bob".to_string(),
                AccountState::Failed,
                Some("LOGIN failed on OLD".to_string()),
                false,
                [0, 0, 0, 0, 0, 0, 1],
            ),
            (
                zed,
                "a-old".to_string(),
                AccountState::Pending,
                None,
                true,
                [0; 7],
            ),
        ];
        assert_eq!(got, expected);

        let folders = store.folder_summaries(alice).await.unwrap();
        let got: Vec<_> = folders
            .iter()
            .map(|f| {
                (
                    f.pair.id,
                    f.pair.old_name.as_str(),
                    f.pair.phase,
                    f.linked,
                    f.tombstones,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (drafts, "Drafts", Phase::New, 0, 0),
                (inbox, "INBOX", Phase::Synced, 3, 1),
                (sent, "Sent", Phase::Partial, 1, 0),
            ]
        );
        // The pair is the one folder_pairs returns.
        assert_eq!(
            folders.iter().map(|f| f.pair.clone()).collect::<Vec<_>>(),
            store.folder_pairs(alice).await.unwrap()
        );
        assert!(store.folder_summaries(bob).await.unwrap().is_empty());
        assert!(store.folder_summaries(9999).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn new_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imapferry.db");
        // A missing file is not created by open_existing.
        assert!(matches!(
            SqliteStore::open_existing(&path).await,
            Err(StoreError::Missing(_))
        ));
        assert!(!path.exists());

        let store = SqliteStore::open(&path).await.unwrap();
        let account = store.account(&key("alice")).await.unwrap();
        let pair = store.folder_pair(account, "Work", "Work").await.unwrap().id;
        let gone = store.folder_pair(account, "Old", "Old").await.unwrap().id;
        store.add_links(pair, &[link(1, 1, "")]).await.unwrap();
        store.add_links(gone, &[link(1, 1, "")]).await.unwrap();
        store
            .rename_pair(pair, "Projects", "Projects")
            .await
            .unwrap();
        store.delete_pair(gone).await.unwrap();
        let first = store.journal_append(account, "store", "a").await.unwrap();
        let second = store.journal_append(account, "expunge", "b").await.unwrap();
        store.journal_done(first).await.unwrap();
        store.touch_account(account).await.unwrap();
        store
            .set_account_state(account, AccountState::Failed, Some("why"))
            .await
            .unwrap();
        let summaries = store.account_summaries().await.unwrap();
        let folders = store.folder_summaries(account).await.unwrap();
        // No close: a crash leaves the WAL behind.
        drop(store);

        let store = SqliteStore::open_existing(&path).await.unwrap();
        assert_eq!(
            store.find_account(&key("alice")).await.unwrap(),
            Some(account)
        );
        assert_eq!(store.account_summaries().await.unwrap(), summaries);
        assert_eq!(store.folder_summaries(account).await.unwrap(), folders);
        assert_eq!(summaries[0].reason.as_deref(), Some("why"));
        assert!(summaries[0].last_activity.is_some());
        assert_eq!((summaries[0].folders, summaries[0].linked), (1, 1));
        assert_eq!(folders[0].pair.old_name, "Projects");
        let pending = store.journal_pending(account, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].id, pending[0].kind.as_str()),
            (second, "expunge")
        );
        // Ids keep growing after a restart.
        assert!(store.journal_append(account, "x", "").await.unwrap() > second);
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

    #[tokio::test]
    async fn ten_thousand_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("imapferry.db"))
            .await
            .unwrap();
        let pair = pair(&store).await;
        let links: Vec<Link> = (1..=10_000u32)
            .map(|uid| Link {
                old_uid: uid,
                new_uid: uid + 100_000,
                old_flags: if uid % 3 == 0 {
                    "\\Seen".into()
                } else {
                    String::new()
                },
                new_flags: format!("\\Seen ${uid}"),
                // The identity key is optional and round-trips when present.
                ident: (uid % 2 == 0).then(|| format!("key{uid}")),
            })
            .collect();

        let started = std::time::Instant::now();
        store.add_links(pair, &links).await.unwrap();
        eprintln!("add_links: 10000 links in {:?}", started.elapsed());

        let started = std::time::Instant::now();
        let read = store.links(pair).await.unwrap();
        eprintln!("links: read 10000 links in {:?}", started.elapsed());
        assert_eq!(read, links);

        let updates: Vec<LinkFlags> = links
            .iter()
            .map(|l| LinkFlags {
                old_uid: l.old_uid,
                old_flags: "\\Deleted".into(),
                new_flags: String::new(),
            })
            .collect();
        let started = std::time::Instant::now();
        store.update_link_flags(pair, &updates).await.unwrap();
        eprintln!("update_link_flags: 10000 links in {:?}", started.elapsed());
        let read = store.links(pair).await.unwrap();
        assert_eq!(read.len(), 10_000);
        assert!(
            read.iter()
                .all(|l| l.old_flags == "\\Deleted" && l.new_flags.is_empty())
        );

        let uids: Vec<u32> = (1..=10_000u32).filter(|u| u % 2 == 0).collect();
        let started = std::time::Instant::now();
        store.tombstone(pair, &uids).await.unwrap();
        eprintln!("tombstone: 5000 links in {:?}", started.elapsed());
        assert_eq!(store.tombstones(pair).await.unwrap(), uids);
        assert_eq!(store.links(pair).await.unwrap().len(), 5_000);

        let started = std::time::Instant::now();
        store
            .remove_links(pair, &(1..=10_000u32).collect::<Vec<_>>())
            .await
            .unwrap();
        eprintln!("remove_links: 10000 uids in {:?}", started.elapsed());
        assert!(store.links(pair).await.unwrap().is_empty());
        store.close().await;
    }
}
