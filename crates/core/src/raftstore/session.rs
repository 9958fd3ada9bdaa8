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

use std::collections::BTreeMap;

use strata_storage::{Engine, Keyspace, WriteBatch};

use crate::command::Command;
use crate::{Error, NodeId, RangeId, Result, keys};

/// The latest applied `(epoch, sequence)` per proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions(BTreeMap<NodeId, (u64, u64)>);

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
        Ok(Self(sessions))
    }

    /// Whether `command` is new; if so, records it and adds the record to `batch`. Commands
    /// without a sequence number are always applied.
    pub fn admit(&mut self, range_id: RangeId, command: &Command, batch: &mut WriteBatch) -> bool {
        if command.sequence == 0 {
            return true;
        }
        let mark = (command.proposer_epoch, command.sequence);
        if self.0.get(&command.proposer).is_some_and(|last| mark <= *last) {
            return false;
        }
        self.0.insert(command.proposer, mark);
        batch.put(Keyspace::Meta, keys::range_session(range_id, command.proposer), encode(mark));
        true
    }

    /// The marks as (proposer, epoch, sequence), for snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (NodeId, u64, u64)> + '_ {
        self.0.iter().map(|(proposer, (epoch, sequence))| (*proposer, *epoch, *sequence))
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
        Ok(Self(sessions))
    }
}

fn encode((epoch, sequence): (u64, u64)) -> Vec<u8> {
    let mut value = epoch.to_be_bytes().to_vec();
    value.extend_from_slice(&sequence.to_be_bytes());
    value
}
