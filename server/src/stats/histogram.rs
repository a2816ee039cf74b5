//! A latency histogram with fixed buckets, lock-free: observed on the per-message path,
//! read by `metrics` on each scrape.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in seconds.
/// They reach 10 minutes: accept-to-ack includes retries, the first of which comes after
/// `retry_interval_ms` (10 s by default) and the later ones after doubling intervals.
pub const BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 600.0,
];

/// A latency histogram with fixed buckets; lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation in microseconds.
    pub fn observe_micros(&self, micros: u64) {
        let secs = micros as f64 / 1e6;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Sum (seconds), count and per-bucket counts with the overflow last (upper bound
    /// `f64::MAX`, which the encoder writes as `+Inf`).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let count = self.count.load(Ordering::Relaxed);
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(le, n)| (*le, n.load(Ordering::Relaxed)))
            .collect();
        let counted: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::MAX, count.saturating_sub(counted)));
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_each_observation_once_with_the_overflow_last() {
        let h = Histogram::default();
        h.observe_micros(50);
        h.observe_micros(2_000);
        h.observe_micros(10_000_000);
        h.observe_micros(3_600_000_000);
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 3610.00205).abs() < 1e-6, "{sum}");
        let at = |le: f64| buckets.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.0001), 1);
        assert_eq!(at(0.0025), 1);
        // Ten seconds (a retried message's accept-to-ack) is inside a finite bucket.
        assert_eq!(at(10.0), 1);
        assert_eq!(buckets.last(), Some(&(f64::MAX, 1)));
    }
}
