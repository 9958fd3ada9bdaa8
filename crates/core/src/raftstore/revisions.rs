//! The driver's side of the revision oracle, in ranges that take their revisions from it
//! (`docs/design/revisions.md`): asking for blocks to stamp a leader's held writes with
//! (`stamping`), asking for read timestamps for linearizable reads (`read_index`), and carrying
//! asks and answers between this node and the meta range's leader, which runs the oracle
//! (`desk`).
//!
//! Asks go to the local desk when this node runs the oracle, and otherwise, as
//! [`NodeMessage`]s, to the node this one believes leads the meta range. An ask unanswered for
//! [`ASK_RETRY_TICKS`] is given up and asked again (the message or its answer may be lost; a
//! grant that comes late is ignored, and what it handed out is a gap). One block ask per range
//! is out at a time, so blocks are used in the order they were handed out.

use std::collections::{BTreeMap, BTreeSet};

use super::desk::{Ask, Grant, NodeBody, NodeMessage, RemoteAnswer, RemoteAsk};
use super::driver::{Answers, Driver};
use super::oracle::Block;
use crate::range::META_RANGE_ID;
use crate::{Error, NodeId, RangeId, Result};

/// An ask this many ticks old is given up and asked again.
pub const ASK_RETRY_TICKS: u64 = 10;

/// Who an oracle's answer goes to.
pub(super) enum Asker<O> {
    /// A client of the driver (`Driver::ask_oracle`).
    Client(O),
    /// This driver, for the ask of this id.
    Local(u64),
    /// Another node's driver, for its ask of this id, in its process of this epoch.
    Remote { node: NodeId, id: u64, epoch: u64 },
}

/// The asks this driver has out, and what each is for.
#[derive(Default)]
pub(super) struct Asking {
    next_id: u64,
    out: BTreeMap<u64, Outstanding>,
    /// Ranges with a block ask out.
    stamping: BTreeSet<RangeId>,
    /// Reads (by the driver's read id, with their range) waiting to ask for a read timestamp.
    reads_waiting: Vec<(u64, RangeId)>,
    /// The read timestamp each read was given, until it is released.
    pub read_ts: BTreeMap<u64, i64>,
    /// Fresh revisions granted to the clients' reads of these ids, to answer with the round.
    pub revisions: Vec<(u64, i64)>,
    /// Messages for other nodes' drivers, sent with the next round's output.
    pub outbox: Vec<NodeMessage>,
}

struct Outstanding {
    purpose: Purpose,
    asked_tick: u64,
}

pub(super) enum Purpose {
    Stamp {
        range_id: RangeId,
        term: u64,
    },
    ReadTs {
        reads: Vec<(u64, RangeId)>,
    },
    /// A read timestamp for a close round (see `closing`).
    Close,
    /// A fresh revision for a client, answered as the read of this id (`Driver::revision`).
    Revision {
        read_id: u64,
    },
}

impl Asking {
    pub fn wait_for_read_ts(&mut self, read_id: u64, range_id: RangeId) {
        self.reads_waiting.push((read_id, range_id));
    }
}

impl<T: Ord + Copy, P, R, K, O> Driver<T, P, R, K, O> {
    /// At the start of a round: asks for a block for every range whose held writes have none
    /// out, and for one read timestamp for every read waiting for one.
    pub(super) fn ask_for_revisions(&mut self) {
        for range_id in self.node.range_ids() {
            if self.asking.stamping.contains(&range_id) {
                continue;
            }
            let Some((count, term)) = self.node.revisions_held(range_id) else { continue };
            if count > 0 {
                self.asking.stamping.insert(range_id);
                self.ask(Ask::Block(count), Purpose::Stamp { range_id, term });
            }
        }
        let reads: Vec<(u64, RangeId)> = std::mem::take(&mut self.asking.reads_waiting)
            .into_iter()
            .filter(|(read_id, _)| self.reads.contains_key(read_id))
            .collect();
        if !reads.is_empty() {
            self.ask(Ask::ReadTs, Purpose::ReadTs { reads });
        }
    }

    pub(super) fn ask(&mut self, ask: Ask, purpose: Purpose) {
        self.asking.next_id += 1;
        let id = self.asking.next_id;
        let asked_tick = self.ticks;
        self.asking.out.insert(id, Outstanding { purpose, asked_tick });
        if self.desk.is_active() {
            let mut grants = Vec::new();
            self.desk.ask(ask, None, Asker::Local(id), &mut grants);
            self.route_grants(grants, &mut Vec::new());
            return;
        }
        let meta = self.node.shared(META_RANGE_ID);
        let leader = meta.map_or(0, |m| m.leader_id.load(std::sync::atomic::Ordering::Acquire));
        if leader != 0 && leader != self.node.node_id() {
            let body = NodeBody::Ask(RemoteAsk::of(id, self.node.config().epoch, ask));
            let (from, to) = (self.node.node_id(), leader);
            self.asking.outbox.push(NodeMessage { from, to, body: Some(body) });
        }
        // With no meta leader known the ask waits for its retry.
    }

    /// On a tick: asks out too long are given up, to be asked again.
    pub(super) fn retry_asks(&mut self) {
        let ticks = self.ticks;
        let stale: Vec<u64> = (self.asking.out.iter())
            .filter(|(_, o)| ticks - o.asked_tick >= ASK_RETRY_TICKS)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.give_up(id);
        }
    }

    fn give_up(&mut self, id: u64) {
        match self.asking.out.remove(&id).map(|o| o.purpose) {
            Some(Purpose::Stamp { range_id, .. }) => {
                self.asking.stamping.remove(&range_id);
            }
            Some(Purpose::ReadTs { reads }) => self.asking.reads_waiting.extend(reads),
            Some(Purpose::Close) => self.close_given_up(),
            Some(Purpose::Revision { read_id }) if self.reads.contains_key(&read_id) => {
                self.ask(Ask::Block(1), Purpose::Revision { read_id });
            }
            Some(Purpose::Revision { .. }) | None => {}
        }
    }

    /// A message from another node's driver.
    pub fn receive(&mut self, message: NodeMessage) -> Answers<P, R, K, O> {
        let mut answers = Answers::default();
        assert_eq!(message.to, self.node.node_id(), "a node message for another node");
        match message.body {
            Some(NodeBody::Ask(remote)) => {
                let asker =
                    Asker::Remote { node: message.from, id: remote.id, epoch: remote.epoch };
                let mut grants = Vec::new();
                self.desk.ask(remote.ask(), None, asker, &mut grants);
                self.route_grants(grants, &mut answers.grants);
            }
            // An answer to an ask of this node's previous life is no answer to this one's.
            Some(NodeBody::Answer(answer)) if answer.epoch != self.node.config().epoch => {}
            Some(NodeBody::Answer(answer)) => {
                let result = match self.asking.out.get(&answer.id).map(|o| &o.purpose) {
                    _ if !answer.granted => Err(Error::NotLeader),
                    Some(Purpose::Stamp { .. } | Purpose::Revision { .. }) => {
                        Ok(Grant::Block(Block { lo: answer.lo, hi: answer.hi }))
                    }
                    Some(Purpose::ReadTs { .. } | Purpose::Close) => Ok(Grant::ReadTs(answer.lo)),
                    None => return answers, // given up already
                };
                self.granted(answer.id, result);
            }
            None => {}
        }
        answers
    }

    /// Delivers the desk's answers: to the driver's clients, to this driver, or to the node
    /// that asked.
    pub(super) fn route_grants(
        &mut self,
        grants: Vec<(Asker<O>, Result<Grant>)>,
        clients: &mut Vec<(O, Result<Grant>)>,
    ) {
        for (asker, result) in grants {
            match asker {
                Asker::Client(reply) => clients.push((reply, result)),
                Asker::Local(id) => self.granted(id, result),
                Asker::Remote { node, id, epoch } => {
                    let body = NodeBody::Answer(RemoteAnswer::of(id, epoch, &result));
                    let from = self.node.node_id();
                    self.asking.outbox.push(NodeMessage { from, to: node, body: Some(body) });
                }
            }
        }
    }

    /// An answer to one of this driver's asks.
    fn granted(&mut self, id: u64, result: Result<Grant>) {
        let Some(outstanding) = self.asking.out.remove(&id) else { return };
        match (outstanding.purpose, result) {
            (Purpose::Stamp { range_id, term }, Ok(Grant::Block(block))) => {
                self.asking.stamping.remove(&range_id);
                // Stamped, discarded (asked again next round) or no longer leading: all done.
                let _ = self.node.stamp(range_id, term, block);
            }
            (Purpose::ReadTs { reads }, Ok(Grant::ReadTs(ts))) => {
                for (read_id, range_id) in reads {
                    if self.reads.contains_key(&read_id) {
                        self.asking.read_ts.insert(read_id, ts);
                        self.node.read_index_at(range_id, read_id, Some(ts));
                    }
                }
            }
            (Purpose::Close, Ok(Grant::ReadTs(ts))) => self.close_at(ts),
            (Purpose::Revision { read_id }, Ok(Grant::Block(block))) => {
                self.asking.revisions.push((read_id, block.lo));
            }
            (purpose, _) => {
                // Refused (not the meta leader) or mismatched: ask again, after a tick.
                let asked_tick = self.ticks.saturating_sub(ASK_RETRY_TICKS - 1);
                self.asking.next_id += 1;
                let retry = self.asking.next_id;
                self.asking.out.insert(retry, Outstanding { purpose, asked_tick });
            }
        }
    }
}
