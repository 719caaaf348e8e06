//! Group commit of the journal: the entries that this process's sessions journal, and the
//! marks of entries its drainers mirrored, wait while a commit runs, then go to the store
//! together in one transaction. A write's OK waits for one commit at most, not for a queue of
//! them, and the store sees one journal writer where there were as many as sessions writing.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::drain::COMMIT_WITHIN;
use super::gauges::Gauges;
use crate::store::{AccountId, Committed, NewEntry, Store};

/// Most requests in one commit.
const MOST: usize = 256;

/// The process's journal committer, shared by every account.
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Request>,
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
}

impl Committer {
    /// Starts the committer, counting in `gauges`; it stops when the last handle is dropped.
    pub(crate) fn start(store: Arc<dyn Store>, gauges: Arc<Gauges>) -> Arc<Committer> {
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(run(store, requests, gauges));
        Arc::new(Committer { queue })
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
) {
    let mut batch = Vec::with_capacity(MOST);
    while requests.recv_many(&mut batch, MOST).await > 0 {
        // A session that stopped waiting told its client BYE and reconciles OLD instead. (A
        // mark is committed whoever waits for it: OLD has the entry.)
        batch.retain(|r| !matches!(r, Request::Append { done, .. } if done.is_closed()));
        let mut entries = Vec::new();
        let mut mirrored = Vec::new();
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
            }
        }
        let commit = store.journal_commit(&entries, &mirrored);
        let result = match tokio::time::timeout(COMMIT_WITHIN, commit).await {
            Ok(Ok(c)) if c.ids.len() == entries.len() => Ok(c),
            Ok(Ok(c)) => Err(format!("{} ids for {} entries", c.ids.len(), entries.len())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
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
    }
}
