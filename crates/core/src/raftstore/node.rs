//! [`Node`]: every replica of one node, driven in rounds. See the module docs of `raftstore`;
//! opening is in `open.rs`, the round in `round.rs`, ReadIndex in `read_index.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use raft::StateRole;
use raft::prelude::{Message, MessageType};
use strata_storage::{Engine, Keyspace};

use super::config::Config;
use super::oracle::Block;
use super::propose::{propose_entries, propose_member_change, propose_unheld};
use super::read_index::{self, Contexts};
use super::replica::Replica;
use super::shared::{RangeShared, SharedRanges};
use super::snapshot;
use super::stamping::{self, Stamped};
use super::stats::{NodeStats, bump};
use crate::command::Request;
use crate::mvcc::{self, LeaseChange, Response};
use crate::range::RangeDescriptor;
use crate::rng::mix;
use crate::{Error, NodeId, RangeId, Result, keys};

/// Who votes in a range and who learns, sorted by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Between two configurations (joint consensus): the old voters still vote too.
    pub joint: bool,
}

/// A message for a peer.
#[derive(Clone, Debug)]
pub struct OutMessage {
    pub range_id: RangeId,
    pub message: Message,
}

/// What a round produced.
#[derive(Default, Debug)]
pub struct Output {
    pub messages: Vec<OutMessage>,
    /// Results of this node's proposals, by proposal id.
    pub completions: Vec<(u64, Result<Response>)>,
    /// Reads (by read id) that may now be served from the local state machine.
    pub reads_ready: Vec<u64>,
    /// Every entry applied in this round, when [`Config::record_applied`] is set.
    pub applied: Vec<AppliedEntry>,
    /// Leases granted and revoked by the entries applied in this round.
    pub lease_changes: Vec<(RangeId, LeaseChange)>,
    /// A membership change was applied or a snapshot installed: the members may differ.
    pub members_changed: bool,
    /// Messages for other nodes' drivers (asks of the revision oracle and its answers), filled
    /// in by the driver.
    pub node_messages: Vec<super::desk::NodeMessage>,
}

/// An applied log entry, as the simulator's checkers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    pub range_id: RangeId,
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

pub struct Node {
    pub(super) config: Config,
    pub(super) engine: Arc<dyn Engine>,
    pub(super) replicas: BTreeMap<RangeId, Replica>,
    /// The replicas' shared state, for request handlers.
    pub(super) shared_ranges: SharedRanges,
    pub(super) ticks: u64,
    pub(super) read_contexts: Contexts,
    /// The sequence number of the next proposal (see `session`).
    pub(super) next_sequence: u64,
    pub(super) stats: Arc<NodeStats>,
}

impl Node {
    /// With [`Config::election_seed`], replaces the election timeout raft-rs drew from the OS
    /// random number generator with one derived from the seed and the replica's observable
    /// state. raft-rs redraws only when it resets the replica (a new term, role or leader), and
    /// consults the timeout only on later ticks, so re-deriving after every call is enough.
    pub(super) fn pin_election_timeouts(&mut self) {
        let Some(seed) = self.config.election_seed else { return };
        for replica in self.replicas.values_mut() {
            let raft = &mut replica.raw.raft;
            let (min, max) = (raft.election_timeout(), 2 * raft.election_timeout());
            let mut h = seed ^ replica.range_id.rotate_left(17) ^ raft.id.rotate_left(31);
            for v in [raft.term, raft.state as u64, raft.leader_id] {
                h = mix(h ^ v);
            }
            raft.set_randomized_election_timeout(min + (h % (max - min) as u64) as usize);
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn stats(&self) -> Arc<NodeStats> {
        self.stats.clone()
    }

    /// The replica's current Raft term, as raft-rs knows it right now (the published one in
    /// [`RangeShared`] lags by up to a round).
    pub fn term(&self, range_id: RangeId) -> u64 {
        self.replicas.get(&range_id).map_or(0, |r| r.raw.raft.term)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every lease of a range, as `(id, ttl)`, from what this node has applied.
    pub fn leases(&self, range_id: RangeId) -> Result<Vec<(i64, i64)>> {
        let _ = range_id; // all ranges share the lease records while there is one range
        mvcc::lease::all(&mvcc::view::View::new(self.engine.as_ref()))
    }

    /// The cluster's id, once this node holds the cluster's state (bootstrapped it, or received
    /// it from the leader).
    pub fn cluster_id(&self) -> Result<Option<u64>> {
        let bytes = self.engine.get(Keyspace::Mvcc, &keys::cluster_id())?;
        Ok(bytes.and_then(|b| Some(u64::from_be_bytes(b.as_slice().try_into().ok()?))))
    }

    /// The cluster's members, as this node has applied them.
    pub fn members(&self) -> Result<Vec<(NodeId, crate::command::MemberRecord)>> {
        mvcc::members::all(&mvcc::view::View::new(self.engine.as_ref()))
    }

    /// A range's Raft configuration as this replica applied it.
    pub fn configuration(&self, range_id: RangeId) -> Option<Configuration> {
        let conf = self.replicas.get(&range_id)?.raw.raft.prs().conf().to_conf_state();
        let sorted = |mut ids: Vec<NodeId>| {
            ids.sort_unstable();
            ids
        };
        Some(Configuration {
            voters: sorted(conf.voters),
            learners: sorted(conf.learners),
            joint: !conf.voters_outgoing.is_empty(),
        })
    }

    /// One lease's TTL, if this node has applied its grant and not its revocation.
    pub fn lease_ttl(&self, range_id: RangeId, id: i64) -> Result<Option<i64>> {
        let _ = range_id;
        let view = mvcc::view::View::new(self.engine.as_ref());
        Ok(mvcc::lease::get(&view, id)?.map(|record| record.ttl))
    }

    /// Whether lease `id` was registered for keys of ranges other than the meta range.
    pub fn lease_in_ranges(&self, id: i64) -> Result<bool> {
        let view = mvcc::view::View::new(self.engine.as_ref());
        Ok(mvcc::lease::get(&view, id)?.is_some_and(|record| !record.spans.is_empty()))
    }

    /// A replica's applied state as of the last round.
    pub fn applied_state(&self, range_id: RangeId) -> Option<crate::mvcc::AppliedState> {
        self.replicas.get(&range_id).map(|r| r.applied)
    }

    /// The term this replica leads its range in, once it has applied an entry of that term
    /// (so everything committed before it is applied too).
    pub fn leading_term(&self, range_id: RangeId) -> Option<u64> {
        let replica = self.replicas.get(&range_id)?;
        let raft = &replica.raw.raft;
        (raft.state == StateRole::Leader && replica.applied.applied_term == raft.term)
            .then_some(raft.term)
    }

    /// The replica's Raft role right now.
    pub fn role(&self, range_id: RangeId) -> Option<StateRole> {
        self.replicas.get(&range_id).map(|r| r.raw.raft.state)
    }

    pub fn range_ids(&self) -> Vec<RangeId> {
        self.replicas.keys().copied().collect()
    }

    /// Whether the replica's last compaction still has versions to delete (as far as it has
    /// applied).
    pub fn compaction_pending(&self, range_id: RangeId) -> bool {
        self.replicas.get(&range_id).is_some_and(|r| r.applied.compaction_pending)
    }

    pub fn shared(&self, range_id: RangeId) -> Option<Arc<RangeShared>> {
        self.replicas.get(&range_id).map(|r| r.shared.clone())
    }

    /// Every replica's shared state, as request handlers follow it.
    pub fn shared_ranges(&self) -> SharedRanges {
        self.shared_ranges.clone()
    }

    /// The range of this node's replicas that holds user key `key` (an uninitialized replica
    /// holds none yet; see `split`).
    pub fn range_of(&self, key: &[u8]) -> Option<RangeId> {
        let mut replicas = self.replicas.values();
        (replicas.find(|r| r.descriptor.epoch.is_some() && r.descriptor.contains(key)))
            .map(|r| r.range_id)
    }

    /// A range's descriptor as this replica applied it.
    pub fn descriptor(&self, range_id: RangeId) -> Option<&RangeDescriptor> {
        self.replicas.get(&range_id).map(|r| &r.descriptor)
    }

    /// Advances logical time by one tick for every replica.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let retry_after = self.config.read_retry_ticks;
        for replica in self.replicas.values_mut() {
            replica.raw.tick();
            read_index::retry(replica, &mut self.read_contexts, self.ticks, retry_after);
        }
        self.pin_election_timeouts();
    }

    /// Delivers a message from a peer. A message of a range the node holds no replica of creates
    /// an uninitialized one if a leader or candidate sent it (see `split`); others are dropped. The shell hands
    /// over only messages addressed to this node: one for another is a routing bug.
    pub fn step(&mut self, range_id: RangeId, message: Message) {
        assert_eq!(
            message.to, self.config.node_id,
            "range {range_id}: a message for node {} was delivered to node {}",
            message.to, self.config.node_id
        );
        if !self.replicas.contains_key(&range_id) && !self.create_for_message(range_id, &message) {
            return;
        }
        if self.snapshot_must_wait(range_id, &message) {
            return;
        }
        if let Some(replica) = self.replicas.get_mut(&range_id) {
            let mutation = self.config.mutation;
            let Some(message) = read_index::step_remote_request(replica, message, mutation) else {
                return;
            };
            // Proposals its followers forwarded wait for a block on a leader that stamps.
            let message = match message.get_msg_type() {
                MessageType::MsgPropose if stamping::stamps(replica) => {
                    match stamping::take(replica, message) {
                        Some(message) => message,
                        None => return,
                    }
                }
                _ => message,
            };
            replica.answer_pre_vote_in_its_term(&message);
            // Errors here are protocol-level rejections (stale term, unknown peer): Raft
            // tolerates lost messages, so dropping is the right reaction.
            let _ = replica.raw.step(message);
        }
        self.pin_election_timeouts();
    }

    /// Proposes a request. Fails with `NoLeader` when the replica knows no leader to forward
    /// it to; the caller may retry later with the same id.
    pub fn propose(&mut self, range_id: RangeId, proposal_id: u64, request: Request) -> Result<()> {
        let mut proposals = vec![(proposal_id, request)];
        self.propose_many(range_id, &mut proposals)
    }

    /// Proposes requests in order, in as few Raft messages as `append_bytes_max` allows. Those
    /// handed to Raft leave `proposals`; on an error the rest stay there (`NoLeader`: the
    /// replica knows no leader to forward them to; the caller may retry later with the same
    /// ids).
    ///
    /// Why not one message each: raft-rs answers every proposal step on a leader with an append
    /// to each follower, every append with an acknowledgement, and every acknowledgement that
    /// moves the commit index with another append; a follower forwards every proposal in a
    /// message of its own. Under load that was eight or nine messages per write, each encoded,
    /// sent, decoded and stepped; one message for a round's proposals makes it a fraction of
    /// one.
    pub fn propose_many(
        &mut self,
        range_id: RangeId,
        proposals: &mut Vec<(u64, Request)>,
    ) -> Result<()> {
        let replica = self
            .replicas
            .get_mut(&range_id)
            .ok_or(Error::Internal(format!("unknown range {range_id}")))?;
        let (config, sequence) = (&self.config, &mut self.next_sequence);
        let mut result = Ok(());
        while !proposals.is_empty() && result.is_ok() {
            let member_change =
                proposals.iter().position(|(_, r)| matches!(r, Request::MemberChange(_)));
            let proposed = match member_change {
                Some(0) => propose_member_change(replica, config, sequence, &proposals[0]),
                Some(at) => propose_entries(replica, config, sequence, &proposals[..at]),
                None => propose_entries(replica, config, sequence, proposals),
            };
            match proposed {
                Ok(count) => {
                    proposals.drain(..count);
                    bump(&self.stats.proposals, count as u64);
                }
                Err(e) => result = Err(e),
            }
        }
        self.pin_election_timeouts();
        result
    }

    /// How many revisions the proposals held by this replica take, when it leads its range in a
    /// term whose entries it has applied and stamps its writes: what to ask the oracle for.
    pub fn revisions_held(&self, range_id: RangeId) -> Option<(u64, u64)> {
        let replica = self.replicas.get(&range_id)?;
        let term = self.leading_term(range_id).filter(|_| stamping::stamps(replica))?;
        Some((stamping::revisions_held(replica), term))
    }

    /// Stamps the proposals a replica holds with a block the oracle handed out for `term`.
    pub fn stamp(&mut self, range_id: RangeId, term: u64, block: Block) -> Stamped {
        let mutation = self.config.mutation;
        let Some(replica) = self.replicas.get_mut(&range_id) else { return Stamped::NotLeading };
        let stamped = stamping::stamp(replica, term, block, mutation);
        self.pin_election_timeouts();
        stamped
    }

    /// Proposes a request that waits for nothing held before it and is applied however often
    /// it arrives (it carries no sequence number): for the driver's own idempotent proposals,
    /// such as raising the revision oracle's ceiling, which held writes may be waiting for.
    pub fn propose_unheld(
        &mut self,
        range_id: RangeId,
        proposal_id: u64,
        request: Request,
    ) -> Result<()> {
        let replica = self
            .replicas
            .get_mut(&range_id)
            .ok_or(Error::Internal(format!("unknown range {range_id}")))?;
        propose_unheld(replica, &self.config, proposal_id, &request)
    }

    /// Asks for a linearizable read; `read_id` appears in a later round's `reads_ready`.
    pub fn read_index(&mut self, range_id: RangeId, read_id: u64) {
        self.read_index_at(range_id, read_id, None);
    }

    /// Asks for a linearizable read at a read timestamp from the revision oracle, in a range
    /// taking its revisions from it: released once every write stamped at or below the
    /// timestamp is applied here (`read_index`).
    pub fn read_index_at(&mut self, range_id: RangeId, read_id: u64, read_ts: Option<i64>) {
        if let Some(replica) = self.replicas.get_mut(&range_id) {
            replica.reads.push(read_id, read_ts);
        }
    }

    /// An image of a range's state machine as of the last round, for backups (see
    /// `snapshot::restore_as_new`). Between rounds the engine holds exactly what was applied.
    pub fn snapshot_image(&self, range_id: RangeId) -> Result<Vec<u8>> {
        let replica =
            self.replicas.get(&range_id).ok_or(Error::Internal("no such range".into()))?;
        snapshot::build(
            self.engine.as_ref(),
            &replica.descriptor,
            replica.applied,
            &replica.sessions,
        )
    }

    /// A backup of the node's state machine (`Maintenance.Snapshot`): the meta range's snapshot
    /// while the node holds one range; with several, every range cut at `revision`, which must
    /// be at or below every range's closed revision and at or above the cluster's compaction
    /// revision (see `snapshot::cut`).
    pub fn backup_image(&self, revision: i64) -> Result<Vec<u8>> {
        if self.replicas.len() == 1 {
            return self.snapshot_image(crate::range::META_RANGE_ID);
        }
        if self.replicas.values().any(|r| r.shared.closed_revision() < revision) {
            return Err(Error::Timeout);
        }
        let meta = self.replicas.get(&crate::range::META_RANGE_ID);
        let view = mvcc::view::View::new(self.engine.as_ref());
        let compacted = mvcc::compaction::cluster_revision(
            &view,
            meta.map_or(0, |replica| replica.applied.compact_revision),
        )?;
        if revision < compacted {
            return Err(Error::Compacted);
        }
        snapshot::cut(self.engine.as_ref(), revision, compacted)
    }

    /// Whether learner `id` has caught up enough to be promoted (as etcd judges it: it has 90 %
    /// of the leader's log). Only the leader knows.
    pub fn learner_ready(&self, range_id: RangeId, id: NodeId) -> Result<bool> {
        let replica = self.replicas.get(&range_id).ok_or(Error::NotLeader)?;
        if replica.raw.raft.state != StateRole::Leader {
            return Err(Error::NotLeader);
        }
        let last = replica.raw.raft.raft_log.last_index();
        let matched = replica.raw.raft.prs().get(id).map_or(0, |progress| progress.matched);
        Ok(matched * 10 >= last * 9)
    }

    /// Hands leadership of a range to `target`, a voter; this replica must lead it.
    pub fn transfer_leader(&mut self, range_id: RangeId, target: NodeId) -> Result<()> {
        let replica = self.replicas.get_mut(&range_id).ok_or(Error::NotLeader)?;
        if replica.raw.raft.state != StateRole::Leader {
            return Err(Error::NotLeader);
        }
        if target == self.config.node_id || !replica.raw.raft.prs().conf().voters().contains(target)
        {
            return Err(Error::BadLeaderTransferee);
        }
        replica.raw.transfer_leader(target);
        Ok(())
    }

    /// Before this node stops: hands the leadership of every range it leads to the voter that
    /// has the most of the range's log, so that clients wait for a transfer rather than an
    /// election timeout. Returns the ranges handed over, with their new leaders to be.
    pub fn hand_over(&mut self) -> Vec<(RangeId, NodeId)> {
        let me = self.config.node_id;
        let mut handed = Vec::new();
        for (range_id, replica) in &mut self.replicas {
            if replica.raw.raft.state != StateRole::Leader {
                continue;
            }
            let prs = replica.raw.raft.prs();
            let voters = prs.conf().voters().ids();
            let best = (voters.iter())
                .filter(|id| *id != me)
                .filter_map(|id| Some((prs.get(id)?.matched, id)))
                .max();
            if let Some((_, target)) = best {
                replica.raw.transfer_leader(target);
                handed.push((*range_id, target));
            }
        }
        handed
    }

    /// Tells raft-rs a peer could not be reached, so it stops pipelining to it.
    pub fn report_unreachable(&mut self, range_id: RangeId, peer: NodeId) {
        if let Some(replica) = self.replicas.get_mut(&range_id) {
            replica.raw.report_unreachable(peer);
        }
    }

    /// Reports whether a snapshot reached `peer`.
    pub fn report_snapshot(&mut self, range_id: RangeId, peer: NodeId, delivered: bool) {
        if let Some(replica) = self.replicas.get_mut(&range_id) {
            let status = if delivered {
                raft::SnapshotStatus::Finish
            } else {
                raft::SnapshotStatus::Failure
            };
            replica.raw.report_snapshot(peer, status);
        }
    }

    /// Whether a round would do anything.
    pub fn has_work(&self) -> bool {
        self.replicas.values().any(|r| r.raw.has_ready() || r.reads.has_work())
    }
}
