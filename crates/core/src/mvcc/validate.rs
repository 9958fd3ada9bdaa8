//! Request checks made before a request is proposed, mirroring etcd's gRPC-layer checks
//! (`checkRangeRequest`, `checkPutRequest`, `checkDeleteRequest`, `checkTxnRequest` and the
//! duplicate-key interval check). A request that fails here never reaches the Raft log.

use std::collections::HashSet;

use super::Limits;
use crate::pb::etcdserverpb::request_op::Request as OpRequest;
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::{Error, Result};

/// Largest user key accepted. etcd has no key limit below the request size; Strata's engine
/// stores escaped keys of at most 60 KiB, so keys are capped at 28 KiB (see
/// docs/etcd-compatibility.md).
pub const KEY_BYTES_MAX: usize = 28 * 1024;

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::KeyTooLarge);
    }
    Ok(())
}

pub fn check_range(req: &RangeRequest) -> Result<()> {
    check_key(&req.key)
}

pub fn check_put(req: &PutRequest) -> Result<()> {
    check_key(&req.key)?;
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<()> {
    check_key(&req.key)
}

pub fn check_txn(req: &TxnRequest, limits: &Limits) -> Result<()> {
    check_txn_ops(req, limits.txn_ops_max)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// `max` is what is left of the operation budget: as in etcd, a nested transaction may use only
/// what its parent's longest list (compares, success or failure) leaves, so the budget shrinks
/// with every level of nesting.
fn check_txn_ops(req: &TxnRequest, max: usize) -> Result<()> {
    let ops = req.compare.len().max(req.success.len()).max(req.failure.len());
    if ops > max {
        return Err(Error::TooManyOps);
    }
    for compare in &req.compare {
        check_key(&compare.key)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(OpRequest::RequestRange(r)) => check_range(r)?,
            Some(OpRequest::RequestPut(p)) => check_put(p)?,
            Some(OpRequest::RequestDeleteRange(d)) => check_delete_range(d)?,
            Some(OpRequest::RequestTxn(t)) => check_txn_ops(t, max - ops)?,
            None => {}
        }
    }
    Ok(())
}

/// A deleted span `[start, end)`, or a single key when `end` is `None`.
struct Span {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => self.start == key,
            // etcd's "\0" end means "to the end of the key space".
            Some(end) if end.as_slice() == [0] => key >= self.start.as_slice(),
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

/// etcd rejects a transaction branch in which one key is written twice, or written and deleted:
/// the outcome would depend on operation order in a way etcd does not define. Puts in the
/// `success` and `failure` branches of a nested transaction may overlap, since only one runs.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Span>)> {
    let mut dels: Vec<Span> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(OpRequest::RequestDeleteRange(d)) => Some(Span {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Span], key: &[u8]| dels.iter().any(|span| span.contains(key));
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(OpRequest::RequestTxn(txn)) = &op.request else { continue };
        let (puts_then, dels_then) = check_intervals(&txn.success)?;
        let (puts_else, dels_else) = check_intervals(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&dels, key) {
                return Err(Error::DuplicateKey);
            }
        }
        for key in &puts_else {
            if (puts.contains(key) && !puts_then.contains(key)) || deleted(&dels, key) {
                return Err(Error::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(OpRequest::RequestPut(put)) = &op.request else { continue };
        if puts.contains(&put.key) || deleted(&dels, &put.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::request_op::Request;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }
    fn del(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest { compare: vec![], success, failure })),
        }
    }
    fn check(ops: Vec<RequestOp>) -> Result<()> {
        check_txn(
            &TxnRequest { compare: vec![], success: ops, failure: vec![] },
            &Limits::default(),
        )
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(check(vec![put("a"), put("a")]), Err(Error::DuplicateKey));
        assert_eq!(check(vec![put("b"), del("a", "c")]), Err(Error::DuplicateKey));
        assert_eq!(check(vec![put("z"), del("a", "\0")]), Err(Error::DuplicateKey));
        assert_eq!(check(vec![put("a"), del("b", "")]), Ok(()));
        assert_eq!(check(vec![del("a", "c"), del("b", "d")]), Ok(()));
        assert_eq!(check(vec![txn(vec![put("a")], vec![put("a")])]), Ok(()));
        assert_eq!(check(vec![put("a"), txn(vec![put("a")], vec![])]), Err(Error::DuplicateKey));
        assert_eq!(
            check(vec![txn(vec![del("a", "")], vec![]), put("a")]),
            Err(Error::DuplicateKey)
        );
    }

    #[test]
    fn op_limits_and_keys() {
        let many: Vec<_> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check(many), Err(Error::TooManyOps));
        // Beside one more operation, a nested transaction has 128 - 2 operations left.
        let nested = |n: usize| (0..n).map(|i| put(&format!("n{i}"))).collect::<Vec<_>>();
        assert_eq!(check(vec![put("a"), txn(nested(127), vec![])]), Err(Error::TooManyOps));
        assert_eq!(check(vec![put("a"), txn(nested(126), vec![])]), Ok(()));
        assert_eq!(check(vec![put("")]), Err(Error::EmptyKey));
        let ignore = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check_put(&ignore), Err(Error::ValueProvided));
    }
}
