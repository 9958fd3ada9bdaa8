//! A node's round, in named phases (see the module docs of `raftstore`):
//!
//! 1. [`Node::issue_reads`]: one ReadIndex request per replica for the reads that arrived since
//!    the last round, and the answers to followers' requests confirmed on arrival;
//! 2. [`Node::gather`]: every replica's `Ready`: messages that need not wait for the disk go
//!    out at once, new entries, hard states and received snapshots go into one log batch;
//! 3. [`Node::persist`]: that batch written with one fsync (or, when only commit indexes moved,
//!    carried into the apply batch without one);
//! 4. [`Node::advance_and_apply`]: raft-rs advanced, committed entries applied into one
//!    buffered batch with each range's applied index, logs compacted, the batch written;
//! 5. [`Node::publish`]: the applied state published to readers, reads released, snapshots
//!    prepared for followers that asked.

use std::sync::atomic::Ordering;

use raft::prelude::{Message, Snapshot, SnapshotMetadata};
use raft::{Ready, StateRole};
use strata_storage::{Durability, Engine, WriteBatch};

use super::config::Mutation;
use super::node::{AppliedEntry, Node, OutMessage, Output};
use super::propose::leave_joint_if_stuck;
use super::read_index;
use super::replica::Replica;
use super::snapshot;
use super::stamping;
use super::stats::bump;
use crate::mvcc::locks::LockTable;
use crate::{RangeId, Result};

/// What gathering the replicas' readies produced, for the later phases.
#[derive(Default)]
struct Gathered {
    /// New entries, hard states and installed snapshots of every replica.
    log_batch: WriteBatch,
    /// raft-rs asked for the batch to be durable before the round's messages go.
    must_sync: bool,
    readies: Vec<(RangeId, Ready)>,
    /// Replicas that installed a snapshot this round.
    restored: Vec<RangeId>,
}

impl Node {
    /// Runs one round. A storage error is returned and the node must not be used afterwards:
    /// its in-memory state may be ahead of what is durable.
    pub fn process_ready(&mut self) -> Result<Output> {
        let mut early = Vec::new();
        let mut out = self.process_ready_sending(&mut |messages| early.extend(messages))?;
        early.append(&mut out.messages);
        out.messages = early;
        Ok(out)
    }

    /// Like [`Node::process_ready`], but hands the messages that need not wait for this round's
    /// fsync (a leader's appends, heartbeats) to `send_now` before writing, so followers persist
    /// in parallel with the leader instead of after it.
    pub fn process_ready_sending(
        &mut self,
        send_now: &mut dyn FnMut(Vec<OutMessage>),
    ) -> Result<Output> {
        let mut out = Output::default();
        self.issue_reads(send_now);
        let Gathered { log_batch, must_sync, readies, restored } =
            self.gather(send_now, &mut out)?;
        let mut apply_batch = self.persist(log_batch, must_sync, &restored)?;
        self.advance_and_apply(readies, &mut apply_batch, &mut out)?;
        self.publish(&mut out)?;
        self.pin_election_timeouts();
        Ok(out)
    }

    /// Phase 1: issues this round's reads, this node's and the followers' it leads (one
    /// ReadIndex request per replica for all of them), and sends the answers to followers'
    /// requests confirmed on arrival.
    fn issue_reads(&mut self, send_now: &mut dyn FnMut(Vec<OutMessage>)) {
        for replica in self.replicas.values_mut() {
            read_index::issue(replica, &mut self.read_contexts, self.ticks, self.config.mutation);
            let answers = replica.reads.take_remote_answers();
            if !answers.is_empty() {
                send_now(wrap(replica.range_id, answers).collect());
            }
        }
    }

    /// Phase 2: takes the `Ready` of every replica that has one. Messages that need not wait for
    /// the disk are sent now; entries, hard states and snapshots go into one log batch.
    fn gather(
        &mut self,
        send_now: &mut dyn FnMut(Vec<OutMessage>),
        out: &mut Output,
    ) -> Result<Gathered> {
        let mut gathered = Gathered::default();
        for replica in self.replicas.values_mut() {
            if !replica.raw.has_ready() {
                continue;
            }
            let mut ready = replica.raw.ready();
            let immediate: Vec<OutMessage> =
                wrap(replica.range_id, ready.take_messages()).collect();
            if !immediate.is_empty() {
                send_now(immediate);
            }
            if !ready.snapshot().is_empty() {
                let batch = &mut gathered.log_batch;
                if self.config.mutation == Mutation::RestoreOutsideSpan {
                    for item in self.engine.scan(strata_storage::Keyspace::Mvcc, &[], &[])? {
                        batch.delete(strata_storage::Keyspace::Mvcc, item?.0);
                    }
                }
                restore_snapshot(self.engine.as_ref(), replica, ready.snapshot(), batch)?;
                gathered.restored.push(replica.range_id);
                bump(&self.stats.snapshots_applied, 1);
                out.members_changed = true;
            }
            if !ready.entries().is_empty() {
                self.stats.log_batch_entries.observe(ready.entries().len() as f64);
            }
            replica.raw.store().persist_entries(ready.entries(), &mut gathered.log_batch);
            if let Some(hard_state) = ready.hs() {
                replica.raw.store().persist_hard_state(hard_state, &mut gathered.log_batch);
            }
            let read_states = ready.take_read_states();
            let answers = read_index::confirm(replica, &self.read_contexts, read_states);
            if !answers.is_empty() {
                send_now(wrap(replica.range_id, answers).collect());
            }
            gathered.must_sync |= ready.must_sync();
            gathered.readies.push((replica.range_id, ready));
        }
        Ok(gathered)
    }

    /// Phase 3: new entries, votes and snapshots are written now, before the messages that rely
    /// on them go. A new commit index alone (most of what a follower learns) needs no fsync and
    /// goes with the applied changes, in one write: the returned batch, which phase 4 extends.
    fn persist(
        &mut self,
        log_batch: WriteBatch,
        must_sync: bool,
        restored: &[RangeId],
    ) -> Result<WriteBatch> {
        let engine = self.engine.as_ref();
        let mut apply_batch = WriteBatch::new();
        if (must_sync || !restored.is_empty()) && !log_batch.is_empty() {
            // Synced even when only a snapshot was restored (raft-rs may not ask): its data must
            // be durable before its log reset, which the engine orders only for a synced write.
            let sync = self.config.mutation != Mutation::AckBeforeFsync;
            let durability = if sync { Durability::Sync } else { Durability::Buffered };
            engine.write(&log_batch, durability)?;
        } else {
            apply_batch = log_batch;
        }
        // A restored snapshot's data is in the engine now: its replica's memo can be loaded.
        for range_id in restored {
            let replica = self.replicas.get(range_id).expect("restored replica");
            let span = replica.descriptor.span();
            replica.shared.memo.write().expect("memo lock").reload(engine, span)?;
            *replica.shared.locks.write().expect("lock table lock") =
                LockTable::load(engine, span)?;
        }
        Ok(apply_batch)
    }

    /// Phase 4: advances raft-rs past what was persisted, applies every newly committed entry,
    /// compacts logs that grew past their bound, and writes all of it.
    fn advance_and_apply(
        &mut self,
        readies: Vec<(RangeId, Ready)>,
        apply_batch: &mut WriteBatch,
        out: &mut Output,
    ) -> Result<()> {
        let engine = self.engine.clone();
        for (range_id, mut ready) in readies {
            let replica = self.replicas.get_mut(&range_id).expect("replica of a ready");
            replica.raw.mut_store().append(ready.entries());
            if let Some(hard_state) = ready.hs() {
                replica.raw.mut_store().set_hard_state(hard_state.clone());
            }
            out.messages.extend(wrap(range_id, ready.take_persisted_messages()));
            let mut committed = ready.take_committed_entries();
            // Not `advance`, which would tell raft-rs that this ready's entries were applied
            // before they are: raft-rs leaves a joint configuration when the leader applies it,
            // and would then leave it twice. `publish` reports what was applied.
            let mut light = replica.raw.advance_append(ready);
            if let Some(commit) = light.commit_index() {
                replica.raw.mut_store().set_commit(commit);
            }
            out.messages.extend(wrap(range_id, light.take_messages()));
            committed.extend(light.take_committed_entries());
            if !committed.is_empty() {
                bump(&self.stats.entries_applied, committed.len() as u64);
                self.stats.apply_batch_entries.observe(committed.len() as f64);
            }
            if self.config.record_applied {
                let applied_index = replica.applied.applied_index;
                out.applied.extend(committed.iter().filter(|e| e.index > applied_index).map(|e| {
                    AppliedEntry { range_id, index: e.index, term: e.term, data: e.data.to_vec() }
                }));
            }
            let revision_before = replica.applied.revision;
            let (completions, leases) = replica.apply_entries(
                engine.as_ref(),
                &committed,
                self.config.node_id,
                self.config.epoch,
                apply_batch,
                &mut out.members_changed,
            )?;
            assert!(replica.applied.revision >= revision_before, "a range's revision went back");
            out.completions.extend(completions);
            out.lease_changes.extend(leases.into_iter().map(|change| (range_id, change)));
            // Raise the compaction floor before the compaction's deletions become visible, so a
            // concurrent reader below it notices (see `local_read`).
            replica
                .shared
                .compact_revision
                .fetch_max(replica.applied.compact_revision, Ordering::AcqRel);
        }
        let compacted = self.compact_logs(apply_batch);
        // A new range's replica answers its leader once it is open, as having the log it starts
        // with: that must be durable by then, or a crash leaves a leader counting on entries the
        // replica no longer has (raft-rs then panics on its next heartbeat: the simulator's
        // seed 91684 of `--splits`).
        let split = self.replicas.values().any(|replica| !replica.split_off.is_empty());
        if !apply_batch.is_empty() {
            // Entries leave the log only once their application is durable: the engine makes a
            // synced batch's state machine part durable before it writes the log's part.
            let sync = (compacted && self.config.mutation != Mutation::CompactWithoutSync) || split;
            let durability = if sync { Durability::Sync } else { Durability::Buffered };
            engine.write(apply_batch, durability)?;
        }
        self.open_split_ranges()
    }

    /// Compacts the log of every replica holding more applied entries than
    /// `log_entries_max`, keeping the newest `log_entries_keep`; says whether any was.
    fn compact_logs(&mut self, batch: &mut WriteBatch) -> bool {
        let mut compacted = false;
        for replica in self.replicas.values_mut() {
            let applied = replica.applied.applied_index;
            let (first, keep) = (replica.raw.store().first_index(), self.config.log_entries_keep);
            if applied >= first && applied - first + 1 > self.config.log_entries_max {
                let index = applied.saturating_sub(keep);
                compacted |= replica.raw.mut_store().compact(index, batch);
            }
        }
        compacted
    }

    /// Phase 5: tells raft-rs what was applied, publishes it to readers, releases the reads it
    /// covers, and prepares the snapshots raft-rs asked for.
    fn publish(&mut self, out: &mut Output) -> Result<()> {
        bump(&self.stats.rounds, 1);
        for replica in self.replicas.values_mut() {
            replica.raw.advance_apply_to(replica.applied.applied_index);
            leave_joint_if_stuck(replica);
            stamping::follow(replica);
            let leader_before = replica.shared.leader_id.load(Ordering::Acquire);
            if publish(replica) {
                self.shared_ranges.spans_changed();
            }
            if replica.shared.leader_id.load(Ordering::Acquire) != leader_before {
                bump(&self.stats.leader_changes, 1);
            }
            read_index::release(replica, &mut out.reads_ready);
            if replica.raw.store().take_snapshot_request() {
                let (descriptor, sessions) = (&replica.descriptor, &replica.sessions);
                let data =
                    snapshot::build(self.engine.as_ref(), descriptor, replica.applied, sessions)?;
                let metadata = SnapshotMetadata {
                    conf_state: Some(replica.raw.store().conf_state().clone()),
                    index: replica.applied.applied_index,
                    term: replica.applied.applied_term,
                };
                replica
                    .raw
                    .store()
                    .set_prepared_snapshot(Snapshot { data, metadata: Some(metadata) });
            }
        }
        Ok(())
    }
}

pub(super) fn wrap(range_id: RangeId, messages: Vec<Message>) -> impl Iterator<Item = OutMessage> {
    messages.into_iter().map(move |message| OutMessage { range_id, message })
}

fn restore_snapshot(
    engine: &dyn Engine,
    replica: &mut Replica,
    snapshot: &Snapshot,
    batch: &mut WriteBatch,
) -> Result<()> {
    let metadata = snapshot.metadata.clone().unwrap_or_default();
    let conf_state = metadata.conf_state.as_ref();
    let restored = snapshot::restore(engine, replica.range_id, &snapshot.data, conf_state, batch)?;
    replica.sessions = restored.sessions;
    replica.shared.memo.write().expect("memo lock").clear();
    *replica.shared.locks.write().expect("lock table lock") = LockTable::default();
    let applied = restored.applied;
    assert_eq!(applied.applied_index, metadata.index, "snapshot data and metadata disagree");
    replica.raw.mut_store().apply_snapshot(&metadata, batch);
    replica.applied = applied;
    replica.descriptor = restored.descriptor;
    replica.shared.compact_revision.fetch_max(applied.compact_revision, Ordering::AcqRel);
    Ok(())
}

/// Publishes a replica's applied state and Raft status to the request handlers.
/// Returns whether the replica's descriptor changed.
pub(super) fn publish(replica: &mut Replica) -> bool {
    let shared = &replica.shared;
    let status = replica.raw.status();
    // Locks first: a closed revision computed from a newer revision must see them.
    let locks = match replica.hide_locks {
        false => (replica.applied.lock_count, replica.applied.lock_floor),
        true => (0, 0),
    };
    shared.lock_count.store(locks.0, Ordering::Release);
    shared.lock_floor.store(locks.1, Ordering::Release);
    shared.revision.store(replica.applied.revision, Ordering::Release);
    shared.compact_revision.store(replica.applied.compact_revision, Ordering::Release);
    shared.compaction_pending.store(replica.applied.compaction_pending, Ordering::Release);
    shared.applied_index.store(replica.applied.applied_index, Ordering::Release);
    shared.term.store(status.hs.term, Ordering::Release);
    shared.commit_index.store(status.hs.commit, Ordering::Release);
    let leader = if status.ss.raft_state == StateRole::Leader {
        replica.raw.raft.id
    } else {
        status.ss.leader_id
    };
    shared.leader_id.store(leader, Ordering::Release);
    let published = shared.descriptor.read().expect("descriptor lock").epoch;
    if published != replica.descriptor.epoch {
        if let (Some(before), Some(now)) = (published, replica.descriptor.epoch) {
            assert!(now >= before, "range {}: epoch {now:?} after {before:?}", replica.range_id);
        }
        *shared.descriptor.write().expect("descriptor lock") = replica.descriptor.clone();
        return true;
    }
    false
}
