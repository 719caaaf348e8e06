//! Poisoned `std::sync` locks (a task panicked while holding one). The policy: a poisoned lock is
//! an error, [`Poisoned`], naming what was locked and logged at error level; the session, sweep or
//! pass that meets it fails with it through its own error type: nothing is skipped silently.
//! [`recover`] only where the caller cannot return an error and no panic leaves the value half-set.
//! [`Swap`]: a value replaced whole by a reload while its readers keep the version they took.

use std::sync::{Mutex, MutexGuard};

use tracing::error;

/// A lock whose holder panicked: what it guards can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} is unusable: a task panicked while holding its lock")]
pub struct Poisoned {
    /// What the lock guards, for people ("the account's folder names").
    pub what: &'static str,
}

/// Locks `mutex`; a poisoned one is a [`Poisoned`] error (logged) for the caller to fail with.
pub(crate) fn lock<'a, T>(
    mutex: &'a Mutex<T>,
    what: &'static str,
) -> Result<MutexGuard<'a, T>, Poisoned> {
    mutex.lock().map_err(|_| {
        error!(
            lock = what,
            "a task panicked while holding this lock: failing"
        );
        Poisoned { what }
    })
}

/// Locks `mutex`, taking over a poisoned one as its holder left it (logged once, then the poison
/// is cleared). Sound only for a value every critical section leaves whole (one assignment, one
/// push or pop, a counter), used where the caller cannot return an error; each use says why.
pub(crate) fn recover<'a, T>(mutex: &'a Mutex<T>, what: &'static str) -> MutexGuard<'a, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        error!(
            lock = what,
            "a task panicked while holding this lock: its value is used as it was left"
        );
        mutex.clear_poison();
        poisoned.into_inner()
    })
}

/// Locks `mutex` for a getter of a part of the value that is always set whole: a poisoned lock is
/// read as its holder left it (logged), and stays poisoned, an error for every other use.
pub(crate) fn read_anyway<'a, T>(mutex: &'a Mutex<T>, what: &'static str) -> MutexGuard<'a, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        error!(
            lock = what,
            "a task panicked while holding this lock: read as it was left"
        );
        poisoned.into_inner()
    })
}

/// [`recover`] for a mutex that is consumed.
pub(crate) fn recover_inner<T>(mutex: Mutex<T>, what: &'static str) -> T {
    mutex.into_inner().unwrap_or_else(|poisoned| {
        error!(
            lock = what,
            "a task panicked while holding this lock: its value is used as it was left"
        );
        poisoned.into_inner()
    })
}

/// A value that is replaced whole while readers hold the version they took (a configuration
/// reload): [`Swap::get`] clones the `Arc` under a short read lock, never held across an await.
/// Recovered when poisoned: the only write is one assignment of an `Arc`.
#[derive(Debug)]
pub struct Swap<T>(std::sync::RwLock<std::sync::Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap(std::sync::RwLock::new(std::sync::Arc::new(value)))
    }

    /// The current version.
    pub fn get(&self) -> std::sync::Arc<T> {
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        std::sync::Arc::clone(&guard)
    }

    /// Replaces the current version; holders of the old one keep it.
    pub fn set(&self, value: std::sync::Arc<T>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mutex whose holder panicked.
    fn poisoned(value: Vec<u32>) -> Mutex<Vec<u32>> {
        let mutex = Mutex::new(value);
        std::thread::scope(|s| {
            let held = s.spawn(|| {
                let mut guard = mutex.lock().unwrap();
                guard.push(99);
                panic!("holder panics");
            });
            assert!(held.join().is_err());
        });
        assert!(mutex.is_poisoned());
        mutex
    }

    #[test]
    fn a_poisoned_lock_is_an_error_every_time() {
        let mutex = poisoned(vec![1]);
        for _ in 0..2 {
            let err = lock(&mutex, "the test list").map(|g| g.len()).unwrap_err();
            assert_eq!(
                err,
                Poisoned {
                    what: "the test list"
                }
            );
            assert!(err.to_string().contains("the test list"), "{err}");
        }
        assert!(mutex.is_poisoned(), "an error leaves the lock poisoned");
        let healthy = Mutex::new(vec![1]);
        assert_eq!(lock(&healthy, "a list").unwrap().len(), 1);
    }

    #[test]
    fn recovering_takes_the_value_as_left_and_clears_the_poison() {
        let mutex = poisoned(vec![1]);
        assert_eq!(*recover(&mutex, "the test list"), vec![1, 99]);
        assert!(!mutex.is_poisoned());
        assert_eq!(lock(&mutex, "the test list").unwrap().len(), 2);
        assert_eq!(recover_inner(poisoned(vec![2]), "a list"), vec![2, 99]);
        let mutex = poisoned(vec![3]);
        assert_eq!(*read_anyway(&mutex, "a list"), vec![3, 99]);
        assert!(lock(&mutex, "a list").is_err(), "reading leaves the poison");
    }
}
