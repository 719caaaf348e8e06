//! After login: bytes both ways between the client and NEW through the framer ([`ClientToNew`],
//! [`NewToClient`]), rewriting capability lists and, where folders keep client caches, numbers
//! ([`translate`](super::translate)); [`Migration`] is what both directions do for the migration.
//! When the server shuts down, `* BYE Server shutting down` goes out between two responses.

use std::borrow::Cow;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::capabilities::rewrite_capabilities;
use super::inspect::{dated_append, inspect, literal_too_many, may_write};
use super::intercept::{Before, Tracker};
use super::metrics::Metrics;
use super::prelogin::LoggedIn;
use super::session::{
    BYE_TIMEOUT, BoxIo, Input, SHUTDOWN_TEXT, Settings, command_named, first_token, last_words,
    release_if_idle, secret_head, send_by, shown, stopped,
};
use super::translate::{Maps, Translator};
use crate::imap::framer::{Event, FrameError, Framer, Limits};
use crate::migrate::{Account, ClientCaches, Need, NotMarked, Watch};
use crate::uidmap::UidMap;

/// Output is flushed once this much is pending, or when the input is drained.
const FLUSH_AT: usize = 128 * 1024;
/// Most of a command kept for tracking (the relay forwards every byte regardless), and the
/// largest literal kept in it: mailbox names, not messages.
const TRACK_MAX: usize = 16 * 1024;
const TRACK_LITERAL: u64 = 4 * 1024;
/// The largest message of an APPEND kept with its command in a migrated session, for the
/// mirror to append to OLD as NEW got it ([`Appended`](crate::migrate::Appended)); the proxy
/// gives NEW its INTERNALDATE where the client gave none, so that OLD gets the same.
const APPEND_KEPT: u64 = 64 * 1024;
/// Longest response line from NEW framed as a line (longer ones are relayed as is); in a
/// session that translates numbers (client caches), where a line relayed as is would show NEW's
/// UIDs, `NEW_MAX_TRANSLATED` (a SEARCH result of about two million UIDs).
const NEW_MAX_LINE: usize = 1024 * 1024;
const NEW_MAX_TRANSLATED: usize = 16 * 1024 * 1024;
/// Replies of the proxy's own (BAD) waiting to be placed between NEW's responses; past this the
/// session reads no more from the client until they are written.
const INJECT_QUEUE: usize = 16;
/// Replies of the proxy's own BAD in a row (nothing valid between) after which the client is
/// sent away, as Dovecot does with "Too many invalid IMAP commands".
const MAX_BAD_IN_A_ROW: u32 = 20;
/// The `* BYE` a client gets instead of the answer to a write the proxy could not save.
const NOT_SAVED: &str = "This change could not be saved by the proxy; reconnect to see NEW's state";
/// Why a folder that keeps client caches is not shown yet (after `NO [UNAVAILABLE]`).
const NOT_READY: &str = "This folder is still being copied; try again in a moment";
/// How long NEW's answers are still read once the client side of a session ended.
const ANSWERS_AFTER_CLIENT_LEFT: Duration = Duration::from_secs(30);

/// Why the relay stopped.
#[derive(Debug)]
enum End {
    ClientClosed,
    NewClosed,
    IdleTimeout,
    /// The client stream cannot be framed any more: BYE with this text.
    Bye(&'static str),
}

/// What the NEW→client side tells the client→NEW side about a synchronising literal.
enum Continuation {
    Go,
    Refused,
}

/// Now as an IMAP INTERNALDATE (`07-Dec-2026 08:40:00 +0000`).
fn internaldate_now() -> String {
    chrono::Utc::now()
        .format("%d-%b-%Y %H:%M:%S +0000")
        .to_string()
}

/// Whether a tagged response line says `OK`.
fn status_ok(line: &[u8]) -> bool {
    line.split(|b| *b == b' ')
        .nth(1)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"OK"))
}

/// The command waiting for NEW's continuation of a synchronising literal.
type Waiting = StdMutex<Option<Awaiting>>;

struct Awaiting {
    tag: String,
    /// It may write: should NEW answer it OK before the continuation, OLD is reconciled.
    may_write: bool,
}

/// The session's own state behind a lock that a panic may have poisoned: the session ends
/// rather than go on with state it cannot trust.
fn poisoned<T>(_: T) -> io::Error {
    io::Error::other("session state poisoned by an earlier panic")
}

/// The proxy's own replies waiting to go out, appended to `out` (at a response boundary).
fn take_replies(inject: &mut mpsc::Receiver<Vec<u8>>, out: &mut Vec<u8>) {
    while let Ok(reply) = inject.try_recv() {
        out.extend_from_slice(&reply);
    }
}

/// Takes the command waiting for a continuation.
fn take_waiting(waiting: &Waiting) -> io::Result<Option<Awaiting>> {
    Ok(waiting.lock().map_err(poisoned)?.take())
}

pub(super) async fn relay(
    session: LoggedIn,
    settings: &Settings,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let LoggedIn {
        client,
        input,
        mut framer,
        new,
        new_leftover,
        account,
        caches,
    } = session;
    let _presence = account.as_ref().map(Account::enter);
    // Folder names are normalised with NEW's separator once the account's tree is mapped.
    let sep = account
        .as_ref()
        .and_then(|a| a.separators())
        .map(|(_, new)| new);
    let tracker = StdMutex::new(Tracker::new(sep, account.is_some()));
    let idle = Duration::from_secs(settings.limits.idle_timeout_secs);
    let migration = Migration {
        account: account.as_ref(),
        tracker: &tracker,
        answered: Notify::new(),
        client_left: AtomicBool::new(false),
        settling: AtomicUsize::new(0),
        budget: settings
            .migrator
            .as_ref()
            .map_or(Duration::ZERO, |m| m.budget()),
        metrics: &settings.metrics,
        write_timeout: Duration::from_secs(settings.limits.write_timeout_secs),
        idle,
        translator: caches.map(|c| (StdMutex::new(Translator::new()), c)),
        cache_wait: settings
            .migrator
            .as_ref()
            .map_or(Duration::ZERO, |m| m.cache_wait()),
    };
    framer.set_limits(Limits {
        max_line: settings.limits.max_line_length,
        max_literal: u64::MAX,
    });
    let (client_rd, client_wr) = tokio::io::split(client);
    let (new_rd, new_wr) = tokio::io::split(new);
    let mut wr = client_wr;
    let waiting: Waiting = StdMutex::new(None);
    let (tx, rx) = mpsc::channel(1);
    let (inject_tx, inject_rx) = mpsc::channel(INJECT_QUEUE);
    let c2n = ClientToNew {
        framer,
        new: new_wr,
        inject: inject_tx,
        waiting: &waiting,
        continuation: rx,
        migration: &migration,
        bad_in_a_row: 0,
    };
    let n2c = NewToClient {
        waiting: &waiting,
        continuation: tx,
        inject: inject_rx,
        stop,
        migration: &migration,
    };
    let end = {
        let mut n2c = pin!(n2c.run(new_rd, Input::with(&new_leftover), &mut wr));
        let (end, client_side) = tokio::select! {
            r = c2n.run(client_rd, input) => (r, true),
            r = &mut n2c => (r, false),
        };
        if client_side && account.is_some() {
            let left = matches!(end, Ok(End::ClientClosed));
            migration.client_left.store(left, Ordering::SeqCst);
            answers_after_client_side(&migration, n2c, left).await;
        }
        end
    };
    if let Some(account) = &account {
        // NEW may have done these writes; nothing will journal them. (A poisoned tracker is
        // still read: its commands in flight are kept whole, and a wrong count only costs a
        // reconcile.)
        let (lost, changing) = crate::lock::recover(&tracker, "the session's tracker").unanswered();
        for _ in 0..lost {
            account.intent_over(false);
        }
        for folder in &changing {
            account.folder(folder).end_change();
        }
    }
    match end {
        Ok(End::IdleTimeout) => last_words(&mut wr, "Idle timeout").await,
        Ok(End::Bye(text)) => last_words(&mut wr, text).await,
        Ok(end @ (End::ClientClosed | End::NewClosed)) => {
            debug!("relay ended: {end:?}");
            let _ = tokio::time::timeout(BYE_TIMEOUT, wr.shutdown()).await;
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => info!("disconnected: {e}"),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Once the client→NEW side has ended, the NEW→client side (`n2c`) still finishes journaling
/// the answers it has, and when the client `left`, reads NEW's answers to the writes it sent
/// before (sending nothing), so they are journaled and mirrored like any other: a phone losing
/// its network should not cost its account a reconcile. At most
/// [`ANSWERS_AFTER_CLIENT_LEFT`]; writes still unanswered then are reconciled.
async fn answers_after_client_side(
    migration: &Migration<'_>,
    mut n2c: Pin<&mut impl Future<Output = io::Result<End>>>,
    left: bool,
) {
    let give_up = tokio::time::sleep(ANSWERS_AFTER_CLIENT_LEFT);
    let mut give_up = pin!(give_up);
    loop {
        let answered = migration.answered.notified();
        let settling = migration.settling.load(Ordering::SeqCst);
        let (writes, changing) = if left {
            crate::lock::recover(migration.tracker, "the session's tracker").unanswered()
        } else {
            (0, Vec::new())
        };
        if settling == 0 && writes == 0 && changing.is_empty() {
            return;
        }
        debug!(
            writes,
            settling, "reading NEW's answers after the client side ended"
        );
        tokio::select! {
            _ = &mut n2c => return,
            () = answered => {}
            () = &mut give_up => return,
        }
    }
}

/// What an answer of NEW leaves to do once it is journaled: the folders the command changed
/// are settled (the mirror may read them again), and a write's intent is over. Dropped before
/// [`Settling::done`] (the session ended meanwhile), it settles them anyway and counts the
/// write as unanswered: NEW has it, the journal may not, and OLD is reconciled.
struct Settling<'a> {
    account: &'a Arc<Account>,
    /// [`Migration::settling`], and who waits for it.
    count: &'a AtomicUsize,
    answered: &'a Notify,
    write: bool,
    folders: Vec<String>,
    journaled: bool,
}

impl<'a> Settling<'a> {
    fn new(
        session: &'a Migration<'_>,
        account: &'a Arc<Account>,
        write: bool,
        folders: Vec<String>,
    ) -> Settling<'a> {
        session.settling.fetch_add(1, Ordering::SeqCst);
        Settling {
            account,
            count: &session.settling,
            answered: &session.answered,
            write,
            folders,
            journaled: false,
        }
    }

    /// Journaled (or refused: the client is told): settled now.
    fn done(mut self) {
        self.journaled = true;
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        // Journaled first, so a mirror waiting for the change sees it when it resumes.
        for folder in &self.folders {
            self.account.folder(folder).end_change();
        }
        if self.write {
            self.account.intent_over(self.journaled);
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.answered.notify_one();
    }
}

/// The client→NEW direction. Replies of its own (BAD) go to the client through `inject`, so
/// the NEW→client direction places them between responses, never inside one.
struct ClientToNew<'a> {
    framer: Framer,
    new: tokio::io::WriteHalf<BoxIo>,
    inject: mpsc::Sender<Vec<u8>>,
    waiting: &'a Waiting,
    continuation: mpsc::Receiver<Continuation>,
    migration: &'a Migration<'a>,
    /// Replies of the proxy's own BAD since the last command that went to NEW.
    bad_in_a_row: u32,
}

/// What both directions share about the session beyond bytes: the command tracker (selected
/// folder, enabled extensions, commands in flight, writes awaiting NEW's OK), the account to
/// migrate, metrics, and the session's timeouts.
struct Migration<'a> {
    account: Option<&'a Arc<Account>>,
    tracker: &'a StdMutex<Tracker>,
    /// Signalled by the NEW→client side each time NEW completes a command, and again once
    /// what the answer leaves to do is done ([`Settling`]).
    answered: Notify,
    /// The client left: what NEW answers is still tracked and journaled, not sent.
    client_left: AtomicBool,
    /// Answers NEW gave whose journaling and settling is not done yet ([`Settling`]).
    settling: AtomicUsize,
    budget: Duration,
    metrics: &'a Metrics,
    write_timeout: Duration,
    idle: Duration,
    /// The account keeps client caches: numbers are translated both ways, with its maps.
    translator: Option<(StdMutex<Translator>, Arc<ClientCaches>)>,
    /// How long a folder that keeps client caches may take to be ready to show.
    cache_wait: Duration,
}

/// The maps a session translates with, and the account that decides the folders not decided
/// yet (none for a retired account: its undecided folders show NEW's numbers).
struct Numbers<'a> {
    caches: &'a ClientCaches,
    account: Option<&'a Arc<Account>>,
}

impl Maps for Numbers<'_> {
    fn map(&self, mailbox: &str) -> Option<Arc<UidMap>> {
        self.caches.uid_map(mailbox)
    }

    fn shown_yet(&self, mailbox: &str) -> bool {
        self.account.is_none_or(|a| a.shows_now(mailbox))
    }
}

impl Migration<'_> {
    fn numbers<'b>(&'b self, caches: &'b ClientCaches) -> Numbers<'b> {
        Numbers {
            caches,
            account: self.account,
        }
    }

    /// A command line (or its part after a literal) as NEW must get it.
    fn translate_command<'b>(&self, line: &'b [u8], literal: bool) -> io::Result<Cow<'b, [u8]>> {
        match &self.translator {
            Some((t, caches)) => {
                Ok(t.lock()
                    .map_err(poisoned)?
                    .command(&self.numbers(caches), line, literal))
            }
            None => Ok(Cow::Borrowed(line)),
        }
    }

    /// A response line (or its part after a literal) as the client must get it.
    fn translate_response<'b>(&self, line: &'b [u8], literal: bool) -> io::Result<Cow<'b, [u8]>> {
        match &self.translator {
            Some((t, caches)) => {
                Ok(t.lock()
                    .map_err(poisoned)?
                    .response(&self.numbers(caches), line, literal))
            }
            None => Ok(Cow::Borrowed(line)),
        }
    }

    /// The folder a complete command needs up to date first, and whether it opens it.
    fn needs(&self, command: &[u8]) -> io::Result<Option<(String, bool)>> {
        match self.account {
            Some(_) => Ok(self
                .tracker
                .lock()
                .map_err(poisoned)?
                .needs(&inspect(command))),
            None => Ok(None),
        }
    }

    /// Brings `folder` up to date (see [`Migration::before_forward`]) and, with client caches
    /// kept, waits until it may be shown. `false`: it may not be yet.
    async fn ready(&self, folder: &str, opens: bool) -> bool {
        let Some(account) = self.account else {
            return true;
        };
        let need = if opens { Need::Contents } else { Need::Filled };
        account
            .ensure(folder, self.budget.mul_f64(0.85), need)
            .await;
        account.ready_to_show(folder, self.cache_wait).await
    }

    /// A complete command from the client (literal data inline, as far as it was kept), before
    /// its last part goes to NEW: counted and tracked. Says what must happen first (see
    /// [`Migration::before_forward`]).
    fn command(&self, command: &[u8]) -> io::Result<Before> {
        let inspected = inspect(command);
        let name = inspected.name.as_deref().unwrap_or("");
        self.metrics.command(name);
        let before = self.tracker.lock().map_err(poisoned)?.command(
            &inspected,
            command.len(),
            std::time::Instant::now(),
        );
        Ok(if self.account.is_some() {
            before
        } else {
            Before::default()
        })
    }

    /// Past the cap on commands in flight, waits until NEW answers enough of them. A NEW that
    /// answers nothing for the idle timeout ends the session.
    async fn wait_for_room(&self) -> io::Result<()> {
        loop {
            let answered = self.answered.notified();
            if !self.tracker.lock().map_err(poisoned)?.full() {
                return Ok(());
            }
            debug!("waiting for NEW: too many commands in flight");
            if tokio::time::timeout(self.idle, answered).await.is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "NEW answered none of the commands in flight",
                ));
            }
        }
    }

    /// Backfills the folder the command needs from OLD (the wait leaves 15 % of the SELECT
    /// budget for NEW's own answer, as a large folder being filled takes NEW a moment to open,
    /// so the tagged OK comes within the budget), holds off the mirror's reads of folders
    /// the command restructures, and puts the account's write-ahead mark in the store before a
    /// write. `Err`: the mark could not be stored, the command must not reach NEW.
    async fn before_forward(&self, before: &Before) -> Result<(), NotMarked> {
        let Some(account) = self.account else {
            return Ok(());
        };
        if let Some(folder) = &before.ensure {
            let started = Instant::now();
            debug!("waiting for backfill");
            let need = if before.opens {
                Need::Contents
            } else {
                Need::Filled
            };
            account
                .ensure(folder, self.budget.mul_f64(0.85), need)
                .await;
            debug!(ms = started.elapsed().as_millis(), "backfill wait over");
        }
        for folder in &before.changing {
            let started = Instant::now();
            debug!("waiting for the mirror to leave the folder");
            account.folder(folder).begin_change().await;
            debug!(ms = started.elapsed().as_millis(), "mirror wait over");
        }
        if before.write {
            account.intend().await?;
        }
        Ok(())
    }

    /// A complete response line from NEW, before it goes to the client: a write NEW accepted is
    /// journaled first, and the selected folder is kept under live pickup. `Ok(Err(text))`: the
    /// write could not be journaled, so the client gets `* BYE text` instead of this line (NEW
    /// has the write; OLD is reconciled).
    async fn before_response(
        &self,
        line: &[u8],
        watching: &mut Option<Watch>,
    ) -> io::Result<Result<(), &'static str>> {
        let (outcome, selected) = {
            let mut t = self.tracker.lock().map_err(poisoned)?;
            let outcome = t.response(line);
            let selected = t.selected().and_then(|s| s.folder().map(String::from));
            (outcome, selected)
        };
        if let Some(done) = &outcome.answered {
            self.answered.notify_one();
            debug!(
                tag = %done.tag,
                command = %done.name,
                outcome = %done.status,
                ms = done.started.elapsed().as_millis(),
                "command done"
            );
        }
        let Some(account) = self.account else {
            return Ok(Ok(()));
        };
        let settled = outcome.settled;
        let settling = (outcome.answered.as_ref())
            .map(|answered| Settling::new(self, account, answered.write, settled));
        if outcome.selection_changed {
            *watching = selected.map(|f| account.watch(&f));
        }
        if let Some(what) = outcome.untracked {
            account.diverge(&what).await;
        }
        let recorded = match outcome.write {
            Some(write) => {
                let started = Instant::now();
                debug!("journaling the write");
                let r = account.record(write, outcome.appended).await;
                debug!(ms = started.elapsed().as_millis(), "journaled");
                r
            }
            None => Ok(()),
        };
        if let Some(settling) = settling {
            settling.done();
        }
        if let Err(e) = recorded {
            warn!("{e}");
            return Ok(Err(NOT_SAVED));
        }
        Ok(Ok(()))
    }
}

impl ClientToNew<'_> {
    /// Sends what is pending to NEW (within the write timeout) but the last `held` bytes: the
    /// part of an unfinished command that must wait until the command is complete and what
    /// comes first (backfill, write-ahead mark) is done. Dovecot acts on a command as soon as
    /// it has its arguments, before the line's CRLF: `UID MOVE 1 {1+}\r\nB` moves once `B` is in.
    async fn flush(&mut self, out: &mut Vec<u8>, held: usize) -> io::Result<()> {
        let ready = out.len() - held;
        if ready > 0 {
            self.migration.metrics.bytes_client_to_new(ready as u64);
            let deadline = Instant::now() + self.migration.write_timeout;
            send_by(&mut self.new, &out[..ready], true, deadline, "NEW").await?;
            out.drain(..ready);
        }
        Ok(())
    }

    /// A BAD of the proxy's own, placed between NEW's responses by the other direction.
    /// Waits while [`INJECT_QUEUE`] replies are already waiting (the client is not reading), at
    /// most the write timeout: the other direction may itself wait for NEW to finish a response
    /// that NEW finishes only once it reads more of what this direction holds back.
    /// `Some(end)`: too many in a row, the client is sent away.
    async fn bad(&mut self, reply: String) -> io::Result<Option<End>> {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row > MAX_BAD_IN_A_ROW {
            return Ok(Some(End::Bye("Too many invalid commands")));
        }
        self.reply(reply).await.map(|()| None)
    }

    /// A reply of the proxy's own, placed like a BAD (see [`ClientToNew::bad`]).
    async fn reply(&mut self, reply: String) -> io::Result<()> {
        let queued = self.inject.send(reply.into_bytes());
        match tokio::time::timeout(self.migration.write_timeout, queued).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read none of the proxy's replies",
            )),
        }
    }

    async fn run(
        mut self,
        mut rd: tokio::io::ReadHalf<BoxIo>,
        mut input: Input,
    ) -> io::Result<End> {
        let migration = self.migration;
        let mut out: Vec<u8> = Vec::new();
        // Inside a command whose earlier parts NEW already has (after a literal).
        let mut continuing = false;
        // The command as the tracker sees it: its lines and small literals (mailbox names),
        // inline; the data of a large literal (a message) ends what is kept.
        let mut command: Vec<u8> = Vec::new();
        let mut keep_literal = false;
        let mut kept_all = true;
        // The bytes of `command` that are an APPEND's message ([`APPEND_KEPT`]), not counted
        // against [`TRACK_MAX`], and whether the literal being read is one.
        let mut message_kept = 0;
        let mut keep_message = false;
        let mut tag: Option<String> = None;
        let mut overlong_tag: Option<String> = None;
        let mut overlong_mid_command = false;
        let mut secret: Option<String> = None;
        // The end of `out` that is the unfinished command's (see [`ClientToNew::flush`]).
        let mut held = 0;
        loop {
            let (n, event) = self.framer.advance(&input.buf[input.pos..input.len]);
            input.pos += n;
            let Some(event) = event else {
                self.flush(&mut out, held).await?;
                release_if_idle(&mut out, &input);
                let deadline = Instant::now() + migration.idle;
                match input.fill(&mut rd, Some(deadline)).await {
                    Ok(true) => continue,
                    Ok(false) => return Ok(End::ClientClosed),
                    // The kernel's: the client acknowledged nothing for the write timeout
                    // (TCP_USER_TIMEOUT, see `server::unacknowledged_for`).
                    Err(e) if e.raw_os_error().is_some() && e.kind() == io::ErrorKind::TimedOut => {
                        return Err(io::Error::new(e.kind(), "client stopped reading"));
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(End::IdleTimeout),
                    Err(_) => return Ok(End::ClientClosed),
                }
            };
            match event {
                Event::Line { bytes, literal } => {
                    if !continuing {
                        secret = secret_head(&bytes);
                    }
                    trace!(line = %shown(&bytes, secret.as_deref()), "client");
                    if !continuing {
                        tag = first_token(&bytes);
                        if literal.is_none()
                            && let Some(t) = command_named(&bytes, &["COMPRESS", "STARTTLS"])
                        {
                            // The proxy does not terminate these per leg: NEW must not see them.
                            let reply = format!("{t} BAD Not supported through this proxy.\r\n");
                            if let Some(end) = self.bad(reply).await? {
                                return Ok(end);
                            }
                            continue;
                        }
                        if tag.is_none() && literal.is_some_and(|l| l.sync) {
                            // NEW would answer untagged, and nobody would continue the literal.
                            if literal.is_some_and(|l| l.len > 0) {
                                self.framer.reject_literal();
                            }
                            if let Some(end) = self.bad("* BAD Invalid tag\r\n".into()).await? {
                                return Ok(end);
                            }
                            continue;
                        }
                        command.clear();
                        kept_all = true;
                        message_kept = 0;
                    }
                    if literal.is_none() && migration.translator.is_some() {
                        // The folder the command needs is made ready first: its UID map decides
                        // how the command is translated.
                        let whole: Cow<[u8]> = match continuing {
                            false => Cow::Borrowed(&bytes),
                            true => Cow::Owned([&command[..], &bytes].concat()),
                        };
                        if let Some((folder, opens)) = migration.needs(&whole)? {
                            self.flush(&mut out, held).await?;
                            if !migration.ready(&folder, opens).await && !continuing {
                                let t = tag.as_deref().unwrap_or("*");
                                let reply = format!("{t} NO [UNAVAILABLE] {NOT_READY}\r\n");
                                self.reply(reply).await?;
                                continue;
                            }
                        }
                    }
                    let mut bytes = migration.translate_command(&bytes, literal.is_some())?;
                    if let Some(lit) = literal
                        && !continuing
                        && migration.account.is_some()
                        && !lit.binary
                        && lit.len <= APPEND_KEPT
                        && let Some(dated) = dated_append(&bytes, &internaldate_now())
                    {
                        bytes = Cow::Owned(dated);
                    }
                    if kept_all && command.len() - message_kept + bytes.len() <= TRACK_MAX {
                        command.extend_from_slice(&bytes);
                    } else {
                        kept_all = false;
                    }
                    if let Some(lit) = literal
                        && migration.account.is_some()
                        && kept_all
                        && literal_too_many(&command)
                    {
                        // NEW would act on the command before the literal, where the proxy
                        // has not seen it whole: refused, as NEW must never run what the
                        // proxy does not track.
                        if let Some((t, _)) = &migration.translator {
                            t.lock().map_err(poisoned)?.command_refused();
                        }
                        if continuing || !lit.sync {
                            // Part is with NEW, or the client sends the data regardless.
                            return Ok(End::Bye("Arguments after the end of a command"));
                        }
                        if lit.len > 0 {
                            self.framer.reject_literal();
                        }
                        let t = tag.as_deref().unwrap_or("*");
                        let reply = format!("{t} BAD Arguments after the end of the command\r\n");
                        if let Some(end) = self.bad(reply).await? {
                            return Ok(end);
                        }
                        continue;
                    }
                    match literal {
                        Some(lit) => {
                            keep_message = kept_all
                                && lit.len > TRACK_LITERAL
                                && message_kept as u64 + lit.len <= APPEND_KEPT
                                && migration.account.is_some()
                                && command_named(&command, &["APPEND"]).is_some();
                            keep_literal = kept_all && (lit.len <= TRACK_LITERAL || keep_message);
                        }
                        None => {
                            self.bad_in_a_row = 0;
                            let mut before = migration.command(&command)?;
                            if migration.translator.is_some() {
                                before.ensure = None; // made ready above
                            }
                            if before.ensure.is_some()
                                || !before.changing.is_empty()
                                || before.write
                            {
                                // Earlier commands go out before the backfill makes this one wait.
                                self.flush(&mut out, held).await?;
                                if let Err(e) = migration.before_forward(&before).await {
                                    // NEW never sees the end of the command: it does nothing.
                                    warn!("{e}");
                                    return Ok(End::Bye(NOT_SAVED));
                                }
                            }
                        }
                    }
                    continuing = literal.is_some();
                    out.extend_from_slice(&bytes);
                    held = if continuing { held + bytes.len() } else { 0 };
                    if let Some(lit) = literal.filter(|l| l.sync) {
                        // Only NEW may continue a synchronising literal.
                        let may_write = inspect(&command).name.is_some_and(|n| may_write(&n));
                        *self.waiting.lock().map_err(poisoned)? =
                            tag.clone().map(|tag| Awaiting { tag, may_write });
                        self.flush(&mut out, 0).await?;
                        held = 0;
                        debug!("waiting for NEW's continuation");
                        match tokio::time::timeout(migration.idle, self.continuation.recv()).await {
                            Ok(Some(Continuation::Go)) => {}
                            Ok(Some(Continuation::Refused)) => {
                                if lit.len > 0 {
                                    self.framer.reject_literal();
                                }
                                if let Some((t, _)) = &migration.translator {
                                    t.lock().map_err(poisoned)?.command_refused();
                                }
                                continuing = false;
                            }
                            Ok(None) => return Ok(End::NewClosed),
                            Err(_) => return Ok(End::Bye("NEW did not answer")),
                        }
                    } else if literal.is_none()
                        && migration.tracker.lock().map_err(poisoned)?.full()
                    {
                        // Read no more from the client until NEW has answered some.
                        self.flush(&mut out, 0).await?;
                        migration.wait_for_room().await?;
                    }
                }
                Event::LiteralData(data) => {
                    if let Some((t, _)) = &migration.translator {
                        t.lock().map_err(poisoned)?.command_literal(data);
                    }
                    if keep_literal {
                        command.extend_from_slice(data);
                        if keep_message {
                            message_kept += data.len();
                        }
                    } else {
                        kept_all = false;
                    }
                    out.extend_from_slice(data);
                    held += data.len();
                    if out.len() >= FLUSH_AT {
                        // A message streams: NEW stores it only at the command's CRLF.
                        migration.metrics.bytes_client_to_new(out.len() as u64);
                        let deadline = Instant::now() + migration.write_timeout;
                        send_by(&mut self.new, &out, false, deadline, "NEW").await?;
                        out.clear();
                        held = 0;
                    }
                }
                Event::Error(FrameError::LineTooLong) => {
                    overlong_tag = None;
                    overlong_mid_command = continuing;
                }
                Event::Overlong(piece) => {
                    if overlong_tag.is_none() {
                        overlong_tag = first_token(&piece);
                    }
                }
                Event::OverlongEnd { literal } => {
                    if overlong_mid_command {
                        return Ok(End::Bye("Line too long"));
                    }
                    if literal
                        .is_some_and(|l| l.len > 0 && !(l.sync && self.framer.reject_literal()))
                    {
                        return Ok(End::Bye("Line too long"));
                    }
                    continuing = false;
                    let t = overlong_tag.take().unwrap_or_else(|| "*".into());
                    if let Some(end) = self.bad(format!("{t} BAD line too long\r\n")).await? {
                        return Ok(end);
                    }
                }
                Event::Error(FrameError::LiteralLengthInvalid) => {
                    return Ok(End::Bye("Invalid literal"));
                }
                Event::Error(FrameError::LiteralTooLarge { .. }) => {}
            }
        }
    }
}

/// The NEW→client direction: relays responses, answers the continuation question of the
/// client→NEW side, places the proxy's own replies between responses, and journals a write
/// before its tagged OK reaches the client. Every write to the client is bounded by the write
/// timeout: a client that stops reading is disconnected.
struct NewToClient<'a> {
    waiting: &'a Waiting,
    continuation: mpsc::Sender<Continuation>,
    inject: mpsc::Receiver<Vec<u8>>,
    stop: watch::Receiver<bool>,
    migration: &'a Migration<'a>,
}

impl NewToClient<'_> {
    async fn run(
        self,
        mut rd: tokio::io::ReadHalf<BoxIo>,
        mut input: Input,
        wr: &mut tokio::io::WriteHalf<BoxIo>,
    ) -> io::Result<End> {
        let NewToClient {
            waiting,
            continuation: tx,
            mut inject,
            mut stop,
            migration,
        } = self;
        let metrics = migration.metrics;
        let send = async |wr: &mut tokio::io::WriteHalf<BoxIo>, out: &mut Vec<u8>, flush: bool| {
            if migration.client_left.load(Ordering::SeqCst) {
                out.clear();
                return Ok(());
            }
            metrics.bytes_new_to_client(out.len() as u64);
            let deadline = Instant::now() + migration.write_timeout;
            send_by(wr, out, flush, deadline, "client").await?;
            out.clear();
            io::Result::Ok(())
        };
        let mut overlong = false;
        let mut framer = Framer::new(Limits {
            max_line: match migration.translator {
                Some(_) => NEW_MAX_TRANSLATED,
                None => NEW_MAX_LINE,
            },
            max_literal: u64::MAX,
        });
        let mut out: Vec<u8> = Vec::new();
        let mut continuing = false;
        let mut watching: Option<Watch> = None;
        loop {
            let (n, event) = framer.advance(&input.buf[input.pos..input.len]);
            input.pos += n;
            let Some(event) = event else {
                // Between two responses the proxy's own replies may go out.
                let boundary = !continuing
                    && !overlong
                    && framer.buffered() == 0
                    && framer.literal_remaining().is_none();
                if boundary {
                    take_replies(&mut inject, &mut out);
                }
                if !out.is_empty() {
                    send(wr, &mut out, true).await?;
                }
                release_if_idle(&mut out, &input);
                tokio::select! {
                    r = input.fill(&mut rd, None) => match r {
                        Ok(true) => continue,
                        Ok(false) | Err(_) => return Ok(End::NewClosed),
                    },
                    Some(mut reply) = inject.recv(), if boundary => {
                        send(wr, &mut reply, true).await?;
                        continue;
                    }
                    () = stopped(&mut stop), if boundary => return Ok(End::Bye(SHUTDOWN_TEXT)),
                }
            };
            match event {
                Event::Line { bytes, literal } => {
                    let starts = !continuing;
                    if starts {
                        // Replies queued before this response was read answer commands sent
                        // before the one it answers: they keep their place.
                        take_replies(&mut inject, &mut out);
                    }
                    continuing = literal.is_some();
                    let translated = migration.translate_response(&bytes, literal.is_some())?;
                    if starts && bytes.starts_with(b"+") {
                        if take_waiting(waiting)?.is_some() {
                            out.extend_from_slice(&bytes);
                            send(wr, &mut out, true).await?;
                            let _ = tx.send(Continuation::Go).await;
                            continue;
                        }
                    } else if starts && literal.is_none() {
                        let refused = {
                            let tag = first_token(&bytes);
                            let mut w = waiting.lock().map_err(poisoned)?;
                            match &*w {
                                Some(a) if tag.as_deref() == Some(a.tag.as_str()) => w.take(),
                                _ => None,
                            }
                        };
                        if let Some(refused) = refused {
                            let _ = tx.send(Continuation::Refused).await;
                            // NEW ran a command the proxy never saw whole (one whose arguments
                            // it could not read, so `literal_too_many` let it through): what it
                            // did is not journaled.
                            if let Some(account) = migration.account
                                && refused.may_write
                                && status_ok(&bytes)
                            {
                                account.reconcile_soon(
                                    "NEW completed a command before the literal it announced"
                                        .into(),
                                );
                            }
                        }
                        if let Err(text) = migration.before_response(&bytes, &mut watching).await? {
                            if !out.is_empty() {
                                send(wr, &mut out, true).await?;
                            }
                            return Ok(End::Bye(text));
                        }
                        if let Some(rewritten) = rewrite_capabilities(&bytes) {
                            out.extend_from_slice(&rewritten);
                            continue;
                        }
                    } else if starts {
                        // A FETCH of a body: its UID, before the literal, still counts.
                        let mut tracker = migration.tracker.lock().map_err(poisoned)?;
                        tracker.untagged_start(&bytes);
                    }
                    out.extend_from_slice(&translated);
                }
                Event::LiteralData(data) => {
                    if let Some((t, _)) = &migration.translator {
                        t.lock().map_err(poisoned)?.response_literal(data);
                    }
                    out.extend_from_slice(data);
                }
                Event::Overlong(piece) => out.extend_from_slice(&piece),
                Event::OverlongEnd { literal } => {
                    overlong = false;
                    continuing = literal.is_some();
                }
                Event::Error(FrameError::LineTooLong) => {
                    if !continuing {
                        take_replies(&mut inject, &mut out);
                    }
                    if migration.translator.is_some() {
                        warn!(
                            "a response line of NEW longer than {NEW_MAX_TRANSLATED} bytes reaches \
                             the client with NEW's numbers"
                        );
                    }
                    overlong = true;
                }
                Event::Error(_) => {}
            }
            if out.len() >= FLUSH_AT {
                send(wr, &mut out, false).await?;
            }
        }
    }
}
