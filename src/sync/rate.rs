//! Copy-rate ceilings (`--maxbytespersecond`, `--maxmessagespersecond`, the sweeper's global
//! limits): after each completed APPEND the average rate since the start is brought under the
//! ceiling by a short pause, as imapsync does.

use std::time::Duration;

// tokio's clock, so the pacing can be tested with paused time.
use tokio::time::Instant;

use super::Options;

/// Copy-rate ceilings shared by several passes at once: the average since `start` over all of
/// them stays under the ceilings (each APPEND pauses as imapsync's per-pass limit does).
#[derive(Debug)]
pub struct SharedRate {
    pub(crate) start: Instant,
    pub(crate) messages: std::sync::atomic::AtomicU64,
    pub(crate) bytes: std::sync::atomic::AtomicU64,
    pub(crate) max_mps: Option<f64>,
    pub(crate) max_bps: Option<u64>,
}

impl SharedRate {
    pub fn new(max_bytes_per_second: Option<u64>, max_messages_per_second: Option<f64>) -> Self {
        SharedRate {
            start: Instant::now(),
            messages: Default::default(),
            bytes: Default::default(),
            max_mps: max_messages_per_second.filter(|m| *m > 0.0),
            max_bps: max_bytes_per_second.filter(|b| *b > 0),
        }
    }

    /// Messages and bytes counted so far, and since when.
    pub fn totals(&self) -> (u64, u64, Duration) {
        use std::sync::atomic::Ordering;
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.start.elapsed(),
        )
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
            shared: opts
                .shared_rate
                .clone()
                .filter(|s| s.max_mps.is_some() || s.max_bps.is_some()),
        }
    }

    pub fn is_active(&self) -> bool {
        self.max_mps.is_some() || self.max_bps.is_some() || self.shared.is_some()
    }

    /// Counts the `messages` and `bytes` just appended and sleeps as long as the rate requires.
    pub async fn pause(&mut self, messages: usize, bytes: u64) {
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

        let mut off = RateLimit::new(&Options::default());
        let started = Instant::now();
        off.pause(1000, 1 << 30).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
