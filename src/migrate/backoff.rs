//! Exponential back-off: after a failure, nothing before `delay` has passed; each further failure
//! doubles the delay up to a ceiling; a success resets it. Used per OLD host by the sweeper, for an
//! account's reach of OLD, and per folder by backfills. Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    delay: Duration,
    until: Option<Instant>,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            delay: first,
            until: None,
        }
    }

    /// A failure at `now`: nothing is tried before the returned wait has passed.
    pub fn fail(&mut self, now: Instant) -> Duration {
        let wait = self.delay;
        self.until = Some(now + wait);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }

    /// A success: the next failure waits the first delay again.
    pub fn succeed(&mut self) {
        self.delay = self.first;
        self.until = None;
    }

    /// Try again now (a user logged in, an operator asked) without forgetting the growing delay.
    pub fn retry_now(&mut self) {
        self.until = None;
    }

    pub fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_ceiling_and_resets_on_success() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut b = Backoff::new(s(2), s(60));
        assert!(!b.waiting(t0));
        let waits: Vec<u64> = (0..7).map(|_| b.fail(t0).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert!(b.waiting(t0 + s(59)) && !b.waiting(t0 + s(60)));
        b.retry_now();
        assert!(!b.waiting(t0));
        assert_eq!(b.fail(t0), s(60), "retry_now keeps the delay");
        b.succeed();
        assert!(!b.waiting(t0));
        assert_eq!(b.fail(t0), s(2));
    }
}
