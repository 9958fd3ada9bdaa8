//! Replica repair, its first rule: a range keeps no replica on a node that is no longer a
//! member of the cluster.
//!
//! Membership is the meta range's (its configuration changes write the member records); a data
//! range's replicas are its own descriptor's, and removing a member does not change them. Left
//! alone, a removed member's replicas keep counting in their ranges' quorums: remove two of
//! five members and a range on all five dies with the next failure (the simulator found one
//! that way). So the leader of each range that has a replica on a node the meta range no longer
//! records removes that replica, one Raft configuration change at a time (a removal goes
//! through a joint configuration, like any membership change).

use std::collections::BTreeSet;

use super::driver::Driver;
use crate::command::{MemberChange, MemberChangeKind, Request};
use crate::range::META_RANGE_ID;

/// Ranges are checked this often, in ticks (each check reads the member records).
const REPAIR_TICKS: u64 = 10;

impl<T: Ord + Copy, P, R, K, O> Driver<T, P, R, K, O> {
    /// On a tick, now and then: in every range this node leads, proposes the removal of a
    /// replica on a node that is no longer a member. Nobody waits for it; one refused (another
    /// change pending) or lost is proposed again at a later check.
    pub(super) fn remove_replicas_of_former_members(&mut self) {
        if !self.ticks.is_multiple_of(REPAIR_TICKS) {
            return;
        }
        let led: Vec<_> = (self.node.range_ids().into_iter())
            .filter(|r| *r != META_RANGE_ID && self.node.leading_term(*r).is_some())
            .collect();
        if led.is_empty() {
            return;
        }
        let members: BTreeSet<u64> = match self.node.members() {
            // A store from before member records: nothing to go by.
            Ok(members) if !members.is_empty() => members.into_iter().map(|(id, _)| id).collect(),
            _ => return,
        };
        for range_id in led {
            let Some(descriptor) = self.node.descriptor(range_id) else { continue };
            let replicas = descriptor.replicas.iter();
            let Some(gone) = replicas.map(|r| r.node_id).find(|n| !members.contains(n)) else {
                continue;
            };
            let change =
                MemberChange { kind: MemberChangeKind::Remove as i32, id: gone, member: None };
            let proposal = self.take_id();
            let _ = self.node.propose(range_id, proposal, Request::MemberChange(change));
        }
    }
}
