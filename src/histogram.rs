//! A histogram of durations on plain atomics (any thread records without a lock), its snapshot,
//! and the snapshot in Prometheus' text format. The proxy's login latency and the journal's
//! commit wait are kept in one each.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The last bucket's bound: every duration has a bucket.
pub const INF: f64 = f64::INFINITY;

/// Durations counted in `N` buckets, each by its upper bound in seconds; the last bound is
/// [`INF`].
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [f64; N],
    /// Not cumulative: each duration counts in the first bucket whose bound holds it.
    buckets: [AtomicU64; N],
    sum_micros: AtomicU64,
}

/// What a [`Histogram`] counted up to a moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counts<const N: usize> {
    pub bounds: [f64; N],
    pub buckets: [u64; N],
    pub sum_micros: u64,
}

impl<const N: usize> Histogram<N> {
    pub fn new(bounds: [f64; N]) -> Self {
        debug_assert_eq!(bounds.last(), Some(&INF), "every duration has a bucket");
        Histogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = self.bounds.iter().position(|&le| secs <= le);
        if let Some(bucket) = i.and_then(|i| self.buckets.get(i)) {
            bucket.fetch_add(1, Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    pub fn counts(&self) -> Counts<N> {
        Counts {
            bounds: self.bounds,
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

impl<const N: usize> Counts<N> {
    /// `name`'s `# HELP`, `# TYPE` and its `_bucket` (cumulative), `_sum` and `_count` lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (le, n) in self.bounds.iter().zip(self.buckets) {
            cumulative += n;
            let le = if le.is_finite() {
                le.to_string()
            } else {
                "+Inf".to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_count_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new([0.001, 0.01, INF]);
        for micros in [0, 1_000, 1_001, 10_000, 10_001, 5_000_000] {
            h.observe(Duration::from_micros(micros));
        }
        let c = h.counts();
        assert_eq!(c.buckets, [2, 2, 2]);
        assert_eq!(c.sum_micros, 5_022_002);
    }

    #[test]
    fn rendered_buckets_are_cumulative_and_end_at_inf() {
        let h = Histogram::new([0.005, 0.25, INF]);
        for millis in [3, 100, 200, 60_000] {
            h.observe(Duration::from_millis(millis));
        }
        let mut out = String::new();
        h.counts().render(&mut out, "x_seconds", "Time.");
        assert_eq!(
            out,
            "# HELP x_seconds Time.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.005\"} 1\n\
             x_seconds_bucket{le=\"0.25\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 4\n\
             x_seconds_sum 60.303\n\
             x_seconds_count 4\n"
        );
    }
}
