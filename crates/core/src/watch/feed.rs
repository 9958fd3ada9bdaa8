//! Feeding a node's [`Hubs`] from what its replicas applied, and catching a lagging watcher up
//! from storage: the reads the server's watch tasks and the simulator's watch clients share.
//!
//! The feeder reads each applied revision's events from the change index and publishes them,
//! in order, after the writes that made them are visible: to each group of watchers (see
//! `hubs`) up to the group's frontier, the revision through which every range the group's keys
//! lie in has applied every event — the replica's revision when the node holds one range. The
//! change index is the node's, so one read finds the events of every range. The hubs' lock is
//! held only to look and to publish, never while reading.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use strata_storage::Engine;

use super::history::{self, Chunk};
use super::{Hubs, Spec};
use crate::raftstore::SharedRanges;
use crate::{Error, Result};

/// Publishes to each group of watchers every event up to the group's frontier it has not
/// published yet, reading at most `read_bytes` of events at a time. Returns the client streams
/// with events to take.
pub fn publish_applied(
    engine: &dyn Engine,
    ranges: &SharedRanges,
    hubs: &Mutex<Hubs>,
    read_bytes: usize,
) -> Result<BTreeSet<u64>> {
    let lock = || hubs.lock().expect("watch hubs lock");
    let mut woken = BTreeSet::new();
    let groups = {
        let mut hubs = lock();
        hubs.follow_ranges(ranges);
        hubs.groups()
    };
    ranges.set_watched(!groups.is_empty());
    for group in groups {
        loop {
            let Some((published, prev_kv)) = lock().state(&group) else { break };
            if lock().waits(&group) {
                break;
            }
            let frontier = Hubs::frontier_of(&group, ranges);
            if frontier <= published {
                break;
            }
            let span = (published + 1, frontier);
            match read_events(engine, ranges, span, None, read_bytes, prev_kv) {
                Ok(chunk) => {
                    let events: Vec<Arc<_>> = chunk.events.into_iter().map(Arc::new).collect();
                    let mut hubs = lock();
                    woken.extend(hubs.publish(&group, published, &events, chunk.through, prev_kv));
                }
                // A compaction overtook the feeder (after a snapshot was installed, say): the
                // watchers that needed those events find out from storage.
                Err(Error::Compacted) => woken.extend(lock().skip_to(&group, published, frontier)),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(woken)
}

/// Reads the events of revisions `from..=to` (at or below the frontier of the ranges `spec`
/// concerns) that `spec` wants (all if `None`), at most about `read_bytes` of them: one chunk
/// of a lagging watcher's catch-up, or of the feeder's reading. "Compacted" if the span starts
/// below the compaction floor of the node's ranges.
pub fn read_events(
    engine: &dyn Engine,
    ranges: &SharedRanges,
    (from, to): (i64, i64),
    spec: Option<&Spec>,
    read_bytes: usize,
    prev_kv: bool,
) -> Result<Chunk> {
    // As `local_read::read_stable`: a compaction that moved the floor while reading may have
    // deleted what was read; read again on the new floor.
    loop {
        let floor = ranges.watermarks().floor;
        if from < floor {
            return Err(Error::Compacted);
        }
        let chunk = history::read(engine, (from, to), floor, spec, read_bytes, prev_kv);
        if ranges.watermarks().floor == floor {
            return chunk;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use prost::Message as _;
    use strata_storage::{Durability, Keyspace, MemEngine, WriteBatch};

    use super::*;
    use crate::keys;
    use crate::mvcc::record::VersionRecord;
    use crate::raftstore::RangeShared;
    use crate::range::RangeDescriptor;
    use crate::watch::{Take, WatcherId};

    /// A node holding range 1 (keys below "m") and range 2 (from "m" on).
    fn two_ranges() -> SharedRanges {
        SharedRanges::of_spans(&[(1, b"", b"m"), (2, b"m", b"")])
    }

    fn put(engine: &MemEngine, key: &str, revision: i64) {
        let record = VersionRecord { create_revision: revision, version: 1, ..Default::default() };
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Mvcc, keys::version(key.as_bytes(), revision), record.encode_to_vec());
        batch.put(Keyspace::Mvcc, keys::change(revision, 0), key.as_bytes().to_vec());
        engine.write(&batch, Durability::Buffered).unwrap();
    }

    fn taken(hubs: &Mutex<Hubs>, id: WatcherId) -> Vec<i64> {
        match hubs.lock().unwrap().take(id) {
            Some(Take::Events { events, .. }) => {
                events.iter().map(|e| super::super::revision_of(e)).collect()
            }
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn a_stalled_range_holds_back_only_the_watchers_of_its_keys() {
        let (engine, ranges, hubs) = (MemEngine::new(), two_ranges(), Mutex::new(Hubs::default()));
        let spec = |key: &str, end: Option<&str>| Spec {
            key: key.as_bytes().to_vec(),
            range_end: end.map(|e| e.as_bytes().to_vec()),
            ..Default::default()
        };
        let (of_a, of_all) = (WatcherId { stream: 1, watch: 0 }, WatcherId { stream: 2, watch: 0 });
        for (id, spec) in [(of_a, spec("a", None)), (of_all, spec("\0", Some("")))] {
            let from_now = hubs.lock().unwrap().add(id, spec, None, &ranges);
            assert_eq!(from_now, 0);
        }
        // Range 1 applies revisions 1 and 3; range 2 applied revision 2 and is closed at 2 (its
        // leader is gone): the watcher of "a" gets both of its events, the watcher of every key
        // only what is below range 2's closed revision.
        put(&engine, "a", 1);
        put(&engine, "x", 2);
        put(&engine, "a", 3);
        let (one, two) = (ranges.get(1).unwrap(), ranges.get(2).unwrap());
        one.revision.store(3, Ordering::Release);
        two.revision.store(2, Ordering::Release);
        publish_applied(&engine, &ranges, &hubs, 1 << 20).unwrap();
        assert_eq!(taken(&hubs, of_a), [1, 3]);
        assert_eq!(taken(&hubs, of_all), [1, 2]);
        // A close round reaches range 2: the rest comes, once.
        two.closed.store(3, Ordering::Release);
        publish_applied(&engine, &ranges, &hubs, 1 << 20).unwrap();
        assert_eq!(taken(&hubs, of_a), Vec::<i64>::new());
        assert_eq!(taken(&hubs, of_all), [3]);
        // A new watcher of every key from now starts after the frontier of both ranges.
        let later = WatcherId { stream: 3, watch: 0 };
        assert_eq!(hubs.lock().unwrap().add(later, spec("\0", Some("")), None, &ranges), 3);
    }

    #[test]
    fn a_split_range_s_new_range_joins_the_groups_of_its_keys() {
        let (engine, ranges, hubs) = (MemEngine::new(), two_ranges(), Mutex::new(Hubs::default()));
        let every = Spec { key: vec![0], range_end: Some(Vec::new()), ..Default::default() };
        let of_y = Spec { key: b"y".to_vec(), ..Default::default() };
        let (all, y) = (WatcherId { stream: 1, watch: 0 }, WatcherId { stream: 2, watch: 0 });
        hubs.lock().unwrap().add(all, every, None, &ranges);
        hubs.lock().unwrap().add(y, of_y, None, &ranges);
        put(&engine, "x", 1);
        let two = ranges.get(2).unwrap();
        two.revision.store(1, Ordering::Release);
        ranges.get(1).unwrap().closed.store(1, Ordering::Release);
        publish_applied(&engine, &ranges, &hubs, 1 << 20).unwrap();
        assert_eq!(taken(&hubs, all), [1]);
        // Range 2 splits at "y": range 3 takes "y" on, at range 2's revision.
        let three = RangeShared::default();
        *three.descriptor.write().unwrap() = RangeDescriptor::bootstrap(3, b"y", b"", &[1]);
        three.revision.store(1, Ordering::Release);
        ranges.insert(3, Arc::new(three));
        *two.descriptor.write().unwrap() = RangeDescriptor::bootstrap(2, b"m", b"y", &[1]);
        ranges.spans_changed();
        // Range 2 moves on; range 3 has not closed beyond the split: nothing of 2 past it yet.
        put(&engine, "x", 2);
        two.revision.store(2, Ordering::Release);
        ranges.get(1).unwrap().closed.store(3, Ordering::Release);
        publish_applied(&engine, &ranges, &hubs, 1 << 20).unwrap();
        assert_eq!(taken(&hubs, all), Vec::<i64>::new());
        // Range 3 writes at 3: every watcher of its keys is given it, in order.
        put(&engine, "y", 3);
        ranges.get(3).unwrap().revision.store(3, Ordering::Release);
        two.closed.store(3, Ordering::Release);
        publish_applied(&engine, &ranges, &hubs, 1 << 20).unwrap();
        assert_eq!(taken(&hubs, all), [2, 3]);
        assert_eq!(taken(&hubs, y), [3]);
    }

    #[test]
    fn watchers_of_keys_no_range_here_holds_wait_for_it() {
        let (engine, ranges, hubs) = (MemEngine::new(), two_ranges(), Mutex::new(Hubs::default()));
        let every = Spec { key: vec![0], range_end: Some(Vec::new()), ..Default::default() };
        let all = WatcherId { stream: 1, watch: 0 };
        hubs.lock().unwrap().add(all, every, None, &ranges);
        // A lagging member: range 2 took a snapshot from after its split at "y", and the new
        // range is not here yet. Its events up to 4 are, in part, elsewhere.
        let two = ranges.get(2).unwrap();
        *two.descriptor.write().unwrap() = RangeDescriptor::bootstrap(2, b"m", b"y", &[1]);
        ranges.spans_changed();
        put(&engine, "x", 2);
        two.revision.store(4, Ordering::Release);
        ranges.get(1).unwrap().closed.store(4, Ordering::Release);
        publish_applied(&engine, &ranges, &hubs, 1 << 20).unwrap();
        assert_eq!(taken(&hubs, all), Vec::<i64>::new(), "keys from y on are not held here");
        // The new range arrives with its snapshot (holding the event at 3).
        put(&engine, "y", 3);
        let three = RangeShared::default();
        *three.descriptor.write().unwrap() = RangeDescriptor::bootstrap(3, b"y", b"", &[1]);
        three.revision.store(4, Ordering::Release);
        ranges.insert(3, Arc::new(three));
        publish_applied(&engine, &ranges, &hubs, 1 << 20).unwrap();
        assert_eq!(taken(&hubs, all), [2, 3]);
    }
}
