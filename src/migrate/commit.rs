//! Group commit of the journal: the entries that this process's sessions journal while a commit
//! runs wait for it, then go to the store together in one transaction. A write's OK waits for
//! one commit at most, not for a queue of them, and the store sees one writer where there
//! were as many as there are sessions writing.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::drain::COMMIT_WITHIN;
use super::gauges::Gauges;
use crate::store::{AccountId, NewEntry, Store};

/// Most entries in one commit.
const MOST: usize = 256;

/// The process's journal committer, shared by every account.
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Request>,
}

struct Request {
    account: AccountId,
    kind: &'static str,
    payload: String,
    /// The entry's id, `None` if the account is retired, or why it was not committed.
    done: oneshot::Sender<Result<Option<i64>, String>>,
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
        let stopped = || "the journal's committer has stopped".to_string();
        let (done, committed) = oneshot::channel();
        let request = Request {
            account,
            kind,
            payload,
            done,
        };
        self.queue.send(request).map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }
}

/// Commits what waits, a batch at a time, until every handle is gone.
async fn run(
    store: Arc<dyn Store>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    gauges: Arc<Gauges>,
) {
    let mut batch = Vec::with_capacity(MOST);
    while requests.recv_many(&mut batch, MOST).await > 0 {
        // A session that stopped waiting told its client BYE and reconciles OLD instead.
        batch.retain(|r| !r.done.is_closed());
        let entries: Vec<NewEntry<'_>> = batch
            .iter()
            .map(|r| NewEntry {
                account: r.account,
                kind: r.kind,
                payload: &r.payload,
            })
            .collect();
        let result =
            match tokio::time::timeout(COMMIT_WITHIN, store.journal_append_all(&entries)).await {
                Ok(Ok(ids)) if ids.len() == batch.len() => {
                    gauges.committed(ids.iter().flatten().count());
                    Ok(ids)
                }
                Ok(Ok(ids)) => Err(format!("{} ids for {} entries", ids.len(), batch.len())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
        drop(entries);
        match result {
            // Err: the session stopped waiting meanwhile (see above).
            Ok(ids) => {
                for (request, id) in batch.drain(..).zip(ids) {
                    let _ = request.done.send(Ok(id));
                }
            }
            Err(why) => {
                for request in batch.drain(..) {
                    let _ = request.done.send(Err(why.clone()));
                }
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
    }
}
