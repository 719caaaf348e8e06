//! What one folder pass decides (DESIGN.md §3), as a pure function of what the pass read from both
//! sides ([`Scan`]) and what the store holds for the pair ([`Stored`]): tombstones, OLD expunges
//! reaching NEW within the deletion bound, the flags NEW gets, what is copied and what may be
//! adopted instead. `folder` reads, calls [`plan`], carries the [`Plan`] out and records.

use std::collections::{BTreeSet, HashMap};

use crate::store::{Link, LinkFlags, MailboxState};

use super::flags::{
    FlagRewrite, FlagSet, FlagStores, PermanentFlags, Unstorable, filter_for_new, reconcile_target,
};
use super::{Options, SyncError};

/// One side's folder as the pass read it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SideScan {
    pub state: MailboxState,
    /// Every UID in the folder.
    pub uids: BTreeSet<u32>,
    /// Flags of the messages changed since the recorded HIGHESTMODSEQ (of every message without
    /// CONDSTORE, or without a recorded state).
    pub flags: HashMap<u32, FlagSet>,
    /// Whether `flags` holds only the messages changed since the recorded HIGHESTMODSEQ.
    pub changes_only: bool,
    /// NEW's side: flags of unchanged messages, read because their link keeps no base and OLD
    /// changed them ([`follow_old_reads`]).
    pub unchanged: HashMap<u32, FlagSet>,
    /// The folder's PERMANENTFLAGS (everything allowed when the server sent none).
    pub permanent_flags: PermanentFlags,
}

/// What the pass read before deciding anything.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scan {
    pub old: SideScan,
    pub new: SideScan,
    /// Whether every write of the user to NEW's folder has reached OLD (the observer's
    /// `new_settled`). Until then a linked message missing from NEW may be on its way to OLD
    /// (a move, an expunge), not deleted by the user.
    pub new_settled: bool,
}

/// What the store holds for the pair.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stored {
    /// Both sides' state at the last completed reconcile.
    pub old: Option<MailboxState>,
    pub new: Option<MailboxState>,
    /// NEW UIDs at or above this may be unlinked copies of OLD messages.
    pub adopt_from: u32,
    /// In ascending OLD UID, each with the base flags of the three-way merge.
    pub links: Vec<Link>,
    /// OLD UIDs never to copy again.
    pub tombstones: BTreeSet<u32>,
}

/// The options that change decisions.
#[derive(Clone, Debug)]
pub(crate) struct PlanOptions {
    /// Deletions propagated from OLD may remove at most this share of the NEW folder.
    pub max_delete_share: f64,
    /// `--filterbuggyflags` and `--regexflag`, applied to OLD's flags.
    pub rewrite: FlagRewrite,
    /// `--resyncflags`: NEW takes OLD's flags instead of the three-way merge.
    pub host1_wins: bool,
}

impl PlanOptions {
    pub fn new(opts: &Options) -> Result<PlanOptions, SyncError> {
        Ok(PlanOptions {
            max_delete_share: opts.max_delete_share,
            rewrite: FlagRewrite::new(opts.filter_buggy_flags, &opts.regexflag)
                .map_err(|e| SyncError::Options(format!("--regexflag: {e}")))?,
            host1_wins: opts.resync_flags_host1_wins,
        })
    }
}

/// What happens to NEW copies of messages expunged on OLD (DESIGN.md §1.6).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OldExpunges {
    /// Expunge these NEW copies and forget their links: `(old_uid, new_uid)`.
    Propagate(Vec<(u32, u32)>),
    /// More than the bound allows: `expunged` linked messages are gone from OLD, which would
    /// delete that many of the NEW folder's `on_new`. The folder stops after the tombstones:
    /// nothing is expunged, merged or copied, and links stay as they are.
    Stop { expunged: usize, on_new: usize },
}

impl Default for OldExpunges {
    fn default() -> Self {
        OldExpunges::Propagate(Vec::new())
    }
}

/// The three-way flag merge's outcome. Only NEW is written: OLD's flags change through the
/// proxy's journal, never through a pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FlagPlan {
    /// STOREs on NEW: `(new_uids, +FLAGS, -FLAGS)`, messages needing the same change together.
    pub store_on_new: Vec<(Vec<u32>, Vec<String>, Vec<String>)>,
    /// The same STOREs as replacements, `(new_uids, FLAGS)`: what a STORE conditional on NEW's
    /// scan (`UNCHANGEDSINCE`) sends, as add and remove would be two changes.
    pub targets: Vec<(Vec<u32>, Vec<String>)>,
    /// The new base of each merged link (what each side holds afterwards).
    pub bases: Vec<LinkFlags>,
    /// Flags the merge wanted on NEW that NEW cannot store, one entry per message.
    pub dropped: Vec<(String, Unstorable)>,
}

impl FlagPlan {
    /// How many NEW messages get a STORE.
    pub fn messages(&self) -> usize {
        self.store_on_new.iter().map(|(uids, ..)| uids.len()).sum()
    }
}

/// The actions of one folder pass, in the order they are carried out.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// UIDVALIDITY changed on a side since the last reconcile: the stored links and tombstones
    /// mean nothing any more and are forgotten first; the folder is re-identified by identity
    /// key (adoption) instead of being copied again.
    pub reset: bool,
    /// OLD UIDs of links whose NEW copy vanished: the user deleted it, it is never copied back.
    pub tombstone: Vec<u32>,
    /// Links whose NEW copy vanished while the user's writes there are not on OLD yet: left
    /// linked, decided again by the next pass.
    pub held: Vec<u32>,
    /// Links whose OLD message is gone while its NEW copy is there.
    pub old_expunges: OldExpunges,
    /// OLD UIDs of links gone from both sides: forgotten.
    pub forget_links: Vec<u32>,
    /// Tombstones of messages gone from OLD: forgotten.
    pub forget_tombstones: Vec<u32>,
    /// OLD UIDs that stay linked (both messages there, or held).
    pub linked: BTreeSet<u32>,
    /// OLD UIDs that are tombstoned (stored before, or by this pass).
    pub tombstoned: BTreeSet<u32>,
    pub flags: FlagPlan,
    /// OLD UIDs without link or tombstone, ascending: what is copied, once the selection
    /// options (`--search`, age, size, `--nosyncduplicates`, which ask OLD) and adoption have
    /// taken theirs.
    pub copy: Vec<u32>,
    /// NEW UIDs nobody links, at or above the adoption watermark (copies made by another tool or
    /// by a pass killed before it recorded its links). Empty when nothing is to be copied. The
    /// second step needs both sides' identity keys: `adopt::pair_up` links equal keys, and what
    /// it links is not copied.
    pub adopt_candidates: Vec<u32>,
    /// The adoption watermark while the pass runs (1 after a reset).
    pub adopt_from: u32,
    /// The lowest NEW UID at or above the watermark that no link claims, while the user's
    /// writes are not all on OLD: a write waiting in the journal (an APPEND, a COPY) may be
    /// about to put that message on OLD and link it. The watermark the pass records stays at
    /// it, so that if the mirror is cut off between OLD's copy and its link, the next pass
    /// adopts that copy instead of copying it back to NEW a second time.
    pub unlinked_new_from: Option<u32>,
    /// OLD changed flags that NEW was not made to follow because the user's writes have not all
    /// reached OLD (`Scan::new_settled`): OLD's change may be the mirror's echo of a write the
    /// user has since changed again on NEW. OLD's modseq is not recorded past them, so a later
    /// pass, once settled, looks again.
    pub old_flags_deferred: bool,
}

/// Decides one folder pass. No I/O: everything it looks at is in `scan` and `stored`.
pub(crate) fn plan(scan: &Scan, stored: &Stored, options: &PlanOptions) -> Plan {
    let (old, new) = (&scan.old, &scan.new);
    let reset = matches!(stored.old, Some(s) if s.uidvalidity != old.state.uidvalidity)
        || matches!(stored.new, Some(s) if s.uidvalidity != new.state.uidvalidity);
    let (links, stored_tombstones) = if reset {
        (&[][..], &BTreeSet::new())
    } else {
        (&stored.links[..], &stored.tombstones)
    };
    let adopt_from = if reset { 1 } else { stored.adopt_from };
    let on_old = |l: &&Link| old.uids.contains(&l.old_uid);
    let on_new = |l: &&Link| new.uids.contains(&l.new_uid);

    let gone_new: Vec<u32> = links
        .iter()
        .filter(|l| on_old(l) && !on_new(l))
        .map(|l| l.old_uid)
        .collect();
    let (tombstone, held) = if scan.new_settled {
        (gone_new, Vec::new())
    } else {
        (Vec::new(), gone_new)
    };
    let tombstoned: BTreeSet<u32> = stored_tombstones
        .iter()
        .chain(&tombstone)
        .copied()
        .filter(|u| old.uids.contains(u))
        .collect();
    let kept: Vec<&Link> = links.iter().filter(|l| on_old(l) && on_new(l)).collect();
    let linked: BTreeSet<u32> = kept
        .iter()
        .map(|l| l.old_uid)
        .chain(held.iter().copied())
        .collect();

    let gone_old: Vec<(u32, u32)> = links
        .iter()
        .filter(|l| !on_old(l) && on_new(l))
        .map(|l| (l.old_uid, l.new_uid))
        .collect();
    let limit = (options.max_delete_share * new.uids.len() as f64).floor() as usize;
    if gone_old.len() > limit {
        return Plan {
            reset,
            tombstone,
            held,
            old_expunges: OldExpunges::Stop {
                expunged: gone_old.len(),
                on_new: new.uids.len(),
            },
            linked,
            tombstoned,
            adopt_from,
            ..Plan::default()
        };
    }
    let forget_links = links
        .iter()
        .filter(|l| !on_old(l) && !on_new(l))
        .map(|l| l.old_uid)
        .collect();
    let forget_tombstones = stored_tombstones
        .iter()
        .copied()
        .filter(|u| !old.uids.contains(u))
        .collect();

    let (flags, old_flags_deferred) = plan_flags(&kept, old, new, scan.new_settled, options);

    let copy: Vec<u32> = old
        .uids
        .iter()
        .copied()
        .filter(|u| !linked.contains(u) && !tombstoned.contains(u))
        .collect();
    let linked_new: BTreeSet<u32> = kept.iter().map(|l| l.new_uid).collect();
    let unlinked_new_from = if scan.new_settled {
        None
    } else {
        new.uids
            .range(adopt_from..)
            .copied()
            .find(|u| !linked_new.contains(u))
    };
    let adopt_candidates = if copy.is_empty() {
        Vec::new()
    } else {
        new.uids
            .iter()
            .copied()
            .filter(|u| *u >= adopt_from && !linked_new.contains(u))
            .collect()
    };
    Plan {
        reset,
        tombstone,
        held,
        old_expunges: OldExpunges::Propagate(gone_old),
        forget_links,
        forget_tombstones,
        linked,
        tombstoned,
        flags,
        copy,
        adopt_candidates,
        adopt_from,
        unlinked_new_from,
        old_flags_deferred,
    }
}

/// Whether a link keeping no base follows OLD in this pass: OLD changed it (or was read whole)
/// and NEW did not (or `--resyncflags`).
fn follows_old(link: &Link, old: &SideScan, new: &SideScan, host1_wins: bool) -> bool {
    let old_changed = !old.changes_only || old.flags.contains_key(&link.old_uid);
    let new_changed = new.changes_only && new.flags.contains_key(&link.new_uid);
    old_changed && (host1_wins || !new_changed)
}

/// NEW UIDs whose flags the pass reads before planning: linked messages keeping no base that
/// follow OLD while NEW's scan did not return them (unchanged there), so the STORE that makes
/// them follow is computed from what NEW holds.
pub(crate) fn follow_old_reads(scan: &Scan, links: &[Link], host1_wins: bool) -> Vec<u32> {
    let (old, new) = (&scan.old, &scan.new);
    links
        .iter()
        .filter(|l| !l.has_base() && old.uids.contains(&l.old_uid))
        .filter(|l| new.uids.contains(&l.new_uid) && !new.flags.contains_key(&l.new_uid))
        .filter(|l| follows_old(l, old, new, host1_wins))
        .map(|l| l.new_uid)
        .collect()
}

/// Three-way flag merge of linked messages that changed on either side (DESIGN.md §1.2): a flag
/// changed on one side follows that side, a true conflict goes to NEW, `\Recent` never travels,
/// flags NEW cannot store are dropped. A side without a scanned change still holds its base.
/// A link keeping no base (DESIGN.md §4a) follows the side that changed it since the pair's
/// HIGHESTMODSEQ watermarks, NEW when both did, and keeps no base afterwards either; while NEW
/// is not `settled` such a link does not follow OLD (the second value says one was held back).
fn plan_flags(
    links: &[&Link],
    old: &SideScan,
    new: &SideScan,
    settled: bool,
    options: &PlanOptions,
) -> (FlagPlan, bool) {
    // --resyncflags compares every linked pair, not only those changed since the last pass.
    let host1_wins = options.host1_wins;
    let mut stores = FlagStores::default();
    let mut plan = FlagPlan::default();
    let mut deferred = false;
    for link in links {
        let (o, n) = (old.flags.get(&link.old_uid), new.flags.get(&link.new_uid));
        if !link.has_base() {
            let n = n.or_else(|| new.unchanged.get(&link.new_uid));
            let (Some(o), Some(n)) = (o, n) else {
                continue;
            };
            if follows_old(link, old, new, host1_wins) {
                let (target, lost) =
                    filter_for_new(&options.rewrite.apply(o), &new.permanent_flags);
                if target != *n && !settled {
                    deferred = true;
                } else if target != *n {
                    plan.dropped.extend(lost);
                    stores.push(link.new_uid, n, &target);
                }
            }
            continue;
        }
        if o.is_none() && n.is_none() && !host1_wins {
            continue;
        }
        let base_old = FlagSet::parse(&link.old_flags);
        let base_new = FlagSet::parse(&link.new_flags);
        let o = o.cloned().unwrap_or_else(|| base_old.clone());
        let n = n.cloned().unwrap_or_else(|| base_new.clone());
        let unchanged = o == base_old && n == base_new;
        if unchanged && !host1_wins {
            continue;
        }
        let wanted = reconcile_target(&base_old, &base_new, &o, &n, &options.rewrite, host1_wins);
        let (target, lost) = filter_for_new(&wanted, &new.permanent_flags);
        if unchanged && target == n {
            continue;
        }
        plan.dropped.extend(lost);
        stores.push(link.new_uid, &n, &target);
        plan.bases.push(LinkFlags {
            old_uid: link.old_uid,
            old_flags: o.to_canonical(),
            new_flags: target.to_canonical(),
        });
    }
    plan.store_on_new = stores.groups().collect();
    plan.targets = stores.targets().collect();
    (plan, deferred)
}

#[cfg(test)]
mod tests;
