//! [`Node`]: every replica of one node, driven in rounds. See the module docs of `raftstore`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use raft::prelude::{Entry, Message, MessageType, Snapshot, SnapshotMetadata};
use raft::{RawNode, ReadOnlyOption, StateRole};
use strata_storage::{Durability, Engine, Keyspace, WriteBatch};

use super::log::RaftLog;
use super::propose::{leave_joint_if_stuck, propose_entries, propose_member_change};
use super::replica::{PendingRead, RemoteRead, Replica};
use super::session::Sessions;
use super::snapshot;
use super::stats::{NodeStats, bump};
use crate::command::Request;
use crate::mvcc::memo::Memo;
use crate::mvcc::{self, AppliedState, LeaseChange, Response};
use crate::rng::mix;
use crate::{Error, FIRST_RANGE_ID, NodeId, RangeId, Result, keys};

/// How a node runs its replicas.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: NodeId,
    /// Distinguishes this process from earlier runs of the same node (see `Command`).
    pub epoch: u64,
    /// The first range's voters when the node starts with an empty store.
    pub initial_voters: Vec<NodeId>,
    /// The members to record when bootstrapping (names and peer URLs of the initial voters).
    pub initial_members: Vec<(NodeId, crate::command::MemberRecord)>,
    /// The cluster id to record when bootstrapping.
    pub cluster_id: u64,
    /// Start with an empty store as a member added to a running cluster: no bootstrap; the
    /// leader sends the state (a snapshot) once the member has been added.
    pub join: bool,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Milliseconds per tick: the leader's lease clock counts in ticks.
    pub tick_ms: u64,
    /// Compact a replica's log once it holds more applied entries than this...
    pub log_entries_max: u64,
    /// ...keeping this many of the newest applied entries, so briefly lagging followers catch
    /// up from the log rather than by snapshot.
    pub log_entries_keep: u64,
    /// Largest batch of entries in one append message.
    pub append_bytes_max: u64,
    pub inflight_appends_max: usize,
    /// Records a compaction step examines: the leader proposes one step per tick while a
    /// compaction has versions left to delete.
    pub compaction_step_records: u64,
    /// Re-issue a ReadIndex request unanswered after this many ticks. raft-rs drops one it
    /// cannot serve (no leader known, or a new leader that has not yet committed an entry of its
    /// term), so the retry is what bounds the wait.
    pub read_retry_ticks: u64,
    /// Where raft-rs's own log records go (elections, rejections); discarded when `None`.
    pub raft_logger: Option<slog::Logger>,
    /// Derive randomized election timeouts from this seed instead of the OS random number
    /// generator raft-rs uses, so that a simulated run replays exactly.
    pub election_seed: Option<u64>,
    /// Report every applied entry in [`Output::applied`] (for the simulator's checkers).
    pub record_applied: bool,
    /// A deliberately broken behaviour, for proving that the simulator's checkers catch it.
    pub mutation: Mutation,
}

/// Deliberate bugs the simulator's tests (and a few in-process cluster tests) switch on to show
/// that their checks fail when they should. Production code never sets anything but `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    #[default]
    None,
    /// Write log entries and hard state without fsync, acknowledging them all the same.
    AckBeforeFsync,
    /// Skip the effect of one applied write (the first at index 10 or later) on this replica.
    SkipApply,
    /// Compact the Raft log in a buffered write, so that the log may lose entries whose
    /// application a power loss then takes back.
    CompactWithoutSync,
    /// Serve linearizable reads from the leader's lease (raft-rs `LeaseBased`), which trusts
    /// that clocks tick at the same rate.
    LeaseReads,
    /// Serve linearizable reads from the local state without ReadIndex. Acted on by the read
    /// path of the shell that serves clients, not by the node.
    ReadsWithoutReadIndex,
    /// Answer a lease keep-alive from the lease clock without first confirming leadership with
    /// a ReadIndex. Acted on by the driver.
    KeepAliveWithoutReadIndex,
    /// Let a follower's ReadIndex request join the leader's round already under way, whose
    /// commit index may predate the request, instead of the next one.
    RemoteReadsJoinRoundUnderWay,
    /// Answer a follower's ReadIndex request at once even before the leader has committed an
    /// entry of its term, when its commit index may be behind what its predecessor committed.
    RemoteReadsBeforeCommitInTerm,
}

impl Config {
    pub fn new(node_id: NodeId, epoch: u64, initial_voters: Vec<NodeId>) -> Self {
        Self {
            node_id,
            epoch,
            initial_voters,
            initial_members: Vec::new(),
            cluster_id: 0,
            join: false,
            election_ticks: 10,
            heartbeat_ticks: 1,
            tick_ms: 100,
            log_entries_max: 10_000,
            log_entries_keep: 2_000,
            append_bytes_max: 1024 * 1024,
            inflight_appends_max: 256,
            compaction_step_records: 10_000,
            read_retry_ticks: 3,
            raft_logger: None,
            election_seed: None,
            record_applied: false,
            mutation: Mutation::None,
        }
    }
}

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
}

/// An applied log entry, as the simulator's checkers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    pub range_id: RangeId,
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// A replica's state as request handlers need it, published after every round. Handlers read it
/// without locking the driver.
#[derive(Debug, Default)]
pub struct RangeShared {
    pub revision: AtomicI64,
    pub compact_revision: AtomicI64,
    /// Whether a compaction's deletions are still under way (`compaction --physical` waits).
    pub compaction_pending: AtomicBool,
    pub applied_index: AtomicU64,
    pub term: AtomicU64,
    pub leader_id: AtomicU64,
    pub commit_index: AtomicU64,
    /// Every key's newest version (the key index): apply batches read and extend it, readers
    /// use it to read a key's current version and to walk ranges (see `mvcc::memo`).
    pub memo: RwLock<Memo>,
}

impl RangeShared {
    /// The applied state readers may use.
    pub fn read_state(&self) -> AppliedState {
        AppliedState {
            applied_index: self.applied_index.load(Ordering::Acquire),
            applied_term: 0,
            revision: self.revision.load(Ordering::Acquire),
            compact_revision: self.compact_revision.load(Ordering::Acquire),
            compaction_pending: self.compaction_pending.load(Ordering::Acquire),
        }
    }
}

pub struct Node {
    config: Config,
    engine: Arc<dyn Engine>,
    replicas: BTreeMap<RangeId, Replica>,
    ticks: u64,
    next_read_ctx: u64,
    /// The sequence number of the next proposal (see `session`).
    next_sequence: u64,
    stats: Arc<NodeStats>,
}

impl Node {
    /// Opens the node's replicas from the engine, bootstrapping the first range if the store is
    /// empty and initial voters are configured.
    pub fn open(mut config: Config, engine: Arc<dyn Engine>) -> Result<Self> {
        let range_id = FIRST_RANGE_ID;
        let log = match RaftLog::load(engine.as_ref(), range_id)? {
            Some(log) => log,
            None if config.join => RaftLog::joining(range_id),
            None => {
                if config.initial_voters.is_empty() {
                    return Err(Error::Internal(
                        "empty store and no initial cluster to bootstrap".into(),
                    ));
                }
                let mut batch = WriteBatch::new();
                let log = RaftLog::bootstrap(range_id, config.initial_voters.clone(), &mut batch);
                for (id, member) in &config.initial_members {
                    use prost::Message as _;
                    batch.put(Keyspace::Mvcc, keys::member(*id), member.encode_to_vec());
                }
                batch.put(
                    Keyspace::Mvcc,
                    keys::cluster_id(),
                    config.cluster_id.to_be_bytes().to_vec(),
                );
                // Everything up to the log's starting point counts as applied (over the data
                // of a restored backup, if the store holds one).
                let applied = AppliedState {
                    applied_index: super::log::INIT_INDEX,
                    applied_term: super::log::INIT_TERM,
                    ..mvcc::load_applied_state(engine.as_ref(), range_id)?
                };
                batch.put(Keyspace::Meta, keys::range_applied(range_id), applied.encode());
                engine.write(&batch, Durability::Sync)?;
                log
            }
        };
        let applied = mvcc::load_applied_state(engine.as_ref(), range_id)?;
        let sessions = Sessions::load(engine.as_ref(), range_id)?;
        let mut log = log;
        // Everything committed or applied must still be in the log (or below its compaction
        // point). If not, the store lost a suffix it had acknowledged — a damaged journal —
        // and serving from it could lose writes: refuse, rather than let raft-rs panic.
        let last_index = log.last_index();
        let needed = log.hard_state().commit.max(applied.applied_index);
        if needed > last_index {
            return Err(Error::Storage(format!(
                "range {range_id}: the Raft log ends at index {last_index} but index {needed} was \
                 committed or applied; the store has lost acknowledged entries"
            )));
        }
        // Nor may the log have dropped entries that were never applied: they are gone for good.
        let compacted_to = log.first_index() - 1;
        if applied.applied_index < compacted_to {
            return Err(Error::Storage(format!(
                "range {range_id}: the Raft log was compacted to index {compacted_to} but only \
                 {} was applied; the store has lost applied state",
                applied.applied_index
            )));
        }
        // Epochs must grow from one start to the next, whatever the clock the caller took its
        // epoch from did: replicas skip proposals of an epoch older than one they applied.
        let last_epoch = match engine.get(Keyspace::Meta, &keys::node_epoch())? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Storage("malformed node epoch record".into()))?,
            ),
            None => 0,
        };
        config.epoch = config.epoch.max(last_epoch + 1);
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Meta, keys::node_epoch(), config.epoch.to_be_bytes().to_vec());
        engine.write(&batch, Durability::Sync)?;
        // The hard state's commit index is persisted lazily; what was applied was committed.
        if log.hard_state().commit < applied.applied_index {
            log.set_commit(applied.applied_index);
        }
        let raft_config = raft::Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: applied.applied_index,
            max_size_per_msg: config.append_bytes_max,
            max_inflight_msgs: config.inflight_appends_max,
            check_quorum: true,
            pre_vote: true,
            read_only_option: if config.mutation == Mutation::LeaseReads {
                ReadOnlyOption::LeaseBased
            } else {
                ReadOnlyOption::Safe
            },
            ..Default::default()
        };
        raft_config.validate().map_err(|e| Error::Internal(format!("raft config: {e}")))?;
        let logger = config
            .raft_logger
            .clone()
            .unwrap_or_else(|| slog::Logger::root(slog::Discard, slog::o!()));
        let raw = RawNode::new(&raft_config, log, &logger)
            .map_err(|e| Error::Internal(format!("cannot start raft: {e}")))?;
        let shared = Arc::new(RangeShared {
            memo: RwLock::new(Memo::load(engine.as_ref())?),
            ..RangeShared::default()
        });
        let mut replica = Replica {
            range_id,
            raw,
            applied,
            sessions,
            shared,
            unissued_reads: Vec::new(),
            unissued_remote_reads: Vec::new(),
            remote_answers: Vec::new(),
            pending_reads: Vec::new(),
            skip_apply: config.mutation == Mutation::SkipApply,
            awaiting_leave: None,
        };
        publish(&mut replica);
        let mut replicas = BTreeMap::new();
        replicas.insert(range_id, replica);
        let mut node = Self {
            config,
            engine,
            replicas,
            ticks: 0,
            next_read_ctx: 1,
            next_sequence: 1,
            stats: Arc::default(),
        };
        node.pin_election_timeouts();
        Ok(node)
    }

    /// With [`Config::election_seed`], replaces the election timeout raft-rs drew from the OS
    /// random number generator with one derived from the seed and the replica's observable
    /// state. raft-rs redraws only when it resets the replica (a new term, role or leader), and
    /// consults the timeout only on later ticks, so re-deriving after every call is enough.
    fn pin_election_timeouts(&mut self) {
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

    /// Advances logical time by one tick for every replica.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let retry_after = self.config.read_retry_ticks;
        for replica in self.replicas.values_mut() {
            replica.raw.tick();
            // A ReadIndex request can be lost (dropped message, leader change): re-issue it
            // under a fresh context. An answer to any copy releases the reads.
            for pending in &mut replica.pending_reads {
                if pending.index.is_none() && self.ticks - pending.issued_tick >= retry_after {
                    let ctx = self.next_read_ctx;
                    self.next_read_ctx += 1;
                    pending.issued_tick = self.ticks;
                    pending.ctxs.push(ctx);
                    replica.raw.read_index(read_ctx(&self.config, ctx));
                }
            }
            // Reads nobody can be waiting for any more (the shell's deadlines are far shorter)
            // are dropped, so a member without a leader does not accumulate them.
            let ticks = self.ticks;
            replica.pending_reads.retain(|p| ticks - p.created_tick < READ_EXPIRY_TICKS);
        }
        self.pin_election_timeouts();
    }

    /// Delivers a message from a peer. Messages for unknown ranges are dropped.
    pub fn step(&mut self, range_id: RangeId, mut message: Message) {
        if let Some(replica) = self.replicas.get_mut(&range_id) {
            // A leader never hands a follower's ReadIndex request to raft-rs, which would spend
            // a round of heartbeats on each (see `answer_remote_read`).
            if message.get_msg_type() == MessageType::MsgReadIndex
                && replica.raw.raft.state == StateRole::Leader
                && let Some(entry) = message.entries.first_mut()
            {
                let read = RemoteRead { from: message.from, ctx: std::mem::take(&mut entry.data) };
                answer_remote_read(replica, read, self.config.mutation);
                return;
            }
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

    /// Asks for a linearizable read; `read_id` appears in a later round's `reads_ready`.
    pub fn read_index(&mut self, range_id: RangeId, read_id: u64) {
        if let Some(replica) = self.replicas.get_mut(&range_id) {
            replica.unissued_reads.push(read_id);
        }
    }

    /// An image of a range's state machine as of the last round, for backups (see
    /// `snapshot::restore_as_new`). Between rounds the engine holds exactly what was applied.
    pub fn snapshot_image(&self, range_id: RangeId) -> Result<Vec<u8>> {
        let replica =
            self.replicas.get(&range_id).ok_or(Error::Internal("no such range".into()))?;
        snapshot::build(self.engine.as_ref(), replica.applied, &replica.sessions)
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
        self.replicas.values().any(|r| {
            r.raw.has_ready()
                || !r.unissued_reads.is_empty()
                || !r.unissued_remote_reads.is_empty()
                || !r.remote_answers.is_empty()
        })
    }

    /// Runs one round (see the module docs). A storage error is returned and the node must not
    /// be used afterwards: its in-memory state may be ahead of what is durable.
    pub fn process_ready(&mut self) -> Result<Output> {
        let mut early = Vec::new();
        let mut out = self.process_ready_sending(&mut |messages| early.extend(messages))?;
        early.append(&mut out.messages);
        out.messages = early;
        Ok(out)
    }

    /// Like [`Node::process_ready`], but hands the messages that need not wait for this round's
    /// fsync (a leader's appends, heartbeats) to `send_now` before writing, so followers persist
    /// in parallel with the leader instead of after it.
    pub fn process_ready_sending(
        &mut self,
        send_now: &mut dyn FnMut(Vec<OutMessage>),
    ) -> Result<Output> {
        let mut out = Output::default();
        let engine = self.engine.clone();

        // Issue this round's reads, this node's and the followers' it leads: one ReadIndex
        // request per replica for all of them.
        for replica in self.replicas.values_mut() {
            if !replica.unissued_reads.is_empty() || !replica.unissued_remote_reads.is_empty() {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                replica.raw.read_index(read_ctx(&self.config, ctx));
                replica.pending_reads.push(PendingRead {
                    ctxs: vec![ctx],
                    issued_tick: self.ticks,
                    created_tick: self.ticks,
                    index: None,
                    read_ids: std::mem::take(&mut replica.unissued_reads),
                    remote: std::mem::take(&mut replica.unissued_remote_reads),
                });
            }
        }

        // Followers' requests confirmed on arrival (see `answer_remote_read`) are answered now.
        for replica in self.replicas.values_mut() {
            if !replica.remote_answers.is_empty() {
                send_now(
                    wrap(replica.range_id, std::mem::take(&mut replica.remote_answers)).collect(),
                );
            }
        }

        // 1 + 2: gather readies and persist them together.
        let mut log_batch = WriteBatch::new();
        let mut must_sync = false;
        let mut readies = Vec::new();
        let mut restored = Vec::new();
        for replica in self.replicas.values_mut() {
            if !replica.raw.has_ready() {
                continue;
            }
            let mut ready = replica.raw.ready();
            let immediate: Vec<OutMessage> =
                wrap(replica.range_id, ready.take_messages()).collect();
            if !immediate.is_empty() {
                send_now(immediate);
            }
            if !ready.snapshot().is_empty() {
                restore_snapshot(engine.as_ref(), replica, ready.snapshot(), &mut log_batch)?;
                restored.push(replica.range_id);
                bump(&self.stats.snapshots_applied, 1);
                out.members_changed = true;
            }
            if !ready.entries().is_empty() {
                self.stats.log_batch_entries.observe(ready.entries().len() as f64);
            }
            replica.raw.store().persist_entries(ready.entries(), &mut log_batch);
            if let Some(hard_state) = ready.hs() {
                replica.raw.store().persist_hard_state(hard_state, &mut log_batch);
            }
            let (id, term) = (replica.raw.raft.id, replica.raw.raft.term);
            let mut answers = Vec::new();
            for read_state in ready.take_read_states() {
                let Some(ctx) = own_read_ctx(&self.config, &read_state.request_ctx) else {
                    continue;
                };
                if let Some(pending) =
                    replica.pending_reads.iter_mut().find(|p| p.ctxs.contains(&ctx))
                {
                    pending.index = Some(read_state.index);
                    let remote = std::mem::take(&mut pending.remote).into_iter();
                    answers.extend(
                        remote.map(|read| read_index_answer(id, term, read, read_state.index)),
                    );
                }
            }
            if !answers.is_empty() {
                send_now(wrap(replica.range_id, answers).collect());
            }
            must_sync |= ready.must_sync();
            readies.push((replica.range_id, ready));
        }
        // New entries, votes and snapshots are written now, before the messages that rely on
        // them go. A new commit index alone (most of what a follower learns) needs no fsync and
        // goes with the applied changes, in one write.
        let mut apply_batch = WriteBatch::new();
        if (must_sync || !restored.is_empty()) && !log_batch.is_empty() {
            // Synced even when only a snapshot was restored (raft-rs may not ask): its data must
            // be durable before its log reset, which the engine orders only for a synced write.
            let sync = self.config.mutation != Mutation::AckBeforeFsync;
            let durability = if sync { Durability::Sync } else { Durability::Buffered };
            engine.write(&log_batch, durability)?;
        } else {
            apply_batch = log_batch;
        }
        // A restored snapshot's data is in the engine now: its replica's memo can be loaded.
        for range_id in restored {
            let replica = self.replicas.get(&range_id).expect("restored replica");
            replica.shared.memo.write().expect("memo lock").reload(engine.as_ref())?;
        }

        // 3: advance and apply.
        for (range_id, mut ready) in readies {
            let replica = self.replicas.get_mut(&range_id).expect("replica of a ready");
            replica.raw.mut_store().append(ready.entries());
            if let Some(hard_state) = ready.hs() {
                replica.raw.mut_store().set_hard_state(hard_state.clone());
            }
            out.messages.extend(wrap(range_id, ready.take_persisted_messages()));
            let mut committed = ready.take_committed_entries();
            // Not `advance`, which would tell raft-rs that this ready's entries were applied
            // before they are: raft-rs leaves a joint configuration when the leader applies it,
            // and would then leave it twice. Step 4 reports what was applied.
            let mut light = replica.raw.advance_append(ready);
            if let Some(commit) = light.commit_index() {
                replica.raw.mut_store().set_commit(commit);
            }
            out.messages.extend(wrap(range_id, light.take_messages()));
            committed.extend(light.take_committed_entries());
            if !committed.is_empty() {
                bump(&self.stats.entries_applied, committed.len() as u64);
                self.stats.apply_batch_entries.observe(committed.len() as f64);
            }
            if self.config.record_applied {
                let applied_index = replica.applied.applied_index;
                out.applied.extend(committed.iter().filter(|e| e.index > applied_index).map(|e| {
                    AppliedEntry { range_id, index: e.index, term: e.term, data: e.data.to_vec() }
                }));
            }
            let (completions, leases) = replica.apply_entries(
                engine.as_ref(),
                &committed,
                self.config.node_id,
                self.config.epoch,
                &mut apply_batch,
                &mut out.members_changed,
            )?;
            out.completions.extend(completions);
            out.lease_changes.extend(leases.into_iter().map(|change| (range_id, change)));
            // Raise the compaction floor before the compaction's deletions become visible, so a
            // concurrent reader below it notices (see the server's read path).
            replica
                .shared
                .compact_revision
                .fetch_max(replica.applied.compact_revision, Ordering::AcqRel);
        }
        let mut compacted = false;
        for replica in self.replicas.values_mut() {
            let applied = replica.applied.applied_index;
            let (first, keep) = (replica.raw.store().first_index(), self.config.log_entries_keep);
            if applied >= first && applied - first + 1 > self.config.log_entries_max {
                let index = applied.saturating_sub(keep);
                compacted |= replica.raw.mut_store().compact(index, &mut apply_batch);
            }
        }
        if !apply_batch.is_empty() {
            // Entries leave the log only once their application is durable: the engine makes a
            // synced batch's state machine part durable before it writes the log's part.
            let sync = compacted && self.config.mutation != Mutation::CompactWithoutSync;
            let durability = if sync { Durability::Sync } else { Durability::Buffered };
            engine.write(&apply_batch, durability)?;
        }

        // 4: publish, release reads, prepare requested snapshots.
        bump(&self.stats.rounds, 1);
        for replica in self.replicas.values_mut() {
            replica.raw.advance_apply_to(replica.applied.applied_index);
            leave_joint_if_stuck(replica);
            let leader_before = replica.shared.leader_id.load(Ordering::Acquire);
            publish(replica);
            if replica.shared.leader_id.load(Ordering::Acquire) != leader_before {
                bump(&self.stats.leader_changes, 1);
            }
            let applied = replica.applied.applied_index;
            replica.pending_reads.retain(|pending| match pending.index {
                Some(index) if index <= applied => {
                    out.reads_ready.extend(&pending.read_ids);
                    false
                }
                _ => true,
            });
            if replica.raw.store().take_snapshot_request() {
                let data = snapshot::build(engine.as_ref(), replica.applied, &replica.sessions)?;
                let metadata = SnapshotMetadata {
                    conf_state: Some(replica.raw.store().conf_state().clone()),
                    index: replica.applied.applied_index,
                    term: replica.applied.applied_term,
                };
                replica
                    .raw
                    .store()
                    .set_prepared_snapshot(Snapshot { data, metadata: Some(metadata) });
            }
        }
        self.pin_election_timeouts();
        Ok(out)
    }
}

/// Answers a follower's ReadIndex request on the leader, or queues it for the leader's next
/// round of reads.
///
/// The request itself confirms this leadership when the leader and the follower together are a
/// quorum (any two of three voters): the follower sent it after its read began, while it
/// followed this leader in a term no later than the leader's current one. A write acknowledged
/// before the read began was committed in some term; had it been a later term than this
/// leader's, a quorum would have accepted that term before the read began, and every quorum
/// includes one of the two, neither of which had. So the write's term is at most this leader's,
/// and its log holds the write below its commit index — once that index is in its own term,
/// which raft-rs also requires before it answers a read. The same holds for what any earlier
/// read returned. Otherwise a round of heartbeats confirms the request: the leader's next,
/// never one under way, whose commit index may predate the request.
fn answer_remote_read(replica: &mut Replica, read: RemoteRead, mutation: Mutation) {
    let raft = &replica.raw.raft;
    // raft-rs's own hasher, named by inference.
    let quorum: std::collections::HashSet<u64, _> = [raft.id, read.from].into_iter().collect();
    let in_term =
        raft.commit_to_current_term() || mutation == Mutation::RemoteReadsBeforeCommitInTerm;
    if in_term && raft.prs().has_quorum(&quorum) {
        let index = raft.raft_log.committed;
        let answer = read_index_answer(raft.id, raft.term, read, index);
        replica.remote_answers.push(answer);
    } else if mutation == Mutation::RemoteReadsJoinRoundUnderWay
        && let Some(round) = replica.pending_reads.iter_mut().rev().find(|p| p.index.is_none())
    {
        round.remote.push(read);
    } else {
        replica.unissued_remote_reads.push(read);
    }
}

/// What raft-rs's leader answers a follower's ReadIndex request with: the confirmed commit
/// index, in the leader's term (the entry there is of that term, so the follower may commit up
/// to it as well).
fn read_index_answer(from: NodeId, term: u64, read: RemoteRead, index: u64) -> Message {
    let mut answer = Message { to: read.from, from, term, index, ..Default::default() };
    answer.set_msg_type(MessageType::MsgReadIndexResp);
    answer.entries = vec![Entry { data: read.ctx, ..Default::default() }];
    answer
}

/// Pending reads older than this many ticks are dropped.
const READ_EXPIRY_TICKS: u64 = 300;

/// A ReadIndex context: unique across nodes and process restarts, because the leader keys
/// pending reads by context alone and a reused one could release a new read with an old answer.
fn read_ctx(config: &Config, counter: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(24);
    ctx.extend_from_slice(&config.node_id.to_be_bytes());
    ctx.extend_from_slice(&config.epoch.to_be_bytes());
    ctx.extend_from_slice(&counter.to_be_bytes());
    ctx
}

/// The counter of a context this node and process issued, if it is one.
fn own_read_ctx(config: &Config, ctx: &[u8]) -> Option<u64> {
    let mine = read_ctx(config, 0);
    if ctx.len() != mine.len() || ctx[..16] != mine[..16] {
        return None;
    }
    Some(u64::from_be_bytes(ctx[16..].try_into().ok()?))
}

fn wrap(range_id: RangeId, messages: Vec<Message>) -> impl Iterator<Item = OutMessage> {
    messages.into_iter().map(move |message| OutMessage { range_id, message })
}

fn restore_snapshot(
    engine: &dyn Engine,
    replica: &mut Replica,
    snapshot: &Snapshot,
    batch: &mut WriteBatch,
) -> Result<()> {
    let metadata = snapshot.metadata.clone().unwrap_or_default();
    let (applied, sessions) = snapshot::restore(engine, replica.range_id, &snapshot.data, batch)?;
    replica.sessions = sessions;
    replica.shared.memo.write().expect("memo lock").clear();
    assert_eq!(applied.applied_index, metadata.index, "snapshot data and metadata disagree");
    replica.raw.mut_store().apply_snapshot(&metadata, batch);
    replica.applied = applied;
    replica.shared.compact_revision.fetch_max(applied.compact_revision, Ordering::AcqRel);
    Ok(())
}

fn publish(replica: &mut Replica) {
    let shared = &replica.shared;
    let status = replica.raw.status();
    shared.revision.store(replica.applied.revision, Ordering::Release);
    shared.compact_revision.store(replica.applied.compact_revision, Ordering::Release);
    shared.compaction_pending.store(replica.applied.compaction_pending, Ordering::Release);
    shared.applied_index.store(replica.applied.applied_index, Ordering::Release);
    shared.term.store(status.hs.term, Ordering::Release);
    shared.commit_index.store(status.hs.commit, Ordering::Release);
    let leader = if status.ss.raft_state == StateRole::Leader {
        replica.raw.raft.id
    } else {
        status.ss.leader_id
    };
    shared.leader_id.store(leader, Ordering::Release);
}
