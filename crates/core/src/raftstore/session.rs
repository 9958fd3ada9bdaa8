//! At-most-once application of proposals.
//!
//! A proposal can reach the log twice: a network that duplicates the message carrying it from
//! a follower to the leader makes the leader append it twice, and a write applied a second time
//! much later would overwrite newer values. So each range remembers, per proposer, the latest
//! `(epoch, sequence)` it applied, and applies a command only if it comes later. Proposers
//! number their proposals in order and epochs only grow (see `Node::open`), so a command at or
//! below the mark is a copy or was overtaken by a later proposal of the same proposer; either
//! way it is skipped, and its proposer learns it was not applied.
//!
//! The marks are part of the replicated state: written with the applied index, carried in
//! snapshots, and identical on every replica because every replica applies the same log.

use std::collections::{BTreeMap, BTreeSet};

use strata_storage::{Engine, Keyspace, WriteBatch};

use crate::command::Command;
use crate::{Error, NodeId, RangeId, Result, keys};

/// The latest applied `(epoch, sequence)` per proposer, and which marks changed since they were
/// last written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    marks: BTreeMap<NodeId, (u64, u64)>,
    changed: BTreeSet<NodeId>,
}

impl Sessions {
    pub fn load(engine: &dyn Engine, range_id: RangeId) -> Result<Self> {
        let (start, end) = keys::range_session_bounds(range_id);
        let mut sessions = BTreeMap::new();
        for item in engine.scan(Keyspace::Meta, &start, &end)? {
            let (key, value) = item?;
            let proposer = key.len().checked_sub(8).and_then(|at| key[at..].try_into().ok());
            let (Some(proposer), Ok(mark)) = (proposer, <[u8; 16]>::try_from(value.as_slice()))
            else {
                return Err(Error::Storage(format!("range {range_id}: malformed session record")));
            };
            let epoch = u64::from_be_bytes(mark[..8].try_into().expect("8 bytes"));
            let sequence = u64::from_be_bytes(mark[8..].try_into().expect("8 bytes"));
            sessions.insert(u64::from_be_bytes(proposer), (epoch, sequence));
        }
        Ok(Self { marks: sessions, changed: BTreeSet::new() })
    }

    /// Whether `command` is new; if so, records it. Commands without a sequence number are
    /// always applied.
    pub fn admit(&mut self, command: &Command) -> bool {
        if command.sequence == 0 {
            return true;
        }
        let mark = (command.proposer_epoch, command.sequence);
        if self.marks.get(&command.proposer).is_some_and(|last| mark <= *last) {
            return false;
        }
        self.marks.insert(command.proposer, mark);
        self.changed.insert(command.proposer);
        true
    }

    /// Adds the marks changed since the last call to `batch` (one record per proposer, however
    /// many of its commands the batch applies).
    pub fn write_changed(&mut self, range_id: RangeId, batch: &mut WriteBatch) {
        for proposer in std::mem::take(&mut self.changed) {
            let mark = self.marks[&proposer];
            batch.put(Keyspace::Meta, keys::range_session(range_id, proposer), encode(mark));
        }
    }

    /// The marks as (proposer, epoch, sequence), for snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (NodeId, u64, u64)> + '_ {
        self.marks.iter().map(|(proposer, (epoch, sequence))| (*proposer, *epoch, *sequence))
    }

    /// Replaces the stored marks of a range with `marks` (a received snapshot's).
    pub fn restore(
        engine: &dyn Engine,
        range_id: RangeId,
        marks: impl IntoIterator<Item = (NodeId, u64, u64)>,
        batch: &mut WriteBatch,
    ) -> Result<Self> {
        let (start, end) = keys::range_session_bounds(range_id);
        for item in engine.scan(Keyspace::Meta, &start, &end)? {
            batch.delete(Keyspace::Meta, item?.0);
        }
        let mut sessions = BTreeMap::new();
        for (proposer, epoch, sequence) in marks {
            sessions.insert(proposer, (epoch, sequence));
            batch.put(
                Keyspace::Meta,
                keys::range_session(range_id, proposer),
                encode((epoch, sequence)),
            );
        }
        Ok(Self { marks: sessions, changed: BTreeSet::new() })
    }
}

fn encode((epoch, sequence): (u64, u64)) -> Vec<u8> {
    let mut value = epoch.to_be_bytes().to_vec();
    value.extend_from_slice(&sequence.to_be_bytes());
    value
}
