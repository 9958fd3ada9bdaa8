//! The simulated world: nodes made of the production [`Node`] over simulated disks, a network
//! that delays, drops, duplicates, reorders and partitions, clients with timeouts, and a fault
//! schedule — all driven by one event queue in simulated time from one seed.
//!
//! Each node runs what the server's raftstore thread runs: the production [`Driver`] around the
//! node, which keeps the waiting requests (proposals held while no leader is known and retried
//! on every tick, ReadIndex reads, deadlines, "leader changed" for proposals of an old term). The
//! simulated process ticks it on its own timer, steps messages as they arrive and runs a round
//! after every input. A storage error ends the node, as it ends the process, and the node is
//! restarted from what its disk made durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_core::RangeId;
use strata_core::raftstore::{
    Answers, Config, Driver, MessageType, Mutation, Node, NodeMessage, OutMessage, StateRole,
};
use strata_core::rng::fnv1a;

use crate::check::RaftObserver;
use crate::disk::Disk;
use crate::faults::FaultPlan;
use crate::history::{Operation, Outcome};
use crate::leases::{self, Leases};
use crate::members::{self, Operator};
use crate::watchers::Watchers;
use options::split_keys;
pub use options::{Options, Report};

mod bank_clients;
mod finish;
mod kv_clients;
mod lease_clients;
mod machines;
mod membership;
mod options;
mod oracle_clients;
mod splits;
use crate::workload::{self, Client};
use strata_core::rng::Rng;

/// Simulated microseconds.
pub type Time = u64;

const MS: Time = 1_000;
/// The nominal tick; a drifting node ticks faster or slower.
const TICK: Time = 10 * MS;
/// How long a client waits for an answer.
const CLIENT_TIMEOUT: Time = 1_000 * MS;
/// After the faults stop: time to recover before the final reads, and before the end.
const SETTLE: Time = 2_000 * MS;
const FINAL: Time = 6_000 * MS;
/// Steps the linearizability search may take per key before giving up.
const SEARCH_BUDGET: u64 = 2_000_000;
/// Clients that hold leases, besides the key-value clients.
const LEASE_CLIENTS: usize = 4;
/// Clients that ask the revision oracle, when there is one (beside other ranges).
const ORACLE_CLIENTS: usize = 2;
/// Bank clients, with `--bank`.
const BANK_CLIENTS: usize = 3;

#[derive(Debug)]
enum Event {
    Tick(u64),
    Deliver {
        to: u64,
        message: Box<OutMessage>,
    },
    /// A message between two nodes' drivers (asks of the revision oracle, and answers).
    DeliverNode {
        message: Box<NodeMessage>,
    },
    SnapshotStatus {
        leader: u64,
        epoch: u64,
        range_id: RangeId,
        peer: u64,
        delivered: bool,
    },
    Request {
        node: u64,
        op: usize,
    },
    /// A node's round, run a little after a request arrived instead of at once, so that the
    /// requests arriving meanwhile share it: as the server's raftstore drains its queue before
    /// a round, and proposes everything it drained in one Raft message.
    Round(u64),
    Response {
        op: usize,
        outcome: Outcome,
    },
    Timeout {
        op: usize,
    },
    ClientNext(usize),
    Fault,
    Heal(Vec<(u64, u64)>),
    Restart(u64),
    Resume(u64),
    Quiesce,
    FinalRead(usize),
    LeaseNext(usize),
    LeaseRequest {
        node: u64,
        request: usize,
    },
    LeaseResponse {
        request: usize,
        outcome: leases::Outcome,
    },
    /// The membership operator looks at the cluster and perhaps changes it.
    Operate,
    /// The node's process stops for good: it is no longer a member.
    Leave(u64),
    OracleNext(usize),
    OracleAsk {
        node: u64,
        asked: usize,
    },
    OracleAnswer {
        asked: usize,
        outcome: crate::oracle::Outcome,
    },
    BankNext(usize),
    /// A bank transaction's asks, run on its node.
    TxnRun(usize),
    TxnTimeout(usize),
    /// A revocation across ranges tried again on node `node`.
    RevokeAcross {
        node: u64,
        lease: (i64, u64),
        request: Option<usize>,
        attempt: u32,
    },
    AuditRun(usize),
    AuditEnd(usize),
    FinalAudit,
    /// The operator's next step of a split.
    SplitNext,
}

/// Whose request a driver's answer belongs to: a key-value operation or a lease client's
/// request, by index into their histories.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Kv(usize),
    Lease(usize),
    Member,
    Oracle(usize),
    /// A bank transaction's (or a resolution's) ask, by its index.
    Txn(usize, machines::TxnReply),
    Audit(usize),
    Split(splits::SplitStep),
    /// Nobody waits for it.
    Ignored,
}

/// The driver of a simulated node: times in simulated microseconds.
type SimDriver = Driver<Time, Reply, Reply, Reply>;

struct SimNode {
    id: u64,
    disk: Disk,
    /// The running process: the production driver around the node.
    node: Option<SimDriver>,
    epoch: u64,
    paused_until: Option<Time>,
    /// Inputs that arrived while paused, handled on resume connection by connection.
    deferred: Vec<Event>,
    tick_interval: Time,
    /// Whether a fault damaged this node's disk: it may refuse to start or stop on the error,
    /// and the end-of-run checks leave it out — but it must never serve wrong data.
    damaged: bool,
    role: Role,
}

/// Where a node stands in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// An id the operator has not added yet: no process, no disk contents.
    Spare,
    Member,
    /// Removed from the cluster: its process is stopped for good.
    Removed,
}

pub struct World {
    options: Options,
    now: Time,
    seq: u64,
    queue: BTreeMap<(Time, u64), Event>,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    keys: Vec<String>,
    history: Vec<Operation>,
    /// Directed links currently cut, with how many partitions cut each.
    cut: BTreeMap<(u64, u64), u32>,
    plan: FaultPlan,
    faults_on: bool,
    net_rng: Rng,
    client_rng: Rng,
    observer: RaftObserver,
    watchers: Watchers,
    leases: Leases,
    operator: Operator,
    oracle: crate::oracle::OracleClients,
    bank: crate::bank::Bank,
    bank_world: bank_clients::BankWorld,
    machines: machines::Machines,
    splits: splits::Splits,
    /// The range (and its epoch) each linearizable read was routed to, until it is served.
    routed_reads: BTreeMap<usize, (RangeId, Option<strata_core::range::RangeEpoch>)>,
    /// Per member, the highest applied index at which a node recorded it.
    recorded_at: BTreeMap<u64, u64>,
    /// The shortest tick interval any node ran with: how fast the fastest clock was.
    fastest_tick: Time,
    trace: u64,
    events: u64,
    /// Problems found while running (a node that refused to restart, for example).
    violations: Vec<String>,
    verbose: bool,
}

impl World {
    pub fn new(options: Options) -> Self {
        let mut rng = Rng::new(options.seed);
        let plan = FaultPlan::new(rng.fork(), &options.faults, options.nodes + options.spare_nodes);
        let net_rng = rng.fork();
        let client_rng = rng.fork();
        let keys = workload::keys(options.spread_keys);
        let watchers = Watchers::new(rng.fork(), options.nodes + options.spare_nodes, &keys);
        let leases = Leases::new(rng.fork(), LEASE_CLIENTS, options.spread_keys);
        let pool = options.nodes + options.spare_nodes;
        let mut operator_rng = rng.fork();
        let changes_membership = options.spare_nodes > 0
            && !options.spread_keys
            && !options.bank
            && operator_rng.chance(0.5);
        let spare = if changes_membership { (options.nodes + 1..=pool).collect() } else { vec![] };
        let operator = Operator::new(operator_rng, spare);
        let oracle_clients = if options.ranges > 1 { ORACLE_CLIENTS } else { 0 };
        let oracle = crate::oracle::OracleClients::new(rng.fork(), oracle_clients);
        let bank_clients = if options.bank && options.ranges > 1 { BANK_CLIENTS } else { 0 };
        let bank = crate::bank::Bank::new(rng.fork(), bank_clients);
        let splits = match options.splits {
            true => splits::Splits::new(&mut rng.fork()),
            false => splits::Splits::default(),
        };
        let mut world = Self {
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: Vec::new(),
            clients: (0..options.clients).map(Client::new).collect(),
            keys,
            history: Vec::new(),
            cut: BTreeMap::new(),
            plan,
            faults_on: true,
            net_rng,
            client_rng,
            observer: RaftObserver::default(),
            watchers,
            leases,
            operator,
            oracle,
            bank,
            bank_world: Default::default(),
            machines: Default::default(),
            splits,
            routed_reads: BTreeMap::new(),
            recorded_at: BTreeMap::new(),
            fastest_tick: TICK,
            trace: 0,
            events: 0,
            violations: Vec::new(),
            verbose: false,
            options,
        };
        for id in 1..=pool {
            let member = id <= world.options.nodes;
            world.nodes.push(SimNode {
                id,
                disk: Disk::default(),
                node: None,
                epoch: 0,
                paused_until: None,
                deferred: Vec::new(),
                tick_interval: TICK,
                damaged: false,
                role: if member { Role::Member } else { Role::Spare },
            });
            if member {
                world.launch(id);
            }
        }
        let first_change = world.client_rng.range(100 * MS, 300 * MS);
        world.schedule(first_change, Event::Operate);
        for client in 0..world.options.clients {
            let delay = world.client_rng.range(0, 20 * MS);
            world.schedule(delay, Event::ClientNext(client));
        }
        for client in 0..world.leases.clients() {
            let delay = world.client_rng.range(0, 20 * MS);
            world.schedule(delay, Event::LeaseNext(client));
        }
        for client in 0..world.oracle.clients() {
            let delay = world.client_rng.range(0, 20 * MS);
            world.schedule(delay, Event::OracleNext(client));
        }
        for client in 0..world.bank.clients() {
            let delay = world.client_rng.range(0, 20 * MS);
            world.schedule(delay, Event::BankNext(client));
        }
        if world.options.splits {
            let first_split = world.client_rng.range(200 * MS, 1_000 * MS);
            world.schedule(first_split, Event::SplitNext);
        }
        let first_fault = world.plan.next_gap();
        world.schedule(first_fault, Event::Fault);
        world.schedule(world.options.duration_ms * MS, Event::Quiesce);
        world
    }

    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Runs to the end and checks everything.
    pub fn run(mut self) -> Report {
        let end = self.options.duration_ms * MS + FINAL;
        while let Some(((time, _), event)) = self.queue.pop_first() {
            if time > end {
                break;
            }
            self.now = time;
            self.events += 1;
            self.trace_event(&event);
            self.handle(event);
        }
        self.finish()
    }

    fn schedule(&mut self, after: Time, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), event);
    }

    fn log(&self, text: impl FnOnce() -> String) {
        if self.verbose {
            println!("{:>10.3} ms  {}", self.now as f64 / MS as f64, text());
        }
    }

    fn trace_event(&mut self, event: &Event) {
        let text = match event {
            Event::Deliver { to, message } => format!(
                "deliver {:?} {}->{to} t{} i{} c{}",
                message.message.msg_type,
                message.message.from,
                message.message.term,
                message.message.index,
                message.message.commit
            ),
            other => format!("{other:?}"),
        };
        self.trace = fnv1a(format!("{}{}{text}", self.trace, self.now).as_bytes());
    }

    /// Starts node `id`'s process for the first time, its timer out of phase with the others'
    /// as real processes' are.
    fn launch(&mut self, id: u64) {
        self.start(id);
        let phase = self.net_rng.range(0, TICK);
        self.schedule(phase, Event::Tick(id));
    }

    /// Starts node `id`'s process on whatever its disk holds.
    fn start(&mut self, id: u64) {
        let sim = &mut self.nodes[id as usize - 1];
        sim.epoch += 1;
        let mut config = Config::new(id, sim.epoch, (1..=self.options.nodes).collect());
        // A member added later joins with an empty disk and gets the state from the leader.
        config.join = id > self.options.nodes;
        config.initial_members = (1..=self.options.nodes).map(members::initial).collect();
        config.initial_split_keys = split_keys(self.options.ranges);
        config.election_seed = Some(self.options.seed);
        config.record_applied = true;
        // Small enough that snapshots happen in short runs.
        config.log_entries_max = 200;
        config.tick_ms = TICK / MS;
        config.log_entries_keep = 50;
        config.mutation = match self.options.mutation {
            // One replica misbehaves; the others are the reference.
            Mutation::SkipApply if id != 1 => Mutation::None,
            other => other,
        };
        let failed_syncs = sim.disk.failed_syncs();
        match Node::open(config, Arc::new(sim.disk.clone())) {
            Ok(node) => {
                sim.node = Some(Driver::new(node));
                self.watchers.node_started(id);
            }
            // The disk failed while starting: the process exits and is started again.
            Err(_) if sim.disk.failed_syncs() > failed_syncs => {
                sim.disk.memory.crash();
                let delay = self.plan.restart_delay();
                self.schedule(delay, Event::Restart(id));
            }
            // A damaged disk may be refused: the node stays down until an operator replaces it.
            Err(e) if sim.damaged => self.log(|| format!("n{id} refused its damaged disk: {e}")),
            Err(e) => self.violations.push(format!("n{id} refused to restart: {e}")),
        }
        self.observer.restarted(id);
    }

    fn handle(&mut self, event: Event) {
        // Inputs for a paused node wait for it.
        let target = match &event {
            Event::Tick(id)
            | Event::Deliver { to: id, .. }
            | Event::Request { node: id, .. }
            | Event::LeaseRequest { node: id, .. }
            | Event::OracleAsk { node: id, .. } => Some(*id),
            Event::DeliverNode { message } => Some(message.to),
            Event::SnapshotStatus { leader, .. } => Some(*leader),
            _ => None,
        };
        if let Some(id) = target {
            let sim = &mut self.nodes[id as usize - 1];
            if sim.paused_until.is_some() && !matches!(event, Event::Tick(_)) {
                sim.deferred.push(event);
                return;
            }
        }
        match event {
            Event::Tick(id) => {
                let interval = self.nodes[id as usize - 1].tick_interval;
                if self.nodes[id as usize - 1].paused_until.is_none() {
                    let now = self.now;
                    if let Some(answers) = self.with_node(id, |_, driver| driver.tick(now)) {
                        self.answer(id, answers);
                    }
                    self.round(id);
                    if self.bank.clients() > 0 || self.options.spread_keys {
                        self.sweep_locks(id);
                    }
                }
                self.schedule(interval, Event::Tick(id));
            }
            Event::Deliver { to, message } => self.deliver(to, *message),
            Event::DeliverNode { message } => self.deliver_node(*message),
            Event::SnapshotStatus { leader, epoch, range_id, peer, delivered } => {
                if self.nodes[leader as usize - 1].epoch == epoch {
                    self.with_node(leader, |_, driver| {
                        driver.node_mut().report_snapshot(range_id, peer, delivered)
                    });
                    self.round(leader);
                }
            }
            Event::Request { node, op } => self.request(node, op),
            Event::Round(node) => self.round(node),
            Event::Response { op, outcome } => self.respond(op, outcome),
            Event::Timeout { op } => {
                if self.history[op].outcome == Outcome::Pending {
                    self.history[op].outcome = Outcome::Unknown;
                    self.client_done(op);
                }
            }
            Event::ClientNext(client) => self.client_next(client),
            Event::Fault => {
                if self.faults_on {
                    self.inject_fault();
                    let gap = self.plan.next_gap();
                    self.schedule(gap, Event::Fault);
                }
            }
            Event::Heal(links) => {
                for link in links {
                    if let Some(count) = self.cut.get_mut(&link) {
                        *count -= 1;
                        if *count == 0 {
                            self.cut.remove(&link);
                        }
                    }
                }
            }
            Event::Restart(id) => {
                let sim = &self.nodes[id as usize - 1];
                if sim.node.is_none() && sim.role == Role::Member {
                    self.start(id);
                    self.log(|| format!("n{id} restarted"));
                    self.round(id);
                }
            }
            Event::Resume(id) => self.resume(id),
            Event::Quiesce => self.quiesce(),
            Event::FinalRead(key) => self.final_read(key),
            Event::LeaseNext(client) => self.lease_next(client),
            Event::Operate => self.operate(),
            Event::Leave(id) => self.leave(id),
            Event::LeaseRequest { node, request } => self.lease_request(node, request),
            Event::OracleNext(client) => self.oracle_next(client),
            Event::OracleAsk { node, asked } => self.oracle_ask(node, asked),
            Event::OracleAnswer { asked, outcome } => {
                if let Some(wait) = self.oracle.complete(asked, outcome, self.now) {
                    let client = self.oracle.asks[asked].client;
                    self.schedule(wait, Event::OracleNext(client));
                }
            }
            Event::BankNext(client) => self.bank_next(client),
            Event::TxnRun(txn) => self.txn_run(txn),
            Event::TxnTimeout(txn) => self.txn_timeout(txn),
            Event::RevokeAcross { node, lease, request, attempt } => {
                self.revoke_across(node, lease, request, attempt)
            }
            Event::AuditRun(audit) => self.audit_run(audit),
            Event::AuditEnd(audit) => self.audit_end(audit),
            Event::FinalAudit => self.start_audit(None),
            Event::SplitNext => self.split_next(),
            Event::LeaseResponse { request, outcome } => {
                if let Some(wait) = self.leases.complete(request, outcome, self.now) {
                    let client = self.leases.requests[request].client;
                    self.schedule(wait, Event::LeaseNext(client));
                }
            }
        }
    }

    /// Runs rounds on node `id` while it has work, sending what they produce.
    fn round(&mut self, id: u64) {
        for _ in 0..8 {
            let failed_syncs = self.nodes[id as usize - 1].disk.failed_syncs();
            let ran = self.with_node(id, |_, driver| {
                let mut early = Vec::new();
                let result = driver.round(&mut |messages| early.extend(messages));
                let node = driver.node();
                let led: Vec<(RangeId, u64)> = (node.range_ids().into_iter())
                    .filter(|&range| node.role(range) == Some(StateRole::Leader))
                    .map(|range| (range, node.term(range)))
                    .collect();
                (early, result, led)
            });
            let Some((early, result, led)) = ran else { return };
            self.send(early);
            let (output, answers) = match result {
                Ok(Some(ran)) => ran,
                Ok(None) => return,
                Err(e) => {
                    // As in the server: a storage error stops the process. Only an injected
                    // fsync failure or a damaged disk explains one.
                    let sim = &self.nodes[id as usize - 1];
                    if !sim.damaged && sim.disk.failed_syncs() == failed_syncs {
                        self.violations.push(format!("n{id} stopped on a storage error: {e}"));
                    }
                    self.log(|| format!("n{id} stopped: {e}"));
                    self.crash(id);
                    let delay = self.plan.restart_delay();
                    self.schedule(delay, Event::Restart(id));
                    return;
                }
            };
            for (range, term) in led {
                self.observer.leader(id, range, term);
            }
            let sim = &self.nodes[id as usize - 1];
            if let Some(driver) = &sim.node {
                self.watchers.after_round(id, &sim.disk, &driver.node().shared_ranges());
            }
            self.observer.applied(id, &output.applied);
            if output.members_changed && self.removed_by_records(id) {
                // As the server does: answer what is in flight, and vote if asked while the
                // others learn the change, then stop.
                self.schedule(2_000 * MS, Event::Leave(id));
            }
            for (_, change) in &output.lease_changes {
                if let strata_core::mvcc::LeaseChange::Revoked { id: lease } = change {
                    self.leases.revoked(*lease, self.now);
                }
            }
            self.send(output.messages);
            self.send_node(output.node_messages);
            self.answer(id, answers);
        }
    }

    /// Sends the driver's answers back to the clients: write results, and reads released by
    /// ReadIndex, served now from the local state.
    fn answer(&mut self, id: u64, answers: Answers<Reply, Reply, Reply>) {
        for (reply, result) in answers.writes {
            match reply {
                Reply::Kv(op) => self.reply(op, workload::write_outcome(result)),
                Reply::Lease(request) => self.lease_written(id, request, result),
                Reply::Member => {
                    if let Some(added) = self.operator.answered(result.is_ok()) {
                        self.join(added);
                    }
                }
                Reply::Oracle(_) => {} // asks are answered as grants
                Reply::Txn(txn, machines::TxnReply::Proposed(slot)) => {
                    self.txn_handle(txn, strata_core::coordinator::Answer::Proposed(slot, result));
                }
                Reply::Split(step) => self.split_answered(step, result),
                Reply::Txn(..) | Reply::Audit(_) | Reply::Ignored => {}
            }
        }
        for (reply, result) in answers.reads {
            match (reply, result) {
                (Reply::Kv(op), Ok(read_ts)) => self.serve_read(id, op, read_ts),
                (Reply::Kv(op), Err(e)) => self.reply(op, workload::error_outcome(e)),
                (Reply::Txn(txn, kind), result) => self.txn_answer(txn, kind, result),
                (Reply::Audit(audit), result) => self.audit_answer(audit, result),
                _ => {} // only key-value clients read
            }
        }
        for (reply, result) in answers.keep_alives {
            if let Reply::Lease(request) = reply {
                self.lease_reply(request, result);
            }
        }
        for (reply, result) in answers.grants {
            if let Reply::Oracle(asked) = reply {
                self.oracle_reply(asked, result);
            }
        }
    }

    /// Calls into node `id`'s process, if it is up. A panic there is a bug: it is recorded, and
    /// the process dies with it (and is restarted, as a supervisor would).
    fn with_node<R>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut SimNode, &mut SimDriver) -> R,
    ) -> Option<R> {
        let sim = &mut self.nodes[id as usize - 1];
        let mut node = sim.node.take()?;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(sim, &mut node)));
        match result {
            Ok(value) => {
                sim.node = Some(node);
                Some(value)
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                if self.violations.len() < 10 {
                    self.violations.push(format!("n{id} panicked: {message}"));
                }
                sim.node = Some(node);
                self.crash(id);
                let delay = self.plan.restart_delay();
                self.schedule(delay, Event::Restart(id));
                None
            }
        }
    }

    fn send(&mut self, messages: Vec<OutMessage>) {
        for message in messages {
            let to = message.message.to;
            let copies = self.plan.network.copies(&mut self.net_rng);
            if copies == 0 {
                self.plan.counts.messages_dropped += 1;
                self.snapshot_status(&message, false);
            }
            for _ in 0..copies {
                let delay = self.plan.network.delay(&mut self.net_rng);
                self.schedule(delay, Event::Deliver { to, message: Box::new(message.clone()) });
            }
        }
    }

    /// Tells a snapshot's sender whether it arrived, as the transport does.
    fn snapshot_status(&mut self, message: &OutMessage, delivered: bool) {
        if message.message.get_msg_type() != MessageType::MsgSnapshot {
            return;
        }
        let leader = message.message.from;
        let epoch = self.nodes[leader as usize - 1].epoch;
        let (range_id, peer) = (message.range_id, message.message.to);
        self.schedule(MS, Event::SnapshotStatus { leader, epoch, range_id, peer, delivered });
    }

    /// Sends messages between drivers over the same faulty network as Raft's.
    fn send_node(&mut self, messages: Vec<NodeMessage>) {
        for message in messages {
            let copies = self.plan.network.copies(&mut self.net_rng);
            if copies == 0 {
                self.plan.counts.messages_dropped += 1;
            }
            for _ in 0..copies {
                let delay = self.plan.network.delay(&mut self.net_rng);
                self.schedule(delay, Event::DeliverNode { message: Box::new(message.clone()) });
            }
        }
    }

    fn deliver_node(&mut self, message: NodeMessage) {
        let (from, to) = (message.from, message.to);
        if self.cut.contains_key(&(from, to)) {
            return;
        }
        if let Some(answers) = self.with_node(to, |_, driver| driver.receive(message)) {
            self.answer(to, answers);
            self.round(to);
        }
    }

    fn deliver(&mut self, to: u64, message: OutMessage) {
        let from = message.message.from;
        let cut = self.cut.contains_key(&(from, to));
        let up = self.nodes[to as usize - 1].node.is_some();
        if cut || !up {
            self.snapshot_status(&message, false);
            return;
        }
        self.snapshot_status(&message, true);
        self.with_node(to, |_, driver| driver.node_mut().step(message.range_id, message.message));
        self.round(to);
    }

    // ---- faults ----

    fn inject_fault(&mut self) {
        use crate::faults::Fault;
        let fault =
            self.plan.choose(&self.nodes.iter().map(|n| n.node.is_some()).collect::<Vec<_>>());
        self.log(|| format!("fault: {fault:?}"));
        match fault {
            None => {}
            Some(Fault::Partition { links, heal_after }) => {
                for link in &links {
                    *self.cut.entry(*link).or_default() += 1;
                }
                self.schedule(heal_after, Event::Heal(links));
            }
            Some(Fault::Crash { node, restart_after }) => {
                self.crash(node);
                self.schedule(restart_after, Event::Restart(node));
            }
            Some(Fault::Pause { node, resume_after }) => {
                let sim = &mut self.nodes[node as usize - 1];
                if sim.paused_until.is_none() {
                    sim.paused_until = Some(self.now + resume_after);
                    self.schedule(resume_after, Event::Resume(node));
                }
            }
            Some(Fault::Drift { node, percent }) => {
                let interval = TICK * percent / 100;
                self.nodes[node as usize - 1].tick_interval = interval;
                self.fastest_tick = self.fastest_tick.min(interval);
            }
            Some(Fault::FailSync { node }) => self.nodes[node as usize - 1].disk.fail_next_sync(),
            Some(Fault::Corrupt { node, .. })
                if self.nodes[node as usize - 1].role != Role::Member => {}
            Some(Fault::Corrupt { node, pick }) => {
                self.crash(node);
                let sim = &mut self.nodes[node as usize - 1];
                let records = sim.disk.memory.durable_keys();
                if !records.is_empty() {
                    let (keyspace, key) = &records[(pick % records.len() as u64) as usize];
                    sim.disk.memory.corrupt(*keyspace, key);
                    sim.damaged = true;
                }
                let delay = self.plan.restart_delay();
                self.schedule(delay, Event::Restart(node));
            }
        }
    }

    /// A power loss: the node's process is gone and its disk keeps what was fsynced, plus
    /// whatever prefix of the later writes to each journal the system happened to write back.
    fn crash(&mut self, id: u64) {
        let (raft, data) = self.nodes[id as usize - 1].disk.memory.unsynced_writes();
        let kept = (self.plan.writes_kept(raft), self.plan.writes_kept(data));
        let sim = &mut self.nodes[id as usize - 1];
        if sim.node.take().is_some() {
            self.watchers.node_stopped(id);
            sim.disk.memory.crash_keeping(kept.0, kept.1);
            sim.deferred.clear();
            sim.paused_until = None;
            self.log(|| format!("n{id} crashed"));
        }
    }

    fn resume(&mut self, id: u64) {
        let sim = &mut self.nodes[id as usize - 1];
        if sim.paused_until.take().is_none() {
            return;
        }
        // A process back from a pause drains its connections in no particular order, each in
        // order: a client's request may be handled before the message from a peer that tells it
        // another node leads now.
        let mut connections: BTreeMap<u64, std::collections::VecDeque<Event>> = BTreeMap::new();
        for (i, event) in std::mem::take(&mut sim.deferred).into_iter().enumerate() {
            let connection = match &event {
                Event::Deliver { message, .. } => message.message.from,
                // Driver messages share the peer's connection, as they will in the transport.
                Event::DeliverNode { message } => message.from,
                _ => 1_000 + i as u64, // a client's request, or a report of the node's own
            };
            connections.entry(connection).or_default().push_back(event);
        }
        while !connections.is_empty() {
            let pick = self.net_rng.range(0, connections.len() as u64) as usize;
            let (&connection, queue) = connections.iter_mut().nth(pick).expect("picked");
            let event = queue.pop_front().expect("non-empty");
            if queue.is_empty() {
                connections.remove(&connection);
            }
            self.handle(event);
        }
    }
}
