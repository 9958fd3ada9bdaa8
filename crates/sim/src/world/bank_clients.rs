//! The bank clients' side of the world (see `crate::bank`): a transfer reaches a node, where the
//! core's coordinator runs it over that node's driver — each ask an in-process call, as the
//! server's handler makes them over its shell — and dies with the node's process; an audit is
//! a read of both ranges at one read timestamp, served from the node's replicas. Every node
//! also does what the server's sweeper does: the leader of a range resolves the locks it has
//! seen for [`LOCK_TTL`].

use std::collections::HashMap;

use strata_core::Error;
use strata_core::coordinator::{self, Answer, Ask, Coordinator, Progress, Resolution};
use strata_core::mvcc::locks::{self, LockRecord};
use strata_core::mvcc::read;
use strata_core::pb::etcdserverpb::RangeResponse;
use strata_core::raftstore::{StateRole, local_read};
use strata_core::{RangeId, Result};

use super::{CLIENT_TIMEOUT, Event, MS, Reply, Time, World};
use crate::bank::{self, BankOp};

/// A lock seen this long by its range's leader is taken for abandoned.
const LOCK_TTL: Time = 1_500 * MS;

/// Which answer a driver's reply to a transaction's ask is.
#[derive(Clone, Copy, Debug)]
pub(super) enum TxnReply {
    Revision,
    Proposed(usize),
}

enum Machine {
    Txn(Coordinator),
    Resolve(Resolution),
}

enum Purpose {
    Bank { client: usize, op: BankOp },
    Resolve { lock_id: Vec<u8> },
}

/// A transaction across ranges (or a resolution) running on a node's process.
pub(super) struct SimTxn {
    node: u64,
    /// The process it runs in: it dies with it.
    epoch: u64,
    machine: Option<Machine>,
    purpose: Purpose,
    asks: Vec<Ask>,
    /// Its outcome reached its client (or its client gave up on it).
    reported: bool,
}

/// A read of every account at one read timestamp.
pub(super) struct Audit {
    client: Option<usize>,
    node: u64,
    epoch: u64,
    ranges: Vec<RangeId>,
    ts: Option<i64>,
    /// The ranges read at `ts` so far.
    confirmed: usize,
    finished: bool,
}

/// The bank's state in the world.
#[derive(Default)]
pub(super) struct BankWorld {
    pub txns: Vec<SimTxn>,
    pub audits: Vec<Audit>,
    /// Per node and range, when its leader first saw each lock.
    seen: HashMap<(u64, RangeId), HashMap<Vec<u8>, Time>>,
    /// Locks being resolved, per node.
    resolving: Vec<(u64, Vec<u8>)>,
    /// The final audit was answered.
    pub final_audited: bool,
}

impl World {
    pub(super) fn bank_next(&mut self, client: usize) {
        if !self.faults_on && self.now >= self.options.duration_ms * MS {
            return; // the load stops with the faults
        }
        match self.bank.next_op(client) {
            BankOp::Audit => self.start_audit(Some(client)),
            op => {
                let node = self.any_member();
                let epoch = self.nodes[node as usize - 1].epoch;
                let purpose = Purpose::Bank { client, op };
                let txn = self.bank_world.txns.len();
                let sim_txn = SimTxn {
                    node,
                    epoch,
                    machine: None,
                    purpose,
                    asks: Vec::new(),
                    reported: false,
                };
                self.bank_world.txns.push(sim_txn);
                let latency = self.client_rng.range(100, 2 * MS);
                self.schedule(latency, Event::TxnRun(txn));
                self.schedule(CLIENT_TIMEOUT, Event::BankTimeout(txn));
            }
        }
    }

    /// Runs a transaction's asks on its node (starting its coordinator when it first arrives).
    pub(super) fn txn_run(&mut self, txn: usize) {
        let (node, epoch) = (self.bank_world.txns[txn].node, self.bank_world.txns[txn].epoch);
        if self.nodes[node as usize - 1].epoch != epoch
            || self.nodes[node as usize - 1].node.is_none()
        {
            // Its process is gone (a request to a node that is down is refused at once).
            if self.bank_world.txns[txn].machine.is_none() {
                self.txn_outcome(txn, Err(Error::Stopped));
            }
            return;
        }
        if self.bank_world.txns[txn].machine.is_none() {
            let Purpose::Bank { client, op } = &self.bank_world.txns[txn].purpose else { return };
            let request = self.bank.txn(*client, op);
            let id = locks::txn_id(node, epoch, txn as u64);
            let started = self.with_node(node, |_, driver| {
                let ranges = driver.node().shared_ranges();
                (coordinator::participants(&request, &ranges), coordinator::start_ts(&ranges))
            });
            let Some((participants, start_ts)) = started else { return };
            match Coordinator::start(request, participants, id, start_ts) {
                Ok((machine, progress)) => {
                    self.bank_world.txns[txn].machine = Some(Machine::Txn(machine));
                    self.txn_progress(txn, progress);
                }
                Err(e) => self.txn_outcome(txn, Err(e)),
            }
        }
        let asks = std::mem::take(&mut self.bank_world.txns[txn].asks);
        if asks.is_empty() {
            return;
        }
        let deadline = self.now + CLIENT_TIMEOUT;
        self.with_node(node, |_, driver| {
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
                }
            }
        });
        self.round(node);
    }

    /// A driver answered one of a transaction's asks.
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
        let progress = match &mut self.bank_world.txns[txn].machine {
            Some(Machine::Txn(machine)) => machine.handle(answer),
            Some(Machine::Resolve(machine)) => machine.handle(answer),
            None => return,
        };
        self.txn_progress(txn, progress);
    }

    fn txn_progress(&mut self, txn: usize, progress: Progress) {
        if !progress.asks.is_empty() {
            self.bank_world.txns[txn].asks.extend(progress.asks);
            self.schedule(0, Event::TxnRun(txn));
        }
        if let Some(outcome) = progress.outcome {
            self.txn_outcome(txn, outcome);
        }
    }

    fn txn_outcome(
        &mut self,
        txn: usize,
        outcome: Result<strata_core::pb::etcdserverpb::TxnResponse>,
    ) {
        let sim_txn = &mut self.bank_world.txns[txn];
        if std::mem::replace(&mut sim_txn.reported, true) {
            return;
        }
        let node = sim_txn.node;
        match &sim_txn.purpose {
            Purpose::Bank { client, op } => {
                let (client, op) = (*client, op.clone());
                let summary = match &outcome {
                    Ok(r) => format!(
                        "succeeded {} at {:?}",
                        r.succeeded,
                        r.header.as_ref().map(|h| h.revision)
                    ),
                    Err(e) => format!("{e}"),
                };
                self.log(|| {
                    format!("bank txn {txn} of client {client} on n{node}: {op:?}: {summary}")
                });
                self.bank.done(client, &op, Some(outcome.map_err(|e| e.to_string())));
                let think = self.client_rng.range(0, 10 * MS);
                self.schedule(think, Event::BankNext(client));
            }
            Purpose::Resolve { lock_id, .. } => {
                let key = (sim_txn.node, lock_id.clone());
                let text = format!(
                    "resolution {txn} on n{node} of {:?}: {:?}",
                    &lock_id[16..],
                    outcome.as_ref().err()
                );
                self.log(|| text);
                self.bank_world.resolving.retain(|r| *r != key);
                if outcome.is_ok() {
                    self.bank.counts.resolved += 1;
                }
            }
        }
    }

    pub(super) fn bank_timeout(&mut self, txn: usize) {
        let sim_txn = &mut self.bank_world.txns[txn];
        if std::mem::replace(&mut sim_txn.reported, true) {
            return;
        }
        match &sim_txn.purpose {
            Purpose::Bank { client, op } => {
                let (client, op) = (*client, op.clone());
                self.bank.done(client, &op, None);
                let think = self.client_rng.range(0, 10 * MS);
                self.schedule(think, Event::BankNext(client));
            }
            // Tried again at the next sweep.
            Purpose::Resolve { lock_id, .. } => {
                let key = (sim_txn.node, lock_id.clone());
                self.bank_world.resolving.retain(|r| *r != key);
            }
        }
    }

    // ---- audits ----

    pub(super) fn start_audit(&mut self, client: Option<usize>) {
        let node = self.any_member();
        let epoch = self.nodes[node as usize - 1].epoch;
        let audit = self.bank_world.audits.len();
        self.bank_world.audits.push(Audit {
            client,
            node,
            epoch,
            ranges: Vec::new(),
            ts: None,
            confirmed: 0,
            finished: false,
        });
        let latency = self.client_rng.range(100, 2 * MS);
        self.schedule(latency, Event::AuditRun(audit));
        self.schedule(CLIENT_TIMEOUT, Event::AuditEnd(audit));
    }

    /// The audit's next read: a read timestamp from its first range, then a read at it in each
    /// of the others.
    pub(super) fn audit_run(&mut self, audit: usize) {
        let a = &self.bank_world.audits[audit];
        let (node, epoch, ts, confirmed) = (a.node, a.epoch, a.ts, a.confirmed);
        if a.finished || self.nodes[node as usize - 1].epoch != epoch {
            return;
        }
        let deadline = self.now + CLIENT_TIMEOUT;
        let request = bank::audit_request();
        let asked = self.with_node(node, |_, driver| {
            let ranges = driver.node().shared_ranges();
            let ids: Vec<RangeId> = ranges
                .overlapping(&request.key, &request.range_end)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            match ts {
                None => driver.read(ids[0], deadline, Reply::Audit(audit)),
                Some(ts) => driver.read_at(ids[confirmed], ts, deadline, Reply::Audit(audit)),
            }
            ids
        });
        match asked {
            Some(ids) => {
                self.bank_world.audits[audit].ranges = ids;
                self.round(node);
            }
            None => self.audit_end(audit),
        }
    }

    pub(super) fn audit_answer(&mut self, audit: usize, answer: Result<Option<i64>>) {
        let a = &mut self.bank_world.audits[audit];
        if a.finished {
            return;
        }
        match answer {
            Ok(read_ts) => {
                if a.ts.is_none() {
                    a.ts = read_ts;
                }
                a.confirmed += 1;
                if a.ts.is_none() {
                    return self.audit_end(audit);
                }
                if a.confirmed < a.ranges.len() {
                    self.schedule(0, Event::AuditRun(audit));
                } else {
                    self.serve_audit(audit);
                }
            }
            Err(_) => self.audit_end(audit),
        }
    }

    /// Every range has applied what was stamped at or below the read timestamp: read each
    /// range's part there and join them, as the server does.
    fn serve_audit(&mut self, audit: usize) {
        let a = &self.bank_world.audits[audit];
        let (node, ts, client) = (a.node, a.ts.expect("a read timestamp"), a.client);
        let sim = &self.nodes[node as usize - 1];
        let Some(driver) = sim.node.as_ref() else { return self.audit_end(audit) };
        let request = bank::audit_request();
        let mut parts: Vec<RangeResponse> = Vec::new();
        for range_id in &a.ranges {
            let Some(shared) = driver.node().shared(*range_id) else {
                return self.audit_end(audit);
            };
            let descriptor = shared.descriptor.read().expect("descriptor lock").clone();
            let (first, past) = descriptor.span();
            let part = read::part_of(&request, first, past);
            match local_read::range_at(&sim.disk, &shared, &part, ts) {
                Ok(part) => parts.push(part),
                // A lock in the way: a client would be served once it is resolved.
                Err(_) => return self.audit_end(audit),
            }
        }
        let merged = read::merge(&request, parts, ts);
        self.log(|| {
            let kvs: Vec<(String, String, i64)> = (merged.kvs.iter())
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into(),
                        String::from_utf8_lossy(&kv.value).into(),
                        kv.mod_revision,
                    )
                })
                .collect();
            format!("audit {audit} on n{node} at {ts}: {kvs:?}")
        });
        let what = match client {
            Some(_) => format!("an audit on n{node}"),
            None => format!("the final audit on n{node}"),
        };
        self.bank.audited(client, &merged.kvs, ts, &what);
        if client.is_none() {
            self.bank_world.final_audited = true;
        }
        self.audit_end(audit);
    }

    pub(super) fn audit_end(&mut self, audit: usize) {
        let a = &mut self.bank_world.audits[audit];
        if std::mem::replace(&mut a.finished, true) {
            return;
        }
        match a.client {
            Some(client) => {
                if a.ts.is_none() || a.confirmed < a.ranges.len() {
                    self.bank.counts.audits_failed += 1;
                }
                let think = self.client_rng.range(0, 10 * MS);
                self.schedule(think, Event::BankNext(client));
            }
            // The final audit is tried until one is answered.
            None if !self.bank_world.final_audited => {
                self.schedule(50 * MS, Event::FinalAudit);
            }
            None => {}
        }
    }

    // ---- resolving abandoned locks ----

    /// What the server's sweeper does on node `id`: the locks of the ranges it leads that it
    /// has seen for [`LOCK_TTL`] are resolved.
    pub(super) fn sweep_locks(&mut self, id: u64) {
        let sim = &self.nodes[id as usize - 1];
        let Some(driver) = sim.node.as_ref() else { return };
        let node = driver.node();
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
        let primary_ranges: Vec<Vec<RangeId>> = (found.iter())
            .map(|(_, locks)| {
                (locks.iter())
                    .map(|lock| {
                        node.range_of(&lock.primary_key)
                            .unwrap_or(strata_core::range::META_RANGE_ID)
                    })
                    .collect()
            })
            .collect();
        let epoch = sim.epoch;
        for ((range_id, locks), primaries) in found.into_iter().zip(primary_ranges) {
            let primary_of: HashMap<Vec<u8>, RangeId> =
                locks.iter().map(|l| l.id.clone()).zip(primaries).collect();
            let seen = self.bank_world.seen.entry((id, range_id)).or_default();
            for lock in coordinator::abandoned(seen, locks, self.now, LOCK_TTL) {
                let key = (id, lock.id.clone());
                if self.bank_world.resolving.contains(&key) {
                    continue;
                }
                self.bank_world.resolving.push(key);
                let primary_range = primary_of[&lock.id];
                let lock_id = lock.id.clone();
                let (machine, progress) = Resolution::start(lock, range_id, primary_range);
                let txn = self.bank_world.txns.len();
                self.bank_world.txns.push(SimTxn {
                    node: id,
                    epoch,
                    machine: Some(Machine::Resolve(machine)),
                    purpose: Purpose::Resolve { lock_id },
                    asks: Vec::new(),
                    reported: false,
                });
                self.txn_progress(txn, progress);
                self.schedule(CLIENT_TIMEOUT, Event::BankTimeout(txn));
            }
        }
    }
}
