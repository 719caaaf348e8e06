//! The copy pipeline for one folder pair: OLD streams `UID FETCH (FLAGS INTERNALDATE BODY.PEEK[])`
//! with two commands in flight, NEW appends (MULTIAPPEND batches with LITERAL+ where offered), and
//! links are committed after every completed APPEND. Bodies are never altered; large ones stay in
//! spool files; memory is bounded by the channel and batch sizes, not by the folder.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::imap::{AppendMsg, Body, Client, Code, ImapError, Status, uidset};
use crate::store::{FolderPair, Link, Store};

use super::adopt::{header_of, keys, message_key, pair_up};
use super::flags::{FlagSet, PermanentFlags, filter_for_new};
use super::identity::IdentityOptions;
use super::{Event, Options, SyncError, Tally};

/// Messages per `UID FETCH` (the first one of a folder is smaller).
const FETCH_BATCH: usize = 50;
const FIRST_FETCH_BATCH: usize = 10;
const FETCH_IN_FLIGHT: usize = 2;
/// Messages and bytes per APPEND command (MULTIAPPEND), and APPEND commands in flight.
const APPEND_BATCH: usize = 50;
const APPEND_BATCH_BYTES: u64 = 8 << 20;
const APPEND_IN_FLIGHT: usize = 2;
/// Messages waiting between the two sides.
const CHANNEL: usize = 100;

struct Msg {
    uid: u32,
    flags: FlagSet,
    date: Option<String>,
    body: Body,
}

/// A message sent to NEW, waiting for its APPEND to complete.
struct Sent {
    msg: Msg,
    target: FlagSet,
    /// Only without UIDPLUS: the key to find the copy by.
    key: Option<String>,
}

/// Copies `uids` of the selected OLD mailbox into the selected NEW mailbox and returns how many
/// arrived and are linked. `new_uidnext` is NEW's UIDNEXT before the copy (where copies without
/// APPENDUID are looked for).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_messages(
    store: &dyn Store,
    old: &mut Client,
    new: &mut Client,
    pair: &FolderPair,
    uids: &[u32],
    new_uidnext: u32,
    perm: &PermanentFlags,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<usize, SyncError> {
    if uids.is_empty() {
        return Ok(0);
    }
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (links_tx, links_rx) = mpsc::unbounded_channel();
    let (fetched, appended, committed) = tokio::join!(
        fetch(old, uids, tx, pair, tally),
        // `append` owns the links sender: when it ends, the committer finishes.
        append(links_tx, &mut *new, rx, pair, perm, &opts.identity, tally),
        commit(store, pair, links_rx)
    );
    committed?;
    let (mut linked, unlinked) = appended?;
    fetched?;
    if !unlinked.is_empty() {
        linked += link_by_key(
            store,
            new,
            pair,
            new_uidnext,
            unlinked,
            &opts.identity,
            tally,
        )
        .await?;
    }
    Ok(linked)
}

/// The OLD side: pipelined fetches into the channel.
async fn fetch(
    old: &mut Client,
    uids: &[u32],
    tx: mpsc::Sender<Msg>,
    pair: &FolderPair,
    tally: &Tally<'_>,
) -> Result<(), SyncError> {
    let mut in_flight: VecDeque<(String, Vec<u32>)> = VecDeque::new();
    // A small first batch gets NEW's first APPEND going sooner; full batches after it.
    let first = uids.len().min(FIRST_FETCH_BATCH);
    let mut batches = std::iter::once(&uids[..first])
        .filter(|b| !b.is_empty())
        .chain(uids[first..].chunks(FETCH_BATCH));
    loop {
        while in_flight.len() < FETCH_IN_FLIGHT {
            let Some(batch) = batches.next() else { break };
            let tag = old
                .send_uid_fetch(
                    &uidset::format(batch),
                    "UID FLAGS INTERNALDATE BODY.PEEK[]",
                    "",
                )
                .await?;
            in_flight.push_back((tag, batch.to_vec()));
        }
        let Some((tag, batch)) = in_flight.pop_front() else {
            return Ok(());
        };
        let mut got = Vec::with_capacity(batch.len());
        let result = old
            .wait_fetch(&tag, |f| {
                if let (Some(uid), Some(body)) = (f.uid, f.body) {
                    got.push(Msg {
                        uid,
                        flags: FlagSet::from_iter(f.flags.unwrap_or_default()),
                        date: f.internaldate,
                        body,
                    });
                }
            })
            .await;
        match result {
            Ok(()) => {}
            Err(e @ ImapError::Refused { .. }) => {
                tally.error(format!(
                    "- msg {}/{} could not be fetched: {e}",
                    pair.old_name,
                    uidset::format(&batch)
                ));
            }
            Err(e) => return Err(e.into()),
        }
        got.sort_by_key(|m| m.uid);
        for msg in got {
            if tx.send(msg).await.is_err() {
                // The NEW side stopped (its error is reported there).
                return Ok(());
            }
        }
    }
}

/// Commits links as APPENDs complete, one transaction for whatever has arrived meanwhile, so the
/// APPEND pipeline never waits for the disk. A crash between an APPEND and its commit leaves an
/// unlinked copy above the adoption watermark, which the next pass adopts instead of copying.
async fn commit(
    store: &dyn Store,
    pair: &FolderPair,
    mut rx: mpsc::UnboundedReceiver<Vec<Link>>,
) -> Result<(), SyncError> {
    while let Some(mut links) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            links.extend(more);
        }
        store.add_links(pair.id, &links).await?;
    }
    Ok(())
}

/// The NEW side: batches of messages appended with up to two APPENDs in flight; their links go to
/// the committer. Returns how many copies were linked from APPENDUID, and those that could not be
/// (no UIDPLUS).
async fn append(
    links: mpsc::UnboundedSender<Vec<Link>>,
    new: &mut Client,
    mut rx: mpsc::Receiver<Msg>,
    pair: &FolderPair,
    perm: &PermanentFlags,
    ident: &IdentityOptions,
    tally: &Tally<'_>,
) -> Result<(usize, Vec<Sent>), SyncError> {
    let multi = new.has("MULTIAPPEND");
    let uidplus = new.has("UIDPLUS");
    let mut pending: Vec<Msg> = Vec::new();
    let mut in_flight: VecDeque<(String, Vec<Sent>)> = VecDeque::new();
    let mut unlinked = Vec::new();
    let mut linked = 0;
    let mut closed = false;
    loop {
        while !closed && pending.len() < APPEND_BATCH {
            match rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        if !pending.is_empty() && in_flight.len() < APPEND_IN_FLIGHT {
            let take = batch_len(&pending, if multi { APPEND_BATCH } else { 1 });
            let batch: Vec<Msg> = pending.drain(..take).collect();
            let sent = prepare(batch, perm, (!uidplus).then_some(ident), pair, tally);
            let tag = send_batch(new, &pair.new_name, &sent).await?;
            in_flight.push_back((tag, sent));
            continue;
        }
        if let Some((tag, sent)) = in_flight.pop_front() {
            let done = new.wait(&tag, |_| {}).await?;
            let uids = match (&done.status, &done.code) {
                (Status::Ok, Some(Code::AppendUid { uids, .. }))
                    if uidplus && uids.len() == sent.len() =>
                {
                    Some(uids.clone())
                }
                _ => None,
            };
            if done.status == Status::Ok {
                linked += record(&links, pair, sent, uids, &mut unlinked, tally);
            } else if sent.len() > 1 {
                // One bad message fails a whole MULTIAPPEND: retry one by one to find it.
                for s in sent {
                    let tag = send_batch(new, &pair.new_name, std::slice::from_ref(&s)).await?;
                    let done = new.wait(&tag, |_| {}).await?;
                    let uid = match &done.code {
                        Some(Code::AppendUid { uids, .. }) if uidplus && uids.len() == 1 => {
                            Some(uids.clone())
                        }
                        _ => None,
                    };
                    if done.status == Status::Ok {
                        linked += record(&links, pair, vec![s], uid, &mut unlinked, tally);
                    } else {
                        append_failed(&s, pair, &done.line, tally);
                    }
                }
            } else if let Some(s) = sent.first() {
                append_failed(s, pair, &done.line, tally);
            }
            continue;
        }
        if closed {
            return Ok((linked, unlinked));
        }
        match rx.recv().await {
            Some(m) => pending.push(m),
            None => closed = true,
        }
    }
}

/// How many of the pending messages go into the next APPEND (count and byte bounds).
fn batch_len(pending: &[Msg], max: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for m in pending.iter().take(max) {
        if n > 0 && bytes + m.body.len() > APPEND_BATCH_BYTES {
            break;
        }
        bytes += m.body.len();
        n += 1;
    }
    n.max(1)
}

/// Flags NEW can store, and (only when `keyed`, i.e. without UIDPLUS) each message's key.
fn prepare(
    batch: Vec<Msg>,
    perm: &PermanentFlags,
    keyed: Option<&IdentityOptions>,
    pair: &FolderPair,
    tally: &Tally<'_>,
) -> Vec<Sent> {
    batch
        .into_iter()
        .map(|msg| {
            let (target, dropped) = filter_for_new(&msg.flags, perm);
            for flag in dropped {
                tally.warn(format!(
                    "Host2 folder {} cannot store flag {flag} of msg {}/{}: dropped",
                    pair.new_name, pair.old_name, msg.uid
                ));
            }
            let key = keyed.map(|ident| {
                let head = msg.body.prefix(256 * 1024).unwrap_or_default();
                message_key(header_of(&head), msg.body.len() as u32, ident)
            });
            Sent { msg, target, key }
        })
        .collect()
}

async fn send_batch(new: &mut Client, mailbox: &str, sent: &[Sent]) -> Result<String, ImapError> {
    let flags: Vec<Vec<String>> = sent
        .iter()
        .map(|s| s.target.iter().map(str::to_string).collect())
        .collect();
    let msgs: Vec<AppendMsg<'_>> = sent
        .iter()
        .zip(&flags)
        .map(|(s, f)| AppendMsg {
            flags: f,
            internaldate: s.msg.date.as_deref(),
            body: &s.msg.body,
        })
        .collect();
    new.send_append(mailbox, &msgs).await
}

/// A completed APPEND: hand the links to the committer (or keep the copies for finding by key),
/// then report. Returns how many were linked.
fn record(
    links_tx: &mpsc::UnboundedSender<Vec<Link>>,
    pair: &FolderPair,
    sent: Vec<Sent>,
    uids: Option<Vec<u32>>,
    unlinked: &mut Vec<Sent>,
    tally: &Tally<'_>,
) -> usize {
    if let Some(uids) = &uids {
        let links: Vec<Link> = sent
            .iter()
            .zip(uids)
            .map(|(s, &new_uid)| Link {
                old_uid: s.msg.uid,
                new_uid,
                old_flags: s.msg.flags.to_canonical(),
                new_flags: s.target.to_canonical(),
                ident: None,
            })
            .collect();
        // The committer only stops after this function's caller has returned.
        let _ = links_tx.send(links);
    }
    for (i, s) in sent.iter().enumerate() {
        let size = s.msg.body.len();
        tally.stats(|st| {
            st.messages_transferred += 1;
            st.bytes_transferred += size;
            st.biggest_message = st.biggest_message.max(size);
        });
        tally.event(Event::Copied {
            old_folder: pair.old_name.clone(),
            old_uid: s.msg.uid,
            size,
            new_folder: pair.new_name.clone(),
            new_uid: uids.as_ref().map(|u| u[i]),
        });
    }
    if uids.is_none() {
        unlinked.extend(sent);
        return 0;
    }
    sent.len()
}

fn append_failed(s: &Sent, pair: &FolderPair, line: &str, tally: &Tally<'_>) {
    let size = s.msg.body.len();
    let head = s.msg.body.prefix(64 * 1024).unwrap_or_default();
    let subject = super::identity::header_lines(header_of(&head))
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Subject"))
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    tally.error(format!(
        "- msg {}/{} {{{size}}} could not append ( Subject:[{subject}], Date:[{}], Size:[{size}], Flags:[{}] ) to folder {}: {line}",
        pair.old_name,
        s.msg.uid,
        s.msg.date.as_deref().unwrap_or(""),
        s.target,
        pair.new_name,
    ));
}

/// Without UIDPLUS: find the copies among NEW's messages at or above `from` by key and link them.
async fn link_by_key(
    store: &dyn Store,
    new: &mut Client,
    pair: &FolderPair,
    from: u32,
    sent: Vec<Sent>,
    ident: &IdentityOptions,
    tally: &Tally<'_>,
) -> Result<usize, SyncError> {
    let region: Vec<u32> = new
        .uid_search(&format!("UID {}:*", from.max(1)))
        .await?
        .into_iter()
        .filter(|u| *u >= from)
        .collect();
    let new_keys = keys(new, &region, ident).await?;
    let old_keys: Vec<(u32, String, FlagSet)> = sent
        .iter()
        .map(|s| {
            (
                s.msg.uid,
                s.key.clone().unwrap_or_default(),
                s.msg.flags.clone(),
            )
        })
        .collect();
    let mut links = pair_up(&old_keys, &new_keys);
    // The base of NEW is what we appended (the server may add flags such as \Recent).
    for link in &mut links {
        if let Some(s) = sent.iter().find(|s| s.msg.uid == link.old_uid) {
            link.new_flags = s.target.to_canonical();
        }
    }
    store.add_links(pair.id, &links).await?;
    if links.len() < sent.len() {
        tally.error(format!(
            "Host2 folder {}: {} appended messages could not be found again (no UIDPLUS); they will be matched by identity on the next pass",
            pair.new_name,
            sent.len() - links.len()
        ));
    }
    Ok(links.len())
}
