//! Reading past events from the change index.
//!
//! Every write leaves a change record `'r' <revision> <sub>` naming the key it wrote (see
//! [`keys`]). Reading events from revision `from` on is a forward scan of those records plus one
//! point read per event, so it costs the number of events since `from`, not the size of the
//! store.

use strata_storage::{Engine, Keyspace};

use super::Spec;
use crate::mvcc::record::VersionRecord;
use crate::mvcc::view::View;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};
use crate::{Error, Result, keys};

/// Change records scanned by one [`read`] at most (whole revisions are always finished), so one
/// call is short whatever a watcher asks for.
pub const CHANGES_PER_READ_MAX: usize = 10_000;

/// Events of consecutive revisions `from..=through`, oldest first.
#[derive(Debug, Default)]
pub struct Chunk {
    pub events: Vec<Event>,
    /// Every revision up to here has been read; the next read starts after it.
    pub through: i64,
}

/// Reads the events of revisions `from..=to` that `spec` wants (every event if `spec` is
/// `None`), in revision order and, within a revision, in the order the request wrote them.
///
/// The read stops early at a revision boundary once the events read reach `bytes_max` or
/// [`CHANGES_PER_READ_MAX`] change records were scanned; `through` says how far it got.
/// `prev_kv` adds each event's previous version (none for a key's creation, as in etcd).
///
/// `compact_revision` is the range's compaction floor and `from` must not be below it: records
/// below it are gone. A concurrent compaction can remove what this read needs, so callers check
/// afterwards that the floor did not move (as every read of the server does) and retry if it did.
pub fn read(
    engine: &dyn Engine,
    (from, to): (i64, i64),
    compact_revision: i64,
    spec: Option<&Spec>,
    bytes_max: usize,
    prev_kv: bool,
) -> Result<Chunk> {
    let mut chunk = Chunk { events: Vec::new(), through: from - 1 };
    if from > to {
        return Ok(chunk);
    }
    let view = View::new(engine);
    let (lo, hi) = keys::change_bounds(from, to + 1);
    let (mut bytes, mut scanned) = (0usize, 0usize);
    // The revision of the records being read; every revision before it is complete.
    let mut current = from - 1;
    for item in view.scan(&lo, &hi)? {
        let (raw, user_key) = item?;
        let revision = keys::decode_change(&raw)
            .ok_or_else(|| Error::Storage("malformed change-index key".into()))?;
        if revision != current {
            if bytes >= bytes_max || scanned >= CHANGES_PER_READ_MAX {
                chunk.through = current;
                return Ok(chunk);
            }
            current = revision;
        }
        scanned += 1;
        if spec.is_none_or(|s| s.contains(&user_key)) {
            let event = event_at(engine, &view, user_key, revision, compact_revision, prev_kv)?;
            if spec.is_none_or(|s| s.wants(&event)) {
                bytes += event_bytes(&event);
                chunk.events.push(event);
            }
        }
    }
    // Every record up to `to` was read (a revision without records has no events).
    chunk.through = to;
    Ok(chunk)
}

/// The event that wrote `key` at `revision`.
fn event_at(
    engine: &dyn Engine,
    view: &View<'_>,
    key: Vec<u8>,
    revision: i64,
    compact_revision: i64,
    with_prev: bool,
) -> Result<Event> {
    let record = match engine.get(Keyspace::Mvcc, &keys::version(&key, revision))? {
        Some(bytes) => Some(VersionRecord::decode(&bytes)?),
        // Compaction at C deletes a tombstone written at C itself (nothing at C can see the
        // key) but keeps C's change records: the write was a deletion.
        None if revision == compact_revision => None,
        None => {
            return Err(Error::Storage(format!(
                "the change index names a version of {} at revision {revision} that does not exist",
                strata_storage::display_key(&key)
            )));
        }
    };
    let (kind, kv) = match record {
        Some(r) if !r.tombstone => (EventType::Put, r.into_key_value(key, revision)),
        _ => (EventType::Delete, KeyValue { key, mod_revision: revision, ..Default::default() }),
    };
    let creates = kind == EventType::Put && kv.version == 1;
    // An event at the compaction revision has no previous version any more: compaction dooms
    // every version below a key's newest at that revision. Its deletion may not have happened
    // yet (it goes in steps), so this is decided here, not by what the store still holds.
    let prev_kv = if with_prev && !creates && revision > compact_revision {
        view.get(&kv.key, revision - 1)?
    } else {
        None
    };
    Ok(Event { r#type: kind as i32, kv: Some(kv), prev_kv })
}

/// What an event costs to hold and send, roughly: its bytes plus fixed overhead.
pub fn event_bytes(event: &Event) -> usize {
    let kv_bytes =
        |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len() + 48);
    kv_bytes(&event.kv) + kv_bytes(&event.prev_kv)
}
