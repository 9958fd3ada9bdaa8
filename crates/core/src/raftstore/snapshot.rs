//! Range snapshots: the whole state machine of a range at an applied index, sent to a replica
//! that is too far behind to catch up from the log.

use prost::Message as _;
use strata_storage::{Engine, Keyspace, WriteBatch};

use super::log::RaftLog;
use super::session::Sessions;
use crate::mvcc::AppliedState;
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

/// Captures the range's data. The caller guarantees the engine holds exactly `applied`.
pub fn build(engine: &dyn Engine, applied: AppliedState, sessions: &Sessions) -> Result<Vec<u8>> {
    let mut records = Vec::new();
    for item in engine.scan(Keyspace::Mvcc, &[], &[])? {
        let (key, value) = item?;
        records.push(Record { key, value });
    }
    let sessions = sessions
        .entries()
        .map(|(proposer, epoch, sequence)| SessionMark { proposer, epoch, sequence })
        .collect();
    Ok(SnapshotData { applied: Some(applied), records, sessions }.encode_to_vec())
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

/// Adds replacing the range's data with the snapshot's to `batch`; returns its applied state
/// and at-most-once marks.
pub fn restore(
    engine: &dyn Engine,
    range_id: RangeId,
    data: &[u8],
    batch: &mut WriteBatch,
) -> Result<(AppliedState, Sessions)> {
    let snapshot = SnapshotData::decode(data)
        .map_err(|e| Error::Internal(format!("undecodable snapshot for range {range_id}: {e}")))?;
    let applied =
        snapshot.applied.ok_or_else(|| Error::Internal("snapshot without state".into()))?;
    for item in engine.scan(Keyspace::Mvcc, &[], &[])? {
        batch.delete(Keyspace::Mvcc, item?.0);
    }
    for record in snapshot.records {
        batch.put(Keyspace::Mvcc, record.key, record.value);
    }
    batch.put(Keyspace::Meta, keys::range_applied(range_id), applied.encode());
    let marks = snapshot.sessions.into_iter().map(|m| (m.proposer, m.epoch, m.sequence));
    let sessions = Sessions::restore(engine, range_id, marks, batch)?;
    Ok((applied, sessions))
}
