//! What the SQL stores share: the schema migrations and every statement, written once in the
//! subset of SQL that SQLite and PostgreSQL both run (`$n` parameters, `ON CONFLICT`, multi-row
//! `VALUES`, `RETURNING`). Each backend compiles
//! `statements.rs`, the [`Store`](super::Store) implementation, for its own pool.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{MailboxState, PairId, Result, StoreError};

/// The schema migrations, in order: migration `i` brings the database to version `i + 1`.
/// Each runs in one transaction, together with its row in `schema_version`.
/// Released migrations are never edited; changes are new entries at the end.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("0002_activity.sql"),
    include_str!("0003_message_errors.sql"),
    include_str!("0004_journal_retries.sql"),
    include_str!("0005_writes_in_flight.sql"),
    include_str!("0006_leases.sql"),
    include_str!("0007_write_marks.sql"),
    include_str!("0008_link_runs.sql"),
    include_str!("0009_retired_summary.sql"),
    include_str!("0010_folder_sizes.sql"),
];

/// Most rows (or listed UIDs) in one statement built for a batch. SQLite finds a parameter by
/// its number with a linear scan, while preparing and again while binding, so a statement's
/// cost grows with the square of its parameters (at most 5 a row here): 64 rows keep that
/// small, and a batch of thousands still takes a few dozen statements.
pub(super) const BATCH_ROWS: usize = 64;

/// Columns of `folder_pairs`, in the order [`pair_from_row`] reads them.
pub(super) const PAIR_COLUMNS: &str = "id, account_id, old_name, new_name, \
     old_uidvalidity, old_uidnext, old_highestmodseq, old_messages, \
     new_uidvalidity, new_uidnext, new_highestmodseq, new_messages, adopt_from, phase";

/// `rows` comma-separated tuples `(fixed$n, $n+1, …)` of `width` fresh parameters each,
/// numbered from `first`: `tuples(2, 2, 2, "$1, ")` is `($1, $2, $3), ($1, $4, $5)`.
pub(super) fn tuples(rows: usize, width: usize, first: usize, fixed: &str) -> String {
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

/// `uids` (or journal ids; at most [`BATCH_ROWS`]) padded to the next power of two by repeating
/// the last one, for a statement that lists them where a repeat changes nothing (`IN`, a
/// `VALUES` a query reads). Batches of every length then share a few statement texts, each prepared once and
/// cached, instead of one prepared (and parsed, at a cost that grows with the square of its
/// parameters in SQLite) per length.
pub(super) fn padded<T: Copy>(uids: &[T]) -> Vec<T> {
    let mut v = uids.to_vec();
    if let Some(&last) = uids.last() {
        v.resize(uids.len().next_power_of_two(), last);
    }
    v
}

/// Unix seconds.
pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One side's state columns as stored: all NULL when unknown.
#[derive(Default)]
pub(super) struct DbSide {
    pub(super) uidvalidity: Option<i64>,
    pub(super) uidnext: Option<i64>,
    pub(super) highestmodseq: Option<i64>,
    pub(super) messages: Option<i64>,
}

impl DbSide {
    pub(super) fn from_state(state: Option<MailboxState>) -> Result<DbSide> {
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

    pub(super) fn into_state(self, pair: PairId, side: &str) -> Result<Option<MailboxState>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_lists_take_a_few_lengths() {
        for (uids, want) in [
            (vec![], vec![]),
            (vec![7], vec![7]),
            (vec![1, 2, 3], vec![1, 2, 3, 3]),
            (vec![5, 9, 11, 12, 13], vec![5, 9, 11, 12, 13, 13, 13, 13]),
        ] {
            assert_eq!(padded(&uids), want, "{uids:?}");
        }
        let full: Vec<u32> = (0..BATCH_ROWS as u32).collect();
        assert_eq!(padded(&full), full);
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
}
