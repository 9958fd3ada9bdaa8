//! A range leader stamping its writes with the revision oracle's blocks, in a range whose
//! revisions come from the oracle (`RangeDescriptor::oracle_revisions`; rules 3 and 4 of
//! `docs/design/revisions.md`).
//!
//! The leader holds every proposal made to it — its own and those its followers forwarded —
//! in one queue, in the order they arrived, until the driver brings a block from the oracle;
//! it then re-encodes them with the block and hands them to raft-rs. One queue, because a
//! proposer's proposals must apply in the order it made them (see `session`). A proposal that
//! takes no revision goes straight to raft-rs when nothing waits ahead of it.
//!
//! Two numbers guard the blocks it uses: `last_used`, the highest revision it stamped in its
//! term, and `max_read_ts`, the highest read timestamp it answered a read of the range for. A
//! block at or below either is discarded: a read may have passed it (rule 3).

use std::collections::VecDeque;

use prost::Message as _;
use raft::StateRole;
use raft::prelude::{Entry, EntryType, Message, MessageType};

use super::config::Mutation;
use super::oracle::Block;
use super::replica::Replica;
use crate::command::{Command, Request};

/// A leader's stamping state, for one term of its leadership.
#[derive(Default)]
pub(crate) struct Stamping {
    /// Proposals waiting for a block, in order, each with whether it takes a revision.
    held: VecDeque<(Entry, bool)>,
    /// The term this state belongs to: leadership changes start it afresh.
    term: u64,
    /// The highest revision this leader stamped in its term (from the range's revision).
    last_used: i64,
    /// The highest read timestamp this leader answered a read of the range for.
    pub max_read_ts: i64,
}

/// What the driver's block did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stamped {
    /// This many held proposals were stamped and handed to raft-rs.
    Proposed(usize),
    /// The block is at or below a revision this leader used or a read it answered: ask again.
    Discarded,
    /// This replica no longer leads in the term the block was asked for.
    NotLeading,
}

/// Whether the replica leads a range whose writes it must stamp.
pub(super) fn stamps(replica: &Replica) -> bool {
    replica.descriptor.oracle_revisions && replica.raw.raft.state == StateRole::Leader
}

/// Takes proposals (a forwarded `MsgPropose`, or this node's own) on a stamping leader: holds
/// them until a block comes, unless none takes a revision and nothing waits ahead of them.
/// Returns the message for raft-rs when it need not wait.
///
/// The commit of a transaction across ranges writes at its own revision, from the oracle: the
/// leader stamps nothing at or below it from then on, as for a read at it, so that every
/// write stamped at or below it lies before it in the log and every later one above it.
pub(super) fn take(replica: &mut Replica, message: Message) -> Option<Message> {
    let (needs, commits): (Vec<bool>, Vec<Option<i64>>) =
        message.entries.iter().map(what_it_takes).unzip();
    let stamping = &mut replica.stamping;
    if let Some(commit_ts) = commits.into_iter().flatten().max() {
        stamping.max_read_ts = stamping.max_read_ts.max(commit_ts);
    }
    if stamping.held.is_empty() && !needs.contains(&true) {
        return Some(message);
    }
    stamping.held.extend(message.entries.into_iter().zip(needs));
    None
}

/// Keeps the state with the replica's leadership: a new term, or no leadership, starts afresh
/// (held proposals are dropped: their proposers learn of the new term and retry).
pub(super) fn follow(replica: &mut Replica) {
    let raft = &replica.raw.raft;
    let leading = raft.state == StateRole::Leader;
    let stamping = &mut replica.stamping;
    if !leading || stamping.term != raft.term {
        *stamping = Stamping {
            term: raft.term,
            last_used: replica.applied.revision,
            ..Stamping::default()
        };
    }
}

/// How many revisions the held proposals take (what to ask the oracle for).
pub(super) fn revisions_held(replica: &Replica) -> u64 {
    replica.stamping.held.iter().filter(|(_, needs)| *needs).count() as u64
}

/// Stamps held proposals with `block`, as many as it has revisions for, and hands them to
/// raft-rs; `term` is the term the block was asked for in.
pub(super) fn stamp(replica: &mut Replica, term: u64, block: Block, mutation: Mutation) -> Stamped {
    if !stamps(replica) || replica.raw.raft.term != term || replica.stamping.term != term {
        return Stamped::NotLeading;
    }
    let stamping = &mut replica.stamping;
    // The range's own revision may have moved past `last_used` through entries of an earlier
    // term this leader applied since; both bound what is used.
    let mut floor = stamping.last_used.max(replica.applied.revision);
    if mutation != Mutation::StampPassedRead {
        floor = floor.max(stamping.max_read_ts);
    }
    if block.lo <= floor {
        return Stamped::Discarded;
    }
    let mut left = (block.hi - block.lo + 1) as u64;
    let mut entries = Vec::new();
    while let Some((_, needs)) = stamping.held.front() {
        if *needs {
            if left == 0 {
                break;
            }
            left -= 1;
        }
        let (entry, _) = stamping.held.pop_front().expect("present");
        entries.push(with_block(entry, block));
    }
    stamping.last_used = block.hi;
    let count = entries.len();
    let message = Message {
        msg_type: MessageType::MsgPropose as i32,
        from: replica.raw.raft.id,
        entries,
        ..Default::default()
    };
    // A leader takes its own proposals; a refusal (a configuration change already pending) is
    // the proposers' to retry, as for any proposal raft-rs drops.
    let _ = replica.raw.step(message);
    Stamped::Proposed(count)
}

/// Whether an entry takes a revision, and the commit revision it writes at if it commits a
/// transaction across ranges.
fn what_it_takes(entry: &Entry) -> (bool, Option<i64>) {
    if entry.get_entry_type() != EntryType::EntryNormal {
        return (false, None);
    }
    match Command::decode(&entry.data).ok().and_then(|c| c.request) {
        Some(Request::TxnCommit(commit)) => (false, Some(commit.commit_ts)),
        Some(request) => (request.takes_revision(), None),
        None => (false, None),
    }
}

/// The entry with its command stamped with `block` (entries without a command pass as they
/// are).
fn with_block(mut entry: Entry, block: Block) -> Entry {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return entry;
    }
    if let Ok(mut command) = Command::decode(&entry.data) {
        command.block = Some(block);
        entry.data = command.encode_to_vec();
    }
    entry
}
