//! [`Driver`]: the request bookkeeping every shell around a [`Node`] needs, kept pure so the
//! server's raftstore thread and the simulator run the same code.
//!
//! It owns the node and remembers who waits for what: proposals (until applied, failed, or past
//! their deadline), proposals that found no leader (retried on every tick), and linearizable
//! reads (until released by ReadIndex). The shell supplies the time — any ordered value, an
//! `Instant` in the server and simulated microseconds in the simulator — and delivers the
//! [`Answers`] a call returns; the reply handles `P` (proposals) and `R` (reads) are whatever
//! the shell needs to find the waiting client, `K` (lease keep-alives) and `O` (asks of the
//! revision oracle, which runs on the meta range's leader: `desk`).

use std::collections::{BTreeMap, BTreeSet};

use super::closing::Closing;
use super::config::Mutation;
use super::desk::{Ask, Desk, Grant, Meta};
use super::lessor::Lessor;
use super::node::{Node, OutMessage, Output};
use super::revisions::{Asker, Asking};
use crate::command::{CompactionStep, Request};
use crate::mvcc::Response;
use crate::pb::etcdserverpb::LeaseRevokeRequest;
use crate::range::META_RANGE_ID;
use crate::{Error, RangeId, Result};

/// Answers to deliver to waiting clients.
pub struct Answers<P, R, K, O = K> {
    pub writes: Vec<(P, Result<Response>)>,
    /// Reads that may now be served from the local state: at the read timestamp given, in a
    /// range taking its revisions from the oracle; at the replica's own revision otherwise.
    pub reads: Vec<(R, Result<Option<i64>>)>,
    /// Lease keep-alives: the lease's TTL, or 0 if it does not exist.
    pub keep_alives: Vec<(K, Result<i64>)>,
    /// Asks of the revision oracle.
    pub grants: Vec<(O, Result<Grant>)>,
}

impl<P, R, K, O> Default for Answers<P, R, K, O> {
    fn default() -> Self {
        Self { writes: Vec::new(), reads: Vec::new(), keep_alives: Vec::new(), grants: Vec::new() }
    }
}

impl<P, R, K, O> Answers<P, R, K, O> {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.reads.is_empty()
            && self.keep_alives.is_empty()
            && self.grants.is_empty()
    }
}

/// What a round produced, and the answers it released.
pub type Round<P, R, K, O = K> = (Output, Answers<P, R, K, O>);

pub(super) struct Waiting<T, H> {
    deadline: T,
    /// The range a proposal was made to, and the Raft term when it was handed to Raft.
    range_id: RangeId,
    term: u64,
    reply: H,
}

/// A proposal not yet handed to Raft: queued for the next round, or found no leader (retried
/// every tick until its deadline).
struct Unproposed {
    id: u64,
    range_id: RangeId,
    request: Request,
}

pub struct Driver<T, P, R, K, O = K> {
    pub(super) node: Node,
    next_id: u64,
    proposals: BTreeMap<u64, Waiting<T, P>>,
    /// Proposals made since the last round, handed to Raft together at its start (see
    /// `Node::propose_many`).
    queued: Vec<Unproposed>,
    /// Proposals that found no leader.
    unproposed: Vec<Unproposed>,
    pub(super) reads: BTreeMap<u64, Waiting<T, R>>,
    /// Keep-alives waiting for their leadership check (a ReadIndex round), with their lease.
    keep_alives: BTreeMap<u64, Waiting<T, (i64, K)>>,
    /// Each range's term at the last check for proposals of earlier terms.
    last_terms: BTreeMap<RangeId, u64>,
    /// Ticks so far: the lease clock's time.
    pub(super) ticks: u64,
    /// The time of the last tick: the shell's clock must not go back.
    last_tick: Option<T>,
    lessor: Lessor,
    /// The revision oracle, while this node leads the meta range.
    pub(super) desk: Desk<T, Asker<O>>,
    /// This driver's own asks of the oracle (see `revisions`).
    pub(super) asking: Asking,
    /// The close round under way (see `closing`).
    pub(super) closing: Closing,
}

/// A lease whose revocation was proposed and has not happened yet is proposed again after this
/// many seconds (the proposal may have been lost to a leader change).
const LEASE_REVOKE_RETRY_SECONDS: u64 = 3;

impl<T: Ord + Copy, P, R, K, O> Driver<T, P, R, K, O> {
    pub fn new(node: Node) -> Self {
        let lessor = Lessor::new(node.config().tick_ms);
        Self {
            desk: Desk::new(node.config().mutation),
            asking: Asking::default(),
            closing: Closing::default(),
            lessor,
            ticks: 0,
            last_tick: None,
            node,
            next_id: 1,
            proposals: BTreeMap::new(),
            queued: Vec::new(),
            unproposed: Vec::new(),
            reads: BTreeMap::new(),
            keep_alives: BTreeMap::new(),
            last_terms: BTreeMap::new(),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// For inputs that need no bookkeeping: Raft messages, unreachable peers, snapshot reports.
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    /// Proposes a write; its answer comes from a later call. It goes to Raft at the start of
    /// the next round, with every other proposal made before it; a proposal that finds no
    /// leader waits and is retried on every tick.
    pub fn propose(&mut self, range_id: RangeId, request: Request, deadline: T, reply: P) {
        let id = self.take_id();
        let term = self.node.term(range_id);
        self.proposals.insert(id, Waiting { deadline, range_id, term, reply });
        self.queued.push(Unproposed { id, range_id, request });
    }

    /// Asks for a linearizable read; the answer (`Ok`: serve it from the local state now, at
    /// the read timestamp it carries if any) comes from a later call. In a range taking its
    /// revisions from the oracle the read first asks the oracle for a read timestamp.
    pub fn read(&mut self, range_id: RangeId, deadline: T, reply: R) {
        let id = self.take_id();
        self.reads.insert(id, Waiting { deadline, range_id, term: 0, reply });
        if self.node.descriptor(range_id).is_some_and(|d| d.oracle_revisions) {
            self.asking.wait_for_read_ts(id, range_id);
        } else {
            self.node.read_index(range_id, id);
        }
    }

    /// Asks for a linearizable read of a range taking its revisions from the oracle at a read
    /// timestamp already taken (by a read of another range: one read over several ranges is
    /// one snapshot at one timestamp).
    pub fn read_at(&mut self, range_id: RangeId, read_ts: i64, deadline: T, reply: R) {
        let id = self.take_id();
        self.reads.insert(id, Waiting { deadline, range_id, term: 0, reply });
        self.asking.read_ts.insert(id, read_ts);
        self.node.read_index_at(range_id, id, Some(read_ts));
    }

    /// Asks the revision oracle for a revision nobody else is given: the commit revision of a
    /// transaction across ranges. The answer comes as a read's (`Ok(Some(revision))`).
    pub fn revision(&mut self, deadline: T, reply: R) {
        let read_id = self.take_id();
        let range_id = META_RANGE_ID;
        self.reads.insert(read_id, Waiting { deadline, range_id, term: 0, reply });
        self.ask(super::desk::Ask::Block(1), super::revisions::Purpose::Revision { read_id });
    }

    /// Answers the clients whose fresh revisions were granted (by this node's oracle during the
    /// round, or another node's answer since the last): at the end of the round, not the next.
    fn answer_revisions(&mut self, answers: &mut Answers<P, R, K, O>) {
        for (read_id, revision) in std::mem::take(&mut self.asking.revisions) {
            if let Some(w) = self.reads.remove(&read_id) {
                answers.reads.push((w.reply, Ok(Some(revision))));
            }
        }
    }

    /// Advances logical time: ticks the node, retries proposals that found no leader, and
    /// answers requests past their deadline.
    pub fn tick(&mut self, now: T) -> Answers<P, R, K, O> {
        assert!(self.last_tick.is_none_or(|last| last <= now), "the shell's clock went back");
        self.last_tick = Some(now);
        self.node.tick();
        self.ticks += 1;
        self.revoke_expired_leases();
        self.step_compaction();
        self.repair_replicas();
        self.retry_asks();
        let mut answers = Answers::default();
        for proposal in std::mem::take(&mut self.unproposed) {
            match self.proposals.get(&proposal.id) {
                Some(w) if w.deadline <= now => {
                    let w = self.proposals.remove(&proposal.id).expect("present");
                    answers.writes.push((w.reply, Err(Error::NoLeader)));
                }
                Some(_) => self.queued.push(proposal),
                None => {}
            }
        }
        expire(&mut self.proposals, now, &mut answers.writes);
        expire(&mut self.reads, now, &mut answers.reads);
        let reads = &self.reads;
        self.asking.read_ts.retain(|id, _| reads.contains_key(id));
        let mut keep_alives = Vec::new();
        expire(&mut self.keep_alives, now, &mut keep_alives);
        answers.keep_alives.extend(keep_alives.into_iter().map(|((_, reply), r)| (reply, r)));
        let mut expired = Vec::new();
        self.desk.expire(now, &mut expired);
        self.route_grants(expired, &mut answers.grants);
        answers
    }

    /// Runs a round if the node has work (see [`Node::process_ready_sending`]). A storage
    /// error means the node must not be used any more: its memory may be ahead of its disk.
    pub fn round(
        &mut self,
        send_now: &mut dyn FnMut(Vec<OutMessage>),
    ) -> Result<Option<Round<P, R, K, O>>> {
        let mut answers = Answers::default();
        self.propose_queued(&mut answers);
        self.ask_for_revisions();
        self.start_closing();
        if let Some(asks) = self.desk.take_arrived() {
            // One quorum check, issued now, for every ask that arrived since the last.
            let read = self.take_id();
            self.desk.confirming(read, asks);
            self.node.read_index(META_RANGE_ID, read);
        }
        if !self.node.has_work() {
            self.answer_revisions(&mut answers);
            let node_messages = std::mem::take(&mut self.asking.outbox);
            let output = Output { node_messages, ..Output::default() };
            let idle = answers.is_empty() && output.node_messages.is_empty();
            return Ok((!idle).then_some((output, answers)));
        }
        let mut output = self.node.process_ready_sending(send_now)?;
        self.follow_leases(&output)?;
        for (id, result) in std::mem::take(&mut output.completions) {
            if let Some(w) = self.proposals.remove(&id) {
                answers.writes.push((w.reply, result));
            }
        }
        for id in std::mem::take(&mut output.reads_ready) {
            let read_ts = self.asking.read_ts.remove(&id);
            let untimed = self.reads.get(&id).is_some_and(|w| {
                read_ts.is_none()
                    && self.node.descriptor(w.range_id).is_some_and(|d| d.oracle_revisions)
            });
            if self.closed(id) {
                continue;
            }
            if untimed {
                // Asked before the replica knew its range takes revisions from the oracle (a
                // joining member's first snapshot had not arrived): it needs a read timestamp.
                let range_id = self.reads[&id].range_id;
                self.asking.wait_for_read_ts(id, range_id);
            } else if let Some(w) = self.reads.remove(&id) {
                answers.reads.push((w.reply, Ok(read_ts)));
            } else if let Some(Waiting { reply: (lease, reply), .. }) = self.keep_alives.remove(&id)
            {
                answers.keep_alives.push((reply, self.renew(lease)));
            } else {
                self.desk.confirmed(id);
            }
        }
        self.follow_oracle(&mut answers);
        self.fail_proposals_of_old_terms(&mut answers);
        self.answer_revisions(&mut answers);
        output.node_messages = std::mem::take(&mut self.asking.outbox);
        Ok(Some((output, answers)))
    }

    /// Renews a lease on the leader; its answer (the TTL, or 0 if the lease does not exist, as
    /// etcd answers; "not leader" elsewhere) comes from a later call. The lease is renewed only
    /// once a ReadIndex round issued now confirms this node still leads: a leader cut off from
    /// the others still believes it does, and a renewal it granted could outlast the expiry its
    /// successor's clock sets.
    pub fn lease_keep_alive(&mut self, id: i64, deadline: T, reply: K) -> Answers<P, R, K, O> {
        let mut answers = Answers::default();
        if !self.lessor.is_active() {
            answers.keep_alives.push((reply, Err(Error::NotLeader)));
        } else if self.node.config().mutation == Mutation::KeepAliveWithoutReadIndex {
            answers.keep_alives.push((reply, self.renew(id)));
        } else {
            let read = self.take_id();
            let range_id = META_RANGE_ID;
            let waiting = Waiting { deadline, range_id, term: 0, reply: (id, reply) };
            self.keep_alives.insert(read, waiting);
            self.node.read_index(range_id, read);
        }
        answers
    }

    /// Asks the revision oracle for a block of revisions or a read timestamp; the answer comes
    /// from a later call ("not leader" at once where the oracle does not run: on any node but
    /// the meta range's leader).
    pub fn ask_oracle(&mut self, ask: Ask, deadline: T, reply: O) -> Answers<P, R, K, O> {
        let mut answers = Answers::default();
        let mut grants = Vec::new();
        self.desk.ask(ask, Some(deadline), Asker::Client(reply), &mut grants);
        self.route_grants(grants, &mut answers.grants);
        answers
    }

    /// The next revision the oracle hands out, while this node runs it.
    pub fn oracle_next(&self) -> Option<i64> {
        self.desk.next()
    }

    /// Keeps the oracle with the meta range's leadership, and its ceiling ahead (proposed
    /// through the meta range's log).
    fn follow_oracle(&mut self, answers: &mut Answers<P, R, K, O>) {
        let Some(applied) = self.node.applied_state(META_RANGE_ID) else { return };
        // A cluster of one range counts its revisions itself; the oracle runs only where ranges
        // take their revisions from it (see `docs/sharding.md`).
        let in_use = self.node.descriptor(META_RANGE_ID).is_some_and(|d| d.oracle_revisions);
        let leading_term = self.node.leading_term(META_RANGE_ID).filter(|_| in_use);
        let meta =
            Meta { leading_term, tso_ceiling: applied.tso_ceiling, revision: applied.revision };
        let mut grants = Vec::new();
        let ceiling = self.desk.follow(meta, self.ticks, &mut grants);
        self.route_grants(grants, &mut answers.grants);
        if let Some(ceiling) = ceiling {
            let proposal = self.take_id();
            let request = Request::TsoCeiling(crate::command::TsoCeiling { ceiling });
            // Nobody waits for it; one lost is proposed again (see `desk`). Not held behind
            // writes waiting for blocks, which may be waiting for this very ceiling.
            let _ = self.node.propose_unheld(META_RANGE_ID, proposal, request);
        }
    }

    fn renew(&mut self, id: i64) -> Result<i64> {
        self.learn_lease(id)?;
        Ok(self.lessor.renew(id, self.ticks).unwrap_or(0))
    }

    /// `(remaining seconds, granted TTL)` of a lease on the leader, `None` if it does not exist.
    pub fn lease_time_to_live(&mut self, id: i64) -> Result<Option<(i64, i64)>> {
        self.learn_lease(id)?;
        Ok(self.lessor.remaining(id, self.ticks))
    }

    /// On the leader, makes sure the lease clock knows a lease this node has applied (it may
    /// have been applied in the same round the node became leader).
    fn learn_lease(&mut self, id: i64) -> Result<()> {
        if !self.lessor.is_active() {
            return Err(Error::NotLeader);
        }
        if self.lessor.remaining(id, self.ticks).is_none()
            && let Some(ttl) = self.node.lease_ttl(META_RANGE_ID, id)?
        {
            self.lessor.apply(crate::mvcc::LeaseChange::Granted { id, ttl }, self.ticks);
        }
        Ok(())
    }

    /// Keeps the lease clock on the leader only, and in step with applied grants and
    /// revocations.
    fn follow_leases(&mut self, output: &Output) -> Result<()> {
        use super::StateRole;
        let leader = self.node.role(META_RANGE_ID) == Some(StateRole::Leader);
        if leader && !self.lessor.is_active() {
            let extend = self.node.config().election_ticks as u64;
            self.lessor.promote(self.node.leases(META_RANGE_ID)?, self.ticks, extend);
        } else if !leader && self.lessor.is_active() {
            self.lessor.demote();
        }
        for (_, change) in &output.lease_changes {
            self.lessor.apply(*change, self.ticks);
        }
        Ok(())
    }

    /// Proposes the revocation of every expired lease (the leader's job).
    fn revoke_expired_leases(&mut self) {
        let retry = self.lessor.ticks(LEASE_REVOKE_RETRY_SECONDS as i64);
        for id in self.lessor.expired(self.ticks, retry) {
            // One with keys in other ranges is revoked by the shell, across ranges, fenced by
            // this leader's term (until it has applied an entry of its term, the lessor's retry
            // comes back to it).
            if self.node.lease_in_ranges(id).unwrap_or(false) {
                if let Some(term) = self.node.leading_term(META_RANGE_ID) {
                    self.node.shared_ranges().expired_across(id, term);
                }
                continue;
            }
            let request = Request::LeaseRevoke(LeaseRevokeRequest { id });
            // Nobody waits for the answer; a lost proposal is proposed again after `retry`.
            let proposal = self.take_id();
            let _ = self.node.propose(META_RANGE_ID, proposal, request);
        }
    }

    /// Proposes the next step of a compaction's deletions in every range this node leads (the
    /// leader's job), one per tick: paced like etcd's batched compaction, so client requests
    /// keep flowing in between.
    fn step_compaction(&mut self) {
        use super::StateRole;
        for range_id in self.node.range_ids() {
            if self.node.role(range_id) != Some(StateRole::Leader)
                || !self.node.compaction_pending(range_id)
            {
                continue;
            }
            let records = self.node.config().compaction_step_records;
            let request = Request::CompactionStep(CompactionStep { records });
            // Nobody waits for the answer; a lost step is proposed again on the next tick, and
            // a step applied after the work is done changes nothing.
            let proposal = self.take_id();
            let _ = self.node.propose(range_id, proposal, request);
        }
    }

    pub(super) fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Hands the queued proposals to Raft, each range's in one call. Those that find no leader
    /// wait for the next tick; one Raft refuses otherwise is answered with the refusal.
    fn propose_queued(&mut self, answers: &mut Answers<P, R, K, O>) {
        let mut by_range: BTreeMap<RangeId, Vec<(u64, Request)>> = BTreeMap::new();
        for p in std::mem::take(&mut self.queued) {
            // One whose waiter is gone (past its deadline) need not be made at all.
            if self.proposals.contains_key(&p.id) {
                by_range.entry(p.range_id).or_default().push((p.id, p.request));
            }
        }
        for (range_id, mut requests) in by_range {
            // Proposing does not change the term; what is handed over is handed in this one.
            let term = self.node.term(range_id);
            for (id, _) in &requests {
                if let Some(w) = self.proposals.get_mut(id) {
                    w.term = term;
                }
            }
            while !requests.is_empty() {
                match self.node.propose_many(range_id, &mut requests) {
                    Ok(()) => {}
                    Err(Error::NoLeader) => {
                        let waiting = requests.drain(..);
                        self.unproposed.extend(waiting.map(|(id, request)| Unproposed {
                            id,
                            range_id,
                            request,
                        }));
                    }
                    Err(e) => {
                        let (id, _) = requests.remove(0);
                        if let Some(w) = self.proposals.remove(&id) {
                            answers.writes.push((w.reply, Err(e)));
                        }
                    }
                }
            }
        }
    }

    /// A proposal handed to Raft in an earlier term may have gone to a leader that is gone (a
    /// follower forwards proposals, and a lost forward is never retried by Raft). Answer such
    /// proposals now with "leader changed" — their outcome is unknown, as etcd reports it —
    /// rather than letting them wait for their deadline.
    fn fail_proposals_of_old_terms(&mut self, answers: &mut Answers<P, R, K, O>) {
        let mut newer: BTreeMap<RangeId, u64> = BTreeMap::new();
        for range_id in self.node.range_ids() {
            let term = self.node.term(range_id);
            let last = self.last_terms.insert(range_id, term).unwrap_or(0);
            if term > last {
                newer.insert(range_id, term);
            }
        }
        if newer.is_empty() {
            return;
        }
        let unproposed: BTreeSet<u64> = self.unproposed.iter().map(|p| p.id).collect();
        let stale: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(id, w)| {
                newer.get(&w.range_id).is_some_and(|term| w.term < *term)
                    && !unproposed.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(w) = self.proposals.remove(&id) {
                answers.writes.push((w.reply, Err(Error::LeaderChanged)));
            }
        }
    }
}

fn expire<T: Ord + Copy, H, A>(
    waiting: &mut BTreeMap<u64, Waiting<T, H>>,
    now: T,
    answers: &mut Vec<(H, Result<A>)>,
) {
    let expired: Vec<u64> =
        waiting.iter().filter(|(_, w)| w.deadline <= now).map(|(id, _)| *id).collect();
    for id in expired {
        if let Some(w) = waiting.remove(&id) {
            answers.push((w.reply, Err(Error::Timeout)));
        }
    }
}
