//! The bank clients' side of the world (see `crate::bank`): a transfer reaches a node, where the
//! core's coordinator runs it (`machines`) and dies with the node's process; an audit is a read
//! of both ranges at one read timestamp, served from the node's replicas.

use strata_core::coordinator::{self, Coordinator, Progress};
use strata_core::mvcc::locks;
use strata_core::mvcc::read;
use strata_core::pb::etcdserverpb::{RangeResponse, TxnResponse};
use strata_core::raftstore::local_read;
use strata_core::{RangeId, Result};

use super::machines::Purpose;
use super::{CLIENT_TIMEOUT, Event, MS, Reply, World};
use crate::bank::{self, BankOp};

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
    pub audits: Vec<Audit>,
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
                let latency = self.client_rng.range(100, 2 * MS);
                self.start_machine(node, Purpose::Bank { client, op }, None, latency);
            }
        }
    }

    /// A transfer reaches its node: its coordinator starts there (`None`: the node is down).
    pub(super) fn start_transfer(
        &mut self,
        txn: usize,
        client: usize,
        op: &BankOp,
    ) -> Option<Result<(Coordinator, Progress)>> {
        let node = self.machines.txns[txn].node;
        let request = self.bank.txn(client, op);
        let id = locks::txn_id(node, self.nodes[node as usize - 1].epoch, txn as u64);
        let (participants, start_ts) = self.with_node(node, |_, driver| {
            let ranges = driver.node().shared_ranges();
            (coordinator::participants(&request, &ranges), coordinator::start_ts(&ranges))
        })?;
        Some(participants.and_then(|found| Coordinator::start(request, found, id, start_ts)))
    }

    pub(super) fn transfer_done(
        &mut self,
        txn: usize,
        node: u64,
        client: usize,
        op: BankOp,
        outcome: Result<TxnResponse>,
    ) {
        let summary = match &outcome {
            Ok(r) => {
                format!("succeeded {} at {:?}", r.succeeded, r.header.as_ref().map(|h| h.revision))
            }
            Err(e) => format!("{e}"),
        };
        self.log(|| format!("bank txn {txn} of client {client} on n{node}: {op:?}: {summary}"));
        self.bank.done(client, &op, Some(outcome.map_err(|e| e.to_string())));
        let think = self.client_rng.range(0, 10 * MS);
        self.schedule(think, Event::BankNext(client));
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
            let Ok(held) = ranges.holding(&request.key, &request.range_end) else {
                return None; // a range of the accounts is not here yet: tried again later
            };
            let ids: Vec<RangeId> = held.into_iter().map(|(id, _)| id).collect();
            match ts {
                None => driver.read(ids[0], deadline, Reply::Audit(audit)),
                Some(ts) => driver.read_at(ids[confirmed], ts, deadline, Reply::Audit(audit)),
            }
            Some(ids)
        });
        match asked.flatten() {
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
        // As the server: an audit whose ranges split after they were routed is routed again
        // (here, given up).
        let now: Vec<RangeId> = (driver.node().shared_ranges())
            .overlapping(&request.key, &request.range_end)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if now != a.ranges {
            return self.audit_end(audit);
        }
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
}
