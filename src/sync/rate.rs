//! Copy-rate ceilings (`--maxbytespersecond`, `--maxmessagespersecond`, the sweeper's global
//! limits): after each completed APPEND the average rate since the start is brought under the
//! ceiling by a short pause, as imapsync does.

use std::time::Duration;

// tokio's clock, so the pacing can be tested with paused time.
use tokio::time::Instant;

use super::Options;

/// Copy-rate ceilings shared by several passes at once: the average since the start over all of
/// them stays under the ceilings (each APPEND pauses as imapsync's per-pass limit does). The
/// ceilings can change while passes run ([`SharedRate::set_ceilings`], a proxy reload): the
/// average then starts again, so a raised ceiling never allows a catch-up burst.
#[derive(Debug)]
pub struct SharedRate {
    state: std::sync::Mutex<RateState>,
}

/// What [`SharedRate`] counts, under one lock (held for a few arithmetic steps, never across an
/// await; recovered when poisoned: every critical section assigns or adds whole numbers).
#[derive(Debug)]
struct RateState {
    start: Instant,
    messages: u64,
    bytes: u64,
    max_mps: Option<f64>,
    max_bps: Option<u64>,
}

const SHARED_RATE: &str = "the shared copy-rate counters";

impl SharedRate {
    pub fn new(max_bytes_per_second: Option<u64>, max_messages_per_second: Option<f64>) -> Self {
        SharedRate {
            state: std::sync::Mutex::new(RateState {
                start: Instant::now(),
                messages: 0,
                bytes: 0,
                max_mps: max_messages_per_second.filter(|m| *m > 0.0),
                max_bps: max_bytes_per_second.filter(|b| *b > 0),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RateState> {
        crate::lock::recover(&self.state, SHARED_RATE)
    }

    /// Whether any ceiling is set.
    pub fn has_ceilings(&self) -> bool {
        let s = self.state();
        s.max_mps.is_some() || s.max_bps.is_some()
    }

    /// New ceilings (`None` or 0: none); the counts start again from now.
    pub fn set_ceilings(
        &self,
        max_bytes_per_second: Option<u64>,
        max_messages_per_second: Option<f64>,
    ) {
        let mut s = self.state();
        *s = RateState {
            start: Instant::now(),
            messages: 0,
            bytes: 0,
            max_mps: max_messages_per_second.filter(|m| *m > 0.0),
            max_bps: max_bytes_per_second.filter(|b| *b > 0),
        };
    }

    /// Messages and bytes counted so far, and since when.
    pub fn totals(&self) -> (u64, u64, Duration) {
        let s = self.state();
        (s.messages, s.bytes, s.start.elapsed())
    }

    /// Counts what was just appended; the pause the ceilings require.
    fn count(&self, messages: u64, bytes: u64) -> Duration {
        let mut s = self.state();
        if s.max_mps.is_none() && s.max_bps.is_none() {
            return Duration::ZERO;
        }
        s.messages += messages;
        s.bytes += bytes;
        rate_sleep(s.messages, s.bytes, s.start.elapsed(), s.max_mps, s.max_bps)
    }
}

/// imapsync's `--maxsleep` default.
const MAX_SLEEP: Duration = Duration::from_secs(2);

/// `--maxmessagespersecond` / `--maxbytespersecond`, checked after each completed APPEND as
/// imapsync does: the average rate since the start is brought under the ceiling by a pause of at
/// most [`MAX_SLEEP`]. The counters are per folder pair (a pass-wide counter would need plumbing
/// through the account loop), so folders synced in parallel are each limited on their own.
pub(crate) struct RateLimit {
    start: Instant,
    messages: u64,
    bytes: u64,
    max_mps: Option<f64>,
    max_bps: Option<u64>,
    shared: Option<std::sync::Arc<SharedRate>>,
}

impl RateLimit {
    pub fn new(opts: &Options) -> Self {
        RateLimit {
            start: Instant::now(),
            messages: 0,
            bytes: 0,
            max_mps: opts.max_messages_per_second.filter(|m| *m > 0.0),
            max_bps: opts.max_bytes_per_second.filter(|b| *b > 0),
            // Kept even without ceilings: a reload may set some.
            shared: opts.shared_rate.clone(),
        }
    }

    /// Whether a ceiling applies now (a shared one may be set or lifted by a reload).
    pub fn is_active(&self) -> bool {
        self.max_mps.is_some()
            || self.max_bps.is_some()
            || self.shared.as_ref().is_some_and(|s| s.has_ceilings())
    }

    /// Counts the `messages` and `bytes` just appended and sleeps as long as the rate requires.
    pub async fn pause(&mut self, messages: usize, bytes: u64) {
        if self.max_mps.is_none() && self.max_bps.is_none() && self.shared.is_none() {
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
            wait = wait.max(s.count(messages as u64, bytes));
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
mod tests {
    use super::*;

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

    /// 30 messages at 20 per second take 1.5 s of (paused, virtual) time, alone or sharing a
    /// ceiling with another pass.
    #[tokio::test(start_paused = true)]
    async fn pauses_hold_the_average_under_the_ceiling() {
        let opts = Options {
            max_messages_per_second: Some(20.0),
            ..Options::default()
        };
        let started = Instant::now();
        let mut limit = RateLimit::new(&opts);
        for _ in 0..30 {
            limit.pause(1, 400).await;
        }
        assert_eq!(started.elapsed(), Duration::from_millis(1500));

        let shared = std::sync::Arc::new(SharedRate::new(None, Some(20.0)));
        let opts = Options {
            shared_rate: Some(shared),
            ..Options::default()
        };
        let started = Instant::now();
        let (mut a, mut b) = (RateLimit::new(&opts), RateLimit::new(&opts));
        for _ in 0..15 {
            a.pause(1, 400).await;
            b.pause(1, 400).await;
        }
        assert_eq!(started.elapsed(), Duration::from_millis(1500));

        // Ceilings set while passes run start the average again: no catch-up burst after a
        // raise, and lifting them ends the pauses.
        let shared = std::sync::Arc::new(SharedRate::new(None, None));
        let opts = Options {
            shared_rate: Some(std::sync::Arc::clone(&shared)),
            ..Options::default()
        };
        let mut limit = RateLimit::new(&opts);
        let started = Instant::now();
        limit.pause(100, 400).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        shared.set_ceilings(None, Some(10.0));
        assert!(shared.has_ceilings());
        for _ in 0..10 {
            limit.pause(1, 400).await;
        }
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
        shared.set_ceilings(None, None);
        limit.pause(1000, 400).await;
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
        assert_eq!(shared.totals().0, 0);

        let mut off = RateLimit::new(&Options::default());
        let started = Instant::now();
        off.pause(1000, 1 << 30).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
