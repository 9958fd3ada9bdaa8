//! The leader's lease clock.
//!
//! Which leases exist is replicated state (see `mvcc::lease`); when each one expires is not. Only
//! the leader keeps time for leases, in ticks of its own clock: keep-alives reach it and push a
//! lease's expiry forward, and when a lease expires the leader proposes its revocation through
//! Raft, so every replica deletes the same keys at the same revision.
//!
//! A new leader knows nothing of its predecessor's clock. It gives every lease its whole TTL
//! again, plus an election timeout, from the moment it takes over (as etcd does): a leader
//! change can make a lease live longer, never shorter.

use std::collections::BTreeMap;

use crate::mvcc::LeaseChange;

struct Lease {
    ttl: i64,
    /// The tick at which the lease expires.
    expiry: u64,
    /// When its revocation was last proposed, if it was.
    revoking: Option<u64>,
}

pub struct Lessor {
    tick_ms: u64,
    /// Every lease, while this node is the leader; empty otherwise.
    leases: BTreeMap<i64, Lease>,
    active: bool,
}

impl Lessor {
    /// A lease clock ticking every `tick_ms` milliseconds.
    pub fn new(tick_ms: u64) -> Self {
        Self { tick_ms: tick_ms.max(1), leases: BTreeMap::new(), active: false }
    }

    /// Whether this node keeps the lease clock (it is the leader).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Ticks in `seconds`, rounded up: a lease never gets less than its TTL, whatever the
    /// tick length.
    pub fn ticks(&self, seconds: i64) -> u64 {
        (seconds.max(0) as u64).saturating_mul(1000).div_ceil(self.tick_ms)
    }

    /// The tick at which a lease of `ttl` seconds renewed at tick `now` expires. Part of the
    /// current tick has passed already, so a whole TTL takes one tick more than it holds.
    fn expiry(&self, now: u64, ttl: i64) -> u64 {
        now + self.ticks(ttl) + 1
    }

    /// Takes over the lease clock with `leases` as `(id, ttl)`: each expires its whole TTL plus
    /// `extend` ticks from `now`.
    pub fn promote(&mut self, leases: impl IntoIterator<Item = (i64, i64)>, now: u64, extend: u64) {
        self.active = true;
        self.leases = leases
            .into_iter()
            .map(|(id, ttl)| {
                (id, Lease { ttl, expiry: self.expiry(now, ttl) + extend, revoking: None })
            })
            .collect();
    }

    /// Gives up the lease clock (another node leads).
    pub fn demote(&mut self) {
        self.active = false;
        self.leases.clear();
    }

    /// Follows a lease granted or revoked by an applied request.
    pub fn apply(&mut self, change: LeaseChange, now: u64) {
        if !self.active {
            return;
        }
        match change {
            LeaseChange::Granted { id, ttl } => {
                let expiry = self.expiry(now, ttl);
                self.leases.insert(id, Lease { ttl, expiry, revoking: None });
            }
            LeaseChange::Revoked { id } => {
                self.leases.remove(&id);
            }
        }
    }

    /// Renews a lease for its whole TTL from `now`; returns the TTL, or `None` if this clock
    /// does not know the lease.
    pub fn renew(&mut self, id: i64, now: u64) -> Option<i64> {
        let ttl = self.leases.get(&id)?.ttl;
        let expiry = self.expiry(now, ttl);
        let lease = self.leases.get_mut(&id)?;
        // An expired lease whose revocation is under way is not renewed (as in etcd).
        if lease.revoking.is_some() {
            return None;
        }
        lease.expiry = expiry;
        Some(lease.ttl)
    }

    /// `(remaining seconds, granted TTL)` of a lease. Whole seconds left, rounded down as etcd
    /// rounds them (a lease granted for 60 s has 59 left a moment later).
    pub fn remaining(&self, id: i64, now: u64) -> Option<(i64, i64)> {
        let lease = self.leases.get(&id)?;
        let left_ms = lease.expiry.saturating_sub(now + 2) * self.tick_ms;
        Some(((left_ms / 1000) as i64, lease.ttl))
    }

    /// Leases that have expired and whose revocation was not proposed in the last
    /// `retry_ticks` (a proposal can be lost to a leader change).
    pub fn expired(&mut self, now: u64, retry_ticks: u64) -> Vec<i64> {
        let mut out = Vec::new();
        for (&id, lease) in &mut self.leases {
            let due = lease.revoking.is_none_or(|at| now >= at + retry_ticks);
            if lease.expiry <= now && due {
                lease.revoking = Some(now);
                out.push(id);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_ticks() {
        // A 300 ms tick: 2 s is 6.67 ticks, which must become 7, never 6.
        let lessor = Lessor::new(300);
        assert_eq!(lessor.ticks(2), 7);
        assert_eq!(Lessor::new(600).ticks(1), 2);
        assert_eq!(Lessor::new(100).ticks(3), 30);
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let mut lessor = Lessor::new(100);
        lessor.promote([(1, 2), (2, 5)], 0, 0);
        assert_eq!(lessor.expired(20, 30), Vec::<i64>::new());
        assert_eq!(lessor.renew(1, 15), Some(2));
        assert_eq!(lessor.remaining(1, 15), Some((1, 2)));
        // Renewed during tick 15: 20 whole ticks from its end.
        assert_eq!(lessor.expired(35, 30), Vec::<i64>::new());
        assert_eq!(lessor.expired(36, 30), vec![1]);
        assert_eq!(lessor.expired(37, 30), Vec::<i64>::new(), "proposed once");
        assert_eq!(lessor.renew(1, 37), None, "being revoked");
        assert_eq!(lessor.expired(66, 30), vec![1, 2], "re-proposed after the retry interval");
        lessor.apply(LeaseChange::Revoked { id: 1 }, 67);
        assert_eq!(lessor.remaining(1, 67), None);
    }

    #[test]
    fn a_new_leader_gives_every_lease_its_whole_ttl_again() {
        let mut lessor = Lessor::new(100);
        assert_eq!(lessor.renew(1, 0), None, "inactive");
        lessor.apply(LeaseChange::Granted { id: 1, ttl: 3 }, 0);
        assert!(lessor.is_empty(), "only the leader keeps the clock");
        lessor.promote([(1, 3)], 100, 10);
        assert_eq!(lessor.remaining(1, 100), Some((3, 3)));
        assert_eq!(lessor.expired(140, 30), Vec::<i64>::new());
        assert_eq!(lessor.expired(141, 30), vec![1]);
        lessor.demote();
        assert!(!lessor.is_active() && lessor.is_empty());
    }
}
