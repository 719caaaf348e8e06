//! The copy pipeline for one folder pair: OLD streams `UID FETCH (FLAGS INTERNALDATE BODY.PEEK[])`
//! with two commands in flight, NEW appends (MULTIAPPEND batches with LITERAL+ where offered), and
//! links are committed after every completed APPEND. Bodies are never altered; large ones stay in
//! spool files; memory is bounded by the channel and batch sizes, not by the folder.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::imap::{AppendMsg, Body, Client, Code, ImapError, Status, uidset};
use crate::store::{FolderPair, Link, Store};

use super::adopt::{header_of, keys, message_key, pair_up};
use super::flags::{FlagSet, PermanentFlags, filter_for_new};
use super::identity::{IdentityOptions, identity_key};
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
        fetch(
            old,
            uids,
            tx,
            pair,
            opts.add_header.then_some(&opts.identity),
            tally
        ),
        // `append` owns the links sender: when it ends, the committer finishes.
        append(links_tx, &mut *new, rx, pair, perm, opts, tally),
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
/// The OLD side: pipelined fetches into the channel. With `add_header` (imapsync's --addheader),
/// a message without identifying header lines gets `Message-Id: <UID@imapsync>` in front.
async fn fetch(
    old: &mut Client,
    uids: &[u32],
    tx: mpsc::Sender<Msg>,
    pair: &FolderPair,
    add_header: Option<&IdentityOptions>,
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
        if let Some(ident) = add_header {
            got = got
                .into_iter()
                .map(|m| with_message_id(m, ident))
                .collect::<Result<_, _>>()
                .map_err(|source| ImapError::Spool {
                    side: old.side(),
                    source,
                })?;
        }
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
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<(usize, Vec<Sent>), SyncError> {
    let ident = &opts.identity;
    let rewrite = FlagRewrite::new(opts.filter_buggy_flags, &opts.regexflag)
        .map_err(|e| SyncError::Options(format!("--regexflag: {e}")))?;
    let mut limit = RateLimit::new(opts);
    // With a rate limit, one message per APPEND (as imapsync) so the pauses fall between messages.
    let multi = new.has("MULTIAPPEND") && !limit.is_active();
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
            let sent = prepare(
                batch,
                perm,
                &rewrite,
                opts.dates,
                (!uidplus).then_some(ident),
                pair,
                tally,
            );
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
                let bytes: u64 = sent.iter().map(|s| s.msg.body.len()).sum();
                let count = sent.len();
                linked += record(&links, pair, sent, uids, &mut unlinked, tally);
                limit.pause(count, bytes).await;
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
                        let bytes = s.msg.body.len();
                        linked += record(&links, pair, vec![s], uid, &mut unlinked, tally);
                        limit.pause(1, bytes).await;
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

/// imapsync's `--addheader`: `Message-Id: <UID@imapsync>` before a message that has no header line
/// its identity key could use, so later runs (and imapsync itself) recognise the copy.
fn with_message_id(mut msg: Msg, ident: &IdentityOptions) -> std::io::Result<Msg> {
    let head = msg.body.prefix(256 * 1024)?;
    if identity_key(header_of(&head), msg.body.len() as u32, ident).is_none() {
        let line = format!("Message-Id: <{}@imapsync>\r\n", msg.uid);
        msg.body = msg.body.with_prefix(line.as_bytes())?;
    }
    Ok(msg)
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

/// Flags NEW can store (OLD's after the `--filterbuggyflags`/`--regexflag` rewrites), the APPEND
/// date (`dates`), and (only when `keyed`, i.e. without UIDPLUS) each message's key.
fn prepare(
    batch: Vec<Msg>,
    perm: &PermanentFlags,
    rewrite: &FlagRewrite,
    dates: DateSource,
    keyed: Option<&IdentityOptions>,
    pair: &FolderPair,
    tally: &Tally<'_>,
) -> Vec<Sent> {
    batch
        .into_iter()
        .map(|mut msg| {
            msg.date = append_date(&msg, dates);
            let (target, dropped) = filter_for_new(&rewrite.apply(&msg.flags), perm);
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
    let new_keys = keys(new, &region, ident, false).await?;
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

use super::DateSource;
use super::flags::FlagRewrite;

/// The INTERNALDATE given to APPEND: OLD's (the default), the `Date:` header's instant
/// (`--idatefromheader`, OLD's INTERNALDATE when it is missing or unparseable), or none
/// (`--nosyncinternaldates`: NEW stamps the time of the copy).
fn append_date(msg: &Msg, dates: DateSource) -> Option<String> {
    match dates {
        DateSource::Internal => msg.date.clone(),
        DateSource::None => None,
        DateSource::Header => {
            let head = msg.body.prefix(256 * 1024).unwrap_or_default();
            super::identity::header_lines(header_of(&head))
                .into_iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("Date"))
                .and_then(|(_, v)| imap_date_of_header(&String::from_utf8_lossy(&v)))
                .or_else(|| msg.date.clone())
        }
    }
}

/// An RFC 5322 `Date:` value as an IMAP date-time (`dd-Mon-yyyy hh:mm:ss +zzzz`), keeping its
/// zone. Trailing comments such as `(CEST)` are ignored. `None` when it cannot be parsed.
fn imap_date_of_header(value: &str) -> Option<String> {
    let mut v = value.trim();
    while let Some(open) = v.strip_suffix(')').and_then(|rest| rest.rfind('(')) {
        v = v[..open].trim_end();
    }
    let date = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(date.format("%d-%b-%Y %H:%M:%S %z").to_string())
}

/// imapsync's `--maxsleep` default.
const MAX_SLEEP: Duration = Duration::from_secs(2);

/// `--maxmessagespersecond` / `--maxbytespersecond`, checked after each completed APPEND as
/// imapsync does: the average rate since the start is brought under the ceiling by a pause of at
/// most [`MAX_SLEEP`]. The counters are per folder pair (a pass-wide counter would need plumbing
/// through the account loop), so folders synced in parallel are each limited on their own.
struct RateLimit {
    start: Instant,
    messages: u64,
    bytes: u64,
    max_mps: Option<f64>,
    max_bps: Option<u64>,
    shared: Option<std::sync::Arc<super::SharedRate>>,
}

impl RateLimit {
    fn new(opts: &Options) -> Self {
        RateLimit {
            start: Instant::now(),
            messages: 0,
            bytes: 0,
            max_mps: opts.max_messages_per_second.filter(|m| *m > 0.0),
            max_bps: opts.max_bytes_per_second.filter(|b| *b > 0),
            shared: opts
                .shared_rate
                .clone()
                .filter(|s| s.max_mps.is_some() || s.max_bps.is_some()),
        }
    }

    fn is_active(&self) -> bool {
        self.max_mps.is_some() || self.max_bps.is_some() || self.shared.is_some()
    }

    /// Counts the `messages` and `bytes` just appended and sleeps as long as the rate requires.
    async fn pause(&mut self, messages: usize, bytes: u64) {
        if !self.is_active() {
            return;
        }
        self.messages += messages as u64;
        self.bytes += bytes;
        let mut wait = rate_sleep(
            self.messages,
            self.bytes,
            self.start.elapsed(),
            self.max_mps,
            self.max_bps,
        );
        if let Some(s) = &self.shared {
            use std::sync::atomic::Ordering;
            let m = s.messages.fetch_add(messages as u64, Ordering::Relaxed) + messages as u64;
            let b = s.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            wait = wait.max(rate_sleep(m, b, s.start.elapsed(), s.max_mps, s.max_bps));
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// imapsync's sleep: max(messages / max_mps − elapsed, bytes / max_bps − elapsed), never negative,
/// capped at [`MAX_SLEEP`], rounded to 0.01 s.
fn rate_sleep(
    messages: u64,
    bytes: u64,
    elapsed: Duration,
    max_mps: Option<f64>,
    max_bps: Option<u64>,
) -> Duration {
    let elapsed = elapsed.as_secs_f64();
    let by_messages = max_mps.map_or(0.0, |m| messages as f64 / m - elapsed);
    let by_bytes = max_bps.map_or(0.0, |b| bytes as f64 / b as f64 - elapsed);
    let secs = by_messages
        .max(by_bytes)
        .clamp(0.0, MAX_SLEEP.as_secs_f64());
    Duration::from_secs_f64((secs * 100.0).round() / 100.0)
}

#[cfg(test)]
mod rate_and_date_tests {
    use super::*;

    #[test]
    fn header_dates() {
        for (header, expected) in [
            (
                "Tue, 5 Mar 2024 14:07:09 +0100",
                Some("05-Mar-2024 14:07:09 +0100"),
            ),
            (
                "Sun, 31 Dec 2023 23:59:59 -0800 (PST)",
                Some("31-Dec-2023 23:59:59 -0800"),
            ),
            (
                "1 Jan 2020 00:00:00 GMT",
                Some("01-Jan-2020 00:00:00 +0000"),
            ),
            (
                "  Fri, 12 Jul 2019 08:30:00 +0000  ",
                Some("12-Jul-2019 08:30:00 +0000"),
            ),
            ("yesterday", None),
            ("", None),
        ] {
            assert_eq!(imap_date_of_header(header).as_deref(), expected, "{header}");
        }
    }

    #[test]
    fn rate_sleeps() {
        let s = Duration::from_secs_f64;
        // (messages, bytes, elapsed, max_mps, max_bps, expected)
        for (m, b, e, mps, bps, expected) in [
            (10, 0, 0.0, None, None, 0.0),
            (10, 0, 0.2, Some(20.0), None, 0.3),
            (10, 0, 0.6, Some(20.0), None, 0.0),
            (1, 3_000, 0.5, None, Some(1_000), 2.0),
            (1, 1_500, 0.5, None, Some(1_000), 1.0),
            (4, 1_000, 1.0, Some(2.0), Some(1_000), 1.0),
            (1_000, 0, 0.0, Some(1.0), None, 2.0),
        ] {
            assert_eq!(rate_sleep(m, b, s(e), mps, bps), s(expected), "{m} {b} {e}");
        }
    }
}
