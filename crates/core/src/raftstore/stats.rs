//! Counters a node keeps about its own work, read by the server's `/metrics`. Plain atomics:
//! updating them never blocks the raftstore, and reading them never blocks it either.

use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram with fixed upper bounds, in Prometheus's cumulative form when rendered.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus one for values above the last bound.
    counts: Vec<AtomicU64>,
    /// Sum of observed values, in millionths of the unit.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    /// `(upper bound, cumulative count)` pairs ending with `+Inf`, then the sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        (buckets, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

/// Bounds for counts of things per batch.
pub const BATCH_BOUNDS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Bounds for durations in seconds, from 100 µs to 2 s.
pub const SECONDS_BOUNDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0];

#[derive(Debug)]
pub struct NodeStats {
    pub proposals: AtomicU64,
    pub entries_applied: AtomicU64,
    pub rounds: AtomicU64,
    pub leader_changes: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_applied: AtomicU64,
    /// Log entries written per round (the group-commit batch size).
    pub log_batch_entries: Histogram,
    /// Entries applied per round.
    pub apply_batch_entries: Histogram,
}

impl Default for NodeStats {
    fn default() -> Self {
        Self {
            proposals: AtomicU64::new(0),
            entries_applied: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
            snapshots_applied: AtomicU64::new(0),
            log_batch_entries: Histogram::new(BATCH_BOUNDS),
            apply_batch_entries: Histogram::new(BATCH_BOUNDS),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let (buckets, sum) = h.snapshot();
        assert_eq!(buckets, vec![(1.0, 1), (10.0, 2), (f64::INFINITY, 3)]);
        assert!((sum - 55.5).abs() < 1e-6);
    }
}
