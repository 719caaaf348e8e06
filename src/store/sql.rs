//! What the SQL stores share: the schema migrations, the values and rows their statements bind
//! and read, and the helpers that build batch statements. The statements are written once in the
//! subset of SQL that SQLite and PostgreSQL both run (`$n` parameters, `ON CONFLICT`, multi-row
//! `VALUES`, `RETURNING`); each backend compiles `statements.rs` for its own connection type.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{MailboxState, PairId, Result, StoreError};
use crate::uidmap::{self, Shown, UidMap};

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
    include_str!("0011_uid_maps.sql"),
    include_str!("0012_link_runs_by_new.sql"),
    include_str!("0013_append_keys.sql"),
    include_str!("0014_pair_epochs.sql"),
];

/// Most rows (or listed UIDs) in one statement built for a batch: a batch of thousands takes a
/// few dozen statements, and the few statement texts of each kind stay prepared.
pub(super) const BATCH_ROWS: usize = 256;

/// Columns of `folder_pairs`, in the order [`pair_from_row`] reads them.
pub(super) const PAIR_COLUMNS: &str = "id, account_id, old_name, new_name, \
     old_uidvalidity, old_uidnext, old_highestmodseq, old_messages, \
     new_uidvalidity, new_uidnext, new_highestmodseq, new_messages, adopt_from, phase";

/// `rows` comma-separated tuples of `width` fresh parameters each, numbered from `first`:
/// `tuples(2, 2, 3)` is `($3, $4), ($5, $6)`.
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

/// A statement's `$N` parameters in SQLite's spelling, `?N` (SQLite would take `$N` as a name,
/// numbered in the order the names first appear). The statements use `$` for nothing else.
pub(super) fn sqlite_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for (start, _, _) in numbered(sql) {
        out.push_str(&sql[last..start]);
        out.push('?');
        last = start + 1;
    }
    out.push_str(&sql[last..]);
    out
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

/// One store operation's work on a connection, as the backends take it (see `statements.rs`):
/// SQLite runs it whole on its connection's thread, PostgreSQL on a pooled connection.
pub(super) type Op<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// `work` as an [`Op`] (the signature tells the async block its output).
pub(super) fn op<'a, T>(work: impl Future<Output = Result<T>> + Send + 'a) -> Op<'a, T> {
    Box::pin(work)
}

/// A value bound to a statement or read from a row. Every column is a 64-bit integer or text; a
/// NULL keeps its column's type, which PostgreSQL needs to bind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(Some(v.into()))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        Value::Text(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}

/// A statement's parameters, `$1` first: `args![pair, name]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$(crate::store::sql::Value::from($v)),*] };
}
pub(super) use args;

/// A row read from either database, its columns by name or by index.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) columns: Arc<[String]>,
    pub(super) values: Vec<Value>,
}

impl Row {
    /// Column `column` (a name or an index) as `T`; a missing column, or a value of another type,
    /// is [`StoreError::Corrupt`].
    pub(super) fn get<T: FromValue>(&self, column: impl Column) -> Result<T> {
        let value = column
            .index(&self.columns)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| StoreError::Corrupt(format!("no column {column:?}")))?;
        T::from_value(value).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "column {column:?}: {value:?} is not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A column of a [`Row`]: its name, or its index.
pub(super) trait Column: Copy + fmt::Debug {
    fn index(self, columns: &[String]) -> Option<usize>;
}

impl Column for usize {
    fn index(self, _: &[String]) -> Option<usize> {
        Some(self)
    }
}

impl Column for &str {
    fn index(self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c == self)
    }
}

/// What a [`Value`] can be read as.
pub(super) trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for Option<i64> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(v) => Some(*v),
            Value::Text(None) => Some(None),
            Value::Text(Some(_)) => None,
        }
    }
}

impl FromValue for Option<String> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(v) => Some(v.clone()),
            Value::Int(None) => Some(None),
            Value::Int(Some(_)) => None,
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        Option::<i64>::from_value(value).flatten()
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        Option::<String>::from_value(value).flatten()
    }
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

/// A UID map's columns as stored (`uid_maps`): its numbers, and its runs below the tail as
/// space-separated `new:virt:len` triples (empty for none).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DbUidMap {
    pub(super) uidvalidity: i64,
    pub(super) new_uidvalidity: i64,
    pub(super) modseq_offset: i64,
    pub(super) tail_new: i64,
    pub(super) tail_virt: i64,
    pub(super) runs: String,
}

impl DbUidMap {
    /// A decision's columns: a folder that shows NEW's numbers is a row with UIDVALIDITY 0
    /// (no IMAP UIDVALIDITY is 0), its other columns 0 and `''`.
    pub(super) fn from_shown(shown: &Shown) -> Result<DbUidMap> {
        match shown {
            Shown::Old(map) => DbUidMap::from_map(map),
            Shown::New => Ok(DbUidMap {
                uidvalidity: 0,
                new_uidvalidity: 0,
                modseq_offset: 0,
                tail_new: 0,
                tail_virt: 0,
                runs: String::new(),
            }),
        }
    }

    /// The decision these columns hold (see [`DbUidMap::from_shown`]).
    pub(super) fn into_shown(self, pair: PairId) -> Result<Shown> {
        match self.uidvalidity {
            0 => Ok(Shown::New),
            _ => self.into_map(pair).map(Shown::Old),
        }
    }

    fn from_map(map: &UidMap) -> Result<DbUidMap> {
        let modseq_offset = i64::try_from(map.modseq_offset()).map_err(|_| {
            StoreError::Corrupt(format!(
                "a MODSEQ offset of {} exceeds 63 bits",
                map.modseq_offset()
            ))
        })?;
        let (tail_new, tail_virt) = map.tail();
        let runs: Vec<String> = map
            .runs()
            .iter()
            .map(|r| format!("{}:{}:{}", r.new, r.virt, r.len))
            .collect();
        Ok(DbUidMap {
            uidvalidity: map.uidvalidity().into(),
            new_uidvalidity: map.new_uidvalidity().into(),
            modseq_offset,
            tail_new: tail_new.into(),
            tail_virt: tail_virt.into(),
            runs: runs.join(" "),
        })
    }

    /// The map of `pair` these columns hold; [`StoreError::Corrupt`] when they hold none.
    fn into_map(self, pair: PairId) -> Result<UidMap> {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("folder pair {pair}: the UID map's {what}"));
        let u32_of = |what: &str, v: i64| {
            u32::try_from(v).map_err(|_| corrupt(format!("{what} is out of range: {v}")))
        };
        let tail = (
            u32_of("tail_new", self.tail_new)?,
            u32_of("tail_virt", self.tail_virt)?,
        );
        // No tail starts at UID 0 (and `UidMap::new` would count its length from there).
        if tail.0 == 0 || tail.1 == 0 {
            return Err(corrupt(format!("tail starts at {tail:?}")));
        }
        let runs = match self.runs.as_str() {
            "" => Vec::new(),
            text => text
                .split(' ')
                .enumerate()
                .map(|(i, triple)| {
                    map_run(triple).ok_or_else(|| corrupt(format!("run {i} is not new:virt:len")))
                })
                .collect::<Result<Vec<uidmap::Run>>>()?,
        };
        UidMap::new(
            u32_of("uidvalidity", self.uidvalidity)?,
            u32_of("new_uidvalidity", self.new_uidvalidity)?,
            u64::try_from(self.modseq_offset).map_err(|_| {
                corrupt(format!("modseq_offset is negative: {}", self.modseq_offset))
            })?,
            &runs,
            tail,
        )
        .map_err(|e| corrupt(format!("runs do not make a map: {e}")))
    }
}

/// One `new:virt:len` triple of a stored UID map.
fn map_run(triple: &str) -> Option<uidmap::Run> {
    let mut numbers = triple.split(':').map(|n| n.parse::<u32>().ok());
    let run = uidmap::Run {
        new: numbers.next()??,
        virt: numbers.next()??,
        len: numbers.next()??,
    };
    numbers.next().is_none().then_some(run)
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
        assert_eq!(tuples(2, 2, 3), "($3, $4), ($5, $6)");
        assert_eq!(tuples(1, 3, 1), "($1, $2, $3)");
        assert_eq!(tuples(3, 1, 2), "($2), ($3), ($4)");
    }

    #[test]
    fn sqlite_takes_numbered_parameters() {
        for (sql, want) in [
            ("SELECT 1", "SELECT 1"),
            (
                "DELETE FROM t WHERE u IN ($1, $2) AND pair_id = $3",
                "DELETE FROM t WHERE u IN (?1, ?2) AND pair_id = ?3",
            ),
            // Out of order and repeated: each keeps its number.
            (
                "SELECT a FROM r WHERE p = $1 AND n <= $3 AND m > $2 OR q = $1",
                "SELECT a FROM r WHERE p = ?1 AND n <= ?3 AND m > ?2 OR q = ?1",
            ),
            // `$` without digits is text.
            ("SELECT '$', $12", "SELECT '$', ?12"),
        ] {
            assert_eq!(sqlite_params(sql), want, "{sql}");
        }
    }

    #[test]
    fn rows_read_columns_by_name_or_index() {
        let row = Row {
            columns: ["id", "reason", "uid"].map(String::from).into(),
            values: args![7i64, None::<&str>, "x"],
        };
        assert_eq!(row.get::<i64>("id").unwrap(), 7);
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<Option<String>>("reason").unwrap(), None);
        assert_eq!(row.get::<Option<i64>>("reason").unwrap(), None);
        assert_eq!(row.get::<String>(2).unwrap(), "x");
        for bad in [
            row.get::<String>("id"),
            row.get::<String>("reason"),
            row.get::<String>("nope"),
            row.get::<String>(3),
        ] {
            assert!(matches!(bad, Err(StoreError::Corrupt(_))), "{bad:?}");
        }
    }

    fn stored_map() -> UidMap {
        let runs = uidmap::runs_of([(1, 10), (2, 11), (3, 12), (5, 20), (6, 21)]).unwrap();
        UidMap::new(777, 5, 1 << 40, &runs, (8, 100)).unwrap()
    }

    #[test]
    fn a_uid_map_is_stored_and_read_back_the_same() {
        let map = stored_map();
        let stored = DbUidMap::from_map(&map).unwrap();
        assert_eq!(
            stored,
            DbUidMap {
                uidvalidity: 777,
                new_uidvalidity: 5,
                modseq_offset: 1 << 40,
                tail_new: 8,
                tail_virt: 100,
                runs: "1:10:3 5:20:2".into(),
            }
        );
        assert_eq!(stored.into_map(1).unwrap(), map);
        // Without runs below the tail, and with the largest numbers.
        let bare = UidMap::new(u32::MAX, u32::MAX, i64::MAX as u64, &[], (1, 1)).unwrap();
        let stored = DbUidMap::from_map(&bare).unwrap();
        assert_eq!(stored.runs, "");
        assert_eq!(stored.into_map(1).unwrap(), bare);
        let far = UidMap::new(1, 1, 0, &[], (u32::MAX, u32::MAX)).unwrap();
        assert_eq!(DbUidMap::from_map(&far).unwrap().into_map(1).unwrap(), far);
        // NEW's own numbers.
        let new = DbUidMap::from_shown(&Shown::New).unwrap();
        assert_eq!(new.uidvalidity, 0);
        assert_eq!(new.into_shown(1).unwrap(), Shown::New);
        let old = DbUidMap::from_shown(&Shown::Old(far.clone())).unwrap();
        assert_eq!(old.into_shown(1).unwrap(), Shown::Old(far));
        // A MODSEQ offset of 64 bits has no column.
        let wide = UidMap::new(1, 1, 1 << 63, &[], (1, 1)).unwrap();
        assert!(matches!(
            DbUidMap::from_map(&wide),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_corrupt_uid_map_is_an_error() {
        let good = || DbUidMap::from_map(&stored_map()).unwrap();
        let runs = |text: &str| DbUidMap {
            runs: text.into(),
            ..good()
        };
        let cases = [
            runs(" "),
            runs("1:10:3  5:20:2"),
            runs("1:10:3 "),
            runs("1:10"),
            runs("1:10:3:4"),
            runs("1:10:x"),
            runs("1:10:-3"),
            runs("1:10:4294967296"),
            runs("1::3"),
            runs("\u{e9}"),
            // Not a map: an empty run, UID 0, runs going down, a run past the tail, overflow.
            runs("1:10:0"),
            runs("0:10:1"),
            runs("5:20:2 1:10:3"),
            runs("1:10:3 5:9:2"),
            runs("1:10:8"),
            runs("4294967295:10:2"),
            DbUidMap {
                uidvalidity: -1,
                ..good()
            },
            DbUidMap {
                new_uidvalidity: 1 << 32,
                ..good()
            },
            DbUidMap {
                modseq_offset: -5,
                ..good()
            },
            DbUidMap {
                tail_new: 0,
                tail_virt: 0,
                runs: String::new(),
                ..good()
            },
            DbUidMap {
                tail_virt: 0,
                ..good()
            },
            DbUidMap {
                tail_new: i64::MAX,
                ..good()
            },
        ];
        for stored in cases {
            let shown = format!("{stored:?}");
            assert!(
                matches!(stored.into_map(3), Err(StoreError::Corrupt(_))),
                "{shown}"
            );
        }
    }
}
