//! The fleet's [`Store`](super::Store): one PostgreSQL database that every proxy of a fleet
//! shares. Its statements are the SQLite store's (`statements.rs`); this file connects, spells
//! the migrations for PostgreSQL and runs them under an advisory lock, so that ten proxies
//! starting together migrate once.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{
    AssertSqlSafe, Column as _, PgConnection, Postgres, Row as _, Transaction, TypeInfo as _,
};

use super::sql::{Op, Row, Value};
use super::{PairId, PgLocation, Result, StoreError, Tally};

/// The [`Store`](super::Store) implementation, shared with SQLite.
mod statements {
    type SqlStore = super::PgStore;
    type Conn = super::Conn;
    const SHARED: bool = true;
    include!("statements.rs");
}

/// Connections per process: the sessions' stores, the sweeper and the mirror share them.
const MAX_CONNECTIONS: u32 = 16;
/// How long a statement waits for a free connection, and a new connection for the server.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// The advisory lock key that serialises schema migrations across processes ("imapferr" in
/// ASCII, so that it does not collide with another application's small integers).
const MIGRATION_LOCK: i64 = 0x696d_6170_6665_7272;
// Journal locks use the account id as key (small positive numbers, never this one).

/// The PostgreSQL store. Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    counted: Arc<Tally>,
}

impl PgStore {
    /// Connects and brings the schema up to date (creating it in an empty database).
    pub async fn connect(location: &PgLocation) -> Result<PgStore> {
        let store = Self::connect_only(location).await?;
        store.migrate().await?;
        tracing::debug!(url = %location.url, "state store opened");
        Ok(store)
    }

    /// Connects to a database that already holds imapferry's state (bringing its schema up to
    /// date), and never creates it: a database without it is [`StoreError::Missing`].
    pub async fn connect_existing(location: &PgLocation) -> Result<PgStore> {
        let store = Self::connect_only(location).await?;
        let row = sqlx::query("SELECT to_regclass('schema_version') IS NOT NULL")
            .fetch_one(&store.pool)
            .await?;
        if !row.try_get::<bool, _>(0)? {
            store.pool.close().await;
            return Err(StoreError::Missing(format!(
                "imapferry's state in {}",
                location.url
            )));
        }
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_only(location: &PgLocation) -> Result<PgStore> {
        let mut options = PgConnectOptions::from_str(&location.url)?.application_name("imapferry");
        if let Some(password) = &location.password {
            options = options.password(password.expose());
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(PgStore {
            pool,
            counted: Arc::default(),
        })
    }

    /// Runs `op` on a pooled connection, outside a transaction.
    async fn read<T, F>(&self, op: F) -> Result<T>
    where
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T>,
    {
        self.counted.read();
        let mut c = Conn::Pooled(self.pool.acquire().await?);
        op(&mut c).await
    }

    /// Runs `op` in one transaction (READ COMMITTED: the statements are written so that each
    /// one is correct alone, as they are under SQLite's single writer). An error (or a caller
    /// that stops waiting) rolls it back.
    async fn write<T, F>(&self, op: F) -> Result<T>
    where
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T>,
    {
        self.locked(&[], op).await
    }

    /// A transaction holding the accounts' journal locks until it ends: entries that proxies
    /// append at the same moment get their ids in the order they commit, so the drainer never
    /// reads an entry while an earlier one is still uncommitted. `accounts` ascend, so two
    /// transactions that lock several never wait for each other in a circle.
    async fn journal_write<T, F>(&self, accounts: Vec<i64>, op: F) -> Result<T>
    where
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T>,
    {
        self.locked(&accounts, op).await
    }

    /// A transaction holding the migration lock until it ends.
    async fn migration<T, F>(&self, op: F) -> Result<T>
    where
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T>,
    {
        self.locked(&[MIGRATION_LOCK], op).await
    }

    /// Runs `op` in a transaction that first takes these advisory locks, in order.
    async fn locked<T, F>(&self, locks: &[i64], op: F) -> Result<T>
    where
        F: for<'a> FnOnce(&'a mut Conn) -> Op<'a, T>,
    {
        self.counted.write();
        let mut tx = self.pool.begin().await?;
        for lock in locks {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock)
                .execute(&mut *tx)
                .await?;
        }
        let mut c = Conn::Tx(tx);
        let value = op(&mut c).await?;
        if let Conn::Tx(tx) = c {
            tx.commit().await?;
        }
        Ok(value)
    }

    /// Holds the pair's row until the transaction ends, so that the writers of a pair's links
    /// (which read its runs, then rewrite them) take turns.
    async fn lock_pair(c: &mut Conn, pair: PairId) -> Result<()> {
        c.execute(
            "SELECT id FROM folder_pairs WHERE id = $1 FOR NO KEY UPDATE",
            vec![pair.into()],
        )
        .await?;
        Ok(())
    }

    /// A migration in PostgreSQL's spelling (see schema.sql).
    fn dialect(sql: &str) -> Cow<'_, str> {
        Cow::Owned(postgres_dialect(sql))
    }

    async fn close_connections(&self) {
        self.pool.close().await;
    }
}

/// A connection as the statements use it (see `statements.rs`): pooled, or in a transaction.
pub(super) enum Conn {
    Pooled(PoolConnection<Postgres>),
    Tx(Transaction<'static, Postgres>),
}

impl Conn {
    fn pg(&mut self) -> &mut PgConnection {
        match self {
            Conn::Pooled(c) => c,
            Conn::Tx(tx) => tx,
        }
    }

    pub(super) async fn execute(&mut self, sql: &str, args: Vec<Value>) -> Result<u64> {
        Ok(query(sql, args).execute(self.pg()).await?.rows_affected())
    }

    pub(super) async fn fetch_all(&mut self, sql: &str, args: Vec<Value>) -> Result<Vec<Row>> {
        let rows = query(sql, args).fetch_all(self.pg()).await?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let columns: Arc<[String]> = first
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        rows.iter().map(|row| row_of(row, &columns)).collect()
    }

    pub(super) async fn fetch_optional(
        &mut self,
        sql: &str,
        args: Vec<Value>,
    ) -> Result<Option<Row>> {
        let row = query(sql, args).fetch_optional(self.pg()).await?;
        row.map(|row| {
            let columns: Arc<[String]> =
                row.columns().iter().map(|c| c.name().to_owned()).collect();
            row_of(&row, &columns)
        })
        .transpose()
    }

    pub(super) async fn fetch_one(&mut self, sql: &str, args: Vec<Value>) -> Result<Row> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from {sql}")))
    }

    /// Statements without parameters, `;` between them (a migration).
    pub(super) async fn execute_script(&mut self, sql: &str) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(self.pg())
            .await?;
        Ok(())
    }
}

/// `sql` with `args` bound, each NULL typed as its column.
fn query(sql: &str, args: Vec<Value>) -> Query<'static, Postgres, PgArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
    for arg in args {
        query = match arg {
            Value::Int(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
        };
    }
    query
}

/// A row as the statements read it: every column a BIGINT or text (a smaller integer or a
/// boolean is widened).
fn row_of(row: &PgRow, columns: &Arc<[String]>) -> Result<Row> {
    let values = row
        .columns()
        .iter()
        .map(|column| {
            let i = column.ordinal();
            Ok(match column.type_info().name() {
                "INT8" => Value::Int(row.try_get(i)?),
                "INT4" => Value::Int(row.try_get::<Option<i32>, _>(i)?.map(i64::from)),
                "INT2" => Value::Int(row.try_get::<Option<i16>, _>(i)?.map(i64::from)),
                "BOOL" => Value::Int(row.try_get::<Option<bool>, _>(i)?.map(i64::from)),
                "TEXT" | "VARCHAR" | "NAME" => Value::Text(row.try_get(i)?),
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "column {} has type {other}",
                        column.name()
                    )));
                }
            })
        })
        .collect::<Result<Vec<Value>>>()?;
    Ok(Row {
        columns: Arc::clone(columns),
        values,
    })
}

/// The mechanical substitutions schema.sql names: SQLite's rowid alias becomes an identity
/// column, `WITHOUT ROWID` goes, and every other `INTEGER` is a `BIGINT` (SQLite's integers are
/// 64-bit; the statements read them all as `i64`).
fn postgres_dialect(sql: &str) -> String {
    sql.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace(" WITHOUT ROWID", "")
    .replace("INTEGER", "BIGINT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_respelled_for_postgres() {
        for (sqlite, postgres) in [
            (
                "id INTEGER PRIMARY KEY,",
                "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,",
            ),
            (") WITHOUT ROWID;", ");"),
            (
                "ALTER TABLE journal ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
                "ALTER TABLE journal ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;",
            ),
            ("old_uid BIGINT NOT NULL,", "old_uid BIGINT NOT NULL,"),
        ] {
            assert_eq!(postgres_dialect(sqlite), postgres, "{sqlite}");
        }
        for sql in super::super::sql::MIGRATIONS {
            let spelled = postgres_dialect(sql);
            assert!(!spelled.contains("INTEGER") && !spelled.contains("ROWID"));
        }
    }
}
