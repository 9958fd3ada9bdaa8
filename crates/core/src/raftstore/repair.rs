//! Replica repair: every range keeps a replica on every member of the cluster, and on nothing
//! else (placement on some of the members is the next issue's).
//!
//! Membership is the meta range's (its configuration changes write the member records); a data
//! range's replicas are its own descriptor's, and changing the members does not change them.
//! So the leader of each data range, now and then, compares them, one Raft configuration change
//! at a time:
//! 1. A replica on a node the meta range no longer records is removed. Left alone, a removed
//!    member's replicas keep counting in their ranges' quorums: remove two of five members and
//!    a range on all five dies with the next failure (the simulator found one that way).
//! 2. A member the range has no replica on is added as a learner; the new replica is created
//!    by the leader's messages and filled by its snapshot (`split`'s uninitialized replicas).
//! 3. A learner is promoted to voter once it has caught up and its member votes in the meta
//!    range (a member joining as a learner stays one in every range until it is promoted).

use std::collections::BTreeMap;

use super::driver::Driver;
use crate::RangeId;
use crate::command::{MemberChange, MemberChangeKind, Request};
use crate::range::META_RANGE_ID;

/// Ranges are checked this often, in ticks (each check reads the member records).
const REPAIR_TICKS: u64 = 10;

impl<T: Ord + Copy, P, R, K, O> Driver<T, P, R, K, O> {
    /// On a tick, now and then: in every range this node leads, proposes the next change that
    /// brings its replicas to the members (the module's rules). Nobody waits for it; one
    /// refused (another change pending) or lost is proposed again at a later check.
    pub(super) fn repair_replicas(&mut self) {
        if !self.ticks.is_multiple_of(REPAIR_TICKS) {
            return;
        }
        let led: Vec<_> = (self.node.range_ids().into_iter())
            .filter(|r| *r != META_RANGE_ID && self.node.leading_term(*r).is_some())
            .collect();
        if led.is_empty() {
            return;
        }
        let members: BTreeMap<u64, bool> = match self.node.members() {
            // A store from before member records: nothing to go by.
            Ok(members) if !members.is_empty() => {
                members.into_iter().map(|(id, record)| (id, record.is_learner)).collect()
            }
            _ => return,
        };
        for range_id in led {
            let Some(change) = self.next_repair(range_id, &members) else { continue };
            let proposal = self.take_id();
            let _ = self.node.propose(range_id, proposal, Request::MemberChange(change));
        }
    }

    /// The change a range's replicas need next, given the members (and whether each is a
    /// learner in the meta range).
    fn next_repair(
        &self,
        range_id: RangeId,
        members: &BTreeMap<u64, bool>,
    ) -> Option<MemberChange> {
        let descriptor = self.node.descriptor(range_id)?;
        let change =
            |kind: MemberChangeKind, id| MemberChange { kind: kind as i32, id, member: None };
        let replicas = &descriptor.replicas;
        if let Some(gone) = replicas.iter().find(|r| !members.contains_key(&r.node_id)) {
            return Some(change(MemberChangeKind::Remove, gone.node_id));
        }
        if let Some(missing) = members.keys().find(|id| !replicas.iter().any(|r| r.node_id == **id))
        {
            return Some(change(MemberChangeKind::AddLearner, *missing));
        }
        let ready = |id| self.node.learner_ready(range_id, id) == Ok(true);
        let promotable = (replicas.iter())
            .find(|r| r.learner && members.get(&r.node_id) == Some(&false) && ready(r.node_id));
        promotable.map(|r| change(MemberChangeKind::Promote, r.node_id))
    }
}
