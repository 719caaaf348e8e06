//! `imapferry reconcile USER`: brings OLD back in line with NEW for one account's linked
//! messages after OLD diverged. The journal's pending and parked entries are applied again; then
//! for every recorded folder pair, NEW wins: OLD takes NEW's flags, loses the messages NEW no
//! longer has (deleted or moved away by the user), and gets back from NEW the linked messages it
//! lost (a folder or a move that never reached it: moved messages follow their links). Folders
//! deleted on NEW are deleted on OLD. The account then leaves `diverged`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tracing::{debug, info, warn};

use super::account::Account;
use super::mirror;
use super::pool::Conn;
use crate::imap::{Client, ImapError};
use crate::store::{AccountState, FolderPair, Link, LinkFlags};
use crate::sync::flags::{FlagSet, FlagStores, PermanentFlags, filter_for_new};
use crate::sync::{self, SyncError};

/// How often a folder's pending journal entries are drained before its reconcile gives up.
const SETTLE_TRIES: u32 = 5;

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
    /// Linked messages OLD had lost, copied back from NEW.
    pub copied_to_old: u64,
    /// OLD folders deleted because their NEW folder is gone.
    pub folders_deleted_on_old: u64,
}

impl Account {
    /// Brings OLD in line with NEW (see the module); the account is `partial` afterwards (the
    /// next pass or backfill finds out whether it is `synced`).
    pub async fn reconcile(&self) -> Result<Reconciled, SyncError> {
        if self.is_retired().await {
            return Err(SyncError::Options(
                "the account is retired: OLD is no longer its mailbox".into(),
            ));
        }
        let mut done = Reconciled::default();
        debug!("reconcile: reading both trees");
        let (mut conn, _permit) = self.pool.get().await?;
        // OLD's and NEW's trees as they are, read only: mapping OLD's tree onto NEW (as a
        // login does) would bring back on NEW the folders the user deleted there.
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
        debug!("reconcile: draining the journal");
        self.count_pending().await;
        self.drain_journal().await;
        done.entries_applied += self.reapply_parked(&mut done).await?;
        for pair in self.store.folder_pairs(self.id).await? {
            let new_exists = tree.new_existing.contains(&pair.new_name)
                || pair.new_name.eq_ignore_ascii_case("INBOX");
            if !new_exists {
                if tree.old_existing.contains(&pair.old_name) {
                    let (mut conn, _permit) = self.pool.get().await?;
                    conn.old.delete(&pair.old_name).await?;
                    self.pool.put(conn);
                    done.folders_deleted_on_old += 1;
                }
                self.store.delete_pair(pair.id).await?;
                continue;
            }
            let create = !tree.old_existing.contains(&pair.old_name);
            self.reconcile_settled(&pair, create, &mut done).await?;
        }
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
        for entry in parked {
            match mirror::apply(self, &mut conn, &entry, true).await {
                Ok(()) => applied += 1,
                Err(e) => {
                    warn!(id = entry.id, kind = %entry.kind, "still not applicable: {e}");
                    done.entries_replaced
                        .push(format!("{} ({}): {e}", entry.id, entry.kind));
                }
            }
            self.store.journal_done(entry.id).await?;
        }
        self.pool.put(conn);
        Ok(applied)
    }

    /// [`Self::reconcile_pair`] once the user's writes to the folder are on OLD: it holds the
    /// folder (no mirror, no pass) and the user's changes to it (their MOVE, EXPUNGE, RENAME wait)
    /// while it reads NEW, so a write NEW has and OLD not yet is never half reconciled. Writes
    /// that keep arriving are drained first, a few times; then it gives up for now.
    /// `create`: the OLD folder is missing and is created first. The folder is taken before a
    /// pooled connection, as a backfill does (the mirror, which holds a connection while it
    /// waits for a folder, then always finds one free).
    async fn reconcile_settled(
        &self,
        pair: &FolderPair,
        create: bool,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        let f = self.folder(&pair.new_name);
        debug!(folder = %pair.new_name, "reconcile: waiting for the folder");
        for _ in 0..SETTLE_TRIES {
            {
                let _owner = f.lock.lock().await;
                let _reading = f.read_new().await;
                if !self.journal_names(&pair.new_name).await? {
                    let (mut conn, _permit) = self.pool.get().await?;
                    if create {
                        conn.old.create(&pair.old_name).await?;
                    }
                    self.reconcile_pair(&mut conn, pair, done).await?;
                    self.pool.put(conn);
                    return Ok(());
                }
            }
            self.drain_journal().await;
        }
        Err(SyncError::Options(format!(
            "journal entries for {} keep waiting for OLD: not reconciled now",
            pair.new_name
        )))
    }

    async fn reconcile_pair(
        &self,
        conn: &mut Conn,
        pair: &FolderPair,
        done: &mut Reconciled,
    ) -> Result<(), SyncError> {
        let links = self.store.links(pair.id).await?;
        let tombstones = self.store.tombstones(pair.id).await?;
        let new_flags = read_flags(&mut conn.new, &pair.new_name, true).await?.1;
        let (perm, old_flags) = read_flags(&mut conn.old, &pair.old_name, false).await?;
        let mut stores = FlagStores::default();
        let mut updates = Vec::new();
        let (mut gone_new, mut gone_old) = (Vec::new(), Vec::new());
        for link in &links {
            match (new_flags.get(&link.new_uid), old_flags.get(&link.old_uid)) {
                (Some(n), Some(o)) => {
                    let (target, _) = filter_for_new(n, &perm);
                    stores.push(link.old_uid, o, &target);
                    updates.push(LinkFlags {
                        old_uid: link.old_uid,
                        old_flags: target.to_canonical(),
                        new_flags: n.to_canonical(),
                    });
                }
                (None, Some(_)) => gone_new.push(link.old_uid),
                (Some(_), None) => gone_old.push(link.clone()),
                (None, None) => gone_new.push(link.old_uid),
            }
        }
        done.flags_fixed += stores.messages() as u64;
        conn.old.store_flags(stores.groups()).await?;
        self.store.update_link_flags(pair.id, &updates).await?;
        // Deleted (or moved away) on NEW: gone from OLD too, tombstoned ones included.
        let mut doomed: Vec<u32> = gone_new
            .iter()
            .copied()
            .filter(|u| old_flags.contains_key(u))
            .collect();
        doomed.extend(tombstones.iter().filter(|u| old_flags.contains_key(u)));
        if !doomed.is_empty() {
            conn.old.uid_expunge(&doomed).await?;
            done.removed_on_old += doomed.len() as u64;
        }
        self.store.remove_links(pair.id, &gone_new).await?;
        self.store.remove_tombstones(pair.id, &tombstones).await?;
        // Linked on NEW, lost on OLD: NEW's copy goes back and is linked again.
        if !gone_old.is_empty() {
            let copied = copy_back(conn, pair, &gone_old).await?;
            let relinked: BTreeSet<u32> = gone_old.iter().map(|l| l.old_uid).collect();
            self.store
                .remove_links(pair.id, &relinked.into_iter().collect::<Vec<_>>())
                .await?;
            done.copied_to_old += copied.len() as u64;
            self.store.add_links(pair.id, &copied).await?;
        }
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

/// Appends NEW's copies of `links` to OLD's folder; returns the new links (an OLD without
/// UIDPLUS gives none: the next pass links the copies by identity key).
async fn copy_back(
    conn: &mut Conn,
    pair: &FolderPair,
    links: &[Link],
) -> Result<Vec<Link>, SyncError> {
    let uids: Vec<u32> = links.iter().map(|l| l.new_uid).collect();
    let fetched =
        mirror::read_messages(&mut conn.new, &pair.new_name, &uids, "BODY.PEEK[]").await?;
    Ok(
        mirror::append_to_old(&mut conn.old, &pair.old_name, fetched)
            .await?
            .0,
    )
}
