//! One replica of one range: a raft-rs `RawNode` over the replica's log, and the range's
//! applied state.

use std::sync::Arc;

use prost::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType};
use raft::{RawNode, StateRole};
use strata_storage::{Engine, Keyspace, WriteBatch};

use super::log::{RaftLog, decode, encode};
use super::read_index::Reads;
use super::session::Sessions;
use super::shared::RangeShared;
use super::stamping::Stamping;
use crate::command::Command;
use crate::mvcc::{AppliedState, Applier, LeaseChange, Response};
use crate::range::{META_RANGE_ID, RangeDescriptor};
use crate::{NodeId, RangeId, Result, keys};

pub(crate) struct Replica {
    pub range_id: RangeId,
    /// The range's span, epoch and replicas, as this replica applied them. A replica that is
    /// joining its range knows none of it (no epoch) until its first snapshot arrives.
    pub descriptor: RangeDescriptor,
    pub raw: RawNode<RaftLog>,
    pub applied: AppliedState,
    /// Which proposals were applied already (at most once each).
    pub sessions: Sessions,
    pub shared: Arc<RangeShared>,
    /// Linearizable reads waiting for ReadIndex, this node's and (on a leader) its followers'.
    pub reads: Reads,
    /// On a leader whose range takes revisions from the oracle: proposals waiting for a block.
    pub stamping: Stamping,
    /// `Mutation::SkipApply` not yet acted on.
    pub skip_apply: bool,
    /// `Mutation::LocksUnpublished`.
    pub hide_locks: bool,
    /// `Mutation::RevokeForgetsRanges`.
    pub forget_lease_ranges: bool,
    /// `Mutation::EpochUnchecked`.
    pub epoch_unchecked: bool,
    /// This process's membership change whose joint configuration was entered and not left
    /// yet: its client is answered when the change is complete.
    pub awaiting_leave: Option<u64>,
    /// Ranges this replica's applied splits created, whose replicas the round opens once the
    /// batch creating them is written (`split`).
    pub split_off: Vec<RangeId>,
}

/// Member records written by the entries of one apply batch (`None`: deleted), not yet in the
/// engine; written to it with the batch.
type MemberWrites = std::collections::BTreeMap<u64, Option<crate::command::MemberRecord>>;

/// The result of one of this node's proposals.
pub(crate) type Completion = (u64, Result<Response>);

impl Replica {
    /// Applies committed entries in order; returns the results of this node's own proposals and
    /// the leases granted and revoked. Entries of other proposers are applied all the same,
    /// silently.
    pub fn apply_entries(
        &mut self,
        engine: &dyn Engine,
        entries: &[Entry],
        node_id: NodeId,
        epoch: u64,
        batch: &mut WriteBatch,
        members_changed: &mut bool,
    ) -> Result<(Vec<Completion>, Vec<LeaseChange>)> {
        let mut completions = Vec::new();
        if entries.is_empty() {
            return Ok((completions, Vec::new()));
        }
        let shared = Arc::clone(&self.shared);
        let mut applier = Applier::with_memo(engine, self.range_id, self.applied, &shared.memo)
            .with_span(self.descriptor.span())
            .with_oracle_revisions(self.descriptor.oracle_revisions)
            .with_locks(&shared.locks);
        let mut member_writes = MemberWrites::new();
        for entry in entries {
            if entry.index <= self.applied.applied_index {
                continue; // already applied (e.g. covered by a snapshot)
            }
            applier.mark_applied(entry.index, entry.term);
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {} // a new leader's no-op
                EntryType::EntryNormal => {
                    let command = decode_command(&entry.data, entry.index)?;
                    let Some(request) = &command.request else { continue };
                    let own = command.proposer == node_id && command.proposer_epoch == epoch;
                    if !self.admit(&command, own, &mut completions) {
                        continue;
                    }
                    if self.skip_apply && entry.index >= 10 {
                        self.skip_apply = false;
                        continue;
                    }
                    // A range whose revisions come from the oracle applies no write its leader
                    // did not stamp: one would take a revision another range may hold.
                    let unstamped = self.descriptor.oracle_revisions
                        && command.block.is_none()
                        && request.takes_revision();
                    if unstamped {
                        if own {
                            completions
                                .push((command.proposal_id, Err(crate::Error::LeaderChanged)));
                        }
                        continue;
                    }
                    let admitted = match self.epoch_unchecked {
                        false => (self.descriptor.admits(command.range_epoch))
                            .and_then(|()| self.descriptor.holds_keys_of(request)),
                        true => Ok(()),
                    };
                    if let Err(refused) = admitted {
                        if own {
                            completions.push((command.proposal_id, Err(refused)));
                        }
                        continue;
                    }
                    if let crate::command::Request::Split(split) = request {
                        let result = self.apply_split(&mut applier, split, engine, batch);
                        if let Err(e @ (crate::Error::Storage(_) | crate::Error::Internal(_))) =
                            &result
                        {
                            return Err(e.clone());
                        }
                        if own {
                            completions.push((command.proposal_id, result));
                        }
                        continue;
                    }
                    let mut result = applier.apply_stamped(request, command.block);
                    if let (true, Ok(Response::LeasePrepared { spans, .. })) =
                        (self.forget_lease_ranges, &mut result)
                    {
                        spans.clear();
                    }
                    // A storage failure is not the request's outcome: answering it and moving on
                    // would let this replica skip a write the others applied. Stop instead.
                    if let Err(e @ (crate::Error::Storage(_) | crate::Error::Internal(_))) = &result
                    {
                        return Err(e.clone());
                    }
                    if own {
                        completions.push((command.proposal_id, result));
                    }
                }
                EntryType::EntryConfChange => {
                    let change: ConfChange = decode("conf change", &entry.data)?;
                    self.apply_conf_change(&change, batch)?;
                }
                EntryType::EntryConfChangeV2 => {
                    let change: ConfChangeV2 = decode("conf change", &entry.data)?;
                    if entry.context.is_empty() {
                        // Leaving a joint configuration. A change Raft refuses is refused on
                        // every replica alike, and changes nothing.
                        if self.apply_conf_change(&change, batch).is_ok() {
                            self.forget_removed_members(engine, &mut member_writes)?;
                            *members_changed = true;
                            if let Some(proposal) = self.awaiting_leave.take() {
                                completions.push((proposal, Ok(Response::MemberChanged)));
                            }
                        }
                        continue;
                    }
                    // A membership change: its command rides in the entry's context.
                    let command = decode_command(&entry.context, entry.index)?;
                    let own = command.proposer == node_id && command.proposer_epoch == epoch;
                    if !self.admit(&command, own, &mut completions) {
                        continue;
                    }
                    let result =
                        self.apply_member_change(&change, &command, batch, &mut member_writes);
                    match result {
                        // Answered once the joint configuration (if it entered one) is left.
                        Ok(_) if own && self.joint() => {
                            self.awaiting_leave = Some(command.proposal_id)
                        }
                        Err(_) | Ok(_) if own => completions.push((command.proposal_id, result)),
                        _ => {}
                    }
                    *members_changed = true;
                }
            }
        }
        for (id, record) in member_writes {
            let key = keys::member(id);
            match record {
                Some(record) => batch.put(Keyspace::Mvcc, key, record.encode_to_vec()),
                None => batch.delete(Keyspace::Mvcc, key),
            }
        }
        let leases = applier.take_lease_changes();
        let (writes, state) = applier.finish();
        batch.extend(writes);
        self.sessions.write_changed(self.range_id, batch);
        self.applied = state;
        Ok((completions, leases))
    }

    /// Whether to apply `command`: not if it is a copy of an applied proposal or was overtaken
    /// by a later one. If it is this process's and still awaited, it was never applied: its
    /// client is told the leader changed.
    fn admit(&mut self, command: &Command, own: bool, completions: &mut Vec<Completion>) -> bool {
        let admitted = self.sessions.admit(command);
        if !admitted && own {
            completions.push((command.proposal_id, Err(crate::Error::LeaderChanged)));
        }
        admitted
    }

    /// Applies a membership change to Raft's configuration (entering a joint one) and to the
    /// member records. A removed member's record stays until the joint configuration is left
    /// (see `forget_removed_members`): until then it still votes, and its peers must still find
    /// it. A change Raft refuses (it would leave no voter, say) changes nothing, on every
    /// replica alike.
    fn apply_member_change(
        &mut self,
        change: &ConfChangeV2,
        command: &Command,
        batch: &mut WriteBatch,
        member_writes: &mut MemberWrites,
    ) -> Result<Response> {
        use crate::command::{MemberChangeKind, Request};
        let Some(Request::MemberChange(member_change)) = &command.request else {
            return Err(crate::Error::Internal("a configuration change without a member".into()));
        };
        self.apply_conf_change(change, batch)?;
        if self.range_id != META_RANGE_ID {
            return Ok(Response::MemberChanged); // a data range's replicas are not members
        }
        match (MemberChangeKind::try_from(member_change.kind), &member_change.member) {
            (Ok(MemberChangeKind::Remove), _) | (_, None) => {}
            (_, Some(record)) => {
                member_writes.insert(member_change.id, Some(record.clone()));
            }
        }
        Ok(Response::MemberChanged)
    }

    /// Whether Raft's configuration is joint (between two configurations).
    pub fn joint(&self) -> bool {
        !self.raw.raft.prs().conf().to_conf_state().voters_outgoing.is_empty()
    }

    /// Deletes the records of members that are no longer in Raft's configuration. Only the meta
    /// range's configuration is the cluster's membership: a data range is replicated on some
    /// of the nodes, and its configuration says nothing of the others.
    fn forget_removed_members(&self, engine: &dyn Engine, writes: &mut MemberWrites) -> Result<()> {
        if self.range_id != META_RANGE_ID {
            return Ok(());
        }
        let conf = self.raw.raft.prs().conf();
        let stored = crate::mvcc::members::all(&crate::mvcc::view::View::new(engine))?;
        let recorded: Vec<u64> = (stored.iter().map(|(id, _)| *id))
            .filter(|id| !matches!(writes.get(id), Some(None)))
            .chain(writes.iter().filter(|(_, r)| r.is_some()).map(|(id, _)| *id))
            .collect();
        for id in recorded {
            if !conf.voters().contains(id) && !conf.learners().contains(&id) {
                writes.insert(id, None);
            }
        }
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        change: &impl raft_proto::ConfChangeI,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let conf_state = self
            .raw
            .apply_conf_change(change)
            .map_err(|e| crate::Error::Internal(format!("conf change failed: {e}")))?;
        batch.put(Keyspace::Meta, keys::range_conf_state(self.range_id), encode(&conf_state));
        self.descriptor =
            self.descriptor.with_configuration(&conf_state.voters, &conf_state.learners);
        let descriptor = self.descriptor.encode_to_vec();
        batch.put(Keyspace::Meta, keys::range_descriptor(self.range_id), descriptor);
        self.raw.mut_store().set_conf_state(conf_state);
        self.step_down_if_removed();
        Ok(())
    }

    /// A leader that is no longer a voter must stop leading: raft-rs keeps it leader but no
    /// longer tracks it, and panics when it next counts a commit. It first tells the remaining
    /// voters what is committed — the end of the joint configuration among it: a voter that
    /// has not applied that end still elects with the joint configuration, which needs this
    /// member's vote. Then it hands over to the voter with the most of the log (which
    /// campaigns at once) and becomes a follower.
    fn step_down_if_removed(&mut self) {
        let raft = &mut self.raw.raft;
        if raft.state != StateRole::Leader || raft.prs().conf().voters().contains(raft.id) {
            return;
        }
        raft.bcast_heartbeat();
        let successor = (raft.prs().iter())
            .filter(|(id, _)| raft.prs().conf().voters().contains(**id))
            .max_by_key(|(id, progress)| (progress.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(successor) = successor {
            raft.send_timeout_now(successor);
        }
        let term = raft.term;
        raft.become_follower(term, raft::INVALID_ID);
    }

    /// Lets a removed member answer a pre-vote in the candidate's own term.
    ///
    /// The voters that have not yet applied the end of a joint configuration still count this
    /// member's vote. If its log holds an entry theirs lack (appended while it led, never to
    /// be committed), it refuses them — and raft-rs puts what it knows is committed in a
    /// refusal, so that a candidate holding that entry commits it (raft-rs's commit by vote),
    /// applies the new configuration and can win without this member. But a member answers a
    /// pre-vote in its own term, and a candidate ignores answers from older terms: a removed
    /// member, which no longer campaigns and so falls behind in term, would go unheard, and
    /// the voters stay stuck. Pre-vote keeps a member's term from being raised by candidates
    /// that cannot win, so that it is not disrupted; a removed member has nothing to disrupt
    /// (no leader sends to it any more), and raising its term is safe as any term change is.
    pub(crate) fn answer_pre_vote_in_its_term(&mut self, message: &Message) {
        let raft = &mut self.raw.raft;
        // A pre-vote carries the term the candidate would campaign in: one past its own.
        let candidate_term = message.term.saturating_sub(1);
        if message.get_msg_type() == MessageType::MsgRequestPreVote
            && candidate_term > raft.term
            && !raft.prs().conf().voters().contains(raft.id)
            && !raft.prs().conf().learners().contains(&raft.id)
        {
            raft.become_follower(candidate_term, raft::INVALID_ID);
        }
    }
}

fn decode_command(bytes: &[u8], index: u64) -> Result<Command> {
    Command::decode(bytes)
        .map_err(|e| crate::Error::Internal(format!("undecodable command at index {index}: {e}")))
}
