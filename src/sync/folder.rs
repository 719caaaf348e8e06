//! One folder pair, one pass (DESIGN.md §3): read both sides' UIDs and flag changes and the pair's
//! stored state, let [`plan`] decide, then carry the plan out (tombstones, bounded OLD expunges,
//! flag STOREs, adoption, the copy, the deletions the user asked for) and record both sides' state.

use std::collections::{BTreeSet, HashMap};

use tracing::Instrument;

use crate::imap::{Client, ImapError, MailboxInfo, Untagged, uidset};
use crate::store::{FolderPair, MailboxState, Phase, Store};

use super::adopt::adopt;
use super::copy::copy_messages;
use super::criteria::{self, MessageSelection};
use super::deletions;
use super::flags::{FlagSet, PermanentFlags, Unstorable};
use super::ledger::{Fate, Ledger};
use super::plan::{
    FlagPlan, OldExpunges, Plan, PlanOptions, Scan, SideScan, Stored, follow_old_reads, plan,
};
use super::{Event, Options, SyncError, Tally};

#[derive(Clone)]
pub(crate) struct FolderJob {
    pub pair: FolderPair,
    pub messages: u32,
    /// Earlier attempts that ended with a lost connection.
    pub attempts: u8,
}

/// Selects the mailbox and reads what the pass needs, in as few round trips as possible:
/// with CONDSTORE, `UID SEARCH ALL` and `UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)` in flight together;
/// without, one `UID FETCH 1:* (UID FLAGS)` gives both.
async fn scan(
    client: &mut Client,
    name: &str,
    (readonly, create): (bool, bool),
    condstore: bool,
    known: Option<MailboxState>,
) -> Result<SideScan, ImapError> {
    let info = match client.select_with(name, readonly, condstore).await {
        // imapsync's remedy for servers that list a mailbox they cannot open yet (Gmail; Dovecot
        // racing to auto-create special-use folders): CREATE it, then SELECT again.
        Err(ImapError::Refused { .. }) if create => {
            let _ = client.create(name).await?;
            client.select_with(name, readonly, condstore).await?
        }
        other => other?,
    };
    let permanent_flags = info
        .permanentflags
        .as_ref()
        .map(|p| PermanentFlags::parse(&p.join(" ")))
        .unwrap_or_default();
    let mut flags = HashMap::new();
    let mut uids = BTreeSet::new();
    if info.exists == 0 {
        return Ok(SideScan {
            state: state(&info),
            uids,
            flags,
            changes_only: false,
            unchanged: HashMap::new(),
            permanent_flags,
        });
    }
    let since = match known {
        Some(k)
            if k.uidvalidity == info.uidvalidity
                && k.highestmodseq > 0
                && info.highestmodseq > 0 =>
        {
            Some(k.highestmodseq)
        }
        _ => None,
    };
    // Both commands are in flight together; the server may interleave their untagged responses,
    // so one handler takes both kinds.
    let mut on_untagged = |u: Untagged| match u {
        Untagged::Search(v) => uids.extend(v),
        Untagged::Fetch(f) => {
            if let (Some(uid), Some(fl)) = (f.uid, f.flags) {
                flags.insert(uid, FlagSet::from_iter(fl));
            }
        }
        _ => {}
    };
    let side = client.side();
    match since {
        Some(m) => {
            let search = client.send_line("UID SEARCH ALL").await?;
            let fetch = client
                .send_uid_fetch("1:*", "UID FLAGS", &format!("CHANGEDSINCE {m}"))
                .await?;
            client
                .wait(&search, &mut on_untagged)
                .await?
                .ok(side, "UID SEARCH")?;
            client
                .wait(&fetch, &mut on_untagged)
                .await?
                .ok(side, "UID FETCH")?;
        }
        None => {
            let fetch = client.send_uid_fetch("1:*", "UID FLAGS", "").await?;
            client
                .wait(&fetch, &mut on_untagged)
                .await?
                .ok(side, "UID FETCH")?;
            uids.extend(flags.keys().copied());
        }
    }
    Ok(SideScan {
        state: state(&info),
        uids,
        flags,
        changes_only: since.is_some(),
        unchanged: HashMap::new(),
        permanent_flags,
    })
}

fn state(info: &MailboxInfo) -> MailboxState {
    MailboxState {
        uidvalidity: info.uidvalidity,
        uidnext: info.uidnext,
        highestmodseq: info.highestmodseq,
        messages: info.exists,
    }
}

/// One pass over a folder pair: read both sides and the store, [`plan`], carry the plan out,
/// record.
pub(crate) async fn sync_folder(
    store: &dyn Store,
    old: &mut Client,
    new: &mut Client,
    job: &FolderJob,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<(), SyncError> {
    let span = tracing::info_span!("folder", old = %job.pair.old_name, new = %job.pair.new_name);
    async move {
        let pair = &job.pair;
        tally.event(Event::FolderStart {
            old: pair.old_name.clone(),
            new: pair.new_name.clone(),
            messages: job.messages,
        });

        // OLD is only written with --delete1 (and never in a dry run).
        let old_readonly = !opts.delete1 || opts.dry;
        // --resyncflags compares every message's flags: both sides are read whole.
        let known = |k: Option<MailboxState>| k.filter(|_| !opts.resync_flags_host1_wins);
        // NEW gets CONDSTORE only once there is a recorded state to compare with: a first pass fills
        // the folder faster without it (see `Client::select_with`); its final STATUS records the modseq.
        // NEW is read read-only: a read-write SELECT would take `\Recent` from the user. It is
        // selected read-write only when the pass writes there.
        let new_condstore = pair.new.is_some();
        // Both sides are read at once, each on its own connection.
        let (o, n) = tokio::join!(
            scan(old, &pair.old_name, (old_readonly, false), true, known(pair.old)),
            scan(new, &pair.new_name, (true, false), new_condstore, known(pair.new)),
        );
        let o = match o {
            Err(e @ ImapError::Refused { .. }) => {
                tally.error(format!("Could not select: {} {e}", pair.old_name));
                return Ok(());
            }
            other => other?,
        };
        // A NEW folder missing while the user's writes are not settled is their RENAME or DELETE
        // on its way to OLD: creating it would bring the folder back under the name they left.
        // Otherwise one that cannot be selected is created (only once OLD's could be) and read again.
        let create = !opts.dry && tally.observer.new_settled(&pair.new_name);
        let n = match n {
            Err(ImapError::Refused { .. }) if create => {
                scan(new, &pair.new_name, (true, true), new_condstore, known(pair.new)).await
            }
            other => other,
        };
        let n = match n {
            Err(e @ ImapError::Refused { .. }) if opts.dry => {
                // The folder does not exist yet on NEW: everything would be copied.
                let _ = e;
                tally.stats(|s| {
                    s.messages_on_old += o.uids.len() as u64;
                    s.messages_would_transfer += o.uids.len() as u64;
                });
                return Ok(());
            }
            Err(e @ ImapError::Refused { .. }) => {
                tally.error(format!("Could not select: {} {e}", pair.new_name));
                return Ok(());
            }
            other => other?,
        };
        let mut scan = Scan {
            old: o,
            new: n,
            new_settled: tally.observer.new_settled(&pair.new_name),
        };
        let stored = Stored {
            old: pair.old,
            new: pair.new,
            adopt_from: pair.adopt_from,
            links: store.links(pair.id).await?,
            tombstones: store.tombstones(pair.id).await?.into_iter().collect(),
        };
        let reads = follow_old_reads(&scan, &stored.links, opts.resync_flags_host1_wins);
        if !reads.is_empty() {
            let unchanged = &mut scan.new.unchanged;
            new.uid_fetch(&reads, "UID FLAGS", "", |f| {
                if let (Some(uid), Some(flags)) = (f.uid, f.flags) {
                    unchanged.insert(uid, FlagSet::from_iter(flags));
                }
            })
            .await?;
        }
        let plan = plan(&scan, &stored, &PlanOptions::new(opts)?);
        if !plan.held.is_empty() {
            tracing::debug!(
                count = plan.held.len(),
                "linked messages missing from NEW while the user's writes there are not on OLD yet: left linked"
            );
        }
        execute(store, old, new, pair, &scan, &plan, opts, tally).await
    }
    .instrument(span)
    .await
}

/// Carries out `plan` in its order (in a dry run: reports it, writing nothing), then records
/// both sides' state and the messages in error. A folder the deletion bound stops ends after
/// the tombstones.
#[allow(clippy::too_many_arguments)]
async fn execute(
    store: &dyn Store,
    old: &mut Client,
    new: &mut Client,
    pair: &FolderPair,
    scan: &Scan,
    plan: &Plan,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<(), SyncError> {
    let (o, n) = (&scan.old, &scan.new);
    let new_condstore = pair.new.is_some();
    if plan.reset && !opts.dry {
        tally.warn(format!(
            "UIDVALIDITY changed for {} / {}: re-identifying messages",
            pair.old_name, pair.new_name
        ));
        store.reset_pair(pair.id).await?;
    }
    tally.stats(|s| s.messages_on_old += o.uids.len() as u64);

    if !plan.tombstone.is_empty() && !opts.dry {
        store.tombstone(pair.id, &plan.tombstone).await?;
        tally.stats(|s| s.messages_tombstoned += plan.tombstone.len() as u64);
        tally.event(Event::Tombstoned {
            new_folder: pair.new_name.clone(),
            count: plan.tombstone.len(),
        });
    }
    let mut ledger = Ledger::new(o.uids.iter().copied());
    ledger.mark(plan.tombstoned.iter().copied(), Fate::Tombstoned);
    let expunged = match &plan.old_expunges {
        OldExpunges::Propagate(gone) => gone,
        OldExpunges::Stop { expunged, on_new } => {
            let why = format!(
                "Folder {}: {expunged} linked messages were expunged on host1, which would delete {:.0} % of host2 folder {} (limit {:.0} %): stopping this folder. Check host1, or raise the limit.",
                pair.old_name,
                100.0 * *expunged as f64 / (*on_new).max(1) as f64,
                pair.new_name,
                100.0 * opts.max_delete_share
            );
            tally.error(why.clone());
            if !opts.dry {
                store
                    .save_pair_state(pair.id, pair.old, pair.new, plan.adopt_from, Phase::Partial)
                    .await?;
                // Linked messages are as they were; the rest waits for the folder to go on.
                ledger.mark(plan.linked.iter().copied(), Fate::Linked);
                ledger.close(&why);
                store.set_message_errors(pair.id, &ledger.errors()).await?;
            }
            return Ok(());
        }
    };
    if !expunged.is_empty() && !opts.dry {
        let (old_uids, new_uids): (Vec<u32>, Vec<u32>) = expunged.iter().copied().unzip();
        new.writable(&pair.new_name, new_condstore).await?;
        new.uid_expunge(&new_uids).await?;
        store.remove_links(pair.id, &old_uids).await?;
        tally.stats(|s| s.messages_deleted_on_new += new_uids.len() as u64);
        tally.event(Event::Expunged {
            new_folder: pair.new_name.clone(),
            count: new_uids.len(),
        });
    }
    if !plan.forget_links.is_empty() && !opts.dry {
        store.remove_links(pair.id, &plan.forget_links).await?;
    }
    if !plan.forget_tombstones.is_empty() && !opts.dry {
        store
            .remove_tombstones(pair.id, &plan.forget_tombstones)
            .await?;
    }
    ledger.mark(plan.linked.iter().copied(), Fate::Linked);

    let wrote_flags = apply_flags(store, new, pair, n, &plan.flags, opts, tally).await?;

    let mut to_copy = plan.copy.clone();
    if !to_copy.is_empty() && !opts.messages.is_all() {
        let selected = select_messages(old, pair, &to_copy, &opts.messages, tally).await?;
        ledger.mark(
            to_copy.iter().copied().filter(|u| !selected.contains(u)),
            Fate::Skipped,
        );
        to_copy.retain(|u| selected.contains(u));
    }
    if !to_copy.is_empty() && !opts.sync_duplicates {
        // --nosyncduplicates: only the lowest UID of each identity key is copied.
        let all: Vec<u32> = o.uids.iter().copied().collect();
        let wanted: BTreeSet<u32> = to_copy.iter().copied().collect();
        let dups = deletions::old_duplicates(old, &all, &wanted, opts).await?;
        to_copy.retain(|u| !dups.contains(u));
        ledger.mark(dups.iter().copied(), Fate::Skipped);
        tally.stats(|s| s.duplicates_on_old += dups.len() as u64);
    }
    if !to_copy.is_empty() && !opts.dry {
        store
            .save_pair_state(pair.id, pair.old, pair.new, plan.adopt_from, Phase::Partial)
            .await?;
        if !plan.adopt_candidates.is_empty() {
            let adopted = adopt(
                old,
                new,
                &to_copy,
                &plan.adopt_candidates,
                &opts.identity,
                opts.add_header,
            )
            .await?;
            if !adopted.is_empty() {
                store.add_links(pair.id, &adopted).await?;
                ledger.mark(adopted.iter().map(|l| l.old_uid), Fate::Linked);
                let done: BTreeSet<u32> = adopted.iter().map(|l| l.old_uid).collect();
                to_copy.retain(|u| !done.contains(u));
                tally.stats(|s| s.messages_adopted += adopted.len() as u64);
                tally.event(Event::Adopted {
                    new_folder: pair.new_name.clone(),
                    count: adopted.len(),
                });
            }
        }
        // Dovecot appends faster to a mailbox nobody has selected (no view to keep in sync).
        new.unselect().await?;
        let copied = copy_messages(
            store,
            old,
            new,
            pair,
            &to_copy,
            n.state.uidnext,
            &n.permanent_flags,
            opts,
            tally,
        )
        .await?;
        ledger.mark(copied.linked.iter().copied(), Fate::Linked);
        for (uid, reason) in copied.failed {
            ledger.error(uid, reason);
        }
        settle_missing(old, pair, copied.missing, &mut ledger, tally).await?;
        tally.stats(|s| s.messages_missing_on_new += (to_copy.len() - copied.linked.len()) as u64);
    } else if opts.dry {
        tally.stats(|s| {
            s.messages_would_transfer += to_copy.len() as u64;
            s.messages_missing_on_new += to_copy.len() as u64;
        });
    }

    let deleted_on_new = deletions_asked(store, old, new, pair, &o.uids, opts, tally).await?;
    if !opts.dry {
        // The conservation law: nothing the pass scanned may be unaccounted for.
        let lost = ledger
            .close("not linked, tombstoned, skipped or reported by the pass (conservation check)");
        for uid in &lost {
            tally.error(format!(
                "- msg {}/{uid} was not copied to host2 folder {} and the pass did not say why (conservation check)",
                pair.old_name, pair.new_name
            ));
        }
        let errors = ledger.errors();
        tally.stats(|s| s.messages_in_error += errors.len() as u64);
        store.set_message_errors(pair.id, &errors).await?;
        let wrote_new = !to_copy.is_empty() || !expunged.is_empty() || deleted_on_new;
        let new_state = new_state_after(store, new, pair, n, wrote_new, &wrote_flags).await?;
        // A folder with a message in error is not done: the next pass looks at it again.
        let phase = if errors.is_empty() {
            Phase::Synced
        } else {
            Phase::Partial
        };
        let old_state = match plan.old_flags_deferred {
            true => MailboxState {
                highestmodseq: pair.old.map_or(0, |s| s.highestmodseq),
                ..o.state
            },
            false => o.state,
        };
        let adopt_from = plan
            .unlinked_new_from
            .map_or(n.state.uidnext, |u| u.min(n.state.uidnext));
        store
            .save_pair_state(pair.id, Some(old_state), Some(new_state), adopt_from, phase)
            .await?;
        let recorded = (phase == Phase::Synced).then_some(old_state);
        tally
            .observer
            .old_recorded(&pair.new_name, pair.id, recorded);
        // Both sides' watermarks are recorded (each read with CONDSTORE in use): the next pass
        // learns from CHANGEDSINCE which side changed a message, so the links need no base
        // flags (DESIGN.md §4a).
        if phase == Phase::Synced && o.state.highestmodseq > 0 && new_state.highestmodseq > 0 {
            store.forget_link_bases(pair.id).await?;
        }
    }
    tally.stats(|s| s.folders_synced += 1);
    tally.event(Event::FolderDone {
        old: pair.old_name.clone(),
        new: pair.new_name.clone(),
    });
    Ok(())
}

/// The deletions the user asked for, after the copy: `--delete2duplicates`, `--delete2` (NEW
/// messages with no OLD counterpart, within the `--search`/age window), then `--delete1` (OLD
/// messages whose copy is on NEW, or that the user deleted there). Returns whether NEW changed.
async fn deletions_asked(
    store: &dyn Store,
    old: &mut Client,
    new: &mut Client,
    pair: &FolderPair,
    old_uids: &BTreeSet<u32>,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<bool, SyncError> {
    let window = opts.messages.base(chrono::Local::now());
    let mut doomed = BTreeSet::new();
    if opts.delete2 || opts.delete2_duplicates {
        // The copy leaves NEW unselected (appends are cheaper so): select it again.
        let info = new
            .select_with(&pair.new_name, opts.dry, pair.new.is_some())
            .await?;
        let all = if info.exists == 0 {
            Vec::new()
        } else {
            new.uid_search("ALL").await?
        };
        if opts.delete2_duplicates && !all.is_empty() {
            let dups = deletions::duplicates(new, &all, opts).await?;
            deletions::delete_on_new(store, new, pair, &dups, "--delete2duplicates", opts, tally)
                .await?;
            doomed.extend(dups);
        }
        if opts.delete2 && !all.is_empty() {
            let linked: BTreeSet<u32> = store
                .links(pair.id)
                .await?
                .into_iter()
                .map(|l| l.new_uid)
                .collect();
            let in_window: Option<BTreeSet<u32>> = match &window {
                Some(c) => Some(new.uid_search(c).await?.into_iter().collect()),
                None => None,
            };
            let orphans: Vec<u32> = all
                .iter()
                .copied()
                .filter(|u| !linked.contains(u) && !doomed.contains(u))
                .filter(|u| in_window.as_ref().is_none_or(|w| w.contains(u)))
                .collect();
            deletions::delete_on_new(store, new, pair, &orphans, "--delete2", opts, tally).await?;
            doomed.extend(orphans);
        }
    }
    if opts.delete1 {
        let mut done: BTreeSet<u32> = store
            .links(pair.id)
            .await?
            .into_iter()
            .map(|l| l.old_uid)
            .collect();
        done.extend(store.tombstones(pair.id).await?);
        done.retain(|u| old_uids.contains(u));
        if let Some(c) = &window {
            let in_window: BTreeSet<u32> = old.uid_search(c).await?.into_iter().collect();
            done.retain(|u| in_window.contains(u));
        }
        let done: Vec<u32> = done.into_iter().collect();
        deletions::delete_on_old(store, old, pair, &done, opts, tally).await?;
    }
    Ok(!doomed.is_empty())
}

/// The candidates that `--search`/`--maxage`/`--minage`/`--maxsize`/`--minsize` select on the
/// selected OLD mailbox. Messages left out by size are counted as skipped (as imapsync does);
/// those left out by search or age are not.
async fn select_messages(
    old: &mut Client,
    pair: &FolderPair,
    candidates: &[u32],
    selection: &MessageSelection,
    tally: &Tally<'_>,
) -> Result<BTreeSet<u32>, SyncError> {
    let base = selection.base(chrono::Local::now());
    let size = selection.size();
    let wanted: BTreeSet<u32> = old
        .uid_search(&criteria::and(&[base.clone(), size.clone()]))
        .await?
        .into_iter()
        .collect();
    if size.is_some() {
        let by_date: BTreeSet<u32> = old
            .uid_search(&criteria::and(&[base]))
            .await?
            .into_iter()
            .collect();
        let too_big_or_small: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|u| by_date.contains(u) && !wanted.contains(u))
            .collect();
        if !too_big_or_small.is_empty() {
            let mut bytes = 0u64;
            old.uid_fetch(&too_big_or_small, "UID RFC822.SIZE", "", |f| {
                if let (Some(uid), Some(size)) = (f.uid, f.size) {
                    bytes += u64::from(size);
                    tally.event(Event::Warning(format!(
                        "msg {}/{uid} size {size} skipped (outside --minsize/--maxsize)",
                        pair.old_name
                    )));
                }
            })
            .await?;
            tally.stats(|s| {
                s.messages_skipped += too_big_or_small.len() as u64;
                s.bytes_skipped += bytes;
            });
        }
    }
    Ok(candidates
        .iter()
        .copied()
        .filter(|u| wanted.contains(u))
        .collect())
}

/// Messages OLD's FETCH answers left out: those OLD no longer has were expunged meanwhile (not a
/// loss); the others are errors with what was wrong with the answer.
async fn settle_missing(
    old: &mut Client,
    pair: &FolderPair,
    missing: Vec<(u32, String)>,
    ledger: &mut Ledger,
    tally: &Tally<'_>,
) -> Result<(), SyncError> {
    if missing.is_empty() {
        return Ok(());
    }
    let uids: Vec<u32> = missing.iter().map(|(u, _)| *u).collect();
    let still: BTreeSet<u32> = old
        .uid_search(&format!("UID {}", uidset::format(&uids)))
        .await?
        .into_iter()
        .collect();
    for (uid, why) in missing {
        if still.contains(&uid) {
            tally.error(format!(
                "- msg {}/{uid} could not be fetched: {why}",
                pair.old_name
            ));
            ledger.error(uid, format!("could not be fetched: {why}"));
        } else {
            tracing::info!(uid, folder = %pair.old_name, "expunged on host1 during the pass");
            ledger.mark([uid], Fate::Vanished);
        }
    }
    Ok(())
}

/// NEW's state to record after the pass: the watermark the next pass reads changes from, so it
/// must not hide a change the user made on NEW while this pass ran.
/// - NEW scanned without CONDSTORE (a first pass): see [`first_watermark`].
/// - The pass wrote NEW: its own changes should not count as the user's next time, but a later
///   STATUS would also cover the user's. The messages changed since the scan are read: the
///   watermark goes past them if they are all the pass's own (`own_flags` at the modseq its
///   STORE gave them, and messages above the scan's UIDNEXT: copies, arrivals), else stays
///   below the first foreign one.
/// - Nothing written: the scan's state.
async fn new_state_after(
    store: &dyn Store,
    new: &mut Client,
    pair: &FolderPair,
    n: &SideScan,
    wrote_new: bool,
    own_flags: &HashMap<u32, u64>,
) -> Result<MailboxState, SyncError> {
    let scanned = n.state.highestmodseq;
    if pair.new.is_some() && !wrote_new && own_flags.is_empty() {
        return Ok(n.state);
    }
    if pair.new.is_none() && new.has("CONDSTORE") {
        return first_watermark(store, new, pair).await;
    }
    if pair.new.is_none() || scanned == 0 {
        let st = new.status(&pair.new_name).await?;
        return Ok(MailboxState {
            uidvalidity: st.uidvalidity,
            uidnext: st.uidnext,
            highestmodseq: 0,
            messages: st.messages,
        });
    }
    // The copy left NEW unselected, and a STORE's answer may have changed the view: read anew,
    // the EXAMINE and the FETCH in one round trip.
    let examine = new.send_select(&pair.new_name, true, true).await?;
    let fetch = new
        .send_uid_fetch("1:*", "UID", &format!("CHANGEDSINCE {scanned}"))
        .await?;
    let mut state = state(&new.wait_select(&examine, &pair.new_name, true).await?);
    let mut changed = Vec::new();
    new.wait(&fetch, |u| {
        if let Untagged::Fetch(f) = u
            && let (Some(uid), Some(modseq)) = (f.uid, f.modseq)
        {
            changed.push((uid, modseq));
        }
    })
    .await?
    .ok(new.side(), "UID FETCH")?;
    let own =
        |(uid, modseq): &(u32, u64)| own_flags.get(uid) == Some(modseq) || *uid >= n.state.uidnext;
    let foreign = changed.iter().filter(|c| !own(c)).map(|(_, m)| *m).min();
    let newest = changed.iter().map(|(_, m)| *m).max().unwrap_or(scanned);
    state.highestmodseq = match foreign {
        Some(first) => (first - 1).max(scanned),
        None => newest.max(scanned),
    };
    Ok(state)
}

/// NEW's state after a first pass, which read NEW without CONDSTORE (it fills the folder
/// faster): CONDSTORE is turned on now (Dovecot counts modseqs from its first use), so nothing
/// vouches for what the user changed on NEW while the pass ran. NEW's flags are read once: if
/// every linked message holds the flags its link recorded, the modseq is the watermark; else
/// none is recorded, the links keep their base flags and the next pass reads NEW whole.
async fn first_watermark(
    store: &dyn Store,
    new: &mut Client,
    pair: &FolderPair,
) -> Result<MailboxState, SyncError> {
    // The EXAMINE and the FETCH in one round trip.
    let examine = new.send_select(&pair.new_name, true, true).await?;
    let fetch = new.send_uid_fetch("1:*", "UID FLAGS", "").await?;
    let mut state = state(&new.wait_select(&examine, &pair.new_name, true).await?);
    let mut on_new = HashMap::new();
    let done = new
        .wait(&fetch, |u| {
            if let Untagged::Fetch(f) = u
                && let (Some(uid), Some(flags)) = (f.uid, f.flags)
            {
                on_new.insert(uid, FlagSet::from_iter(flags));
            }
        })
        .await?;
    if state.messages == 0 {
        // Some servers refuse `1:*` in an empty mailbox; there is nothing to compare.
        return Ok(state);
    }
    done.ok(new.side(), "UID FETCH")?;
    let changed = store.links(pair.id).await?.iter().any(|l| {
        on_new
            .get(&l.new_uid)
            .is_some_and(|f| !l.has_base() || *f != FlagSet::parse(&l.new_flags))
    });
    if changed {
        tracing::info!("flags changed on NEW during the first pass: the next pass reads NEW whole");
        state.highestmodseq = 0;
    }
    Ok(state)
}

/// Carries out the flag merge's outcome (see [`plan`]): warns about flags NEW cannot store,
/// STOREs on NEW, records the new bases. Where NEW was scanned with CONDSTORE, each STORE is
/// conditional on the message being unchanged since the scan: a message the user changed on
/// NEW meanwhile keeps the user's flags (NEW wins; the mirror carries them to OLD), and its
/// link's base makes the next pass see them as NEW's change. Returns the NEW UIDs it changed,
/// with the modseq each got (0 where unknown).
async fn apply_flags(
    store: &dyn Store,
    new: &mut Client,
    pair: &FolderPair,
    n: &SideScan,
    flags: &FlagPlan,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<HashMap<u32, u64>, SyncError> {
    tally.stats(|s| s.flags_dropped += flags.dropped.len() as u64);
    let dropped: BTreeSet<&(String, Unstorable)> = flags.dropped.iter().collect();
    for (flag, why) in dropped {
        tally.warn(format!(
            "Host2 folder {} cannot store flag {flag} ({why}): dropped",
            pair.new_name
        ));
    }
    let mut stored = HashMap::new();
    if opts.dry || flags.messages() == 0 {
        return Ok(stored);
    }
    new.writable(&pair.new_name, pair.new.is_some()).await?;
    let scanned = n.state.highestmodseq;
    if pair.new.is_some() && scanned > 0 {
        let modified;
        (stored, modified) = new
            .store_unchanged_since(scanned, flags.targets.iter().cloned())
            .await?;
        if !modified.is_empty() {
            tracing::info!(
                count = modified.len(),
                "messages changed on NEW since the pass read them keep NEW's flags"
            );
        }
    } else {
        new.store_flags(flags.store_on_new.iter().cloned()).await?;
        stored.extend(flags.targets.iter().flat_map(|(u, _)| u).map(|u| (*u, 0)));
    }
    if !flags.bases.is_empty() {
        store.update_link_flags(pair.id, &flags.bases).await?;
    }
    if !stored.is_empty() {
        tally.stats(|s| s.flags_updated += stored.len() as u64);
        tally.event(Event::FlagsUpdated {
            new_folder: pair.new_name.clone(),
            count: stored.len(),
        });
    }
    Ok(stored)
}

#[cfg(test)]
mod tests;
