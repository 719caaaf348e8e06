//! Replays one journal entry on OLD through the links (DESIGN.md §2, dual write), in OLD's names
//! of the time it was journaled: flags and expunges of linked messages, moves and copies (the
//! links follow the messages), appends (linked at once, so never copied back), folder changes.
//! The answer says whether OLD has the change, or why not and whether trying again can help.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex as StdMutex;

use super::account::Account;
use super::backfill::{Folder, MIRROR_WAIT};
use super::journal::{Entry, FlagOp, MOVING, Write, folder_after, follow, trace};
use super::names::renamed;
use super::pool::Conn;
use super::relayed::{Appended, Key};
use crate::imap::uidset::Ranges;
use crate::imap::{AppendMsg, Body, Client, Code, Fetch, ImapError, Side};
use crate::lock::Poisoned;
use crate::store::{
    Adoption, AppendKey, FolderPair, JournalEntry, Link, LinkChange, LinkFlags, NO_BASE, PairId,
    StoreError,
};
use crate::sync::adopt::{header_of, keys, message_key};
use crate::sync::flags::{
    FlagSet, FlagStores, PermanentFlags, Unstorable, filter_for_new, syntax_check,
};
use crate::sync::identity::IdentityOptions;
use crate::sync::{OwnChanges, SyncError};

/// Why an entry is not on OLD (yet).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MirrorError {
    /// OLD or NEW cannot be reached now: the entry waits, the account backs off.
    #[error("{0}")]
    Unreachable(SyncError),
    /// OLD refused it: tried again later, parked after a few refusals.
    #[error("{0}")]
    Refused(String),
    /// It can never apply: parked at once.
    #[error("{0}")]
    Never(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The journal's commit of an APPEND's identity keys failed: the entry waits.
    #[error("the identity keys of messages for OLD were not kept: {0}")]
    Keys(String),
    /// The account's folder names are unusable: the entry waits.
    #[error(transparent)]
    Poisoned(#[from] Poisoned),
}

impl From<SyncError> for MirrorError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Store(s) => MirrorError::Store(s),
            SyncError::Imap(ImapError::Refused { .. }) => MirrorError::Refused(e.to_string()),
            SyncError::Imap(_) => MirrorError::Unreachable(e),
            SyncError::Poisoned(p) => MirrorError::Poisoned(p),
            other => MirrorError::Never(other.to_string()),
        }
    }
}

impl From<ImapError> for MirrorError {
    fn from(e: ImapError) -> Self {
        SyncError::Imap(e).into()
    }
}

type Result<T> = std::result::Result<T, MirrorError>;

/// The folder pairs the mirror has read, by (OLD, NEW) name, kept between drains while the
/// account's pair epoch stays the same (read with the journal at each turn of a drain,
/// [`ToMirror`](crate::store::ToMirror)): a pair that any process deleted or renamed since is
/// read again. The drain also forgets them after each entry it mirrors that renames or deletes
/// a folder. (Their adoption watermark is not kept: passes raise it meanwhile.)
#[derive(Default)]
pub(crate) struct Pairs(StdMutex<KeptPairs>);

#[derive(Default)]
struct KeptPairs {
    epoch: i64,
    by_name: HashMap<(String, String), FolderPair>,
}

impl Pairs {
    fn get(&self, old: &str, new: &str) -> Option<FolderPair> {
        let key = (old.to_string(), new.to_string());
        self.kept().by_name.get(&key).cloned()
    }

    fn keep(&self, old: &str, new: &str, pair: &FolderPair) {
        (self.kept().by_name).insert((old.to_string(), new.to_string()), pair.clone());
    }

    fn forget(&self) {
        self.kept().by_name.clear();
    }

    /// Forgets the pairs kept unless the account's pair epoch is still `epoch`.
    pub(crate) fn at_epoch(&self, epoch: i64) {
        let mut kept = self.kept();
        if kept.epoch != epoch {
            kept.by_name.clear();
            kept.epoch = epoch;
        }
    }

    /// The pair (OLD, NEW), read from the store the first time.
    async fn pair(&self, acct: &Account, old: &str, new: &str) -> Result<FolderPair> {
        if let Some(pair) = self.get(old, new) {
            return Ok(pair);
        }
        let pair = acct.store.folder_pair(acct.id, old, new).await?;
        self.keep(old, new, &pair);
        Ok(pair)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, KeptPairs> {
        crate::lock::recover(&self.0, "the mirror's folder pairs")
    }
}

/// What the mirror of one entry needs besides the connections.
struct Ctx<'a> {
    acct: &'a Account,
    entry: &'a JournalEntry,
    pairs: &'a Pairs,
    /// NEW name → OLD name when journaled (`None`: an entry of an earlier version).
    old: Option<BTreeMap<String, String>>,
    /// The entry may have reached OLD already (see [`apply`]).
    careful: bool,
    /// A COPY or MOVE alone on NEW, and nothing read NEW since ([`alone`](super::alone)).
    alone: bool,
}

impl Ctx<'_> {
    /// The OLD name of NEW folder `new` for this entry; `None`: not on OLD.
    fn old_name(&self, new: &str) -> Result<Option<String>> {
        match &self.old {
            Some(map) => Ok(map.get(new).cloned()),
            None => Ok(self.acct.old_name(new)?),
        }
    }

    /// [`Ctx::old_name`], else the name a folder only NEW has would have on OLD.
    fn old_or_reverse_name(&self, new: &str) -> Result<Option<String>> {
        match self.old_name(new)? {
            Some(old) => Ok(Some(old)),
            None => Ok(self.acct.reverse_name(new)?),
        }
    }

    /// The OLD name of NEW folder `new`, creating the folder on OLD when it is only on NEW (a
    /// folder NEW made by itself, such as its special-use folders), so what the user puts there
    /// is mirrored too.
    async fn old_name_or_create(&self, conn: &mut Conn, new: &str) -> Result<Option<String>> {
        if let Some(old) = self.old_name(new)? {
            return Ok(Some(old));
        }
        let Some(old) = self.acct.reverse_name(new)? else {
            return Ok(None);
        };
        conn.old.create(&old).await?;
        self.acct.add_name(new, &old)?;
        Ok(Some(old))
    }

    async fn pair(&self, old: &str, new: &str) -> Result<FolderPair> {
        self.pairs.pair(self.acct, old, new).await
    }
}

/// A flag entry whose STORE says all OLD needs: its UIDs and operation (NEW is not read).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FlagStore {
    pub id: i64,
    pub folder: String,
    /// The folder's OLD name when the entry was journaled (`None`: an entry of an earlier
    /// version, resolved from the account's names).
    pub old: Option<String>,
    pub uids: Ranges,
    pub op: FlagOp,
    pub flags: Vec<String>,
}

impl FlagStore {
    fn of(replay: &Replay) -> Option<FlagStore> {
        let Ok(Entry {
            write:
                Write::Flags {
                    folder,
                    uids: Some(uids),
                    flags,
                    replace,
                    op,
                },
            old,
            ..
        }) = &replay.entry
        else {
            return None;
        };
        Some(FlagStore {
            id: replay.row.id,
            old: old.as_ref().and_then(|map| map.get(folder).cloned()),
            folder: folder.clone(),
            uids: uids.clone(),
            op: op.or(replace.then_some(FlagOp::Replace))?,
            flags: flags.clone(),
        })
    }
}

/// A journal entry as the store holds it and as it reads: parsed once, however many times the
/// drain looks at it (a [`flag_run`] at each position, then [`apply`]).
pub(crate) struct Replay {
    pub row: JournalEntry,
    /// The entry, or why its text cannot be read (it can never apply).
    entry: std::result::Result<Entry, String>,
}

impl From<JournalEntry> for Replay {
    fn from(row: JournalEntry) -> Replay {
        let entry = Entry::from_json(&row.payload)
            .map_err(|e| format!("unreadable journal entry {}: {e}", row.id));
        Replay { row, entry }
    }
}

/// The flag entries at the head of `entries` that [`apply_flag_run`] mirrors together:
/// consecutive, of one folder under one OLD name, each with its UIDs and operation, none
/// waiting for a retry.
pub(crate) fn flag_run(entries: &[Replay]) -> Vec<FlagStore> {
    let mut run: Vec<FlagStore> = Vec::new();
    for entry in entries {
        let next = FlagStore::of(entry).filter(|_| entry.row.retry_at.is_none());
        match (next, run.first()) {
            (Some(next), Some(first))
                if (&next.folder, &next.old) != (&first.folder, &first.old) =>
            {
                break;
            }
            (Some(next), _) => run.push(next),
            (None, _) => break,
        }
    }
    run
}

/// Mirrors a [`flag_run`]: one read of the links, the entries' STOREs sent to OLD together in
/// their order (adjacent equal ones merged), one write of the links. Replayed, the STOREs change
/// nothing twice, so after an error the entries can be mirrored one by one.
pub(crate) async fn apply_flag_run(
    acct: &Account,
    conn: &mut Conn,
    run: &[FlagStore],
    pairs: &Pairs,
) -> Result<()> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    let folder = &first.folder;
    let f = acct.folder(folder);
    let _owner = acct.own(&f, folder, MIRROR_WAIT).await?;
    let old = match &first.old {
        Some(old) => Some(old.clone()),
        None => acct.old_name(folder)?,
    };
    let Some(old) = old else {
        return Ok(());
    };
    store_flags_on_old(acct, pairs, conn, &old, folder, run).await
}

/// OLD's side of flag entries that know their UIDs and operation: their STOREs on the linked
/// messages, then the links' base flags.
async fn store_flags_on_old(
    acct: &Account,
    pairs: &Pairs,
    conn: &mut Conn,
    old: &str,
    folder: &str,
    stores: &[FlagStore],
) -> Result<()> {
    let pair = pairs.pair(acct, old, folder).await?;
    let named = Ranges::union(stores.iter().map(|s| &s.uids));
    let links: Vec<Link> = acct.store.links_by_new(pair.id, named.ranges()).await?;
    if links.is_empty() {
        return Ok(());
    }
    let old_uids: Vec<u32> = links.iter().map(|l| l.old_uid).collect();
    let perm = old_permanent_flags(conn, &pair.old_name, &old_uids).await?;
    let plan = plan_flag_stores(&links, stores, &perm);
    for (id, flag, why) in &plan.dropped {
        tracing::warn!(
            folder = %pair.old_name,
            "OLD cannot store flag {flag} ({why}): not mirrored (journal entry {id})"
        );
    }
    store_on_old(&acct.folder(folder), pair.id, &mut conn.old, &plan.commands).await?;
    acct.store.update_link_flags(pair.id, &plan.updates).await?;
    Ok(())
}

/// A `(UIDs, item, flags)` STORE.
type UidStore<'a> = (Vec<u32>, &'a str, Vec<String>);
/// A [`UidStore`] `UNCHANGEDSINCE` a modseq.
type ConditionalStore<'a> = (Vec<u32>, &'a str, Vec<String>, u64);

/// Sends `stores` to OLD's selected folder of `pair`. While the mirror's changes to the folder
/// are all known ([`OwnChanges`]), each STORE is conditional on its messages being as known
/// (`UNCHANGEDSINCE`) and the modseqs OLD gives are noted: a later check then finds these
/// changes the mirror's own, and passes no longer run for them. A message someone else changed
/// meanwhile is stored anyway, and the folder's changes are no longer all known.
async fn store_on_old(
    f: &Folder,
    pair: PairId,
    old: &mut Client,
    stores: &[UidStore<'_>],
) -> Result<()> {
    let Some(mut own) = f.own_old(pair) else {
        return Ok(old.uid_stores(stores).await?);
    };
    let mut rest = stores;
    while !rest.is_empty() {
        let (round, taken) = conditional_round(rest, &own);
        let (stored, modified) = old.uid_stores_unchanged_since(&round).await?;
        own.stored.extend(stored);
        if !modified.is_empty() {
            // Sent again plainly from this round on: replayed in order, the STOREs done
            // already change nothing twice.
            f.set_own_old(None);
            return Ok(old.uid_stores(rest).await?);
        }
        rest = &rest[taken..];
    }
    f.set_own_old(Some(own));
    Ok(())
}

/// The STOREs at the head of `stores` that go to OLD together, conditional on what `own`
/// knows of their messages (one STORE per condition), and how many of `stores` they are. A
/// message stored twice waits for the next round: its second condition is the modseq its first
/// STORE gets.
fn conditional_round<'a>(
    stores: &[UidStore<'a>],
    own: &OwnChanges,
) -> (Vec<ConditionalStore<'a>>, usize) {
    let mut round = Vec::new();
    let mut touched = HashSet::new();
    let mut taken = 0;
    for (uids, item, flags) in stores {
        if taken > 0 && uids.iter().any(|u| touched.contains(u)) {
            break;
        }
        let mut by_condition: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for &uid in uids {
            touched.insert(uid);
            by_condition
                .entry(own.known_modseq(uid))
                .or_default()
                .push(uid);
        }
        round.extend(
            by_condition
                .into_iter()
                .map(|(modseq, uids)| (uids, *item, flags.clone(), modseq)),
        );
        taken += 1;
    }
    (round, taken)
}

/// What [`store_flags_on_old`] sends and records.
#[derive(Debug, Default, PartialEq)]
struct FlagPlan {
    /// `(OLD UIDs, STORE item, flags)`, in the entries' order.
    commands: Vec<(Vec<u32>, &'static str, Vec<String>)>,
    /// The links whose recorded flags change (a link keeping no base keeps none: the next
    /// pass sees both sides changed).
    updates: Vec<LinkFlags>,
    /// `(entry, flag, why)` for each flag OLD cannot store.
    dropped: Vec<(i64, String, Unstorable)>,
}

/// The STOREs and link updates of `stores` on `links` (pure).
fn plan_flag_stores(links: &[Link], stores: &[FlagStore], perm: &PermanentFlags) -> FlagPlan {
    let mut plan = FlagPlan::default();
    // old UID → (OLD's base, NEW's base), as the entries leave them.
    let mut bases: BTreeMap<u32, (FlagSet, FlagSet)> = links
        .iter()
        .filter(|l| l.has_base())
        .map(|l| {
            let flags = (FlagSet::parse(&l.old_flags), FlagSet::parse(&l.new_flags));
            (l.old_uid, flags)
        })
        .collect();
    for s in stores {
        let named = FlagSet::from_iter(&s.flags);
        let (storable, dropped) = filter_for_new(&named, perm);
        let dropped = dropped.into_iter().map(|(flag, why)| (s.id, flag, why));
        plan.dropped.extend(dropped);
        let mut old_uids: Vec<u32> = links
            .iter()
            .filter(|l| s.uids.contains(l.new_uid))
            .map(|l| l.old_uid)
            .collect();
        for uid in &old_uids {
            if let Some((o, n)) = bases.get_mut(uid) {
                *o = s.op.apply(o, &storable);
                *n = s.op.apply(n, &named);
            }
        }
        let list: Vec<String> = storable.iter().map(String::from).collect();
        if old_uids.is_empty() || (list.is_empty() && s.op != FlagOp::Replace) {
            continue;
        }
        let item = match s.op {
            FlagOp::Add => "+FLAGS.SILENT",
            FlagOp::Remove => "-FLAGS.SILENT",
            FlagOp::Replace => "FLAGS.SILENT",
        };
        match plan.commands.last_mut() {
            // The same change as the STORE before: one STORE for both.
            Some((uids, i, l)) if *i == item && *l == list => {
                uids.append(&mut old_uids);
                uids.sort_unstable();
                uids.dedup();
            }
            _ => plan.commands.push((old_uids, item, list)),
        }
    }
    plan.updates = links
        .iter()
        .filter_map(|l| {
            let (o, n) = bases.get(&l.old_uid)?;
            let (o, n) = (o.to_canonical(), n.to_canonical());
            (o != l.old_flags || n != l.new_flags).then_some(LinkFlags {
                old_uid: l.old_uid,
                old_flags: o,
                new_flags: n,
            })
        })
        .collect();
    plan
}

/// Mirrors `entry` on OLD. `Ok`: OLD has the change (or there is nothing to do there).
/// `careful`: an earlier attempt at this entry may have reached OLD before it was cut off (the
/// process killed, the connection lost) without the journal recording it. Replaying flags,
/// expunges, moves, creates, deletes and subscriptions changes nothing twice; an APPEND then
/// looks for its copy on OLD before making one (see [`already_on_old`]), and a RENAME already
/// done counts as done.
/// `pairs`: the folder pairs read so far by the caller's run of entries.
/// Returns the links an APPEND, COPY or MOVE made and took away: the caller writes them with
/// the entry's mark ([`Store::journal_mirrored`](crate::store::Store::journal_mirrored)).
pub(crate) async fn apply(
    acct: &Account,
    conn: &mut Conn,
    replay: &Replay,
    careful: bool,
    pairs: &Pairs,
) -> Result<Vec<LinkChange>> {
    let Entry { write, old, alone } = replay.entry.clone().map_err(MirrorError::Never)?;
    let ctx = Ctx {
        acct,
        entry: &replay.row,
        pairs,
        old,
        careful,
        alone: match (&alone, &write) {
            (Some(stamp), Write::Copy { from, .. }) => acct.alone.still(stamp, from),
            _ => false,
        },
    };
    let restructures = matches!(write, Write::Delete { .. } | Write::Rename { .. });
    let result = apply_write(&ctx, conn, write).await;
    if restructures {
        pairs.forget();
        // The reads the mirror counts go by folder name.
        acct.alone.unsure();
    }
    result
}

async fn apply_write(ctx: &Ctx<'_>, conn: &mut Conn, write: Write) -> Result<Vec<LinkChange>> {
    let acct = ctx.acct;
    match write {
        Write::Flags {
            folder,
            uids,
            flags,
            replace,
            op,
        } => {
            let f = acct.folder(&folder);
            let _owner = acct.own(&f, &folder, MIRROR_WAIT).await?;
            let op = op.or(replace.then_some(FlagOp::Replace));
            mirror_flags(ctx, conn, &folder, uids, op, &flags).await?;
            Ok(Vec::new())
        }
        Write::Expunge { folder, uids } => {
            let f = acct.folder(&folder);
            let _owner = acct.own(&f, &folder, MIRROR_WAIT).await?;
            mirror_expunge(ctx, conn, &folder, uids.as_ref()).await
        }
        Write::Copy {
            from,
            to,
            uids,
            moved,
        } => {
            // Locks in name order, so two mirrors never wait on each other.
            let (first, second) = ((&from).min(&to), (&from).max(&to));
            let (a, b) = (acct.folder(first), acct.folder(second));
            let _first = acct.own(&a, first, MIRROR_WAIT).await?;
            let _second = if from == to {
                None
            } else {
                Some(acct.own(&b, second, MIRROR_WAIT).await?)
            };
            mirror_copy(ctx, conn, &from, &to, &uids, moved).await
        }
        Write::Append {
            folder,
            uids,
            validity,
        } => {
            let f = acct.folder(&folder);
            let _owner = acct.own(&f, &folder, MIRROR_WAIT).await?;
            // Taken at the first attempt (a retry reads NEW), and not used for a replay with
            // care, which reads NEW to find whether OLD has the message already.
            let relayed = match (&uids[..], validity) {
                ([uid], Some(validity)) => acct.relayed.take(&Key {
                    account: acct.id,
                    folder: folder.clone(),
                    validity,
                    uid: *uid,
                }),
                _ => None,
            }
            .filter(|_| !ctx.careful);
            Ok(Vec::from_iter(
                mirror_append(ctx, conn, &folder, &uids, relayed).await?,
            ))
        }
        Write::Create { folder } => {
            let Some(old) = ctx.old_or_reverse_name(&folder)? else {
                return Ok(Vec::new());
            };
            conn.old.create(&old).await?;
            ctx.pair(&old, &folder).await?;
            Ok(Vec::new())
        }
        Write::Delete { folder } => {
            let f = acct.folder(&folder);
            let _owner = acct.own(&f, &folder, MIRROR_WAIT).await?;
            let Some(old) = ctx.old_name(&folder)? else {
                return Ok(Vec::new()); // never on OLD
            };
            match conn.old.delete(&old).await {
                Ok(()) => {}
                // Already gone (deleted on OLD too, or a second DELETE): OLD is as NEW.
                Err(ImapError::Refused { text, code, .. }) if is_nonexistent(&text, &code) => {}
                Err(e) => return Err(e.into()),
            }
            for p in acct.store.folder_pairs(acct.id).await? {
                if p.old_name == old {
                    acct.store.delete_pair(p.id).await?;
                }
            }
            Ok(Vec::new())
        }
        Write::Rename { from, to } => {
            mirror_rename(ctx, conn, &from, &to).await?;
            Ok(Vec::new())
        }
        Write::Subscribe { folder, subscribed } => {
            let Some(old) = ctx.old_or_reverse_name(&folder)? else {
                return Ok(Vec::new());
            };
            if subscribed {
                conn.old.subscribe(&old).await?;
            } else {
                conn.old.unsubscribe(&old).await?;
            }
            Ok(Vec::new())
        }
    }
}

/// `NO [NONEXISTENT]` or the usual "doesn't exist" wordings.
fn is_nonexistent(text: &str, code: &Option<String>) -> bool {
    let t = text.to_ascii_lowercase();
    code.as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("NONEXISTENT"))
        || t.contains("nonexistent")
        || t.contains("doesn't exist")
        || t.contains("does not exist")
        || t.contains("no such mailbox")
}

/// The flags OLD's `folder` can store (it is selected read-write for the STOREs that follow).
/// A server that sends no PERMANENTFLAGS stores every flag (RFC 3501 §7.1), which is
/// `PermanentFlags::default()`; nothing is filtered then, and a flag OLD still refuses fails
/// the STORE, so the entry is retried and parked rather than dropped.
async fn old_permanent_flags(
    conn: &mut Conn,
    folder: &str,
    uids: &[u32],
) -> Result<PermanentFlags> {
    Ok(match conn.old.writable_flags(folder, uids).await? {
        Some(p) => PermanentFlags::parse(&p.join(" ")),
        None => PermanentFlags::default(),
    })
}

/// Flags of messages `uids` of the selected mailbox, by UID.
async fn selected_flags(
    client: &mut crate::imap::Client,
    uids: &[u32],
) -> std::result::Result<HashMap<u32, FlagSet>, ImapError> {
    let mut out = HashMap::new();
    client
        .uid_fetch(uids, "UID FLAGS", "", |f| {
            if let (Some(uid), Some(flags)) = (f.uid, f.flags) {
                out.insert(uid, FlagSet::from_iter(flags));
            }
        })
        .await?;
    Ok(out)
}

/// NEW's flags of messages `uids` of `folder`, read where they are now (a later MOVE or RENAME
/// took them elsewhere), by `folder`'s UID; those deleted since are missing.
async fn flags_on_new(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    folder: &str,
    uids: &[u32],
) -> Result<HashMap<u32, FlagSet>> {
    Ok(read_where_they_are(ctx, conn, folder, uids, "")
        .await?
        .into_iter()
        .filter_map(|f| Some((f.uid?, FlagSet::from_iter(f.flags?))))
        .collect())
}

/// OLD takes NEW's value of every flag the user's STORE named (all of them for `FLAGS (...)`),
/// on the linked messages it touched. When the entry knows the UIDs and the operation, the STORE
/// itself says NEW's value and OLD is written without reading NEW ([`store_flags_on_old`]);
/// otherwise (sequence numbers, entries of an earlier version) both sides are read. The links'
/// base flags follow.
async fn mirror_flags(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    folder: &str,
    uids: Option<Ranges>,
    op: Option<FlagOp>,
    named: &[String],
) -> Result<()> {
    let Some(old) = ctx.old_name(folder)? else {
        return Ok(());
    };
    if let (Some(uids), Some(op)) = (&uids, op) {
        let store = FlagStore {
            id: ctx.entry.id,
            folder: folder.to_string(),
            old: Some(old.clone()),
            uids: uids.clone(),
            op,
            flags: named.to_vec(),
        };
        return store_flags_on_old(ctx.acct, ctx.pairs, conn, &old, folder, &[store]).await;
    }
    let store = &ctx.acct.store;
    let pair = ctx.pair(&old, folder).await?;
    let every = [(0, u32::MAX)];
    let ranges = uids.as_ref().map_or(&every[..], Ranges::ranges);
    let links: Vec<Link> = store.links_by_new(pair.id, ranges).await?;
    if links.is_empty() {
        return Ok(());
    }
    let named = FlagSet::from_iter(named);
    let old_uids: Vec<u32> = links.iter().map(|l| l.old_uid).collect();
    let perm = old_permanent_flags(conn, &pair.old_name, &old_uids).await?;
    let (_, dropped) = filter_for_new(&named, &perm);
    for (flag, why) in &dropped {
        tracing::warn!(
            folder = %pair.old_name,
            "OLD cannot store flag {flag} ({why}): not mirrored (journal entry {})",
            ctx.entry.id
        );
    }
    // A message deleted from NEW since is left alone.
    let new_uids: Vec<u32> = links.iter().map(|l| l.new_uid).collect();
    let new_flags = flags_on_new(ctx, conn, folder, &new_uids).await?;
    conn.old.select(&pair.old_name, false).await?;
    let old_flags = selected_flags(&mut conn.old, &old_uids).await?;
    let replace = op == Some(FlagOp::Replace);
    let (stores, mut updates) = by_reading(&links, &named, replace, &new_flags, &old_flags, &perm);
    let commands = flag_commands(&stores);
    store_on_old(&ctx.acct.folder(folder), pair.id, &mut conn.old, &commands).await?;
    // Only links whose recorded flags change are written: a STORE by sequence number reads
    // every link of the folder, and rewriting them all would split the folder's runs for nothing.
    let recorded: HashMap<u32, (&str, &str)> = links
        .iter()
        .map(|l| (l.old_uid, (l.old_flags.as_str(), l.new_flags.as_str())))
        .collect();
    updates.retain(|u| {
        recorded.get(&u.old_uid) != Some(&(u.old_flags.as_str(), u.new_flags.as_str()))
    });
    store.update_link_flags(pair.id, &updates).await?;
    Ok(())
}

/// OLD takes NEW's value (read from both) of the flags the STORE touched: the changes to
/// store on OLD, and the links' flags after them.
fn by_reading(
    links: &[Link],
    named: &FlagSet,
    replace: bool,
    new_flags: &HashMap<u32, FlagSet>,
    old_flags: &HashMap<u32, FlagSet>,
    perm: &PermanentFlags,
) -> (FlagStores, Vec<LinkFlags>) {
    let mut stores = FlagStores::default();
    let mut updates = Vec::new();
    for link in links {
        let (Some(n), Some(o)) = (new_flags.get(&link.new_uid), old_flags.get(&link.old_uid))
        else {
            continue;
        };
        let touched = |f: &str| replace || named.contains(f);
        let wanted = FlagSet::from_iter(
            o.iter()
                .filter(|f| !touched(f))
                .chain(n.iter().filter(|f| touched(f))),
        );
        let (target, _) = filter_for_new(&wanted, perm);
        stores.push(link.old_uid, o, &target);
        updates.push(LinkFlags {
            old_uid: link.old_uid,
            old_flags: target.to_canonical(),
            new_flags: n.to_canonical(),
        });
    }
    (stores, updates)
}

/// `stores` as `+FLAGS.SILENT` and `-FLAGS.SILENT` STOREs.
fn flag_commands(stores: &FlagStores) -> Vec<UidStore<'static>> {
    let mut commands = Vec::new();
    for (uids, add, remove) in stores.groups() {
        if !add.is_empty() {
            commands.push((uids.clone(), "+FLAGS.SILENT", add));
        }
        if !remove.is_empty() {
            commands.push((uids, "-FLAGS.SILENT", remove));
        }
    }
    commands
}

/// Linked messages no longer on NEW are expunged on OLD, and their links dropped (returned, to
/// be written with the entry's mark): those NEW reported expunged (`uids`), else every one the
/// folder's links name that NEW lacks. A message a later write moved out of the folder is not
/// gone: that write's mirror moves it on OLD too. Nor is one a later COPY took before NEW lost
/// it: that COPY's mirror copies it on OLD, and the deletion that followed on NEW has its own
/// entry, mirrored after.
async fn mirror_expunge(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    folder: &str,
    uids: Option<&Ranges>,
) -> Result<Vec<LinkChange>> {
    let Some(old) = ctx.old_name(folder)? else {
        return Ok(Vec::new());
    };
    let store = &ctx.acct.store;
    let pair = ctx.pair(&old, folder).await?;
    let links = match uids {
        Some(uids) => store.links_by_new(pair.id, uids.ranges()).await?,
        None => store.links(pair.id).await?,
    };
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let (missing, later, now) = {
        let f = ctx.acct.folder(folder);
        // Once no change of the folder is in flight on NEW: a MOVE out of it that NEW ran
        // before this EXPUNGE (and reported to this session as expunged) is in the journal.
        let _reading = f.read_new().await;
        let mut later = Later::read(ctx).await?;
        let Some(now) = folder_after(&later.writes, folder, new_sep(ctx)) else {
            return Ok(Vec::new()); // deleted later: OLD deletes the whole folder
        };
        let linked = links.iter().map(|l| l.new_uid);
        // NEW is read only without the UIDs it reported gone (UIDs are not used again).
        let missing: Vec<u32> = if uids.is_some() {
            linked.collect()
        } else {
            conn.new.select(&now, true).await?;
            let present: BTreeSet<u32> = conn.new.uid_search("ALL").await?.into_iter().collect();
            // Read after NEW: a move NEW made before the search is in the journal by now.
            later.more(ctx).await?;
            linked.filter(|u| !present.contains(u)).collect()
        };
        (missing, later.writes, now)
    };
    let (places, copied) = trace(&later, folder, &missing, new_sep(ctx));
    let gone: Vec<u32> = links
        .iter()
        .filter(|l| !copied.contains(&l.new_uid))
        .filter(|l| match places.get(&l.new_uid) {
            Some(Some((f, u))) => *f == now && *u == l.new_uid,
            Some(None) => true,
            None => false,
        })
        .map(|l| l.old_uid)
        .collect();
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    conn.old.writable_for(&pair.old_name, &gone).await?;
    conn.old.uid_expunge(&gone).await?;
    (ctx.acct.folder(folder)).note_own(pair.id, |own| own.expunged.extend(&gone));
    // The links go with the entry's mark, in one transaction.
    Ok(vec![LinkChange {
        pair: pair.id,
        added: Vec::new(),
        removed: gone,
    }])
}

/// COPY/MOVE on OLD of the linked sources; the copies are linked to NEW's copies (COPYUID on
/// both sides), and a move drops the source links. Without COPYUID from OLD, the destination's
/// adoption watermark is lowered so the next pass links the copies by identity key. A copy
/// whose source OLD does not have is appended to OLD from NEW, as the user's APPEND would be.
async fn mirror_copy(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    from: &str,
    to: &str,
    uids: &[(u32, u32)],
    moved: bool,
) -> Result<Vec<LinkChange>> {
    let Some(old_from) = ctx.old_name(from)? else {
        return Ok(Vec::new()); // the source is not on OLD: nothing of it to copy there
    };
    let Some(old_to) = ctx.old_name_or_create(conn, to).await? else {
        return Err(MirrorError::Never(format!(
            "no OLD folder for {to} (OLD's tree is not mapped)"
        )));
    };
    let store = &ctx.acct.store;
    let (src, dst) = (
        ctx.pair(&old_from, from).await?,
        ctx.pair(&old_to, to).await?,
    );
    let dest_of: HashMap<u32, u32> = uids.iter().copied().collect();
    let sources = Ranges::from_uids(dest_of.keys().copied());
    let mut wanted: HashMap<u32, (Link, u32)> = store
        .links_by_new(src.id, sources.ranges())
        .await?
        .into_iter()
        .filter_map(|l| {
            let d = *dest_of.get(&l.new_uid)?;
            Some((l.old_uid, (l, d)))
        })
        .collect();
    // NEW's copies got the flags OLD's sources have (as far as OLD stores them, and but for
    // what someone else did on OLD, which the next pass merges): nothing else touched the
    // account on NEW while the COPY was in flight, and nothing read NEW since, which could have
    // put on OLD's sources what the user did after it. The mirror's entries before it kept
    // OLD's sources in step with NEW's, each as the user's write said.
    let known = ctx.alone && !ctx.careful;
    tracing::debug!(id = ctx.entry.id, moved, known, "mirroring a copy");
    if !moved {
        // Sources OLD has no link for (an APPEND read from NEW after the user had copied and
        // deleted the message, a message not backfilled yet): OLD gets NEW's copy instead.
        let linked: HashSet<u32> = wanted.values().map(|(_, d)| *d).collect();
        let unlinked: Vec<u32> = uids
            .iter()
            .map(|(_, d)| *d)
            .filter(|d| !linked.contains(d))
            .collect();
        // Linked at once: what follows reads the destination's links.
        if !unlinked.is_empty()
            && let Some(appended) = mirror_append(ctx, conn, to, &unlinked, None).await?
        {
            store.add_links(appended.pair, &appended.added).await?;
        }
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut links = if ctx.careful {
        copied_already(ctx, conn, to, &dst, &wanted).await?
    } else {
        Vec::new()
    };
    let done: HashSet<u32> = links.iter().map(|l| l.new_uid).collect();
    let (mut there, mut old_uids) = (Vec::new(), Vec::new());
    for (old_uid, (_, d)) in &wanted {
        if done.contains(d) {
            there.push(*old_uid);
        } else {
            old_uids.push(*old_uid);
        }
    }
    there.sort_unstable();
    old_uids.sort_unstable();
    if moved && !there.is_empty() {
        // OLD has these in the destination already, and NEW's MOVE took them out of the source:
        // OLD's sources go too. Finding the copy says nothing about the source: the earlier
        // attempt may have been cut inside OLD's MOVE, which copies and then expunges (OLD
        // killed between the two; COPY then EXPUNGE where OLD has no MOVE). A source left on
        // OLD without its link would be copied to NEW again by the next pass of its folder,
        // and the user would have the message twice. A source OLD no longer has is no matter.
        conn.old.writable_for(&src.old_name, &there).await?;
        conn.old.uid_expunge(&there).await?;
        (ctx.acct.folder(from)).note_own(src.id, |own| own.expunged.extend(&there));
    }
    if !old_uids.is_empty() {
        let copies: Vec<u32> = old_uids
            .iter()
            .filter_map(|u| Some(wanted.get(u)?.1))
            .collect();
        // OLD's copies must end with NEW's copies' flags: OLD's sources hold the flags of the
        // journal's position only as far as the entries before the copy were exact. One
        // mirrored by reading NEW (a STORE by sequence number, an APPEND) wrote the flags NEW
        // had when it ran, possibly changed after the copy, and NEW's copy never got those;
        // so did a write NEW did after the COPY but the journal has before it (another
        // session's). Unless `known`, NEW's copies are read. What the user did to the copies
        // since is in later entries.
        let on_new = if known {
            HashMap::new()
        } else {
            flags_on_new(ctx, conn, to, &copies).await?
        };
        conn.old.writable_for(&src.old_name, &old_uids).await?;
        let lower = copies
            .iter()
            .min()
            .map(|&from| Adoption { pair: dst.id, from });
        let mut on_old = keep_keys(ctx, conn, &src, &old_uids, &mut wanted, lower).await?;
        sources_flags(conn, &old_uids, &wanted, &on_new, &mut on_old).await?;
        let mut copied = if moved {
            let moved = conn.old.uid_move(&old_uids, &dst.old_name).await?;
            (ctx.acct.folder(from)).note_own(src.id, |own| own.expunged.extend(&old_uids));
            moved
        } else {
            conn.old.uid_copy(&old_uids, &dst.old_name).await?
        };
        let by_key = uncopied_by_key(ctx, conn, &dst, &old_uids, &wanted, &copied, &links);
        copied.extend(by_key.await?);
        let mut differ = Vec::new();
        let mut made = Vec::new();
        for (old_src, old_dst) in &copied {
            let Some((l, new_dst)) = wanted.get(old_src) else {
                continue;
            };
            let flags = (on_new.get(new_dst), on_old.get(old_src));
            if let (Some(n), Some(o)) = flags
                && n != o
            {
                differ.push((*old_dst, o, n));
            }
            made.push((l, *old_dst, *new_dst, flags));
        }
        let stored = copies_take_new_flags(conn, &dst, &differ).await?;
        // A copy's link keeps the flags its two sides have now as its base (where the source's
        // link keeps one): not the source's, which OLD's copy no longer has once it took NEW's.
        // A later COPY of this copy trusts that base (`sources_flags`).
        links.extend(made.into_iter().map(|(l, old_uid, new_uid, flags)| {
            let mut link = Link {
                old_uid,
                new_uid,
                ..l.clone()
            };
            if let (Some(n), Some(o)) = flags
                && l.has_base()
            {
                let on_old = stored.get(&old_uid).unwrap_or(o);
                link.old_flags = on_old.to_canonical();
                link.new_flags = n.to_canonical();
            }
            link
        }));
    }
    let added = links.iter().map(|l| l.old_uid);
    (ctx.acct.folder(to)).note_own(dst.id, |own| own.added.extend(added));
    let mut changes = vec![LinkChange {
        pair: dst.id,
        added: links,
        removed: Vec::new(),
    }];
    if moved {
        changes.push(LinkChange {
            pair: src.id,
            added: Vec::new(),
            removed: wanted.keys().copied().collect(),
        });
    }
    Ok(changes)
}

/// OLD's copies in `dst` of sources `old_uids` that OLD's answer did not pair with their
/// sources (`copied`: no COPYUID without UIDPLUS), found by the keys their sources' links keep
/// ([`keep_keys`]): `(OLD source, OLD copy)`. Unlinked, the user's deletion of NEW's copies
/// would never reach them, and the next pass would copy them back to NEW. Those not found stay
/// for the next pass to adopt by the lowered watermark. `found`: links made already.
async fn uncopied_by_key(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    dst: &FolderPair,
    old_uids: &[u32],
    wanted: &HashMap<u32, (Link, u32)>,
    copied: &[(u32, u32)],
    found: &[Link],
) -> Result<Vec<(u32, u32)>> {
    let paired: HashSet<u32> = copied.iter().map(|(src, _)| *src).collect();
    let mut source_of = HashMap::new();
    let mut unpaired = Vec::new();
    for uid in old_uids.iter().filter(|u| !paired.contains(u)) {
        if let Some((l, d)) = wanted.get(uid) {
            source_of.insert(*d, *uid);
            unpaired.push((l, *d));
        }
    }
    if unpaired.is_empty() {
        return Ok(Vec::new());
    }
    let mut taken: Vec<u32> = found.iter().map(|l| l.old_uid).collect();
    taken.extend(copied.iter().map(|(_, copy)| *copy));
    let links = orphans_by_key(ctx.acct, conn, dst, &unpaired, &taken).await?;
    Ok(links
        .iter()
        .filter_map(|l| Some((*source_of.get(&l.new_uid)?, l.old_uid)))
        .collect())
}

/// Puts in `on_old` the flags of OLD's sources `old_uids` (in the selected source) whose NEW
/// copy is still on NEW, which OLD's copies get (RFC 3501 §6.4.7): the base a link keeps (a
/// change someone else made to a source on OLD is not the mirror's to undo: the next pass merges
/// it from that base), else what [`keep_keys`] read with the key, else read now.
async fn sources_flags(
    conn: &mut Conn,
    old_uids: &[u32],
    wanted: &HashMap<u32, (Link, u32)>,
    on_new: &HashMap<u32, FlagSet>,
    on_old: &mut HashMap<u32, FlagSet>,
) -> Result<()> {
    let mut unread = Vec::new();
    for uid in old_uids {
        let Some((l, new_dst)) = wanted.get(uid) else {
            continue;
        };
        if !on_new.contains_key(new_dst) {
            continue;
        }
        if l.has_base() {
            on_old.insert(*uid, FlagSet::parse(&l.old_flags));
        } else if !on_old.contains_key(uid) {
            unread.push(*uid);
        }
    }
    if !unread.is_empty() {
        on_old.extend(selected_flags(&mut conn.old, &unread).await?);
    }
    Ok(())
}

/// OLD's copies in `dst` whose flags (their sources') differ from NEW's copies' take NEW's
/// (see [`mirror_copy`]), as far as OLD can store them: `(OLD UID, OLD's flags, NEW's)`.
/// `dst` is selected only for those. Returns the flags each copy has then, by OLD UID.
async fn copies_take_new_flags(
    conn: &mut Conn,
    dst: &FolderPair,
    differ: &[(u32, &FlagSet, &FlagSet)],
) -> Result<HashMap<u32, FlagSet>> {
    let mut taken = HashMap::new();
    if differ.is_empty() {
        return Ok(taken);
    }
    let old_uids: Vec<u32> = differ.iter().map(|(uid, ..)| *uid).collect();
    let perm = old_permanent_flags(conn, &dst.old_name, &old_uids).await?;
    let mut stores = FlagStores::default();
    for (uid, on_old, on_new) in differ {
        let (target, _) = filter_for_new(on_new, &perm);
        stores.push(*uid, on_old, &target);
        taken.insert(*uid, target);
    }
    conn.old.store_flags(stores.groups()).await?;
    Ok(taken)
}

/// Before OLD copies or moves messages `old_uids` of the selected `src`: their links keep each
/// message's identity key (read from OLD where a link has none), so a replay cut off after OLD's
/// answer finds OLD's copies by key even when NEW's copies are gone by then (see
/// [`copied_already`]), and the destination's adoption watermark is lowered (`lower`), in one
/// write. The keys go with the links to the destination. Returns the flags of the messages it
/// read, by OLD UID.
async fn keep_keys(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    src: &FolderPair,
    old_uids: &[u32],
    wanted: &mut HashMap<u32, (Link, u32)>,
    lower: Option<Adoption>,
) -> Result<HashMap<u32, FlagSet>> {
    let unkeyed: Vec<u32> = old_uids
        .iter()
        .copied()
        .filter(|u| wanted.get(u).is_some_and(|(l, _)| l.ident.is_none()))
        .collect();
    let (mut flags, mut keyed) = (HashMap::new(), Vec::new());
    if !unkeyed.is_empty() {
        let identity = &ctx.acct.opts.identity;
        for (uid, key, on_old) in keys(&mut conn.old, &unkeyed, identity, false).await? {
            if let Some((link, _)) = wanted.get_mut(&uid) {
                link.ident = Some(key);
                keyed.push(link.clone());
                flags.insert(uid, on_old);
            }
        }
    }
    let store = &ctx.acct.store;
    match lower {
        Some(lower) => store.add_links_lowering(src.id, &keyed, lower).await?,
        None => store.add_links(src.id, &keyed).await?,
    }
    Ok(flags)
}

/// For a COPY or MOVE that may have reached OLD already (the last attempt stopped before its
/// links were stored, see [`apply`]): the links to keep for NEW copies (`wanted`'s destinations)
/// that are linked in `dst` already, or whose OLD copy is in `dst` unlinked: same size and
/// identity key as NEW's copy, or, where NEW's copy is gone since (the user deleted it), the
/// identity key the source link kept ([`keep_keys`]). Those are not copied or moved again: OLD
/// would hold them twice, and a copy left unlinked would be copied to NEW again by the next pass.
/// For a MOVE, [`mirror_copy`] then expunges their sources on OLD: a copy in the destination does
/// not mean the source is gone.
async fn copied_already(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    to: &str,
    dst: &FolderPair,
    wanted: &HashMap<u32, (Link, u32)>,
) -> Result<Vec<Link>> {
    let destinations: HashSet<u32> = wanted.values().map(|(_, d)| *d).collect();
    let named = Ranges::from_uids(destinations.iter().copied());
    let mut found: Vec<Link> = ctx.acct.store.links_by_new(dst.id, named.ranges()).await?;
    let linked: HashSet<u32> = found.iter().map(|l| l.new_uid).collect();
    let rest: Vec<u32> = destinations
        .iter()
        .copied()
        .filter(|d| !linked.contains(d))
        .collect();
    if !rest.is_empty() {
        let mut fetched = read_where_they_are(ctx, conn, to, &rest, "BODY.PEEK[]").await?;
        let on_new: HashSet<u32> = fetched.iter().filter_map(|f| f.uid).collect();
        found.extend(already_on_old(ctx, conn, dst, &mut fetched).await?);
        let gone: Vec<(&Link, u32)> = wanted
            .values()
            .filter(|(_, d)| rest.contains(d) && !on_new.contains(d))
            .map(|(l, d)| (l, *d))
            .collect();
        let taken: Vec<u32> = found.iter().map(|l| l.old_uid).collect();
        found.extend(orphans_by_key(ctx.acct, conn, dst, &gone, &taken).await?);
    }
    tracing::debug!(id = ctx.entry.id, already = found.len(), "replaying a copy");
    Ok(found)
}

/// OLD's unlinked messages in `dst` (none of `taken`) that have the keys of links `gone` (a
/// link to copy, with the key, and the NEW UID in `dst` to link to): each linked to that NEW
/// UID, unless it is linked already. For copies NEW has no longer or whose OLD UIDs OLD did not
/// tell: so the write that removes NEW's message removes OLD's too (a later entry, or the
/// next pass), and no pass copies OLD's to NEW again.
async fn orphans_by_key(
    acct: &Account,
    conn: &mut Conn,
    dst: &FolderPair,
    gone: &[(&Link, u32)],
    taken: &[u32],
) -> std::result::Result<Vec<Link>, SyncError> {
    let mut by_key: HashMap<&str, Vec<(&Link, u32)>> = HashMap::new();
    for (l, d) in gone {
        if let Some(key) = l.ident.as_deref() {
            by_key.entry(key).or_default().push((l, *d));
        }
    }
    if by_key.is_empty() {
        return Ok(Vec::new());
    }
    let links = acct.store.links(dst.id).await?;
    let linked_new: HashSet<u32> = links.iter().map(|l| l.new_uid).collect();
    for waiting in by_key.values_mut() {
        waiting.retain(|(_, d)| !linked_new.contains(d));
    }
    by_key.retain(|_, waiting| !waiting.is_empty());
    if by_key.is_empty() {
        return Ok(Vec::new());
    }
    let mut claimed: HashSet<u32> = links.iter().map(|l| l.old_uid).collect();
    claimed.extend(taken);
    conn.old.select(&dst.old_name, true).await?;
    let unlinked: Vec<u32> = conn
        .old
        .uid_search("ALL")
        .await?
        .into_iter()
        .filter(|u| !claimed.contains(u))
        .collect();
    if unlinked.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (old_uid, key, _) in keys(&mut conn.old, &unlinked, &acct.opts.identity, false).await? {
        if let Some((l, d)) = by_key.get_mut(key.as_str()).and_then(Vec::pop) {
            out.push(Link {
                old_uid,
                new_uid: d,
                ..l.clone()
            });
        }
    }
    Ok(out)
}

/// The writes journaled after this entry and not yet mirrored that take messages or folders
/// elsewhere (or copy messages), in order: NEW already has them, so every read of NEW follows
/// them to where this entry's folders and messages are now.
struct Later {
    writes: Vec<Write>,
    /// The last journal entry read.
    last: i64,
}

impl Later {
    async fn read(ctx: &Ctx<'_>) -> Result<Later> {
        let mut later = Later {
            writes: Vec::new(),
            last: ctx.entry.id,
        };
        later.more(ctx).await?;
        Ok(later)
    }

    /// Adds those journaled since the last read (entries get their ids in commit order);
    /// `false`: none. One read before and mirrored since stays: NEW still has the messages
    /// where it put them. Those this process committed lately are known without a read of
    /// the journal (no other process writes an unshared one).
    async fn more(&mut self, ctx: &Ctx<'_>) -> Result<bool> {
        let (acct, last) = (ctx.acct, self.last);
        let known = (!acct.store.shared())
            .then(|| acct.committer.moving_after(acct.id, last))
            .flatten();
        let entries = match known {
            Some(entries) => entries,
            None => acct
                .store
                .journal_pending_after(acct.id, last, &MOVING)
                .await?
                .into_iter()
                .map(|e| (e.id, e.payload))
                .collect(),
        };
        let Some(&(last, _)) = entries.last() else {
            return Ok(false);
        };
        self.last = last;
        self.writes.extend(
            entries
                .iter()
                .filter_map(|(_, payload)| Entry::from_json(payload).ok())
                .map(|e| e.write),
        );
        Ok(true)
    }
}

fn new_sep(ctx: &Ctx<'_>) -> char {
    ctx.acct.separators().map_or('/', |(_, new)| new)
}

/// Messages the client appended to NEW are appended to OLD (flags and INTERNALDATE kept,
/// bytes untouched) and linked. The one message the proxy relayed itself (`relayed`, see
/// [`super::relayed`]) is taken as NEW got it: later entries carry what the user did to it
/// since. Others are read from NEW where they are now (a later MOVE or RENAME took them
/// elsewhere; the link is to this entry's folder and UID, which the later entries name); a
/// message the user has deleted since is not on NEW and need not reach OLD. An entry replayed
/// with care is read from NEW, which says whether OLD has it already. Returns the links to
/// write (`None`: nothing to link).
async fn mirror_append(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    folder: &str,
    uids: &[u32],
    relayed: Option<Appended>,
) -> Result<Option<LinkChange>> {
    if uids.is_empty() {
        // NEW gave no APPENDUID: no message to read, and OLD lacks it until a reconcile.
        let reason = format!(
            "an APPEND to {folder} without APPENDUID from NEW could not be mirrored (journal entry {})",
            ctx.entry.id
        );
        ctx.acct.diverge(&reason).await;
        return Ok(None);
    }
    let Some(old) = ctx.old_name_or_create(conn, folder).await? else {
        return Err(MirrorError::Never(format!(
            "no OLD folder for {folder} (OLD's tree is not mapped)"
        )));
    };
    let pair = ctx.pair(&old, folder).await?;
    let from_relay = relayed.is_some();
    let mut fetched = match (relayed, uids) {
        (Some(message), [uid]) => vec![relayed_fetch(*uid, message)],
        _ => read_where_they_are(ctx, conn, folder, uids, "BODY.PEEK[]").await?,
    };
    let on_new = fetched.len();
    let found = if ctx.careful {
        let gone: Vec<u32> = {
            let read: HashSet<u32> = fetched.iter().filter_map(|f| f.uid).collect();
            uids.iter().copied().filter(|u| !read.contains(u)).collect()
        };
        let mut found = already_on_old(ctx, conn, &pair, &mut fetched).await?;
        found.extend(appended_gone(ctx, conn, &pair, &gone, &found).await?);
        found
    } else {
        Vec::new()
    };
    tracing::debug!(
        id = ctx.entry.id,
        appended = uids.len(),
        on_new,
        already_on_old = found.len(),
        from_relay,
        "mirroring an APPEND"
    );
    let keys = new_keys(&fetched, &ctx.acct.opts.identity)?;
    // The keys and the lowered watermark, in one commit.
    if let Some(from) = fetched.iter().filter_map(|f| f.uid).min() {
        let entry = ctx.entry.id;
        let keep = keys.iter().map(|(&new_uid, ident)| AppendKey {
            entry,
            new_uid,
            ident: ident.clone(),
        });
        let lower = Adoption {
            pair: pair.id,
            from,
        };
        let kept = ctx.acct.committer.keep_keys(keep.collect(), lower).await;
        kept.map_err(MirrorError::Keys)?;
    }
    let (mut links, unlinked) = append_to_old(&mut conn.old, &pair.old_name, fetched).await?;
    for link in &mut links {
        link.ident = keys.get(&link.new_uid).cloned();
    }
    links.extend(found);
    // OLD gave no APPENDUID (no UIDPLUS): its copies are found by their keys, so the user's
    // deletion of NEW's message reaches OLD's (those not found stay for the next pass to adopt
    // by the lowered watermark).
    links.extend(by_kept_keys(ctx.acct, conn, &pair, &unlinked, &keys, &links).await?);
    let added = links.iter().map(|l| l.old_uid);
    (ctx.acct.folder(folder)).note_own(pair.id, |own| own.added.extend(added));
    Ok(Some(LinkChange {
        pair: pair.id,
        added: links,
        removed: Vec::new(),
    }))
}

/// A message the proxy relayed to NEW as NEW UID `uid`, as if read from NEW just after.
fn relayed_fetch(uid: u32, message: Appended) -> Fetch {
    Fetch {
        uid: Some(uid),
        flags: Some(message.flags),
        internaldate: Some(message.date),
        body: Some(Body::Mem(message.bytes)),
        ..Fetch::default()
    }
}

/// For an APPEND that may have reached OLD already: takes out of `fetched` the NEW messages
/// that are linked already (the earlier attempt committed its links) and those OLD holds
/// unlinked (it was cut off before): an OLD message of the same size and identity key that no
/// link claims. Returns links for the latter.
async fn already_on_old(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    pair: &FolderPair,
    fetched: &mut Vec<Fetch>,
) -> Result<Vec<Link>> {
    let links = ctx.acct.store.links(pair.id).await?;
    let linked_new: HashSet<u32> = links.iter().map(|l| l.new_uid).collect();
    let mut claimed: HashSet<u32> = links.iter().map(|l| l.old_uid).collect();
    fetched.retain(|f| f.uid.is_some_and(|u| !linked_new.contains(&u)));
    if fetched.is_empty() {
        return Ok(Vec::new());
    }
    let opts = &ctx.acct.opts.identity;
    conn.old.select(&pair.old_name, true).await?;
    let mut found = Vec::new();
    let mut rest = Vec::new();
    for f in fetched.drain(..) {
        let (Some(new_uid), Some(body)) = (f.uid, f.body.as_ref()) else {
            rest.push(f);
            continue;
        };
        let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let candidates: Vec<u32> = conn
            .old
            .uid_search(&format!(
                "LARGER {} SMALLER {}",
                size.saturating_sub(1),
                size.saturating_add(1)
            ))
            .await?
            .into_iter()
            .filter(|u| !claimed.contains(u))
            .collect();
        if candidates.is_empty() {
            rest.push(f);
            continue;
        }
        let Some((_, key)) = new_key(&f, opts)? else {
            rest.push(f);
            continue;
        };
        let on_old = keys(&mut conn.old, &candidates, opts, false).await?;
        match on_old.into_iter().find(|(_, k, _)| *k == key) {
            Some((old_uid, _, old_flags)) => {
                claimed.insert(old_uid);
                found.push(Link {
                    old_uid,
                    new_uid,
                    old_flags: old_flags.to_canonical(),
                    // FLAGS was asked for (`read_messages`); without it the base is empty and
                    // the next flag merge takes NEW's flags as NEW's change: nothing is lost.
                    new_flags: FlagSet::from_iter(f.flags.unwrap_or_default()).to_canonical(),
                    ident: None,
                });
            }
            None => rest.push(f),
        }
    }
    *fetched = rest;
    Ok(found)
}

/// The size and identity key of NEW message `f` read with its body (`None` without one).
fn new_key(
    f: &Fetch,
    opts: &IdentityOptions,
) -> std::result::Result<Option<(u32, String)>, ImapError> {
    let Some(body) = f.body.as_ref() else {
        return Ok(None);
    };
    let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let head = (body.prefix(HEADER_PREFIX)).map_err(|source| ImapError::Spool {
        side: Side::New,
        source,
    })?;
    Ok(Some((size, message_key(header_of(&head), size, opts))))
}

/// The identity keys of NEW messages `fetched` (read with their bodies), by UID.
pub(super) fn new_keys(
    fetched: &[Fetch],
    opts: &IdentityOptions,
) -> std::result::Result<HashMap<u32, String>, ImapError> {
    let mut keys = HashMap::new();
    for f in fetched {
        if let (Some(uid), Some((_, key))) = (f.uid, new_key(f, opts)?) {
            keys.insert(uid, key);
        }
    }
    Ok(keys)
}

/// For an APPEND that may have reached OLD already: links NEW UIDs `gone` of the entry, whose
/// messages NEW no longer has (the user deleted them since), to OLD's unlinked copies the
/// earlier attempt made, found by the identity keys kept before OLD got them
/// ([`super::commit::Committer::keep_keys`]), so the write that removed NEW's message removes
/// OLD's too. `found`: links made already.
async fn appended_gone(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    pair: &FolderPair,
    gone: &[u32],
    found: &[Link],
) -> Result<Vec<Link>> {
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let keys = ctx.acct.store.append_keys(ctx.entry.id).await?;
    let keys: HashMap<u32, String> = keys.into_iter().collect();
    Ok(by_kept_keys(ctx.acct, conn, pair, gone, &keys, found).await?)
}

/// Links NEW UIDs `uids` (of the entry's folder `pair`) to OLD's unlinked messages there with
/// the identity keys `keys` kept for them ([`orphans_by_key`]), keeping no base flags.
pub(super) async fn by_kept_keys(
    acct: &Account,
    conn: &mut Conn,
    pair: &FolderPair,
    uids: &[u32],
    keys: &HashMap<u32, String>,
    found: &[Link],
) -> std::result::Result<Vec<Link>, SyncError> {
    let kept: Vec<(Link, u32)> = uids
        .iter()
        .filter_map(|&new_uid| {
            let link = Link {
                old_uid: 0,
                new_uid,
                old_flags: NO_BASE.into(),
                new_flags: NO_BASE.into(),
                ident: Some(keys.get(&new_uid)?.clone()),
            };
            Some((link, new_uid))
        })
        .collect();
    let kept: Vec<(&Link, u32)> = kept.iter().map(|(l, d)| (l, *d)).collect();
    let taken: Vec<u32> = found.iter().map(|l| l.old_uid).collect();
    orphans_by_key(acct, conn, pair, &kept, &taken).await
}

/// How much of a message is read to find its header block (for its identity key).
const HEADER_PREFIX: usize = 256 * 1024;
/// Reads of NEW a mirror entry makes while later writes keep moving its messages.
const READ_AGAIN: usize = 5;

/// `UID FLAGS INTERNALDATE` and `items` of NEW messages `uids` of `folder` as of this entry,
/// read where they are now (see [`follow`]), each reported under its UID in `folder`. Each
/// folder is read once the user's changes in flight there are journaled (`read_new`), and a
/// write journaled meanwhile that took them elsewhere (a MOVE between working out where the
/// messages are and reading them) means reading again there, at most [`READ_AGAIN`] times.
async fn read_where_they_are(
    ctx: &Ctx<'_>,
    conn: &mut Conn,
    folder: &str,
    uids: &[u32],
    items: &str,
) -> Result<Vec<Fetch>> {
    // A later COPY or MOVE of these messages out of `folder` reads NEW's copies (which counts
    // for its destination in turn), and a later RENAME makes every folder unsure (see `alone`).
    let _reading = ctx.acct.alone.reading(folder);
    let sep = new_sep(ctx);
    let mut later = Later::read(ctx).await?;
    let mut placed = follow(&later.writes, folder, uids, sep);
    for _ in 0..READ_AGAIN {
        let mut places: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
        for (uid, place) in &placed {
            if let Some((now, now_uid)) = place {
                places
                    .entry(now.clone())
                    .or_default()
                    .push((*now_uid, *uid));
            }
        }
        let mut fetched = Vec::new();
        for (now, pairs) in places {
            let f = ctx.acct.folder(&now);
            let _reading = f.read_new().await;
            let back: HashMap<u32, u32> = pairs.iter().copied().collect();
            let now_uids: Vec<u32> = pairs.iter().map(|(n, _)| *n).collect();
            for mut m in read_messages(&mut conn.new, &now, &now_uids, items).await? {
                m.uid = m.uid.and_then(|u| back.get(&u).copied());
                fetched.push(m);
            }
        }
        // Writes journaled meanwhile matter only if they took these messages elsewhere.
        if !later.more(ctx).await? {
            return Ok(fetched);
        }
        let now = follow(&later.writes, folder, uids, sep);
        if now == placed {
            return Ok(fetched);
        }
        placed = now;
    }
    Err(MirrorError::Refused(format!(
        "the messages of {folder} moved {READ_AGAIN} times while being read from NEW"
    )))
}

/// `UID FLAGS INTERNALDATE` and `items` (`BODY.PEEK[]`: bodies, read without touching
/// `\Seen`) of messages `uids` of `folder` on NEW.
pub(super) async fn read_messages(
    new: &mut Client,
    folder: &str,
    uids: &[u32],
    items: &str,
) -> std::result::Result<Vec<Fetch>, ImapError> {
    let mut fetched = Vec::new();
    let items = format!("UID FLAGS INTERNALDATE {items}");
    new.examine_and_fetch(folder, uids, items.trim_end(), |f| fetched.push(f))
        .await?;
    Ok(fetched)
}

/// Appends NEW's messages to OLD's `folder`, bytes, INTERNALDATE and the flags OLD can take
/// kept. Returns the links OLD's APPENDUID gave and the NEW UIDs left unlinked (an OLD without
/// UIDPLUS: their copies are found by identity key).
pub(super) async fn append_to_old(
    old: &mut Client,
    folder: &str,
    fetched: Vec<Fetch>,
) -> std::result::Result<(Vec<Link>, Vec<u32>), ImapError> {
    let mut links = Vec::new();
    let mut unlinked = Vec::new();
    // An APPENDUID is taken only from a server that said it gives them (as the engine does).
    let uidplus = old.has("UIDPLUS");
    for f in fetched {
        let (Some(new_uid), Some(body)) = (f.uid, f.body.as_ref()) else {
            continue;
        };
        let flags: Vec<String> = FlagSet::from_iter(f.flags.unwrap_or_default())
            .iter()
            .filter(|f| syntax_check(f).is_ok())
            .map(String::from)
            .collect();
        let msg = AppendMsg {
            flags: &flags,
            internaldate: f.internaldate.as_deref(),
            body,
        };
        let tag = old.send_append(folder, &[msg]).await?;
        let done = old.wait(&tag, |_| {}).await?.ok(Side::Old, "APPEND")?;
        match done.code {
            Some(Code::AppendUid { uids, .. }) if uidplus && uids.len() == 1 => {
                let canonical = FlagSet::from_iter(&flags).to_canonical();
                links.push(Link {
                    old_uid: uids[0],
                    new_uid,
                    old_flags: canonical.clone(),
                    new_flags: canonical,
                    ident: None,
                });
            }
            _ => unlinked.push(new_uid),
        }
    }
    Ok((links, unlinked))
}

/// OLD has `to` and no longer `from`: the RENAME was done.
async fn renamed_already(conn: &mut Conn, from: &str, to: &str) -> Result<bool> {
    for (name, wanted) in [(from, false), (to, true)] {
        let exists = match conn.old.select(name, true).await {
            Ok(_) => true,
            Err(ImapError::Refused { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if exists != wanted {
            return Ok(false);
        }
    }
    Ok(true)
}

/// RENAME on OLD of the folder's OLD name; the pairs below it follow on both sides.
async fn mirror_rename(ctx: &Ctx<'_>, conn: &mut Conn, from: &str, to: &str) -> Result<()> {
    let Some(old_from) = ctx.old_name(from)? else {
        return Ok(()); // not on OLD
    };
    if old_from.eq_ignore_ascii_case("INBOX") {
        return Err(MirrorError::Never(
            "RENAME of INBOX is not mirrored to OLD".into(),
        ));
    }
    let Some(old_to) = ctx.old_or_reverse_name(to)? else {
        return Ok(());
    };
    if let Err(e) = conn.old.rename(&old_from, &old_to).await {
        // An earlier attempt renamed it and was cut off before the journal recorded that.
        let done_before = ctx.careful
            && matches!(e, ImapError::Refused { .. })
            && renamed_already(conn, &old_from, &old_to).await?;
        if !done_before {
            return Err(e.into());
        }
    }
    let (old_sep, new_sep) = ctx.acct.separators().unwrap_or(('/', '/'));
    for p in ctx.acct.store.folder_pairs(ctx.acct.id).await? {
        let (Some(old_name), Some(new_name)) = (
            renamed(&p.old_name, &old_from, &old_to, old_sep),
            renamed(&p.new_name, from, to, new_sep),
        ) else {
            continue;
        };
        ctx.acct
            .store
            .rename_pair(p.id, &old_name, &new_name)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests;
