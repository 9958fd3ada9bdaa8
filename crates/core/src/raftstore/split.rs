//! Splitting a range at a key, and creating the new range's replica on every node.
//!
//! A split is an entry in the range's own log (`Request::Split`), so every replica splits at
//! the same point of its history. Applying it narrows the range to the keys below the split
//! key (its epoch's `version` grows, so commands routed by the old span are refused) and
//! writes the new range's starting state beside it: its descriptor (same replicas, same
//! version), its applied state at the parent's revision and compaction floor, a Raft log
//! bootstrapped as at cluster start, and the parent's lease marks anchored at its first key.
//! No MVCC data moves: records belong to whichever range's span holds their user key. Once the
//! batch is written, the round opens the new replica (`Node::open_split_ranges`).
//!
//! A node that lags can meet the new range before it applies the split: the new range's leader
//! writes to it. It then holds an *uninitialized* replica of the new range (no span, no
//! configuration; it can vote, and its votes are kept), which takes a snapshot only once no
//! initialized replica on the node overlaps the snapshot's span — until the parent's split
//! (or a snapshot of the narrowed parent) has given those keys up. Installing the new range's
//! snapshot over a parent that still owns the keys would let the parent's older entries write
//! over them later. A split applied over an uninitialized replica initializes it, keeping what
//! it voted.

use prost::Message as _;
use raft::prelude::{HardState, Message, MessageType, SnapshotMetadata};
use strata_storage::{Engine, Keyspace, WriteBatch};

use super::log::{INIT_INDEX, INIT_TERM, RaftLog, encode};
use super::node::Node;
use super::open::open_replica;
use super::replica::Replica;
use super::snapshot::SnapshotData;
use crate::command::SplitRequest;
use crate::mvcc::{AppliedState, Applier, Response};
use crate::range::{self, META_RANGE_ID, RangeDescriptor, RangeEpoch};
use crate::{Error, RangeId, Result, keys};

impl Replica {
    /// Applies a split of this range at `split.split_key` (see the module's comment).
    pub(super) fn apply_split(
        &mut self,
        applier: &mut Applier,
        split: &SplitRequest,
        engine: &dyn Engine,
        batch: &mut WriteBatch,
    ) -> Result<Response> {
        let refuse = |why: String| Err(Error::SplitRefused(why));
        let descriptor = &self.descriptor;
        let key = split.split_key.as_slice();
        if self.range_id == META_RANGE_ID {
            return refuse(
                "the meta range is not split (its keys move with a later release)".into(),
            );
        }
        if !descriptor.oracle_revisions {
            return refuse("a cluster of one range counts its own revisions".into());
        }
        if self.joint() || descriptor.replicas.iter().any(|r| r.learner) {
            return refuse(format!("range {} is changing its replicas", self.range_id));
        }
        if !descriptor.contains(key) || key == descriptor.start_key.as_slice() {
            return refuse(format!("the key is not inside range {}", self.range_id));
        }
        if split.new_range_id <= META_RANGE_ID || split.new_range_id == self.range_id {
            return Err(Error::Internal(format!("a split to range {}", split.new_range_id)));
        }
        let marks = applier.split_off(key)?;
        let epoch = RangeEpoch { version: descriptor.epoch().version + 1, ..descriptor.epoch() };
        let right = RangeDescriptor {
            range_id: split.new_range_id,
            start_key: key.to_vec(),
            epoch: Some(epoch),
            ..descriptor.clone()
        };
        let left =
            RangeDescriptor { end_key: key.to_vec(), epoch: Some(epoch), ..descriptor.clone() };
        batch.put(Keyspace::Meta, keys::range_descriptor(self.range_id), left.encode_to_vec());
        self.descriptor = left.clone();
        // A snapshot prepared before the split describes the wider span: a member holding the
        // new range already would wait for it forever (the simulator's seed 40200).
        self.raw.store().drop_prepared_snapshot();
        // A node that holds the new range already (initialized by its snapshot: this replica
        // lagged) keeps it: what the new range applied since is newer than this.
        if range::load(engine, right.range_id)?.is_none() {
            init_new_range(engine, &right, applier.state(), marks, batch)?;
        }
        self.split_off.push(right.range_id);
        Ok(Response::Split { left, right })
    }
}

/// Writes the starting state of a range created by a split of a range at `parent`.
fn init_new_range(
    engine: &dyn Engine,
    descriptor: &RangeDescriptor,
    parent: &AppliedState,
    marks: Vec<(Vec<u8>, Vec<u8>)>,
    batch: &mut WriteBatch,
) -> Result<()> {
    let range_id = descriptor.range_id;
    batch.put(Keyspace::Meta, keys::range_descriptor(range_id), descriptor.encode_to_vec());
    let applied = AppliedState {
        applied_index: INIT_INDEX,
        applied_term: INIT_TERM,
        tso_ceiling: 0,
        lock_count: 0,
        lock_floor: 0,
        ..*parent
    };
    batch.put(Keyspace::Meta, keys::range_applied(range_id), applied.encode());
    if parent.compaction_pending {
        // The new range's steps go over its keys from the start; steps are idempotent.
        let (start, end) = descriptor.span();
        let (cursor, _) = keys::version_bounds(start, end);
        batch.put(Keyspace::Mvcc, keys::compaction_cursor(range_id), cursor);
    }
    for (key, value) in marks {
        batch.put(Keyspace::Mvcc, key, value);
    }
    let voters = descriptor.replicas.iter().map(|r| r.replica_id).collect();
    RaftLog::bootstrap(range_id, voters, batch);
    // The log's part of this batch may be lost in a crash that keeps the rest (it is not
    // synced): the log's starting point goes with the descriptor too, as a snapshot's does, so
    // that opening the range finishes the log (`RaftLog::load`; the simulator's seed 42150).
    let start = SnapshotMetadata { index: INIT_INDEX, term: INIT_TERM, conf_state: None };
    batch.put(Keyspace::Meta, keys::range_snapshot(range_id), encode(&start));
    // What an uninitialized replica of the range voted must hold: raft-rs would vote again in
    // the same term otherwise. (The bootstrap's own hard state is at `INIT_TERM`, where no
    // election happens.)
    if let Some(voted) = RaftLog::stored_hard_state(engine, range_id)?
        && voted.term > INIT_TERM
    {
        let hard_state = HardState { commit: INIT_INDEX, ..voted };
        batch.put(Keyspace::Raft, keys::raft_hard_state(range_id), encode(&hard_state));
    }
    Ok(())
}

impl Node {
    /// Opens the replicas of the ranges that splits applied in this round created (their state
    /// is in the engine now), replacing uninitialized ones, and reloads the split ranges' key
    /// indexes for their narrower spans.
    pub(super) fn open_split_ranges(&mut self) -> Result<()> {
        let mut created = Vec::new();
        for replica in self.replicas.values_mut() {
            if replica.split_off.is_empty() {
                continue;
            }
            created.append(&mut replica.split_off);
            // Published before the new range is, so that no reader sees both holding its keys.
            *replica.shared.descriptor.write().expect("descriptor lock") =
                replica.descriptor.clone();
            let span = replica.descriptor.span();
            (replica.shared.memo.write().expect("memo lock")).reload(self.engine.as_ref(), span)?;
        }
        for range_id in created {
            let initialized =
                self.replicas.get(&range_id).is_some_and(|r| r.descriptor.epoch.is_some());
            if initialized {
                continue;
            }
            let replica = open_replica(&self.config, self.engine.as_ref(), range_id, false)?;
            self.shared_ranges.insert(range_id, replica.shared.clone());
            self.replicas.insert(range_id, replica);
        }
        Ok(())
    }

    /// Creates an uninitialized replica for a message of a range this node holds no replica of,
    /// if it is one a range's leader or candidate sends (see the module's comment). Returns
    /// whether the node holds a replica of the range now.
    pub(super) fn create_for_message(&mut self, range_id: RangeId, message: &Message) -> bool {
        let from_leader = matches!(
            message.get_msg_type(),
            MessageType::MsgAppend
                | MessageType::MsgHeartbeat
                | MessageType::MsgSnapshot
                | MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
        );
        if range_id == META_RANGE_ID || !from_leader {
            return false;
        }
        match open_replica(&self.config, self.engine.as_ref(), range_id, true) {
            Ok(replica) => {
                self.shared_ranges.insert(range_id, replica.shared.clone());
                self.replicas.insert(range_id, replica);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether a snapshot for an uninitialized replica must wait: it describes keys an
    /// initialized replica on this node still holds.
    pub(super) fn snapshot_must_wait(&self, range_id: RangeId, message: &Message) -> bool {
        let uninitialized =
            self.replicas.get(&range_id).is_some_and(|r| r.descriptor.epoch.is_none());
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        if range_id == META_RANGE_ID || !uninitialized || !snapshot {
            return false;
        }
        let data = &message.get_snapshot().data;
        let Some(incoming) = SnapshotData::decode(data.as_ref()).ok().and_then(|s| s.descriptor)
        else {
            return true;
        };
        let (start, end) = incoming.span();
        self.replicas.values().any(|other| {
            let (first, past) = other.descriptor.span();
            other.range_id != range_id
                && other.descriptor.epoch.is_some()
                && (end.is_empty() || first < end)
                && (past.is_empty() || start < past)
        })
    }
}
