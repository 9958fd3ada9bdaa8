//! Alarms: conditions a member raises that the whole cluster acts on, replicated like keys.
//!
//! The one alarm Strata raises is `NOSPACE`: a member whose store grew past its quota (etcd's
//! `--quota-backend-bytes`) proposes it, and while it is active every replica refuses writes
//! that add data (puts, transactions that put, lease grants) and still applies deletions,
//! compactions and revocations, which are how an operator makes room before disarming it.

use super::view::View;
use crate::command::Request;
use crate::pb::etcdserverpb::AlarmMember;
use crate::pb::etcdserverpb::AlarmType;
use crate::pb::etcdserverpb::TxnRequest;
use crate::pb::etcdserverpb::request_op::Request as OpRequest;
use crate::{Error, Result, keys};

/// Every active alarm, by member.
pub fn all(view: &View<'_>) -> Result<Vec<AlarmMember>> {
    let (lo, hi) = keys::alarm_bounds();
    let mut out = Vec::new();
    for item in view.scan(&lo, &hi)? {
        let (key, _) = item?;
        let (member_id, alarm) =
            keys::decode_alarm(&key).ok_or_else(|| Error::Storage("malformed alarm key".into()))?;
        out.push(AlarmMember { member_id, alarm });
    }
    Ok(out)
}

/// Whether a `NOSPACE` alarm is active.
pub fn no_space(view: &View<'_>) -> Result<bool> {
    Ok(all(view)?.iter().any(|a| a.alarm == AlarmType::Nospace as i32))
}

/// Whether a request would add data: what a member over its quota refuses (etcd's capped
/// applier). Deletions, compactions, revocations and read-only transactions still run.
pub fn adds_data(request: &Request) -> bool {
    fn txn_puts(txn: &TxnRequest) -> bool {
        txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
            Some(OpRequest::RequestPut(_)) => true,
            Some(OpRequest::RequestTxn(t)) => txn_puts(t),
            _ => false,
        })
    }
    match request {
        Request::Put(_) | Request::LeaseGrant(_) => true,
        Request::Txn(txn) => txn_puts(txn),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use strata_storage::{Durability, Engine, MemEngine};

    use super::*;
    use crate::Error;
    use crate::mvcc::{AppliedState, Applier};
    use crate::pb::etcdserverpb::alarm_request::AlarmAction;
    use crate::pb::etcdserverpb::{
        AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
        RangeRequest, RequestOp,
    };

    #[test]
    fn an_active_nospace_alarm_refuses_only_writes_that_add_data() {
        let engine = MemEngine::new();
        let mut state = AppliedState::initial();
        let mut apply = |request: Request| {
            let mut applier = Applier::new(&engine, 1, state);
            let result = applier.apply(&request);
            let (batch, new_state) = applier.finish();
            engine.write(&batch, Durability::Buffered).unwrap();
            state = new_state;
            result
        };
        let put = |key: &str| Request::Put(PutRequest { key: key.into(), ..Default::default() });
        let alarm = |action: AlarmAction| {
            Request::Alarm(AlarmRequest {
                action: action as i32,
                member_id: 7,
                alarm: AlarmType::Nospace as i32,
            })
        };
        apply(put("a")).unwrap();
        apply(alarm(AlarmAction::Activate)).unwrap();
        assert!(no_space(&View::new(&engine)).unwrap());
        assert_eq!(apply(put("b")), Err(Error::NoSpace));
        let grant = Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 1 });
        assert_eq!(apply(grant), Err(Error::NoSpace));
        let op = |request| RequestOp { request: Some(request) };
        let txn_put = TxnRequest {
            success: vec![op(OpRequest::RequestPut(PutRequest {
                key: "c".into(),
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert_eq!(apply(Request::Txn(txn_put)), Err(Error::NoSpace));
        let txn_read = TxnRequest {
            success: vec![op(OpRequest::RequestRange(RangeRequest {
                key: "a".into(),
                ..Default::default()
            }))],
            ..Default::default()
        };
        apply(Request::Txn(txn_read)).expect("read-only transactions run");
        apply(Request::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() }))
            .expect("deletions run");
        apply(Request::Compaction(CompactionRequest { revision: 2, physical: false }))
            .expect("compactions run");
        apply(alarm(AlarmAction::Deactivate)).unwrap();
        assert!(all(&View::new(&engine)).unwrap().is_empty());
        apply(put("b")).expect("writes run again once disarmed");
    }
}
