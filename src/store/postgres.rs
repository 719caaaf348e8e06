//! The fleet's [`Store`](super::Store): one PostgreSQL database that every proxy of a fleet
//! shares. Its statements are the SQLite store's (`statements.rs`); this file connects, spells
//! the migrations for PostgreSQL and runs them under an advisory lock, so that ten proxies
//! starting together migrate once.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::{PairId, PgLocation, Result, StoreError};

/// The [`Store`](super::Store) implementation, shared with SQLite.
mod statements {
    type SqlStore = super::PgStore;
    type Db = sqlx::Postgres;
    const SHARED: bool = true;
    const JOIN_WRITES: bool = false;
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
        Ok(PgStore { pool })
    }

    /// Statements inside run in one transaction (READ COMMITTED: the statements are written so
    /// that each one is correct alone, as they are under SQLite's single writer).
    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// A transaction holding the accounts' journal locks until it ends: entries that proxies
    /// append at the same moment get their ids in the order they commit, so the drainer never
    /// reads an entry while an earlier one is still uncommitted. `accounts` ascend, so two
    /// transactions that lock several never wait for each other in a circle.
    async fn journal_tx(&self, accounts: &[i64]) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        for account in accounts {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(account)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// A transaction holding the migration lock until it ends.
    async fn migration_tx(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Holds the pair's row until the transaction ends, so that the writers of a pair's links
    /// (which read its runs, then rewrite them) take turns.
    async fn lock_pair(tx: &mut Transaction<'static, Postgres>, pair: PairId) -> Result<()> {
        sqlx::query("SELECT id FROM folder_pairs WHERE id = $1 FOR NO KEY UPDATE")
            .bind(pair)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// A migration in PostgreSQL's spelling (see schema.sql).
    fn dialect(sql: &str) -> Cow<'_, str> {
        Cow::Owned(postgres_dialect(sql))
    }

    /// A statement built for a batch (see the SQLite store's): PostgreSQL's `$N` as written.
    fn batch(sql: String) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(sql)
    }
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
