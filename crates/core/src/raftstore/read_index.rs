//! ReadIndex: how a replica learns that it may serve a linearizable read from its own state.
//!
//! Reads that arrive between two rounds share one ReadIndex request (raft-rs
//! `ReadOnlyOption::Safe`): the leader confirms with a heartbeat quorum that it still leads and
//! names its commit index; the reads are released once the local replica has applied that
//! index. No clock is trusted: a paused or drifting leader must hear from a quorum after the
//! read arrived.
//!
//! Three refinements, each found necessary:
//! * **Retry under a fresh context.** raft-rs drops a request it cannot serve (no leader known,
//!   or a new leader without a committed entry in its term), so an unanswered request is issued
//!   again after `Config::read_retry_ticks`. A fresh context, because raft-rs confirms a context
//!   by the heartbeat acknowledgements carrying it and releases every request queued before
//!   it: a context asked for again could be released by a late acknowledgement of an earlier
//!   round. (Found by the simulator: stale reads after a pause.)
//! * **Contexts unique across nodes and restarts** ([`Contexts`]): the leader keys pending
//!   reads by context alone, and a reused one could release a new read with an old answer.
//! * **A follower's request costs the leader no heartbeat round of its own**
//!   ([`step_remote_request`]): it is answered at once when the two are a quorum, or joins the
//!   leader's next round of reads.
//!
//! In a range whose revisions come from the revision oracle a read carries a **read
//! timestamp**, and ReadIndex is its `ReadAt` (`docs/design/revisions.md`, rule 4): the
//! leader raises the highest read timestamp it answered for (so it stamps no write at or below
//! it from then on; see `stamping`) and answers with its **last** log index rather than its
//! commit index, since entries stamped at or below the timestamp may be appended and not yet
//! committed. The timestamp rides in the request's context.

use raft::StateRole;
use raft::prelude::{Entry, Message, MessageType, ReadState};

use super::config::{Config, Mutation};
use super::replica::Replica;
use crate::NodeId;

/// Pending reads older than this many ticks are dropped: nobody can be waiting for them any
/// more (the shell's deadlines are far shorter), and a member without a leader must not
/// accumulate them.
const READ_EXPIRY_TICKS: u64 = 300;

/// A replica's reads, from arrival to release.
#[derive(Default)]
pub(crate) struct Reads {
    /// Reads asked for since the last round; they share the next ReadIndex request.
    unissued: Vec<u64>,
    /// The highest read timestamp among them (0: none).
    unissued_ts: i64,
    /// Followers' ReadIndex requests since the last round, for the same request.
    unissued_remote: Vec<RemoteRead>,
    /// Answers to followers' requests this leader confirmed on arrival, sent with the next round.
    remote_answers: Vec<Message>,
    /// Issued requests, oldest first.
    pending: Vec<PendingRead>,
}

/// A batch of reads waiting on one ReadIndex request.
struct PendingRead {
    /// The counter parts of the contexts it was issued under: a retry takes a fresh one, and an
    /// answer to any of them releases the reads.
    ctxs: Vec<u64>,
    issued_tick: u64,
    created_tick: u64,
    /// The commit index the leader confirmed; the reads run once it is applied.
    index: Option<u64>,
    /// The read timestamp the reads carry (0: none), and on a leader the last log index when it
    /// raised its highest read timestamp to it: the reads run once that is applied too.
    read_ts: i64,
    min_index: u64,
    read_ids: Vec<u64>,
    /// Followers' requests confirmed by the same round; answered as soon as it is.
    remote: Vec<RemoteRead>,
}

/// A follower's ReadIndex request, on its leader.
struct RemoteRead {
    from: NodeId,
    /// The follower's context, which its answer must carry back.
    ctx: Vec<u8>,
    /// The least index to answer with: the last log index when a read timestamp came with it.
    min_index: u64,
}

/// ReadIndex contexts: this node's id, its process epoch and a counter.
pub(crate) struct Contexts {
    node_id: NodeId,
    epoch: u64,
    next: u64,
}

impl Contexts {
    pub fn new(config: &Config) -> Self {
        Self { node_id: config.node_id, epoch: config.epoch, next: 1 }
    }

    /// A fresh context: its counter, and the bytes raft-rs carries (with the read timestamp,
    /// if the reads have one).
    fn issue(&mut self, read_ts: i64) -> (u64, Vec<u8>) {
        let counter = self.next;
        self.next += 1;
        let mut ctx = self.encode(counter);
        if read_ts > 0 {
            ctx.extend_from_slice(&read_ts.to_be_bytes());
        }
        (counter, ctx)
    }

    fn encode(&self, counter: u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(32);
        ctx.extend_from_slice(&self.node_id.to_be_bytes());
        ctx.extend_from_slice(&self.epoch.to_be_bytes());
        ctx.extend_from_slice(&counter.to_be_bytes());
        ctx
    }

    /// The counter of a context this node and process issued, if it is one.
    fn own(&self, ctx: &[u8]) -> Option<u64> {
        let mine = self.encode(0);
        if ![24, 32, 40].contains(&ctx.len()) || ctx[..16] != mine[..16] {
            return None;
        }
        Some(u64::from_be_bytes(ctx[16..24].try_into().ok()?))
    }
}

/// The read timestamp a context carries (0: none).
fn read_ts_of(ctx: &[u8]) -> i64 {
    ctx.get(24..32).and_then(|ts| ts.try_into().ok()).map_or(0, i64::from_be_bytes)
}

/// The last log index a leader appended to a timestamped context in its answer (0: none). It
/// travels in the context, not as the answer's index: raft-rs commits a follower up to that
/// index, which must stay the confirmed commit index.
fn min_index_of(ctx: &[u8]) -> u64 {
    ctx.get(32..40).and_then(|i| i.try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// Raises a leader's highest answered read timestamp to `read_ts`; returns the least index the
/// read must wait for: the last log index, below which every entry stamped at or below
/// `read_ts` lies (rule 4; stamping refuses lower blocks from now on).
fn raise(replica: &mut Replica, read_ts: i64, mutation: Mutation) -> u64 {
    if read_ts <= 0 {
        return 0;
    }
    let stamping = &mut replica.stamping;
    stamping.max_read_ts = stamping.max_read_ts.max(read_ts);
    if mutation == Mutation::ReadAtCommitIndex {
        return 0;
    }
    replica.raw.raft.raft_log.last_index()
}

impl Reads {
    /// A read to confirm; with a read timestamp, in a range taking revisions from the oracle.
    pub fn push(&mut self, read_id: u64, read_ts: Option<i64>) {
        self.unissued.push(read_id);
        self.unissued_ts = self.unissued_ts.max(read_ts.unwrap_or(0));
    }

    /// Whether the next round has something to issue or send.
    pub fn has_work(&self) -> bool {
        !self.unissued.is_empty()
            || !self.unissued_remote.is_empty()
            || !self.remote_answers.is_empty()
    }

    /// Answers to followers' requests confirmed on arrival, to send now.
    pub fn take_remote_answers(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.remote_answers)
    }
}

/// At the start of a round: one ReadIndex request for every read that arrived since the last,
/// this node's and the followers' it leads.
pub(super) fn issue(
    replica: &mut Replica,
    contexts: &mut Contexts,
    ticks: u64,
    mutation: Mutation,
) {
    if replica.reads.unissued.is_empty() && replica.reads.unissued_remote.is_empty() {
        return;
    }
    let read_ts = std::mem::take(&mut replica.reads.unissued_ts);
    // A leader raises its read timestamp now; a follower's leader does on the request.
    let min_index = if replica.raw.raft.state == StateRole::Leader {
        raise(replica, read_ts, mutation)
    } else {
        0
    };
    let (counter, ctx) = contexts.issue(read_ts);
    replica.raw.read_index(ctx);
    let reads = &mut replica.reads;
    reads.pending.push(PendingRead {
        ctxs: vec![counter],
        issued_tick: ticks,
        created_tick: ticks,
        index: None,
        read_ts,
        min_index,
        read_ids: std::mem::take(&mut reads.unissued),
        remote: std::mem::take(&mut reads.unissued_remote),
    });
}

/// On a tick: issues again, under a fresh context, every request unanswered for
/// `read_retry_ticks` (it may have been lost to a dropped message or a leader change; an answer
/// to any copy releases the reads), and drops reads nobody can be waiting for.
pub(super) fn retry(replica: &mut Replica, contexts: &mut Contexts, ticks: u64, retry_after: u64) {
    for pending in &mut replica.reads.pending {
        if pending.index.is_none() && ticks - pending.issued_tick >= retry_after {
            let (counter, ctx) = contexts.issue(pending.read_ts);
            pending.issued_tick = ticks;
            pending.ctxs.push(counter);
            replica.raw.read_index(ctx);
        }
    }
    replica.reads.pending.retain(|p| ticks - p.created_tick < READ_EXPIRY_TICKS);
}

/// Records the commit indexes raft-rs confirmed this round; returns the answers to the
/// followers' requests they confirmed.
pub(super) fn confirm(
    replica: &mut Replica,
    contexts: &Contexts,
    read_states: Vec<ReadState>,
) -> Vec<Message> {
    let (id, term) = (replica.raw.raft.id, replica.raw.raft.term);
    let mut answers = Vec::new();
    for read_state in read_states {
        let Some(counter) = contexts.own(&read_state.request_ctx) else { continue };
        if let Some(pending) = replica.reads.pending.iter_mut().find(|p| p.ctxs.contains(&counter))
        {
            pending.index = Some(read_state.index);
            // A follower's read learns its leader's last index from the answer's context.
            pending.min_index = pending.min_index.max(min_index_of(&read_state.request_ctx));
            let remote = std::mem::take(&mut pending.remote).into_iter();
            answers.extend(remote.map(|read| answer(id, term, read, read_state.index)));
        }
    }
    answers
}

/// After applying: the reads whose confirmed index is now applied may be served.
pub(super) fn release(replica: &mut Replica, ready: &mut Vec<u64>) {
    let applied = replica.applied.applied_index;
    replica.reads.pending.retain(|pending| match pending.index {
        Some(index) if index.max(pending.min_index) <= applied => {
            ready.extend(&pending.read_ids);
            false
        }
        _ => true,
    });
}

/// Takes a follower's ReadIndex request on a leader; gives the message back otherwise, for
/// raft-rs. A leader never hands a follower's request to raft-rs, which would spend a round of
/// heartbeats on each.
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
pub(super) fn step_remote_request(
    replica: &mut Replica,
    mut message: Message,
    mutation: Mutation,
) -> Option<Message> {
    if message.get_msg_type() != MessageType::MsgReadIndex
        || replica.raw.raft.state != StateRole::Leader
    {
        return Some(message);
    }
    let Some(entry) = message.entries.first_mut() else { return Some(message) };
    let ctx = std::mem::take(&mut entry.data);
    let min_index = raise(replica, read_ts_of(&ctx), mutation);
    let read = RemoteRead { from: message.from, ctx, min_index };
    let raft = &replica.raw.raft;
    // raft-rs's own hasher, named by inference.
    let quorum: std::collections::HashSet<u64, _> = [raft.id, read.from].into_iter().collect();
    let in_term =
        raft.commit_to_current_term() || mutation == Mutation::RemoteReadsBeforeCommitInTerm;
    let reads = &mut replica.reads;
    if in_term && raft.prs().has_quorum(&quorum) {
        let index = raft.raft_log.committed;
        reads.remote_answers.push(answer(raft.id, raft.term, read, index));
    } else if mutation == Mutation::RemoteReadsJoinRoundUnderWay
        && let Some(round) = reads.pending.iter_mut().rev().find(|p| p.index.is_none())
    {
        round.remote.push(read);
    } else {
        reads.unissued_remote.push(read);
    }
    None
}

/// What raft-rs's leader answers a follower's ReadIndex request with: the confirmed commit
/// index, in the leader's term (the entry there is of that term, so the follower may commit up
/// to it as well); and, for a timestamped read, the last index to wait for, in the context.
fn answer(from: NodeId, term: u64, read: RemoteRead, index: u64) -> Message {
    let mut answer = Message { to: read.from, from, term, index, ..Default::default() };
    answer.set_msg_type(MessageType::MsgReadIndexResp);
    let mut ctx = read.ctx;
    if ctx.len() == 32 {
        ctx.extend_from_slice(&read.min_index.to_be_bytes());
    }
    answer.entries = vec![Entry { data: ctx, ..Default::default() }];
    answer
}
