//! One replica of one range: a raft-rs `RawNode` over the replica's log, and the range's
//! applied state.

use std::sync::Arc;

use raft::RawNode;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType};
use strata_storage::{Engine, Keyspace, WriteBatch};

use super::log::{RaftLog, decode, encode};
use super::node::RangeShared;
use super::session::Sessions;
use crate::command::Command;
use crate::mvcc::{AppliedState, Applier, LeaseChange, Response};
use crate::{NodeId, RangeId, Result, keys};

/// A batch of reads waiting on one ReadIndex request.
pub(crate) struct PendingRead {
    /// The counter part of the ReadIndex context (see `node::read_ctx`).
    pub ctx: u64,
    pub issued_tick: u64,
    pub created_tick: u64,
    /// The commit index the leader confirmed; the reads run once it is applied.
    pub index: Option<u64>,
    pub read_ids: Vec<u64>,
}

pub(crate) struct Replica {
    pub range_id: RangeId,
    pub raw: RawNode<RaftLog>,
    pub applied: AppliedState,
    /// Which proposals were applied already (at most once each).
    pub sessions: Sessions,
    pub shared: Arc<RangeShared>,
    /// Reads asked for since the last round; they share the next ReadIndex request.
    pub unissued_reads: Vec<u64>,
    pub pending_reads: Vec<PendingRead>,
    /// `Mutation::SkipApply` not yet acted on.
    pub skip_apply: bool,
}

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
        let mut applier = Applier::new(engine, self.range_id, self.applied);
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
                    let result = applier.apply(request);
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
                        self.apply_conf_change(&change, batch)?;
                        continue;
                    }
                    // A membership change: its command rides in the entry's context.
                    let command = decode_command(&entry.context, entry.index)?;
                    let own = command.proposer == node_id && command.proposer_epoch == epoch;
                    if !self.admit(&command, own, &mut completions) {
                        continue;
                    }
                    let result = self.apply_member_change(&change, &command, batch);
                    if result.is_ok() {
                        *members_changed = true;
                    }
                    if own {
                        completions.push((command.proposal_id, result));
                    }
                }
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

    /// Applies a membership change to Raft's configuration and to the member records. A change
    /// Raft refuses (it would leave no voter, say) changes nothing, on every replica alike.
    fn apply_member_change(
        &mut self,
        change: &ConfChangeV2,
        command: &Command,
        batch: &mut WriteBatch,
    ) -> Result<Response> {
        use crate::command::{MemberChangeKind, Request};
        let Some(Request::MemberChange(member_change)) = &command.request else {
            return Err(crate::Error::Internal("a configuration change without a member".into()));
        };
        self.apply_conf_change(change, batch)?;
        let key = keys::member(member_change.id);
        match (MemberChangeKind::try_from(member_change.kind), &member_change.member) {
            (Ok(MemberChangeKind::Remove), _) => batch.delete(Keyspace::Mvcc, key),
            (_, Some(record)) => {
                use prost::Message as _;
                batch.put(Keyspace::Mvcc, key, record.encode_to_vec());
            }
            (_, None) => {}
        }
        Ok(Response::MemberChanged)
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
        batch.put(Keyspace::Raft, keys::raft_conf_state(self.range_id), encode(&conf_state));
        self.raw.mut_store().set_conf_state(conf_state);
        Ok(())
    }
}

fn decode_command(bytes: &[u8], index: u64) -> Result<Command> {
    Command::decode(bytes)
        .map_err(|e| crate::Error::Internal(format!("undecodable command at index {index}: {e}")))
}
