//! Opening a node: its replicas from what the engine holds, or a bootstrapped first range on an
//! empty store; and the checks that refuse a store which lost what it acknowledged.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use raft::{RawNode, ReadOnlyOption};
use strata_storage::{Durability, Engine, Keyspace, WriteBatch};

use super::config::{Config, Mutation};
use super::log::{INIT_INDEX, INIT_TERM, RaftLog};
use super::node::Node;
use super::read_index::{Contexts, Reads};
use super::replica::Replica;
use super::round::publish;
use super::session::Sessions;
use super::shared::{RangeShared, SharedRanges};
use super::snapshot;
use crate::mvcc::locks::LockTable;
use crate::mvcc::memo::Memo;
use crate::mvcc::{self, AppliedState};
use crate::range::{self, META_RANGE_ID, RangeDescriptor};
use crate::{Error, RangeId, Result, keys};

impl Node {
    /// Opens a replica of every range the engine holds one of, bootstrapping the meta range if
    /// the store is empty and initial voters are configured (or waiting for it, joining).
    pub fn open(mut config: Config, engine: Arc<dyn Engine>) -> Result<Self> {
        if !config.join && !RaftLog::exists(engine.as_ref(), META_RANGE_ID)? {
            bootstrap(&config, engine.as_ref())?;
        }
        let mut range_ids = range::stored_ids(engine.as_ref())?;
        if !range_ids.contains(&META_RANGE_ID) {
            // A new store, a joining member's, or one from before descriptors.
            range_ids.insert(0, META_RANGE_ID);
        }
        let mut replicas = BTreeMap::new();
        let shared_ranges = SharedRanges::default();
        for range_id in range_ids {
            let replica = open_replica(&config, engine.as_ref(), range_id, false)?;
            shared_ranges.insert(range_id, replica.shared.clone());
            replicas.insert(range_id, replica);
        }
        config.epoch = next_epoch(engine.as_ref(), config.epoch)?;
        let mut node = Self {
            read_contexts: Contexts::new(&config),
            config,
            engine,
            replicas,
            shared_ranges,
            ticks: 0,
            next_sequence: 1,
            stats: Arc::default(),
        };
        node.pin_election_timeouts();
        Ok(node)
    }
}

/// Opens one replica: its log (bootstrapped, or empty for a joining node, when the store has
/// none), its descriptor, its applied state and its Raft node. `uninitialized`: a replica the
/// node holds no state of may be created, uninitialized (see `split`).
pub(super) fn open_replica(
    config: &Config,
    engine: &dyn Engine,
    range_id: RangeId,
    uninitialized: bool,
) -> Result<Replica> {
    let mut log = match RaftLog::load(engine, range_id)? {
        Some(log) => log,
        None if range_id == META_RANGE_ID && config.join => RaftLog::joining(range_id),
        None if uninitialized => RaftLog::uninitialized(engine, range_id)?,
        None => {
            return Err(Error::Storage(format!(
                "range {range_id} has a descriptor but no Raft state; the store is damaged"
            )));
        }
    };
    let descriptor = match range::load(engine, range_id)? {
        Some(descriptor) => descriptor,
        // Joining: the range's descriptor comes with the leader's snapshot.
        None if log.conf_state().voters.is_empty() && (config.join || uninitialized) => {
            RangeDescriptor { range_id, ..Default::default() }
        }
        None => upgrade(engine, range_id, &log)?,
    };
    let applied = mvcc::load_applied_state(engine, range_id)?;
    check_log(range_id, &log, &applied)?;
    // The hard state's commit index is persisted lazily; what was applied was committed.
    if log.hard_state().commit < applied.applied_index {
        log.set_commit(applied.applied_index);
    }
    let logger = (config.raft_logger.clone())
        .unwrap_or_else(|| slog::Logger::root(slog::Discard, slog::o!()));
    let raw = RawNode::new(&raft_config(config, &applied)?, log, &logger)
        .map_err(|e| Error::Internal(format!("cannot start raft: {e}")))?;
    let shared = Arc::new(RangeShared {
        memo: RwLock::new(Memo::load(engine, descriptor.span())?),
        locks: RwLock::new(LockTable::load(engine, descriptor.span())?),
        descriptor: RwLock::new(descriptor.clone()),
        ..RangeShared::default()
    });
    let mut replica = Replica {
        range_id,
        descriptor,
        raw,
        applied,
        sessions: Sessions::load(engine, range_id)?,
        shared,
        reads: Reads::default(),
        stamping: Default::default(),
        skip_apply: config.mutation == Mutation::SkipApply,
        hide_locks: config.mutation == Mutation::LocksUnpublished,
        forget_lease_ranges: config.mutation == Mutation::RevokeForgetsRanges,
        epoch_unchecked: config.mutation == Mutation::EpochUnchecked,
        awaiting_leave: None,
        split_off: Vec::new(),
    };
    publish(&mut replica);
    Ok(replica)
}

/// Upgrades a store from before descriptors in place: its one range spans the whole key space,
/// replicated as its Raft configuration says. Nothing else is rewritten (MVCC data was never
/// prefixed by range).
fn upgrade(engine: &dyn Engine, range_id: RangeId, log: &RaftLog) -> Result<RangeDescriptor> {
    use prost::Message as _;
    let descriptor = snapshot::whole_key_space(range_id, Some(log.conf_state()));
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Meta, keys::range_descriptor(range_id), descriptor.encode_to_vec());
    engine.write(&batch, Durability::Sync)?;
    Ok(descriptor)
}

/// Bootstraps a new cluster's ranges on an empty store, in one synced batch: the meta range,
/// with the initial members and the cluster id, and one range more per initial split key, each
/// with its log and descriptor. Together they span the whole key space. A bootstrap cut short
/// by a crash left no Raft state and is done again.
fn bootstrap(config: &Config, engine: &dyn Engine) -> Result<()> {
    use prost::Message as _;
    if config.initial_voters.is_empty() {
        return Err(Error::Internal("empty store and no initial cluster to bootstrap".into()));
    }
    let mut split_keys = config.initial_split_keys.clone();
    split_keys.sort();
    split_keys.dedup();
    if split_keys.first().is_some_and(|key| key.is_empty()) {
        return Err(Error::Internal("an initial split key must not be empty".into()));
    }
    let mut batch = WriteBatch::new();
    for (id, member) in &config.initial_members {
        batch.put(Keyspace::Mvcc, keys::member(*id), member.encode_to_vec());
    }
    batch.put(Keyspace::Mvcc, keys::cluster_id(), config.cluster_id.to_be_bytes().to_vec());
    // Everything up to the log's starting point counts as applied, over the data of a restored
    // backup if the store holds one: every range starts at its revision and compaction floor.
    let restored = mvcc::load_applied_state(engine, META_RANGE_ID)?;
    let applied = AppliedState { applied_index: INIT_INDEX, applied_term: INIT_TERM, ..restored };
    let starts = std::iter::once(Vec::new()).chain(split_keys.iter().cloned());
    let ends = split_keys.iter().cloned().chain(std::iter::once(Vec::new()));
    let spans: Vec<(Vec<u8>, Vec<u8>)> = starts.zip(ends).collect();
    register_restored_leases(engine, &spans[1..], &mut batch)?;
    let next_range_id = META_RANGE_ID + spans.len() as u64;
    batch.put(Keyspace::Mvcc, keys::next_range_id(), next_range_id.to_be_bytes().to_vec());
    for (range_id, (start, end)) in (META_RANGE_ID..).zip(spans) {
        let voters = &config.initial_voters;
        let descriptor = RangeDescriptor {
            oracle_revisions: !split_keys.is_empty(),
            ..RangeDescriptor::bootstrap(range_id, &start, &end, voters)
        };
        batch.put(Keyspace::Meta, keys::range_descriptor(range_id), descriptor.encode_to_vec());
        batch.put(Keyspace::Meta, keys::range_applied(range_id), applied.encode());
        RaftLog::bootstrap(range_id, voters.clone(), &mut batch);
    }
    engine.write(&batch, Durability::Sync)?;
    Ok(())
}

/// Registers the leases of a restored backup whose keys lie in `spans` (the ranges past the
/// meta range) for those ranges, as if they had been given there (`mvcc::apply::leases`), so
/// their revocations reach every key.
fn register_restored_leases(
    engine: &dyn Engine,
    spans: &[(Vec<u8>, Vec<u8>)],
    batch: &mut WriteBatch,
) -> Result<()> {
    use crate::mvcc::locks::Span;
    use crate::mvcc::record::LeaseMark;
    use prost::Message as _;
    let view = mvcc::view::View::new(engine);
    for (id, _) in mvcc::lease::all(&view)? {
        let Some(mut record) = mvcc::lease::get(&view, id)? else { continue };
        for key in mvcc::lease::attached_keys(&view, id)? {
            let holding = |(start, end): &&(Vec<u8>, Vec<u8>)| {
                key >= *start && (end.is_empty() || key < *end)
            };
            let Some((start, end)) = spans.iter().find(holding) else { continue };
            let span = Span { start: start.clone(), end: end.clone() };
            if !record.spans.contains(&span) {
                record.spans.push(span);
                let mark = LeaseMark { incarnation: record.incarnation, revoked: false };
                batch.put(Keyspace::Mvcc, keys::lease_mark(start, id), mark.encode_to_vec());
            }
        }
        batch.put(Keyspace::Mvcc, keys::lease(id), record.encode_to_vec());
    }
    Ok(())
}

/// Refuses a log that does not hold what the state machine relies on.
fn check_log(range_id: RangeId, log: &RaftLog, applied: &AppliedState) -> Result<()> {
    // Everything committed or applied must still be in the log (or below its compaction point).
    // If not, the store lost a suffix it had acknowledged — a damaged journal — and serving
    // from it could lose writes: refuse, rather than let raft-rs panic.
    let last_index = log.last_index();
    let needed = log.hard_state().commit.max(applied.applied_index);
    if needed > last_index {
        return Err(Error::Storage(format!(
            "range {range_id}: the Raft log ends at index {last_index} but index {needed} was \
             committed or applied; the store has lost acknowledged entries"
        )));
    }
    // Nor may the log have dropped entries that were never applied: they are gone for good.
    let compacted_to = log.first_index() - 1;
    if applied.applied_index < compacted_to {
        return Err(Error::Storage(format!(
            "range {range_id}: the Raft log was compacted to index {compacted_to} but only {} \
             was applied; the store has lost applied state",
            applied.applied_index
        )));
    }
    Ok(())
}

/// This start's epoch, recorded before it is used. Epochs must grow from one start to the next,
/// whatever the clock the caller took `configured` from did: replicas skip proposals of an
/// epoch older than one they applied.
fn next_epoch(engine: &dyn Engine, configured: u64) -> Result<u64> {
    let last = match engine.get(Keyspace::Meta, &keys::node_epoch())? {
        Some(bytes) => u64::from_be_bytes(
            (bytes.as_slice().try_into())
                .map_err(|_| Error::Storage("malformed node epoch record".into()))?,
        ),
        None => 0,
    };
    let epoch = configured.max(last + 1);
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Meta, keys::node_epoch(), epoch.to_be_bytes().to_vec());
    engine.write(&batch, Durability::Sync)?;
    Ok(epoch)
}

fn raft_config(config: &Config, applied: &AppliedState) -> Result<raft::Config> {
    let raft_config = raft::Config {
        id: config.node_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied: applied.applied_index,
        max_size_per_msg: config.append_bytes_max,
        max_inflight_msgs: config.inflight_appends_max,
        check_quorum: true,
        pre_vote: true,
        read_only_option: if config.mutation == Mutation::LeaseReads {
            ReadOnlyOption::LeaseBased
        } else {
            ReadOnlyOption::Safe
        },
        ..Default::default()
    };
    raft_config.validate().map_err(|e| Error::Internal(format!("raft config: {e}")))?;
    Ok(raft_config)
}
