//! The membership operator's side of the world: what it sees of the cluster, the changes it
//! proposes (chosen by `crate::members::Operator`), and the processes it starts and stops.

use strata_core::raftstore::StateRole;
use strata_core::range::META_RANGE_ID;

use super::{CLIENT_TIMEOUT, Event, MS, Reply, Role, World};
use crate::members;

/// A running member's view of the membership: its id, its applied index, the ids it records.
type MemberView = (u64, u64, Vec<u64>);

impl World {
    /// A random member to send a request to.
    pub(super) fn any_member(&mut self) -> u64 {
        let members: Vec<u64> =
            self.nodes.iter().filter(|n| n.role == Role::Member).map(|n| n.id).collect();
        *self.client_rng.pick(&members)
    }

    /// The members as recorded, as a linearizable `member list` sees them: by the leader of
    /// the highest term, once it applied all it committed. `None` while there is no such leader.
    pub(super) fn recorded_members(&self) -> Option<Vec<members::Recorded>> {
        use std::sync::atomic::Ordering::Acquire;
        let leader = (self.nodes.iter())
            .filter(|sim| sim.role == Role::Member && !sim.damaged)
            .filter_map(|sim| sim.node.as_ref())
            .map(|driver| driver.node())
            .filter(|node| node.role(META_RANGE_ID) == Some(StateRole::Leader))
            .max_by_key(|node| node.term(META_RANGE_ID))?;
        let shared = leader.shared(META_RANGE_ID)?;
        if shared.applied_index.load(Acquire) < shared.commit_index.load(Acquire) {
            return None;
        }
        let records = leader.members().ok().filter(|records| !records.is_empty())?;
        Some(records.into_iter().map(|(id, record)| (id, record.is_learner)).collect())
    }

    /// What each running member records, at the index it applied: `(node, applied, ids)`.
    fn member_views(&self) -> Vec<MemberView> {
        (self.nodes.iter())
            .filter(|sim| !sim.damaged && sim.role == Role::Member)
            .filter_map(|sim| Some((sim.id, sim.node.as_ref()?.node())))
            .map(|(id, node)| {
                let applied =
                    node.shared(META_RANGE_ID).map_or(0, |s| s.read_state().applied_index);
                let ids = node.members().unwrap_or_default().into_iter().map(|(id, _)| id);
                (id, applied, ids.collect())
            })
            .collect()
    }

    /// At the end, when the cluster has settled: members removed by a change applied after the
    /// operator last looked stop now. The member that applied the most knows.
    pub(super) fn stop_removed_members(&mut self) {
        let views = self.member_views();
        let Some((_, _, recorded)) = views.iter().max_by_key(|(_, applied, _)| *applied) else {
            return;
        };
        let gone: Vec<u64> = (self.nodes.iter())
            .filter(|sim| sim.role == Role::Member && !recorded.contains(&sim.id))
            .map(|sim| sim.id)
            .collect();
        if !recorded.is_empty() {
            for id in gone {
                self.leave(id);
            }
        }
    }

    /// Whether node `id` applied its own removal.
    pub(super) fn removed_by_records(&self, id: u64) -> bool {
        let Some(driver) = &self.nodes[id as usize - 1].node else { return false };
        let records = driver.node().members().unwrap_or_default();
        !records.is_empty() && !records.iter().any(|(member, _)| *member == id)
    }

    /// The operator's round: start the processes of members recorded since, stop those of
    /// members removed since, and (while the faults go on) make the next change.
    pub(super) fn operate(&mut self) {
        let every = self.client_rng.range(300 * MS, 900 * MS);
        self.schedule(every, Event::Operate);
        let views = self.member_views();
        // A member added by a change whose answer was lost: any record of it was committed.
        for (_, applied, ids) in &views {
            for &id in ids {
                self.join(id);
                let seen = self.recorded_at.entry(id).or_default();
                *seen = (*seen).max(*applied);
            }
        }
        // A removed member stops once every running member that stays has applied its
        // removal — applied more of the log than a node that recorded it, and does not record
        // it. Stopped earlier, the others could be left in the joint configuration, still
        // needing its vote.
        let newest = views.iter().max_by_key(|(_, applied, _)| *applied);
        let staying: Vec<&MemberView> = match newest {
            Some((_, _, ids)) => views.iter().filter(|(node, _, _)| ids.contains(node)).collect(),
            None => Vec::new(),
        };
        let removed: Vec<u64> = (self.nodes.iter())
            .filter(|sim| sim.role == Role::Member)
            .filter(|sim| {
                let seen = self.recorded_at.get(&sim.id).copied().unwrap_or(u64::MAX);
                !staying.is_empty()
                    && (staying.iter())
                        .all(|(_, applied, ids)| *applied > seen && !ids.contains(&sim.id))
            })
            .map(|sim| sim.id)
            .collect();
        for id in removed {
            self.leave(id);
        }
        if !self.faults_on {
            return;
        }
        let Some(recorded) = self.recorded_members() else { return };
        let leader = (self.nodes.iter())
            .filter_map(|sim| sim.node.as_ref())
            .map(|driver| driver.node())
            .filter(|node| node.role(META_RANGE_ID) == Some(StateRole::Leader))
            .max_by_key(|node| node.term(META_RANGE_ID));
        let caught_up: Vec<u64> = (recorded.iter())
            .filter(|m| leader.is_some_and(|l| l.learner_ready(META_RANGE_ID, m.0) == Ok(true)))
            .map(|m| m.0)
            .collect();
        let leader = leader.map(|node| node.node_id());
        let deadline = self.now + CLIENT_TIMEOUT;
        let caught_up = |id| caught_up.contains(&id);
        let change = match self.operator.next(self.now, deadline, &recorded, leader, caught_up) {
            None => return,
            Some(members::Action::MoveLeader { from, to }) => {
                self.log(|| format!("n{from} hands leadership to n{to}"));
                self.with_node(from, |_, driver| {
                    driver.node_mut().transfer_leader(META_RANGE_ID, to)
                });
                return self.round(from);
            }
            Some(members::Action::Change(change)) => change,
        };
        self.log(|| format!("membership change: {change:?}"));
        let node = self.any_member();
        let request = strata_core::command::Request::MemberChange(change);
        let handled = self.with_node(node, |_, driver| {
            driver.propose(META_RANGE_ID, request, deadline, Reply::Member)
        });
        if handled.is_none() {
            self.operator.answered(false);
        }
        self.round(node);
    }

    /// Node `id` was added to the cluster: its process starts, with an empty disk.
    pub(super) fn join(&mut self, id: u64) {
        if self.nodes[id as usize - 1].role == Role::Spare {
            self.nodes[id as usize - 1].role = Role::Member;
            self.operator.counts.joined += 1;
            self.log(|| format!("n{id} joins"));
            self.launch(id);
        }
    }

    /// Node `id` is no longer a member: its process stops for good.
    pub(super) fn leave(&mut self, id: u64) {
        if self.nodes[id as usize - 1].role != Role::Member {
            return;
        }
        self.nodes[id as usize - 1].role = Role::Removed;
        self.operator.counts.removed += 1;
        self.crash(id);
        self.log(|| format!("n{id} left the cluster"));
    }
}
