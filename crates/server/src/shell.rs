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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use strata_core::command::Request;
use strata_core::mvcc::Response;
use strata_core::raftstore::{Message, Node, OutMessage, RangeShared};
use strata_core::{Error, RangeId};
use tokio::sync::oneshot;

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
        deadline: Instant,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Raft {
        range_id: RangeId,
        message: Message,
    },
    Unreachable {
        range_id: RangeId,
        peer: u64,
    },
    SnapshotStatus {
        range_id: RangeId,
        peer: u64,
        delivered: bool,
    },
}

/// Where the shell sends messages for peers (the transport).
pub trait Outbox: Send + 'static {
    fn send(&mut self, messages: Vec<OutMessage>);
}

/// A cloneable handle to a running shell.
#[derive(Clone)]
pub struct ShellHandle {
    tx: SyncSender<Input>,
    shared: HashMap<RangeId, Arc<RangeShared>>,
}

impl ShellHandle {
    pub fn try_send(&self, input: Input) -> Result<(), Error> {
        self.tx.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) => Error::TooManyRequests,
            TrySendError::Disconnected(_) => Error::Stopped,
        })
    }

    pub fn shared(&self, range_id: RangeId) -> Option<&Arc<RangeShared>> {
        self.shared.get(&range_id)
    }

    /// Proposes a request and waits for it to be applied (or to fail).
    pub async fn propose(
        &self,
        range_id: RangeId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let (reply, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        self.try_send(Input::Propose { range_id, request, deadline, reply })?;
        // The shell enforces the deadline; the extra second only guards against a lost reply.
        match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Waits until a linearizable read may be served from the local state machine.
    pub async fn read_index(&self, range_id: RangeId, timeout: Duration) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        self.try_send(Input::Read { range_id, deadline, reply })?;
        match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }
}

struct Waiting<T> {
    deadline: Instant,
    /// The Raft term when the request was handed to Raft (for proposals).
    term: u64,
    reply: oneshot::Sender<Result<T, Error>>,
}

/// A proposal that found no leader; retried every tick until its deadline.
struct Unproposed {
    id: u64,
    range_id: RangeId,
    request: Request,
}

pub struct Shell<O: Outbox> {
    node: Node,
    outbox: O,
    rx: Receiver<Input>,
    tick_interval: Duration,
    next_id: u64,
    proposals: HashMap<u64, Waiting<Response>>,
    unproposed: Vec<Unproposed>,
    reads: HashMap<u64, Waiting<()>>,
    /// The term at the last check for proposals of earlier terms.
    last_term: u64,
    /// The leader known after the last round, to log changes.
    last_leader: u64,
}

/// Starts the shell thread. It runs until every handle is dropped or storage fails; a storage
/// failure stops the process (see `run`).
pub fn spawn<O: Outbox>(
    node: Node,
    outbox: O,
    tick_interval: Duration,
) -> std::io::Result<(ShellHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = sync_channel(INPUT_QUEUE_MAX);
    let shared =
        node.range_ids().into_iter().filter_map(|id| Some((id, node.shared(id)?))).collect();
    let handle = ShellHandle { tx, shared };
    let mut shell = Shell {
        node,
        outbox,
        rx,
        tick_interval,
        next_id: 1,
        proposals: HashMap::new(),
        unproposed: Vec::new(),
        reads: HashMap::new(),
        last_term: 0,
        last_leader: 0,
    };
    let thread =
        std::thread::Builder::new().name("strata-raftstore".into()).spawn(move || shell.run())?;
    Ok((handle, thread))
}

impl<O: Outbox> Shell<O> {
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
                self.node.tick();
                self.on_tick(now);
                next_tick = now + self.tick_interval;
            }
            if self.node.has_work() {
                let outbox = &mut self.outbox;
                match self.node.process_ready_sending(&mut |messages| outbox.send(messages)) {
                    Ok(output) => self.dispatch(output),
                    Err(e) => {
                        // The node's memory may now be ahead of its disk; continuing could
                        // acknowledge writes that are not durable. Stop, and let a restart
                        // recover from what is on disk.
                        tracing::error!(error = %e, "storage failure in the raftstore; stopping the process");
                        std::process::exit(70);
                    }
                }
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose { range_id, request, deadline, reply } => {
                let id = self.take_id();
                let term = self.current_term(range_id);
                self.proposals.insert(id, Waiting { deadline, term, reply });
                self.propose(Unproposed { id, range_id, request });
            }
            Input::Read { range_id, deadline, reply } => {
                let id = self.take_id();
                self.reads.insert(id, Waiting { deadline, term: 0, reply });
                self.node.read_index(range_id, id);
            }
            Input::Raft { range_id, message } => self.node.step(range_id, message),
            Input::Unreachable { range_id, peer } => self.node.report_unreachable(range_id, peer),
            Input::SnapshotStatus { range_id, peer, delivered } => {
                self.node.report_snapshot(range_id, peer, delivered)
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn propose(&mut self, proposal: Unproposed) {
        match self.node.propose(proposal.range_id, proposal.id, proposal.request.clone()) {
            Ok(()) => {
                let term = self.current_term(proposal.range_id);
                if let Some(w) = self.proposals.get_mut(&proposal.id) {
                    w.term = term;
                }
            }
            Err(Error::NoLeader) => self.unproposed.push(proposal),
            Err(e) => {
                if let Some(w) = self.proposals.remove(&proposal.id) {
                    let _ = w.reply.send(Err(e));
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        for proposal in std::mem::take(&mut self.unproposed) {
            if self.proposals.get(&proposal.id).is_some_and(|w| w.deadline <= now) {
                let w = self.proposals.remove(&proposal.id).expect("present");
                let _ = w.reply.send(Err(Error::NoLeader));
            } else if self.proposals.contains_key(&proposal.id) {
                self.propose(proposal);
            }
        }
        expire(&mut self.proposals, now);
        expire(&mut self.reads, now);
    }

    fn current_term(&self, range_id: RangeId) -> u64 {
        self.node.term(range_id)
    }

    /// A proposal handed to Raft in an earlier term may have gone to a leader that is gone (a
    /// follower forwards proposals, and a lost forward is never retried by Raft). Answer such
    /// proposals now with "leader changed" — their outcome is unknown, as etcd reports it —
    /// rather than letting them wait for their deadline.
    fn fail_proposals_of_old_terms(&mut self) {
        let term = self.current_term(strata_core::FIRST_RANGE_ID);
        if term <= self.last_term {
            return;
        }
        self.last_term = term;
        let unproposed: std::collections::HashSet<u64> =
            self.unproposed.iter().map(|p| p.id).collect();
        let stale: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(id, w)| w.term < term && !unproposed.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(w) = self.proposals.remove(&id) {
                let _ = w.reply.send(Err(Error::LeaderChanged));
            }
        }
    }

    /// Logs leadership changes of the first range: the one event operators look for first.
    fn log_leadership(&mut self) {
        let Some(shared) = self.node.shared(strata_core::FIRST_RANGE_ID) else { return };
        let leader = shared.leader_id.load(Ordering::Acquire);
        if leader == self.last_leader {
            return;
        }
        let term = shared.term.load(Ordering::Acquire);
        if leader == 0 {
            tracing::warn!(term, previous = format!("{:x}", self.last_leader), "no leader");
        } else if leader == self.node.node_id() {
            tracing::info!(term, "this member became leader");
        } else {
            tracing::info!(term, leader = format!("{leader:x}"), "leader elected");
        }
        self.last_leader = leader;
    }

    fn dispatch(&mut self, output: strata_core::raftstore::Output) {
        if !output.messages.is_empty() {
            self.outbox.send(output.messages);
        }
        for (id, result) in output.completions {
            if let Some(w) = self.proposals.remove(&id) {
                let _ = w.reply.send(result);
            }
        }
        for id in output.reads_ready {
            if let Some(w) = self.reads.remove(&id) {
                let _ = w.reply.send(Ok(()));
            }
        }
        self.fail_proposals_of_old_terms();
        self.log_leadership();
    }
}

fn expire<T>(waiting: &mut HashMap<u64, Waiting<T>>, now: Instant) {
    let expired: Vec<u64> =
        waiting.iter().filter(|(_, w)| w.deadline <= now).map(|(id, _)| *id).collect();
    for id in expired {
        if let Some(w) = waiting.remove(&id) {
            let _ = w.reply.send(Err(Error::Timeout));
        }
    }
}
