// The statements of the SQL stores, compiled once per backend: `sqlite.rs` and `postgres.rs` each
// include this file in a module that names `SqlStore` (the store type), `Conn` (a connection an
// operation runs on) and `SHARED` (whether other processes share the store). `Conn` has
// `execute`, `fetch_all`, `fetch_optional`, `fetch_one` and `execute_script`; `SqlStore` runs an
// operation ([`Op`]) with `read` (no transaction), `write` (in a transaction that writes),
// `journal_write` (one in which the accounts' journal entries get their ids in commit order) and
// `migration` (one no other process migrates beside), and has `lock_pair` (in a write
// transaction, the pair's links are written by no other) and `dialect` (a migration's text as
// this database spells it). The SQL is the subset both databases run (see sql.rs). Links are
// stored as runs (runs.rs).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::store::runs::{self, Run};
use crate::store::sql::{
    BATCH_ROWS, Column, DbSide, DbUidMap, MIGRATIONS, PAIR_COLUMNS, Row, Value, args, now, op,
    padded, tuples,
};
use crate::store::{
    AccountId, AccountKey, AccountState, AccountSummary, Adoption, AppendKey, Committed,
    FolderPair, FolderSummary, JournalEntry, Link, LinkChange, LinkFlags, MailboxState,
    MeasuredSizes, NO_BASE, NewEntry, PairId, Phase, Progress, Result, Store, StoreError, ToMirror,
};
use crate::uidmap::Shown;

/// NEW UID ranges a links read names one by one; a set of more is read as its span.
const LINK_READ_RANGES: usize = 32;

/// The links of pair `$1` whose NEW UID is in one of `ranges` ranges, `($2, $3), ($4, $5), …`
/// (each `lo, hi`, inclusive): per range, the runs that hold one of its UIDs (those starting in
/// it, and the last one starting before it, see migration 12) and the per-message links in it.
/// Each row names its range (`lo`, `hi`), so a run is cut to it. Index lookups only, however
/// many runs the pair has: `CROSS JOIN` keeps the ranges outside (SQLite's planner, without
/// statistics, would rather read the pair's every link and match them to the ranges).
pub(super) fn links_by_new_sql(ranges: usize) -> String {
    format!(
        "WITH q (lo, hi) AS (VALUES {}) \
         SELECT q.lo, q.hi, r.old_start, r.new_start, r.length, r.old_flags, r.new_flags, \
         NULL AS ident FROM q CROSS JOIN link_runs r WHERE r.pair_id = $1 \
         AND r.new_start <= q.hi AND r.new_start + r.length > q.lo \
         AND r.new_start >= COALESCE((SELECT MAX(s.new_start) FROM link_runs s \
         WHERE s.pair_id = $1 AND s.new_start <= q.lo), 0) \
         UNION ALL \
         SELECT q.lo, q.hi, l.old_uid, l.new_uid, 1, l.old_flags, l.new_flags, l.ident \
         FROM q CROSS JOIN links l WHERE l.pair_id = $1 AND l.new_uid BETWEEN q.lo AND q.hi",
        tuples(ranges, 2, 2)
    )
}

impl SqlStore {
    /// Applies the migrations this database has not seen yet, each in one transaction.
    pub(super) async fn migrate(&self) -> Result<()> {
        let current = self
            .migration(|c| {
                op(async move {
                    c.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (\
                         version BIGINT NOT NULL PRIMARY KEY, applied BIGINT NOT NULL)",
                        args![],
                    )
                    .await?;
                    schema_version(c).await
                })
            })
            .await?;
        let known = i64::try_from(MIGRATIONS.len())
            .map_err(|_| StoreError::Corrupt("too many migrations".into()))?;
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
            let applied = self
                .migration(move |c| {
                    op(async move {
                        // Another process may have migrated since we looked.
                        if schema_version(c).await? >= version {
                            return Ok(false);
                        }
                        c.execute_script(&Self::dialect(sql)).await?;
                        c.execute(
                            "INSERT INTO schema_version (version, applied) VALUES ($1, $2)",
                            args![version, now()],
                        )
                        .await?;
                        Ok(true)
                    })
                })
                .await?;
            if applied {
                tracing::info!(version, "state store schema migrated");
            }
        }
        Ok(())
    }

    /// The rows of a read.
    pub(super) async fn select(
        &self,
        sql: impl Into<String>,
        args: Vec<Value>,
    ) -> Result<Vec<Row>> {
        let sql = sql.into();
        self.read(move |c| op(async move { c.fetch_all(&sql, args).await }))
            .await
    }

    /// The first row of a read, if any.
    pub(super) async fn select_row(
        &self,
        sql: impl Into<String>,
        args: Vec<Value>,
    ) -> Result<Option<Row>> {
        Ok(self.select(sql, args).await?.into_iter().next())
    }

    /// One statement that writes, in a transaction of its own: the rows it changed.
    pub(super) async fn change(&self, sql: impl Into<String>, args: Vec<Value>) -> Result<u64> {
        let sql = sql.into();
        self.write(move |c| op(async move { c.execute(&sql, args).await }))
            .await
    }

    /// [`Self::change`] of folder pair `pair`'s names, counted in its account's epoch.
    async fn change_pair(&self, pair: PairId, sql: &'static str, args: Vec<Value>) -> Result<u64> {
        self.write(move |c| {
            op(async move {
                Self::pairs_changed(c, pair).await?;
                c.execute(sql, args).await
            })
        })
        .await
    }

    /// Counts a deletion, rename or new NEW name of folder pair `pair` in its account's epoch
    /// (`pair_epochs`): a mirror that keeps the pairs it read between drains reads them again.
    async fn pairs_changed(c: &mut Conn, pair: PairId) -> Result<()> {
        c.execute(
            "INSERT INTO pair_epochs (account_id, epoch) \
             SELECT account_id, 1 FROM folder_pairs WHERE id = $1 \
             ON CONFLICT (account_id) DO UPDATE SET epoch = pair_epochs.epoch + 1",
            args![pair],
        )
        .await?;
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

    async fn move_state(
        &self,
        account: AccountId,
        from: AccountState,
        to: AccountState,
    ) -> Result<bool> {
        let rows = self
            .change(
                "UPDATE accounts SET state = $1, reason = NULL, updated = $2 \
                 WHERE id = $3 AND state = $4",
                args![to.as_str(), now(), account, from.as_str()],
            )
            .await?;
        self.changed(account, rows).await
    }

    async fn delete_batch(
        &self,
        table: &'static str,
        pair: PairId,
        old_uids: &[u32],
    ) -> Result<()> {
        if old_uids.is_empty() {
            return Ok(());
        }
        let mut writes = Writes::default();
        writes.delete_uids((table, "old_uid"), pair, old_uids);
        self.write(move |c| op(writes.run(c))).await
    }

    /// The runs of `pair` that hold or border these OLD UIDs, ascending: for each UID, the run
    /// holding it (or the last one before it), the run holding the UID before it, and the run
    /// starting just after it. Index lookups only, however many runs the pair has.
    async fn runs_around(c: &mut Conn, pair: PairId, old_uids: &BTreeSet<u32>) -> Result<Vec<Run>> {
        let uids: Vec<u32> = old_uids.iter().copied().collect();
        let mut found: BTreeMap<u32, Run> = BTreeMap::new();
        if let [uid] = uids[..] {
            // The common case, one UID: the three runs starting last up to just after it hold
            // all three, read backwards along the index (no temporary b-tree for a UNION).
            let rows = c
                .fetch_all(
                    "SELECT old_start, new_start, length, old_flags, new_flags FROM link_runs \
                     WHERE pair_id = $1 AND old_start <= $2 ORDER BY old_start DESC LIMIT 3",
                    args![pair, i64::from(uid) + 1],
                )
                .await?;
            let runs = rows
                .iter()
                .map(|row| run_from_row(row, pair))
                .collect::<Result<Vec<Run>>>()?;
            let wanted: [&dyn Fn(u32) -> bool; 3] = [
                &|start| uid.checked_add(1) == Some(start),
                &|start| start <= uid,
                &|start| start < uid,
            ];
            for is in wanted {
                if let Some(run) = runs.iter().find(|r| is(r.old_start)) {
                    found.insert(run.old_start, run.clone());
                }
            }
            return Ok(found.into_values().collect());
        }
        for chunk in uids.chunks(BATCH_ROWS) {
            let chunk = padded(chunk);
            let sql = format!(
                "WITH v (uid) AS (VALUES {}) \
                 SELECT old_start, new_start, length, old_flags, new_flags FROM link_runs \
                 WHERE pair_id = {pair} AND old_start IN (\
                 SELECT (SELECT MAX(r.old_start) FROM link_runs r \
                         WHERE r.pair_id = {pair} AND r.old_start <= v.uid) FROM v \
                 UNION SELECT (SELECT MAX(r.old_start) FROM link_runs r \
                               WHERE r.pair_id = {pair} AND r.old_start < v.uid) FROM v \
                 UNION SELECT uid + 1 FROM v)",
                tuples(chunk.len(), 1, 1),
                pair = format!("${}", chunk.len() + 1)
            );
            let mut args: Vec<Value> = chunk.iter().map(|uid| Value::from(*uid)).collect();
            args.push(pair.into());
            for row in c.fetch_all(&sql, args).await? {
                let run = run_from_row(&row, pair)?;
                found.insert(run.old_start, run);
            }
        }
        Ok(found.into_values().collect())
    }

    /// Drops the links of the OLD UIDs in `remove` from the pair's runs and puts in the runs that
    /// `add` makes of the window of runs around them (see [`runs::rewrite`]): reads the window,
    /// and gathers the writes of only the runs that changed.
    async fn rewrite_runs(
        c: &mut Conn,
        writes: &mut Writes,
        pair: PairId,
        remove: &BTreeSet<u32>,
        add: impl FnOnce(&[Run]) -> Vec<Run>,
    ) -> Result<()> {
        let window = Self::runs_around(c, pair, remove).await?;
        let added = add(&window);
        let after = runs::rewrite(&window, remove, added);
        writes.runs(pair, &window, &after)
    }

    /// Puts these links in place of the pair's links of the same OLD UIDs (one per UID): those
    /// without an identity key into runs, the others into `links`.
    async fn put_links(
        c: &mut Conn,
        writes: &mut Writes,
        pair: PairId,
        by_uid: &BTreeMap<u32, Link>,
    ) -> Result<()> {
        let uids: BTreeSet<u32> = by_uid.keys().copied().collect();
        let (keyed, plain): (Vec<&Link>, Vec<&Link>) =
            by_uid.values().partition(|l| l.ident.is_some());
        Self::rewrite_runs(c, writes, pair, &uids, |_| {
            plain.iter().map(|l| Run::single(l)).collect()
        })
        .await?;
        let plain_uids: Vec<u32> = plain.iter().map(|l| l.old_uid).collect();
        writes.delete_uids(("links", "old_uid"), pair, &plain_uids);
        for chunk in keyed.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO links (pair_id, old_uid, new_uid, old_flags, new_flags, ident) VALUES {} \
                 ON CONFLICT (pair_id, old_uid) DO UPDATE SET new_uid = excluded.new_uid, \
                 old_flags = excluded.old_flags, new_flags = excluded.new_flags, ident = excluded.ident",
                tuples(chunk.len(), 6, 1)
            );
            let args = chunk.iter().flat_map(|link| {
                args![
                    pair,
                    link.old_uid,
                    link.new_uid,
                    link.old_flags.as_str(),
                    link.new_flags.as_str(),
                    link.ident.as_deref(),
                ]
            });
            writes.push(sql, args.collect());
        }
        Ok(())
    }

    /// [`Store::add_links`] inside a write transaction (`by_uid`: one link per OLD UID).
    async fn link(c: &mut Conn, pair: PairId, by_uid: &BTreeMap<u32, Link>) -> Result<()> {
        Self::lock_pair(c, pair).await?;
        let appended = match by_uid.values().next() {
            Some(link) if by_uid.len() == 1 => Self::extend_run(c, pair, link).await?,
            _ => false,
        };
        let mut writes = Writes::default();
        if !appended {
            Self::put_links(c, &mut writes, pair, by_uid).await?;
        }
        let uids: Vec<u32> = by_uid.keys().copied().collect();
        writes.delete_uids(("tombstones", "old_uid"), pair, &uids);
        writes.run(c).await
    }

    /// [`Adoption`] inside a write transaction.
    async fn lower(c: &mut Conn, lower: Adoption) -> Result<()> {
        c.execute(
            "UPDATE folder_pairs SET adopt_from = $1 WHERE id = $2 AND adopt_from > $1",
            args![lower.from, lower.pair],
        )
        .await?;
        Ok(())
    }

    /// [`Store::remove_links`] inside a write transaction.
    async fn unlink(c: &mut Conn, pair: PairId, old_uids: &BTreeSet<u32>) -> Result<()> {
        Self::lock_pair(c, pair).await?;
        let mut writes = Writes::default();
        Self::drop_links(c, &mut writes, pair, old_uids).await?;
        writes.run(c).await
    }

    /// Drops the pair's links of these OLD UIDs, from runs and from `links`.
    async fn drop_links(
        c: &mut Conn,
        writes: &mut Writes,
        pair: PairId,
        old_uids: &BTreeSet<u32>,
    ) -> Result<()> {
        Self::rewrite_runs(c, writes, pair, old_uids, |_| Vec::new()).await?;
        let uids: Vec<u32> = old_uids.iter().copied().collect();
        writes.delete_uids(("links", "old_uid"), pair, &uids);
        Ok(())
    }

    /// The engine's common case, a link appended after the last one (the next OLD UID to the next
    /// NEW UID, with the same flags): the run it continues grows by one, in one statement. False
    /// when there is no such run, when the OLD UID is already linked, or when a run starts right
    /// after it (the link may join the two): the caller then takes the general way.
    async fn extend_run(c: &mut Conn, pair: PairId, link: &Link) -> Result<bool> {
        if link.ident.is_some() {
            return Ok(false);
        }
        let rows = c
            .execute(
                "UPDATE link_runs SET length = length + 1 \
                 WHERE pair_id = $1 \
                 AND old_start = (SELECT MAX(r.old_start) FROM link_runs r \
                                  WHERE r.pair_id = $1 AND r.old_start < $2) \
                 AND old_start + length = $2 AND new_start + length = $3 \
                 AND old_flags = $4 AND new_flags = $5 \
                 AND NOT EXISTS (SELECT 1 FROM link_runs r \
                                 WHERE r.pair_id = $1 AND r.old_start BETWEEN $2 AND $2 + 1) \
                 AND NOT EXISTS (SELECT 1 FROM links l WHERE l.pair_id = $1 AND l.old_uid = $2)",
                args![
                    pair,
                    link.old_uid,
                    link.new_uid,
                    link.old_flags.as_str(),
                    link.new_flags.as_str(),
                ],
            )
            .await?;
        Ok(rows == 1)
    }

    /// Deletes the pair's links (runs and per-message), tombstones and UID map, holding the pair.
    async fn clear_links(c: &mut Conn, pair: PairId) -> Result<()> {
        Self::lock_pair(c, pair).await?;
        for sql in [
            "DELETE FROM link_runs WHERE pair_id = $1",
            "DELETE FROM links WHERE pair_id = $1",
            "DELETE FROM tombstones WHERE pair_id = $1",
            "DELETE FROM uid_maps WHERE pair_id = $1",
        ] {
            c.execute(sql, args![pair]).await?;
        }
        Ok(())
    }

    /// Every link of the pair gets [`NO_BASE`], and its runs are joined again.
    async fn forget_bases_in(c: &mut Conn, pair: PairId) -> Result<()> {
        Self::lock_pair(c, pair).await?;
        let rows = c
            .fetch_all(
                "SELECT old_start, new_start, length, old_flags, new_flags FROM link_runs \
                 WHERE pair_id = $1 ORDER BY old_start",
                args![pair],
            )
            .await?;
        let before = rows
            .iter()
            .map(|row| run_from_row(row, pair))
            .collect::<Result<Vec<Run>>>()?;
        let bare = before.iter().map(|run| Run {
            old_flags: NO_BASE.into(),
            new_flags: NO_BASE.into(),
            ..run.clone()
        });
        let after = runs::rewrite(&[], &BTreeSet::new(), bare.collect());
        let mut writes = Writes::default();
        writes.runs(pair, &before, &after)?;
        writes.push(
            "UPDATE links SET old_flags = $1, new_flags = $2 WHERE pair_id = $3".into(),
            args![NO_BASE, NO_BASE, pair],
        );
        writes.run(c).await
    }
}

/// The pair of `account` whose OLD name is `old_name`.
async fn find_pair(c: &mut Conn, account: AccountId, old_name: &str) -> Result<Option<FolderPair>> {
    let sql =
        format!("SELECT {PAIR_COLUMNS} FROM folder_pairs WHERE account_id = $1 AND old_name = $2");
    let row = c.fetch_optional(&sql, args![account, old_name]).await?;
    row.as_ref().map(pair_from_row).transpose()
}

#[async_trait]
impl Store for SqlStore {
    async fn close(&self) {
        self.close_connections().await;
    }

    fn shared(&self) -> bool {
        SHARED
    }

    fn operations(&self) -> crate::store::Operations {
        self.counted.get()
    }

    async fn take_lease(&self, name: &str, holder: &str, now: i64, expires: i64) -> Result<bool> {
        let args = args![name, holder, expires, now];
        let row = self
            .write(move |c| {
                op(async move {
                    c.fetch_optional(
                        "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                         expires = excluded.expires \
                         WHERE leases.holder = excluded.holder OR leases.expires < $4 \
                         RETURNING holder",
                        args,
                    )
                    .await
                })
            })
            .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.change(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            args![name, holder],
        )
        .await?;
        Ok(())
    }

    async fn account(&self, key: &AccountKey) -> Result<AccountId> {
        const FIND: &str = "SELECT id FROM accounts \
             WHERE old_host = $1 AND old_user = $2 AND new_host = $3 AND new_user = $4";
        let find = args![
            key.old_host.as_str(),
            key.old_user.as_str(),
            key.new_host.as_str(),
            key.new_user.as_str(),
        ];
        if let Some(row) = self.select_row(FIND, find.clone()).await? {
            return row.get(0);
        }
        let mut insert = find.clone();
        insert.extend(args![AccountState::Pending.as_str(), now()]);
        let who = format!("{}@{}", key.old_user, key.old_host);
        self.write(move |c| {
            op(async move {
                c.execute(
                    "INSERT INTO accounts \
                     (old_host, old_user, new_host, new_user, state, created, updated) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (old_host, old_user, new_host, new_user) DO NOTHING",
                    insert,
                )
                .await?;
                match c.fetch_optional(FIND, find).await? {
                    Some(row) => row.get(0),
                    None => Err(StoreError::Corrupt(format!(
                        "account {who} was inserted but cannot be found"
                    ))),
                }
            })
        })
        .await
    }

    async fn account_state(&self, account: AccountId) -> Result<AccountState> {
        let row = self.select_row(STATE, args![account]).await?;
        state_of(account, row)
    }

    async fn set_account_state(
        &self,
        account: AccountId,
        state: AccountState,
        reason: Option<&str>,
    ) -> Result<bool> {
        let rows = self
            .change(
                "UPDATE accounts SET state = $1, reason = $2, updated = $3 \
                 WHERE id = $4 AND state <> $5 AND state <> $6",
                args![
                    state.as_str(),
                    reason,
                    now(),
                    account,
                    AccountState::Retired.as_str(),
                    AccountState::Diverged.as_str(),
                ],
            )
            .await?;
        self.changed(account, rows).await
    }

    async fn mark_diverged(&self, account: AccountId, reason: &str) -> Result<bool> {
        let rows = self
            .change(
                "UPDATE accounts SET state = $1, reason = $2, updated = $3 \
                 WHERE id = $4 AND state <> $5",
                args![
                    AccountState::Diverged.as_str(),
                    reason,
                    now(),
                    account,
                    AccountState::Retired.as_str(),
                ],
            )
            .await?;
        self.changed(account, rows).await
    }

    async fn mark_writes_in_flight(
        &self,
        account: AccountId,
        holder: &str,
        on: bool,
    ) -> Result<()> {
        if on {
            self.change(
                "INSERT INTO write_marks (account_id, holder, since) VALUES ($1, $2, $3) \
                 ON CONFLICT (account_id, holder) DO NOTHING",
                args![account, holder, now()],
            )
            .await?;
        } else {
            self.change(
                "DELETE FROM write_marks WHERE account_id = $1 AND holder = $2",
                args![account, holder],
            )
            .await?;
        }
        Ok(())
    }

    async fn writes_in_flight(&self, account: AccountId) -> Result<Vec<(String, i64)>> {
        let rows = self
            .select(
                "SELECT holder, since FROM write_marks WHERE account_id = $1 \
                 ORDER BY since, holder",
                args![account],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.get("holder")?, row.get("since")?)))
            .collect()
    }

    async fn lease_held(&self, name: &str, now: i64) -> Result<bool> {
        let row = self
            .select_row(
                "SELECT 1 FROM leases WHERE name = $1 AND expires >= $2",
                args![name, now],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn clear_diverged(&self, account: AccountId, state: AccountState) -> Result<bool> {
        self.move_state(account, AccountState::Diverged, state)
            .await
    }

    async fn folder_pair(
        &self,
        account: AccountId,
        old_name: &str,
        new_name: &str,
    ) -> Result<FolderPair> {
        let old = old_name.to_owned();
        let found = self
            .read(move |c| op(async move { find_pair(c, account, &old).await }))
            .await?;
        let mut pair = match found {
            Some(pair) => pair,
            None => {
                let (old, new) = (old_name.to_owned(), new_name.to_owned());
                self.write(move |c| {
                    op(async move {
                        c.execute(
                            "INSERT INTO folder_pairs \
                             (account_id, old_name, new_name, adopt_from, phase, updated) \
                             VALUES ($1, $2, $3, 1, $4, $5) \
                             ON CONFLICT (account_id, old_name) DO NOTHING",
                            args![account, old.as_str(), new, Phase::New.as_str(), now()],
                        )
                        .await?;
                        find_pair(c, account, &old).await?.ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "folder pair {old:?} of account {account} was inserted but \
                                 cannot be found"
                            ))
                        })
                    })
                })
                .await?
            }
        };
        if pair.new_name != new_name {
            self.change_pair(
                pair.id,
                "UPDATE folder_pairs SET new_name = $1, updated = $2 WHERE id = $3",
                args![new_name, now(), pair.id],
            )
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
        let rows = self.select(account_pairs(), args![account]).await?;
        rows.iter().map(pair_from_row).collect()
    }

    async fn account_progress(&self, account: AccountId) -> Result<Progress> {
        self.read(move |c| {
            op(async move {
                let rows = c.fetch_all(&account_pairs(), args![account]).await?;
                let pairs = rows.iter().map(pair_from_row).collect::<Result<_>>()?;
                let pending = c.fetch_one(PENDING, args![account]).await?;
                let state = c.fetch_optional(STATE, args![account]).await?;
                Ok(Progress {
                    pairs,
                    pending: get_u64(&pending, 0)?,
                    state: state_of(account, state)?,
                })
            })
        })
        .await
    }

    /// Read first: the watermark is nearly always below `from` already (a mirrored APPEND or
    /// COPY makes NEW UIDs above what the last pass saw), and a read costs no write transaction.
    /// Skipping the write then is what the write would have done.
    async fn lower_adoption(&self, pair: PairId, from: u32) -> Result<()> {
        let current = self
            .select_row(
                "SELECT adopt_from FROM folder_pairs WHERE id = $1",
                args![pair],
            )
            .await?;
        if let Some(row) = current
            && get_u32(&row, "adopt_from")? <= from
        {
            return Ok(());
        }
        self.change(
            "UPDATE folder_pairs SET adopt_from = $1 WHERE id = $2 AND adopt_from > $1",
            args![from, pair],
        )
        .await?;
        Ok(())
    }

    async fn append_keys(&self, entry: i64) -> Result<Vec<(u32, String)>> {
        let rows = self
            .select(
                "SELECT new_uid, ident FROM append_keys WHERE entry_id = $1 ORDER BY new_uid",
                args![entry],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((get_u32(row, "new_uid")?, row.get("ident")?)))
            .collect()
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
        let rows = self
            .change(
                "UPDATE folder_pairs SET \
                 old_uidvalidity = $1, old_uidnext = $2, old_highestmodseq = $3, \
                 old_messages = $4, new_uidvalidity = $5, new_uidnext = $6, \
                 new_highestmodseq = $7, new_messages = $8, \
                 adopt_from = $9, phase = $10, updated = $11 WHERE id = $12",
                args![
                    old.uidvalidity,
                    old.uidnext,
                    old.highestmodseq,
                    old.messages,
                    new.uidvalidity,
                    new.uidnext,
                    new.highestmodseq,
                    new.messages,
                    adopt_from,
                    phase.as_str(),
                    now(),
                    pair,
                ],
            )
            .await?;
        if rows == 0 {
            return Err(StoreError::Corrupt(format!("no folder pair {pair}")));
        }
        Ok(())
    }

    async fn reset_pair(&self, pair: PairId) -> Result<()> {
        self.write(move |c| {
            op(async move {
                Self::clear_links(c, pair).await?;
                let rows = c
                    .execute(
                        "UPDATE folder_pairs SET \
                         old_uidvalidity = NULL, old_uidnext = NULL, old_highestmodseq = NULL, \
                         old_messages = NULL, new_uidvalidity = NULL, new_uidnext = NULL, \
                         new_highestmodseq = NULL, new_messages = NULL, \
                         adopt_from = 1, phase = $1, updated = $2 WHERE id = $3",
                        args![Phase::New.as_str(), now(), pair],
                    )
                    .await?;
                // An error rolls the deletes back.
                if rows == 0 {
                    return Err(StoreError::Corrupt(format!("no folder pair {pair}")));
                }
                Ok(())
            })
        })
        .await
    }

    async fn links(&self, pair: PairId) -> Result<Vec<Link>> {
        self.links_by_new(pair, &[(0, u32::MAX)]).await
    }

    /// The runs and the per-message links of every range in one statement (one snapshot: a
    /// link that a concurrent write moves between them is seen once). The ranges are padded
    /// by repeating the last (a few statement texts, see [`padded`]); its rows come twice and
    /// are dropped by OLD UID, which names one link.
    async fn links_by_new(&self, pair: PairId, ranges: &[(u32, u32)]) -> Result<Vec<Link>> {
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(Vec::new());
        };
        let span = [(first.0, last.1)];
        let read = padded(if ranges.len() > LINK_READ_RANGES {
            &span
        } else {
            ranges
        });
        let mut args = vec![Value::from(pair)];
        for &(lo, hi) in &read {
            args.extend([Value::from(lo), Value::from(hi)]);
        }
        let rows = self.select(links_by_new_sql(read.len()), args).await?;
        let named = |uid: u32| {
            let i = ranges.partition_point(|&(_, hi)| hi < uid);
            ranges.get(i).is_some_and(|&(lo, _)| lo <= uid)
        };
        let mut links = Vec::with_capacity(rows.len());
        for row in &rows {
            let (lo, hi) = (get_u32(row, "lo")?, get_u32(row, "hi")?);
            let ident: Option<String> = row.get("ident")?;
            let run = run_from_row(row, pair)?;
            match ident {
                Some(ident) => links.push(Link {
                    old_uid: run.old_start,
                    new_uid: run.new_start,
                    old_flags: run.old_flags,
                    new_flags: run.new_flags,
                    ident: Some(ident),
                }),
                None => links.extend(run.links_by_new(lo, hi)),
            }
        }
        links.retain(|l| named(l.new_uid)); // a span read holds more
        links.sort_unstable_by_key(|l| l.old_uid);
        links.dedup_by_key(|l| l.old_uid);
        Ok(links)
    }

    /// Also drops any tombstone of these OLD UIDs: a (pair, OLD UID) is linked or tombstoned,
    /// never both. When `links` holds an OLD UID twice, the last one is kept. Links without an
    /// identity key go into runs; those with one are kept per message in `links`.
    async fn add_links(&self, pair: PairId, links: &[Link]) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        // One link per OLD UID, ascending (PostgreSQL refuses an upsert touching a row twice, and
        // ascending keys fill the b-tree in order).
        let by_uid: BTreeMap<u32, Link> = links.iter().map(|l| (l.old_uid, l.clone())).collect();
        self.write(move |c| op(async move { Self::link(c, pair, &by_uid).await }))
            .await
    }

    async fn add_links_lowering(
        &self,
        pair: PairId,
        links: &[Link],
        lower: Adoption,
    ) -> Result<()> {
        if links.is_empty() {
            return self.lower_adoption(lower.pair, lower.from).await;
        }
        let by_uid: BTreeMap<u32, Link> = links.iter().map(|l| (l.old_uid, l.clone())).collect();
        self.write(move |c| {
            op(async move {
                Self::lower(c, lower).await?;
                Self::link(c, pair, &by_uid).await
            })
        })
        .await
    }

    /// Updates for OLD UIDs without a link are ignored. When `updates` holds an OLD UID twice,
    /// the last one is kept. A link of a run with new flags becomes a run of its own, between
    /// the two parts of its old run (or joins a neighbour with the same flags).
    async fn update_link_flags(&self, pair: PairId, updates: &[LinkFlags]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let by_uid: BTreeMap<u32, LinkFlags> =
            updates.iter().map(|u| (u.old_uid, u.clone())).collect();
        self.write(move |c| {
            op(async move {
                Self::lock_pair(c, pair).await?;
                let uids: BTreeSet<u32> = by_uid.keys().copied().collect();
                let mut writes = Writes::default();
                Self::rewrite_runs(c, &mut writes, pair, &uids, |window| {
                    window
                        .iter()
                        .flat_map(|run| {
                            by_uid
                                .range(run.old_start..)
                                .take_while(|(uid, _)| run.contains(**uid))
                                .map(|(&uid, update)| Run {
                                    old_start: uid,
                                    new_start: run.new_uid(uid),
                                    len: 1,
                                    old_flags: update.old_flags.clone(),
                                    new_flags: update.new_flags.clone(),
                                })
                        })
                        .collect()
                })
                .await?;
                let updates: Vec<&LinkFlags> = by_uid.values().collect();
                for chunk in updates.chunks(BATCH_ROWS) {
                    // `UPDATE … FROM (VALUES …)`: SQLite ≥ 3.33 and PostgreSQL; both name the
                    // columns of a VALUES list column1, column2, …
                    let sql = format!(
                        "UPDATE links SET old_flags = v.column2, new_flags = v.column3 \
                         FROM (VALUES {}) AS v \
                         WHERE links.pair_id = ${} AND links.old_uid = v.column1",
                        tuples(chunk.len(), 3, 1),
                        3 * chunk.len() + 1
                    );
                    let mut args: Vec<Value> = chunk
                        .iter()
                        .flat_map(|u| args![u.old_uid, u.old_flags.as_str(), u.new_flags.as_str()])
                        .collect();
                    args.push(pair.into());
                    writes.push(sql, args);
                }
                writes.run(c).await
            })
        })
        .await
    }

    /// A pair whose links keep no base already is only read.
    async fn forget_link_bases(&self, pair: PairId) -> Result<()> {
        let based = self
            .select_row(
                "SELECT 1 FROM link_runs WHERE pair_id = $1 AND old_flags <> $2 \
                 UNION ALL SELECT 1 FROM links WHERE pair_id = $1 AND old_flags <> $2 LIMIT 1",
                args![pair, NO_BASE],
            )
            .await?;
        if based.is_none() {
            return Ok(());
        }
        self.write(move |c| op(Self::forget_bases_in(c, pair)))
            .await
    }

    async fn remove_links(&self, pair: PairId, old_uids: &[u32]) -> Result<()> {
        if old_uids.is_empty() {
            return Ok(());
        }
        let uids: BTreeSet<u32> = old_uids.iter().copied().collect();
        self.write(move |c| op(async move { Self::unlink(c, pair, &uids).await }))
            .await
    }

    /// OLD UIDs without a link are tombstoned too (they must not be copied either).
    async fn tombstone(&self, pair: PairId, old_uids: &[u32]) -> Result<()> {
        if old_uids.is_empty() {
            return Ok(());
        }
        let set: BTreeSet<u32> = old_uids.iter().copied().collect();
        let now = now();
        self.write(move |c| {
            op(async move {
                Self::lock_pair(c, pair).await?;
                let mut writes = Writes::default();
                Self::drop_links(c, &mut writes, pair, &set).await?;
                let uids: Vec<u32> = set.into_iter().collect();
                for chunk in uids.chunks(BATCH_ROWS) {
                    let sql = format!(
                        "INSERT INTO tombstones (pair_id, created, old_uid) VALUES {} \
                         ON CONFLICT (pair_id, old_uid) DO NOTHING",
                        tuples(chunk.len(), 3, 1)
                    );
                    let args = chunk.iter().flat_map(|uid| args![pair, now, *uid]);
                    writes.push(sql, args.collect());
                }
                writes.run(c).await
            })
        })
        .await
    }

    async fn measured_sizes(
        &self,
        pair: PairId,
    ) -> Result<(Option<MeasuredSizes>, Option<MeasuredSizes>)> {
        let row = self
            .select_row("SELECT * FROM folder_sizes WHERE pair_id = $1", args![pair])
            .await?;
        match row {
            None => Ok((None, None)),
            Some(row) => Ok((read_sizes(&row, "old")?, read_sizes(&row, "new")?)),
        }
    }

    async fn save_measured_sizes(
        &self,
        pair: PairId,
        old: Option<MeasuredSizes>,
        new: Option<MeasuredSizes>,
    ) -> Result<()> {
        let columns = |m: Option<MeasuredSizes>| -> Result<[Option<i64>; 5]> {
            let Some(m) = m else {
                return Ok([None; 5]);
            };
            let big = |v: u64| {
                i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("a size of {v} bytes")))
            };
            Ok([
                Some(m.uidvalidity.into()),
                Some(m.uidnext.into()),
                Some(m.messages.into()),
                Some(big(m.bytes)?),
                Some(big(m.biggest)?),
            ])
        };
        let mut args = args![pair];
        args.extend(
            columns(old)?
                .into_iter()
                .chain(columns(new)?)
                .map(Value::from),
        );
        self.change(
            "INSERT INTO folder_sizes (pair_id, \
             old_uidvalidity, old_uidnext, old_messages, old_bytes, old_biggest, \
             new_uidvalidity, new_uidnext, new_messages, new_bytes, new_biggest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (pair_id) DO UPDATE SET \
             old_uidvalidity = $2, old_uidnext = $3, old_messages = $4, old_bytes = $5, \
             old_biggest = $6, new_uidvalidity = $7, new_uidnext = $8, new_messages = $9, \
             new_bytes = $10, new_biggest = $11",
            args,
        )
        .await?;
        Ok(())
    }

    async fn set_message_errors(&self, pair: PairId, errors: &[(u32, String)]) -> Result<()> {
        let now = now();
        let errors = errors.to_vec();
        self.write(move |c| {
            op(async move {
                c.execute("DELETE FROM message_errors WHERE pair_id = $1", args![pair])
                    .await?;
                for chunk in errors.chunks(BATCH_ROWS) {
                    let sql = format!(
                        "INSERT INTO message_errors (pair_id, created, old_uid, reason) VALUES {} \
                         ON CONFLICT (pair_id, old_uid) DO UPDATE SET reason = excluded.reason",
                        tuples(chunk.len(), 4, 1)
                    );
                    let args = chunk
                        .iter()
                        .flat_map(|(uid, reason)| args![pair, now, *uid, reason.as_str()]);
                    c.execute(&sql, args.collect()).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn message_errors(&self, pair: PairId) -> Result<Vec<(u32, String)>> {
        let rows = self
            .select(
                "SELECT old_uid, reason FROM message_errors WHERE pair_id = $1 ORDER BY old_uid",
                args![pair],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((get_u32(row, "old_uid")?, row.get("reason")?)))
            .collect()
    }

    async fn uid_map(&self, pair: PairId) -> Result<Option<Shown>> {
        let row = self.select_row(pair_uid_map(), args![pair]).await?;
        row.as_ref().map(shown_from_row).transpose()
    }

    /// One statement inserts the map unless the pair has one (`ON CONFLICT DO NOTHING`: a
    /// concurrent freeze waits for the first to commit, then inserts nothing), and the map
    /// stored is read back in the same transaction. A missing pair inserts nothing: an error.
    async fn freeze_uid_map(&self, pair: PairId, shown: &Shown) -> Result<Shown> {
        let m = DbUidMap::from_shown(shown)?;
        self.write(move |c| {
            op(async move {
                c.execute(
                    "INSERT INTO uid_maps (pair_id, uidvalidity, new_uidvalidity, modseq_offset, \
                     tail_new, tail_virt, runs) \
                     SELECT id, $2, $3, $4, $5, $6, $7 FROM folder_pairs WHERE id = $1 \
                     ON CONFLICT (pair_id) DO NOTHING",
                    args![
                        pair,
                        m.uidvalidity,
                        m.new_uidvalidity,
                        m.modseq_offset,
                        m.tail_new,
                        m.tail_virt,
                        m.runs,
                    ],
                )
                .await?;
                let row = c
                    .fetch_optional(&pair_uid_map(), args![pair])
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("no folder pair {pair}")))?;
                shown_from_row(&row)
            })
        })
        .await
    }

    async fn raise_modseq_offset(&self, pair: PairId, at_least: u64) -> Result<()> {
        let at_least = i64::try_from(at_least).map_err(|_| {
            StoreError::Corrupt(format!("a MODSEQ offset of {at_least} exceeds 63 bits"))
        })?;
        self.write(move |c| {
            op(async move {
                c.execute(
                    "UPDATE uid_maps SET modseq_offset = $2 \
                     WHERE pair_id = $1 AND uidvalidity <> 0 AND modseq_offset < $2",
                    args![pair, at_least],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn uid_maps(&self, account: AccountId) -> Result<Vec<(String, Shown)>> {
        let sql = format!(
            "SELECT p.new_name, {UID_MAP_COLUMNS} FROM uid_maps m \
             JOIN folder_pairs p ON p.id = m.pair_id \
             WHERE p.account_id = $1 ORDER BY p.new_name, p.id"
        );
        let rows = self.select(sql, args![account]).await?;
        rows.iter()
            .map(|row| Ok((row.get("new_name")?, shown_from_row(row)?)))
            .collect()
    }

    async fn tombstones(&self, pair: PairId) -> Result<Vec<u32>> {
        let (rows, state) = self
            .read(move |c| {
                op(async move {
                    let rows = c
                        .fetch_all(
                            "SELECT old_uid FROM tombstones WHERE pair_id = $1 ORDER BY old_uid",
                            args![pair],
                        )
                        .await?;
                    // Read after the tombstones: a retire that deleted them had committed by
                    // then, and is seen here (a retired account stays retired).
                    let state = c
                        .fetch_optional(
                            "SELECT a.state FROM folder_pairs p \
                             JOIN accounts a ON a.id = p.account_id WHERE p.id = $1",
                            args![pair],
                        )
                        .await?;
                    Ok((rows, state))
                })
            })
            .await?;
        let state: Option<String> = state.map(|row| row.get(0)).transpose()?;
        if state.as_deref() == Some(AccountState::Retired.as_str()) {
            return Err(StoreError::Retired(format!("folder pair {pair}")));
        }
        rows.iter().map(|row| get_u32(row, "old_uid")).collect()
    }

    async fn remove_tombstones(&self, pair: PairId, old_uids: &[u32]) -> Result<()> {
        self.delete_batch("tombstones", pair, old_uids).await
    }

    /// In an explicit transaction: SQLite writes the log at the commit, after `RETURNING` has
    /// produced its row, and a commit that fails there (a full disk) is reported only by the
    /// commit. The retired check is in the statement, so it costs no read of its own.
    async fn journal_commit(
        &self,
        entries: &[NewEntry<'_>],
        done: &[i64],
        keys: &[AppendKey],
        lower: &[Adoption],
    ) -> Result<Committed> {
        // By pair, as every transaction takes pairs (lowered first: a pair's row before journal
        // rows, as the mirror's marks take them).
        let lower: BTreeSet<(PairId, u32)> = lower.iter().map(|l| (l.pair, l.from)).collect();
        let accounts: BTreeSet<AccountId> = entries.iter().map(|e| e.account).collect();
        let entries: Vec<(AccountId, String, String)> = entries
            .iter()
            .map(|e| (e.account, e.kind.to_owned(), e.payload.to_owned()))
            .collect();
        let done: BTreeSet<i64> = done.iter().copied().collect();
        // One row per key, ascending (PostgreSQL refuses an upsert touching a row twice).
        let keys: BTreeMap<(i64, u32), String> = keys
            .iter()
            .map(|k| ((k.entry, k.new_uid), k.ident.clone()))
            .collect();
        self.journal_write(accounts.into_iter().collect(), move |c| {
            op(async move {
                for &(pair, from) in &lower {
                    Self::lower(c, Adoption { pair, from }).await?;
                }
                let mut ids = Vec::with_capacity(entries.len());
                for chunk in entries.chunks(JOURNAL_ROWS) {
                    ids.extend(journal_insert(c, chunk).await?);
                }
                let missing = mark_done(c, done).await?;
                let keys: Vec<_> = keys.into_iter().collect();
                // Keys of an entry gone meanwhile are dropped, not the commit: it carries the
                // sessions' entries too.
                for chunk in keys.chunks(BATCH_ROWS) {
                    let sql = format!(
                        "INSERT INTO append_keys (entry_id, new_uid, ident) \
                         SELECT k.column1, k.column2, k.column3 FROM (VALUES {}) AS k \
                         WHERE EXISTS (SELECT 1 FROM journal j WHERE j.id = k.column1) \
                         ON CONFLICT (entry_id, new_uid) DO UPDATE SET ident = excluded.ident",
                        tuples(chunk.len(), 3, 1)
                    );
                    let mut args = Vec::with_capacity(chunk.len() * 3);
                    for ((entry, uid), ident) in chunk {
                        args.extend(args![*entry, *uid, ident.as_str()]);
                    }
                    c.execute(&sql, args).await?;
                }
                Ok(Committed { ids, missing })
            })
        })
        .await
    }

    async fn journal_mirrored(&self, done: &[i64], changes: &[LinkChange]) -> Result<Vec<i64>> {
        let done: BTreeSet<i64> = done.iter().copied().collect();
        let changes: Vec<(PairId, BTreeMap<u32, Link>, BTreeSet<u32>)> = changes
            .iter()
            .map(|ch| {
                let added = ch.added.iter().map(|l| (l.old_uid, l.clone())).collect();
                (ch.pair, added, ch.removed.iter().copied().collect())
            })
            .collect();
        self.write(move |c| {
            op(async move {
                for (pair, added, removed) in &changes {
                    if !added.is_empty() {
                        Self::link(c, *pair, added).await?;
                    }
                    if !removed.is_empty() {
                        Self::unlink(c, *pair, removed).await?;
                    }
                }
                mark_done(c, done).await
            })
        })
        .await
    }

    async fn journal_pending(&self, account: AccountId, limit: u32) -> Result<Vec<JournalEntry>> {
        let rows = self.select(pending_sql(limit), args![account]).await?;
        rows.iter().map(journal_entry).collect()
    }

    async fn journal_to_mirror(&self, account: AccountId, limit: u32) -> Result<Option<ToMirror>> {
        self.read(move |c| {
            op(async move {
                let row = c
                    .fetch_optional(STATE_AND_PAIR_EPOCH, args![account])
                    .await?;
                let pairs_epoch = row.as_ref().map(|r| r.get::<i64>(1)).transpose()?;
                if state_of(account, row)? == AccountState::Retired {
                    return Ok(None);
                }
                let rows = c.fetch_all(&pending_sql(limit), args![account]).await?;
                Ok(Some(ToMirror {
                    entries: rows.iter().map(journal_entry).collect::<Result<_>>()?,
                    pairs_epoch: pairs_epoch.unwrap_or(0),
                }))
            })
        })
        .await
    }

    async fn journal_pending_holding(
        &self,
        account: AccountId,
        text: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>> {
        // The scan of the pending entries in order stops at the `limit`th that holds the text.
        let sql = format!(
            "SELECT id, created, kind, payload, attempts, reason, retry_at FROM journal \
             WHERE account_id = $1 AND done = 0 AND id > $2 AND payload LIKE $3 ESCAPE '\\' \
             ORDER BY id LIMIT {limit}"
        );
        let pattern = format!("%{}%", like_escaped(text));
        let rows = self.select(sql, args![account, after, pattern]).await?;
        rows.iter().map(journal_entry).collect()
    }

    async fn journal_pending_after(
        &self,
        account: AccountId,
        after: i64,
        kinds: &[&str],
    ) -> Result<Vec<JournalEntry>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, created, kind, payload, attempts, reason, retry_at FROM journal \
             WHERE account_id = $1 AND done = 0 AND id > $2 AND kind IN {} ORDER BY id",
            tuples(1, kinds.len(), 3)
        );
        let mut args = args![account, after];
        args.extend(kinds.iter().map(|kind| Value::from(*kind)));
        let rows = self.select(sql, args).await?;
        rows.iter().map(journal_entry).collect()
    }

    async fn journal_retry(&self, id: i64, reason: &str, retry_at: i64) -> Result<u32> {
        let args = args![reason, retry_at, id];
        let row = self
            .write(move |c| {
                op(async move {
                    c.fetch_optional(
                        "UPDATE journal SET attempts = attempts + 1, reason = $1, retry_at = $2 \
                         WHERE id = $3 AND done = 0 RETURNING attempts",
                        args,
                    )
                    .await
                })
            })
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no pending journal entry {id}")))?;
        get_u32(&row, "attempts")
    }

    async fn journal_park(&self, id: i64, reason: &str) -> Result<()> {
        let rows = self
            .change(
                "UPDATE journal SET done = 2, reason = $1 WHERE id = $2",
                args![reason, id],
            )
            .await?;
        if rows == 0 {
            return Err(StoreError::Corrupt(format!("no journal entry {id}")));
        }
        Ok(())
    }

    async fn journal_parked(&self, account: AccountId) -> Result<Vec<JournalEntry>> {
        let rows = self
            .select(
                "SELECT id, created, kind, payload, attempts, reason, retry_at FROM journal \
                 WHERE account_id = $1 AND done = 2 ORDER BY id",
                args![account],
            )
            .await?;
        rows.iter().map(journal_entry).collect()
    }

    async fn journal_purge(&self, before: i64) -> Result<u64> {
        self.change(
            "DELETE FROM journal WHERE done = 1 AND created < $1",
            args![before],
        )
        .await
    }

    async fn journal_pending_count(&self, account: AccountId) -> Result<u64> {
        let row = self
            .select_row(PENDING, args![account])
            .await?
            .ok_or_else(|| StoreError::Corrupt("COUNT(*) returned no row".into()))?;
        get_u64(&row, 0)
    }

    async fn find_account_state(
        &self,
        key: &AccountKey,
    ) -> Result<Option<(AccountId, AccountState)>> {
        let row = self
            .select_row(
                "SELECT id, state FROM accounts \
                 WHERE old_host = $1 AND old_user = $2 AND new_host = $3 AND new_user = $4",
                args![
                    key.old_host.as_str(),
                    key.old_user.as_str(),
                    key.new_host.as_str(),
                    key.new_user.as_str(),
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let (id, state): (AccountId, String) = (row.get(0)?, row.get(1)?);
        let state = AccountState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("account {id} has unknown state {state:?}"))
        })?;
        Ok(Some((id, state)))
    }

    async fn retire(&self, account: AccountId, forced: Option<&str>) -> Result<bool> {
        let forced = forced.map(str::to_owned);
        self.write(move |c| {
            op(async move {
                let rows = match forced {
                    Some(reason) => {
                        c.execute(
                            "UPDATE accounts SET state = $1, reason = $2, updated = $3 \
                             WHERE id = $4 AND state <> $1",
                            args![AccountState::Retired.as_str(), reason, now(), account],
                        )
                        .await?
                    }
                    None => {
                        c.execute(
                            "UPDATE accounts SET state = $1, reason = NULL, updated = $2 \
                             WHERE id = $3 AND state = $4 \
                             AND NOT EXISTS (SELECT 1 FROM journal \
                                             WHERE account_id = $3 AND done <> 1) \
                             AND NOT EXISTS (SELECT 1 FROM message_errors e \
                                             JOIN folder_pairs p ON p.id = e.pair_id \
                                             WHERE p.account_id = $3)",
                            args![
                                AccountState::Retired.as_str(),
                                now(),
                                account,
                                AccountState::Synced.as_str(),
                            ],
                        )
                        .await?
                    }
                };
                if rows != 1 {
                    return Ok(false);
                }
                // The summary: no pass runs for the account again, so its tombstones (counted
                // on the pair), mirrored journal entries and base flags are not read again. The
                // links stay, as runs, and the frozen UID maps (clients keep their caches). What
                // a forced retire left undone (pending or parked entries, messages in error)
                // stays listed.
                let pairs = c
                    .fetch_all(
                        "SELECT id FROM folder_pairs WHERE account_id = $1 ORDER BY id",
                        args![account],
                    )
                    .await?;
                for row in pairs {
                    let pair: PairId = row.get(0)?;
                    Self::forget_bases_in(c, pair).await?;
                    c.execute(
                        "UPDATE folder_pairs SET retired_tombstones = retired_tombstones + \
                         (SELECT COUNT(*) FROM tombstones t WHERE t.pair_id = $1) WHERE id = $1",
                        args![pair],
                    )
                    .await?;
                    c.execute("DELETE FROM tombstones WHERE pair_id = $1", args![pair])
                        .await?;
                }
                c.execute(
                    "DELETE FROM journal WHERE account_id = $1 AND done = 1",
                    args![account],
                )
                .await?;
                Ok(true)
            })
        })
        .await
    }

    async fn set_account_old(
        &self,
        account: AccountId,
        old_host: &str,
        old_user: &str,
    ) -> Result<()> {
        let rows = self
            .change(
                "UPDATE accounts SET old_host = $1, old_user = $2, updated = $3 WHERE id = $4",
                args![old_host, old_user, now(), account],
            )
            .await?;
        if rows == 0 {
            return Err(StoreError::Corrupt(format!("no account {account}")));
        }
        Ok(())
    }

    async fn touch_account(&self, account: AccountId) -> Result<()> {
        let rows = self
            .change(
                "UPDATE accounts SET last_activity = $1 WHERE id = $2",
                args![now(), account],
            )
            .await?;
        if rows == 0 {
            return Err(StoreError::Corrupt(format!("no account {account}")));
        }
        Ok(())
    }

    async fn rename_pair(&self, pair: PairId, old_name: &str, new_name: &str) -> Result<()> {
        let rows = self
            .change_pair(
                pair,
                "UPDATE folder_pairs SET old_name = $1, new_name = $2, updated = $3 WHERE id = $4",
                args![old_name, new_name, now(), pair],
            )
            .await?;
        if rows == 0 {
            return Err(StoreError::Corrupt(format!("no folder pair {pair}")));
        }
        Ok(())
    }

    async fn delete_pair(&self, pair: PairId) -> Result<()> {
        // Explicit deletes rather than relying on ON DELETE CASCADE alone: the same statements
        // work whatever the connection's foreign-key setting.
        self.write(move |c| {
            op(async move {
                Self::pairs_changed(c, pair).await?;
                Self::clear_links(c, pair).await?;
                for sql in [
                    "DELETE FROM folder_sizes WHERE pair_id = $1",
                    "DELETE FROM folder_pairs WHERE id = $1",
                ] {
                    c.execute(sql, args![pair]).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn account_summaries(&self) -> Result<Vec<AccountSummary>> {
        // Correlated subqueries, each served by an index (folder_pairs by account, links and
        // tombstones by pair, the pending-journal index); CAST keeps SUM a BIGINT in PostgreSQL.
        let rows = self
            .select(
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
              WHERE p.account_id = a.id) \
             + (SELECT CAST(COALESCE(SUM(r.length), 0) AS BIGINT) \
                FROM link_runs r JOIN folder_pairs p ON p.id = r.pair_id \
                WHERE p.account_id = a.id) AS linked, \
             (SELECT COUNT(*) FROM tombstones t JOIN folder_pairs p ON p.id = t.pair_id \
              WHERE p.account_id = a.id) \
             + (SELECT CAST(COALESCE(SUM(p.retired_tombstones), 0) AS BIGINT) FROM folder_pairs p \
                WHERE p.account_id = a.id) AS tombstones, \
             (SELECT COUNT(*) FROM journal j \
              WHERE j.account_id = a.id AND j.done = 0) AS pending_journal, \
             (SELECT COUNT(*) FROM journal j \
              WHERE j.account_id = a.id AND j.done = 2) AS parked_journal, \
             (SELECT COUNT(*) FROM message_errors e JOIN folder_pairs p ON p.id = e.pair_id \
              WHERE p.account_id = a.id) AS message_errors \
             FROM accounts a ORDER BY a.new_user, a.old_user, a.id",
                args![],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: AccountId = row.get("id")?;
                let state: String = row.get("state")?;
                Ok(AccountSummary {
                    id,
                    key: AccountKey {
                        old_host: row.get("old_host")?,
                        old_user: row.get("old_user")?,
                        new_host: row.get("new_host")?,
                        new_user: row.get("new_user")?,
                    },
                    state: AccountState::parse(&state).ok_or_else(|| {
                        StoreError::Corrupt(format!("account {id} has unknown state {state:?}"))
                    })?,
                    reason: row.get("reason")?,
                    last_activity: row.get("last_activity")?,
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
             (SELECT COUNT(*) FROM links l WHERE l.pair_id = folder_pairs.id) \
             + (SELECT CAST(COALESCE(SUM(r.length), 0) AS BIGINT) FROM link_runs r \
                WHERE r.pair_id = folder_pairs.id) AS linked, \
             (SELECT COUNT(*) FROM tombstones t WHERE t.pair_id = folder_pairs.id) \
             + retired_tombstones AS tombstones, \
             (SELECT COUNT(*) FROM message_errors e WHERE e.pair_id = folder_pairs.id) \
             AS message_errors, \
             (SELECT m.uidvalidity FROM uid_maps m WHERE m.pair_id = folder_pairs.id) \
             AS shown_uidvalidity \
             FROM folder_pairs WHERE account_id = $1 ORDER BY old_name"
        );
        let rows = self.select(sql, args![account]).await?;
        rows.iter()
            .map(|row| {
                Ok(FolderSummary {
                    pair: pair_from_row(row)?,
                    linked: get_u64(row, "linked")?,
                    tombstones: get_u64(row, "tombstones")?,
                    message_errors: get_u64(row, "message_errors")?,
                    // A UIDVALIDITY of 0 stands for NEW's numbers (see `DbUidMap::from_shown`).
                    keeps_client_caches: row
                        .get::<Option<i64>>("shown_uidvalidity")?
                        .map(|v| v != 0),
                })
            })
            .collect()
    }
}

/// The writes of one store operation, gathered while it reads and run after
/// ([`Writes::run`]): each a statement with its parameters `$1`…, and their values.
#[derive(Default)]
struct Writes(Vec<(String, Vec<Value>)>);

impl Writes {
    fn push(&mut self, sql: String, args: Vec<Value>) {
        self.0.push((sql, args));
    }

    /// Runs the writes on `c`, in order.
    async fn run(self, c: &mut Conn) -> Result<()> {
        for (sql, args) in self.0 {
            c.execute(&sql, args).await?;
        }
        Ok(())
    }

    /// Deletes the rows of `table` (`links`, `tombstones`, or `link_runs` by `old_start`) whose
    /// `column` is one of these OLD UIDs.
    fn delete_uids(&mut self, (table, column): (&str, &str), pair: PairId, old_uids: &[u32]) {
        for chunk in old_uids.chunks(BATCH_ROWS) {
            let chunk = padded(chunk);
            let sql = format!(
                "DELETE FROM {table} WHERE {column} IN {} AND pair_id = ${}",
                tuples(1, chunk.len(), 1),
                chunk.len() + 1
            );
            let mut args: Vec<Value> = chunk.iter().map(|uid| Value::from(*uid)).collect();
            args.push(pair.into());
            self.push(sql, args);
        }
    }

    /// What turns the runs `before` (as read in this operation) into `after`.
    fn runs(&mut self, pair: PairId, before: &[Run], after: &[Run]) -> Result<()> {
        let (delete, upsert) = runs::changes(before, after);
        self.delete_uids(("link_runs", "old_start"), pair, &delete);
        for chunk in upsert.chunks(BATCH_ROWS) {
            let sql = format!(
                "INSERT INTO link_runs (pair_id, old_start, new_start, length, old_flags, new_flags) \
                 VALUES {} ON CONFLICT (pair_id, old_start) DO UPDATE SET \
                 new_start = excluded.new_start, length = excluded.length, \
                 old_flags = excluded.old_flags, new_flags = excluded.new_flags",
                tuples(chunk.len(), 6, 1)
            );
            let mut args = Vec::with_capacity(chunk.len() * 6);
            for run in chunk {
                let len = i64::try_from(run.len)
                    .map_err(|_| StoreError::Corrupt(format!("a run of {} links", run.len)))?;
                args.extend(args![
                    pair,
                    run.old_start,
                    run.new_start,
                    len,
                    run.old_flags.as_str(),
                    run.new_flags.as_str(),
                ]);
            }
            self.push(sql, args);
        }
        Ok(())
    }
}

/// The highest applied schema version, 0 for a new database.
async fn schema_version(c: &mut Conn) -> Result<i64> {
    let row = c
        .fetch_one("SELECT MAX(version) FROM schema_version", args![])
        .await?;
    Ok(row.get::<Option<i64>>(0)?.unwrap_or(0))
}

/// `text` for a LIKE pattern with `ESCAPE '\'`: its wildcards and escapes match themselves.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn journal_entry(row: &Row) -> Result<JournalEntry> {
    Ok(JournalEntry {
        id: row.get("id")?,
        created: row.get("created")?,
        kind: row.get("kind")?,
        payload: row.get("payload")?,
        attempts: get_u32(row, "attempts")?,
        reason: row.get("reason")?,
        retry_at: row.get("retry_at")?,
    })
}

/// A run as stored (`old_start`, `new_start`, `length`, flags), or a per-message link read as
/// a run of one; its UIDs must stay within `u32`.
fn run_from_row(row: &Row, pair: PairId) -> Result<Run> {
    let run = Run {
        old_start: get_u32(row, "old_start")?,
        new_start: get_u32(row, "new_start")?,
        len: get_u64(row, "length")?,
        old_flags: row.get("old_flags")?,
        new_flags: row.get("new_flags")?,
    };
    let ends = [run.old_start, run.new_start].map(|start| u64::from(start) + run.len);
    if run.len == 0 || ends.iter().any(|&end| end > 1 << 32) {
        return Err(StoreError::Corrupt(format!(
            "folder pair {pair}: a run of {} links from OLD UID {} to NEW UID {}",
            run.len, run.old_start, run.new_start
        )));
    }
    Ok(run)
}

fn get_u32(row: &Row, column: &str) -> Result<u32> {
    let value: i64 = row.get(column)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

/// A count or sum (BIGINT, never negative) as u64; `column` is a name or an index.
/// An account's folder pairs, by OLD name (`folder_pairs`, `account_progress`).
fn account_pairs() -> String {
    format!("SELECT {PAIR_COLUMNS} FROM folder_pairs WHERE account_id = $1 ORDER BY old_name")
}

/// An account's state (`account_state`, `account_progress`).
const STATE: &str = "SELECT state FROM accounts WHERE id = $1";
/// [`STATE`] and the account's folder pair epoch ([`SqlStore::pairs_changed`]).
const STATE_AND_PAIR_EPOCH: &str = "SELECT a.state, \
     COALESCE((SELECT e.epoch FROM pair_epochs e WHERE e.account_id = a.id), 0) \
     FROM accounts a WHERE a.id = $1";
/// An account's journal entries waiting for OLD, counted.
const PENDING: &str = "SELECT COUNT(*) FROM journal WHERE account_id = $1 AND done = 0";

/// The state in `row`, a [`STATE`] row of `account`.
fn state_of(account: AccountId, row: Option<Row>) -> Result<AccountState> {
    let row = row.ok_or_else(|| StoreError::Corrupt(format!("no account {account}")))?;
    let state: String = row.get(0)?;
    AccountState::parse(&state).ok_or_else(|| {
        StoreError::Corrupt(format!("account {account} has unknown state {state:?}"))
    })
}

/// Marks the journal entries `done` mirrored; returns those that name no entry.
async fn mark_done(c: &mut Conn, done: BTreeSet<i64>) -> Result<Vec<i64>> {
    let done: Vec<i64> = done.into_iter().collect();
    let mut marked = BTreeSet::new();
    for chunk in done.chunks(BATCH_ROWS) {
        let list = padded(chunk);
        let sql = format!(
            "UPDATE journal SET done = 1 WHERE id IN {} RETURNING id",
            tuples(1, list.len(), 1)
        );
        let args = list.iter().map(|id| Value::from(*id)).collect();
        for row in c.fetch_all(&sql, args).await? {
            marked.insert(row.get::<i64>(0)?);
        }
    }
    Ok(done.into_iter().filter(|id| !marked.contains(id)).collect())
}

/// An account's first `limit` journal entries waiting for OLD. The limit is spelled out, not
/// bound: SQLite plans a bound LIMIT by its value, so each new binding would make it parse and
/// plan the statement again.
fn pending_sql(limit: u32) -> String {
    format!(
        "SELECT id, created, kind, payload, attempts, reason, retry_at FROM journal \
         WHERE account_id = $1 AND done = 0 ORDER BY id LIMIT {limit}"
    )
}

fn get_u64(row: &Row, column: impl Column) -> Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{column:?} is negative: {value}")))
}

/// A side's measured sizes (`side` is `old` or `new`), `None` while its columns are NULL.
fn read_sizes(row: &Row, side: &str) -> Result<Option<MeasuredSizes>> {
    let get = |what: &str| -> Result<Option<i64>> {
        row.get::<Option<i64>>(format!("{side}_{what}").as_str())
    };
    let (Some(uidvalidity), Some(uidnext), Some(messages), Some(bytes), Some(biggest)) = (
        get("uidvalidity")?,
        get("uidnext")?,
        get("messages")?,
        get("bytes")?,
        get("biggest")?,
    ) else {
        return Ok(None);
    };
    let u32_of = |v: i64| {
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{side} sizes: {v} out of range")))
    };
    let u64_of = |v: i64| {
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{side} sizes: {v} is negative")))
    };
    Ok(Some(MeasuredSizes {
        uidvalidity: u32_of(uidvalidity)?,
        uidnext: u32_of(uidnext)?,
        messages: u32_of(messages)?,
        bytes: u64_of(bytes)?,
        biggest: u64_of(biggest)?,
    }))
}

fn read_side(row: &Row, side: &str) -> Result<DbSide> {
    let get = |what: &str| -> Result<Option<i64>> {
        row.get::<Option<i64>>(format!("{side}_{what}").as_str())
    };
    Ok(DbSide {
        uidvalidity: get("uidvalidity")?,
        uidnext: get("uidnext")?,
        highestmodseq: get("highestmodseq")?,
        messages: get("messages")?,
    })
}

/// Columns of `uid_maps` (as `m`), as [`shown_from_row`] reads them.
const UID_MAP_COLUMNS: &str =
    "m.pair_id, m.uidvalidity, m.new_uidvalidity, m.modseq_offset, m.tail_new, m.tail_virt, m.runs";

/// A pair's UID map (`uid_map`, `freeze_uid_map`).
fn pair_uid_map() -> String {
    format!("SELECT {UID_MAP_COLUMNS} FROM uid_maps m WHERE m.pair_id = $1")
}

fn shown_from_row(row: &Row) -> Result<Shown> {
    let pair: PairId = row.get("pair_id")?;
    DbUidMap {
        uidvalidity: row.get("uidvalidity")?,
        new_uidvalidity: row.get("new_uidvalidity")?,
        modseq_offset: row.get("modseq_offset")?,
        tail_new: row.get("tail_new")?,
        tail_virt: row.get("tail_virt")?,
        runs: row.get("runs")?,
    }
    .into_shown(pair)
}

fn pair_from_row(row: &Row) -> Result<FolderPair> {
    let id: PairId = row.get("id")?;
    let phase: String = row.get("phase")?;
    Ok(FolderPair {
        id,
        account: row.get("account_id")?,
        old_name: row.get("old_name")?,
        new_name: row.get("new_name")?,
        old: read_side(row, "old")?.into_state(id, "old")?,
        new: read_side(row, "new")?.into_state(id, "new")?,
        adopt_from: get_u32(row, "adopt_from")?,
        phase: Phase::parse(&phase).ok_or_else(|| {
            StoreError::Corrupt(format!("folder pair {id} has unknown phase {phase:?}"))
        })?,
    })
}

/// Entries a group commit inserts with one statement (a few statement texts, each cached).
const JOURNAL_ROWS: usize = 16;

/// Inserts `entries` (account, kind, payload; at most [`JOURNAL_ROWS`]) in one statement, in
/// their order; an entry of a retired account is not inserted (`None`). Rows are inserted, and
/// get their ids, in the order the statement lists them.
async fn journal_insert(
    c: &mut Conn,
    entries: &[(AccountId, String, String)],
) -> Result<Vec<Option<i64>>> {
    let sql = format!(
        "WITH v (account_id, created, kind, payload) AS (VALUES {}) \
         INSERT INTO journal (account_id, created, kind, payload, done) \
         SELECT account_id, created, kind, payload, 0 FROM v WHERE NOT EXISTS \
         (SELECT 1 FROM accounts a WHERE a.id = v.account_id AND a.state = ${}) \
         RETURNING id, account_id",
        tuples(entries.len(), 4, 1),
        4 * entries.len() + 1
    );
    let now = now();
    let mut args: Vec<Value> = entries
        .iter()
        .flat_map(|(account, kind, payload)| args![*account, now, kind.as_str(), payload.as_str()])
        .collect();
    args.push(AccountState::Retired.as_str().into());
    let mut inserted = BTreeSet::new();
    let mut ids = Vec::new();
    for row in c.fetch_all(&sql, args).await? {
        ids.push(row.get::<i64>(0)?);
        inserted.insert(row.get::<AccountId>(1)?);
    }
    ids.sort_unstable();
    let mut ids = ids.into_iter();
    Ok(entries
        .iter()
        .map(|(account, ..)| inserted.contains(account).then(|| ids.next()).flatten())
        .collect())
}
