//! The lease clients' side of the world: their requests reach nodes as the server's lease
//! service hands them to the raftstore, and their answers go back to `crate::leases`. A put
//! refused because its lease is not registered with the key's range is proposed again once the
//! node registered it, and a revocation of a lease with keys in several ranges is run as a
//! transaction across ranges (`machines`), as the server does both.

use strata_core::raftstore::Answers;
use strata_core::range::META_RANGE_ID;

use strata_core::coordinator::{self, Coordinator, Participant, Registration};
use strata_core::pb::etcdserverpb::TxnResponse;

use super::machines::{Machine, Purpose};
use super::{CLIENT_TIMEOUT, Event, MS, Reply, World};

/// How often a revocation across ranges is tried before it is given up (a client's is
/// answered with its last failure; an expired lease's is found again by the lease clock).
const REVOKE_ATTEMPTS: u32 = 10;
use crate::leases;

impl World {
    pub(super) fn lease_next(&mut self, client: usize) {
        let stopping = !self.faults_on;
        let Some((kind, preferred)) = self.leases.next(client, self.now, stopping) else { return };
        let node = preferred.unwrap_or_else(|| self.any_member());
        let request = self.leases.invoke(client, node, kind, self.now);
        let latency = self.client_rng.range(100, 2 * MS);
        self.schedule(latency, Event::LeaseRequest { node, request });
        self.schedule(
            CLIENT_TIMEOUT,
            Event::LeaseResponse { request, outcome: leases::Outcome::Unknown },
        );
    }

    /// A lease request reaches node `id`. Grants, attachments and revocations are proposals;
    /// a keep-alive goes to the leader's lease clock (see `Driver::lease_keep_alive`).
    pub(super) fn lease_request(&mut self, id: u64, request: usize) {
        use strata_core::command::Request;
        use strata_core::pb::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, PutRequest};
        let kind = self.leases.requests[request].kind.clone();
        let deadline = self.now + CLIENT_TIMEOUT;
        let reply = Reply::Lease(request);
        let handled = self.with_node(id, |_, driver| {
            let mut range_id = META_RANGE_ID;
            let proposal = match kind {
                leases::Kind::KeepAlive { lease } => {
                    return driver.lease_keep_alive(lease, deadline, reply);
                }
                leases::Kind::Grant { lease, ttl } => {
                    Request::LeaseGrant(LeaseGrantRequest { id: lease, ttl })
                }
                leases::Kind::Attach { lease, key } => {
                    range_id = driver.node().range_of(key.as_bytes()).unwrap_or(META_RANGE_ID);
                    Request::Put(PutRequest {
                        key: key.into_bytes(),
                        value: b"held".to_vec(),
                        lease,
                        ..Default::default()
                    })
                }
                leases::Kind::Revoke { lease } => {
                    Request::LeaseRevoke(LeaseRevokeRequest { id: lease })
                }
            };
            driver.propose(range_id, proposal, deadline, reply);
            Answers::default()
        });
        match handled {
            None => self.lease_reply(request, Err(strata_core::Error::Stopped)),
            Some(answers) => self.answer(id, answers),
        }
        self.round(id);
    }

    /// Sends a lease request's answer back to its client: a TTL for a keep-alive, 0 otherwise.
    pub(super) fn lease_reply(&mut self, request: usize, result: strata_core::Result<i64>) {
        use strata_core::Error;
        let outcome = match result {
            Ok(ttl) => leases::Outcome::Done { ttl },
            Err(Error::LeaderChanged | Error::Timeout) => leases::Outcome::Unknown,
            Err(e) => leases::Outcome::Failed(e.to_string()),
        };
        let latency = self.client_rng.range(100, 2 * MS);
        self.schedule(latency, Event::LeaseResponse { request, outcome });
    }
}

impl World {
    /// A lease request proposed on node `id` was applied (or failed).
    pub(super) fn lease_written(
        &mut self,
        id: u64,
        request: usize,
        result: strata_core::Result<strata_core::mvcc::Response>,
    ) {
        use strata_core::Error;
        let latency = self.client_rng.range(10, 100);
        match result {
            Err(Error::LeaseUnregistered(lease)) => {
                let leases::Kind::Attach { key, .. } = self.leases.requests[request].kind.clone()
                else {
                    return self.lease_reply(request, Err(Error::LeaseUnregistered(lease)));
                };
                let range = self.with_node(id, |_, driver| {
                    let node = driver.node();
                    let range_id = node.range_of(key.as_bytes())?;
                    let shared = node.shared(range_id)?;
                    Some(Participant::of(range_id, &shared))
                });
                let Some(Some(range)) = range else {
                    return self.lease_reply(request, Err(Error::Stopped));
                };
                let (machine, progress) = Registration::start(lease, range);
                let machine = Some((Machine::Register(machine), progress));
                self.start_machine(id, Purpose::Register { request }, machine, latency);
            }
            Err(Error::LeaseInRanges(lease)) => {
                self.revoke_across(id, (lease, 0), Some(request), 0)
            }
            result => self.lease_reply(request, result.map(|_| 0)),
        }
    }

    /// Node `node` registered the lease a put was refused for: the put is proposed again there.
    pub(super) fn lease_registered(
        &mut self,
        node: u64,
        request: usize,
        outcome: strata_core::Result<TxnResponse>,
    ) {
        match outcome {
            Ok(_) => self.schedule(0, Event::LeaseRequest { node, request }),
            Err(e) => self.lease_reply(request, Err(e)),
        }
    }

    /// Starts revoking `lease` across ranges on node `id`, for a client's `request` or for an
    /// expiry found in term `expiry_term` (see `Coordinator::revoke`).
    pub(super) fn revoke_across(
        &mut self,
        id: u64,
        (lease, expiry_term): (i64, u64),
        request: Option<usize>,
        attempt: u32,
    ) {
        let started = self.with_node(id, |_, driver| {
            let ranges = driver.node().shared_ranges();
            let meta = ranges.get(META_RANGE_ID)?;
            Some((Participant::of(META_RANGE_ID, &meta), coordinator::start_ts(&ranges)))
        });
        let Some(Some((meta, start_ts))) = started else {
            if let Some(request) = request {
                self.lease_reply(request, Err(strata_core::Error::Stopped));
            }
            return;
        };
        let txn_id = self.next_txn_id(id);
        let (machine, progress) = Coordinator::revoke(lease, expiry_term, meta, txn_id, start_ts);
        let purpose = Purpose::Revoke { lease, expiry_term, request, attempt };
        self.start_machine(id, purpose, Some((Machine::Txn(machine), progress)), 0);
    }

    /// A revocation across ranges ended. As the server does, one that met a lock is tried
    /// again (and an expiry's, after any retryable failure but a refusal for its term), up to
    /// [`REVOKE_ATTEMPTS`] times; a client's is answered.
    pub(super) fn lease_revoked_across(
        &mut self,
        txn: usize,
        (lease, expiry_term): (i64, u64),
        request: Option<usize>,
        attempt: u32,
        outcome: strata_core::Result<TxnResponse>,
    ) {
        use strata_core::Error;
        let error = outcome.as_ref().err();
        let text = format!("revocation {txn} of lease {lease} ({request:?}): {error:?}");
        self.log(|| text);
        let retry = match &outcome {
            Err(Error::Locked(_) | Error::TxnAborted) => true,
            Err(e) => request.is_none() && e.is_retryable() && *e != Error::NotLeader,
            Ok(_) => false,
        };
        if retry && attempt < REVOKE_ATTEMPTS {
            let node = self.machines.txns[txn].node;
            let backoff = self.client_rng.range(20 * MS, 100 * MS);
            let attempt = attempt + 1;
            let lease = (lease, expiry_term);
            self.schedule(backoff, Event::RevokeAcross { node, lease, request, attempt });
        } else if let Some(request) = request {
            self.lease_reply(request, outcome.map(|_| 0));
        }
    }
}
