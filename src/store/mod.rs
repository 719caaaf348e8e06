//! The state store: what imapferry remembers between passes (accounts, folder pairs with both sides'
//! mailbox state, links OLD↔NEW with base flags, stored as runs, tombstones, UID maps, the
//! journal). The [`Store`] trait is what callers see; [`SqliteStore`] is the embedded default,
//! [`PgStore`] a fleet's shared database, and [`open`] picks one from a [`Location`]. No IMAP in
//! here.

mod postgres;
mod runs;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use serde::Serialize;

use crate::secret::Secret;
use crate::uidmap::Shown;

pub type AccountId = i64;
pub type PairId = i64;

/// Errors of the state store. They always name the store as the failing side.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL's error.
    #[error("state store: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite's error.
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store: cannot create {path} or its directory: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("state store: {0}")]
    Corrupt(String),
    /// [`SqliteStore::open_existing`] found no store file (or [`PgStore::connect_existing`] no
    /// state in its database).
    #[error("state store: {0} does not exist")]
    Missing(String),
    /// Another process of the fleet holds the lease on this work (see `migrate/lease.rs`).
    #[error("state store: {0} is held by another process")]
    Busy(String),
    /// A state URL that cannot be used as it is written.
    #[error("state store: {0}")]
    Location(String),
    /// The account was retired: its tombstones are gone, and no pass may run for it.
    #[error("state store: the account of {0} is retired")]
    Retired(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One user's pair of logins. Passwords are never part of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AccountKey {
    pub old_host: String,
    pub old_user: String,
    pub new_host: String,
    pub new_user: String,
}

/// Account lifecycle (DESIGN.md §1). Serialised as [`AccountState::as_str`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// Nothing copied yet.
    Pending,
    /// Some folders backfilled.
    Partial,
    /// Every folder backfilled, journal drained.
    Synced,
    /// OLD is no longer read or written.
    Retired,
    /// A permanent failure (bad credentials, missing account).
    Failed,
    /// OLD no longer mirrors what the user did: a journal entry could not be applied (parked), or
    /// a write could not be journaled. Only a reconcile leaves this state (`imapferry reconcile`,
    /// or the proxy's own once the store takes writes again).
    Diverged,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Pending => "pending",
            AccountState::Partial => "partial",
            AccountState::Synced => "synced",
            AccountState::Retired => "retired",
            AccountState::Failed => "failed",
            AccountState::Diverged => "diverged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => AccountState::Pending,
            "partial" => AccountState::Partial,
            "synced" => AccountState::Synced,
            "retired" => AccountState::Retired,
            "failed" => AccountState::Failed,
            "diverged" => AccountState::Diverged,
            _ => return None,
        })
    }
}

/// What one side reported for a mailbox at the end of the last reconcile.
/// `highestmodseq` is 0 when the server has no CONDSTORE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MailboxState {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub messages: u32,
}

/// Where a folder pair stands. Serialised as [`Phase::as_str`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Never completed a pass.
    New,
    /// A pass started and did not finish (or found work it could not do, e.g. the deletion bound).
    Partial,
    /// The last pass completed.
    Synced,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::Partial => "partial",
            Phase::Synced => "synced",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => Phase::New,
            "partial" => Phase::Partial,
            "synced" => Phase::Synced,
            _ => return None,
        })
    }
}

/// What an account's lifecycle state follows from, read together ([`Store::account_progress`]):
/// its folder pairs, its journal entries waiting for OLD, and the state it has now.
#[derive(Clone, Debug)]
pub struct Progress {
    pub pairs: Vec<FolderPair>,
    pub pending: u64,
    pub state: AccountState,
}

/// An OLD folder and the NEW folder it maps to. Names are the raw (modified UTF-7) names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FolderPair {
    pub id: PairId,
    pub account: AccountId,
    pub old_name: String,
    pub new_name: String,
    /// OLD's state at the last completed reconcile, if any.
    pub old: Option<MailboxState>,
    /// NEW's state at the last completed reconcile, if any.
    pub new: Option<MailboxState>,
    /// NEW UIDs at or above this may be unlinked copies of OLD messages (made by another tool, or by a
    /// pass that was killed before it committed its links): adoption scans them by identity key.
    pub adopt_from: u32,
    pub phase: Phase,
}

/// One OLD message and its NEW copy. Flags are canonical strings (sorted, space-separated),
/// as each side had them at the last reconcile: the base of the three-way merge; or [`NO_BASE`]
/// on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub old_uid: u32,
    pub new_uid: u32,
    pub old_flags: String,
    pub new_flags: String,
    /// The message's identity key, when it was computed (adoption, copies without UIDPLUS).
    pub ident: Option<String>,
}

/// The base flags of a link that keeps none (DESIGN.md §4a): its pair's HIGHESTMODSEQ
/// watermarks stand for them, so a message changed on one side since follows that side, and
/// one changed on both follows NEW. `*` is no flag name (RFC 3501's list-wildcards).
pub const NO_BASE: &str = "*";

impl Link {
    /// Whether the link keeps the base flags of the three-way merge.
    pub fn has_base(&self) -> bool {
        self.old_flags != NO_BASE
    }
}

/// A flag update of an existing link after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFlags {
    pub old_uid: u32,
    pub old_flags: String,
    pub new_flags: String,
}

/// A user write to journal ([`Store::journal_commit`]).
#[derive(Clone, Copy, Debug)]
pub struct NewEntry<'a> {
    pub account: AccountId,
    pub kind: &'a str,
    pub payload: &'a str,
}

/// The identity key of NEW message `new_uid` (as journal entry `entry` names it), kept before
/// the mirror appends the message to OLD: a replay of an entry cut off after OLD stored it
/// finds OLD's copy by this key even when the user has deleted NEW's since.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppendKey {
    pub entry: i64,
    pub new_uid: u32,
    pub ident: String,
}

/// NEW UIDs from `from` on of the pair may have unlinked copies on OLD: its adoption watermark
/// goes down to `from` (never up: a pass may have raised it since the caller read it) before
/// the mirror puts them there, so that a mirror cut off before it links them leaves the next
/// pass to adopt OLD's copies by identity key rather than copy them back to NEW. Written with
/// the mirror's keys ([`Store::journal_commit`], [`Store::add_links_lowering`]) or by itself
/// ([`Store::lower_adoption`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adoption {
    pub pair: PairId,
    pub from: u32,
}

/// The links one mirrored journal entry made and took away in a folder pair, written with the
/// entry's mark ([`Store::journal_mirrored`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkChange {
    pub pair: PairId,
    /// As [`Store::add_links`].
    pub added: Vec<Link>,
    /// OLD UIDs whose links go, as [`Store::remove_links`] (after `added`).
    pub removed: Vec<u32>,
}

/// What one [`Store::journal_commit`] did.
#[derive(Debug)]
pub struct Committed {
    /// Each new entry's id; `None` where its account is retired (not journaled).
    pub ids: Vec<Option<i64>>,
    /// The entries to mark done that name no entry.
    pub missing: Vec<i64>,
}

/// One user write seen by the proxy, waiting to be mirrored to OLD (DESIGN.md §2 dual write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub id: i64,
    /// Unix seconds.
    pub created: i64,
    pub kind: String,
    pub payload: String,
    /// Times OLD refused it, and the last refusal.
    pub attempts: u32,
    pub reason: Option<String>,
    /// Not before this (unix seconds) when it was refused.
    pub retry_at: Option<i64>,
}

/// What the mirror reads at each turn of its drain ([`Store::journal_to_mirror`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToMirror {
    /// The account's first pending journal entries, oldest first.
    pub entries: Vec<JournalEntry>,
    /// How often the account's folder pairs were deleted, renamed or given another NEW name
    /// (by any process): the pairs a mirror read stay right while it is the same.
    pub pairs_epoch: i64,
}

/// One account and its progress, for `imapferry status` and the admin API (serialised flat:
/// `id`, the key's fields, then the counts).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountSummary {
    pub id: AccountId,
    #[serde(flatten)]
    pub key: AccountKey,
    pub state: AccountState,
    /// The reason recorded with the state (the last error for `failed`).
    pub reason: Option<String>,
    /// Unix seconds of the last login or backfill; `None`: never.
    pub last_activity: Option<i64>,
    pub folders: u64,
    /// Folder pairs whose last pass completed (phase `synced`).
    pub folders_synced: u64,
    /// Sum of the pairs' OLD message counts at their last reconcile.
    pub messages_old: u64,
    /// Sum of the pairs' NEW message counts at their last reconcile.
    pub messages_new: u64,
    pub linked: u64,
    pub tombstones: u64,
    pub pending_journal: u64,
    /// Journal entries that could never be applied to OLD (the account is `diverged`).
    pub parked_journal: u64,
    /// OLD messages the last passes ended with in error (see [`Store::message_errors`]).
    pub message_errors: u64,
}

/// A folder side's messages as the folder-size table last measured them: true while the
/// folder's UIDVALIDITY, UIDNEXT and message count are these (no message added or expunged since).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeasuredSizes {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub messages: u32,
    pub bytes: u64,
    pub biggest: u64,
}

/// One folder pair and its progress, for `imapferry status USER` and the admin API (serialised
/// flat: the pair's fields, then the counts).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FolderSummary {
    #[serde(flatten)]
    pub pair: FolderPair,
    pub linked: u64,
    pub tombstones: u64,
    pub message_errors: u64,
    /// Whether the folder keeps client caches (shows OLD's numbers); `None`: not decided (the
    /// proxy's `keep_client_caches` is off, or the folder was never completed since).
    pub keeps_client_caches: Option<bool>,
}

/// Where the state lives (`[state] url` or `path`, `--state`): an SQLite file, the embedded
/// default, or a PostgreSQL database that a fleet of proxies shares.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    File(PathBuf),
    Postgres(PgLocation),
}

/// A PostgreSQL database. The URL never holds the password ([`Location::parse`] refuses one), so
/// it may be logged; the password comes from a file or the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct PgLocation {
    pub url: String,
    /// `None`: the driver's own defaults (`PGPASSWORD`, `~/.pgpass`).
    pub password: Option<Secret>,
}

/// The environment variable that holds the PostgreSQL password when no file names it.
pub const PASSWORD_ENV: &str = "IMAPFERRY_STATE_PASSWORD";

impl Location {
    /// A `postgres://` or `postgresql://` URL is a database, anything else a file path. The
    /// password is `password`, else [`PASSWORD_ENV`]; a URL that holds one is refused, because
    /// URLs reach logs, process lists and shell histories.
    pub fn parse(value: &str, password: Option<Secret>) -> Result<Location> {
        if !is_postgres_url(value) {
            return Ok(Location::File(PathBuf::from(value)));
        }
        if url_has_password(value) {
            return Err(StoreError::Location(
                "the state URL holds a password: put it in [state] password_file or the \
                 IMAPFERRY_STATE_PASSWORD environment variable instead"
                    .into(),
            ));
        }
        let password = password.or_else(|| {
            std::env::var_os(PASSWORD_ENV).map(|p| Secret::from_bytes(p.into_encoded_bytes()))
        });
        Ok(Location::Postgres(PgLocation {
            url: value.to_owned(),
            password,
        }))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(pg) => f.write_str(&pg.url),
        }
    }
}

fn is_postgres_url(value: &str) -> bool {
    value.starts_with("postgres://") || value.starts_with("postgresql://")
}

/// Whether the URL's user part has a `:password`.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.find(['/', '?']).map_or(rest, |end| &rest[..end]);
    authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
}

/// Opens the store at `location`, creating it when there is none (a file, or the schema in an
/// empty database).
pub async fn open(location: &Location) -> Result<Arc<dyn Store>> {
    Ok(match location {
        Location::File(path) => Arc::new(SqliteStore::open(path).await?),
        Location::Postgres(pg) => Arc::new(PgStore::connect(pg).await?),
    })
}

/// Opens the store at `location` only when it exists ([`StoreError::Missing`] otherwise), for
/// tools that look at state and never create it.
pub async fn open_existing(location: &Location) -> Result<Arc<dyn Store>> {
    Ok(match location {
        Location::File(path) => Arc::new(SqliteStore::open_existing(path).await?),
        Location::Postgres(pg) => Arc::new(PgStore::connect_existing(pg).await?),
    })
}

/// Store operations run since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Operations {
    /// Reads, each outside a transaction.
    pub reads: u64,
    /// Write transactions.
    pub writes: u64,
}

/// A store's [`Operations`] as they are counted.
#[derive(Debug, Default)]
struct Tally {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Tally {
    fn read(&self) {
        self.reads.fetch_add(1, Relaxed);
    }

    fn write(&self) {
        self.writes.fetch_add(1, Relaxed);
    }

    fn get(&self) -> Operations {
        Operations {
            reads: self.reads.load(Relaxed),
            writes: self.writes.load(Relaxed),
        }
    }
}

/// Persistent state. Every method that writes commits before it returns, so what it wrote survives
/// `kill -9`. Batches (`add_links`, `tombstone`, …) are one transaction each.
#[async_trait]
pub trait Store: Send + Sync {
    /// Closes the store's connections once pending operations are done. Dropping a store
    /// without closing it loses nothing that was committed.
    async fn close(&self);
    /// Whether other processes may share this store (a fleet on PostgreSQL): work they could
    /// do twice is then taken under a lease. An SQLite file belongs to one proxy.
    fn shared(&self) -> bool;
    /// The operations run so far (each a hand-off to a connection: one read, or one write
    /// transaction), for `/metrics`.
    fn operations(&self) -> Operations;
    /// Takes the lease `name` for `holder` until `expires` (unix milliseconds) when it is free,
    /// expired (at `now`), or already `holder`'s (a renewal). One conditional statement; returns
    /// whether `holder` has it.
    async fn take_lease(&self, name: &str, holder: &str, now: i64, expires: i64) -> Result<bool>;
    /// Gives the lease up, if `holder` still has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// The account's id, created (state `pending`) on first use.
    async fn account(&self, key: &AccountKey) -> Result<AccountId>;
    async fn account_state(&self, account: AccountId) -> Result<AccountState>;
    /// Sets the state and an optional reason (the last error for `failed`).
    /// The lifecycle moves on (pending, partial, synced, failed): never away from `retired` or
    /// `diverged`, which only their own commands leave. Returns whether it changed.
    async fn set_account_state(
        &self,
        account: AccountId,
        state: AccountState,
        reason: Option<&str>,
    ) -> Result<bool>;
    /// OLD no longer mirrors the user (`reason` says why), unless the account is retired.
    async fn mark_diverged(&self, account: AccountId, reason: &str) -> Result<bool>;
    /// `imapferry reconcile` brought OLD back in line: `diverged` becomes `state`.
    async fn clear_diverged(&self, account: AccountId, state: AccountState) -> Result<bool>;
    /// Sets (`on`, with the time) or clears `holder`'s write-ahead mark on the account: a proxy
    /// sets it before a user's write goes to NEW and clears it once its writes are journaled. A
    /// mark whose holder is gone means a write may be on NEW and not in the journal.
    async fn mark_writes_in_flight(&self, account: AccountId, holder: &str, on: bool)
    -> Result<()>;
    /// The account's write-ahead marks: (holder, unix seconds when set).
    async fn writes_in_flight(&self, account: AccountId) -> Result<Vec<(String, i64)>>;
    /// Whether the lease `name` is held and unexpired at `now` (unix milliseconds).
    async fn lease_held(&self, name: &str, now: i64) -> Result<bool>;

    async fn folder_pair(
        &self,
        account: AccountId,
        old_name: &str,
        new_name: &str,
    ) -> Result<FolderPair>;
    async fn folder_pairs(&self, account: AccountId) -> Result<Vec<FolderPair>>;
    /// The account's [`Progress`], in one read.
    async fn account_progress(&self, account: AccountId) -> Result<Progress>;
    /// The [`Adoption`] of `pair` from `from` by itself, whatever else changed meanwhile.
    async fn lower_adoption(&self, pair: PairId, from: u32) -> Result<()>;
    /// The identity keys [`Store::journal_commit`] kept for entry `entry`, by NEW UID.
    async fn append_keys(&self, entry: i64) -> Result<Vec<(u32, String)>>;
    /// Records both sides' state and the phase at the end of a pass (or of a batch).
    async fn save_pair_state(
        &self,
        pair: PairId,
        old: Option<MailboxState>,
        new: Option<MailboxState>,
        adopt_from: u32,
        phase: Phase,
    ) -> Result<()>;
    /// UIDVALIDITY changed on a side: forget the pair's links, tombstones, UID map and states
    /// (the next pass re-identifies messages by identity key).
    async fn reset_pair(&self, pair: PairId) -> Result<()>;

    /// Every link of the pair, ordered by `old_uid`.
    async fn links(&self, pair: PairId) -> Result<Vec<Link>>;
    /// The pair's links whose NEW UID is in one of `ranges` (inclusive, ascending, disjoint),
    /// ordered by `old_uid`. A mirror entry names a few messages, often far apart; the
    /// folder's other links are not read.
    async fn links_by_new(&self, pair: PairId, ranges: &[(u32, u32)]) -> Result<Vec<Link>>;
    /// Inserts (or replaces, by `old_uid`) links in one transaction.
    async fn add_links(&self, pair: PairId, links: &[Link]) -> Result<()>;
    /// [`Store::add_links`] and the [`Adoption`] `lower`, in one transaction; without links,
    /// [`Store::lower_adoption`] (the watermark is nearly always low enough already: a read).
    async fn add_links_lowering(&self, pair: PairId, links: &[Link], lower: Adoption)
    -> Result<()>;
    async fn update_link_flags(&self, pair: PairId, updates: &[LinkFlags]) -> Result<()>;
    /// Every link of the pair keeps [`NO_BASE`] from now on (a pass reconciled the pair and
    /// recorded both sides' HIGHESTMODSEQ). Runs that differed only in their flags become one.
    async fn forget_link_bases(&self, pair: PairId) -> Result<()>;
    /// Drops links whose OLD message is gone (its NEW copy was expunged by us).
    async fn remove_links(&self, pair: PairId, old_uids: &[u32]) -> Result<()>;
    /// The NEW copy is gone: the links become tombstones, so those OLD messages are never copied back.
    async fn tombstone(&self, pair: PairId, old_uids: &[u32]) -> Result<()>;
    /// OLD UIDs that must never be copied again, ascending. [`StoreError::Retired`] once the
    /// account is retired: `retire` deleted them, so a pass that reads them must stop.
    async fn tombstones(&self, pair: PairId) -> Result<Vec<u32>>;
    /// Drops tombstones whose OLD message no longer exists.
    async fn remove_tombstones(&self, pair: PairId, old_uids: &[u32]) -> Result<()>;
    /// The pair's last measured sizes, OLD's and NEW's (`None`: that side was never measured).
    async fn measured_sizes(
        &self,
        pair: PairId,
    ) -> Result<(Option<MeasuredSizes>, Option<MeasuredSizes>)>;
    /// Replaces the pair's measured sizes.
    async fn save_measured_sizes(
        &self,
        pair: PairId,
        old: Option<MeasuredSizes>,
        new: Option<MeasuredSizes>,
    ) -> Result<()>;
    /// Replaces the pair's messages in error (OLD UID, reason) with those of its latest pass.
    async fn set_message_errors(&self, pair: PairId, errors: &[(u32, String)]) -> Result<()>;
    async fn message_errors(&self, pair: PairId) -> Result<Vec<(u32, String)>>;
    /// What the pair's folder shows its clients, if that was decided.
    async fn uid_map(&self, pair: PairId) -> Result<Option<Shown>>;
    /// Stores `shown` as the pair's decision unless it has one already, and returns the pair's:
    /// the first one stored wins, so every proxy of a fleet shows the same numbers.
    async fn freeze_uid_map(&self, pair: PairId, shown: &Shown) -> Result<Shown>;
    /// Raises the MODSEQ offset of the pair's map to `at_least` where it is lower: OLD's
    /// HIGHESTMODSEQ went past it, and what clients are shown must stay above every MODSEQ OLD
    /// gave out. Nothing for a pair without a map.
    async fn raise_modseq_offset(&self, pair: PairId, at_least: u64) -> Result<()>;
    /// The decisions of the account's pairs, with each pair's NEW folder name (raw, as stored).
    async fn uid_maps(&self, account: AccountId) -> Result<Vec<(String, Shown)>>;

    /// Marks the entries `done` as mirrored, in one transaction with the link `changes` their
    /// mirror made (in order); returns those of `done` that name no entry.
    async fn journal_mirrored(&self, done: &[i64], changes: &[LinkChange]) -> Result<Vec<i64>>;
    /// One commit of the journal (a group commit: the writes of several sessions, and the
    /// drainers' marks and keys): appends `entries` to their accounts' journals (pending), in
    /// order, marks the entries `done` names as mirrored, keeps `keys` until their entries
    /// are deleted (a key kept again replaces the first) and makes each [`Adoption`] of
    /// `lower`. Ids grow.
    async fn journal_commit(
        &self,
        entries: &[NewEntry<'_>],
        done: &[i64],
        keys: &[AppendKey],
        lower: &[Adoption],
    ) -> Result<Committed>;
    /// Appends one entry ([`Store::journal_commit`]); [`StoreError::Retired`] if the account is.
    async fn journal_append(&self, account: AccountId, kind: &str, payload: &str) -> Result<i64> {
        let entry = NewEntry {
            account,
            kind,
            payload,
        };
        match self
            .journal_commit(&[entry], &[], &[], &[])
            .await?
            .ids
            .as_slice()
        {
            [Some(id)] => Ok(*id),
            _ => Err(StoreError::Retired(format!("account {account}"))),
        }
    }
    /// Pending entries of the account, oldest first, at most `limit`.
    async fn journal_pending(&self, account: AccountId, limit: u32) -> Result<Vec<JournalEntry>>;
    /// [`Store::journal_pending`] for the mirror, in the same read as the account's state and
    /// folder pair epoch: `None` when the account is retired (nothing more goes to OLD).
    async fn journal_to_mirror(&self, account: AccountId, limit: u32) -> Result<Option<ToMirror>>;
    /// Pending entries of the account journaled after entry `after` whose payload holds
    /// `text`, oldest first, at most `limit`: a folder's entries among many, without reading
    /// the others (SQLite compares ASCII letters without case, so a caller decodes what it
    /// gets).
    async fn journal_pending_holding(
        &self,
        account: AccountId,
        text: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>>;
    /// Pending entries of the account journaled after entry `after`, of these `kinds`, oldest
    /// first: the later writes a mirror must follow, without reading every pending flag change.
    async fn journal_pending_after(
        &self,
        account: AccountId,
        after: i64,
        kinds: &[&str],
    ) -> Result<Vec<JournalEntry>>;
    /// The entries reached OLD: they are no longer pending (one commit for all). Marking an
    /// entry done twice is harmless; an id that names no entry is an error.
    async fn journal_done(&self, ids: &[i64]) -> Result<()> {
        let missing = self.journal_commit(&[], ids, &[], &[]).await?.missing;
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Corrupt(format!(
            "no journal entries {missing:?}"
        )))
    }
    async fn journal_pending_count(&self, account: AccountId) -> Result<u64>;
    /// OLD refused entry `id` (`reason`): it is tried again after `retry_at`. Returns how many
    /// times it has been refused.
    async fn journal_retry(&self, id: i64, reason: &str, retry_at: i64) -> Result<u32>;
    /// Entry `id` can never apply: it leaves the queue, kept with its reason for reconcile.
    async fn journal_park(&self, id: i64, reason: &str) -> Result<()>;
    /// The account's parked entries, oldest first.
    async fn journal_parked(&self, account: AccountId) -> Result<Vec<JournalEntry>>;
    /// Deletes mirrored entries journaled before `before` (unix seconds); returns how many.
    async fn journal_purge(&self, before: i64) -> Result<u64>;

    /// The account id for this key if it exists (never creates).
    async fn find_account(&self, key: &AccountKey) -> Result<Option<AccountId>> {
        Ok(self.find_account_state(key).await?.map(|(id, _)| id))
    }
    /// The account and its state, if it exists (never creates): a login's one read.
    async fn find_account_state(
        &self,
        key: &AccountKey,
    ) -> Result<Option<(AccountId, AccountState)>>;
    /// Retires the account in one transaction: with `forced` (the reason recorded) always;
    /// without, only if it is `synced` with no pending journal entry and no message in error at
    /// that moment. Returns whether it was retired (false: the account changed since it was
    /// looked at). Retired is final (no pass runs again), so the account shrinks to a summary:
    /// its tombstones go (their number stays on each pair), its mirrored journal entries and its
    /// links' base flags too; its links stay, as runs, and its UID maps.
    async fn retire(&self, account: AccountId, forced: Option<&str>) -> Result<bool>;
    /// Points the account at another OLD login (an accounts file was re-imported with a changed
    /// OLD user or host for the same NEW login); its folder state stays.
    async fn set_account_old(
        &self,
        account: AccountId,
        old_host: &str,
        old_user: &str,
    ) -> Result<()>;
    /// Records activity now (last_activity, unix seconds) — a login or a backfill.
    async fn touch_account(&self, account: AccountId) -> Result<()>;
    /// Renames a folder pair (both names); its links, tombstones and UID map stay.
    /// `old_name` must not be another pair's OLD name in the same account.
    async fn rename_pair(&self, pair: PairId, old_name: &str, new_name: &str) -> Result<()>;
    /// Deletes the pair with its links, tombstones and UID map. Deleting a missing pair does
    /// nothing.
    async fn delete_pair(&self, pair: PairId) -> Result<()>;

    /// Every account with its progress, ordered by new_user then old_user.
    async fn account_summaries(&self) -> Result<Vec<AccountSummary>>;
    /// One account's folders with their progress, ordered by old_name.
    async fn folder_summaries(&self, account: AccountId) -> Result<Vec<FolderSummary>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_database_url_or_a_file() {
        for (value, database) in [
            ("imapferry.db", false),
            ("/var/lib/imapferry/state.db", false),
            ("postgres.db", false),
            ("postgresql://imapferry@db.example/imapferry", true),
            (
                "postgres://imapferry@10.0.0.5:5433/state?sslmode=require",
                true,
            ),
        ] {
            let location = Location::parse(value, Some(Secret::new("pw"))).unwrap();
            assert_eq!(
                matches!(location, Location::Postgres(_)),
                database,
                "{value}"
            );
            assert_eq!(location.to_string(), value);
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        for (url, refused) in [
            ("postgresql://imapferry:secret@db.example/imapferry", true),
            ("postgres://u:p@host", true),
            ("postgresql://imapferry@db.example/imapferry", false),
            ("postgresql://db.example/imapferry?user=a", false),
            ("postgresql://imapferry@[::1]:5432/db", false),
        ] {
            let parsed = Location::parse(url, None);
            assert_eq!(
                matches!(parsed, Err(StoreError::Location(_))),
                refused,
                "{url}"
            );
            if let Err(e) = parsed {
                assert!(!e.to_string().contains("secret"), "{e}");
            }
        }
    }
}
