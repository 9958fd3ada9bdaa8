//! A range replica's Raft log as raft-rs sees it ([`raft::Storage`]), and its persistence.
//!
//! The log lives in the engine (the source of truth) and, from the last compaction point on, in
//! memory too, so raft-rs reads entries without touching the engine. Writes are not done here:
//! the driver adds them to its round's [`WriteBatch`] and updates this cache only after the
//! batch is durable, which is exactly the order raft-rs requires (persist, then advance).
//!
//! The engine journals the `Raft` keyspace (entries, hard state, compaction point) apart from
//! the state machine, and the configuration lives with the state machine (`Meta`), since
//! applying an entry changes it. Where the two must agree, the order of writes keeps them so:
//! the state machine's part of a batch is durable before the log's part is written (see
//! `Engine::write`), compaction drops only entries whose application is durable, and a snapshot
//! whose log reset was lost is finished by [`RaftLog::load`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use strata_storage::{Durability, Engine, Keyspace, WriteBatch};

use crate::{Error, RangeId, Result, keys};

pub fn encode<M: prost011::Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

pub fn decode<M: prost011::Message + Default>(what: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Storage(format!("undecodable {what}: {e}")))
}

/// Where a bootstrapped range's log starts: entries up to here count as compacted.
pub const INIT_INDEX: u64 = 5;
/// The term of that starting point; the first election is for the term after it.
pub const INIT_TERM: u64 = 5;

/// The in-memory view of one replica's log plus its durable Raft state.
pub struct RaftLog {
    range_id: RangeId,
    hard_state: HardState,
    conf_state: ConfState,
    /// The compaction point: every entry at or below `truncated.index` is gone from the log and
    /// covered by the state machine (and by snapshots generated from it).
    truncated: SnapshotMetadata,
    /// Entries from `truncated.index + 1` on.
    entries: VecDeque<Entry>,
    /// A snapshot generated for a follower that needs one; see [`RaftLog::snapshot`].
    prepared_snapshot: Mutex<Option<Snapshot>>,
    snapshot_requested: AtomicBool,
}

impl RaftLog {
    /// Loads a replica's log from the engine; `None` if the replica has no Raft state yet.
    ///
    /// A snapshot is installed in two parts: the state machine's data with the snapshot's point
    /// (made durable first), then the log's reset to that point. If a crash came between them,
    /// the state machine is ahead of the log, whose entries belong to an older history: the
    /// reset is finished here, before anything else is written to the log.
    pub fn load(engine: &dyn Engine, range_id: RangeId) -> Result<Option<Self>> {
        fn read<M: prost011::Message + Default>(
            engine: &dyn Engine,
            keyspace: Keyspace,
            key: Vec<u8>,
            what: &str,
        ) -> Result<Option<M>> {
            engine.get(keyspace, &key)?.map(|bytes| decode(what, &bytes)).transpose()
        }
        let truncated: Option<SnapshotMetadata> =
            read(engine, Keyspace::Raft, keys::raft_snapshot(range_id), "snapshot metadata")?;
        let installed: Option<SnapshotMetadata> =
            read(engine, Keyspace::Meta, keys::range_snapshot(range_id), "installed snapshot")?;
        let unfinished_reset =
            installed.filter(|point| truncated.as_ref().is_none_or(|t| point.index > t.index));
        let Some(truncated) = unfinished_reset.clone().or(truncated) else {
            return Ok(None);
        };
        let conf_state: ConfState =
            read(engine, Keyspace::Meta, keys::range_conf_state(range_id), "conf state")?
                .ok_or_else(|| {
                    Error::Storage(format!("range {range_id} has a Raft log but no configuration"))
                })?;
        let mut hard_state: HardState =
            read(engine, Keyspace::Raft, keys::raft_hard_state(range_id), "hard state")?
                .unwrap_or_default();
        let (start, end) = keys::raft_log_bounds(range_id);
        if unfinished_reset.is_some() {
            let mut batch = WriteBatch::new();
            for item in engine.scan(Keyspace::Raft, &start, &end)? {
                batch.delete(Keyspace::Raft, item?.0);
            }
            hard_state.commit = hard_state.commit.max(truncated.index);
            if truncated.term > hard_state.term {
                // Whatever vote went with the lost term was never durable, so never sent.
                hard_state.term = truncated.term;
                hard_state.vote = 0;
            }
            batch.put(Keyspace::Raft, keys::raft_snapshot(range_id), encode(&truncated));
            batch.put(Keyspace::Raft, keys::raft_hard_state(range_id), encode(&hard_state));
            engine.write(&batch, Durability::Sync)?;
        }
        let mut entries = VecDeque::new();
        for (expected, item) in
            (truncated.index + 1..).zip(engine.scan(Keyspace::Raft, &start, &end)?)
        {
            let (key, bytes) = item?;
            let entry: Entry = decode("log entry", &bytes)?;
            if keys::raft_log_index(&key) != Some(entry.index) || entry.index != expected {
                return Err(Error::Storage(format!(
                    "raft log of range {range_id} has a gap or misplaced entry at index {} (expected {expected})",
                    entry.index
                )));
            }
            entries.push_back(entry);
        }
        Ok(Some(Self::new(range_id, hard_state, conf_state, truncated, entries)))
    }

    /// Whether the store holds Raft state for the range (a bootstrapped or installed log).
    pub fn exists(engine: &dyn Engine, range_id: RangeId) -> Result<bool> {
        Ok(engine.get(Keyspace::Raft, &keys::raft_snapshot(range_id))?.is_some()
            || engine.get(Keyspace::Meta, &keys::range_snapshot(range_id))?.is_some())
    }

    /// The log of a replica joining a running range: empty, with no configuration, persisted
    /// once the leader's snapshot arrives.
    pub fn joining(range_id: RangeId) -> Self {
        Self::new(
            range_id,
            HardState::default(),
            ConfState::default(),
            SnapshotMetadata::default(),
            VecDeque::new(),
        )
    }

    /// The log of a replica created for a message of a range this node has not applied the
    /// creation of yet (see `split`): empty, like a joining replica's, but keeping what an
    /// earlier such replica voted.
    pub fn uninitialized(engine: &dyn Engine, range_id: RangeId) -> Result<Self> {
        let mut log = Self::joining(range_id);
        if let Some(hard_state) = Self::stored_hard_state(engine, range_id)? {
            log.hard_state = HardState { commit: 0, ..hard_state };
        }
        Ok(log)
    }

    /// The hard state stored for a range, if any.
    pub fn stored_hard_state(engine: &dyn Engine, range_id: RangeId) -> Result<Option<HardState>> {
        let bytes = engine.get(Keyspace::Raft, &keys::raft_hard_state(range_id))?;
        bytes.map(|bytes| decode("hard state", &bytes)).transpose()
    }

    /// A brand-new replica whose group consists of `voters`; adds its initial state to `batch`.
    /// The log's part is written after the configuration, so a crash between them leaves a
    /// replica with no Raft state, bootstrapped again at the next start.
    ///
    /// The log starts compacted at [`INIT_INDEX`] (term [`INIT_TERM`]), as TiKV's does: the
    /// group's initial configuration and members are not log entries, so a member added later
    /// must receive a snapshot, never a replay of the log from its first entry.
    pub fn bootstrap(range_id: RangeId, voters: Vec<u64>, batch: &mut WriteBatch) -> Self {
        let conf_state = ConfState { voters, ..Default::default() };
        let hard_state = HardState { term: INIT_TERM, vote: 0, commit: INIT_INDEX };
        let truncated = SnapshotMetadata {
            conf_state: Some(conf_state.clone()),
            index: INIT_INDEX,
            term: INIT_TERM,
        };
        batch.put(Keyspace::Meta, keys::range_conf_state(range_id), encode(&conf_state));
        batch.put(Keyspace::Raft, keys::raft_hard_state(range_id), encode(&hard_state));
        batch.put(Keyspace::Raft, keys::raft_snapshot(range_id), encode(&truncated));
        Self::new(range_id, hard_state, conf_state, truncated, VecDeque::new())
    }

    fn new(
        range_id: RangeId,
        hard_state: HardState,
        conf_state: ConfState,
        truncated: SnapshotMetadata,
        entries: VecDeque<Entry>,
    ) -> Self {
        Self {
            range_id,
            hard_state,
            conf_state,
            truncated,
            entries,
            prepared_snapshot: Mutex::new(None),
            snapshot_requested: AtomicBool::new(false),
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    pub fn first_index(&self) -> u64 {
        self.truncated.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.entries.back().map_or(self.truncated.index, |e| e.index)
    }

    /// Adds appending `entries` (replacing any conflicting suffix) to `batch`.
    pub fn persist_entries(&self, entries: &[Entry], batch: &mut WriteBatch) {
        let Some(first) = entries.first() else { return };
        for entry in entries {
            batch.put(Keyspace::Raft, keys::raft_log(self.range_id, entry.index), encode(entry));
        }
        // A new leader may have overwritten a suffix: drop what is past the new end.
        let new_last = first.index + entries.len() as u64 - 1;
        for index in (new_last + 1)..=self.last_index() {
            batch.delete(Keyspace::Raft, keys::raft_log(self.range_id, index));
        }
    }

    /// Updates the cache after the batch with `entries` is durable.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.truncated.index,
            "appending compacted entries at {}",
            first.index
        );
        assert!(first.index <= self.last_index() + 1, "gap in the log before {}", first.index);
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend(entries.iter().cloned());
    }

    pub fn persist_hard_state(&self, hard_state: &HardState, batch: &mut WriteBatch) {
        batch.put(Keyspace::Raft, keys::raft_hard_state(self.range_id), encode(hard_state));
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        assert!(hard_state.term >= self.hard_state.term, "term went backwards");
        self.hard_state = hard_state;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Discards entries up to and including `index`, in the engine and here. Their application
    /// must be durable before the batch's log part is: the caller writes the batch with `Sync`.
    /// Returns whether anything was discarded.
    pub fn compact(&mut self, index: u64, batch: &mut WriteBatch) -> bool {
        if index <= self.truncated.index || index > self.last_index() {
            return false;
        }
        let term = self.entry_term(index).expect("compaction point is in the log");
        batch.reserve((index + 1 - self.first_index()) as usize);
        for i in self.first_index()..=index {
            batch.delete(Keyspace::Raft, keys::raft_log(self.range_id, i));
        }
        self.truncated = SnapshotMetadata { index, term, conf_state: None };
        batch.put(Keyspace::Raft, keys::raft_snapshot(self.range_id), encode(&self.truncated));
        let drop_count = self.entries.iter().take_while(|e| e.index <= index).count();
        self.entries.drain(..drop_count);
        // A prepared snapshot older than the compaction point can no longer help anyone (see
        // `snapshot`); free the memory it holds.
        let mut prepared = self.prepared_snapshot.lock().expect("snapshot lock");
        if prepared.as_ref().and_then(|s| s.metadata.as_ref()).is_some_and(|m| m.index < index) {
            *prepared = None;
        }
        true
    }

    /// Replaces the whole log with a received snapshot's point; the caller puts the state
    /// machine's data in the same batch and writes it with `Sync`. The snapshot's point goes
    /// with that data, so that [`RaftLog::load`] can finish the log's reset if it was lost.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata, batch: &mut WriteBatch) {
        for i in self.first_index()..=self.last_index() {
            batch.delete(Keyspace::Raft, keys::raft_log(self.range_id, i));
        }
        self.truncated = SnapshotMetadata { index: meta.index, term: meta.term, conf_state: None };
        self.entries.clear();
        batch.put(Keyspace::Meta, keys::range_snapshot(self.range_id), encode(&self.truncated));
        if let Some(conf_state) = &meta.conf_state {
            self.conf_state = conf_state.clone();
            batch.put(Keyspace::Meta, keys::range_conf_state(self.range_id), encode(conf_state));
        }
        batch.put(Keyspace::Raft, keys::raft_snapshot(self.range_id), encode(&self.truncated));
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.persist_hard_state(&self.hard_state, batch);
    }

    fn entry_term(&self, index: u64) -> Option<u64> {
        if index == self.truncated.index {
            return Some(self.truncated.term);
        }
        let offset = index.checked_sub(self.first_index())? as usize;
        self.entries.get(offset).map(|e| e.term)
    }

    /// Whether raft-rs asked for a snapshot that has not been prepared yet.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_requested.swap(false, Ordering::AcqRel)
    }

    /// Forgets the snapshot prepared for followers (it no longer describes the range).
    pub fn drop_prepared_snapshot(&self) {
        *self.prepared_snapshot.lock().expect("snapshot lock") = None;
    }

    pub fn set_prepared_snapshot(&self, snapshot: Snapshot) {
        *self.prepared_snapshot.lock().expect("snapshot lock") = Some(snapshot);
    }
}

/// Whether `id` votes or learns in `conf`, in either half of a joint configuration.
fn includes(conf: &ConfState, id: u64) -> bool {
    [&conf.voters, &conf.learners, &conf.voters_outgoing, &conf.learners_next]
        .iter()
        .any(|ids| ids.contains(&id))
}

fn store_error(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.index {
            return Err(store_error(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index() + 1,
            "entries past the end: {high} > {}",
            self.last_index() + 1
        );
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let offset = self.first_index();
        let mut size = 0u64;
        let mut out = Vec::new();
        for entry in self.entries.range((low - offset) as usize..(high - offset) as usize) {
            size += prost011::Message::encoded_len(entry) as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.truncated.index {
            return Err(store_error(StorageError::Compacted));
        }
        self.entry_term(idx).ok_or_else(|| store_error(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(RaftLog::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(RaftLog::last_index(self))
    }

    /// Snapshots are generated by the driver from the state machine, outside raft-rs's call:
    /// the first call records the request and answers "temporarily unavailable"; once the driver
    /// has prepared one, it is handed out (as TiKV does).
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let prepared = self.prepared_snapshot.lock().expect("snapshot lock");
        match prepared.as_ref() {
            // Only a snapshot that reaches the log's compaction point is useful: the follower
            // continues from the log after it. An older one would be rejected or leave the
            // follower needing entries that are gone, and it would be sent again forever. So
            // would one taken before the follower became a member: its configuration lacks it.
            Some(snapshot)
                if snapshot.metadata.as_ref().is_some_and(|m| {
                    m.index >= request_index
                        && m.index >= self.truncated.index
                        && m.conf_state.as_ref().is_some_and(|conf| includes(conf, to))
                }) =>
            {
                Ok(snapshot.clone())
            }
            _ => {
                self.snapshot_requested.store(true, Ordering::Release);
                Err(store_error(StorageError::SnapshotTemporarilyUnavailable))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use strata_storage::MemEngine;

    use super::*;

    /// A follower installs a snapshot; the power fails after the state machine's part of the
    /// write was durable and before the log's part was. The next start finishes the log's
    /// reset, durably, instead of serving the old log under the new state.
    #[test]
    fn a_snapshot_whose_log_reset_was_lost_is_finished_at_load() {
        let engine = MemEngine::new();
        let mut batch = WriteBatch::new();
        let mut log = RaftLog::bootstrap(1, vec![1, 2, 3], &mut batch);
        engine.write(&batch, Durability::Sync).unwrap();
        let entries: Vec<Entry> =
            (6..=8).map(|index| Entry { index, term: 6, ..Default::default() }).collect();
        let mut batch = WriteBatch::new();
        log.persist_entries(&entries, &mut batch);
        log.persist_hard_state(&HardState { term: 6, vote: 2, commit: 6 }, &mut batch);
        engine.write(&batch, Durability::Sync).unwrap();
        log.append(&entries);

        let voters = vec![1, 2, 3, 4];
        let conf_state = Some(ConfState { voters: voters.clone(), ..Default::default() });
        let point = SnapshotMetadata { index: 20, term: 7, conf_state };
        let mut batch = WriteBatch::new();
        log.apply_snapshot(&point, &mut batch);
        engine.write_failing_sync(&batch, false).unwrap();
        engine.crash();

        let loaded = RaftLog::load(&engine, 1).unwrap().expect("raft state");
        assert_eq!((loaded.first_index(), loaded.last_index()), (21, 20));
        assert_eq!(loaded.hard_state(), &HardState { term: 7, vote: 0, commit: 20 });
        assert_eq!(loaded.conf_state().voters, voters);
        // The reset is durable: another power failure does not bring the old entries back.
        engine.crash();
        let again = RaftLog::load(&engine, 1).unwrap().expect("raft state");
        assert_eq!((again.first_index(), again.last_index()), (21, 20));
        let (start, end) = keys::raft_log_bounds(1);
        assert!(engine.scan(Keyspace::Raft, &start, &end).unwrap().next().is_none());
    }

    /// Bootstrapping writes the configuration before the log: a crash between the two leaves
    /// no Raft state, so the replica is bootstrapped again rather than refused.
    #[test]
    fn a_bootstrap_without_its_log_part_counts_as_none() {
        let engine = MemEngine::new();
        let mut batch = WriteBatch::new();
        RaftLog::bootstrap(1, vec![1, 2, 3], &mut batch);
        engine.write_failing_sync(&batch, false).unwrap();
        engine.crash();
        assert!(engine.get(Keyspace::Meta, &keys::range_conf_state(1)).unwrap().is_some());
        assert!(RaftLog::load(&engine, 1).unwrap().is_none());
    }
}
