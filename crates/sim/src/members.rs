//! Membership changes under faults: an operator adds members (as learners, or straight away as
//! voters), promotes learners that caught up, and removes voters and learners — the leader
//! included — while nodes crash, pause and are cut off. Every change goes through a joint
//! configuration, which Raft must leave again.
//!
//! The operator acts as one would with `member list` and `member add/promote/remove`: it reads
//! the recorded members from the leader, starts the process of a member once its addition is
//! answered or it shows up in any node's records (the new node joins with an empty disk and
//! receives the state by snapshot), and stops the process of a removed member once every member
//! that stays has applied the removal: stopped before, it could leave them in the joint
//! configuration, still needing its vote. It removes the leader as the server's `MemberRemove`
//! does: leadership moves to another voter first. A removed node also stops by itself two
//! seconds after it applies its removal, as the server does.
//!
//! The checker, at the end: every running member applied the same configuration, it is not
//! joint, and it holds exactly the recorded members in their recorded roles. The other checkers
//! (convergence, durability, linearizability, watches, leases) run over whatever members the
//! cluster has by then.

use strata_core::command::{MemberChange, MemberChangeKind, MemberRecord};
use strata_core::raftstore::{Configuration, Node};
use strata_core::range::META_RANGE_ID;
use strata_core::rng::Rng;

use crate::world::Time;

/// A member as recorded: id and whether it is a learner.
pub type Recorded = (u64, bool);

/// What the operator did, for the report.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub proposed: u64,
    /// Changes answered as applied.
    pub applied: u64,
    /// Nodes that joined a running cluster.
    pub joined: u64,
    pub removed: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.proposed += other.proposed;
        self.applied += other.applied;
        self.joined += other.joined;
        self.removed += other.removed;
    }
}

/// The operator's next step.
#[derive(Debug)]
pub enum Action {
    Change(MemberChange),
    /// Leadership moves from the leader to another voter (before the leader is removed).
    MoveLeader {
        from: u64,
        to: u64,
    },
}

pub struct Operator {
    rng: Rng,
    /// Node ids never used yet, for members to add.
    spare: Vec<u64>,
    /// Until when a change it proposed may still be answered: it makes one at a time.
    busy_until: Option<Time>,
    /// The member the change in flight adds, if it adds one.
    adding: Option<u64>,
    pub counts: Counts,
}

impl Operator {
    /// An operator with `spare` ids to add members under (none: it changes nothing).
    pub fn new(rng: Rng, spare: Vec<u64>) -> Self {
        Self { rng, spare, busy_until: None, adding: None, counts: Counts::default() }
    }

    /// What to do next, given the recorded members, the leader and whether a learner has caught
    /// up with it (only such a learner may be promoted, as in etcd). A change's answer is due by
    /// `deadline` (the node it was sent to may crash and never give one). The leader is removed
    /// as the server's `MemberRemove` removes it: leadership moves to another voter first, and
    /// the removal comes in a later round.
    pub fn next(
        &mut self,
        now: Time,
        deadline: Time,
        recorded: &[Recorded],
        leader: Option<u64>,
        caught_up: impl Fn(u64) -> bool,
    ) -> Option<Action> {
        if self.busy_until.is_some_and(|until| now < until) {
            return None;
        }
        let voters: Vec<u64> = recorded.iter().filter(|m| !m.1).map(|m| m.0).collect();
        let learners: Vec<u64> = recorded.iter().filter(|m| m.1).map(|m| m.0).collect();
        let mut choices: Vec<(MemberChangeKind, u64)> = Vec::new();
        if let Some(&id) = self.spare.first().filter(|_| recorded.len() < 5) {
            choices.extend([(MemberChangeKind::AddLearner, id); 3]);
            choices.push((MemberChangeKind::AddVoter, id));
        }
        for &id in learners.iter().filter(|id| caught_up(**id)) {
            choices.extend([(MemberChangeKind::Promote, id); 3]);
        }
        // Three voters stay, so one damaged disk never costs the quorum.
        if voters.len() > 3 {
            choices.extend(voters.iter().map(|id| (MemberChangeKind::Remove, *id)));
        }
        choices.extend(learners.iter().map(|id| (MemberChangeKind::Remove, *id)));
        let &(kind, id) = if choices.is_empty() { return None } else { self.rng.pick(&choices) };
        if kind == MemberChangeKind::Remove && leader == Some(id) {
            let to = voters.iter().copied().find(|voter| *voter != id)?;
            return Some(Action::MoveLeader { from: id, to });
        }
        let adds = matches!(kind, MemberChangeKind::AddLearner | MemberChangeKind::AddVoter);
        if adds {
            self.spare.remove(0);
        }
        self.adding = adds.then_some(id);
        self.busy_until = Some(deadline);
        self.counts.proposed += 1;
        let member = (kind != MemberChangeKind::Remove).then(|| MemberRecord {
            is_learner: kind == MemberChangeKind::AddLearner,
            ..initial(id).1
        });
        Some(Action::Change(MemberChange { kind: kind as i32, id, member }))
    }

    /// The answer to its change came; returns the member it added, whose process the operator
    /// starts now (the cluster may need it for a quorum).
    pub fn answered(&mut self, applied: bool) -> Option<u64> {
        self.busy_until = None;
        let adding = self.adding.take();
        if applied {
            self.counts.applied += 1;
            return adding;
        }
        None
    }
}

/// Node `id` as a voting member, as the cluster records it.
pub fn initial(id: u64) -> (u64, MemberRecord) {
    let record = MemberRecord {
        name: format!("n{id}"),
        peer_urls: vec![format!("sim://n{id}")],
        is_learner: false,
    };
    (id, record)
}

/// The end: each running member's `(id, configuration, recorded members)` must agree with every
/// other's, be no joint configuration, and match the records.
pub fn check(replicas: &[(u64, Configuration, Vec<Recorded>)]) -> Vec<String> {
    let mut violations = Vec::new();
    let Some((first, reference, _)) = replicas.first() else { return violations };
    for (id, configuration, recorded) in replicas {
        if configuration != reference {
            violations.push(format!(
                "n{id} applied the configuration {configuration:?}, n{first} {reference:?}"
            ));
        }
        if configuration.joint {
            violations.push(format!("n{id} is still in a joint configuration at the end"));
        }
        let ids = |learner: bool| -> Vec<u64> {
            let mut ids: Vec<u64> =
                recorded.iter().filter(|m| m.1 == learner).map(|m| m.0).collect();
            ids.sort_unstable();
            ids
        };
        if configuration.voters != ids(false) || configuration.learners != ids(true) {
            violations.push(format!(
                "n{id}'s Raft configuration {configuration:?} differs from its member records \
                 {recorded:?}"
            ));
        }
    }
    violations
}

/// The ranges past the meta range keep replicas on members only: the replicas of a removed
/// member were removed too (`raftstore/repair.rs`), or they would go on counting in their
/// ranges' quorums. Required of a range whose voters running at the end (`live`) are a quorum:
/// one that lost its quorum to faults cannot change its replicas.
pub fn check_ranges(id: u64, node: &Node, live: &[u64]) -> Vec<String> {
    let Ok(members) = node.members() else {
        return vec![format!("n{id}: cannot read its member records")];
    };
    let members: Vec<u64> = members.into_iter().map(|(id, _)| id).collect();
    let mut violations = Vec::new();
    for range_id in node.range_ids().into_iter().filter(|r| *r != META_RANGE_ID) {
        let Some(descriptor) = node.descriptor(range_id) else { continue };
        let voters: Vec<u64> =
            (descriptor.replicas.iter()).filter(|r| !r.learner).map(|r| r.node_id).collect();
        if voters.iter().filter(|v| live.contains(v)).count() * 2 <= voters.len() {
            continue;
        }
        let replicas = descriptor.replicas.iter().map(|r| r.node_id);
        let strays: Vec<u64> = replicas.filter(|n| !members.contains(n)).collect();
        if !strays.is_empty() {
            violations.push(format!(
                "n{id}: range {range_id} keeps replicas on {strays:?}, no longer members"
            ));
        }
    }
    violations
}
