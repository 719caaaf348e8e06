//! The copy pipeline for one folder pair: OLD streams `UID FETCH (FLAGS INTERNALDATE BODY.PEEK[])`
//! with two commands in flight, NEW appends (MULTIAPPEND batches with LITERAL+ where offered), and
//! links are committed after every completed APPEND. Bodies are never altered; large ones stay in
//! spool files; memory is bounded by the channel and batch sizes, not by the folder. Every UID
//! handed in comes back linked, failed (with the reason) or missing from OLD's answer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::imap::{AppendMsg, Client, Code, Done, ImapError, Side, Status, uidset};
use crate::store::{FolderPair, Link, Store};

use super::adopt::{header_of, keys, message_key, pair_up};
use super::dates::{append_date, beyond_32bit, parse_date_time};
use super::flags::{FlagRewrite, FlagSet, PermanentFlags, filter_for_new, syntax_check};
use super::identity::{IdentityOptions, identity_key};
use super::rate::RateLimit;
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
/// Links committed together (each commit costs a few statements, whatever its size), and the
/// longest the first of them waits for the others.
const COMMIT_LINKS: usize = 256;
const COMMIT_WAIT: Duration = Duration::from_millis(500);
/// Header bytes read from a message for its Subject, Date or identity key.
const HEAD: usize = 256 * 1024;

struct Msg {
    uid: u32,
    flags: FlagSet,
    /// OLD's INTERNALDATE as sent; after `prepare`, the date given to APPEND.
    date: Option<String>,
    body: crate::imap::Body,
}

/// A message sent to NEW, waiting for its APPEND to complete.
struct Sent {
    msg: Msg,
    target: FlagSet,
    /// Only without UIDPLUS: the key to find the copy by.
    key: Option<String>,
}

/// What became of the UIDs a copy was given.
#[derive(Debug, Default)]
pub(crate) struct Copied {
    /// Copied and linked.
    pub linked: Vec<u32>,
    /// Not copied, with the reason (each also reported through the tally).
    pub failed: Vec<(u32, String)>,
    /// Missing from OLD's FETCH answer, with what was wrong; the pass checks whether OLD still
    /// has them (a message expunged meanwhile is not a loss).
    pub missing: Vec<(u32, String)>,
}

/// Copies `uids` of the selected OLD mailbox into NEW's folder. `new_uidnext` is NEW's UIDNEXT
/// before the copy (where copies without APPENDUID are looked for).
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
) -> Result<Copied, SyncError> {
    if uids.is_empty() {
        return Ok(Copied::default());
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
    let mut appended = appended?;
    let (fetch_failed, missing) = fetched?;
    let mut copied = Copied {
        linked: std::mem::take(&mut appended.linked),
        failed: appended.failed,
        missing,
    };
    copied.failed.extend(fetch_failed);
    if !appended.unlinked.is_empty() {
        let (linked, lost) = link_by_key(
            store,
            new,
            pair,
            new_uidnext,
            appended.unlinked,
            &opts.identity,
            tally,
        )
        .await?;
        copied.linked.extend(linked);
        copied.failed.extend(lost);
    }
    if !appended.far_dates.is_empty() {
        check_dates(new, pair, &appended.far_dates, tally).await?;
    }
    Ok(copied)
}

/// The OLD side: pipelined fetches into the channel. With `add_header` (imapsync's --addheader),
/// a message without identifying header lines gets `Message-Id: <UID@imapsync>` in front.
/// Returns the UIDs whose FETCH OLD refused (with the reason) and those its answers left out.
/// Servers may interleave the answers of pipelined FETCHes (Dovecot does), so a message is
/// taken whichever command's wait it arrives in.
async fn fetch(
    old: &mut Client,
    uids: &[u32],
    tx: mpsc::Sender<Msg>,
    pair: &FolderPair,
    add_header: Option<&IdentityOptions>,
    tally: &Tally<'_>,
) -> Result<(Vec<(u32, String)>, Vec<(u32, String)>), SyncError> {
    let mut failed = Vec::new();
    let mut outstanding: BTreeSet<u32> = uids.iter().copied().collect();
    let mut bodiless = BTreeSet::new();
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
            break;
        };
        let mut got = Vec::with_capacity(batch.len());
        let result = old
            .wait_fetch(&tag, |f| match (f.uid, f.body) {
                (Some(uid), Some(body)) if outstanding.remove(&uid) => got.push(Msg {
                    uid,
                    flags: FlagSet::from_iter(f.flags.unwrap_or_default()),
                    date: f.internaldate,
                    body,
                }),
                (Some(uid), None) => {
                    bodiless.insert(uid);
                }
                // Unsolicited (another session's flag change) or already taken.
                _ => {}
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
                for uid in batch.iter().filter(|u| outstanding.remove(u)) {
                    failed.push((*uid, format!("could not be fetched: {e}")));
                }
            }
            Err(e) => return Err(e.into()),
        }
        got.sort_by_key(|m| m.uid);
        if let Some(ident) = add_header {
            let mut with_ids = Vec::with_capacity(got.len());
            for m in got {
                let m = with_message_id(m, ident)
                    .await
                    .map_err(|source| ImapError::Spool {
                        side: old.side(),
                        source,
                    })?;
                with_ids.push(m);
            }
            got = with_ids;
        }
        for msg in got {
            if tx.send(msg).await.is_err() {
                // The NEW side stopped (its error is reported there).
                return Ok((failed, Vec::new()));
            }
        }
    }
    let missing = outstanding
        .into_iter()
        .map(|uid| {
            let why = if bodiless.contains(&uid) {
                "host1's FETCH answer for it had no BODY[]"
            } else {
                "host1's FETCH answer did not include it"
            };
            (uid, why.to_string())
        })
        .collect();
    Ok((failed, missing))
}

/// Commits links as APPENDs complete, so the APPEND pipeline never waits for the disk: one
/// transaction for [`COMMIT_LINKS`] links, or for what the APPENDs of [`COMMIT_WAIT`] gave, or
/// for the last ones. A crash between an APPEND and its commit leaves an unlinked copy above the
/// adoption watermark, which the next pass adopts instead of copying.
async fn commit(
    store: &dyn Store,
    pair: &FolderPair,
    mut rx: mpsc::UnboundedReceiver<Vec<Link>>,
) -> Result<(), SyncError> {
    while let Some(mut links) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        while links.len() < COMMIT_LINKS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => links.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        store.add_links(pair.id, &links).await?;
    }
    Ok(())
}

/// What the NEW side did.
#[derive(Default)]
struct Appended {
    linked: Vec<u32>,
    /// Appended without APPENDUID (no UIDPLUS): to be found by key.
    unlinked: Vec<Sent>,
    failed: Vec<(u32, String)>,
    /// (NEW UID, OLD UID, date sent) of copies dated outside 32-bit time: NEW may have stored
    /// another date.
    far_dates: Vec<(u32, u32, String)>,
}

/// An APPEND on its way: its tag.
type InFlight = (String, Vec<Sent>);

/// The NEW side: batches of messages appended with up to two APPENDs in flight; their links go to
/// the committer.
async fn append(
    links: mpsc::UnboundedSender<Vec<Link>>,
    new: &mut Client,
    mut rx: mpsc::Receiver<Msg>,
    pair: &FolderPair,
    perm: &PermanentFlags,
    opts: &Options,
    tally: &Tally<'_>,
) -> Result<Appended, SyncError> {
    let ident = &opts.identity;
    let rewrite = FlagRewrite::new(opts.filter_buggy_flags, &opts.regexflag)
        .map_err(|e| SyncError::Options(format!("--regexflag: {e}")))?;
    let mut limit = RateLimit::new(opts);
    // With a rate limit, one message per APPEND (as imapsync) so the pauses fall between messages.
    let multi = new.has("MULTIAPPEND") && !limit.is_active();
    let mut out = Appended::default();
    let mut ctx = Append {
        links,
        pair,
        uidplus: new.has("UIDPLUS"),
        tally,
    };
    let mut pending: Vec<Msg> = Vec::new();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
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
                (!ctx.uidplus).then_some(ident),
                pair,
                tally,
            );
            let tag = send_batch(new, &pair.new_name, &sent).await?;
            in_flight.push_back((tag, sent));
            continue;
        }
        if let Some((tag, sent)) = in_flight.pop_front() {
            let done = new.wait(&tag, |_| {}).await?;
            if done.status == Status::Ok {
                let bytes: u64 = sent.iter().map(|s| s.msg.body.len()).sum();
                let count = sent.len();
                ctx.record(&mut out, sent, &done);
                limit.pause(count, bytes).await;
                continue;
            }
            untrusted_after(new, &done)?;
            // One bad message fails a whole MULTIAPPEND: retry one by one to find it.
            let alone = sent.len() == 1;
            for s in sent {
                let done = if alone {
                    done.clone()
                } else {
                    append_now(new, &pair.new_name, &s).await?
                };
                let bytes = s.msg.body.len();
                if ctx.retry_refused(new, &mut out, s, done).await? {
                    limit.pause(1, bytes).await;
                }
            }
            continue;
        }
        if closed {
            return Ok(out);
        }
        match rx.recv().await {
            Some(m) => pending.push(m),
            None => closed = true,
        }
    }
}

/// What the NEW side's completions need besides the connection.
struct Append<'a, 'b> {
    links: mpsc::UnboundedSender<Vec<Link>>,
    pair: &'a FolderPair,
    uidplus: bool,
    tally: &'a Tally<'b>,
}

impl Append<'_, '_> {
    /// A completed APPEND: hand the links to the committer (or keep the copies for finding by
    /// key), then report.
    fn record(&mut self, out: &mut Appended, sent: Vec<Sent>, done: &Done) {
        let uids = match &done.code {
            Some(Code::AppendUid { uids, .. }) if self.uidplus && uids.len() == sent.len() => {
                Some(uids.clone())
            }
            _ => None,
        };
        let pair = self.pair;
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
            // The committer only stops after `append` has returned.
            let _ = self.links.send(links);
        }
        for (i, s) in sent.iter().enumerate() {
            let size = s.msg.body.len();
            self.tally.stats(|st| {
                st.messages_transferred += 1;
                st.bytes_transferred += size;
                st.biggest_message = st.biggest_message.max(size);
            });
            let new_uid = uids.as_ref().map(|u| u[i]);
            self.tally.event(Event::Copied {
                old_folder: pair.old_name.clone(),
                old_uid: s.msg.uid,
                size,
                new_folder: pair.new_name.clone(),
                new_uid,
            });
            if let (Some(new_uid), Some(date)) = (new_uid, &s.msg.date)
                && parse_date_time(date).is_some_and(|(t, _)| beyond_32bit(t))
            {
                out.far_dates.push((new_uid, s.msg.uid, date.clone()));
            }
        }
        match uids {
            Some(_) => out.linked.extend(sent.iter().map(|s| s.msg.uid)),
            None => out.unlinked.extend(sent),
        }
    }

    /// One message NEW refused (`done`): once more without the flags it refused (those its
    /// answer names, else every keyword and flag beyond RFC 3501's five), then counted as
    /// failed. Returns whether it was appended.
    async fn retry_refused(
        &mut self,
        new: &mut Client,
        out: &mut Appended,
        mut s: Sent,
        done: Done,
    ) -> Result<bool, SyncError> {
        if done.status == Status::Ok {
            self.record(out, vec![s], &done);
            return Ok(true);
        }
        let named: FlagSet = s
            .target
            .iter()
            .filter(|f| {
                done.text
                    .to_ascii_lowercase()
                    .contains(&f.to_ascii_lowercase())
            })
            .collect();
        let without: FlagSet = if named.is_empty() {
            s.target
                .iter()
                .filter(|f| is_rfc3501_system_flag(f))
                .collect()
        } else {
            s.target.difference(&named).collect()
        };
        if without != s.target {
            let dropped: Vec<String> = s.target.difference(&without).map(String::from).collect();
            s.target = without;
            let again = append_now(new, &self.pair.new_name, &s).await?;
            if again.status == Status::Ok {
                for flag in &dropped {
                    self.tally.warn(format!(
                        "Host2 folder {} refused flag {flag} of msg {}/{} ({}): dropped",
                        self.pair.new_name, self.pair.old_name, s.msg.uid, done.line
                    ));
                }
                self.tally
                    .stats(|st| st.flags_dropped += dropped.len() as u64);
                self.record(out, vec![s], &again);
                return Ok(true);
            }
            untrusted_after(new, &again)?;
        }
        let reason = append_failed(&s, self.pair, &done.line, self.tally);
        out.failed.push((s.msg.uid, reason));
        Ok(false)
    }
}

fn is_rfc3501_system_flag(flag: &str) -> bool {
    flag.starts_with('\\') && syntax_check(flag).is_ok()
}

/// A BAD to an APPEND whose literal went out without waiting (LITERAL+) leaves the server
/// reading the message as commands: the connection is not used again.
fn untrusted_after(new: &Client, done: &Done) -> Result<(), ImapError> {
    if done.status == Status::Bad && new.has("LITERAL+") {
        return Err(ImapError::Protocol {
            side: Side::New,
            message: format!(
                "APPEND answered BAD after its message was sent ({}); reconnecting",
                done.line
            ),
        });
    }
    Ok(())
}

/// Appends one message and waits for the answer.
async fn append_now(new: &mut Client, mailbox: &str, s: &Sent) -> Result<Done, ImapError> {
    let tag = send_batch(new, mailbox, std::slice::from_ref(s)).await?;
    new.wait(&tag, |_| {}).await
}

/// imapsync's `--addheader`: `Message-Id: <UID@imapsync>` before a message that has no header line
/// its identity key could use, so later runs (and imapsync itself) recognise the copy.
async fn with_message_id(mut msg: Msg, ident: &IdentityOptions) -> std::io::Result<Msg> {
    let head = msg.body.prefix(HEAD)?;
    if identity_key(header_of(&head), msg.body.len() as u32, ident).is_none() {
        let line = format!("Message-Id: <{}@imapsync>\r\n", msg.uid);
        msg.body = msg.body.with_prefix(line.as_bytes()).await?;
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

/// Flags NEW can store (OLD's after the `--filterbuggyflags`/`--regexflag` rewrites; the others
/// are dropped with a warning), the APPEND date (`dates`), and (only when `keyed`, i.e. without
/// UIDPLUS) each message's key. Nothing NEW is known to refuse is ever sent.
fn prepare(
    batch: Vec<Msg>,
    perm: &PermanentFlags,
    rewrite: &FlagRewrite,
    dates: super::DateSource,
    keyed: Option<&IdentityOptions>,
    pair: &FolderPair,
    tally: &Tally<'_>,
) -> Vec<Sent> {
    batch
        .into_iter()
        .map(|mut msg| {
            let head = msg.body.prefix(HEAD).unwrap_or_default();
            msg.date = match append_date(msg.date.as_deref(), &head, dates) {
                Ok(date) => date,
                Err(bad) => {
                    tally.warn(format!(
                        "msg {}/{} has INTERNALDATE {bad:?} on host1, not an IMAP date-time: host2 stamps the time of the copy",
                        pair.old_name, msg.uid
                    ));
                    None
                }
            };
            let (target, dropped) = filter_for_new(&rewrite.apply(&msg.flags), perm);
            for (flag, why) in &dropped {
                tally.warn(format!(
                    "Host2 folder {} cannot store flag {flag} of msg {}/{} ({why}): dropped",
                    pair.new_name, pair.old_name, msg.uid
                ));
            }
            tally.stats(|st| st.flags_dropped += dropped.len() as u64);
            let key = keyed.map(|ident| message_key(header_of(&head), msg.body.len() as u32, ident));
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

/// Reports a message NEW would not take, in imapsync's words; returns the reason.
fn append_failed(s: &Sent, pair: &FolderPair, line: &str, tally: &Tally<'_>) -> String {
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
    format!("could not append: {line}")
}

/// Copies dated outside 32-bit time: reads back what NEW stored and warns for each date NEW
/// replaced (Dovecot stores the time of the APPEND for dates after 2038-01-19).
async fn check_dates(
    new: &mut Client,
    pair: &FolderPair,
    far: &[(u32, u32, String)],
    tally: &Tally<'_>,
) -> Result<(), SyncError> {
    new.select(&pair.new_name, true).await?;
    let uids: Vec<u32> = far.iter().map(|(n, _, _)| *n).collect();
    let mut stored = BTreeMap::new();
    new.uid_fetch(&uids, "UID INTERNALDATE", "", |f| {
        if let (Some(uid), Some(date)) = (f.uid, f.internaldate) {
            stored.insert(uid, date);
        }
    })
    .await?;
    for (new_uid, old_uid, sent) in far {
        let kept = stored.get(new_uid);
        let same = kept.and_then(|k| parse_date_time(k)).map(|(t, _)| t)
            == parse_date_time(sent).map(|(t, _)| t);
        if !same {
            tally.warn(format!(
                "msg {}/{old_uid}: host2 folder {} stored INTERNALDATE {:?} instead of {sent:?} (a date the server cannot store)",
                pair.old_name,
                pair.new_name,
                kept.map_or("none", String::as_str)
            ));
            tally.stats(|st| st.dates_substituted += 1);
        }
    }
    Ok(())
}

/// Without UIDPLUS: find the copies among NEW's messages at or above `from` by key and link them.
/// Returns the OLD UIDs linked, and those whose copy was not found (with the reason).
async fn link_by_key(
    store: &dyn Store,
    new: &mut Client,
    pair: &FolderPair,
    from: u32,
    sent: Vec<Sent>,
    ident: &IdentityOptions,
    tally: &Tally<'_>,
) -> Result<(Vec<u32>, Vec<(u32, String)>), SyncError> {
    // The copies arrived while the folder was not selected (or only read-only): look afresh.
    new.select(&pair.new_name, true).await?;
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
    let linked: BTreeSet<u32> = links.iter().map(|l| l.old_uid).collect();
    let lost: Vec<(u32, String)> = sent
        .iter()
        .filter(|s| !linked.contains(&s.msg.uid))
        .map(|s| {
            (
                s.msg.uid,
                "appended, but not found again on host2 (no UIDPLUS); matched by identity on the next pass".to_string(),
            )
        })
        .collect();
    if !lost.is_empty() {
        tally.error(format!(
            "Host2 folder {}: {} appended messages could not be found again (no UIDPLUS); they will be matched by identity on the next pass",
            pair.new_name,
            lost.len()
        ));
    }
    Ok((linked.into_iter().collect(), lost))
}
