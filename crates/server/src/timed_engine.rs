//! What the I/O shell times, for `/metrics`: the engine's writes (an [`Engine`] wrapper) and the
//! raftstore's rounds. Timing reads the clock, so it lives here and not in the storage crate or
//! the core.

use std::sync::Arc;
use std::time::Instant;

use strata_core::raftstore::stats::{Histogram, SECONDS_BOUNDS};
use strata_storage::{Durability, Engine, Keyspace, Result, ScanIter, WriteBatch};

/// Latency histograms, in seconds.
#[derive(Debug)]
pub struct Timings {
    /// Per synced write: the write and its fsync (etcd's `wal_fsync_duration_seconds`).
    pub fsync: Histogram,
    /// Per buffered write: applied changes, which wait on nothing but the engine's own locks
    /// and queues (etcd's `backend_commit_duration_seconds` is the closest).
    pub buffered_write: Histogram,
    /// Per raftstore round with work: persist, send, apply. Every request the raftstore
    /// serves waits for at most a round in progress.
    pub round: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            fsync: Histogram::new(SECONDS_BOUNDS),
            buffered_write: Histogram::new(SECONDS_BOUNDS),
            round: Histogram::new(SECONDS_BOUNDS),
        }
    }
}

pub struct TimedEngine {
    pub inner: Arc<dyn Engine>,
    pub timings: Arc<Timings>,
}

impl Engine for TimedEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(&self, keyspace: Keyspace, start: &[u8], end: &[u8]) -> Result<ScanIter<'_>> {
        self.inner.scan(keyspace, start, end)
    }

    fn write(&self, batch: &WriteBatch, durability: Durability) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.write(batch, durability);
        let histogram = match durability {
            Durability::Sync => &self.timings.fsync,
            Durability::Buffered => &self.timings.buffered_write,
        };
        histogram.observe(started.elapsed().as_secs_f64());
        result
    }

    fn sync(&self) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.sync();
        self.timings.fsync.observe(started.elapsed().as_secs_f64());
        result
    }
}
