//! Handing proposals to raft-rs: a round's requests as `MsgPropose` messages, membership
//! changes as configuration changes. `Node::propose_many` decides the order; these build what
//! raft-rs is given.

use raft::StateRole;
use raft::prelude::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry, Message,
    MessageType,
};

use super::config::Config;
use super::replica::Replica;
use super::stamping;
use crate::command::{Command, Request};
use crate::{Error, Result};

/// Hands the first of `proposals` (none a membership change) to Raft in one `MsgPropose`, as
/// many as fit in `append_bytes_max` bytes of entries (one at least), and says how many.
pub(super) fn propose_entries(
    replica: &mut Replica,
    config: &Config,
    next_sequence: &mut u64,
    proposals: &[(u64, Request)],
) -> Result<usize> {
    let mut entries = Vec::new();
    let mut bytes = 0;
    for (id, request) in proposals {
        let size = request.encoded_len() as u64;
        if !entries.is_empty() && bytes + size > config.append_bytes_max {
            break;
        }
        bytes += size;
        let data = encode_command(config, next_sequence, *id, request, replica);
        entries.push(Entry { data, ..Default::default() });
    }
    let count = entries.len();
    let message = Message {
        msg_type: MessageType::MsgPropose as i32,
        from: config.node_id,
        entries,
        ..Default::default()
    };
    // A leader that stamps its writes holds them for a block from the revision oracle.
    let message =
        if stamping::stamps(replica) { stamping::take(replica, message) } else { Some(message) };
    if let Some(message) = message {
        replica.raw.step(message).map_err(proposal_error)?;
    }
    Ok(count)
}

/// Hands one request to Raft at once, without a sequence number (so the at-most-once marks
/// neither skip it nor let it overtake held proposals of this node): only for requests whose
/// second application changes nothing.
pub(super) fn propose_unheld(
    replica: &mut Replica,
    config: &Config,
    proposal_id: u64,
    request: &Request,
) -> Result<()> {
    let mut unsequenced = 0;
    let mut data = encode_command(config, &mut unsequenced, proposal_id, request, replica);
    // `encode_command` numbered it 0: a command without a sequence is always applied.
    debug_assert_eq!(Command::decode(&data).map(|c| c.sequence).ok(), Some(0));
    let entry = Entry { data: std::mem::take(&mut data), ..Default::default() };
    let message = Message {
        msg_type: MessageType::MsgPropose as i32,
        from: config.node_id,
        entries: vec![entry],
        ..Default::default()
    };
    replica.raw.step(message).map_err(proposal_error)
}

/// Proposes a membership change: a Raft configuration change, carrying the command. Raft takes
/// one at a time and would turn a second into a no-op that never answers, so the leader refuses
/// it here instead.
pub(super) fn propose_member_change(
    replica: &mut Replica,
    config: &Config,
    next_sequence: &mut u64,
    (id, request): &(u64, Request),
) -> Result<usize> {
    let Request::MemberChange(change) = request else {
        unreachable!("only membership changes are proposed as configuration changes")
    };
    if replica.raw.raft.state == StateRole::Leader && conf_change_pending(replica) {
        return Err(Error::MembershipChangePending);
    }
    let data = encode_command(config, next_sequence, *id, request, replica);
    replica.raw.propose_conf_change(data, conf_change_of(change)).map_err(proposal_error)?;
    Ok(1)
}

/// The entry data of a proposal: its command, numbered with the node's next sequence number
/// and stamped with the epoch of the range as this replica knows it.
fn encode_command(
    config: &Config,
    next_sequence: &mut u64,
    proposal_id: u64,
    request: &Request,
    replica: &Replica,
) -> Vec<u8> {
    let sequence = *next_sequence;
    *next_sequence += 1;
    let command = Command {
        proposer: config.node_id,
        proposal_id,
        proposer_epoch: config.epoch,
        sequence,
        range_epoch: replica.descriptor.epoch,
        block: None,
        request: None,
    };
    command.encode_with(request)
}

fn proposal_error(e: raft::Error) -> Error {
    match e {
        raft::Error::ProposalDropped => Error::NoLeader,
        other => Error::Internal(format!("proposal failed: {other}")),
    }
}

/// The Raft configuration change a membership change makes. Every change of who votes or learns
/// goes through a joint configuration (old and new voters must both agree) that Raft leaves by
/// itself once the change is applied: the two steps keep a quorum of the old configuration in
/// every decision until the new one has taken over, whatever the change. An update of peer URLs
/// changes nothing in Raft's configuration and is one simple step, answered when applied — the
/// member whose URLs changed may not hear of anything after it until it listens on them.
fn conf_change_of(change: &crate::command::MemberChange) -> ConfChangeV2 {
    use crate::command::MemberChangeKind;
    let learner = change.member.as_ref().is_some_and(|m| m.is_learner);
    let change_type = match MemberChangeKind::try_from(change.kind) {
        Ok(MemberChangeKind::AddLearner) => ConfChangeType::AddLearnerNode,
        Ok(MemberChangeKind::Remove) => ConfChangeType::RemoveNode,
        // New URLs only: Raft's configuration stays as it is (re-adding a member in its own
        // role changes nothing there).
        Ok(MemberChangeKind::Update) if learner => ConfChangeType::AddLearnerNode,
        _ => ConfChangeType::AddNode,
    };
    let mut single = ConfChangeSingle::default();
    single.set_change_type(change_type);
    single.node_id = change.id;
    let mut conf_change = ConfChangeV2::default();
    conf_change.set_changes(vec![single]);
    if MemberChangeKind::try_from(change.kind) != Ok(MemberChangeKind::Update) {
        conf_change.set_transition(ConfChangeTransition::Implicit);
    }
    conf_change
}

/// Whether a configuration change is under way: proposed and not applied, or a joint
/// configuration not left yet.
fn conf_change_pending(replica: &Replica) -> bool {
    let raft = &replica.raw.raft;
    raft.pending_conf_index > raft.raft_log.applied || replica.joint()
}

/// raft-rs leaves a joint configuration when the leader that entered it applies it; a leader
/// elected after that would stay joint for ever. Such a leader proposes the leaving itself.
pub(super) fn leave_joint_if_stuck(replica: &mut Replica) {
    let raft = &replica.raw.raft;
    let stuck = raft.state == StateRole::Leader
        && replica.joint()
        && raft.prs().conf().to_conf_state().auto_leave
        && raft.pending_conf_index <= raft.raft_log.applied;
    if stuck {
        // An empty change is "leave the joint configuration".
        let _ = replica.raw.propose_conf_change(Vec::new(), ConfChangeV2::default());
    }
}
