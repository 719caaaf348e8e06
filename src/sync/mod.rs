//! The engine: for each folder pair, plan what changed, adopt copies already on NEW, copy the rest
//! (pipelined), merge flags three ways against the stored base, and propagate deletions. Used by the
//! sync command (and later by the proxy and the sweeper); it never imports them.

mod account;
mod client_uids;

pub(crate) mod adopt;
mod copy;
mod criteria;
mod dates;
mod deletions;
pub mod flags;
mod folder;
mod ledger;
mod own;
mod plan;
mod rate;
mod sizes;

pub mod identity;
pub mod verify;

use std::sync::Mutex;

pub use account::{
    PreparedTree, TreeView, login, prepare_tree, read_tree, sync_account, sync_pair,
};
pub use criteria::MessageSelection;
pub use own::OwnChanges;
pub use rate::SharedRate;
pub use sizes::{FolderSize, Sizes, folder_sizes};

use crate::imap::{ConnectOptions, ImapError, Side};
use crate::lock;
use crate::mapping::{MapperOptions, Selection};
use crate::secret::Secret;
use crate::store::StoreError;
use identity::IdentityOptions;

/// How to log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMech {
    /// The IMAP LOGIN command.
    Login,
    /// AUTHENTICATE PLAIN (always used with an `authuser`).
    Plain,
}

/// One side of an account: where the server is and who logs in.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub connect: ConnectOptions,
    pub user: String,
    pub password: Secret,
    /// A master/admin login: AUTHENTICATE PLAIN with authzid = `user`, authcid = `authuser`,
    /// and `password` being the admin's password.
    pub authuser: Option<String>,
    pub auth: AuthMech,
}

/// What a pass does. `Default` is imapferry's default behaviour.
#[derive(Clone, Debug)]
pub struct Options {
    pub selection: Selection,
    /// `--folderrec`: these OLD folders and everything below them.
    pub folderrec: Vec<String>,
    /// Name mapping: `--f1f2`, `--automap`, `--subfolder1/2`, `--regextrans2`.
    pub mapping: MapperOptions,
    /// Overrides of what NAMESPACE (or guessing) says about each side.
    pub sep1: Option<char>,
    pub sep2: Option<char>,
    pub prefix1: Option<String>,
    pub prefix2: Option<String>,
    /// Change nothing anywhere (servers and state store); report what would be done.
    pub dry: bool,
    /// Deletions propagated from OLD may remove at most this share of a NEW folder per pass.
    pub max_delete_share: f64,
    /// Folders synced in parallel (each with its own pair of connections).
    pub connections: usize,
    /// Subscribe on NEW what is subscribed on OLD.
    pub subscribe: bool,
    /// Subscribe every synced NEW folder (`--subscribeall`).
    pub subscribe_all: bool,
    /// Create and subscribe folders only (`--justfolders`).
    pub just_folders: bool,
    /// Leave out OLD folders without messages; their NEW folder is not created.
    pub skip_empty_folders: bool,
    /// Which OLD messages are copied (search, age, size).
    pub messages: MessageSelection,
    pub identity: IdentityOptions,
    /// `--filterbuggyflags`: drop bogus backslash flags (imapsync's list) before NEW sees them.
    pub filter_buggy_flags: bool,
    /// `--regexflag`: Perl `s///` rewrites of the space-separated flag list, in order.
    pub regexflag: Vec<String>,
    /// `--resyncflags`: imapsync's "host1 wins" for linked messages, instead of the three-way merge.
    pub resync_flags_host1_wins: bool,
    /// `--maxbytespersecond` / `--maxmessagespersecond`: average copy rate ceilings.
    pub max_bytes_per_second: Option<u64>,
    pub max_messages_per_second: Option<f64>,
    /// Ceilings shared by every pass that holds the same value (the sweeper's global limits).
    pub shared_rate: Option<std::sync::Arc<SharedRate>>,
    /// Where the INTERNALDATE of a copy comes from (`--syncinternaldates`, `--idatefromheader`).
    pub dates: DateSource,
    /// `--addheader`: give messages without identifying headers `Message-Id: <UID@imapsync>`.
    pub add_header: bool,
    /// Copy OLD messages whose identity key repeats in the folder (imapferry's default); `false`
    /// is imapsync's `--nosyncduplicates` default: only the lowest UID of each key is copied.
    pub sync_duplicates: bool,
    /// `--delete1`: mark copied (and already present) OLD messages `\Deleted`.
    pub delete1: bool,
    /// `--expunge1`: expunge OLD after marking (implied by `--delete1`).
    pub expunge1: bool,
    /// Expunge OLD after each copied message (`--noexpungeaftereach` turns it off: once per folder).
    pub expunge_after_each: bool,
    /// `--delete2`: NEW mirrors OLD strictly: NEW messages without an OLD counterpart are deleted.
    pub delete2: bool,
    /// `--delete2duplicates`: delete NEW messages whose identity key repeats in the folder.
    pub delete2_duplicates: bool,
    /// `--delete2folders` (with `--delete2foldersonly`/`--delete2foldersbutnot` regexes).
    pub delete2_folders: Option<FolderDeletion>,
}

/// INTERNALDATE of copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DateSource {
    /// OLD's INTERNALDATE (imapsync's `--syncinternaldates`, the default).
    #[default]
    Internal,
    /// The `Date:` header (`--idatefromheader`).
    Header,
    /// Let NEW stamp the time of the copy (`--nosyncinternaldates`).
    None,
}

/// Which NEW folders `--delete2folders` may delete (besides the rule that they have no OLD
/// counterpart).
#[derive(Clone, Debug, Default)]
pub struct FolderDeletion {
    /// `--delete2foldersonly`: only folders matching this.
    pub only: Option<regex::Regex>,
    /// `--delete2foldersbutnot`: never folders matching this.
    pub but_not: Option<regex::Regex>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            selection: Selection::default(),
            folderrec: Vec::new(),
            mapping: MapperOptions::default(),
            sep1: None,
            sep2: None,
            prefix1: None,
            prefix2: None,
            dry: false,
            max_delete_share: 0.10,
            connections: 4,
            subscribe: true,
            subscribe_all: false,
            just_folders: false,
            skip_empty_folders: false,
            messages: MessageSelection::default(),
            identity: IdentityOptions::default(),
            filter_buggy_flags: false,
            regexflag: Vec::new(),
            resync_flags_host1_wins: false,
            max_bytes_per_second: None,
            max_messages_per_second: None,
            shared_rate: None,
            dates: DateSource::Internal,
            add_header: false,
            sync_duplicates: true,
            delete1: false,
            expunge1: false,
            expunge_after_each: true,
            delete2: false,
            delete2_duplicates: false,
            delete2_folders: None,
        }
    }
}

/// What the engine reports while it works. Texts of `Error` follow imapsync's wording
/// (the command line classifies them into exit codes).
#[derive(Clone, Debug)]
pub enum Event {
    /// The folders of the pass, OLD name → NEW name, before any work.
    Plan {
        folders: Vec<(String, String)>,
    },
    FolderCreated {
        new: String,
    },
    Subscribed {
        new: String,
    },
    FolderStart {
        old: String,
        new: String,
        messages: u32,
    },
    /// A folder whose state is unchanged since the last pass: nothing to do.
    FolderUnchanged {
        old: String,
        new: String,
    },
    Copied {
        old_folder: String,
        old_uid: u32,
        size: u64,
        new_folder: String,
        new_uid: Option<u32>,
    },
    /// Messages already on NEW matched by identity key and linked instead of copied.
    Adopted {
        new_folder: String,
        count: usize,
    },
    FlagsUpdated {
        new_folder: String,
        count: usize,
    },
    /// Linked messages expunged on OLD and therefore expunged on NEW.
    Expunged {
        new_folder: String,
        count: usize,
    },
    /// Linked messages gone from NEW: never copied back.
    Tombstoned {
        new_folder: String,
        count: usize,
    },
    FolderDone {
        old: String,
        new: String,
    },
    Warning(String),
    Error(String),
}

/// Receives events, called from several tasks, and answers the one question a pass asks its
/// caller.
pub trait Observer: Send + Sync {
    fn event(&self, event: Event);

    /// Whether linked messages missing from NEW folder `new_folder` may be taken as deleted
    /// there by the user (tombstoned). The migration proxy says no while a write of the user
    /// may not have reached OLD: the journal mirrors it (a move or an expunge on OLD), and a
    /// tombstone now would leave OLD's copy behind. The next pass decides again.
    fn new_settled(&self, _new_folder: &str) -> bool {
        true
    }

    /// What the caller itself changed on OLD's folder of NEW folder `new_folder` since the
    /// pair's recorded state, if it knows all of it: a pass that finds OLD changed by these
    /// alone records OLD's state and reads nothing else.
    fn own_changes(&self, _new_folder: &str) -> Option<OwnChanges> {
        None
    }

    /// The pair of NEW folder `new_folder` recorded OLD's state `old` (`None`: no completed
    /// state), by a pass or by finding OLD changed by [`Observer::own_changes`] alone.
    fn old_recorded(
        &self,
        _new_folder: &str,
        _pair: crate::store::PairId,
        _old: Option<crate::store::MailboxState>,
    ) {
    }

    /// Whether NEW folder `new_folder` should get its UID map (the numbers that keep client
    /// caches) when this pass completes, if it has none yet.
    fn wants_uid_map(&self, _new_folder: &str) -> bool {
        false
    }

    /// The pass completed and decided what the folder shows: OLD's numbers through its UID
    /// map, or NEW's when it cannot keep client caches (NEW held messages not copied from OLD,
    /// or copies out of OLD's order).
    fn uid_map(&self, _new_folder: &str, _shown: crate::uidmap::Shown) {}

    /// The MODSEQ offset of the folder's map, if it has one (see
    /// [`Store::raise_modseq_offset`](crate::store::Store::raise_modseq_offset)).
    fn modseq_offset(&self, _new_folder: &str) -> Option<u64> {
        None
    }
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event) {}
}

/// Counters of one pass (imapsync's statistics block reads these).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub folders_total: u64,
    pub folders_synced: u64,
    pub folders_created: u64,
    pub messages_transferred: u64,
    pub bytes_transferred: u64,
    /// With `dry`: what would have been copied.
    pub messages_would_transfer: u64,
    pub messages_skipped: u64,
    pub bytes_skipped: u64,
    pub messages_adopted: u64,
    pub messages_deleted_on_new: u64,
    /// `--delete1`: OLD messages marked `\\Deleted` (and expunged) after their copy.
    pub messages_deleted_on_old: u64,
    /// NEW folders deleted by `--delete2folders`.
    pub folders_deleted_on_new: u64,
    /// OLD messages left out because their identity key repeats in the folder (`--nosyncduplicates`).
    pub duplicates_on_old: u64,
    pub messages_tombstoned: u64,
    pub flags_updated: u64,
    pub biggest_message: u64,
    /// Messages on OLD in the selected folders (as seen during the pass).
    pub messages_on_old: u64,
    /// OLD messages that have no copy on NEW at the end (and are not tombstoned).
    pub messages_missing_on_new: u64,
    /// OLD messages a pass ended with in error (each reported with its reason).
    pub messages_in_error: u64,
    /// Flags left out of copies because NEW cannot store them (each with a warning).
    pub flags_dropped: u64,
    /// Copies whose INTERNALDATE NEW replaced (each with a warning).
    pub dates_substituted: u64,
}

/// The result of a pass: counters and every error that was counted (in imapsync's wording).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub stats: Stats,
    pub errors: Vec<String>,
}

/// Errors that end a pass before it starts or in the middle (login, connection, state store).
/// Per-message and per-folder problems are not errors: they are counted in [`Report::errors`].
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Options that cannot work with these servers (e.g. a `--regextrans2` that does not compile).
    #[error("{0}")]
    Options(String),
    /// `--subfolder1 X` where OLD has no folder X (imapsync exits 21).
    #[error("The subfolder {0} given by --subfolder1 does not exist on host1")]
    Subfolder1Missing(String),
    /// The account was retired (`imapferry retire`): no pass runs for it again.
    #[error(
        "Account {0} is retired (imapferry retire): OLD is no longer its mailbox, nothing is copied"
    )]
    Retired(String),
    #[error(transparent)]
    Poisoned(#[from] crate::lock::Poisoned),
}

impl SyncError {
    /// The side that failed (`None` for the state store).
    pub fn side(&self) -> Option<Side> {
        match self {
            SyncError::Imap(e) => Some(e.side()),
            SyncError::Store(_)
            | SyncError::Options(_)
            | SyncError::Subfolder1Missing(_)
            | SyncError::Retired(_)
            | SyncError::Poisoned(_) => None,
        }
    }
}

/// Collects counters and errors from the folder workers and forwards events.
pub(crate) struct Tally<'a> {
    pub observer: &'a dyn Observer,
    pub report: Mutex<Report>,
}

impl<'a> Tally<'a> {
    pub fn new(observer: &'a dyn Observer) -> Self {
        Tally {
            observer,
            report: Mutex::new(Report::default()),
        }
    }

    pub fn event(&self, event: Event) {
        self.observer.event(event);
    }

    /// The report is recovered from a poisoned lock (see [`crate::lock`]): counters and a list
    /// of texts, each changed in one step, and a dropped count or error would make a failed pass
    /// look clean.
    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        lock::recover(&self.report, "the pass's report")
    }

    pub fn stats(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.report().stats);
    }

    pub fn error(&self, text: String) {
        tracing::debug!(%text, "counted error");
        self.report().errors.push(text.clone());
        self.observer.event(Event::Error(text));
    }

    pub fn warn(&self, text: String) {
        tracing::warn!(%text);
        self.observer.event(Event::Warning(text));
    }

    pub fn into_report(self) -> Report {
        lock::recover_inner(self.report, "the pass's report")
    }
}
