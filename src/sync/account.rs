//! One account pass: log in on both sides, map the folder tree, create what NEW lacks, then run the
//! folder pairs over a small pool of connection pairs (largest folders first).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use tracing::Instrument;

use crate::imap::{Client, ImapError, ListEntry, MailboxStatus, Side};
use crate::lock::lock;
use crate::mapping::{self, Mapper};
use crate::store::{AccountKey, AccountState, FolderPair, Phase, Store};

use super::client_uids;
use super::deletions;
use super::folder::{FolderJob, sync_folder};
use super::own;
use super::{Endpoint, Event, Observer, Options, Report, SyncError, Tally};

/// Connects and logs in (LOGIN, or AUTHENTICATE PLAIN for a master user / `AuthMech::Plain`).
pub async fn login(ep: &Endpoint, side: Side) -> Result<Client, ImapError> {
    let mut client = Client::connect(&ep.connect, side).await?;
    match (&ep.authuser, ep.auth) {
        (Some(admin), _) => {
            client
                .authenticate_plain(Some(&ep.user), admin, &ep.password)
                .await?
        }
        (None, super::AuthMech::Plain) => {
            client
                .authenticate_plain(None, &ep.user, &ep.password)
                .await?
        }
        (None, super::AuthMech::Login) => client.login(&ep.user, &ep.password).await?,
    }
    Ok(client)
}

/// The account of a pass between these logins.
pub(super) fn account_key(old_ep: &Endpoint, new_ep: &Endpoint) -> AccountKey {
    AccountKey {
        old_host: old_ep.connect.host.clone(),
        old_user: old_ep.user.clone(),
        new_host: new_ep.connect.host.clone(),
        new_user: new_ep.user.clone(),
    }
}

/// Both sides' folder trees and how OLD names map to NEW names.
pub(crate) struct Tree {
    /// Selected OLD folders and their NEW names, in imapsync's (byte-sorted) order.
    pub pairs: Vec<(String, String)>,
    /// Every selectable OLD folder, and the NEW name each maps to.
    pub old_all: BTreeSet<String>,
    pub new_targets: BTreeSet<String>,
    /// OLD's subscriptions to carry over, with their NEW names: those of the selected folders,
    /// and those to names that do not exist or are not selectable (`\Noselect` parents, folders
    /// deleted after they were subscribed) that the selection would take.
    pub subscriptions: Vec<(String, String)>,
    pub new_existing: BTreeSet<String>,
    pub new_subscribed: BTreeSet<String>,
    /// Each side's personal namespace (separator and prefix).
    pub old_side: mapping::Side,
    pub new_side: mapping::Side,
}

/// One side's personal namespace: the user's overrides, else NAMESPACE, else guessed from names.
fn namespace_side(
    names: &[ListEntry],
    ns: Option<(String, Option<char>)>,
    sep: Option<char>,
    prefix: &Option<String>,
) -> mapping::Side {
    let all: Vec<&str> = names.iter().map(|e| e.name.as_str()).collect();
    let sep = sep
        .or_else(|| ns.as_ref().and_then(|(_, s)| *s))
        .or_else(|| names.iter().find_map(|e| e.delim))
        .unwrap_or_else(|| mapping::guess_sep(&all));
    let prefix = match (prefix, ns) {
        (Some(p), _) => p.clone(),
        (None, Some((p, _))) => p,
        (None, None) => mapping::guess_prefix(&all, sep),
    };
    mapping::Side { sep, prefix }
}

fn selectable(list: &[ListEntry]) -> Vec<String> {
    list.iter()
        .filter(|e| e.is_selectable())
        .map(|e| e.name.clone())
        .collect()
}

/// Lists both sides (concurrently) and maps the selected OLD folders to NEW names.
/// Lists both sides (concurrently), selects the OLD folders (`--folder`, `--include`,
/// `--folderrec`, `--subfolder1`, `--exclude`) and maps them to NEW names (imapsync's order:
/// `--f1f2`, automap, prefixes and separators, `--regextrans2`, the INBOX case).
pub(crate) async fn map_tree(
    old: &mut Client,
    new: &mut Client,
    opts: &Options,
) -> Result<Tree, SyncError> {
    let ((old_list, old_lsub, old_ns), (new_list, new_lsub, new_ns)) =
        tokio::try_join!(old.tree(), new.tree())?;
    let from = namespace_side(&old_list, old_ns, opts.sep1, &opts.prefix1);
    let to = namespace_side(&new_list, new_ns, opts.sep2, &opts.prefix2);
    let with_attrs = |list: &[ListEntry]| -> Vec<(String, Vec<String>)> {
        list.iter()
            .filter(|e| e.is_selectable())
            .map(|e| (e.name.clone(), e.attrs.clone()))
            .collect()
    };
    let mapper = Mapper::new(
        &opts.mapping,
        &from,
        &to,
        &with_attrs(&old_list),
        &with_attrs(&new_list),
    )
    .map_err(|e| SyncError::Options(format!("--regextrans2: {e}")))?;
    let old_names = selectable(&old_list);
    let mut extra: Vec<String> = opts
        .folderrec
        .iter()
        .flat_map(|f| mapping::folderrec(&old_names, f, from.sep))
        .collect();
    if let Some(sub) = &opts.mapping.subfolder1 {
        let Some(under) = mapping::subfolder1_selection(&old_names, sub, &from) else {
            return Err(SyncError::Subfolder1Missing(sub.clone()));
        };
        extra.extend(under);
    }
    let wanted = opts.selection.select_with(
        &old_names,
        (!opts.folderrec.is_empty() || opts.mapping.subfolder1.is_some()).then_some(&extra[..]),
    );
    let pairs: Vec<(String, String)> = wanted
        .into_iter()
        .map(|o| {
            let n = mapper.map(&o);
            (o, n)
        })
        .collect();
    let ghosts: Vec<String> = old_lsub
        .iter()
        .filter(|s| !old_names.contains(s))
        .cloned()
        .collect();
    let subscriptions = pairs
        .iter()
        .filter(|(o, _)| old_lsub.contains(o))
        .cloned()
        .chain(
            opts.selection
                .select_with(
                    &ghosts,
                    (!opts.folderrec.is_empty() || opts.mapping.subfolder1.is_some())
                        .then_some(&extra[..]),
                )
                .into_iter()
                .map(|o| {
                    let n = mapper.map(&o);
                    (o, n)
                }),
        )
        .collect();
    Ok(Tree {
        pairs,
        // --delete2folders keeps every NEW folder that any OLD folder (selected or not) maps to.
        old_all: old_names.iter().cloned().collect(),
        new_targets: old_names.iter().map(|o| mapper.map(o)).collect(),
        subscriptions,
        new_existing: selectable(&new_list).into_iter().collect(),
        new_subscribed: new_lsub.into_iter().collect(),
        old_side: from,
        new_side: to,
    })
}

/// The folder pairs a pass would work on, read-only (nothing is created or subscribed): OLD name,
/// NEW name, and whether the NEW folder exists now (INBOX always does). Used by `verify`.
pub(crate) async fn mapped_pairs(
    old: &mut Client,
    new: &mut Client,
    opts: &Options,
) -> Result<Vec<(String, String, bool)>, SyncError> {
    let tree = map_tree(old, new, opts).await?;
    Ok(tree
        .pairs
        .into_iter()
        .map(|(o, n)| {
            let exists = tree.new_existing.contains(&n) || n.eq_ignore_ascii_case("INBOX");
            (o, n, exists)
        })
        .collect())
}

/// Both sides' folders, read-only (nothing is created or subscribed).
#[derive(Clone, Debug)]
pub struct TreeView {
    /// Selected OLD folders and the NEW names a pass maps them to.
    pub pairs: Vec<(String, String)>,
    /// Selectable folders on each side.
    pub old_existing: BTreeSet<String>,
    pub new_existing: BTreeSet<String>,
    pub old_side: mapping::Side,
    pub new_side: mapping::Side,
}

/// Reads both trees and maps OLD's names as a pass would, without creating anything (used by
/// `reconcile`, which must not bring back on NEW what the user deleted there).
pub async fn read_tree(
    old: &mut Client,
    new: &mut Client,
    opts: &Options,
) -> Result<TreeView, SyncError> {
    let tree = map_tree(old, new, opts).await?;
    Ok(TreeView {
        pairs: tree.pairs,
        old_existing: tree.old_all,
        new_existing: tree.new_existing,
        old_side: tree.old_side,
        new_side: tree.new_side,
    })
}

/// Creates missing NEW folders (parents first) and subscribes what OLD has subscribed, each
/// pipelined. Failures are counted errors, not fatal: that folder is then skipped.
async fn prepare_new(
    new: &mut Client,
    tree: &Tree,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<BTreeSet<String>, ImapError> {
    let missing: Vec<&(String, String)> = tree
        .pairs
        .iter()
        .filter(|(_, n)| !tree.new_existing.contains(n) && !n.eq_ignore_ascii_case("INBOX"))
        .collect();
    let mut failed = BTreeSet::new();
    if opts.dry {
        for (_, n) in &missing {
            tally.event(Event::FolderCreated { new: n.clone() });
        }
        return Ok(failed);
    }
    let names: Vec<String> = missing.iter().map(|(_, n)| n.clone()).collect();
    for ((old_name, new_name), done) in missing
        .iter()
        .zip(new.for_each_mailbox("CREATE", &names).await?)
    {
        if done.already_exists() {
            continue; // another session (or the server's auto-creation) was first: fine
        }
        match done.ok(Side::New, "CREATE") {
            Ok(_) => {
                tally.stats(|s| s.folders_created += 1);
                tally.event(Event::FolderCreated {
                    new: new_name.clone(),
                });
            }
            Err(e) => {
                tally.error(format!(
                    "Could not create folder [{new_name}] from [{old_name}]: {e}"
                ));
                failed.insert(new_name.clone());
            }
        }
    }
    if opts.subscribe || opts.subscribe_all {
        // imapsync's --subscribe (default): what OLD has subscribed, whether or not the folder
        // exists; --subscribeall: every selected folder as well.
        let all = opts.subscribe_all.then_some(&tree.pairs);
        let wanted: BTreeMap<&String, &String> = tree
            .subscriptions
            .iter()
            .chain(all.into_iter().flatten())
            .filter(|(_, n)| !tree.new_subscribed.contains(n) && !failed.contains(n))
            .map(|(o, n)| (n, o))
            .collect();
        let names: Vec<String> = wanted.keys().map(|n| n.to_string()).collect();
        for ((name, old_name), done) in wanted
            .into_iter()
            .zip(new.for_each_mailbox("SUBSCRIBE", &names).await?)
        {
            match done.ok(Side::New, "SUBSCRIBE") {
                Ok(_) => tally.event(Event::Subscribed { new: name.clone() }),
                Err(e) => tally.warn(format!(
                    "Could not subscribe to [{name}] (host1 [{old_name}]): {e}"
                )),
            }
        }
    }
    Ok(failed)
}

pub(super) fn state_of(s: &MailboxStatus) -> crate::store::MailboxState {
    crate::store::MailboxState {
        uidvalidity: s.uidvalidity,
        uidnext: s.uidnext,
        highestmodseq: s.highestmodseq,
        messages: s.messages,
    }
}

/// True when a folder pair needs no work: the last pass completed and OLD reports exactly the
/// state recorded then (with CONDSTORE, HIGHESTMODSEQ also covers flag changes).
fn unchanged(pair: &FolderPair, old_now: &MailboxStatus) -> bool {
    pair.phase == Phase::Synced && old_now.highestmodseq > 0 && pair.old == Some(state_of(old_now))
}

/// Runs one pass over an account. Fatal errors (login, connection, state store) end it; everything
/// else is counted in the report.
pub async fn sync_account(
    store: &dyn Store,
    old_ep: &Endpoint,
    new_ep: &Endpoint,
    opts: &Options,
    observer: &dyn Observer,
) -> Result<Report, SyncError> {
    let span = tracing::info_span!("sync", account = %old_ep.user, old = %old_ep.connect.host, new = %new_ep.connect.host);
    async move {
        let key = account_key(old_ep, new_ep);
        // A retired account is finished: its state is a summary without tombstones, and a pass
        // would copy back what the user deleted.
        if let Some(id) = store.find_account(&key).await?
            && store.account_state(id).await? == AccountState::Retired
        {
            return Err(SyncError::Retired(format!(
                "{} (OLD {}@{})",
                key.new_user, key.old_user, key.old_host
            )));
        }
        let tally = Tally::new(observer);
        let (old, new) = tokio::join!(login(old_ep, Side::Old), login(new_ep, Side::New));
        let (mut old, mut new) = (old?, new?);
        let mut tree = map_tree(&mut old, &mut new, opts).await?;
        let names: Vec<String> = tree.pairs.iter().map(|(o, _)| o.clone()).collect();
        let mut statuses = Vec::with_capacity(names.len());
        for ((old_name, new_name), status) in
            tree.pairs.drain(..).zip(old.status_many(&names).await?)
        {
            match status {
                Err(e) => tally.error(format!("Could not select: {old_name}: {e}")),
                // --skipemptyfolders: an empty OLD folder is left out, its NEW folder not created.
                Ok(s) if opts.skip_empty_folders && s.messages == 0 => {}
                Ok(s) => statuses.push(((old_name, new_name), s)),
            }
        }
        tree.pairs = statuses.iter().map(|(p, _)| p.clone()).collect();
        tally.event(Event::Plan {
            folders: tree.pairs.clone(),
        });
        tally.stats(|s| s.folders_total = tree.pairs.len() as u64);
        let failed = prepare_new(&mut new, &tree, opts, &tally).await?;
        if let Some(rule) = &opts.delete2_folders {
            let doomed = deletions::folders_to_delete(
                &tree.new_existing,
                &tree.old_all,
                &tree.new_targets,
                rule,
            );
            deletions::delete_folders(&mut new, &doomed, opts, &tally).await?;
        }
        if opts.just_folders {
            tally.stats(|s| s.folders_synced = (tree.pairs.len() - failed.len()) as u64);
            old.logout().await;
            new.logout().await;
            return Ok(tally.into_report());
        }

        let account = store.account(&key).await?;
        // Without CONDSTORE on OLD, or with a selection that changes as time passes, every folder
        // must be looked at.
        // With --delete2 (and duplicates) or --resyncflags, NEW's own changes matter too.
        let may_skip = old.has("CONDSTORE")
            && !opts.messages.depends_on_time()
            && !opts.delete2
            && !opts.delete2_duplicates
            && !opts.resync_flags_host1_wins;
        let mut jobs = Vec::new();
        for ((old_name, new_name), status) in statuses {
            if failed.contains(&new_name) {
                continue;
            }
            let pair = store.folder_pair(account, &old_name, &new_name).await?;
            if may_skip && unchanged(&pair, &status) && tree.new_existing.contains(&new_name) {
                tally.stats(|s| {
                    s.folders_synced += 1;
                    s.messages_on_old += status.messages as u64;
                });
                tally.event(Event::FolderUnchanged {
                    old: old_name,
                    new: new_name,
                });
                continue;
            }
            jobs.push(FolderJob {
                pair,
                messages: status.messages,
                attempts: 0,
            });
        }
        // Largest first, so the pool finishes together; ties keep imapsync's order.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.messages));

        let workers = opts.connections.max(1).min(jobs.len().max(1));
        // A poisoned queue fails the pass: a worker that stopped early would leave folders out.
        let queue = Mutex::new(VecDeque::from(jobs));
        let first = Mutex::new(Some((old, new)));
        let work = (0..workers).map(|_| async {
            let taken = lock(&first, "the pass's first connections")?.take();
            let (mut old, mut new) = match taken {
                Some(pair) => pair,
                None => {
                    match tokio::try_join!(login(old_ep, Side::Old), login(new_ep, Side::New)) {
                        Ok(pair) => pair,
                        Err(e) => return Err(SyncError::from(e)),
                    }
                }
            };
            // The closure drops the queue's lock before the folder's awaits begin.
            let next = || lock(&queue, "the pass's folder queue").map(|mut q| q.pop_front());
            while let Some(job) = next()? {
                let folder = job.pair.old_name.clone();
                match sync_folder(store, &mut old, &mut new, &job, opts, &tally).await {
                    Ok(()) => {}
                    Err(SyncError::Imap(e)) if !e.is_fatal() => {
                        tally.error(format!("Folder {folder}: {e}"))
                    }
                    Err(SyncError::Imap(e)) => {
                        // The connection is gone: reconnect both sides, retry the folder once
                        // (links already committed make the retry cheap), then count it.
                        if job.attempts == 0 {
                            tally.warn(format!("Folder {folder}: {e}; reconnecting and retrying"));
                            lock(&queue, "the pass's folder queue")?
                                .push_back(FolderJob { attempts: 1, ..job });
                        } else {
                            tally.error(format!("Folder {folder}: {e}"));
                        }
                        let (o, n) =
                            tokio::try_join!(login(old_ep, Side::Old), login(new_ep, Side::New))?;
                        old = o;
                        new = n;
                    }
                    Err(e) => return Err(e),
                }
            }
            tokio::join!(old.logout(), new.logout());
            Ok(())
        });
        for result in futures_join_all(work).await {
            result?;
        }
        let report = tally.into_report();
        // A retired account stays retired: OLD is no longer the user's mailbox.
        let retired = store.account_state(account).await? == AccountState::Retired;
        if !opts.dry && !retired {
            let state = if report.errors.is_empty() {
                AccountState::Synced
            } else {
                AccountState::Partial
            };
            store
                .set_account_state(account, state, report.errors.first().map(String::as_str))
                .await?;
        }
        Ok(report)
    }
    .instrument(span)
    .await
}

/// An account's OLD folders mapped to NEW names and created on NEW with their subscriptions
/// (the proxy's login step; no message is copied).
#[derive(Clone, Debug)]
pub struct PreparedTree {
    /// (OLD name, NEW name) of every selected OLD folder whose NEW folder exists.
    pub pairs: Vec<(String, String)>,
    pub old_side: mapping::Side,
    pub new_side: mapping::Side,
}

/// Maps OLD's tree and creates (and subscribes) what NEW lacks.
pub async fn prepare_tree(
    old: &mut Client,
    new: &mut Client,
    opts: &Options,
    observer: &dyn Observer,
) -> Result<PreparedTree, SyncError> {
    let tally = Tally::new(observer);
    let tree = map_tree(old, new, opts).await?;
    let failed = prepare_new(new, &tree, opts, &tally).await?;
    Ok(PreparedTree {
        pairs: tree
            .pairs
            .into_iter()
            .filter(|(_, n)| !failed.contains(n))
            .collect(),
        old_side: tree.old_side,
        new_side: tree.new_side,
    })
}

/// Brings one folder pair up to date. When the last pass completed and OLD's STATUS (with
/// CONDSTORE) shows no change, that STATUS is all it costs. When the observer asks, the folder's
/// UID map is decided after it ([`client_uids`]). Returns the pass's report.
pub async fn sync_pair(
    store: &dyn Store,
    old: &mut Client,
    new: &mut Client,
    pair: &FolderPair,
    opts: &Options,
    observer: &dyn Observer,
) -> Result<Report, SyncError> {
    let tally = Tally::new(observer);
    let old_modseq = pass_pair(store, old, new, pair, opts, &tally).await?;
    if let Some(offset) = observer.modseq_offset(&pair.new_name)
        && old_modseq > offset
    {
        client_uids::raise_offset(store, pair, old_modseq, observer).await?;
    } else if observer.wants_uid_map(&pair.new_name) {
        let now = store
            .folder_pair(pair.account, &pair.old_name, &pair.new_name)
            .await?;
        if let (Some(old_state), Some(new_state)) = (now.old, now.new) {
            let shown = client_uids::decide(store, new, &now, (old_state, new_state)).await?;
            observer.uid_map(&pair.new_name, shown);
        }
    }
    Ok(tally.into_report())
}

/// One pass (or none, see [`sync_pair`]); OLD's HIGHESTMODSEQ when it started.
async fn pass_pair(
    store: &dyn Store,
    old: &mut Client,
    new: &mut Client,
    pair: &FolderPair,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<u64, SyncError> {
    let observer = tally.observer;
    let status = old.status(&pair.old_name).await?;
    if unchanged(pair, &status) {
        return Ok(status.highestmodseq);
    }
    let own = observer.own_changes(&pair.new_name);
    if let Some(own) = &own
        && own::explained(old, pair, &status, own).await?
        && let Some(new_state) = own::new_watermark(new, pair).await?
    {
        // OLD changed by the caller's own writes alone: what the user did on NEW, which they
        // mirror. Both watermarks move past it, as a pass's would (a pass records the NEW
        // state it scanned, writes of the user in flight included).
        let state = state_of(&status);
        store
            .save_pair_state(
                pair.id,
                Some(state),
                Some(new_state),
                pair.adopt_from,
                Phase::Synced,
            )
            .await?;
        observer.old_recorded(&pair.new_name, pair.id, Some(state));
        tracing::debug!("OLD changed by this process's own writes only: state recorded, no pass");
        return Ok(status.highestmodseq);
    }
    if own.is_some() {
        tracing::debug!("OLD changed beyond this process's own writes: a pass reads both sides");
    }
    let job = FolderJob {
        pair: pair.clone(),
        messages: status.messages,
        attempts: 0,
    };
    sync_folder(store, old, new, &job, opts, tally).await?;
    Ok(status.highestmodseq)
}

/// Polls futures concurrently on this task (no spawning: they borrow the caller's data).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests;
