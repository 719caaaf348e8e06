//! Messages the proxy relayed to NEW in a client's APPEND, kept in memory by which NEW message
//! they became until the mirror appends them to OLD, so that it need not read them back from
//! NEW. Bounded: the oldest go first. Lost on a restart, to another proxy of a fleet, or pushed
//! out: the mirror then reads NEW, as it does for every APPEND it has no bytes for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex as StdMutex;

use crate::lock;
use crate::store::AccountId;

/// Most bytes kept for the whole process.
const KEPT_BYTES: usize = 32 * 1024 * 1024;

/// One message of a client's APPEND, as NEW got it. `Debug` shows its size, not its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Appended {
    /// As the client gave them.
    pub flags: Vec<String>,
    /// INTERNALDATE, as sent to NEW (the client's, or the one the proxy added).
    pub date: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended")
            .field("flags", &self.flags)
            .field("date", &self.date)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Which NEW message a kept one is: with NEW's UIDVALIDITY (APPENDUID's), an account's folder
/// name and UID name one message for good, whatever was renamed, deleted or made again since.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub account: AccountId,
    pub folder: String,
    pub validity: u32,
    pub uid: u32,
}

/// [`Appended`] messages by [`Key`], for the whole process.
#[derive(Default)]
pub(crate) struct Relayed {
    kept: StdMutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_key: HashMap<Key, (u64, Appended)>,
    /// Keys in the order kept, for pushing out the oldest.
    order: BTreeMap<u64, Key>,
    next: u64,
    bytes: usize,
}

impl Relayed {
    /// Keeps `message` as NEW's `key`, pushing out the oldest kept past [`KEPT_BYTES`].
    pub(crate) fn keep(&self, key: Key, message: Appended) {
        if message.bytes.len() > KEPT_BYTES {
            return;
        }
        let mut kept = self.lock();
        let seq = kept.next;
        kept.next += 1;
        kept.bytes += message.bytes.len();
        kept.order.insert(seq, key.clone());
        if let Some((old, replaced)) = kept.by_key.insert(key, (seq, message)) {
            kept.order.remove(&old);
            kept.bytes -= replaced.bytes.len();
        }
        while kept.bytes > KEPT_BYTES {
            let Some((_, oldest)) = kept.order.pop_first() else {
                break;
            };
            if let Some((_, gone)) = kept.by_key.remove(&oldest) {
                kept.bytes -= gone.bytes.len();
            }
        }
    }

    /// The message kept as `key`, if any (taken: a retry reads NEW).
    pub(crate) fn take(&self, key: &Key) -> Option<Appended> {
        let mut kept = self.lock();
        let (seq, message) = kept.by_key.remove(key)?;
        kept.order.remove(&seq);
        kept.bytes -= message.bytes.len();
        Some(message)
    }

    /// Recovered from a poisoned lock: every critical section leaves the maps and the count
    /// whole, and at worst a message is read from NEW instead.
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        lock::recover(&self.kept, "the relayed messages")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Appended {
        Appended {
            flags: vec!["\\Seen".into()],
            date: "07-Dec-2026 08:40:00 +0000".into(),
            bytes: vec![b'x'; len],
        }
    }

    fn key(uid: u32) -> Key {
        Key {
            account: 1,
            folder: "Sent".into(),
            validity: 9,
            uid,
        }
    }

    #[test]
    fn a_message_is_taken_once_by_its_key() {
        let relayed = Relayed::default();
        relayed.keep(key(7), message(10));
        for other in [
            key(8),
            Key {
                validity: 10,
                ..key(7)
            },
            Key {
                account: 2,
                ..key(7)
            },
            Key {
                folder: "Sent2".into(),
                ..key(7)
            },
        ] {
            assert_eq!(relayed.take(&other), None, "{other:?}");
        }
        assert_eq!(relayed.take(&key(7)), Some(message(10)));
        assert_eq!(relayed.take(&key(7)), None);
        assert_eq!(relayed.lock().bytes, 0);
    }

    #[test]
    fn the_oldest_go_past_the_bound() {
        let relayed = Relayed::default();
        let third = KEPT_BYTES / 3 + 1;
        for uid in 1..=3 {
            relayed.keep(key(uid), message(third));
        }
        assert_eq!(relayed.take(&key(1)), None, "pushed out");
        // Kept again: the newest, the count replaced.
        relayed.keep(key(2), message(10));
        relayed.keep(key(4), message(third));
        assert_eq!(relayed.take(&key(3)), Some(message(third)));
        assert_eq!(relayed.take(&key(2)), Some(message(10)));
        relayed.keep(key(5), message(KEPT_BYTES + 1));
        assert_eq!(
            relayed.take(&key(5)),
            None,
            "larger than the bound: never kept"
        );
        assert!(relayed.take(&key(4)).is_some());
        let kept = relayed.lock();
        assert_eq!((kept.bytes, kept.order.len()), (0, 0));
    }
}
