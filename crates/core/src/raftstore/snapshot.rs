//! Range snapshots: the whole state machine of a range at an applied index, sent to a replica
//! that is too far behind to catch up from the log.
//!
//! A snapshot holds exactly the MVCC records its range owns (`RangeDescriptor::owns`), and
//! installing one replaces exactly those: the records of the other ranges a node holds are
//! never read into it nor deleted by it. (A snapshot of the whole keyspace, installed by
//! deleting the whole keyspace, would wipe a neighbour's data and the cluster's records.)

use prost::Message as _;
use strata_storage::{Engine, Keyspace, WriteBatch};

use super::log::RaftLog;
use super::session::Sessions;
use crate::mvcc::AppliedState;
use crate::range::RangeDescriptor;
use crate::{Error, RangeId, Result, keys};

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotData {
    #[prost(message, optional, tag = "1")]
    pub applied: Option<AppliedState>,
    /// Every record of the range's MVCC data, raw (all versions, so history reads work).
    #[prost(message, repeated, tag = "2")]
    pub records: Vec<Record>,
    /// The range's at-most-once marks (see `session`).
    #[prost(message, repeated, tag = "3")]
    pub sessions: Vec<SessionMark>,
    /// The range's descriptor as of the snapshot. Absent in snapshots of members from before
    /// descriptors, whose range spanned the whole key space.
    #[prost(message, optional, tag = "4")]
    pub descriptor: Option<RangeDescriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionMark {
    #[prost(uint64, tag = "1")]
    pub proposer: u64,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// Captures the range's data: every record `descriptor` owns. The caller guarantees the engine
/// holds exactly `applied`.
pub fn build(
    engine: &dyn Engine,
    descriptor: &RangeDescriptor,
    applied: AppliedState,
    sessions: &Sessions,
) -> Result<Vec<u8>> {
    let mut records = Vec::new();
    for item in owned_records(engine, descriptor)? {
        let (key, value) = item?;
        records.push(Record { key, value });
    }
    let sessions = sessions
        .entries()
        .map(|(proposer, epoch, sequence)| SessionMark { proposer, epoch, sequence })
        .collect();
    let descriptor = Some(descriptor.clone());
    Ok(SnapshotData { applied: Some(applied), records, sessions, descriptor }.encode_to_vec())
}

/// A backup of a node holding several ranges, cut at `revision`: every range's records as of
/// that revision, as the image of one range that [`restore_as_new`] reads (a new cluster
/// starts over it with the ranges it is configured with). `revision` must be at or below every
/// range's closed revision on the node, so that every range holds everything it wrote up to it
/// and no transaction across ranges holds a lock at or below it.
///
/// Versions and change records above the cut are left out, and so are locks, transactions'
/// statuses and the ranges' lease marks; the keys' lease attachments are made again from the
/// newest version of each key at the cut, and the leases' registrations are dropped (the new
/// cluster registers them anew, `open::bootstrap`). A lease revoked after the cut, whose keys
/// the cut holds, comes back with a TTL of one second: its keys go soon after the restore, as
/// they went soon after the cut.
pub fn cut(engine: &dyn Engine, revision: i64, compact_revision: i64) -> Result<Vec<u8>> {
    use crate::mvcc::record::{LeaseRecord, VersionRecord};
    use keys::RecordKind;
    let malformed = |key: &[u8]| Error::Storage(format!("malformed MVCC key {key:?}"));
    let mut records = Vec::new();
    let mut leases = std::collections::BTreeMap::new();
    let mut attached = std::collections::BTreeSet::new();
    let mut newest_of: Option<Vec<u8>> = None;
    for item in engine.scan(Keyspace::Mvcc, &[], &[])? {
        let (key, value) = item?;
        match keys::record_kind(&key) {
            RecordKind::Version => {
                let (user_key, written) =
                    keys::decode_version(&key).ok_or_else(|| malformed(&key))?;
                if written > revision {
                    continue;
                }
                // A key's versions come newest first: the first kept is its newest at the cut.
                if newest_of.as_ref() != Some(&user_key) {
                    let version = VersionRecord::decode(&value)?;
                    if !version.tombstone && version.lease != 0 {
                        attached.insert((version.lease, user_key.clone()));
                    }
                    newest_of = Some(user_key);
                }
                records.push(Record { key, value });
            }
            RecordKind::Change => {
                if keys::decode_change(&key).ok_or_else(|| malformed(&key))? <= revision {
                    records.push(Record { key, value });
                }
            }
            RecordKind::Lease => {
                let id = keys::decode_lease(&key).ok_or_else(|| malformed(&key))?;
                leases
                    .insert(id, LeaseRecord { spans: Vec::new(), ..LeaseRecord::decode(&value)? });
            }
            RecordKind::Cluster => records.push(Record { key, value }),
            RecordKind::LeaseKey
            | RecordKind::Lock
            | RecordKind::TxnStatus
            | RecordKind::LeaseMark
            | RecordKind::CompactionCursor
            | RecordKind::ClusterCompaction => {}
        }
    }
    for (lease, user_key) in &attached {
        leases.entry(*lease).or_insert(LeaseRecord { ttl: 1, ..Default::default() });
        records.push(Record { key: keys::lease_key(*lease, user_key), value: Vec::new() });
    }
    for (id, lease) in leases {
        records.push(Record { key: keys::lease(id), value: lease.encode_to_vec() });
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
    // Versions a compaction doomed and the ranges had not deleted yet stay (reads below the
    // compaction revision are refused all the same); the new cluster's next compaction sweeps
    // them, since it starts without the ranges' cursors.
    let applied = AppliedState { revision, compact_revision, ..AppliedState::initial() };
    let image =
        SnapshotData { applied: Some(applied), records, sessions: Vec::new(), descriptor: None };
    Ok(image.encode_to_vec())
}

/// The stored MVCC records `descriptor` owns, in key order.
fn owned_records<'a>(
    engine: &'a dyn Engine,
    descriptor: &'a RangeDescriptor,
) -> Result<impl Iterator<Item = strata_storage::Result<strata_storage::KvPair>> + 'a> {
    let records = engine.scan(Keyspace::Mvcc, &[], &[])?;
    Ok(records.filter(move |item| match item {
        Ok((key, value)) => descriptor.owns(key, value),
        Err(_) => true,
    }))
}

/// Writes a snapshot into an empty store as the starting state of a new cluster (restoring a
/// backup): the data, its revisions and its compaction point are kept; the Raft log, the
/// applied index and the at-most-once marks start afresh, since they belonged to the old
/// cluster's log. The new cluster is bootstrapped over it by `Node::open` as usual.
pub fn restore_as_new(engine: &dyn Engine, range_id: RangeId, data: &[u8]) -> Result<AppliedState> {
    if RaftLog::load(engine, range_id)?.is_some()
        || engine.scan(Keyspace::Mvcc, &[], &[])?.next().is_some()
    {
        return Err(Error::Internal("the store already holds a member's data".into()));
    }
    let snapshot = SnapshotData::decode(data)
        .map_err(|e| Error::Internal(format!("undecodable snapshot: {e}")))?;
    let old = snapshot.applied.ok_or_else(|| Error::Internal("snapshot without state".into()))?;
    let applied = AppliedState {
        applied_index: 0,
        applied_term: 0,
        revision: old.revision,
        compact_revision: old.compact_revision,
        compaction_pending: old.compaction_pending,
        // The new cluster's oracle starts above the restored revision.
        tso_ceiling: 0,
        // Locks of transactions across ranges are kept with the data they guard.
        lock_count: old.lock_count,
        lock_floor: old.lock_floor,
    };
    let mut batch = WriteBatch::new();
    // Alarms, members and the cluster id were the old cluster's: the new cluster starts
    // without alarms, and records its own members and id when it is bootstrapped.
    let old_cluster = [
        keys::alarm_bounds(),
        keys::member_bounds(),
        (keys::cluster_id(), {
            let mut end = keys::cluster_id();
            end.push(0);
            end
        }),
    ];
    for record in snapshot.records {
        let key = record.key.as_slice();
        if !old_cluster.iter().any(|(start, end)| key >= start.as_slice() && key < end.as_slice()) {
            batch.put(Keyspace::Mvcc, record.key, record.value);
        }
    }
    batch.put(Keyspace::Meta, keys::range_applied(range_id), applied.encode());
    engine.write(&batch, strata_storage::Durability::Sync)?;
    Ok(applied)
}

/// What installing a snapshot gives its replica.
pub struct Restored {
    pub applied: AppliedState,
    pub sessions: Sessions,
    pub descriptor: RangeDescriptor,
}

/// Adds replacing the range's data with the snapshot's to `batch`: the records the snapshot's
/// descriptor owns are deleted, then the snapshot's written, with the applied state, the
/// at-most-once marks and the descriptor. `conf_state` (the snapshot's Raft configuration)
/// stands in for the descriptor of a snapshot from a member that had none.
pub fn restore(
    engine: &dyn Engine,
    range_id: RangeId,
    data: &[u8],
    conf_state: Option<&raft::prelude::ConfState>,
    batch: &mut WriteBatch,
) -> Result<Restored> {
    let snapshot = SnapshotData::decode(data)
        .map_err(|e| Error::Internal(format!("undecodable snapshot for range {range_id}: {e}")))?;
    let applied =
        snapshot.applied.ok_or_else(|| Error::Internal("snapshot without state".into()))?;
    let descriptor = match snapshot.descriptor {
        Some(descriptor) => descriptor,
        None => whole_key_space(range_id, conf_state),
    };
    descriptor.check(range_id).map_err(|why| {
        Error::Internal(format!("a snapshot for range {range_id} carries a descriptor that {why}"))
    })?;
    for item in owned_records(engine, &descriptor)? {
        batch.delete(Keyspace::Mvcc, item?.0);
    }
    for record in snapshot.records {
        // A snapshot carries only its range's records; one that carries others is refused
        // rather than let it overwrite a neighbour's.
        if !descriptor.owns(&record.key, &record.value) {
            return Err(Error::Internal(format!(
                "a snapshot for range {range_id} carries a record outside its span: {}",
                strata_storage::display_key(&record.key)
            )));
        }
        batch.put(Keyspace::Mvcc, record.key, record.value);
    }
    batch.put(Keyspace::Meta, keys::range_applied(range_id), applied.encode());
    batch.put(Keyspace::Meta, keys::range_descriptor(range_id), descriptor.encode_to_vec());
    let marks = snapshot.sessions.into_iter().map(|m| (m.proposer, m.epoch, m.sequence));
    let sessions = Sessions::restore(engine, range_id, marks, batch)?;
    Ok(Restored { applied, sessions, descriptor })
}

/// The descriptor of a range that spans the whole key space, replicated as `conf_state` says:
/// what a store or snapshot from before descriptors describes.
pub fn whole_key_space(
    range_id: RangeId,
    conf_state: Option<&raft::prelude::ConfState>,
) -> RangeDescriptor {
    let conf = conf_state.cloned().unwrap_or_default();
    RangeDescriptor::bootstrap(range_id, b"", b"", &[])
        .with_configuration(&conf.voters, &conf.learners)
}

#[cfg(test)]
mod tests {
    use strata_storage::{Durability, MemEngine};

    use super::*;

    /// A store holding records of the meta range `["", "m")` and of range 2 `["m", ∞)`.
    fn store() -> MemEngine {
        let engine = MemEngine::new();
        let mut batch = WriteBatch::new();
        for (key, revision) in [("a", 2), ("l", 3), ("m", 4), ("x", 5)] {
            batch.put(Keyspace::Mvcc, keys::version(key.as_bytes(), revision), b"v".to_vec());
            batch.put(Keyspace::Mvcc, keys::change(revision, 0), key.as_bytes().to_vec());
        }
        batch.put(Keyspace::Mvcc, keys::member(1), b"n1".to_vec());
        batch.put(Keyspace::Mvcc, keys::cluster_id(), 7u64.to_be_bytes().to_vec());
        engine.write(&batch, Durability::Sync).unwrap();
        engine
    }

    fn ranges() -> (RangeDescriptor, RangeDescriptor) {
        let meta = RangeDescriptor::bootstrap(1, b"", b"m", &[1, 2, 3]);
        (meta, RangeDescriptor::bootstrap(2, b"m", b"", &[1, 2, 3]))
    }

    fn mvcc(engine: &dyn Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
        engine.scan(Keyspace::Mvcc, b"", b"").unwrap().map(|item| item.unwrap()).collect()
    }

    #[test]
    fn a_snapshot_holds_its_ranges_records_only() {
        let (meta, data) = ranges();
        let engine = store();
        let applied = AppliedState::initial();
        let snapshot = build(&engine, &data, applied, &Sessions::default()).unwrap();
        let decoded = SnapshotData::decode(snapshot.as_slice()).unwrap();
        let keys: Vec<Vec<u8>> = (decoded.records.iter())
            .map(|r| keys::user_key_of(&r.key, &r.value).expect("a key's record"))
            .collect();
        // Versions first ('k'), then change records ('r'), in key order.
        assert_eq!(keys, [b"m", b"x", b"m", b"x"]);
        assert_eq!(decoded.descriptor.as_ref(), Some(&data));
        let meta_snapshot = build(&engine, &meta, applied, &Sessions::default()).unwrap();
        let meta_records = SnapshotData::decode(meta_snapshot.as_slice()).unwrap().records;
        assert_eq!(meta_records.len(), 6, "a, l, their change records, the member, the id");
    }

    #[test]
    fn installing_a_snapshot_replaces_its_ranges_records_and_no_others() {
        let (meta, data) = ranges();
        // The snapshot comes from a replica that holds x at a newer revision and m no more.
        let source = MemEngine::new();
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Mvcc, keys::version(b"x", 9), b"new".to_vec());
        batch.put(Keyspace::Mvcc, keys::change(9, 0), b"x".to_vec());
        source.write(&batch, Durability::Sync).unwrap();
        let snapshot =
            build(&source, &data, AppliedState::initial(), &Sessions::default()).unwrap();

        let engine = store();
        let meta_before: Vec<_> =
            (mvcc(&engine).into_iter()).filter(|(k, v)| meta.owns(k, v)).collect();
        let mut batch = WriteBatch::new();
        let restored = restore(&engine, 2, &snapshot, None, &mut batch).unwrap();
        engine.write(&batch, Durability::Sync).unwrap();
        assert_eq!(restored.descriptor, data);
        let after = mvcc(&engine);
        let meta_after: Vec<_> = after.iter().filter(|(k, v)| meta.owns(k, v)).cloned().collect();
        assert_eq!(meta_after, meta_before, "the meta range's records are untouched");
        let data_after: Vec<_> = after.iter().filter(|(k, v)| data.owns(k, v)).cloned().collect();
        assert_eq!(data_after, mvcc(&source), "range 2 holds exactly the snapshot's records");
    }

    #[test]
    fn a_snapshot_carrying_a_record_outside_its_span_is_refused() {
        let (_, data) = ranges();
        let mut snapshot = SnapshotData {
            applied: Some(AppliedState::initial()),
            descriptor: Some(data),
            ..Default::default()
        };
        let key = keys::version(b"a", 2);
        snapshot.records.push(Record { key, value: b"v".to_vec() });
        let engine = store();
        let error = restore(&engine, 2, &snapshot.encode_to_vec(), None, &mut WriteBatch::new())
            .err()
            .expect("refused");
        assert!(error.to_string().contains("outside its span"), "{error}");
        let foreign = restore(&engine, 3, &snapshot.encode_to_vec(), None, &mut WriteBatch::new());
        assert!(foreign.err().expect("refused").to_string().contains("describes range 2"));
    }

    #[test]
    fn a_backup_cut_holds_every_range_as_of_its_revision_and_no_lock() {
        use crate::mvcc::locks::{LockRecord, Span};
        use crate::mvcc::record::{LeaseMark, LeaseRecord, VersionRecord};
        let version = |lease| VersionRecord { value: b"v".to_vec(), lease, ..Default::default() };
        let engine = MemEngine::new();
        let mut batch = WriteBatch::new();
        // "a" given lease 7 at 3, then without it at 6; "x" given lease 8 at 4, then lease 7
        // at 9 — after the cut at 5. Lease 8 was revoked after the cut (no record).
        for (key, revision, lease) in [("a", 3, 7), ("x", 4, 8), ("a", 6, 0), ("x", 9, 7)] {
            let record = version(lease).encode_to_vec();
            batch.put(Keyspace::Mvcc, keys::version(key.as_bytes(), revision), record);
            batch.put(Keyspace::Mvcc, keys::change(revision, 0), key.as_bytes().to_vec());
        }
        batch.put(Keyspace::Mvcc, keys::lease_key(7, b"x"), Vec::new());
        let span = Span { start: b"m".to_vec(), end: Vec::new() };
        let lease = LeaseRecord { ttl: 60, incarnation: 2, spans: vec![span] };
        batch.put(Keyspace::Mvcc, keys::lease(7), lease.encode_to_vec());
        batch.put(Keyspace::Mvcc, keys::lease_mark(b"m", 7), LeaseMark::default().encode_to_vec());
        batch.put(
            Keyspace::Mvcc,
            keys::lock(b"x", &[1; 24]),
            LockRecord::default().encode_to_vec(),
        );
        batch.put(Keyspace::Mvcc, keys::cluster_compaction(), 2i64.to_be_bytes().to_vec());
        engine.write(&batch, Durability::Sync).unwrap();

        let image = SnapshotData::decode(cut(&engine, 5, 2).unwrap().as_slice()).unwrap();
        let applied = image.applied.unwrap();
        assert_eq!((applied.revision, applied.compact_revision, applied.lock_count), (5, 2, 0));
        let kept: Vec<Vec<u8>> = image.records.iter().map(|r| r.key.clone()).collect();
        let expected = [
            keys::version(b"a", 3),
            keys::version(b"x", 4),
            keys::change(3, 0),
            keys::change(4, 0),
            keys::lease_key(7, b"a"),
            keys::lease_key(8, b"x"),
            keys::lease(7),
            keys::lease(8),
        ];
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(kept, expected, "versions and changes up to the cut, attachments made again");
        let lease_of = |id| {
            let record = image.records.iter().find(|r| r.key == keys::lease(id)).unwrap();
            LeaseRecord::decode(&record.value).unwrap()
        };
        assert_eq!(lease_of(7), LeaseRecord { ttl: 60, incarnation: 2, spans: Vec::new() });
        assert_eq!(lease_of(8).ttl, 1, "a lease revoked after the cut comes back, briefly");
    }
}
