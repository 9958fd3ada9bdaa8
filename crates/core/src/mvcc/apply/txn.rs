//! Applying a `Txn` within one range: its comparisons, the checks etcd makes along the path it
//! takes, and its operations in order.

use super::{Applier, Writes};
use crate::mvcc::read;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request as OpRequest;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::{Error, Result};

impl Applier<'_> {
    pub(super) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let mut writes = Writes { revision: self.next_revision(), sub: 0 };
        // Check the whole path first, as etcd does, so a failing operation deep inside leaves
        // nothing half-applied.
        self.check_txn(req)?;
        let response = self.execute_txn(&mut writes, req)?;
        let revision = if writes.changed() {
            self.state.revision = writes.revision;
            writes.revision
        } else {
            self.unchanged_revision()
        };
        Ok(TxnResponse { header: Self::header(revision), ..response })
    }

    fn compares_hold(&mut self, revision: i64, compares: &[Compare]) -> Result<bool> {
        for compare in compares {
            if !self.compare_holds(revision, compare)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) fn compare_holds(&mut self, revision: i64, compare: &Compare) -> Result<bool> {
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        let found: Vec<KeyValue> = if compare.range_end.is_empty() {
            let with_value = target == CompareTarget::Value;
            self.current(&compare.key, revision, with_value)?.into_iter().collect()
        } else {
            let (start, end) = read::key_span(&compare.key, &compare.range_end);
            let mut found = Vec::new();
            self.view().for_each_live(&start, &end, revision, |live| {
                found.push(live.into_key_value()?);
                Ok(true)
            })?;
            found
        };
        if found.is_empty() {
            // A missing key has no value to compare; every other target compares as zero.
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_one(compare, target, &KeyValue::default()));
        }
        Ok(found.iter().all(|kv| compare_one(compare, target, kv)))
    }

    /// The checks etcd makes before executing a transaction, along the path it will take.
    fn check_txn(&mut self, req: &TxnRequest) -> Result<()> {
        let ops = if self.compares_hold(self.state.revision, &req.compare)? {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            match &op.request {
                Some(OpRequest::RequestRange(r)) => {
                    read::read_revision(&self.state, r.revision)?;
                }
                Some(OpRequest::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease)
                        && self.current(&p.key, self.state.revision, false)?.is_none()
                    {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.lease_exists(p.lease)? {
                        return Err(Error::LeaseNotFound);
                    }
                }
                Some(OpRequest::RequestTxn(t)) => self.check_txn(t)?,
                Some(OpRequest::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn execute_txn(&mut self, writes: &mut Writes, req: &TxnRequest) -> Result<TxnResponse> {
        // etcd decides every branch, nested ones included, on the store as it was before the
        // transaction (`compareToPath`): a nested compare does not see earlier operations' writes.
        // This is also the path `check_txn` checked.
        let succeeded = self.compares_hold(self.state.revision, &req.compare)?;
        let ops: &[RequestOp] = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(OpRequest::RequestRange(r)) => {
                    OpResponse::ResponseRange(self.range(writes, r)?)
                }
                Some(OpRequest::RequestPut(p)) => OpResponse::ResponsePut(self.put(writes, p)?),
                Some(OpRequest::RequestDeleteRange(d)) => {
                    OpResponse::ResponseDeleteRange(self.delete_range(writes, d)?)
                }
                Some(OpRequest::RequestTxn(t)) => {
                    let mut nested = self.execute_txn(writes, t)?;
                    // etcd fills in only the outermost header; a nested one stays empty.
                    nested.header = Some(ResponseHeader::default());
                    OpResponse::ResponseTxn(nested)
                }
                None => continue,
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: None, succeeded, responses })
    }
}

pub(crate) fn compare_one(compare: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let ordering = match (target, &compare.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
        // A target without its value compares against the zero value, as etcd's Go code does.
        (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
        (CompareTarget::Version, _) => kv.version.cmp(&0),
        (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    match CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}
