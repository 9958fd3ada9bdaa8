//! An [`Engine`] wrapper that times durable writes, for the fsync latency metric. Timing is an
//! I/O-shell concern (it reads the clock), so it lives here and not in the storage crate.

use std::sync::Arc;
use std::time::Instant;

use strata_core::raftstore::stats::Histogram;
use strata_storage::{Durability, Engine, Keyspace, Result, ScanIter, WriteBatch};

pub struct TimedEngine {
    pub inner: Arc<dyn Engine>,
    /// Seconds per synced write (the write and its fsync).
    pub sync_seconds: Arc<Histogram>,
}

impl Engine for TimedEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(&self, keyspace: Keyspace, start: &[u8], end: &[u8]) -> Result<ScanIter<'_>> {
        self.inner.scan(keyspace, start, end)
    }

    fn write(&self, batch: &WriteBatch, durability: Durability) -> Result<()> {
        if durability == Durability::Buffered {
            return self.inner.write(batch, durability);
        }
        let started = Instant::now();
        let result = self.inner.write(batch, durability);
        self.sync_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    fn sync(&self) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.sync();
        self.sync_seconds.observe(started.elapsed().as_secs_f64());
        result
    }
}
