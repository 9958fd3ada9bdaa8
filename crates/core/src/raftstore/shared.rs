//! [`RangeShared`]: what request handlers see of a replica, published after every round.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::mvcc::AppliedState;
use crate::mvcc::memo::Memo;

/// A replica's state as request handlers need it, published after every round. Handlers read it
/// without locking the driver.
#[derive(Debug, Default)]
pub struct RangeShared {
    pub revision: AtomicI64,
    pub compact_revision: AtomicI64,
    /// Whether a compaction's deletions are still under way (`compaction --physical` waits).
    pub compaction_pending: AtomicBool,
    pub applied_index: AtomicU64,
    pub term: AtomicU64,
    pub leader_id: AtomicU64,
    pub commit_index: AtomicU64,
    /// Every key's newest version (the key index): apply batches read and extend it, readers
    /// use it to read a key's current version and to walk ranges (see `mvcc::memo`).
    pub memo: RwLock<Memo>,
}

impl RangeShared {
    /// The applied state readers may use.
    pub fn read_state(&self) -> AppliedState {
        AppliedState {
            applied_index: self.applied_index.load(Ordering::Acquire),
            applied_term: 0,
            revision: self.revision.load(Ordering::Acquire),
            compact_revision: self.compact_revision.load(Ordering::Acquire),
            compaction_pending: self.compaction_pending.load(Ordering::Acquire),
        }
    }
}
