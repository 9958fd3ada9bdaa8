//! The simulated disk: the in-memory engine (which keeps apart what was written and what was
//! fsynced) with an fsync that can be made to fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use strata_storage::{Durability, Engine, Keyspace, MemEngine, Result, ScanIter, WriteBatch};

#[derive(Clone, Default)]
pub struct Disk {
    pub memory: MemEngine,
    fail_next_sync: Arc<AtomicBool>,
    failed_syncs: Arc<AtomicU64>,
}

impl Disk {
    /// Makes the next fsync fail. The write it belonged to may be visible but is not durable,
    /// as with a real disk; a node that sees the error must stop (and is then restarted).
    pub fn fail_next_sync(&self) {
        self.fail_next_sync.store(true, Ordering::Relaxed);
    }

    pub fn clear_faults(&self) {
        self.fail_next_sync.store(false, Ordering::Relaxed);
    }

    /// How many fsyncs failed so far.
    pub fn failed_syncs(&self) -> u64 {
        self.failed_syncs.load(Ordering::Relaxed)
    }

    fn sync_fails(&self) -> bool {
        let fails = self.fail_next_sync.swap(false, Ordering::Relaxed);
        if fails {
            self.failed_syncs.fetch_add(1, Ordering::Relaxed);
        }
        fails
    }
}

fn failed() -> strata_storage::Error {
    strata_storage::Error::Engine {
        location: "simulated disk".into(),
        message: "fsync failed (injected)".into(),
    }
}

impl Engine for Disk {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.memory.get(keyspace, key)
    }

    fn scan(&self, keyspace: Keyspace, start: &[u8], end: &[u8]) -> Result<ScanIter<'_>> {
        self.memory.scan(keyspace, start, end)
    }

    fn write(&self, batch: &WriteBatch, durability: Durability) -> Result<()> {
        if durability == Durability::Sync && self.sync_fails() {
            // Either fsync of the two journals can be the one that fails.
            let first_fails = !self.failed_syncs().is_multiple_of(2);
            self.memory.write_failing_sync(batch, first_fails)?;
            return Err(failed());
        }
        self.memory.write(batch, durability)
    }

    fn sync(&self) -> Result<()> {
        if self.sync_fails() {
            return Err(failed());
        }
        self.memory.sync()
    }
}
