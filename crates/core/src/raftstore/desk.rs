//! The oracle's desk, on the meta range's leader: what the [`Driver`](super::Driver) does
//! around the pure [`Oracle`] — asks from arrival to answer, the oracle's life across
//! leadership changes, its ceiling proposals (`docs/design/revisions.md`, rules 1 and 2).
//!
//! An ask is answered only after a ReadIndex round of the meta range *issued after it
//! arrived* confirms this node still leads it. Asks arriving between two rounds share one such
//! round. A confirmed ask for a block the applied ceiling does not cover yet waits, in order,
//! for the next ceiling to apply.

use std::collections::{BTreeMap, VecDeque};

use super::config::Mutation;
use super::oracle::{Block, Oracle, WINDOW};
use crate::{Error, Result};

/// What an oracle is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// A block of this many revisions, for a range leader's round of writes.
    Block(u64),
    /// A read timestamp.
    ReadTs,
}

/// What an oracle hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    Block(Block),
    ReadTs(i64),
}

/// A ceiling proposed this many ticks ago without being applied is proposed again (the
/// proposal may have been lost to a dropped message).
const CEILING_RETRY_TICKS: u64 = 20;

pub(super) struct Asked<T, O> {
    ask: Ask,
    /// `None` for the driver's own asks, which it retries itself.
    deadline: Option<T>,
    reply: O,
}

/// The oracle of the term this node leads the meta range in.
struct Active {
    term: u64,
    oracle: Oracle,
    /// When the ceiling now proposed was proposed.
    ceiling_proposed_tick: Option<u64>,
}

/// What the meta range looks like to the desk after a round.
pub(super) struct Meta {
    /// Leads the meta range and has applied an entry of its term (so everything committed
    /// before the term is applied): `Some(term)`.
    pub leading_term: Option<u64>,
    pub tso_ceiling: i64,
    pub revision: i64,
}

pub(super) struct Desk<T, O> {
    active: Option<Active>,
    /// Arrived since the last quorum check was issued.
    arrived: Vec<Asked<T, O>>,
    /// By the read id of the quorum check that confirms them.
    confirming: BTreeMap<u64, Vec<Asked<T, O>>>,
    /// Confirmed; waiting for a ceiling that covers them, in order.
    confirmed: VecDeque<Asked<T, O>>,
    mutation: Mutation,
    window: i64,
}

impl<T: Ord + Copy, O> Desk<T, O> {
    pub fn new(mutation: Mutation) -> Self {
        Self {
            active: None,
            arrived: Vec::new(),
            confirming: BTreeMap::new(),
            confirmed: VecDeque::new(),
            mutation,
            window: WINDOW,
        }
    }

    /// Takes an ask; answers at once only if this node does not run the oracle.
    pub fn ask(
        &mut self,
        ask: Ask,
        deadline: Option<T>,
        reply: O,
        out: &mut Vec<(O, Result<Grant>)>,
    ) {
        if self.active.is_none() {
            out.push((reply, Err(Error::NotLeader)));
            return;
        }
        self.arrived.push(Asked { ask, deadline, reply });
        if self.mutation == Mutation::OracleWithoutQuorumCheck {
            self.confirmed.extend(self.arrived.drain(..));
            self.serve(out);
        }
    }

    /// The asks that arrived since the last call: the caller issues one quorum check for them
    /// and hands its read id to [`Desk::confirming`].
    pub fn take_arrived(&mut self) -> Option<Vec<Asked<T, O>>> {
        (!self.arrived.is_empty()).then(|| std::mem::take(&mut self.arrived))
    }

    pub fn confirming(&mut self, read_id: u64, asks: Vec<Asked<T, O>>) {
        self.confirming.insert(read_id, asks);
    }

    /// A quorum check was confirmed: says whether it was one of the desk's.
    pub fn confirmed(&mut self, read_id: u64) -> bool {
        let Some(asks) = self.confirming.remove(&read_id) else { return false };
        self.confirmed.extend(asks);
        true
    }

    /// Follows the meta range after a round: starts the oracle when this node has come to lead
    /// it (in a new term), stops it when it no longer does, learns applied ceilings. Returns a
    /// ceiling to propose, if one is due.
    pub fn follow(
        &mut self,
        meta: Meta,
        tick: u64,
        out: &mut Vec<(O, Result<Grant>)>,
    ) -> Option<i64> {
        let term = meta.leading_term;
        if self.active.as_ref().map(|a| a.term) != term {
            self.stop(out);
            if let Some(term) = term {
                let ceiling = match self.mutation {
                    Mutation::OracleStartsBelowCeiling => 0,
                    _ => meta.tso_ceiling,
                };
                let oracle = Oracle::start(ceiling, meta.revision, self.window);
                self.active = Some(Active { term, oracle, ceiling_proposed_tick: None });
            }
        }
        let active = self.active.as_mut()?;
        active.oracle.applied_ceiling(meta.tso_ceiling);
        let stale = active
            .ceiling_proposed_tick
            .is_some_and(|proposed| tick.saturating_sub(proposed) >= CEILING_RETRY_TICKS);
        if stale {
            active.oracle.forget_proposal();
        }
        let ceiling = active.oracle.ceiling_to_propose();
        if ceiling.is_some() {
            active.ceiling_proposed_tick = Some(tick);
        }
        self.serve(out);
        ceiling
    }

    /// Answers confirmed asks in order, as far as the applied ceiling allows.
    pub fn serve(&mut self, out: &mut Vec<(O, Result<Grant>)>) {
        let Some(active) = self.active.as_mut() else { return };
        while let Some(asked) = self.confirmed.front() {
            let grant = match asked.ask {
                Ask::Block(count) => match active.oracle.block(count) {
                    Some(block) => Grant::Block(block),
                    None => return, // waits for the next ceiling
                },
                Ask::ReadTs => Grant::ReadTs(active.oracle.read_ts()),
            };
            let asked = self.confirmed.pop_front().expect("present");
            out.push((asked.reply, Ok(grant)));
        }
    }

    /// Answers asks past their deadline.
    pub fn expire(&mut self, now: T, out: &mut Vec<(O, Result<Grant>)>) {
        let expired = |asked: &Asked<T, O>| asked.deadline.is_some_and(|d| d <= now);
        let mut waiting: Vec<&mut Vec<Asked<T, O>>> = self.confirming.values_mut().collect();
        waiting.push(&mut self.arrived);
        for asks in waiting {
            for asked in asks.extract_if(.., |a| expired(a)) {
                out.push((asked.reply, Err(Error::Timeout)));
            }
        }
        let confirmed = std::mem::take(&mut self.confirmed);
        for asked in confirmed {
            if expired(&asked) {
                out.push((asked.reply, Err(Error::Timeout)));
            } else {
                self.confirmed.push_back(asked);
            }
        }
    }

    /// This node no longer runs the oracle: every ask it holds is told so, to ask the new one.
    fn stop(&mut self, out: &mut Vec<(O, Result<Grant>)>) {
        self.active = None;
        let confirming = std::mem::take(&mut self.confirming).into_values().flatten();
        let held = self.arrived.drain(..).chain(confirming).chain(self.confirmed.drain(..));
        out.extend(held.map(|asked| (asked.reply, Err(Error::NotLeader))));
    }

    /// The next number the oracle hands out, while this node runs it.
    pub fn next(&self) -> Option<i64> {
        self.active.as_ref().map(|a| a.oracle.next())
    }

    /// Whether this node runs the oracle.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestDesk = Desk<u64, &'static str>;

    fn leading(term: u64, tso_ceiling: i64) -> Meta {
        Meta { leading_term: Some(term), tso_ceiling, revision: 1 }
    }

    #[test]
    fn asks_wait_for_a_quorum_check_issued_after_they_arrived() {
        let mut desk = TestDesk::new(Mutation::None);
        let mut out = Vec::new();
        desk.ask(Ask::ReadTs, Some(100), "early", &mut out);
        assert_eq!(out, [("early", Err(Error::NotLeader))], "no oracle runs here yet");
        out.clear();
        let ceiling = desk.follow(leading(6, 0), 0, &mut out).expect("a first ceiling");
        desk.follow(leading(6, ceiling), 1, &mut out);
        desk.ask(Ask::Block(2), Some(100), "block", &mut out);
        desk.ask(Ask::ReadTs, Some(100), "read", &mut out);
        assert!(out.is_empty(), "nothing is answered before the check");
        let asks = desk.take_arrived().expect("two asks");
        desk.confirming(7, asks);
        desk.ask(Ask::ReadTs, Some(100), "later", &mut out);
        assert!(!desk.confirmed(8), "not one of the desk's checks");
        assert!(desk.confirmed(7));
        desk.serve(&mut out);
        let block = Grant::Block(Block { lo: 2, hi: 3 });
        assert_eq!(out, [("block", Ok(block)), ("read", Ok(Grant::ReadTs(3)))]);
        assert!(desk.take_arrived().is_some(), "the later ask waits for a check of its own");
    }

    #[test]
    fn losing_the_meta_range_answers_every_held_ask_and_a_new_term_starts_afresh() {
        let mut desk = TestDesk::new(Mutation::None);
        let mut out = Vec::new();
        let ceiling = desk.follow(leading(6, 0), 0, &mut out).unwrap();
        desk.follow(leading(6, ceiling), 1, &mut out);
        desk.ask(Ask::ReadTs, Some(100), "held", &mut out);
        let asks = desk.take_arrived().unwrap();
        desk.confirming(1, asks);
        desk.follow(Meta { leading_term: None, tso_ceiling: ceiling, revision: 1 }, 2, &mut out);
        assert_eq!(out, [("held", Err(Error::NotLeader))]);
        assert_eq!(desk.next(), None);
        // Leading again in a later term: above the ceiling the earlier term applied.
        desk.follow(leading(9, ceiling), 3, &mut out);
        assert_eq!(desk.next(), Some(ceiling + 1));
    }

    #[test]
    fn a_block_past_the_ceiling_waits_for_it_and_late_asks_time_out() {
        let mut desk = TestDesk::new(Mutation::None);
        let mut out = Vec::new();
        desk.follow(leading(6, 0), 0, &mut out); // proposes a ceiling, applied below
        desk.ask(Ask::Block(1), Some(10), "block", &mut out);
        let asks = desk.take_arrived().unwrap();
        desk.confirming(1, asks);
        desk.confirmed(1);
        desk.serve(&mut out);
        assert!(out.is_empty(), "no ceiling applied yet");
        desk.follow(leading(6, 5), 1, &mut out);
        assert_eq!(out, [("block", Ok(Grant::Block(Block { lo: 2, hi: 2 })))]);
        out.clear();
        desk.ask(Ask::ReadTs, Some(10), "late", &mut out);
        desk.expire(10, &mut out);
        assert_eq!(out, [("late", Err(Error::Timeout))]);
    }
}

/// A message between two nodes' drivers, beside Raft's: asks of the revision oracle, which
/// runs on the meta range's leader, and its answers. The server's peer transport carries them
/// with Raft's messages; the simulator's network delivers them as it delivers those.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeMessage {
    #[prost(uint64, tag = "1")]
    pub from: crate::NodeId,
    #[prost(uint64, tag = "2")]
    pub to: crate::NodeId,
    #[prost(oneof = "NodeBody", tags = "3, 4")]
    pub body: Option<NodeBody>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum NodeBody {
    #[prost(message, tag = "3")]
    Ask(RemoteAsk),
    #[prost(message, tag = "4")]
    Answer(RemoteAnswer),
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RemoteAsk {
    /// The asker's id for the ask, which the answer carries back.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Revisions in the block asked for; 0 for a read timestamp.
    #[prost(uint64, tag = "2")]
    pub count: u64,
    /// The asking process's epoch, which the answer carries back too: ids start afresh when a
    /// node restarts, and an answer to an ask of its previous life must not pass for one to
    /// an ask of this one.
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RemoteAnswer {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// False: the node does not run the oracle (or no longer does); ask the meta leader.
    #[prost(bool, tag = "2")]
    pub granted: bool,
    /// The block `[lo, hi]`, or the read timestamp in both.
    #[prost(int64, tag = "3")]
    pub lo: i64,
    #[prost(int64, tag = "4")]
    pub hi: i64,
    /// The asking process's epoch, from the ask.
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
}

impl RemoteAsk {
    pub fn of(id: u64, epoch: u64, ask: Ask) -> Self {
        let count = match ask {
            Ask::Block(count) => count,
            Ask::ReadTs => 0,
        };
        Self { id, count, epoch }
    }

    pub fn ask(&self) -> Ask {
        if self.count == 0 { Ask::ReadTs } else { Ask::Block(self.count) }
    }
}

impl RemoteAnswer {
    pub fn of(id: u64, epoch: u64, result: &Result<Grant>) -> Self {
        let (granted, lo, hi) = match result {
            Ok(Grant::Block(block)) => (true, block.lo, block.hi),
            Ok(Grant::ReadTs(ts)) => (true, *ts, *ts),
            Err(_) => (false, 0, 0),
        };
        Self { id, granted, lo, hi, epoch }
    }
}
