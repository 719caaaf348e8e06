//! Group commit of the journal: the entries that this process's sessions journal, and the
//! marks of entries its drainers mirrored and the keys they keep, wait while a commit runs,
//! then go to the store together in one transaction. A write's OK waits for one commit at
//! most, not for a queue of them, and the store sees one journal writer where there were as
//! many as sessions writing.
//! The committer also remembers the moving writes it committed lately (see [`Recent`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{mpsc, oneshot};

use super::drain::COMMIT_WITHIN;
use super::gauges::Gauges;
use super::journal::MOVING;
use crate::lock::recover;
use crate::store::{AccountId, Adoption, AppendKey, Committed, NewEntry, Store};

/// Most requests in one commit.
const MOST: usize = 256;
/// Moving writes remembered, of all accounts.
const REMEMBERED: usize = 4096;

/// The process's journal committer, shared by every account.
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Request>,
    recent: Arc<Recent>,
}

/// The moving writes ([`MOVING`]) this process committed lately, so the mirror's look at later
/// moves needs no read of a journal that only this process writes: every such entry with an id
/// from `floor` on is in `log` once its commit is over, before its session hears of it. Entries
/// of a commit still on its way are not there yet, as a read of the journal made just before
/// that commit lands would not find them; NEW may have their writes either way, which the
/// mirror allows for (it reads again, see `mirror::Later`).
#[derive(Default)]
struct Recent {
    log: StdMutex<Log>,
}

#[derive(Default)]
struct Log {
    /// `None` until a commit went through (and again after one failed: it may have reached the
    /// store all the same).
    floor: Option<i64>,
    /// `(id, account, payload)` in id order.
    entries: VecDeque<(i64, AccountId, String)>,
}

impl Recent {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        recover(&self.log, "the journal's recent moving writes")
    }

    /// After a commit: its moving entries, or forgetting everything if it failed.
    fn committed(&self, entries: &[NewEntry<'_>], result: &Result<Committed, String>) {
        let mut log = self.log();
        match result {
            Ok(c) => {
                let first = c.ids.iter().flatten().min();
                if let (None, Some(&first)) = (log.floor, first) {
                    log.floor = Some(first);
                }
                for (entry, id) in entries.iter().zip(&c.ids) {
                    if let Some(id) = *id
                        && MOVING.contains(&entry.kind)
                    {
                        log.entries
                            .push_back((id, entry.account, entry.payload.to_string()));
                    }
                }
                while log.entries.len() > REMEMBERED {
                    if let Some((id, ..)) = log.entries.pop_front() {
                        log.floor = Some(id + 1);
                    }
                }
            }
            Err(_) => *log = Log::default(),
        }
    }

    /// The moving entries `(id, payload)` of `account` after entry `after`, as a read of the
    /// journal would find those this process committed; `None` when not known (from before the
    /// log's floor).
    fn after(&self, account: AccountId, after: i64) -> Option<Vec<(i64, String)>> {
        let log = self.log();
        if log.floor? > after + 1 {
            return None;
        }
        let start = log.entries.partition_point(|(id, ..)| *id <= after);
        let mine = log.entries.range(start..).filter(|(_, a, _)| *a == account);
        Some(
            mine.map(|(id, _, payload)| (*id, payload.clone()))
                .collect(),
        )
    }
}

enum Request {
    /// A user write: its id, `None` if the account is retired, or why it was not committed.
    Append {
        account: AccountId,
        kind: &'static str,
        payload: String,
        done: oneshot::Sender<Result<Option<i64>, String>>,
    },
    /// Entries OLD has now: no longer pending.
    Mirrored {
        ids: Vec<i64>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Identity keys of messages the mirror is about to append to OLD, and the adoption
    /// watermark lowered for them.
    Keys {
        keys: Vec<AppendKey>,
        lower: Adoption,
        done: oneshot::Sender<Result<(), String>>,
    },
}

impl Committer {
    /// Starts the committer, counting in `gauges`; it stops when the last handle is dropped.
    pub(crate) fn start(store: Arc<dyn Store>, gauges: Arc<Gauges>) -> Arc<Committer> {
        let (queue, requests) = mpsc::unbounded_channel();
        let recent = Arc::new(Recent::default());
        tokio::spawn(run(store, requests, gauges, Arc::clone(&recent)));
        Arc::new(Committer { queue, recent })
    }

    /// The moving entries `(id, payload)` of `account` after entry `after` that this process
    /// committed, as a read of the journal would find them, when they are known (see
    /// [`Recent`]); the caller makes sure no other process writes the journal. Entries marked
    /// mirrored since are among them: NEW still has the messages where they put them.
    pub(crate) fn moving_after(
        &self,
        account: AccountId,
        after: i64,
    ) -> Option<Vec<(i64, String)>> {
        self.recent.after(account, after)
    }

    /// Journals one entry, committed when this returns its id; `Ok(None)`: the account is
    /// retired, nothing was journaled.
    pub(crate) async fn append(
        &self,
        account: AccountId,
        kind: &'static str,
        payload: String,
    ) -> Result<Option<i64>, String> {
        let (done, committed) = oneshot::channel();
        self.send(Request::Append {
            account,
            kind,
            payload,
            done,
        })?;
        committed.await.map_err(|_| stopped())?
    }

    /// Marks the entries `ids` mirrored, committed when this returns.
    pub(crate) async fn mirrored(&self, ids: Vec<i64>) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.send(Request::Mirrored { ids, done })?;
        committed.await.map_err(|_| stopped())?
    }

    /// Keeps the identity keys of messages the mirror is about to append to OLD and lowers
    /// their folder's adoption watermark (`lower`), committed when this returns (see
    /// [`AppendKey`], [`Adoption`]).
    pub(crate) async fn keep_keys(
        &self,
        keys: Vec<AppendKey>,
        lower: Adoption,
    ) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.send(Request::Keys { keys, lower, done })?;
        committed.await.map_err(|_| stopped())?
    }

    fn send(&self, request: Request) -> Result<(), String> {
        self.queue.send(request).map_err(|_| stopped())
    }
}

fn stopped() -> String {
    "the journal's committer has stopped".to_string()
}

/// Commits what waits, a batch at a time, until every handle is gone.
async fn run(
    store: Arc<dyn Store>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    gauges: Arc<Gauges>,
    recent: Arc<Recent>,
) {
    let mut batch = Vec::with_capacity(MOST);
    while requests.recv_many(&mut batch, MOST).await > 0 {
        // A session that stopped waiting told its client BYE and reconciles OLD instead. (A
        // mark is committed whoever waits for it: OLD has the entry.)
        batch.retain(|r| !matches!(r, Request::Append { done, .. } if done.is_closed()));
        let (mut entries, mut mirrored) = (Vec::new(), Vec::new());
        let (mut keys, mut lower) = (Vec::new(), Vec::new());
        for request in &batch {
            match request {
                Request::Append {
                    account,
                    kind,
                    payload,
                    ..
                } => entries.push(NewEntry {
                    account: *account,
                    kind,
                    payload,
                }),
                Request::Mirrored { ids, .. } => mirrored.extend_from_slice(ids),
                Request::Keys {
                    keys: k, lower: l, ..
                } => {
                    keys.extend_from_slice(k);
                    lower.push(*l);
                }
            }
        }
        let commit = store.journal_commit(&entries, &mirrored, &keys, &lower);
        let result = match tokio::time::timeout(COMMIT_WITHIN, commit).await {
            Ok(Ok(c)) if c.ids.len() == entries.len() => Ok(c),
            Ok(Ok(c)) => Err(format!("{} ids for {} entries", c.ids.len(), entries.len())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        recent.committed(&entries, &result);
        if !entries.is_empty()
            && let Ok(c) = &result
        {
            gauges.committed(c.ids.iter().flatten().count());
        }
        drop(entries);
        answer(&mut batch, result);
    }
}

/// Tells each request of the batch what its commit did.
fn answer(batch: &mut Vec<Request>, result: Result<Committed, String>) {
    let (mut ids, missing) = match result {
        Ok(c) => (c.ids.into_iter(), Ok(c.missing)),
        Err(why) => (Vec::new().into_iter(), Err(why)),
    };
    // Err: the requester stopped waiting meanwhile (see above).
    for request in batch.drain(..) {
        match request {
            Request::Append { done, .. } => {
                let _ = done.send(match &missing {
                    Ok(_) => Ok(ids.next().flatten()),
                    Err(why) => Err(why.clone()),
                });
            }
            Request::Mirrored { ids: marks, done } => {
                let _ = done.send(match &missing {
                    Ok(missing) => match marks.iter().find(|id| missing.contains(id)) {
                        Some(id) => Err(format!("no journal entry {id}")),
                        None => Ok(()),
                    },
                    Err(why) => Err(why.clone()),
                });
            }
            Request::Keys { done, .. } => {
                let _ = done.send(missing.as_ref().map(|_| ()).map_err(Clone::clone));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AccountKey, SqliteStore};

    fn key(user: &str) -> AccountKey {
        AccountKey {
            old_host: "old".into(),
            old_user: user.into(),
            new_host: "new".into(),
            new_user: user.into(),
        }
    }

    /// The moving writes are known from the first commit on, and not after a commit failed (it
    /// may have reached the store) until the next one.
    #[test]
    fn recent_moving_writes_are_known_as_a_read_would_find_them() {
        let recent = Recent::default();
        let entry = |account, kind, payload| NewEntry {
            account,
            kind,
            payload,
        };
        let ok = |ids: &[i64]| {
            Ok(Committed {
                ids: ids.iter().copied().map(Some).collect(),
                missing: Vec::new(),
            })
        };
        let known = |pairs: &[(i64, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(id, p)| (*id, p.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(recent.after(1, 0), None, "nothing committed yet");
        let entries = [
            entry(1, "copy", "c1"),
            entry(1, "flags", "f1"),
            entry(2, "move", "m2"),
            entry(1, "rename", "r1"),
        ];
        recent.committed(&entries, &ok(&[10, 11, 12, 13]));
        assert_eq!(recent.after(1, 9), known(&[(10, "c1"), (13, "r1")]));
        assert_eq!(recent.after(1, 10), known(&[(13, "r1")]));
        assert_eq!(recent.after(2, 9), known(&[(12, "m2")]));
        assert_eq!(recent.after(1, 13), known(&[]));
        assert_eq!(recent.after(1, 8), None, "entry 9 is from before");
        recent.committed(&[entry(1, "copy", "c2")], &Err("disk full".into()));
        assert_eq!(
            recent.after(1, 13),
            None,
            "a failed commit may have reached the store"
        );
        recent.committed(&[entry(1, "delete", "d1")], &ok(&[15]));
        assert_eq!(recent.after(1, 14), known(&[(15, "d1")]));
        assert_eq!(recent.after(1, 13), None, "entry 14 may be the failed one");
        // The oldest are forgotten beyond REMEMBERED, and the floor rises past them.
        let many = vec![entry(1, "copy", "c"); REMEMBERED];
        let ids: Vec<i64> = (100..100 + REMEMBERED as i64).collect();
        recent.committed(&many, &ok(&ids));
        let count = |after| recent.after(1, after).map(|e| e.len());
        assert_eq!(count(14), None, "entry 15 was forgotten");
        assert_eq!(count(15), Some(REMEMBERED));
        assert_eq!(count(99), Some(REMEMBERED));
    }

    #[tokio::test]
    async fn entries_journaled_meanwhile_share_one_commit() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_memory().await.unwrap());
        let alice = store.account(&key("alice")).await.unwrap();
        let bob = store.account(&key("bob")).await.unwrap();
        let carol = store.account(&key("carol")).await.unwrap();
        assert!(store.retire(carol, Some("forced")).await.unwrap());
        let gauges = Arc::new(Gauges::default());
        let committer = Committer::start(Arc::clone(&store), Arc::clone(&gauges));
        let counted = || {
            let held = gauges.snapshot();
            (held.commits, held.journaled)
        };
        let append = |account, payload: &str| committer.append(account, "flags", payload.into());

        // Sent in one poll of this test's task, on the test's one thread: the committer finds
        // them all waiting.
        let (a1, b1, c1, a2) = tokio::join!(
            append(alice, "a1"),
            append(bob, "b1"),
            append(carol, "c1"),
            append(alice, "a2"),
        );
        assert_eq!(counted(), (1, 3));
        let ids = [a1.unwrap(), b1.unwrap(), a2.unwrap()];
        assert!(ids.iter().all(Option::is_some), "{ids:?}");
        assert_eq!(c1, Ok(None), "a retired account's entry is not journaled");
        assert_eq!(store.journal_pending_count(alice).await.unwrap(), 2);
        assert_eq!(store.journal_pending_count(bob).await.unwrap(), 1);
        assert_eq!(store.journal_pending_count(carol).await.unwrap(), 0);

        // Alone, an entry has its own commit.
        let a3 = append(alice, "a3").await.unwrap().unwrap();
        assert!(ids.iter().all(|id| id.unwrap() < a3));
        assert_eq!(counted(), (2, 4));

        // A drainer's marks go with the entries journaled meanwhile; one naming no entry is
        // its drainer's error alone.
        let (a4, marked, wrong) = tokio::join!(
            append(alice, "a4"),
            committer.mirrored(vec![ids[0].unwrap(), a3]),
            committer.mirrored(vec![9999]),
        );
        assert!(a4.unwrap().is_some());
        assert_eq!(marked, Ok(()));
        assert!(wrong.is_err(), "{wrong:?}");
        assert_eq!(counted(), (3, 5));
        let pending = store.journal_pending(alice, 10).await.unwrap();
        let payloads: Vec<&str> = pending.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(payloads, ["a2", "a4"]);

        // A mirror's keys too, with the watermark it lowers (never raises).
        let pair = store.folder_pair(alice, "INBOX", "INBOX").await.unwrap();
        store
            .save_pair_state(pair.id, None, None, 50, pair.phase)
            .await
            .unwrap();
        let a4 = pending[1].id;
        let key = AppendKey {
            entry: a4,
            new_uid: 7,
            ident: "k".into(),
        };
        let lower = |from| Adoption {
            pair: pair.id,
            from,
        };
        let (a5, kept, lowered) = tokio::join!(
            append(alice, "a5"),
            committer.keep_keys(vec![key], lower(7)),
            committer.keep_keys(vec![], lower(60)),
        );
        assert!(a5.unwrap().is_some());
        assert_eq!((kept, lowered), (Ok(()), Ok(())));
        assert_eq!(counted(), (4, 6));
        let keys = store.append_keys(a4).await.unwrap();
        assert_eq!(keys, [(7, "k".to_string())]);
        let pair = store.folder_pair(alice, "INBOX", "INBOX").await.unwrap();
        assert_eq!(pair.adopt_from, 7);
    }
}
