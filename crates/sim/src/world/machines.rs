//! The core's machines of transactions across ranges (`strata_core::coordinator`), run on the
//! nodes of the world: a bank transfer, a lease's revocation, a lease's registration, the
//! resolution of an abandoned lock. Each runs on one node's process — its asks in-process calls
//! to that node's driver, as the server's handlers make them over its shell — and dies with it.
//! Every node also does what the server's sweeper does: the leader of a range resolves the locks
//! it has seen for [`LOCK_TTL`], and the meta leader revokes the leases its clock found expired
//! whose keys lie in several ranges.

use std::collections::HashMap;

use strata_core::coordinator::{self, Answer, Ask, Coordinator, Progress, Resolution};
use strata_core::mvcc::locks::{self, LockRecord};
use strata_core::pb::etcdserverpb::TxnResponse;
use strata_core::raftstore::StateRole;
use strata_core::{Error, RangeId, Result};

use super::{CLIENT_TIMEOUT, Event, Reply, Time, World};
use crate::bank::BankOp;

/// A lock seen this long by its range's leader is taken for abandoned.
const LOCK_TTL: Time = 1_500 * super::MS;

/// Which answer a driver's reply to a machine's ask is.
#[derive(Clone, Copy, Debug)]
pub(super) enum TxnReply {
    Revision,
    Proposed(usize),
}

pub(super) enum Machine {
    Txn(Coordinator),
    Resolve(Resolution),
    Register(coordinator::Registration),
}

impl Machine {
    fn handle(&mut self, answer: Answer) -> Progress {
        match self {
            Machine::Txn(machine) => machine.handle(answer),
            Machine::Resolve(machine) => machine.handle(answer),
            Machine::Register(machine) => machine.handle(answer),
        }
    }
}

/// What a machine is run for, and whom its outcome goes to.
#[derive(Clone, Debug)]
pub(super) enum Purpose {
    Bank {
        client: usize,
        op: BankOp,
    },
    Resolve {
        lock_id: Vec<u8>,
    },
    /// The registration of a lease a lease client's request (a put) was refused for.
    Register {
        request: usize,
    },
    /// The revocation of a lease whose keys lie in several ranges: a lease client's, or (none)
    /// one its leader's clock found expired; `attempt` counts the tries.
    Revoke {
        lease: i64,
        expiry_term: u64,
        request: Option<usize>,
        attempt: u32,
    },
}

/// A machine running on a node's process.
pub(super) struct SimTxn {
    pub node: u64,
    /// The process it runs in: it dies with it.
    pub epoch: u64,
    pub machine: Option<Machine>,
    pub purpose: Purpose,
    asks: Vec<Ask>,
    /// Its outcome reached its client (or its client gave up on it).
    reported: bool,
}

/// The machines of the world.
#[derive(Default)]
pub(super) struct Machines {
    pub txns: Vec<SimTxn>,
    /// Per node and range, when its leader first saw each lock.
    seen: HashMap<(u64, RangeId), HashMap<Vec<u8>, Time>>,
    /// Locks being resolved, per node.
    resolving: Vec<(u64, Vec<u8>)>,
}

impl World {
    /// Starts running a machine for `purpose` on node `node` (`machine`: one started already,
    /// with its first progress; `None`: the purpose starts it when it reaches the node).
    pub(super) fn start_machine(
        &mut self,
        node: u64,
        purpose: Purpose,
        machine: Option<(Machine, Progress)>,
        latency: Time,
    ) -> usize {
        let epoch = self.nodes[node as usize - 1].epoch;
        let txn = self.machines.txns.len();
        let (machine, progress) = match machine {
            Some((machine, progress)) => (Some(machine), Some(progress)),
            None => (None, None),
        };
        let sim_txn = SimTxn { node, epoch, machine, purpose, asks: Vec::new(), reported: false };
        self.machines.txns.push(sim_txn);
        match progress {
            Some(progress) => self.txn_progress(txn, progress),
            None => self.schedule(latency, Event::TxnRun(txn)),
        }
        self.schedule(CLIENT_TIMEOUT, Event::TxnTimeout(txn));
        txn
    }

    /// The id the next machine started on node `id` gives its transaction.
    pub(super) fn next_txn_id(&self, id: u64) -> locks::TxnId {
        let epoch = self.nodes[id as usize - 1].epoch;
        locks::txn_id(id, epoch, self.machines.txns.len() as u64)
    }

    /// Runs a machine's asks on its node (starting it when it first arrives).
    pub(super) fn txn_run(&mut self, txn: usize) {
        let (node, epoch) = (self.machines.txns[txn].node, self.machines.txns[txn].epoch);
        let sim = &self.nodes[node as usize - 1];
        if sim.epoch != epoch || sim.node.is_none() {
            // Its process is gone (a request to a node that is down is refused at once).
            if self.machines.txns[txn].machine.is_none() {
                self.txn_outcome(txn, Err(Error::Stopped));
            }
            return;
        }
        if self.machines.txns[txn].machine.is_none() {
            let Purpose::Bank { client, op } = self.machines.txns[txn].purpose.clone() else {
                return;
            };
            match self.start_transfer(txn, client, &op) {
                Some(Ok((machine, progress))) => {
                    self.machines.txns[txn].machine = Some(Machine::Txn(machine));
                    self.txn_progress(txn, progress);
                }
                Some(Err(e)) => self.txn_outcome(txn, Err(e)),
                None => return,
            }
        }
        let asks = std::mem::take(&mut self.machines.txns[txn].asks);
        if asks.is_empty() {
            return;
        }
        let deadline = self.now + CLIENT_TIMEOUT;
        let routed = self.with_node(node, |_, driver| {
            let mut routed = Vec::new();
            for ask in asks {
                let reply = |kind| Reply::Txn(txn, kind);
                match ask {
                    Ask::Revision => driver.revision(deadline, reply(TxnReply::Revision)),
                    Ask::Propose { slot, range_id, request } => {
                        driver.propose(range_id, request, deadline, reply(TxnReply::Proposed(slot)))
                    }
                    Ask::Send { range_id, request } => {
                        driver.propose(range_id, request, deadline, Reply::Ignored)
                    }
                    Ask::Route { spans } => {
                        let ranges = driver.node().shared_ranges();
                        routed.push(coordinator::route(&spans, &ranges));
                    }
                }
            }
            routed
        });
        self.round(node);
        for found in routed.into_iter().flatten() {
            self.txn_handle(txn, Answer::Routed(found));
        }
    }

    /// A driver answered one of a machine's asks with a timestamp.
    pub(super) fn txn_answer(&mut self, txn: usize, kind: TxnReply, answer: Result<Option<i64>>) {
        let timestamp = |answer: Result<Option<i64>>| {
            answer.and_then(|ts| ts.ok_or_else(|| Error::Internal("no timestamp".into())))
        };
        let answer = match kind {
            TxnReply::Revision => Answer::Revision(timestamp(answer)),
            TxnReply::Proposed(_) => unreachable!("proposals answer with a response"),
        };
        self.txn_handle(txn, answer);
    }

    pub(super) fn txn_handle(&mut self, txn: usize, answer: Answer) {
        let Some(machine) = &mut self.machines.txns[txn].machine else { return };
        let progress = machine.handle(answer);
        self.txn_progress(txn, progress);
    }

    fn txn_progress(&mut self, txn: usize, progress: Progress) {
        if !progress.asks.is_empty() {
            self.machines.txns[txn].asks.extend(progress.asks);
            self.schedule(0, Event::TxnRun(txn));
        }
        if let Some(outcome) = progress.outcome {
            self.txn_outcome(txn, outcome);
        }
    }

    fn txn_outcome(&mut self, txn: usize, outcome: Result<TxnResponse>) {
        let sim_txn = &mut self.machines.txns[txn];
        if std::mem::replace(&mut sim_txn.reported, true) {
            return;
        }
        let node = sim_txn.node;
        match sim_txn.purpose.clone() {
            Purpose::Bank { client, op } => self.transfer_done(txn, node, client, op, outcome),
            Purpose::Resolve { lock_id } => {
                let text = format!(
                    "resolution {txn} on n{node} of {:?}: {:?}",
                    &lock_id[16..],
                    outcome.as_ref().err()
                );
                self.log(|| text);
                self.machines.resolving.retain(|r| *r != (node, lock_id.clone()));
                if outcome.is_ok() {
                    self.bank.counts.resolved += 1;
                }
            }
            Purpose::Register { request } => self.lease_registered(node, request, outcome),
            Purpose::Revoke { lease, expiry_term, request, attempt } => {
                self.lease_revoked_across(txn, (lease, expiry_term), request, attempt, outcome)
            }
        }
    }

    pub(super) fn txn_timeout(&mut self, txn: usize) {
        let sim_txn = &mut self.machines.txns[txn];
        if std::mem::replace(&mut sim_txn.reported, true) {
            return;
        }
        match sim_txn.purpose.clone() {
            Purpose::Bank { client, op } => {
                self.bank.done(client, &op, None);
                let think = self.client_rng.range(0, 10 * super::MS);
                self.schedule(think, Event::BankNext(client));
            }
            // Tried again at the next sweep.
            Purpose::Resolve { lock_id } => {
                let key = (sim_txn.node, lock_id);
                self.machines.resolving.retain(|r| *r != key);
            }
            // The lease client times out by itself; an expiry is found again by the clock.
            Purpose::Register { .. } | Purpose::Revoke { .. } => {}
        }
    }

    /// What the server's sweeper does on node `id`: the locks of the ranges it leads that it
    /// has seen for [`LOCK_TTL`] are resolved, and the leases its clock found expired whose
    /// keys lie in several ranges are revoked.
    pub(super) fn sweep_locks(&mut self, id: u64) {
        let sim = &self.nodes[id as usize - 1];
        let Some(driver) = sim.node.as_ref() else { return };
        let node = driver.node();
        let expired = node.shared_ranges().take_expired_across();
        let mut found: Vec<(RangeId, Vec<LockRecord>)> = Vec::new();
        for range_id in node.range_ids() {
            let Some(shared) = node.shared(range_id) else { continue };
            if node.role(range_id) != Some(StateRole::Leader)
                || shared.lock_count.load(std::sync::atomic::Ordering::Acquire) == 0
            {
                continue;
            }
            let table = shared.locks.read().expect("lock table lock");
            found.push((range_id, table.locks().map(|(_, lock)| lock.clone()).collect()));
        }
        let primary_of = |lock: &LockRecord| node.range_of(&lock.primary_key);
        let primaries: Vec<Vec<RangeId>> = (found.iter())
            .map(|(_, locks)| locks.iter().map(|l| primary_of(l).unwrap_or(1)).collect())
            .collect();
        for (lease, term) in expired {
            self.log(|| format!("n{id} revokes lease {lease}, expired in term {term}"));
            self.revoke_across(id, (lease, term), None, 0);
        }
        for ((range_id, locks), primaries) in found.into_iter().zip(primaries) {
            let primary_of: HashMap<Vec<u8>, RangeId> =
                locks.iter().map(|l| l.id.clone()).zip(primaries).collect();
            let seen = self.machines.seen.entry((id, range_id)).or_default();
            for lock in coordinator::abandoned(seen, locks, self.now, LOCK_TTL) {
                let key = (id, lock.id.clone());
                if self.machines.resolving.contains(&key) {
                    continue;
                }
                self.machines.resolving.push(key);
                let primary_range = primary_of[&lock.id];
                let lock_id = lock.id.clone();
                let (machine, progress) = Resolution::start(lock, range_id, primary_range);
                let machine = Some((Machine::Resolve(machine), progress));
                self.start_machine(id, Purpose::Resolve { lock_id }, machine, 0);
            }
        }
    }
}
