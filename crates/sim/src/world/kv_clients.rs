//! The key-value clients' side of the world: a client's next operation, its request reaching a
//! node as the server's KV service hands it to the raftstore (routed to the range holding its
//! key), a read served from the replica once released, and the answer going back.

use strata_core::raftstore::{Mutation, local_read};

use super::{CLIENT_TIMEOUT, Event, MS, Reply, World};
use crate::history::{Op, Operation, Outcome};
use crate::workload;

impl World {
    pub(super) fn client_next(&mut self, client: usize) {
        if !self.faults_on && self.now >= self.options.duration_ms * MS {
            return; // the load stops with the faults
        }
        let op = self.clients[client].next_op(&mut self.client_rng, &self.keys);
        self.invoke(client, op);
    }

    pub(super) fn invoke(&mut self, client: usize, op: Op) {
        let node = self.any_member();
        let id = self.history.len();
        self.history.push(Operation {
            id,
            client,
            node,
            op,
            invoked: self.now,
            completed: None,
            outcome: Outcome::Pending,
        });
        let latency = self.client_rng.range(100, 2 * MS);
        self.schedule(latency, Event::Request { node, op: id });
        self.schedule(CLIENT_TIMEOUT, Event::Timeout { op: id });
    }

    pub(super) fn request(&mut self, id: u64, op: usize) {
        let operation = self.history[op].op.clone();
        let local_read = !operation.is_linearizable()
            || self.options.mutation == Mutation::ReadsWithoutReadIndex;
        let deadline = self.now + CLIENT_TIMEOUT;
        let handled = self.with_node(id, |_, driver| {
            // Routed as the server will: to the range holding the key.
            // A node that lagged through a split may hold no replica of the key's range yet.
            let range = driver.node().range_of(operation.key().as_bytes()).ok_or(())?;
            if let Some(request) = workload::write_request(&operation) {
                driver.propose(range, request, deadline, Reply::Kv(op));
                Ok(None)
            } else if !local_read {
                driver.read(range, deadline, Reply::Kv(op));
                Ok(Some((range, driver.node().descriptor(range).map(|d| d.epoch()))))
            } else {
                Ok(None)
            }
        });
        match handled {
            // Nothing listens on a node that is down: the connection is refused, and the
            // request certainly had no effect.
            None => self.reply(op, Outcome::Failed("connection refused".into())),
            Some(Err(())) => self.reply(op, Outcome::Failed("range unavailable".into())),
            Some(Ok(routed)) => {
                if let Some(routed) = routed {
                    self.routed_reads.insert(op, routed);
                }
                if local_read && !operation.is_write() {
                    self.serve_read(id, op, None);
                }
            }
        }
        // Half the time the round waits up to a millisecond, so that requests arriving
        // meanwhile share it (and their proposals one Raft message).
        if self.client_rng.chance(0.5) {
            let delay = self.client_rng.range(0, MS);
            self.schedule(delay, Event::Round(id));
        } else {
            self.round(id);
        }
    }

    /// Serves a read from node `id`'s replica of the range holding its key: at the read
    /// timestamp its ReadIndex brought, if its range takes revisions from the oracle.
    pub(super) fn serve_read(&mut self, id: u64, op: usize, read_ts: Option<i64>) {
        let sim = &self.nodes[id as usize - 1];
        let Some(driver) = sim.node.as_ref() else { return };
        let operation = &self.history[op].op;
        let node = driver.node();
        let routed = self.routed_reads.remove(&op);
        let Some(range) = node.range_of(operation.key().as_bytes()) else {
            return self.reply(op, Outcome::Failed("range unavailable".into()));
        };
        // As the server: a read whose range split after it was routed is routed again (here,
        // refused: it was not served).
        let now = (range, node.descriptor(range).map(|d| d.epoch()));
        if routed.is_some_and(|routed| routed != now) {
            return self.reply(op, Outcome::Failed("the range changed".into()));
        }
        let shared = node.shared(range).expect("a range the node holds");
        let request = workload::read_request(operation);
        let result = match read_ts {
            Some(ts) => local_read::range_at(&sim.disk, &shared, &request, ts),
            None => local_read::range(&sim.disk, &shared, &request),
        };
        self.reply(op, workload::read_outcome(result));
    }

    pub(super) fn reply(&mut self, op: usize, outcome: Outcome) {
        let latency = self.client_rng.range(100, 2 * MS);
        self.schedule(latency, Event::Response { op, outcome });
    }

    pub(super) fn respond(&mut self, op: usize, outcome: Outcome) {
        if self.history[op].outcome != Outcome::Pending {
            return; // timed out already, or a duplicate
        }
        let operation = &mut self.history[op];
        operation.completed = Some(self.now);
        operation.outcome = outcome;
        self.client_done(op);
    }

    pub(super) fn client_done(&mut self, op: usize) {
        let client = self.history[op].client;
        if client >= self.clients.len() {
            return; // the final reader
        }
        let (operation, outcome) = (self.history[op].op.clone(), self.history[op].outcome.clone());
        self.clients[client].observe(&operation, &outcome);
        let think = self.client_rng.range(0, 10 * MS);
        self.schedule(think, Event::ClientNext(client));
    }
}
