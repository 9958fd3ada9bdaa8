//! Applying committed requests: `Put`, `DeleteRange`, `Txn` and `Compact`.
//!
//! An [`Applier`] applies a run of committed entries of one range and collects everything they
//! write into one [`WriteBatch`], together with the new [`AppliedState`]; the caller writes that
//! batch once. Writes are visible to later requests of the same run through the view's overlay.
//!
//! Determinism: the result depends only on the store's contents and the request. The revision
//! comes from the replicated counter in [`AppliedState`]; nothing reads a clock.

mod cross;
mod leases;
mod split;
mod txn;

pub use cross::{COMPARE_FAILS, COMPARE_HOLDS, COMPARE_NO_KEYS, judge_compares};
use strata_storage::{Engine, Keyspace, WriteBatch};
pub(crate) use txn::compare_one;

use std::collections::HashMap;
use std::sync::RwLock;

use super::compaction::doomed_versions;
use super::memo::{Memo, Newest};
use super::record::{LeaseRecord, VersionRecord};
use super::view::{Overlay, View};
use super::{AppliedState, alarm, lease, read};
use crate::command::{CompactionStep, Request, TsoCeiling};
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, ResponseHeader, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::raftstore::oracle::Block;
use crate::{Error, RangeId, Result, keys};

/// The result of applying one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    /// A membership change was applied (the member records say the rest).
    MemberChanged,
    /// A step of a compaction's deletions was applied; nobody waits for it.
    CompactionStepped,
    /// The revision oracle's ceiling was raised (or was already higher).
    TsoCeilingRaised,
    /// A transaction across ranges was prepared in this range: what it found of each of the
    /// transaction's comparisons (`COMPARE_*`).
    TxnPrepared(Vec<i32>),
    /// A transaction across ranges was rolled back here; in its primary's range, the decision
    /// (which may be that it committed).
    TxnDecided(super::locks::TxnStatus),
    TxnForgotten,
    /// A lease was registered for a range's keys: its incarnation.
    LeaseRegistered(u64),
    LeaseMarked,
    /// The meta range prepared a lease's revocation across ranges: the lease's incarnation, and
    /// the spans of the other ranges holding keys attached to it.
    LeasePrepared {
        incarnation: u64,
        spans: Vec<super::locks::Span>,
    },
    /// The meta range handed out a range id.
    RangeIdAllocated(u64),
    /// The range split: what it keeps, and the new range.
    Split {
        left: crate::range::RangeDescriptor,
        right: crate::range::RangeDescriptor,
    },
}

/// A lease granted or revoked by the requests applied: the leader's lessor follows these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Revoked { id: i64 },
}

pub struct Applier<'a> {
    engine: &'a dyn Engine,
    range_id: RangeId,
    state: AppliedState,
    overlay: Overlay,
    batch: WriteBatch,
    /// Overlay entries replaced by the request being applied, to roll it back on error.
    undo: Vec<Undo>,
    lease_changes: Vec<LeaseChange>,
    /// What earlier runs learned about the store, shared with readers; this run's findings
    /// join it when the run finishes.
    memo: Option<&'a RwLock<Memo>>,
    /// What this run learned from the store about keys it did not write.
    learned: Memo,
    /// The newest version of every key this run wrote a version of, and (in `written_undo`)
    /// what the request being applied replaced, to roll it back on error.
    written: HashMap<Vec<u8>, Newest>,
    written_undo: Vec<(Vec<u8>, Option<Newest>)>,
    /// Keys whose every version a compaction step deleted, with the deletion that was their
    /// newest: the memo drops them.
    forgotten: Vec<(Vec<u8>, i64)>,
    /// An alarm was raised or cleared in this run: the memo's alarm state is not the store's.
    alarms_written: bool,
    /// The revisions the request being applied was stamped with by the oracle, if any.
    stamp: Option<Block>,
    /// The user keys the range holds, `[start, end)` (an empty end: to the end of the key
    /// space): what its compaction steps may delete.
    span: (Vec<u8>, Vec<u8>),
    /// The range takes its revisions from the oracle (its own last revision may be far below
    /// the cluster's).
    oracle_revisions: bool,
    /// The range's locks as earlier runs left them, and what this run wrote of them (with the
    /// request being applied's changes, to roll back on error); see `mvcc::locks`.
    lock_table: Option<&'a RwLock<super::locks::LockTable>>,
    lock_writes: std::collections::BTreeMap<Vec<u8>, Option<super::locks::LockRecord>>,
    lock_undo: Vec<LockUndo>,
}

/// A lock write of this run and what it replaced in the run's writes, to restore on rollback.
type LockUndo = (Vec<u8>, Option<Option<super::locks::LockRecord>>);

/// An overlay key and what it held before (`None`: absent), to restore on rollback.
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// The writes of one request in progress: they all share `revision`, numbered by `sub`.
struct Writes {
    revision: i64,
    sub: u32,
}

impl Writes {
    fn changed(&self) -> bool {
        self.sub > 0
    }
}

impl<'a> Applier<'a> {
    pub fn new(engine: &'a dyn Engine, range_id: RangeId, state: AppliedState) -> Self {
        Self::build(engine, range_id, state, None)
    }

    /// An applier that starts from what earlier runs learned about the store, and adds what
    /// this one learns and writes to it when it finishes, before its batch is written: the
    /// writer of that batch must stop the process if the write fails (see `memo`).
    pub fn with_memo(
        engine: &'a dyn Engine,
        range_id: RangeId,
        state: AppliedState,
        memo: &'a RwLock<Memo>,
    ) -> Self {
        Self::build(engine, range_id, state, Some(memo))
    }

    fn build(
        engine: &'a dyn Engine,
        range_id: RangeId,
        state: AppliedState,
        memo: Option<&'a RwLock<Memo>>,
    ) -> Self {
        Self {
            engine,
            range_id,
            state,
            overlay: Overlay::new(),
            batch: WriteBatch::new(),
            undo: Vec::new(),
            lease_changes: Vec::new(),
            memo,
            learned: Memo::default(),
            written: HashMap::new(),
            written_undo: Vec::new(),
            forgotten: Vec::new(),
            alarms_written: false,
            stamp: None,
            span: (Vec::new(), Vec::new()),
            oracle_revisions: false,
            lock_table: None,
            lock_writes: Default::default(),
            lock_undo: Vec::new(),
        }
    }

    /// Reads the range's locks from `table` instead of the engine, and adds this run's lock
    /// writes to it when it finishes.
    pub fn with_locks(mut self, table: &'a RwLock<super::locks::LockTable>) -> Self {
        self.lock_table = Some(table);
        self
    }

    /// This applier's range holds only the user keys in `[start, end)` (by default, all).
    pub fn with_span(mut self, (start, end): (&[u8], &[u8])) -> Self {
        self.span = (start.to_vec(), end.to_vec());
        self
    }

    pub fn with_oracle_revisions(mut self, oracle_revisions: bool) -> Self {
        self.oracle_revisions = oracle_revisions;
        self
    }

    pub fn state(&self) -> &AppliedState {
        &self.state
    }

    /// A view that sees this applier's writes.
    pub fn view(&self) -> View<'_> {
        View::with_overlay(self.engine, &self.overlay)
    }

    /// Records that the entry at `index` (of `term`) has been applied. Every entry must be
    /// marked, including ones that carry no request, so a restart never re-applies it.
    pub fn mark_applied(&mut self, index: u64, term: u64) {
        assert!(
            index > self.state.applied_index || index == 0,
            "applied index must increase: {} after {}",
            index,
            self.state.applied_index
        );
        self.state.applied_index = index;
        self.state.applied_term = term;
    }

    /// Applies one request stamped by the revision oracle with `block` (see
    /// [`Applier::apply`]): its writes take revision `max(last + 1, block.lo)`, which must be
    /// in the block, and a request that writes nothing reports `block.lo − 1` (every revision
    /// handed out before the block: `docs/design/revisions.md`, rule 5).
    pub fn apply_stamped(&mut self, request: &Request, block: Option<Block>) -> Result<Response> {
        self.stamp = block;
        let result = self.apply(request);
        self.stamp = None;
        result
    }

    /// Applies one request. An error leaves the store exactly as it was before the request.
    pub fn apply(&mut self, request: &Request) -> Result<Response> {
        let (batch_len, state) = (self.batch.len(), self.state);
        let leases_len = self.lease_changes.len();
        self.undo.clear();
        self.written_undo.clear();
        self.lock_undo.clear();
        let result = self.apply_inner(request);
        if result.is_err() {
            self.batch.truncate(batch_len);
            self.lease_changes.truncate(leases_len);
            self.state = state;
            for (key, previous) in self.undo.drain(..).rev() {
                match previous {
                    Some(value) => self.overlay.insert(key, value),
                    None => self.overlay.remove(&key),
                };
            }
            for (key, previous) in self.written_undo.drain(..).rev() {
                match previous {
                    Some(newest) => self.written.insert(key, newest),
                    None => self.written.remove(&key),
                };
            }
            for (key, previous) in self.lock_undo.drain(..).rev() {
                match previous {
                    Some(lock) => self.lock_writes.insert(key, lock),
                    None => self.lock_writes.remove(&key),
                };
            }
        }
        result
    }

    fn apply_inner(&mut self, request: &Request) -> Result<Response> {
        if alarm::adds_data(request) && self.no_space()? {
            return Err(Error::NoSpace);
        }
        self.check_locks(request)?;
        match request {
            Request::Put(req) => self.single(|this, w| this.put(w, req).map(Response::Put)),
            Request::DeleteRange(req) => {
                self.single(|this, w| this.delete_range(w, req).map(Response::DeleteRange))
            }
            Request::Txn(req) => self.txn(req).map(Response::Txn),
            Request::Compaction(req) => self.compact(req).map(Response::Compaction),
            Request::CompactionStep(step) => {
                self.compaction_step(step).map(|()| Response::CompactionStepped)
            }
            Request::LeaseGrant(req) => self.lease_grant(req).map(Response::LeaseGrant),
            Request::LeaseRevoke(req) => {
                self.single(|this, w| this.lease_revoke(w, req).map(Response::LeaseRevoke))
            }
            Request::Alarm(req) => self.alarm(req).map(Response::Alarm),
            Request::TsoCeiling(TsoCeiling { ceiling }) => {
                self.state.tso_ceiling = self.state.tso_ceiling.max(*ceiling);
                Ok(Response::TsoCeilingRaised)
            }
            Request::TxnPrepare(prepare) => self.txn_prepare(prepare),
            Request::TxnCommit(commit) => self.txn_commit(commit),
            Request::TxnRollback(rollback) => self.txn_rollback(rollback),
            Request::TxnForget(forget) => self.txn_forget(forget),
            Request::LeaseRegister(register) => self.lease_register(register),
            Request::LeaseMark(mark) => self.lease_mark(mark),
            Request::RangeIdAllocate(_) => self.allocate_range_id(),
            // Splits change the range's descriptor: applied by the replica.
            Request::Split(_) => Err(Error::Internal("a split applied as a write".into())),
            // Membership changes are Raft configuration changes, applied by the replica.
            Request::MemberChange(_) => {
                Err(Error::Internal("a membership change in a normal entry".into()))
            }
        }
    }

    /// Raises or clears an alarm; answers with the alarm that changed, if one did (as etcd).
    fn alarm(&mut self, req: &AlarmRequest) -> Result<AlarmResponse> {
        use crate::pb::etcdserverpb::AlarmMember;
        use crate::pb::etcdserverpb::AlarmType;
        use crate::pb::etcdserverpb::alarm_request::AlarmAction;
        let key = keys::alarm(req.member_id, req.alarm);
        let present = self.view().get_raw(&key)?.is_some();
        let member = AlarmMember { member_id: req.member_id, alarm: req.alarm };
        let changed = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Activate) if req.alarm != AlarmType::None as i32 && !present => {
                self.write_alarm(key, Some(Vec::new()));
                vec![member]
            }
            Ok(AlarmAction::Deactivate) if present => {
                self.write_alarm(key, None);
                vec![member]
            }
            Ok(AlarmAction::Get) => alarm::all(&self.view())?,
            _ => Vec::new(),
        };
        Ok(AlarmResponse { header: Self::header(self.state.revision), alarms: changed })
    }

    /// The leases granted and revoked so far in this run, in order.
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    /// Finishes the run: the batch holds every write plus the applied state.
    pub fn finish(mut self) -> (WriteBatch, AppliedState) {
        self.batch.put(Keyspace::Meta, keys::range_applied(self.range_id), self.state.encode());
        if let Some(memo) = self.memo {
            let mut memo = memo.write().expect("memo lock");
            memo.absorb(self.learned, self.written, self.alarms_written);
            for (key, mod_revision) in &self.forgotten {
                memo.forget_deleted(key, *mod_revision);
            }
        }
        if let Some(table) = self.lock_table {
            table.write().expect("lock table lock").absorb(self.lock_writes);
        }
        (self.batch, self.state)
    }

    /// The version of `key` that reads at `revision` see, as [`View::get`] finds it, taken from
    /// this run's writes or the memo when they can tell. Without `with_value` the value may be
    /// left empty.
    fn current(&mut self, key: &[u8], revision: i64, with_value: bool) -> Result<Option<KeyValue>> {
        let in_run = self.written.get(key).copied();
        let known = in_run
            .or_else(|| self.learned.get(key).copied())
            .or_else(|| self.memo.and_then(|m| m.read().expect("memo lock").lookup(key)))
            .and_then(|n| n.at(key, revision));
        let found = match known {
            Some(Some(mut kv)) if with_value => {
                kv.value = self.version_value(key, kv.mod_revision)?;
                Some(kv)
            }
            Some(found) => found,
            None => {
                let found = self.view().get(key, revision)?;
                // Without a version written in this run, what the view found is the engine's
                // newest: every read here is at or after the revision the engine holds.
                if in_run.is_none() {
                    self.learned.insert(key.to_vec(), Newest::of(found.as_ref(), revision));
                }
                return Ok(found);
            }
        };
        #[cfg(debug_assertions)]
        {
            let mut scanned = self.view().get(key, revision)?;
            if let (Some(kv), false) = (&mut scanned, with_value) {
                kv.value.clear();
            }
            assert_eq!(found, scanned, "the memo disagrees with the store at revision {revision}");
        }
        Ok(found)
    }

    /// The value of the version of `key` written at `mod_revision`, which exists.
    fn version_value(&self, key: &[u8], mod_revision: i64) -> Result<Vec<u8>> {
        let version_key = keys::version(key, mod_revision);
        let bytes = match self.overlay.get(&version_key) {
            Some(value) => value.clone(),
            None => self.engine.get(Keyspace::Mvcc, &version_key)?,
        };
        let bytes = bytes
            .ok_or_else(|| Error::Storage(format!("version {mod_revision} of a key is missing")))?;
        Ok(VersionRecord::decode(&bytes)?.value)
    }

    /// Whether a `NOSPACE` alarm is active.
    fn no_space(&mut self) -> Result<bool> {
        if self.alarms_written {
            return alarm::no_space(&self.view());
        }
        let known = self
            .learned
            .no_space
            .or_else(|| self.memo.and_then(|m| m.read().expect("memo lock").no_space));
        if let Some(no_space) = known {
            return Ok(no_space);
        }
        let no_space = alarm::no_space(&self.view())?;
        self.learned.no_space = Some(no_space);
        Ok(no_space)
    }

    fn write_alarm(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.alarms_written = true;
        self.write_raw(key, value);
    }

    /// The revision the request being applied writes at, if it writes: the next one, or with
    /// an oracle's stamp, the next one the stamp allows (checked when it writes).
    fn next_revision(&self) -> i64 {
        let next = self.state.revision + 1;
        self.stamp.map_or(next, |block| next.max(block.lo))
    }

    /// What a request that wrote nothing reports: the range's revision, or with a stamp, every
    /// revision handed out before it.
    fn unchanged_revision(&self) -> i64 {
        match self.stamp {
            Some(block) => self.state.revision.max(block.lo - 1),
            None => self.state.revision,
        }
    }

    fn single<T>(&mut self, f: impl FnOnce(&mut Self, &mut Writes) -> Result<T>) -> Result<T> {
        let mut writes = Writes { revision: self.next_revision(), sub: 0 };
        let result = f(self, &mut writes)?;
        if writes.changed() {
            self.state.revision = writes.revision;
        }
        Ok(result)
    }

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision, ..Default::default() })
    }

    /// The revision reads inside a request see: its own writes once it has made any.
    fn read_revision(&self, writes: &Writes) -> i64 {
        if writes.changed() { writes.revision } else { self.state.revision }
    }

    fn write_version(&mut self, writes: &mut Writes, key: &[u8], record: &VersionRecord) {
        use prost::Message as _;
        if let Some(block) = self.stamp {
            // A leader stamps only with a block above what the range used, so a write always
            // lands inside its own: anything else would reuse or reorder revisions.
            assert!(
                writes.revision <= block.hi,
                "range {}: revision {} is past its stamp {block:?}",
                self.range_id,
                writes.revision
            );
        }
        let version_key = keys::version(key, writes.revision);
        let bytes = record.encode_to_vec();
        self.batch.put(Keyspace::Mvcc, version_key.clone(), bytes.clone());
        self.overlay_write(version_key, Some(bytes));
        let change_key = keys::change(writes.revision, writes.sub);
        self.batch.put(Keyspace::Mvcc, change_key.clone(), key.to_vec());
        self.overlay_write(change_key, Some(key.to_vec()));
        writes.sub += 1;
        let newest = Newest::of_record(record, writes.revision);
        let previous = self.written.insert(key.to_vec(), newest);
        self.written_undo.push((key.to_vec(), previous));
    }

    /// Writes (or, with `None`, deletes) a record that is not a key version.
    fn write_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match &value {
            Some(v) => self.batch.put(Keyspace::Mvcc, key.clone(), v.clone()),
            None => self.batch.delete(Keyspace::Mvcc, key.clone()),
        }
        self.overlay_write(key, value);
    }

    /// Whether lease `id` exists, as this range can tell: the meta range holds the leases'
    /// records; another range goes by its marks (see `leases`).
    fn lease_exists(&self, id: i64) -> Result<bool> {
        if self.range_id != crate::range::META_RANGE_ID {
            return self.lease_marked(id);
        }
        Ok(lease::get(&self.view(), id)?.is_some())
    }

    /// Keeps the attachment records in step with a key's lease changing from `from` to `to`.
    fn reattach(&mut self, key: &[u8], from: i64, to: i64) {
        if from != 0 && from != to {
            self.write_raw(keys::lease_key(from, key), None);
        }
        if to != 0 && from != to {
            self.write_raw(keys::lease_key(to, key), Some(Vec::new()));
        }
    }

    fn overlay_write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let previous = self.overlay.insert(key.clone(), value);
        self.undo.push((key, previous));
    }

    fn put(&mut self, writes: &mut Writes, req: &PutRequest) -> Result<PutResponse> {
        // etcd checks the lease first (inside a transaction, `check_txn` has checked both).
        if req.lease != 0 && !self.lease_exists(req.lease)? {
            return Err(Error::LeaseNotFound);
        }
        let previous = self.current(&req.key, self.read_revision(writes), want_value(req))?;
        if (req.ignore_value || req.ignore_lease) && previous.is_none() {
            return Err(Error::KeyNotFound);
        }
        let value = match (&previous, req.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&previous, req.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => req.lease,
        };
        let record = VersionRecord {
            create_revision: previous.as_ref().map_or(writes.revision, |p| p.create_revision),
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value,
            tombstone: false,
        };
        self.write_version(writes, &req.key, &record);
        self.reattach(&req.key, previous.as_ref().map_or(0, |p| p.lease), lease);
        Ok(PutResponse {
            header: Self::header(writes.revision),
            prev_kv: if req.prev_kv { previous } else { None },
        })
    }

    fn delete_range(
        &mut self,
        writes: &mut Writes,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse> {
        let (start, end) = read::key_span(&req.key, &req.range_end);
        let mut doomed: Vec<KeyValue> = Vec::new();
        self.view().for_each_live(&start, &end, self.read_revision(writes), |live| {
            doomed.push(live.into_key_value()?);
            Ok(true)
        })?;
        let tombstone = VersionRecord { tombstone: true, ..Default::default() };
        for kv in &doomed {
            self.write_version(writes, &kv.key, &tombstone);
            self.reattach(&kv.key, kv.lease, 0);
        }
        let revision = if writes.changed() { writes.revision } else { self.unchanged_revision() };
        Ok(DeleteRangeResponse {
            header: Self::header(revision),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    fn range(
        &self,
        writes: &Writes,
        req: &RangeRequest,
    ) -> Result<crate::pb::etcdserverpb::RangeResponse> {
        // Inside a transaction a read at the current revision sees the transaction's writes.
        let state = AppliedState { revision: self.read_revision(writes), ..self.state };
        read::range(&self.view(), &state, req)
    }

    /// Grants a lease. Its id and TTL were settled before proposing, so every replica grants the
    /// same one. Granting takes no revision, as in etcd.
    fn lease_grant(&mut self, req: &LeaseGrantRequest) -> Result<LeaseGrantResponse> {
        if req.id == 0 {
            // The member that received the request picks an id before proposing.
            return Err(Error::LeaseNotFound);
        }
        if self.lease_exists(req.id)? {
            return Err(Error::LeaseExists);
        }
        use prost::Message as _;
        let incarnation = self.state.applied_index;
        let record = LeaseRecord { ttl: req.ttl, incarnation, spans: Vec::new() };
        self.write_raw(keys::lease(req.id), Some(record.encode_to_vec()));
        self.lease_changes.push(LeaseChange::Granted { id: req.id, ttl: req.ttl });
        Ok(LeaseGrantResponse {
            header: Self::header(self.state.revision),
            id: req.id,
            ttl: req.ttl,
            error: String::new(),
        })
    }

    /// Revokes a lease: every key attached to it is deleted, all at one revision.
    fn lease_revoke(
        &mut self,
        writes: &mut Writes,
        req: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse> {
        let Some(record) = lease::get(&self.view(), req.id)? else {
            return Err(Error::LeaseNotFound);
        };
        if !record.spans.is_empty() {
            return Err(Error::LeaseInRanges(req.id));
        }
        self.delete_leased_keys(writes, req.id)?;
        self.write_raw(keys::lease(req.id), None);
        self.lease_changes.push(LeaseChange::Revoked { id: req.id });
        let revision = if writes.changed() { writes.revision } else { self.unchanged_revision() };
        Ok(LeaseRevokeResponse { header: Self::header(revision) })
    }

    /// Compaction: reads below `revision` become impossible at once. The versions no read at or
    /// above it can see are deleted afterwards, by steps the leader proposes
    /// ([`Self::compaction_step`]), so a large store is never compacted inside one entry.
    fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse> {
        let revision = if self.oracle_revisions {
            self.cluster_compact(req.revision)?
        } else if req.revision > self.state.revision {
            return Err(Error::FutureRevision);
        } else {
            req.revision
        };
        if revision <= self.state.compact_revision {
            if self.oracle_revisions {
                // Nothing of this range changed since its last compaction.
                return Ok(CompactionResponse { header: Self::header(self.state.revision) });
            }
            return Err(Error::Compacted);
        }
        self.state.compact_revision = revision;
        // A step of an earlier compaction still pending starts over: what it left behind lies
        // below the new revision too.
        self.state.compaction_pending = true;
        let (start, _) = keys::version_bounds(&self.span.0, &self.span.1);
        self.write_raw(keys::compaction_cursor(self.range_id), Some(start));
        Ok(CompactionResponse { header: Self::header(self.state.revision) })
    }

    /// A compaction at `revision` of a range taking its revisions from the oracle, where the
    /// proposer checked the revision against the oracle's. The meta range keeps the cluster's
    /// compaction revision and refuses one at or below it, as etcd refuses it; every range
    /// compacts only up to its own last revision, since nothing of it changed between that and
    /// `revision` (a range's compaction revision never runs ahead of its revision, which its
    /// readers rely on). Returns the revision this range compacts at.
    fn cluster_compact(&mut self, revision: i64) -> Result<i64> {
        if self.range_id == crate::range::META_RANGE_ID {
            let floor =
                super::compaction::cluster_revision(&self.view(), self.state.compact_revision)?;
            if revision <= floor {
                return Err(Error::Compacted);
            }
            self.write_raw(keys::cluster_compaction(), Some(revision.to_be_bytes().to_vec()));
        }
        Ok(revision.min(self.state.revision))
    }

    /// Deletes the next part of what the pending compaction made unreadable: versions of the
    /// range's keys that no read at or above the compaction revision sees, then the change-index
    /// records below it that name the range's keys (the range owns no others). A step examines
    /// about `records` records and stops only between user keys, so a key's versions go in one
    /// batch: deleting a newer tombstone before the older versions under it would bring those
    /// back to life. Replicas applying the same step delete the same records.
    fn compaction_step(&mut self, step: &CompactionStep) -> Result<()> {
        if !self.state.compaction_pending {
            return Ok(()); // a step proposed twice, or after the work was done
        }
        let cursor = keys::compaction_cursor(self.range_id);
        let from = self
            .view()
            .get_raw(&cursor)?
            .ok_or_else(|| Error::Storage("a pending compaction without its cursor".into()))?;
        let budget = usize::try_from(step.records).unwrap_or(usize::MAX).max(1);
        let revision = self.state.compact_revision;
        let (_, versions_end) = keys::version_bounds(&self.span.0, &self.span.1);
        let (changes_start, changes_end) = keys::change_bounds(0, revision);
        let mut doomed = Vec::new();
        let next = if from < versions_end {
            let mut forgotten = Vec::new();
            let span = (from.as_slice(), versions_end.as_slice());
            let next =
                doomed_versions(self.view(), span, revision, budget, &mut doomed, &mut forgotten)?;
            self.forgotten.extend(forgotten);
            Some(next.unwrap_or(changes_start))
        } else {
            let mut next = None;
            let (start, end) = (self.span.0.as_slice(), self.span.1.as_slice());
            let in_span = |key: &[u8]| key >= start && (end.is_empty() || key < end);
            for (examined, item) in self.view().scan(&from, &changes_end)?.enumerate() {
                let (key, named) = item?;
                if examined == budget {
                    next = Some(key);
                    break;
                }
                if in_span(&named) {
                    doomed.push(key);
                }
            }
            next
        };
        for key in doomed {
            self.write_raw(key, None);
        }
        match next {
            Some(next) => self.write_raw(cursor, Some(next)),
            None => {
                self.write_raw(cursor, None);
                self.state.compaction_pending = false;
            }
        }
        Ok(())
    }
}

/// Whether a put needs the value of the version it replaces.
fn want_value(req: &PutRequest) -> bool {
    req.prev_kv || req.ignore_value
}
