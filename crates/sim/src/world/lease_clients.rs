//! The lease clients' side of the world: their requests reach nodes as the server's lease
//! service hands them to the raftstore, and their answers go back to `crate::leases`.

use strata_core::raftstore::Answers;
use strata_core::range::META_RANGE_ID;

use super::{CLIENT_TIMEOUT, Event, MS, Reply, World};
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
            let proposal = match kind {
                leases::Kind::KeepAlive { lease } => {
                    return driver.lease_keep_alive(lease, deadline, reply);
                }
                leases::Kind::Grant { lease, ttl } => {
                    Request::LeaseGrant(LeaseGrantRequest { id: lease, ttl })
                }
                leases::Kind::Attach { lease, key } => Request::Put(PutRequest {
                    key: key.into_bytes(),
                    value: b"held".to_vec(),
                    lease,
                    ..Default::default()
                }),
                leases::Kind::Revoke { lease } => {
                    Request::LeaseRevoke(LeaseRevokeRequest { id: lease })
                }
            };
            driver.propose(META_RANGE_ID, proposal, deadline, reply);
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
