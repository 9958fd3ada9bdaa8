//! Applying the steps of two-phase commit in one range (see `mvcc::locks`): prepare, commit,
//! roll back, forget; and the check every one-round write makes against the locks.

use prost::Message as _;

use super::{Applier, Response, Writes, compare_one};
use crate::command::{Request, TxnCommit, TxnPrepare, TxnRollback};
use crate::mvcc::locks::{self, LockRecord, Span, TxnStatus};
use crate::mvcc::read;
use crate::pb::etcdserverpb::compare::CompareTarget;
use crate::pb::etcdserverpb::request_op::Request as OpRequest;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutResponse, RangeResponse, ResponseOp,
    TxnResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::{Error, Result, keys};

/// What a range says of one comparison of a transaction it prepared.
pub const COMPARE_NO_KEYS: i32 = 0;
pub const COMPARE_HOLDS: i32 = 1;
pub const COMPARE_FAILS: i32 = 2;

/// Whether each comparison holds, from what every range of the transaction said of it: a
/// comparison over keys of several ranges holds if it holds for every key there is, and with no
/// key at all as etcd judges a missing key (see `Applier::compare_holds`).
pub fn judge_compares(compares: &[Compare], parts: &[Vec<i32>]) -> Vec<bool> {
    let said = |i: usize| parts.iter().filter_map(move |part| part.get(i).copied());
    (compares.iter().enumerate())
        .map(|(i, compare)| {
            if said(i).any(|s| s == COMPARE_FAILS) {
                return false;
            }
            if said(i).any(|s| s == COMPARE_HOLDS) {
                return true;
            }
            let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
            target != CompareTarget::Value && compare_one(compare, target, &KeyValue::default())
        })
        .collect()
}

impl Applier<'_> {
    fn span_owned(&self) -> (Vec<u8>, Vec<u8>) {
        self.span.clone()
    }

    /// Whether the range holds `key`.
    pub(super) fn holds(&self, key: &[u8]) -> bool {
        let (first, past) = &self.span;
        key >= first.as_slice() && (past.is_empty() || key < past.as_slice())
    }

    /// The range's locks, with this run's writes.
    pub(super) fn locks(&self) -> Result<Vec<(Vec<u8>, LockRecord)>> {
        let Some(table) = self.lock_table else {
            let (first, past) = &self.span;
            return locks::in_span(&self.view(), (first, past));
        };
        let table = table.read().expect("lock table lock");
        let mut locks: std::collections::BTreeMap<&Vec<u8>, &LockRecord> = table.locks().collect();
        for (key, lock) in &self.lock_writes {
            match lock {
                Some(lock) => locks.insert(key, lock),
                None => locks.remove(key),
            };
        }
        Ok(locks.into_iter().map(|(key, lock)| (key.clone(), lock.clone())).collect())
    }

    /// Writes (or, with `None`, releases) a lock.
    fn write_lock(&mut self, key: Vec<u8>, lock: Option<LockRecord>) {
        self.write_raw(key.clone(), lock.as_ref().map(|lock| lock.encode_to_vec()));
        let previous = self.lock_writes.insert(key.clone(), lock);
        self.lock_undo.push((key, previous));
    }

    /// Refuses a one-round request touching keys a transaction across ranges holds locked.
    pub(super) fn check_locks(&mut self, request: &Request) -> Result<()> {
        if self.state.lock_count == 0 {
            return Ok(());
        }
        let (first, past) = self.span_owned();
        let within = (first.as_slice(), past.as_slice());
        let mut leases = Vec::new();
        let spans: Vec<Span> = match request {
            Request::Put(put) => {
                leases.push(put.lease);
                locks::clip(&put.key, &[], within).into_iter().collect()
            }
            Request::DeleteRange(delete) => {
                locks::clip(&delete.key, &delete.range_end, within).into_iter().collect()
            }
            Request::Txn(txn) => {
                locks::txn_leases(txn, &mut leases);
                locks::txn_spans_within(txn, within)
            }
            Request::LeaseRevoke(revoke) => {
                leases.push(revoke.id);
                self.leased_spans(revoke.id)?
            }
            Request::LeaseRegister(register) => {
                leases.push(register.lease);
                Vec::new()
            }
            _ => return Ok(()),
        };
        leases.retain(|lease| *lease != 0);
        let locks = self.locks()?;
        locks::check(locks.iter().map(|(_, lock)| lock), &spans, &leases, i64::MAX)
    }

    /// Recounts the range's locks into the applied state, after one was taken or released.
    fn count_locks(&mut self) -> Result<()> {
        let locks = self.locks()?;
        self.state.lock_count = locks.len() as u64;
        self.state.lock_floor = locks.iter().map(|(_, lock)| lock.start_ts).min().unwrap_or(0);
        Ok(())
    }

    fn status(&self, primary_key: &[u8], id: &locks::TxnId) -> Result<Option<TxnStatus>> {
        let record = self.view().get_raw(&keys::txn_status(primary_key, id))?;
        record.map(|bytes| TxnStatus::decode(&bytes)).transpose()
    }

    /// Phase one: locks the transaction's spans in this range, unless another transaction
    /// holds any of them, and says of each comparison what it finds here.
    pub(super) fn txn_prepare(&mut self, prepare: &TxnPrepare) -> Result<Response> {
        let id = locks::parse_id(&prepare.id)?;
        let (first, past) = self.span_owned();
        let within = (first.as_slice(), past.as_slice());
        if let Some(routed) = &prepare.span
            && (routed.start != first || routed.end != past)
        {
            return Err(Error::EpochNotMatch { range_id: self.range_id, proposed: 0, current: 0 });
        }
        // A decided transaction is never prepared again: its rollback fences a late prepare.
        if self.holds(&prepare.primary_key) && self.status(&prepare.primary_key, &id)?.is_some() {
            return Err(Error::TxnAborted);
        }
        let (spans, anchor, incarnation, prepared) = match &prepare.txn {
            _ if prepare.revoke_lease != 0 => {
                let (spans, incarnation, prepared) = self.lease_prepare(prepare)?;
                (spans, first.clone(), incarnation, prepared)
            }
            Some(txn) => {
                let spans = locks::txn_spans_within(txn, within);
                let Some(anchor) = spans.iter().map(|span| span.start.clone()).min() else {
                    return Err(Error::Internal(
                        "a transaction prepared in a range it misses".into(),
                    ));
                };
                let judged: Result<Vec<i32>> =
                    txn.compare.iter().map(|compare| self.judge(compare, within)).collect();
                (spans, anchor, 0, Response::TxnPrepared(judged?))
            }
            None => return Err(Error::Internal("a prepare without its transaction".into())),
        };
        let existing = self.locks()?;
        if !existing.iter().any(|(_, lock)| lock.id == prepare.id) {
            let leases: Vec<i64> = [prepare.revoke_lease].into_iter().filter(|l| *l != 0).collect();
            locks::check(existing.iter().map(|(_, lock)| lock), &spans, &leases, i64::MAX)?;
            let record = LockRecord {
                id: prepare.id.clone(),
                start_ts: prepare.start_ts,
                primary_key: prepare.primary_key.clone(),
                slot: prepare.slot,
                txn: prepare.txn.clone(),
                spans,
                lease: prepare.revoke_lease,
                lease_incarnation: incarnation,
                expiry_term: prepare.expiry_term,
            };
            self.write_lock(keys::lock(&anchor, &id), Some(record));
            self.count_locks()?;
        }
        Ok(prepared)
    }

    /// What this range finds of one comparison (`COMPARE_*`).
    fn judge(&mut self, compare: &Compare, within: (&[u8], &[u8])) -> Result<i32> {
        let Some(span) = locks::clip(&compare.key, &compare.range_end, within) else {
            return Ok(COMPARE_NO_KEYS);
        };
        let revision = self.state.revision;
        if compare.range_end.is_empty() {
            let holds = self.compare_holds(revision, compare)?;
            return Ok(if holds { COMPARE_HOLDS } else { COMPARE_FAILS });
        }
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        let mut found = Vec::new();
        self.view().for_each_live(&span.start, &span.end, revision, |live| {
            found.push(live.into_key_value()?);
            Ok(true)
        })?;
        Ok(match found.iter().all(|kv| compare_one(compare, target, kv)) {
            _ if found.is_empty() => COMPARE_NO_KEYS,
            true => COMPARE_HOLDS,
            false => COMPARE_FAILS,
        })
    }

    /// Phase two: writes the transaction's part in this range at its commit revision, answers
    /// with this range's part of every operation of the branch taken, and unlocks. In the
    /// primary's range this is the commit point.
    ///
    /// The range's revision is raised to the commit revision: the leader that took the commit
    /// stamps nothing at or below it from then on (`raftstore::stamping::take`), and the writes
    /// after the commit must read what it wrote.
    pub(super) fn txn_commit(&mut self, commit: &TxnCommit) -> Result<Response> {
        let id = locks::parse_id(&commit.id)?;
        let primary = self.holds(&commit.primary_key);
        let Some((lock_key, lock)) = self.locks()?.into_iter().find(|(_, l)| l.id == commit.id)
        else {
            // Committed before (a commit sent again after its answer was lost), or rolled back.
            if primary && self.status(&commit.primary_key, &id)?.is_some_and(|s| s.committed) {
                return Ok(Response::Txn(TxnResponse {
                    header: Self::header(commit.commit_ts),
                    ..Default::default()
                }));
            }
            return Err(Error::TxnAborted);
        };
        let txn = lock.txn.clone().unwrap_or_default();
        self.state.revision = self.state.revision.max(commit.commit_ts);
        let succeeded = commit.compares.iter().all(|held| *held);
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let mut writes = Writes { revision: commit.commit_ts, sub: lock.slot << 24 };
        let (first, past) = self.span_owned();
        let within = (first.as_slice(), past.as_slice());
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(OpRequest::RequestRange(r)) => {
                    OpResponse::ResponseRange(match locks::clip(&r.key, &r.range_end, within) {
                        Some(_) => {
                            self.range(&writes, &read::part_of(r, first.as_slice(), &past))?
                        }
                        None => RangeResponse::default(),
                    })
                }
                Some(OpRequest::RequestPut(p)) => {
                    OpResponse::ResponsePut(match self.holds(&p.key) {
                        true => self.put(&mut writes, p)?,
                        false => PutResponse::default(),
                    })
                }
                Some(OpRequest::RequestDeleteRange(d)) => {
                    let part = locks::clip(&d.key, &d.range_end, within);
                    OpResponse::ResponseDeleteRange(match part {
                        Some(Span { start, end }) => {
                            let range_end = if end.is_empty() { vec![0] } else { end };
                            let part = DeleteRangeRequest { key: start, range_end, ..d.clone() };
                            self.delete_range(&mut writes, &part)?
                        }
                        None => DeleteRangeResponse::default(),
                    })
                }
                Some(OpRequest::RequestTxn(_)) => {
                    return Err(Error::Internal("a nested transaction across ranges".into()));
                }
                None => continue,
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        if lock.lease != 0 {
            self.check_expiry_term(lock.expiry_term)?;
            self.lease_commit(&mut writes, lock.lease, lock.lease_incarnation)?;
        }
        self.write_lock(lock_key, None);
        if primary {
            let status = TxnStatus {
                committed: true,
                commit_ts: commit.commit_ts,
                compares: commit.compares.clone(),
            };
            self.write_raw(keys::txn_status(&commit.primary_key, &id), Some(status.encode()));
        }
        self.count_locks()?;
        let header = Self::header(commit.commit_ts);
        Ok(Response::Txn(TxnResponse { header, succeeded, responses }))
    }

    /// Unlocks without writing. In the primary's range it decides the transaction, if it was
    /// not decided yet, as rolled back; the answer is the decision (a committed one included:
    /// whoever asked then commits the rest).
    pub(super) fn txn_rollback(&mut self, rollback: &TxnRollback) -> Result<Response> {
        let id = locks::parse_id(&rollback.id)?;
        if self.holds(&rollback.primary_key) {
            if let Some(status) = self.status(&rollback.primary_key, &id)? {
                return Ok(Response::TxnDecided(status));
            }
            let key = keys::txn_status(&rollback.primary_key, &id);
            self.write_raw(key, Some(TxnStatus::default().encode()));
        }
        if let Some((key, _)) = self.locks()?.into_iter().find(|(_, l)| l.id == rollback.id) {
            self.write_lock(key, None);
            self.count_locks()?;
        }
        Ok(Response::TxnDecided(TxnStatus::default()))
    }

    /// Drops a transaction's status once no range holds a lock of it, nor ever will: every
    /// range committed it, or rolled it back with no prepare left to apply.
    pub(super) fn txn_forget(&mut self, forget: &TxnRollback) -> Result<Response> {
        let id = locks::parse_id(&forget.id)?;
        if self.holds(&forget.primary_key) {
            self.write_raw(keys::txn_status(&forget.primary_key, &id), None);
        }
        Ok(Response::TxnForgotten)
    }
}
