//! Feeding a [`Hub`] from what a replica applied, and catching a lagging watcher up from
//! storage: the reads the server's watch tasks and the simulator's watch clients share.
//!
//! The feeder reads each applied revision's events once from the change index and publishes
//! them, in order, after the writes that made them are visible (it reads only what the replica
//! has published). The hub's lock is held only to look and to publish, never while reading.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use strata_storage::Engine;

use super::history::{self, Chunk};
use super::{Hub, Spec};
use crate::raftstore::RangeShared;
use crate::raftstore::local_read::read_stable;
use crate::{Error, Result};

/// Publishes to `hub` every event the replica applied since the hub last published, reading at
/// most `read_bytes` of events at a time. Returns the client streams with events to take.
pub fn publish_applied(
    engine: &dyn Engine,
    shared: &RangeShared,
    hub: &Mutex<Hub>,
    read_bytes: usize,
) -> Result<BTreeSet<u64>> {
    let lock = || hub.lock().expect("watch hub lock");
    let mut woken = BTreeSet::new();
    loop {
        let revision = shared.revision.load(std::sync::atomic::Ordering::Acquire);
        let (published, prev_kv) = {
            let mut hub = lock();
            if hub.watcher_count() == 0 && revision > hub.published() {
                // Nobody to tell: skip reading. A watcher added later that starts at or before
                // `revision` reads what it needs from storage.
                hub.publish(&[], revision, true);
            }
            (hub.published(), hub.wants_prev_kv())
        };
        if revision <= published {
            return Ok(woken);
        }
        let span = (published + 1, revision);
        match read_events(engine, shared, span, None, read_bytes, prev_kv) {
            Ok(chunk) => {
                let events: Vec<Arc<_>> = chunk.events.into_iter().map(Arc::new).collect();
                woken.extend(lock().publish(&events, chunk.through, prev_kv));
            }
            // A compaction overtook the feeder (after a snapshot was installed, say): the
            // watchers that needed those events find out from storage.
            Err(Error::Compacted) => woken.extend(lock().skip_to(revision)),
            Err(e) => return Err(e),
        }
    }
}

/// Reads the events of revisions `from..=to` (capped at what the replica has applied) that
/// `spec` wants (all if `None`), at most about `read_bytes` of them: one chunk of a lagging
/// watcher's catch-up, or of the feeder's reading. "Compacted" if the span starts below the
/// compaction floor.
pub fn read_events(
    engine: &dyn Engine,
    shared: &RangeShared,
    (from, to): (i64, i64),
    spec: Option<&Spec>,
    read_bytes: usize,
    prev_kv: bool,
) -> Result<Chunk> {
    let (chunk, _) = read_stable(shared, |state| {
        if from < state.compact_revision {
            return Err(Error::Compacted);
        }
        let span = (from, to.min(state.revision));
        history::read(engine, span, state.compact_revision, spec, read_bytes, prev_kv)
    })?;
    Ok(chunk)
}
