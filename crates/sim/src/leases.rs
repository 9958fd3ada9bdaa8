//! Leases under faults: clients grant leases, attach a key to each, keep them alive for a while
//! through whichever member leads, and then revoke or abandon them — while leaders crash, are
//! cut off, pause and run fast or slow clocks.
//!
//! The checkers:
//! * **never early**: a lease is not revoked before the TTL promised by its last acknowledged
//!   grant or keep-alive has passed, counted from when that request was *sent* (the time a client
//!   can rely on), unless its client revoked it. Clocks are assumed to run at a bounded rate, as
//!   etcd assumes: the promise is scaled by the fastest clock any node ran in the run.
//! * **never kept**: after the faults stop, every lease runs out; at the end no lease and no key
//!   attached to one is left in the store.
//!
//! That every replica deletes the same keys at the same revision is the convergence checker's
//! job: lease records and attachments are part of the data it compares.

use std::collections::BTreeMap;

use strata_core::Result;
use strata_core::mvcc::view::View;
use strata_core::mvcc::{AppliedState, read};
use strata_core::pb::etcdserverpb::RangeRequest;
use strata_core::rng::Rng;
use strata_storage::Engine;

use crate::world::Time;

const MS: Time = 1_000;
const SECOND: Time = 1_000 * MS;
/// Keys attached to leases live under this prefix (outside the workload's keys), in the meta
/// range.
pub const KEY_PREFIX: &str = "lease/";
/// With keys spread over two ranges, each lease is given a key under this prefix too, in range
/// 2 (which starts at `m`): its revocation is a transaction across ranges.
pub const SPREAD_KEY_PREFIX: &str = "mlease/";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Grant { lease: i64, ttl: i64 },
    Attach { lease: i64, key: String },
    KeepAlive { lease: i64 },
    Revoke { lease: i64 },
}

impl Kind {
    fn lease(&self) -> i64 {
        match self {
            Kind::Grant { lease, .. }
            | Kind::Attach { lease, .. }
            | Kind::KeepAlive { lease }
            | Kind::Revoke { lease } => *lease,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Timed out, or the leader changed: it may or may not have taken effect.
    Unknown,
    Failed(String),
    /// Done; for a keep-alive, the TTL the leader answered (0: the lease is gone).
    Done {
        ttl: i64,
    },
}

#[derive(Clone, Debug)]
pub struct Request {
    pub client: usize,
    pub node: u64,
    pub kind: Kind,
    pub invoked: Time,
    pub outcome: Outcome,
}

#[derive(Default)]
struct Client {
    /// The lease it holds, with its TTL in seconds.
    lease: Option<(i64, i64)>,
    next: Option<Kind>,
    keep_until: Time,
    /// The member that answered the last keep-alive (the leader, as far as it knows).
    leader: Option<u64>,
    /// Where to send the next keep-alive: the leader, until it fails to answer.
    hint: Option<u64>,
}

/// What the lease clients did, for the report.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub granted: u64,
    pub kept_alive: u64,
    /// Keep-alives answered by another member than the lease's previous one: the lease lived
    /// on across a change of leader.
    pub moved: u64,
    /// Leases revoked by their leader's clock rather than by their client.
    pub expired: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.granted += other.granted;
        self.kept_alive += other.kept_alive;
        self.moved += other.moved;
        self.expired += other.expired;
    }
}

pub struct Leases {
    rng: Rng,
    /// Each lease is given a key in range 2 too.
    spread: bool,
    clients: Vec<Client>,
    pub requests: Vec<Request>,
    next_lease: i64,
    /// When each lease's revocation was first applied, on any node.
    revoked_at: BTreeMap<i64, Time>,
    pub counts: Counts,
}

impl Leases {
    pub fn new(rng: Rng, clients: usize, spread: bool) -> Self {
        Self {
            rng,
            spread,
            clients: (0..clients).map(|_| Client::default()).collect(),
            requests: Vec::new(),
            next_lease: 1,
            revoked_at: BTreeMap::new(),
            counts: Counts::default(),
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Client `client`'s next request and the member it prefers to send it to, or `None` when
    /// it is done (`stopping`: the faults are over, so it lets its lease run out).
    pub fn next(
        &mut self,
        client: usize,
        now: Time,
        stopping: bool,
    ) -> Option<(Kind, Option<u64>)> {
        let c = &mut self.clients[client];
        let Some((lease, _)) = c.lease else {
            if stopping {
                return None;
            }
            let (lease, ttl) = (self.next_lease, self.rng.range(1, 3) as i64);
            self.next_lease += 1;
            c.lease = Some((lease, ttl));
            return Some((Kind::Grant { lease, ttl }, None));
        };
        if let Some(kind) = c.next.take() {
            return Some((kind, None));
        }
        if stopping || now >= c.keep_until {
            if self.rng.chance(0.3) {
                return Some((Kind::Revoke { lease }, None));
            }
            c.lease = None; // abandoned: its leader must expire it
            return self.next(client, now, stopping);
        }
        Some((Kind::KeepAlive { lease }, c.hint))
    }

    pub fn invoke(&mut self, client: usize, node: u64, kind: Kind, now: Time) -> usize {
        self.requests.push(Request { client, node, kind, invoked: now, outcome: Outcome::Pending });
        self.requests.len() - 1
    }

    /// Records a request's answer (the first one counts); returns how long its client waits
    /// before its next request, or `None` for a duplicate.
    pub fn complete(&mut self, id: usize, outcome: Outcome, now: Time) -> Option<Time> {
        let request = &mut self.requests[id];
        if request.outcome != Outcome::Pending {
            return None;
        }
        request.outcome = outcome.clone();
        let (kind, node) = (request.kind.clone(), request.node);
        let c = &mut self.clients[request.client];
        let Some((lease, ttl)) = c.lease.filter(|(lease, _)| *lease == kind.lease()) else {
            return Some(10 * MS);
        };
        match (kind, outcome) {
            (Kind::Grant { .. }, Outcome::Done { .. }) => {
                self.counts.granted += 1;
                c.next = Some(Kind::Attach { lease, key: format!("{KEY_PREFIX}{lease}") });
            }
            // Not granted, or perhaps granted: either way it is left to expire.
            (Kind::Grant { .. }, _) => c.lease = None,
            (Kind::Attach { key, .. }, _) if self.spread && key.starts_with(KEY_PREFIX) => {
                c.next = Some(Kind::Attach { lease, key: format!("{SPREAD_KEY_PREFIX}{lease}") });
            }
            (Kind::Attach { .. }, _) => {
                c.keep_until = now + self.rng.range(0, 2_500 * MS);
            }
            (Kind::KeepAlive { .. }, Outcome::Done { ttl: 0 }) => c.lease = None,
            (Kind::KeepAlive { .. }, Outcome::Done { .. }) => {
                self.counts.kept_alive += 1;
                if c.leader.is_some_and(|leader| leader != node) {
                    self.counts.moved += 1;
                }
                c.leader = Some(node);
                c.hint = Some(node);
                // Sometimes at a third of the TTL, as etcd's clients renew; sometimes late,
                // relying on all of the promised time.
                let wait = ttl as Time * SECOND * self.rng.range(33, 90) / 100;
                return Some(wait);
            }
            (Kind::KeepAlive { .. }, _) => c.hint = None,
            (Kind::Revoke { .. }, _) => c.lease = None,
        }
        Some(10 * MS)
    }

    /// A node applied the revocation of `lease`.
    pub fn revoked(&mut self, lease: i64, now: Time) {
        self.revoked_at.entry(lease).or_insert(now);
    }

    /// The checks, over the whole run: `clock_rate` is the fastest any node's clock ran
    /// (1.0: nominal; 2.0: twice as fast), `reference` a converged replica.
    pub fn check(
        &mut self,
        clock_rate: f64,
        reference: &dyn Engine,
        state: AppliedState,
        leases_left: &[(i64, i64)],
    ) -> Vec<String> {
        let mut violations = Vec::new();
        // The latest moment each lease was promised to live until, and when its client first
        // asked for its revocation.
        let mut promised: BTreeMap<i64, (Time, usize)> = BTreeMap::new();
        let mut revoke_sent: BTreeMap<i64, Time> = BTreeMap::new();
        let mut ttls: BTreeMap<i64, i64> = BTreeMap::new();
        for (id, request) in self.requests.iter().enumerate() {
            match (&request.kind, &request.outcome) {
                (Kind::Grant { lease, ttl }, outcome) => {
                    ttls.insert(*lease, *ttl);
                    if matches!(outcome, Outcome::Done { .. }) {
                        promise(&mut promised, *lease, request.invoked, *ttl, clock_rate, id);
                    }
                }
                (Kind::KeepAlive { lease }, Outcome::Done { ttl }) if *ttl > 0 => {
                    promise(&mut promised, *lease, request.invoked, *ttl, clock_rate, id);
                }
                (Kind::Revoke { lease }, _) => {
                    revoke_sent.entry(*lease).or_insert(request.invoked);
                }
                _ => {}
            }
        }
        for (&lease, &revoked) in &self.revoked_at {
            let Some(&(until, by)) = promised.get(&lease) else { continue };
            let asked = revoke_sent.get(&lease).copied().unwrap_or(Time::MAX);
            if revoked < until.min(asked) && violations.len() < 10 {
                let r = &self.requests[by];
                violations.push(format!(
                    "lease {lease} revoked at {revoked} µs, before {until} µs: {:?} sent at {} µs \
                     to n{} was answered {:?}",
                    r.kind, r.invoked, r.node, r.outcome
                ));
            }
            if !revoke_sent.contains_key(&lease) {
                self.counts.expired += 1;
            }
        }
        for (lease, _) in leases_left.iter().filter(|(lease, _)| ttls.contains_key(lease)) {
            violations.push(format!(
                "liveness: lease {lease} (TTL {} s) is still granted at the end, long after its \
                 client stopped keeping it alive",
                ttls[lease]
            ));
        }
        match attached_keys_left(reference, state) {
            Ok(keys) if keys.is_empty() => {}
            Ok(keys) => violations
                .push(format!("keys attached to leases outlived them: {}", keys.join(", "))),
            Err(e) => violations.push(format!("cannot read the final store: {e}")),
        }
        violations
    }
}

/// Records that `lease` was promised to live `ttl` seconds from `sent`, on clocks running up to
/// `clock_rate` times too fast.
fn promise(
    promised: &mut BTreeMap<i64, (Time, usize)>,
    lease: i64,
    sent: Time,
    ttl: i64,
    clock_rate: f64,
    request: usize,
) {
    let until = sent + (ttl as f64 * SECOND as f64 / clock_rate) as Time;
    let entry = promised.entry(lease).or_insert((until, request));
    if until > entry.0 {
        *entry = (until, request);
    }
}

/// The keys given leases that are still there, in either range (read at their newest
/// versions: range 2's may be above the meta range's revision).
fn attached_keys_left(engine: &dyn Engine, state: AppliedState) -> Result<Vec<String>> {
    let state = AppliedState { revision: i64::MAX, ..state };
    let mut left = Vec::new();
    for prefix in [KEY_PREFIX, SPREAD_KEY_PREFIX] {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a prefix") += 1;
        let request = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            keys_only: true,
            ..Default::default()
        };
        let response = read::range(&View::new(engine), &state, &request)?;
        left.extend(response.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()));
    }
    Ok(left)
}
