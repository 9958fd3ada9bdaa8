//! [`RangeShared`]: what request handlers see of a replica, published after every round.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::RangeId;
use crate::mvcc::AppliedState;
use crate::mvcc::locks::LockTable;
use crate::mvcc::memo::Memo;
use crate::range::RangeDescriptor;

/// A replica's state as request handlers need it, published after every round. Handlers read it
/// without locking the driver.
#[derive(Debug, Default)]
pub struct RangeShared {
    pub revision: AtomicI64,
    /// A revision at or below which the replica holds every event of its range, beyond
    /// `revision` while the range is idle and others write (a range taking its revisions from
    /// the oracle; see `closing`); 0 until a close round reaches it.
    pub closed: AtomicI64,
    pub compact_revision: AtomicI64,
    /// Whether a compaction's deletions are still under way (`compaction --physical` waits).
    pub compaction_pending: AtomicBool,
    pub applied_index: AtomicU64,
    pub term: AtomicU64,
    pub leader_id: AtomicU64,
    pub commit_index: AtomicU64,
    /// How many locks of transactions across ranges the replica holds, and the least start
    /// timestamp among them: see `mvcc::locks`.
    pub lock_count: AtomicU64,
    pub lock_floor: AtomicI64,
    /// Every key's newest version (the key index): apply batches read and extend it, readers
    /// use it to read a key's current version and to walk ranges (see `mvcc::memo`).
    pub memo: RwLock<Memo>,
    /// The range's locks of transactions across ranges (`mvcc::locks::LockTable`).
    pub locks: RwLock<LockTable>,
    /// The range's descriptor as applied, replaced when its epoch changes.
    pub descriptor: RwLock<RangeDescriptor>,
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
            tso_ceiling: 0,
            lock_count: self.lock_count.load(Ordering::Acquire),
            lock_floor: 0,
        }
    }

    /// The revision at or below which the replica holds every event of its range.
    ///
    /// While the range holds locks of transactions across ranges, it is below the least of
    /// their start timestamps: such a transaction commits at a revision above its start, and
    /// may commit here after the range has applied later writes or been closed beyond it.
    pub fn closed_revision(&self) -> i64 {
        let revision = self.revision.load(Ordering::Acquire);
        let closed = revision.max(self.closed.load(Ordering::Acquire));
        match self.lock_count.load(Ordering::Acquire) {
            0 => closed,
            _ => closed.min(self.lock_floor.load(Ordering::Acquire) - 1),
        }
    }
}

/// How far a node's watchers may be given events (see `watch::feed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// The frontier: every range the node holds has applied every event at or below it.
    pub frontier: i64,
    /// Events below it may be compacted away in some range.
    pub floor: i64,
}

/// The shared state of every replica a node holds, by range: how request handlers find a
/// range's replica. Cloning shares it; the node adds and removes replicas as it opens, creates
/// and removes them, so a handler always sees the ranges the node holds now.
#[derive(Clone, Debug, Default)]
pub struct SharedRanges(
    Arc<RwLock<BTreeMap<RangeId, Arc<RangeShared>>>>,
    Arc<AtomicBool>,
    /// Leases the node's lease clock found expired whose keys lie in several ranges: the shell
    /// revokes them as transactions across ranges (`coordinator::Coordinator::revoke`).
    /// With the term of the meta leader whose clock found each expired.
    Arc<std::sync::Mutex<BTreeMap<i64, u64>>>,
    /// Grows whenever a range is added or a span changes: watch groups are planned again
    /// (`watch::Hubs`).
    Arc<AtomicU64>,
);

impl SharedRanges {
    pub fn get(&self, range_id: RangeId) -> Option<Arc<RangeShared>> {
        self.0.read().expect("ranges lock").get(&range_id).cloned()
    }

    /// Every range the node holds, in order.
    pub fn all(&self) -> Vec<(RangeId, Arc<RangeShared>)> {
        let ranges = self.0.read().expect("ranges lock");
        ranges.iter().map(|(id, shared)| (*id, shared.clone())).collect()
    }

    /// The ranges this node holds that overlap the keys `[start, end)` (an empty `end`: `start`
    /// alone; `[0]`: every key from `start` on, as etcd's `range_end` says), in key order.
    pub fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<(RangeId, Arc<RangeShared>)> {
        let ranges = self.0.read().expect("ranges lock");
        let mut found: Vec<(RangeId, Arc<RangeShared>)> = (ranges.iter())
            .filter(|(id, shared)| {
                let descriptor = shared.descriptor.read().expect("descriptor lock");
                // An uninitialized replica (see `raftstore::split`) holds no keys yet; a joining
                // node's meta replica serves as before.
                if descriptor.epoch.is_none() && **id != crate::range::META_RANGE_ID {
                    return false;
                }
                let (first, past) = descriptor.span();
                match end {
                    [] => descriptor.contains(start),
                    // From `start` to the end of the key space.
                    [0] => past.is_empty() || start < past,
                    end => (past.is_empty() || start < past) && first < end,
                }
            })
            .map(|(id, shared)| (*id, shared.clone()))
            .collect();
        // Most requests touch one range: only several are put in key order.
        if found.len() > 1 {
            found.sort_by_cached_key(|(_, shared)| {
                shared.descriptor.read().expect("descriptor lock").span().0.to_vec()
            });
        }
        found
    }

    /// As [`SharedRanges::overlapping`], for a request that must find every key it names:
    /// `RangeUnavailable` if some of the keys lie in no range this node holds (it lagged through
    /// a split: the new range's replica is not here yet, or not initialized).
    pub fn holding(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> crate::Result<Vec<(RangeId, Arc<RangeShared>)>> {
        let found = self.overlapping(start, end);
        let mut from = start.to_vec();
        let mut to_the_end = false;
        for (_, shared) in &found {
            let descriptor = shared.descriptor.read().expect("descriptor lock");
            let (first, past) = descriptor.span();
            if first > from.as_slice() {
                break;
            }
            if past.is_empty() {
                to_the_end = true;
                break;
            }
            if past > from.as_slice() {
                from = past.to_vec();
            }
        }
        let covered = to_the_end
            || match end {
                [] => from.as_slice() > start,
                [0] => false,
                end => from.as_slice() >= end,
            };
        if covered { Ok(found) } else { Err(crate::Error::RangeUnavailable) }
    }

    /// As [`SharedRanges::holding`], over several spans: each range once, by range id.
    pub fn holding_any(
        &self,
        spans: &[(&[u8], &[u8])],
    ) -> crate::Result<Vec<(RangeId, Arc<RangeShared>)>> {
        let mut found = Vec::new();
        for (start, end) in spans {
            found.extend(self.holding(start, end)?);
        }
        found.sort_unstable_by_key(|(id, _)| *id);
        found.dedup_by_key(|(id, _)| *id);
        Ok(found)
    }

    /// The replicas overlapping any of the spans (etcd's `key`, `range_end`), each once, by
    /// range id.
    pub fn overlapping_any(&self, spans: &[(&[u8], &[u8])]) -> Vec<(RangeId, Arc<RangeShared>)> {
        let mut found: Vec<(RangeId, Arc<RangeShared>)> =
            spans.iter().flat_map(|(start, end)| self.overlapping(start, end)).collect();
        found.sort_unstable_by_key(|(id, _)| *id);
        found.dedup_by_key(|(id, _)| *id);
        found
    }

    /// The node's watermarks. With one range: its revision and compaction floor.
    pub fn watermarks(&self) -> Watermarks {
        let ranges = self.0.read().expect("ranges lock");
        let mut marks = Watermarks { frontier: i64::MAX, floor: 0 };
        for shared in ranges.values() {
            marks.frontier = marks.frontier.min(shared.closed_revision());
            marks.floor = marks.floor.max(shared.compact_revision.load(Ordering::Acquire));
        }
        if ranges.is_empty() {
            marks.frontier = 0;
        }
        marks
    }

    /// The newest revision the node has applied, in whichever range.
    pub fn newest_revision(&self) -> i64 {
        let ranges = self.0.read().expect("ranges lock");
        ranges.values().map(|shared| shared.revision.load(Ordering::Acquire)).max().unwrap_or(0)
    }

    /// Whether the node has watchers (the watch feeder says so): close rounds then follow every
    /// move of a range, and otherwise run at most once a tick (see `closing`).
    pub fn watched(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }

    pub fn set_watched(&self, watched: bool) {
        self.1.store(watched, Ordering::Relaxed);
    }

    pub(crate) fn expired_across(&self, lease: i64, term: u64) {
        self.2.lock().expect("expired leases lock").insert(lease, term);
    }

    /// Takes the leases found expired whose keys lie in several ranges, with the term of the
    /// meta leader that found each (`TxnPrepare::expiry_term`).
    pub fn take_expired_across(&self) -> Vec<(i64, u64)> {
        std::mem::take(&mut *self.2.lock().expect("expired leases lock")).into_iter().collect()
    }

    pub(crate) fn insert(&self, range_id: RangeId, shared: Arc<RangeShared>) {
        let mut ranges = self.0.write().expect("ranges lock");
        ranges.insert(range_id, shared);
        self.3.fetch_add(1, Ordering::AcqRel);
    }

    /// Grows whenever a range is added or a range's span changes.
    pub fn generation(&self) -> u64 {
        self.3.load(Ordering::Acquire)
    }

    /// A node's ranges for tests: a replica of each `(id, start, end)` on node 1.
    #[cfg(test)]
    pub(crate) fn of_spans(spans: &[(RangeId, &[u8], &[u8])]) -> Self {
        let ranges = Self::default();
        for &(id, start, end) in spans {
            let shared = RangeShared::default();
            *shared.descriptor.write().unwrap() = RangeDescriptor::bootstrap(id, start, end, &[1]);
            ranges.insert(id, Arc::new(shared));
        }
        ranges
    }

    pub(crate) fn spans_changed(&self) {
        self.3.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// A node holding `[, m)` and `[x, )`, and an uninitialized replica of `[m, x)`.
    fn lagging() -> SharedRanges {
        let ranges = SharedRanges::of_spans(&[(1, b"", b"m"), (3, b"x", b"")]);
        let uninitialized = RangeShared::default();
        *uninitialized.descriptor.write().unwrap() =
            RangeDescriptor { range_id: 2, ..Default::default() };
        ranges.insert(2, Arc::new(uninitialized));
        ranges
    }

    #[test]
    fn a_request_needs_every_range_of_its_keys() {
        let ranges = lagging();
        let ids = |found: crate::Result<Vec<(RangeId, Arc<RangeShared>)>>| {
            found.map(|found| found.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
        };
        assert_eq!(ids(ranges.holding(b"a", b"")), Ok(vec![1]));
        assert_eq!(ids(ranges.holding(b"y", b"z")), Ok(vec![3]));
        // The uninitialized replica holds nothing yet: keys of its span are unavailable here,
        // and so is a span over it, even though the ranges on either side are held.
        assert_eq!(ids(ranges.holding(b"n", b"")), Err(Error::RangeUnavailable));
        assert_eq!(ids(ranges.holding(b"a", b"z")), Err(Error::RangeUnavailable));
        assert_eq!(ids(ranges.holding(b"", &[0])), Err(Error::RangeUnavailable));
        assert_eq!(
            ids(ranges.holding_any(&[(b"a", b""), (b"n", b"")])),
            Err(Error::RangeUnavailable)
        );
        assert_eq!(ids(ranges.holding_any(&[(b"a", b""), (b"y", b"")])), Ok(vec![1, 3]));
    }
}
