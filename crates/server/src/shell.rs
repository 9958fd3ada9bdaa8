//! The I/O shell around a [`Node`]: one thread that owns every replica of the node.
//!
//! Request handlers and the transport talk to it through one bounded channel ([`ShellHandle`]);
//! it answers through oneshot channels. Each loop iteration drains what has arrived, ticks the
//! replicas when a tick is due, and runs one round of `Node::process_ready`, so everything that
//! arrived together is persisted with one fsync.
//!
//! Why a thread and not a task: a round blocks on fsync, and the node must never stall the
//! async runtime that serves clients. Why one channel: it makes the order of inputs explicit
//! and gives one place to bound them; at the limit, requests fail fast with "too many
//! requests" and Raft messages are dropped (Raft retransmits).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::time::{Duration, Instant};

use strata_core::command::Request;
use strata_core::mvcc::Response;
use strata_core::raftstore::{
    Answers, Driver, Message, Node, NodeMessage, OutMessage, RangeShared, SharedRanges,
};
use strata_core::range::META_RANGE_ID;
use strata_core::{Error, RangeId};
use tokio::sync::{Notify, oneshot};

use crate::timed_engine::Timings;

/// Inputs queued for the shell before requests are refused.
const INPUT_QUEUE_MAX: usize = 16_384;
/// Inputs handled per loop iteration at most, so ticks are never starved.
const INPUTS_PER_ROUND_MAX: usize = 4_096;

pub enum Input {
    Propose {
        range_id: RangeId,
        request: Request,
        deadline: Instant,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    Read {
        range_id: RangeId,
        /// A read timestamp already taken, for a read over several ranges.
        read_ts: Option<i64>,
        deadline: Instant,
        reply: ReadReply,
    },
    /// A fresh revision from the oracle (`Driver::revision`).
    Revision {
        deadline: Instant,
        reply: ReadReply,
    },
    Raft {
        range_id: RangeId,
        message: Message,
    },
    /// A message from another node's driver (an ask of the revision oracle, or its answer).
    Node(NodeMessage),
    Unreachable {
        range_id: RangeId,
        peer: u64,
    },
    SnapshotStatus {
        range_id: RangeId,
        peer: u64,
        delivered: bool,
    },
    /// Renew a lease (leader only, once leadership is confirmed): its TTL, or 0 if it does not
    /// exist.
    LeaseKeepAlive {
        id: i64,
        deadline: Instant,
        reply: KeepAliveReply,
    },
    /// An image of the state machine between rounds, for a backup (see `Node::backup_image`).
    Snapshot {
        revision: i64,
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    },
    /// Whether a learner has caught up enough to be promoted (the meta range's leader only).
    LearnerReady {
        id: u64,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    /// Hand the meta range's leadership to another voter (its leader only).
    TransferLeader {
        target: u64,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Hand the leadership of every range this member leads to another voter, before
    /// stopping: the ranges handed over, with their targets.
    HandOver {
        reply: oneshot::Sender<Vec<(RangeId, u64)>>,
    },
    /// A lease's remaining and granted TTL (leader only).
    LeaseTimeToLive {
        id: i64,
        reply: oneshot::Sender<Result<Option<(i64, i64)>, Error>>,
    },
}

/// Where the shell sends messages for peers (the transport).
pub trait Outbox: Send + 'static {
    fn send(&mut self, messages: Vec<OutMessage>);

    /// Sends messages to other nodes' drivers.
    fn send_node(&mut self, _messages: Vec<NodeMessage>) {}

    /// The peers to send to (and accept streams from) from now on, after a membership change:
    /// `(member id, peer URL)`; and the cluster's id, once this member's store records it.
    fn set_peers(&mut self, _peers: &[(u64, String)], _cluster_id: Option<u64>) {}
}

/// A cloneable handle to a running shell.
#[derive(Clone)]
pub struct ShellHandle {
    tx: SyncSender<Input>,
    shared: SharedRanges,
    applied: Arc<Notify>,
}

impl ShellHandle {
    pub fn try_send(&self, input: Input) -> Result<(), Error> {
        self.tx.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) => Error::TooManyRequests,
            TrySendError::Disconnected(_) => Error::Stopped,
        })
    }

    /// The shared state of the node's replica of a range, if it holds one.
    pub fn shared(&self, range_id: RangeId) -> Option<Arc<RangeShared>> {
        self.shared.get(range_id)
    }

    /// Every range the node holds, as handlers follow them.
    pub fn shared_ranges(&self) -> &SharedRanges {
        &self.shared
    }

    /// Notified whenever the node's frontier moves (what the watch feeder waits for).
    pub fn applied(&self) -> Arc<Notify> {
        self.applied.clone()
    }

    /// Proposes a request and waits for it to be applied (or to fail).
    pub async fn propose(
        &self,
        range_id: RangeId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let (reply, rx) = oneshot::channel();
        let deadline = now() + timeout;
        self.try_send(Input::Propose { range_id, request, deadline, reply })?;
        answer(rx, timeout).await
    }

    /// Renews a lease on this member, which must be the leader.
    pub async fn lease_keep_alive(&self, id: i64, timeout: Duration) -> Result<i64, Error> {
        let (reply, rx) = oneshot::channel();
        let deadline = now() + timeout;
        self.try_send(Input::LeaseKeepAlive { id, deadline, reply })?;
        answer(rx, timeout).await
    }

    /// A lease's remaining and granted TTL, from this member, which must be the leader.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>, Error> {
        let (reply, rx) = oneshot::channel();
        self.try_send(Input::LeaseTimeToLive { id, reply })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// An image of the state machine, consistent as of a round boundary; with several ranges,
    /// cut at `revision` (see `Node::backup_image`).
    pub async fn snapshot_image(&self, revision: i64) -> Result<Vec<u8>, Error> {
        let (reply, rx) = oneshot::channel();
        self.try_send(Input::Snapshot { revision, reply })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Whether learner `id` may be promoted; this member must be the leader.
    pub async fn learner_ready(&self, id: u64) -> Result<bool, Error> {
        let (reply, rx) = oneshot::channel();
        self.try_send(Input::LearnerReady { id, reply })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Starts handing leadership to `target`; this member must be the leader.
    pub async fn transfer_leader(&self, target: u64) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.try_send(Input::TransferLeader { target, reply })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Hands the leadership of every range this member leads to another voter (see
    /// `Node::hand_over`); answers with the ranges handed over and their targets.
    pub async fn hand_over(&self) -> Result<Vec<(RangeId, u64)>, Error> {
        let (reply, rx) = oneshot::channel();
        self.try_send(Input::HandOver { reply })?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Waits until a linearizable read may be served from the local state machine; with a read
    /// timestamp, in a range taking its revisions from the revision oracle (serve it at that).
    pub async fn read_index(
        &self,
        range_id: RangeId,
        timeout: Duration,
    ) -> Result<Option<i64>, Error> {
        let (reply, rx) = oneshot::channel();
        let deadline = now() + timeout;
        self.try_send(Input::Read { range_id, read_ts: None, deadline, reply })?;
        answer(rx, timeout).await
    }

    /// [`Self::read_index`] at a read timestamp already taken (in a range taking its revisions
    /// from the oracle).
    pub async fn read_index_at(
        &self,
        range_id: RangeId,
        read_ts: i64,
        timeout: Duration,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        let deadline = now() + timeout;
        self.try_send(Input::Read { range_id, read_ts: Some(read_ts), deadline, reply })?;
        answer(rx, timeout).await.map(|_| ())
    }

    /// A revision from the oracle that nobody else is given (a commit revision).
    pub async fn revision(&self, timeout: Duration) -> Result<i64, Error> {
        let (reply, rx) = oneshot::channel();
        let deadline = now() + timeout;
        self.try_send(Input::Revision { deadline, reply })?;
        let revision = answer(rx, timeout).await?;
        revision.ok_or_else(|| Error::Internal("the oracle granted no revision".into()))
    }
}

/// The time deadlines are measured in: the system clock, or the simulated clock of a test
/// runtime with paused time (see [`spawn_task`]).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Waits for the answer to an input that carries a deadline. The shell enforces the deadline;
/// the extra second only guards against a lost reply.
async fn answer<A>(rx: oneshot::Receiver<Result<A, Error>>, timeout: Duration) -> Result<A, Error> {
    match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::Stopped),
        Err(_) => Err(Error::Timeout),
    }
}

type WriteReply = oneshot::Sender<Result<Response, Error>>;
type ReadReply = oneshot::Sender<Result<Option<i64>, Error>>;
type KeepAliveReply = oneshot::Sender<Result<i64, Error>>;

pub struct Shell<O: Outbox> {
    driver: Driver<Instant, WriteReply, ReadReply, KeepAliveReply>,
    outbox: O,
    rx: Receiver<Input>,
    tick_interval: Duration,
    /// The leader known after the last round, to log changes.
    last_leader: u64,
    applied: Arc<Notify>,
    /// The node's frontier the last time `applied` was notified.
    last_frontier: i64,
    timings: Arc<Timings>,
}

/// Starts the shell thread. It runs until every handle is dropped or storage fails; a storage
/// failure stops the process (see `run`).
pub fn spawn<O: Outbox>(
    node: Node,
    outbox: O,
    tick_interval: Duration,
    timings: Arc<Timings>,
) -> std::io::Result<(ShellHandle, std::thread::JoinHandle<()>)> {
    let (handle, mut shell) = Shell::new(node, outbox, tick_interval, timings);
    let thread =
        std::thread::Builder::new().name("strata-raftstore".into()).spawn(move || shell.run())?;
    Ok((handle, thread))
}

/// Starts the shell as a task on the current tokio runtime instead of a thread, checking for
/// inputs every millisecond of the runtime's clock. For tests that run nodes on a simulated
/// network and clock (turmoil), where every part of a node must follow that clock; the
/// production path is [`spawn`].
pub fn spawn_task<O: Outbox>(
    node: Node,
    outbox: O,
    tick_interval: Duration,
    timings: Arc<Timings>,
) -> ShellHandle {
    let (handle, mut shell) = Shell::new(node, outbox, tick_interval, timings);
    tokio::spawn(async move { shell.run_polling().await });
    handle
}

impl<O: Outbox> Shell<O> {
    fn new(
        node: Node,
        outbox: O,
        tick_interval: Duration,
        timings: Arc<Timings>,
    ) -> (ShellHandle, Self) {
        let (tx, rx) = sync_channel(INPUT_QUEUE_MAX);
        let shared = node.shared_ranges();
        let applied = Arc::new(Notify::new());
        let shell = Shell {
            driver: Driver::new(node),
            outbox,
            rx,
            tick_interval,
            last_leader: 0,
            applied: applied.clone(),
            last_frontier: 0,
            timings,
        };
        (ShellHandle { tx, shared, applied }, shell)
    }

    fn run(&mut self) {
        let mut next_tick = Instant::now() + self.tick_interval;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(input) => {
                    self.handle(input);
                    for _ in 1..INPUTS_PER_ROUND_MAX {
                        match self.rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= next_tick {
                let answers = self.driver.tick(now);
                deliver(answers);
                next_tick = now + self.tick_interval;
            }
            self.round();
        }
    }

    async fn run_polling(&mut self) {
        let mut next_tick = now() + self.tick_interval;
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            loop {
                match self.rx.try_recv() {
                    Ok(input) => self.handle(input),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = now();
            if now >= next_tick {
                deliver(self.driver.tick(now));
                next_tick = now + self.tick_interval;
            }
            self.round();
        }
    }

    fn round(&mut self) {
        let outbox = &mut self.outbox;
        let started = Instant::now();
        match self.driver.round(&mut |messages| outbox.send(messages)) {
            Ok(None) => {}
            Ok(Some((output, answers))) => {
                self.timings.round.observe(started.elapsed().as_secs_f64());
                // Answers first: what is left to send now (a follower's acknowledgements) is
                // rarely on a waiting client's path, and the reply is.
                deliver(answers);
                if !output.messages.is_empty() {
                    self.outbox.send(output.messages);
                }
                if !output.node_messages.is_empty() {
                    self.outbox.send_node(output.node_messages);
                }
                self.log_leadership();
                self.notify_applied();
                if output.members_changed {
                    self.follow_members();
                }
            }
            Err(e) => {
                // The node's memory may now be ahead of its disk; continuing could acknowledge
                // writes that are not durable. Stop, and let a restart recover from what is on
                // disk.
                tracing::error!(error = %e, "storage failure in the raftstore; stopping the process");
                std::process::exit(70);
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose { range_id, request, deadline, reply } => {
                self.driver.propose(range_id, request, deadline, reply);
            }
            Input::Read { range_id, read_ts: None, deadline, reply } => {
                self.driver.read(range_id, deadline, reply)
            }
            Input::Read { range_id, read_ts: Some(ts), deadline, reply } => {
                self.driver.read_at(range_id, ts, deadline, reply)
            }
            Input::Revision { deadline, reply } => self.driver.revision(deadline, reply),
            Input::Raft { range_id, message } => self.driver.node_mut().step(range_id, message),
            Input::Node(message) => deliver(self.driver.receive(message)),
            Input::Unreachable { range_id, peer } => {
                self.driver.node_mut().report_unreachable(range_id, peer)
            }
            Input::SnapshotStatus { range_id, peer, delivered } => {
                self.driver.node_mut().report_snapshot(range_id, peer, delivered)
            }
            Input::LeaseKeepAlive { id, deadline, reply } => {
                deliver(self.driver.lease_keep_alive(id, deadline, reply));
            }
            Input::Snapshot { revision, reply } => {
                let _ = reply.send(self.driver.node().backup_image(revision));
            }
            Input::LearnerReady { id, reply } => {
                let node = self.driver.node();
                let _ = reply.send(node.learner_ready(META_RANGE_ID, id));
            }
            Input::TransferLeader { target, reply } => {
                let node = self.driver.node_mut();
                let _ = reply.send(node.transfer_leader(META_RANGE_ID, target));
            }
            Input::HandOver { reply } => {
                let _ = reply.send(self.driver.node_mut().hand_over());
            }
            Input::LeaseTimeToLive { id, reply } => {
                let _ = reply.send(self.driver.lease_time_to_live(id));
            }
        }
    }

    /// After a membership change: sends to the members the cluster now records, and stops this
    /// process if it is no longer one of them (as etcd stops a removed member).
    fn follow_members(&mut self) {
        let node = self.driver.node();
        let members = match node.members() {
            Ok(members) => members,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cluster's members");
                return;
            }
        };
        if members.is_empty() {
            return; // a store from before member records: the configured peers stay
        }
        let me = node.node_id();
        if !members.iter().any(|(id, _)| *id == me) {
            // Answer what is in flight (the removal itself, perhaps) before going.
            tracing::warn!("this member was removed from the cluster; stopping in 2 s");
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_secs(2));
                std::process::exit(0);
            });
            return;
        }
        let peers: Vec<(u64, String)> = members
            .iter()
            .filter(|(id, _)| *id != me)
            .filter_map(|(id, m)| Some((*id, m.peer_urls.first()?.clone())))
            .collect();
        tracing::info!(members = members.len(), "cluster membership changed");
        let cluster_id = node.cluster_id().ok().flatten();
        self.outbox.set_peers(&peers, cluster_id);
    }

    fn notify_applied(&mut self) {
        let frontier = self.driver.node().shared_ranges().watermarks().frontier;
        if frontier != self.last_frontier {
            self.last_frontier = frontier;
            self.applied.notify_one();
        }
    }

    /// Logs leadership changes of the meta range: the one event operators look for first.
    fn log_leadership(&mut self) {
        let node = self.driver.node();
        let Some(shared) = node.shared(META_RANGE_ID) else { return };
        let leader = shared.leader_id.load(Ordering::Acquire);
        if leader == self.last_leader {
            return;
        }
        let term = shared.term.load(Ordering::Acquire);
        if leader == 0 {
            tracing::warn!(term, previous = format!("{:x}", self.last_leader), "no leader");
        } else if leader == node.node_id() {
            tracing::info!(term, "this member became leader");
        } else {
            tracing::info!(term, leader = format!("{leader:x}"), "leader elected");
        }
        self.last_leader = leader;
    }
}

/// Hands answers to the waiting request handlers (a handler that gave up is simply gone).
fn deliver(answers: Answers<WriteReply, ReadReply, KeepAliveReply>) {
    for (reply, result) in answers.writes {
        let _ = reply.send(result);
    }
    for (reply, result) in answers.reads {
        let _ = reply.send(result);
    }
    for (reply, result) in answers.keep_alives {
        let _ = reply.send(result);
    }
}
