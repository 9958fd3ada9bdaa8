//! Transactions across ranges, as this member runs them: the shell around the core's
//! coordinator and lock resolution (`strata_core::coordinator`; the rules each range applies are
//! `strata_core::mvcc::locks`, the whole protocol is in `docs/sharding.md`).
//!
//! A lock met by a prepare, a write or a read makes the request roll back (a prepare) and try
//! again with jittered backoff until its deadline: etcd never fails a transaction for
//! contention. The leader of every range looks for locks every [`SWEEP_INTERVAL`]; one it has
//! seen for [`LOCK_TTL`] is taken for abandoned and resolved.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_core::coordinator::{self, Answer, Ask, Coordinator, Participant, Progress, Resolution};
use strata_core::mvcc::Response;
use strata_core::mvcc::locks::{self, LockRecord};
use strata_core::pb::etcdserverpb::{LeaseRevokeResponse, TxnRequest, TxnResponse};
use strata_core::raftstore::RangeShared;
use strata_core::range::META_RANGE_ID;
use strata_core::{Error, RangeId};
use tokio::time::Instant;

use super::Api;

/// A lock held this long is taken for abandoned by its coordinator.
pub const LOCK_TTL: Duration = Duration::from_secs(2);

/// How often a range's leader looks for abandoned locks.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// How often an expired lease's revocation across ranges is tried before the lease clock is
/// left to find it again.
const REVOKE_ATTEMPTS: u32 = 10;

/// The most a conflicting request waits before it tries again.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// This member's transactions across ranges: the ids it gives them, when it first saw each lock
/// of the ranges it leads (to tell an abandoned one), and what they came to.
pub struct Txns {
    member_id: u64,
    epoch: u64,
    next: AtomicU64,
    seen: Mutex<HashMap<RangeId, HashMap<Vec<u8>, Instant>>>,
    /// Transactions across ranges this member committed.
    pub committed: AtomicU64,
    /// Attempts it rolled back for a lock conflict (and tried again).
    pub conflicts: AtomicU64,
    /// Abandoned locks it resolved.
    pub resolved: AtomicU64,
}

impl Txns {
    pub fn new(member_id: u64, epoch: u64) -> Self {
        Self {
            member_id,
            epoch,
            next: AtomicU64::new(0),
            seen: Default::default(),
            committed: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            resolved: AtomicU64::new(0),
        }
    }

    fn next_id(&self) -> locks::TxnId {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        locks::txn_id(self.member_id, self.epoch, sequence)
    }
}

/// Backs off before trying again: jittered, doubling up to [`BACKOFF_MAX`], never past the
/// deadline. False if the deadline leaves no time to.
async fn back_off(backoff: &mut Duration, deadline: Instant) -> bool {
    let wait = backoff.mul_f64(0.5 + rand_fraction());
    if Instant::now() + wait >= deadline {
        return false;
    }
    tokio::time::sleep(wait).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    true
}

/// A number in [0, 1) that differs between calls (for jitter only).
fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Api {
    /// Runs `attempt` until it ends other than in a lock conflict or a range that changed under
    /// it (a split: `attempt` routes again), backing off between tries, until the request's
    /// deadline (then: timed out).
    pub async fn retrying_locked<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let deadline = Instant::now() + self.timeout();
        let mut backoff = Duration::from_millis(2);
        loop {
            match attempt().await {
                Err(
                    Error::Locked(_)
                    | Error::TxnAborted
                    | Error::EpochNotMatch { .. }
                    | Error::RangeUnavailable,
                ) => {
                    if !back_off(&mut backoff, deadline).await {
                        return Err(Error::Timeout);
                    }
                }
                other => return other,
            }
        }
    }

    /// Commits a transaction whose keys lie in the given ranges, atomically.
    pub async fn txn_across(&self, txn: TxnRequest) -> Result<TxnResponse, Error> {
        coordinator::check_supported(&txn)?;
        self.retrying_locked(|| async {
            // Routed for every attempt: a range that split since refuses its prepare.
            let participants = coordinator::participants(&txn, self.shell.shared_ranges())?;
            let (id, start_ts) =
                (self.txns.next_id(), coordinator::start_ts(self.shell.shared_ranges()));
            let (mut machine, progress) =
                Coordinator::start(txn.clone(), participants.clone(), id, start_ts)?;
            let outcome = self.run(|answer| machine.handle(answer), progress).await;
            match &outcome {
                Ok(_) => self.txns.committed.fetch_add(1, Ordering::Relaxed),
                Err(Error::Locked(_)) => self.txns.conflicts.fetch_add(1, Ordering::Relaxed),
                Err(_) => 0,
            };
            outcome
        })
        .await
    }

    /// Does what a machine asks, and tells it how each ended, until it is done.
    pub(super) async fn run(
        &self,
        mut handle: impl FnMut(Answer) -> Progress,
        mut progress: Progress,
    ) -> Result<TxnResponse, Error> {
        let timeout = self.timeout();
        let mut running = tokio::task::JoinSet::new();
        loop {
            for ask in progress.asks.drain(..) {
                let shell = self.shell.clone();
                match ask {
                    Ask::Revision => running
                        .spawn(async move { Answer::Revision(shell.revision(timeout).await) }),
                    Ask::Propose { slot, range_id, request } => running.spawn(async move {
                        Answer::Proposed(slot, shell.propose(range_id, request, timeout).await)
                    }),
                    Ask::Route { spans } => {
                        let found = coordinator::route(&spans, shell.shared_ranges());
                        running.spawn(async move { Answer::Routed(found) })
                    }
                    // Nobody waits for it, and it outlives the machine.
                    Ask::Send { range_id, request } => {
                        tokio::spawn(
                            async move { shell.propose(range_id, request, timeout).await },
                        );
                        continue;
                    }
                };
            }
            if let Some(outcome) = progress.outcome {
                return outcome;
            }
            let answer = running.join_next().await.ok_or_else(|| {
                Error::Internal("a transaction across ranges waits for nothing".into())
            })?;
            progress = handle(answer.map_err(|e| Error::Internal(format!("{e}")))?);
        }
    }

    /// Revokes a lease whose keys lie in several ranges, at one revision (`expiry_term`: see
    /// `Coordinator::revoke`).
    pub async fn revoke_across(&self, lease: i64, expiry_term: u64) -> Result<Response, Error> {
        let meta = (self.shell.shared_ranges().get(META_RANGE_ID))
            .ok_or_else(|| Error::Internal("the meta range is not here".into()))?;
        let meta = Participant::of(META_RANGE_ID, &meta);
        let revoked = self
            .retrying_locked(|| async {
                let (id, start_ts) =
                    (self.txns.next_id(), coordinator::start_ts(self.shell.shared_ranges()));
                let (mut machine, progress) =
                    Coordinator::revoke(lease, expiry_term, meta.clone(), id, start_ts);
                self.run(|answer| machine.handle(answer), progress).await
            })
            .await?;
        Ok(Response::LeaseRevoke(LeaseRevokeResponse { header: revoked.header }))
    }

    /// Revokes a lease the lease clock found expired in `term`, trying again after a retryable
    /// failure (not after the meta range refused it for another term: the leader that found it
    /// expired no longer leads), a few times at most: the lease clock finds it again later.
    async fn revoke_expired(self: Arc<Self>, lease: i64, term: u64) {
        for _ in 0..REVOKE_ATTEMPTS {
            match self.revoke_across(lease, term).await {
                Err(e) if e.is_retryable() && e != Error::NotLeader => {
                    let mut backoff = Duration::from_millis(50);
                    back_off(&mut backoff, Instant::now() + Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::debug!(lease, error = %e, "revoking an expired lease failed");
                    return;
                }
                Ok(_) => return,
            }
        }
    }

    /// Looks for abandoned locks in every range this member leads, and resolves them; and
    /// revokes the leases its lease clock found expired whose keys lie in several ranges. Runs
    /// for the life of the server.
    pub async fn resolve_abandoned_locks(self: Arc<Self>) {
        let mut interval = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            interval.tick().await;
            for (lease, term) in self.shell.shared_ranges().take_expired_across() {
                tokio::spawn(self.clone().revoke_expired(lease, term));
            }
            for (range_id, shared) in self.shell.shared_ranges().all() {
                for lock in self.abandoned(range_id, &shared) {
                    if let Err(e) = self.resolve(range_id, lock).await {
                        tracing::debug!(range_id, error = %e, "resolving an abandoned lock failed");
                    }
                }
            }
        }
    }

    /// The locks of a range this member leads that it has seen for [`LOCK_TTL`].
    fn abandoned(&self, range_id: RangeId, shared: &RangeShared) -> Vec<LockRecord> {
        if shared.lock_count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let descriptor = shared.descriptor.read().expect("descriptor lock").clone();
        let leader = shared.leader_id.load(Ordering::Acquire);
        let me = self.config.member_id();
        if !descriptor.replicas.iter().any(|r| r.replica_id == leader && r.node_id == me) {
            return Vec::new();
        }
        let table = shared.locks.read().expect("lock table lock");
        let found = table.locks().map(|(_, lock)| lock.clone()).collect();
        drop(table);
        let mut seen = self.txns.seen.lock().expect("seen lock");
        let seen = seen.entry(range_id).or_default();
        coordinator::abandoned(seen, found, Instant::now(), LOCK_TTL)
    }

    /// Finishes the transaction of an abandoned lock in range `range_id`.
    async fn resolve(&self, range_id: RangeId, lock: LockRecord) -> Result<(), Error> {
        let primary_range = (self.shell.shared_ranges().overlapping(&lock.primary_key, &[]))
            .first()
            .map(|(id, _)| *id)
            .ok_or_else(|| Error::Internal("the primary's range is not here".into()))?;
        let (mut machine, progress) = Resolution::start(lock, range_id, primary_range);
        self.run(|answer| machine.handle(answer), progress).await?;
        self.txns.resolved.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            range_id,
            committed = machine.committed(),
            "resolved the lock of an abandoned transaction"
        );
        Ok(())
    }
}
