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

/// Most rows (or listed UIDs) in one statement built for a batch: a batch of thousands takes a
/// few dozen statements, and the few statement texts of each kind stay prepared.
pub(super) const BATCH_ROWS: usize = 256;

/// Columns of `folder_pairs`, in the order [`pair_from_row`] reads them.
pub(super) const PAIR_COLUMNS: &str = "id, account_id, old_name, new_name, \
     old_uidvalidity, old_uidnext, old_highestmodseq, old_messages, \
     new_uidvalidity, new_uidnext, new_highestmodseq, new_messages, adopt_from, phase";

/// `rows` comma-separated tuples of `width` fresh parameters each, numbered from `first`:
/// `tuples(2, 2, 3)` is `($3, $4), ($5, $6)`. A value every row shares is bound in each row, so
/// that every parameter is used once, in order (see [`sqlite_params`]).
pub(super) fn tuples(rows: usize, width: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * (width * 7 + 4));
    let mut n = first;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
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

/// A batch statement's `$N` parameters in SQLite's spelling. SQLite looks a numbered parameter
/// (`?N`) up by a linear scan of the statement's numbered ones, and sqlx does so for each one it
/// binds: hundreds of parameters cost a scan of hundreds each, every time the statement runs.
/// Plain `?` parameters are not scanned for. So parameters used once, written in the order of
/// their numbers (1, 2, …) before any other, become `?`; those used more than once (numbered
/// after them and written after them) stay `?N`, and only they are scanned. `None` for a
/// statement written otherwise.
pub(super) fn plain_params(sql: &str) -> Option<String> {
    // Runs for every batch statement built: one scan, a count per number, no allocation per
    // parameter.
    let mut params = Vec::new(); // (start, end, number) of each `$N`
    for (start, end, number) in numbered(sql) {
        params.push((start, end, number?));
    }
    // A number above the count of parameters leaves a gap: not plain (and not counted).
    let mut uses = vec![0u32; params.len() + 1];
    for p in &params {
        *uses.get_mut(p.2)? += 1;
    }
    let once = params.iter().take_while(|p| uses[p.2] == 1).count();
    let plain = params[..once].iter().enumerate().all(|(i, p)| p.2 == i + 1)
        && params[once..].iter().all(|p| p.2 > once && uses[p.2] > 1);
    if !plain {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for (k, (start, end, _)) in params.iter().enumerate() {
        out.push_str(&sql[last..*start]);
        out.push('?');
        if k >= once {
            out.push_str(&sql[start + 1..*end]);
        }
        last = *end;
    }
    out.push_str(&sql[last..]);
    Some(out)
}

/// Where each `$N` parameter is in `sql`: its first byte, the byte after it, and its number
/// (`None` when it does not fit a `usize`).
fn numbered(sql: &str) -> impl Iterator<Item = (usize, usize, Option<usize>)> + '_ {
    let bytes = sql.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let start = i;
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            i += 1;
            if bytes[start] == b'$' && digits > 0 {
                i = start + 1 + digits;
                return Some((start, i, sql[start + 1..i].parse().ok()));
            }
        }
        None
    })
}

/// Statements, each with its own parameters `$1`…`$k` (`k` given), joined into one text, `;`
/// between them, each one's parameters numbered on after those of the ones before: one list of
/// values, in the statements' order, binds them all.
pub(super) fn joined<'a>(statements: impl IntoIterator<Item = (&'a str, usize)>) -> String {
    let mut out = String::new();
    let mut offset = 0;
    for (sql, params) in statements {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let mut last = 0;
        for (start, end, number) in numbered(sql) {
            if let Some(n) = number {
                out.push_str(&sql[last..=start]);
                out.push_str(&(n + offset).to_string());
                last = end;
            }
        }
        out.push_str(&sql[last..]);
        offset += params;
    }
    out
}

/// How many statements each joined list takes, in order, given each statement's parameter
/// count: consecutive statements while the list's count stays within `max`; a statement above
/// `max` makes a list of its own.
pub(super) fn join_lengths(params: &[usize], max: usize) -> Vec<usize> {
    let mut lengths: Vec<usize> = Vec::new();
    let mut total = 0;
    for &n in params {
        match lengths.last_mut() {
            Some(len) if total + n <= max => {
                *len += 1;
                total += n;
            }
            _ => {
                lengths.push(1);
                total = n;
            }
        }
    }
    lengths
}

/// `uids` (or journal ids; at most [`BATCH_ROWS`]) padded to the next power of two by repeating
/// the last one, for a statement that lists them where a repeat changes nothing (`IN`, a
/// `VALUES` a query reads). Batches of every length then share a few statement texts, each
/// prepared once and cached, instead of one prepared per length.
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
    fn joined_statements_number_their_parameters_on() {
        for (statements, want) in [
            (vec![], ""),
            (
                vec![("DELETE FROM t WHERE a = $1", 1)],
                "DELETE FROM t WHERE a = $1",
            ),
            (
                vec![
                    ("DELETE FROM t WHERE a IN ($1, $2) AND p = $3", 3),
                    ("INSERT INTO u VALUES ($1, $2), ($3, $4)", 4),
                    ("UPDATE v SET x = $2 WHERE p = $1 AND y = $2", 2),
                ],
                "DELETE FROM t WHERE a IN ($1, $2) AND p = $3; \
                 INSERT INTO u VALUES ($4, $5), ($6, $7); \
                 UPDATE v SET x = $9 WHERE p = $8 AND y = $9",
            ),
            // A statement without parameters moves nothing on; `$` without digits is text.
            (
                vec![("SELECT '$'", 0), ("DELETE FROM t WHERE a = $1", 1)],
                "SELECT '$'; DELETE FROM t WHERE a = $1",
            ),
        ] {
            assert_eq!(joined(statements.iter().copied()), want, "{statements:?}");
        }
    }

    #[test]
    fn joined_lists_stay_within_their_parameters() {
        for (params, want) in [
            (vec![], vec![]),
            (vec![6, 2], vec![2]),
            (vec![3, 1536, 7, 2, 300, 200, 56, 1], vec![1, 1, 2, 1, 2, 1]),
            (vec![256, 0, 1], vec![2, 1]),
        ] {
            assert_eq!(join_lengths(&params, 256), want, "{params:?}");
        }
    }

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
        assert_eq!(tuples(2, 2, 3), "($3, $4), ($5, $6)");
        assert_eq!(tuples(1, 3, 1), "($1, $2, $3)");
        assert_eq!(tuples(3, 1, 2), "($2), ($3), ($4)");
    }

    #[test]
    fn sqlite_takes_plain_parameters_where_it_can() {
        for (sql, want) in [
            ("SELECT 1", Some("SELECT 1")),
            (
                "DELETE FROM t WHERE u IN ($1, $2, $3) AND pair_id = $4",
                Some("DELETE FROM t WHERE u IN (?, ?, ?) AND pair_id = ?"),
            ),
            // Used more than once, after the others: numbered, the others plain.
            (
                "WITH v (uid) AS (VALUES ($1), ($2)) SELECT x FROM r WHERE p = $3 OR q = $3",
                Some("WITH v (uid) AS (VALUES (?), (?)) SELECT x FROM r WHERE p = ?3 OR q = ?3"),
            ),
            ("SELECT $1, $2, $2", Some("SELECT ?, ?2, ?2")),
            // Out of order, a gap, a shared one before the others.
            ("SELECT $2, $1", None),
            ("SELECT $1, $3", None),
            ("SELECT $1, $2 WHERE $1 = $3", None),
        ] {
            assert_eq!(plain_params(sql).as_deref(), want, "{sql}");
        }
    }
}
