//! `imapferry reconcile USER`, and the proxy's own recovery after a write the journal may lack:
//! brings OLD back in line with NEW for one account, NEW winning. The journal's pending and parked
//! entries are applied again; then, with every folder of the account held: OLD takes NEW's flags
//! for linked messages; messages without a link on either side are matched by identity key
//! across all folders, so a move, copy or append the journal lost becomes a move or an append on
//! OLD, never a second copy; OLD loses the linked messages NEW no longer has; linked messages
//! OLD lost are copied back from NEW; folders only NEW has are created on OLD and folders NEW
//! no longer has are deleted there. The account then leaves `diverged`. OLD's messages without a
//! link that match nothing on NEW are left for the next pass (mail still arriving on OLD).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tracing::{debug, info, warn};

use super::account::Account;
use super::backfill::{Folder, MIRROR_WAIT};
use super::mirror;
use super::pool::Conn;
use crate::imap::{Client, ImapError};
use crate::store::{AccountState, FolderPair, Link, LinkFlags, PairId, StoreError};
use crate::sync::adopt::keys;
use crate::sync::flags::{FlagSet, FlagStores, PermanentFlags, filter_for_new};
use crate::sync::{self, SyncError, TreeView};

/// How often the account's pending journal entries are drained before its reconcile gives up.
const SETTLE_TRIES: u32 = 5;
/// Longest a reconcile waits for the writes in flight when it ends (see `reconcile_settled`).
const ANSWERED_WITHIN: Duration = Duration::from_secs(10);

/// What a reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// Pending and parked journal entries now on OLD.
    pub entries_applied: u64,
    /// Parked entries that still do not apply (their effect is reconciled from NEW instead).
    pub entries_replaced: Vec<String>,
    /// OLD messages whose flags became NEW's.
    pub flags_fixed: u64,
    /// OLD messages removed because NEW no longer has them.
    pub removed_on_old: u64,
    /// Linked messages OLD had lost, and messages only NEW had, copied to OLD.
    pub copied_to_old: u64,
    /// OLD messages without a link found on NEW by identity key and linked, in their folder.
    pub relinked: u64,
    /// OLD messages moved to the folder NEW has them in.
    pub moved_on_old: u64,
    /// Folders only NEW had, created on OLD.
    pub folders_created_on_old: u64,
    /// OLD folders deleted because their NEW folder is gone.
    pub folders_deleted_on_old: u64,
}

/// One message no link accounts for, with the key it is recognised by.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Loose {
    pair: PairId,
    uid: u32,
    key: String,
}

/// What becomes of NEW's loose messages ([`match_loose`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct Matched {
    /// OLD's copy is in the pair's own folder: (pair, OLD UID, NEW UID).
    linked: Vec<(PairId, u32, u32)>,
    /// OLD's copy is in another folder and moves: (from pair, OLD UID, to pair, NEW UID).
    moved: Vec<(PairId, u32, PairId, u32)>,
    /// OLD has no copy: NEW's is appended: (pair, NEW UID).
    copied: Vec<(PairId, u32)>,
}

/// Pairs NEW's loose messages with OLD's by key, one to one: a copy in the same folder first,
/// then one elsewhere (in the order given), else none.
fn match_loose(new: &[Loose], old: &[Loose]) -> Matched {
    let mut free: HashMap<&str, Vec<&Loose>> = HashMap::new();
    for o in old {
        free.entry(o.key.as_str()).or_default().push(o);
    }
    let mut out = Matched::default();
    let mut take = |n: &Loose, same: bool| -> Option<&Loose> {
        let candidates = free.get_mut(n.key.as_str())?;
        let i = candidates.iter().position(|o| !same || o.pair == n.pair)?;
        Some(candidates.remove(i))
    };
    let mut rest = Vec::new();
    for n in new {
        match take(n, true) {
            Some(o) => out.linked.push((n.pair, o.uid, n.uid)),
            None => rest.push(n),
        }
    }
    for n in rest {
        match take(n, false) {
            Some(o) => out.moved.push((o.pair, o.uid, n.pair, n.uid)),
            None => out.copied.push((n.pair, n.uid)),
        }
    }
    out
}

/// One folder pair as the reconcile found it.
struct View {
    pair: FolderPair,
    /// The NEW folder exists.
    on_new: bool,
    new_flags: BTreeMap<u32, FlagSet>,
    old_flags: BTreeMap<u32, FlagSet>,
    perm: PermanentFlags,
    links: Vec<Link>,
    tombstones: Vec<u32>,
}

impl View {
    /// Linked OLD messages NEW no longer has (deleted, or moved where no link follows them).
    fn gone_from_new(&self) -> Vec<u32> {
        self.links
            .iter()
            .filter(|l| !self.new_flags.contains_key(&l.new_uid))
            .map(|l| l.old_uid)
            .collect()
    }

    /// NEW messages without a link.
    fn loose_new(&self) -> Vec<u32> {
        let linked: BTreeSet<u32> = self.links.iter().map(|l| l.new_uid).collect();
        self.new_flags
            .keys()
            .copied()
            .filter(|u| !linked.contains(u))
            .collect()
    }

    /// OLD messages NEW has no linked copy of, tombstoned ones aside.
    fn loose_old(&self) -> Vec<u32> {
        let tombstoned: BTreeSet<u32> = self.tombstones.iter().copied().collect();
        let kept: BTreeSet<u32> = self
            .links
            .iter()
            .filter(|l| self.new_flags.contains_key(&l.new_uid))
            .map(|l| l.old_uid)
            .collect();
        self.old_flags
            .keys()
            .copied()
            .filter(|u| !kept.contains(u) && !tombstoned.contains(u))
            .collect()
    }
}

impl Account {
    /// Brings OLD in line with NEW (see the module); the account is `partial` afterwards (the
    /// next pass or backfill finds out whether it is `synced`).
    pub async fn reconcile(&self) -> Result<Reconciled, SyncError> {
        if self.mirror_paused() {
            return Err(SyncError::Options(
                "the mirror to OLD is paused ([migration] mirror_paused): nothing is written to \
                 OLD until it is resumed"
                    .into(),
            ));
        }
        if self.is_retired().await {
            return Err(SyncError::Options(
                "the account is retired: OLD is no longer its mailbox".into(),
            ));
        }
        let mut done = Reconciled::default();
        let _reading = self.alone.passing();
        debug!("reconcile: reading both trees");
        // OLD's and NEW's trees as they are, read only: mapping OLD's tree onto NEW (as a
        // login does) would bring back on NEW the folders the user deleted there. The pooled
        // connection and its permit go back at once: the folders are taken before another.
        let (mut conn, permit) = self.pool.get().await?;
        let tree = sync::read_tree(&mut conn.old, &mut conn.new, &self.opts).await?;
        {
            let mut n = self.names()?;
            if !n.prepared {
                let pairs = tree.pairs.clone();
                n.set_tree(
                    pairs,
                    tree.old_side.clone(),
                    tree.new_side.clone(),
                    std::time::Instant::now(),
                );
            }
        }
        self.pool.put(conn);
        drop(permit);
        debug!("reconcile: draining the journal");
        self.count_pending().await;
        self.drain_journal().await;
        done.entries_applied += self.reapply_parked(&mut done).await?;
        self.reconcile_settled(&tree, &mut done).await?;
        self.store
            .clear_diverged(self.id, AccountState::Partial)
            .await?;
        info!(?done, "OLD reconciled with NEW");
        Ok(done)
    }

    /// Applies the parked entries again, in order; those OLD still refuses are counted and
    /// left to the per-folder reconcile. Every parked entry is done afterwards.
    async fn reapply_parked(&self, done: &mut Reconciled) -> Result<u64, SyncError> {
        let parked = self.store.journal_parked(self.id).await?;
        if parked.is_empty() {
            return Ok(0);
        }
        let (mut conn, _permit) = self.pool.get().await?;
        let mut applied = 0;
        let pairs = mirror::Pairs::default();
        for entry in parked {
            let replay = mirror::Replay::from(entry);
            let entry = &replay.row;
            let links = match mirror::apply(self, &mut conn, &replay, true, &pairs).await {
                Ok(links) => {
                    applied += 1;
                    links
                }
                Err(e) => {
                    warn!(id = entry.id, kind = %entry.kind, "still not applicable: {e}");
                    done.entries_replaced
                        .push(format!("{} ({}): {e}", entry.id, entry.kind));
                    Vec::new()
                }
            };
            let missing = self.store.journal_mirrored(&[entry.id], &links).await?;
            if !missing.is_empty() {
                let why = format!("no journal entries {missing:?}");
                return Err(StoreError::Corrupt(why).into());
            }
        }
        self.pool.put(conn);
        Ok(applied)
    }

    /// [`Self::reconcile_folders`] once the user's writes are on OLD: it holds every folder of
    /// the account (no mirror, no pass) and the user's changes to them (their MOVE, EXPUNGE,
    /// RENAME wait) while it reads NEW, so a write NEW has and OLD not yet is never half
    /// reconciled. Writes that keep arriving are drained first, a few times; then it gives up
    /// for now. The folders are taken in name order, each before a pooled connection, as a
    /// backfill takes its one (the mirror, which holds a connection while it waits for a
    /// folder, then always finds one free).
    async fn reconcile_settled(
        &self,
        tree: &TreeView,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        for _ in 0..SETTLE_TRIES {
            let mut names: BTreeSet<String> = tree.new_existing.clone();
            names.extend(
                self.store
                    .folder_pairs(self.id)
                    .await?
                    .into_iter()
                    .map(|p| p.new_name),
            );
            let folders: Vec<Arc<Folder>> = names.iter().map(|n| self.folder(n)).collect();
            debug!(
                folders = folders.len(),
                "reconcile: waiting for the folders"
            );
            let mut owned = Vec::with_capacity(folders.len());
            for (f, name) in folders.iter().zip(&names) {
                owned.push(self.own(f, name, MIRROR_WAIT).await?);
            }
            let mut reading = Vec::with_capacity(folders.len());
            for f in &folders {
                reading.push(f.read_new().await);
            }
            if self.store.journal_pending_count(self.id).await? == 0 {
                // Writes journaled from now on may be done on OLD by the reconcile, from what
                // NEW shows it: the mirror replays them with care.
                self.careful_through.store(i64::MAX, Ordering::SeqCst);
                let (mut conn, _permit) = self.pool.get().await?;
                let result = self.reconcile_folders(&mut conn, tree, done).await;
                if result.is_ok() {
                    self.pool.put(conn);
                }
                // Every write NEW answered while the folders were read is journaled by now
                // (else the care goes on until the next reconcile).
                if self.writes_answered(ANSWERED_WITHIN).await {
                    let last = self.last_journaled.load(Ordering::SeqCst);
                    self.careful_through.store(last, Ordering::SeqCst);
                }
                return result;
            }
            drop((reading, owned));
            self.drain_journal().await;
        }
        Err(SyncError::Options(
            "journal entries keep waiting for OLD: not reconciled now".into(),
        ))
    }

    async fn reconcile_folders(
        &self,
        conn: &mut Conn,
        tree: &TreeView,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        let mut pairs = self.store.folder_pairs(self.id).await?;
        self.pair_new_folders(conn, tree, &mut pairs, done).await?;
        let mut views = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let on_new = tree.new_existing.contains(&pair.new_name)
                || pair.new_name.eq_ignore_ascii_case("INBOX");
            if on_new && !tree.old_existing.contains(&pair.old_name) {
                conn.old.create(&pair.old_name).await?;
                done.folders_created_on_old += 1;
            }
            views.push(self.view(conn, pair, on_new, tree).await?);
        }
        for view in &views {
            self.linked_flags(conn, view, done).await?;
            self.copy_back(conn, view, done).await?;
        }
        let matched = self.match_views(conn, &views).await?;
        let claimed = self.apply_matches(conn, &views, matched, done).await?;
        for view in &views {
            self.remove_gone(conn, view, &claimed, done).await?;
        }
        for view in views.iter().filter(|v| !v.on_new) {
            if tree.old_existing.contains(&view.pair.old_name) {
                conn.old.delete(&view.pair.old_name).await?;
                done.folders_deleted_on_old += 1;
            }
            self.store.delete_pair(view.pair.id).await?;
        }
        Ok(())
    }

    /// Folders only NEW has (a CREATE or RENAME the journal lost, or NEW's own special-use
    /// folders) get an OLD folder and a pair, so what they hold can reach OLD.
    async fn pair_new_folders(
        &self,
        conn: &mut Conn,
        tree: &TreeView,
        pairs: &mut Vec<FolderPair>,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        let paired: BTreeSet<String> = pairs.iter().map(|p| p.new_name.clone()).collect();
        for new in tree.new_existing.difference(&paired) {
            let Some(old) = self.old_name(new)?.or(self.reverse_name(new)?) else {
                continue;
            };
            if !tree.old_existing.contains(&old) {
                conn.old.create(&old).await?;
                done.folders_created_on_old += 1;
            }
            self.add_name(new, &old)?;
            pairs.push(self.store.folder_pair(self.id, &old, new).await?);
        }
        Ok(())
    }

    async fn view(
        &self,
        conn: &mut Conn,
        pair: FolderPair,
        on_new: bool,
        tree: &TreeView,
    ) -> Result<View, SyncError> {
        let new_flags = if on_new {
            read_flags(&mut conn.new, &pair.new_name, true).await?.1
        } else {
            BTreeMap::new()
        };
        let on_old = on_new || tree.old_existing.contains(&pair.old_name);
        let (perm, old_flags) = if on_old {
            read_flags(&mut conn.old, &pair.old_name, false).await?
        } else {
            Default::default()
        };
        Ok(View {
            links: self.store.links(pair.id).await?,
            tombstones: self.store.tombstones(pair.id).await?,
            pair,
            on_new,
            new_flags,
            old_flags,
            perm,
        })
    }

    /// OLD takes NEW's flags for messages linked on both sides.
    async fn linked_flags(
        &self,
        conn: &mut Conn,
        view: &View,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        let mut stores = FlagStores::default();
        let mut updates = Vec::new();
        for link in &view.links {
            if let (Some(n), Some(o)) = (
                view.new_flags.get(&link.new_uid),
                view.old_flags.get(&link.old_uid),
            ) {
                let (target, _) = filter_for_new(n, &view.perm);
                stores.push(link.old_uid, o, &target);
                updates.push(LinkFlags {
                    old_uid: link.old_uid,
                    old_flags: target.to_canonical(),
                    new_flags: n.to_canonical(),
                });
            }
        }
        if stores.is_empty() {
            return Ok(());
        }
        done.flags_fixed += stores.messages() as u64;
        conn.old.select(&view.pair.old_name, false).await?;
        conn.old.store_flags(stores.groups()).await?;
        self.store.update_link_flags(view.pair.id, &updates).await?;
        Ok(())
    }

    /// Linked on NEW, lost on OLD: NEW's copy goes back and is linked again.
    async fn copy_back(
        &self,
        conn: &mut Conn,
        view: &View,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        let lost: Vec<&Link> = view
            .links
            .iter()
            .filter(|l| {
                view.new_flags.contains_key(&l.new_uid) && !view.old_flags.contains_key(&l.old_uid)
            })
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let new_uids: Vec<u32> = lost.iter().map(|l| l.new_uid).collect();
        // Cut off after this, NEW's messages are unlinked and adoptable: a pass neither
        // deletes them (as lost on OLD) nor copies OLD's new copies back.
        let old_uids: Vec<u32> = lost.iter().map(|l| l.old_uid).collect();
        self.store.remove_links(view.pair.id, &old_uids).await?;
        self.lower_adoption(&view.pair, &new_uids).await?;
        let (copied, appended) = append_from_new(self, conn, &view.pair, &new_uids).await?;
        done.copied_to_old += appended;
        self.store.add_links(view.pair.id, &copied).await?;
        Ok(())
    }

    /// Keys of the loose messages of both sides, and what becomes of NEW's.
    async fn match_views(&self, conn: &mut Conn, views: &[View]) -> Result<Matched, SyncError> {
        let opts = &self.opts.identity;
        let (mut new, mut old) = (Vec::new(), Vec::new());
        for view in views {
            let loose = view.loose_new();
            if !loose.is_empty() {
                conn.new.select(&view.pair.new_name, true).await?;
                for (uid, key, _) in keys(&mut conn.new, &loose, opts, false).await? {
                    new.push(Loose {
                        pair: view.pair.id,
                        uid,
                        key,
                    });
                }
            }
        }
        if new.is_empty() {
            return Ok(Matched::default());
        }
        for view in views {
            let loose = view.loose_old();
            if !loose.is_empty() {
                conn.old.select(&view.pair.old_name, true).await?;
                for (uid, key, _) in keys(&mut conn.old, &loose, opts, false).await? {
                    old.push(Loose {
                        pair: view.pair.id,
                        uid,
                        key,
                    });
                }
            }
        }
        let matched = match_loose(&new, &old);
        debug!(
            loose_new = new.len(),
            loose_old = old.len(),
            linked = matched.linked.len(),
            moved = matched.moved.len(),
            copied = matched.copied.len(),
            "reconcile: matched by identity key"
        );
        Ok(matched)
    }

    /// Links, moves and appends on OLD what [`match_loose`] found; OLD messages then taken by a
    /// NEW message (pair, OLD UID) are returned, so they are not removed as gone.
    async fn apply_matches(
        &self,
        conn: &mut Conn,
        views: &[View],
        matched: Matched,
        done: &mut Reconciled,
    ) -> Result<BTreeSet<(PairId, u32)>, SyncError> {
        let view_of: HashMap<PairId, &View> = views.iter().map(|v| (v.pair.id, v)).collect();
        let mut claimed = BTreeSet::new();
        let mut linked: BTreeMap<PairId, Vec<(u32, u32)>> = BTreeMap::new();
        for (pair, old_uid, new_uid) in matched.linked {
            claimed.insert((pair, old_uid));
            linked.entry(pair).or_default().push((old_uid, new_uid));
        }
        let mut moves: BTreeMap<(PairId, PairId), Vec<(u32, u32)>> = BTreeMap::new();
        for (from, old_uid, to, new_uid) in matched.moved {
            claimed.insert((from, old_uid));
            moves
                .entry((from, to))
                .or_default()
                .push((old_uid, new_uid));
        }
        for ((from, to), uids) in moves {
            let (Some(src), Some(dst)) = (view_of.get(&from), view_of.get(&to)) else {
                continue;
            };
            let new_of: HashMap<u32, u32> = uids.iter().copied().collect();
            let old_uids: Vec<u32> = uids.iter().map(|(o, _)| *o).collect();
            let new_uids: Vec<u32> = uids.iter().map(|(_, n)| *n).collect();
            self.lower_adoption(&dst.pair, &new_uids).await?;
            conn.old.select(&src.pair.old_name, false).await?;
            let moved = conn.old.uid_move(&old_uids, &dst.pair.old_name).await?;
            done.moved_on_old += old_uids.len() as u64;
            self.store.remove_links(from, &old_uids).await?;
            for (old_src, old_dst) in moved {
                if let Some(&new_uid) = new_of.get(&old_src) {
                    linked.entry(to).or_default().push((old_dst, new_uid));
                }
            }
        }
        for (pair, uids) in linked {
            let Some(view) = view_of.get(&pair) else {
                continue;
            };
            done.relinked += uids.len() as u64;
            self.link_as_new(conn, view, &uids).await?;
        }
        let mut copies: BTreeMap<PairId, Vec<u32>> = BTreeMap::new();
        for (pair, new_uid) in matched.copied {
            copies.entry(pair).or_default().push(new_uid);
        }
        for (pair, new_uids) in copies {
            let Some(view) = view_of.get(&pair) else {
                continue;
            };
            self.lower_adoption(&view.pair, &new_uids).await?;
            let (copied, appended) = append_from_new(self, conn, &view.pair, &new_uids).await?;
            done.copied_to_old += appended;
            self.store.add_links(pair, &copied).await?;
        }
        Ok(claimed)
    }

    /// Before OLD gets copies of NEW's `new_uids`: should they stay unlinked (the reconcile
    /// cut off before it links them, or an OLD without UIDPLUS whose copies no key finds), the
    /// next pass adopts them by identity key rather than copying them to NEW a second time.
    /// (The store compares with the pair's current watermark and only ever lowers it.)
    async fn lower_adoption(&self, pair: &FolderPair, new_uids: &[u32]) -> Result<(), SyncError> {
        if let Some(&from) = new_uids.iter().min() {
            self.store.lower_adoption(pair.id, from).await?;
        }
        Ok(())
    }

    /// Links OLD messages (`(OLD UID, NEW UID)`, in the view's OLD folder) to NEW's, giving them
    /// NEW's flags first (NEW wins), so the base of both sides is the same.
    async fn link_as_new(
        &self,
        conn: &mut Conn,
        view: &View,
        uids: &[(u32, u32)],
    ) -> Result<(), SyncError> {
        let old_uids: Vec<u32> = uids.iter().map(|(o, _)| *o).collect();
        conn.old.select(&view.pair.old_name, false).await?;
        let mut now = BTreeMap::new();
        conn.old
            .uid_fetch(&old_uids, "UID FLAGS", "", |f| {
                if let (Some(uid), Some(flags)) = (f.uid, f.flags) {
                    now.insert(uid, FlagSet::from_iter(flags));
                }
            })
            .await?;
        let mut stores = FlagStores::default();
        let mut links = Vec::with_capacity(uids.len());
        for &(old_uid, new_uid) in uids {
            let Some(n) = view.new_flags.get(&new_uid) else {
                continue;
            };
            let (target, _) = filter_for_new(n, &view.perm);
            if let Some(o) = now.get(&old_uid) {
                stores.push(old_uid, o, &target);
            }
            links.push(Link {
                old_uid,
                new_uid,
                old_flags: target.to_canonical(),
                new_flags: n.to_canonical(),
                ident: None,
            });
        }
        conn.old.store_flags(stores.groups()).await?;
        // A link of this OLD message to a NEW message that is gone is replaced.
        self.store.remove_links(view.pair.id, &old_uids).await?;
        self.store.add_links(view.pair.id, &links).await?;
        Ok(())
    }

    /// OLD loses what NEW no longer has: linked messages gone from NEW that no loose NEW
    /// message took, and tombstoned ones; their links and tombstones go too.
    async fn remove_gone(
        &self,
        conn: &mut Conn,
        view: &View,
        claimed: &BTreeSet<(PairId, u32)>,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        let gone = view.gone_from_new();
        let mut doomed: Vec<u32> = gone
            .iter()
            .chain(&view.tombstones)
            .copied()
            .filter(|u| view.old_flags.contains_key(u) && !claimed.contains(&(view.pair.id, *u)))
            .collect();
        doomed.sort_unstable();
        doomed.dedup();
        if !doomed.is_empty() && view.on_new {
            conn.old.select(&view.pair.old_name, false).await?;
            conn.old.uid_expunge(&doomed).await?;
            done.removed_on_old += doomed.len() as u64;
        }
        let unclaimed: Vec<u32> = gone
            .into_iter()
            .filter(|u| !claimed.contains(&(view.pair.id, *u)))
            .collect();
        self.store.remove_links(view.pair.id, &unclaimed).await?;
        self.store
            .remove_tombstones(view.pair.id, &view.tombstones)
            .await?;
        Ok(())
    }
}

/// Every message's flags in `folder` (EXAMINE for NEW, SELECT for OLD), with the folder's
/// PERMANENTFLAGS.
async fn read_flags(
    client: &mut Client,
    folder: &str,
    readonly: bool,
) -> Result<(PermanentFlags, BTreeMap<u32, FlagSet>), ImapError> {
    let info = client.select(folder, readonly).await?;
    let perm = info
        .permanentflags
        .as_ref()
        .map(|p| PermanentFlags::parse(&p.join(" ")))
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    if info.exists > 0 {
        let tag = client.send_uid_fetch("1:*", "UID FLAGS", "").await?;
        client
            .wait_fetch(&tag, |f| {
                if let (Some(uid), Some(flags)) = (f.uid, f.flags) {
                    out.insert(uid, FlagSet::from_iter(flags));
                }
            })
            .await?;
    }
    Ok((perm, out))
}

/// Appends NEW's messages `new_uids` to OLD's folder; returns the new links and how many were
/// appended. An OLD without UIDPLUS gives no APPENDUID: its copies are found by identity key
/// (so a deletion on NEW reaches them), those not found are linked by the next pass.
async fn append_from_new(
    acct: &Account,
    conn: &mut Conn,
    pair: &FolderPair,
    new_uids: &[u32],
) -> Result<(Vec<Link>, u64), SyncError> {
    let fetched =
        mirror::read_messages(&mut conn.new, &pair.new_name, new_uids, "BODY.PEEK[]").await?;
    let keys = mirror::new_keys(&fetched, &acct.opts.identity)?;
    let (mut links, unlinked) =
        mirror::append_to_old(&mut conn.old, &pair.old_name, fetched).await?;
    let appended = (links.len() + unlinked.len()) as u64;
    links.extend(mirror::by_kept_keys(acct, conn, pair, &unlinked, &keys, &links).await?);
    Ok((links, appended))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loose(pair: PairId, uid: u32, key: &str) -> Loose {
        Loose {
            pair,
            uid,
            key: key.into(),
        }
    }

    #[test]
    fn loose_messages_match_in_their_folder_first_then_anywhere() {
        let new = [
            loose(1, 10, "a"), // OLD has it in folder 1 and in folder 2: folder 1's is taken
            loose(2, 20, "b"), // OLD has it only in folder 1: moved there
            loose(2, 21, "a"), // the second "a" on NEW takes OLD's other "a", in its own folder
            loose(3, 30, "c"), // OLD has no "c": appended
            loose(3, 31, "b"), // OLD's one "b" is taken: appended
        ];
        let old = [
            loose(2, 5, "a"),
            loose(1, 7, "b"),
            loose(1, 8, "a"),
            loose(3, 9, "z"),
        ];
        let m = match_loose(&new, &old);
        assert_eq!(m.linked, [(1, 8, 10), (2, 5, 21)]);
        assert_eq!(m.moved, [(1, 7, 2, 20)]);
        assert_eq!(m.copied, [(3, 30), (3, 31)]);
    }

    #[test]
    fn nothing_loose_on_new_matches_nothing() {
        assert_eq!(match_loose(&[], &[loose(1, 1, "a")]), Matched::default());
    }

    fn view(links: &[(u32, u32)], on_new: &[u32], on_old: &[u32], tombstones: &[u32]) -> View {
        View {
            pair: FolderPair {
                id: 1,
                account: 1,
                old_name: "A".into(),
                new_name: "A".into(),
                old: None,
                new: None,
                adopt_from: 1,
                phase: crate::store::Phase::Synced,
            },
            on_new: true,
            new_flags: on_new.iter().map(|u| (*u, FlagSet::default())).collect(),
            old_flags: on_old.iter().map(|u| (*u, FlagSet::default())).collect(),
            perm: PermanentFlags::default(),
            links: links
                .iter()
                .map(|&(old_uid, new_uid)| Link {
                    old_uid,
                    new_uid,
                    old_flags: String::new(),
                    new_flags: String::new(),
                    ident: None,
                })
                .collect(),
            tombstones: tombstones.to_vec(),
        }
    }

    #[test]
    fn a_view_says_what_no_link_accounts_for() {
        // Links 1→11 (both there), 2→12 (gone from NEW), 3→13 (gone from OLD); NEW's 14 and
        // OLD's 4 have no link; OLD's 5 is tombstoned.
        let v = view(
            &[(1, 11), (2, 12), (3, 13)],
            &[11, 13, 14],
            &[1, 2, 4, 5],
            &[5],
        );
        assert_eq!(v.gone_from_new(), [2]);
        assert_eq!(v.loose_new(), [14]);
        assert_eq!(v.loose_old(), [2, 4]);
    }
}
