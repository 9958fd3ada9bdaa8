//! Leases in the state machine: grants, keys attached by `Put`, and revocation deleting every
//! attached key at one revision; the errors etcd gives.

use strata_core::command::Request;
use strata_core::mvcc::view::View;
use strata_core::mvcc::{AppliedState, Applier, LeaseChange, Response, lease};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
};
use strata_core::watch::history;
use strata_core::{Error, Result};
use strata_storage::{Durability, Engine, MemEngine};

struct Store {
    engine: MemEngine,
    state: AppliedState,
    index: u64,
    changes: Vec<LeaseChange>,
}

impl Store {
    fn new() -> Self {
        Self {
            engine: MemEngine::new(),
            state: AppliedState::initial(),
            index: 0,
            changes: Vec::new(),
        }
    }

    fn apply(&mut self, request: Request) -> Result<Response> {
        self.index += 1;
        let mut applier = Applier::new(&self.engine, 1, self.state);
        applier.mark_applied(self.index, 1);
        let result = applier.apply(&request);
        self.changes.extend(applier.take_lease_changes());
        let (batch, state) = applier.finish();
        self.engine.write(&batch, Durability::Buffered).unwrap();
        self.state = state;
        result
    }

    fn attached(&self, id: i64) -> Vec<String> {
        let keys = lease::attached_keys(&View::new(&self.engine), id).unwrap();
        keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
    }

    fn value(&self, key: &str) -> Option<(String, i64)> {
        let kv = View::new(&self.engine).get(key.as_bytes(), self.state.revision).unwrap()?;
        Some((String::from_utf8_lossy(&kv.value).into_owned(), kv.lease))
    }
}

fn grant(id: i64, ttl: i64) -> Request {
    Request::LeaseGrant(LeaseGrantRequest { id, ttl })
}

fn revoke(id: i64) -> Request {
    Request::LeaseRevoke(LeaseRevokeRequest { id })
}

fn put(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() }
}

#[test]
fn revoking_a_lease_deletes_its_keys_at_one_revision() {
    let mut s = Store::new();
    s.apply(grant(7, 10)).unwrap();
    assert_eq!(s.state.revision, 1, "granting takes no revision");
    s.apply(Request::Put(put("a", "1", 7))).unwrap();
    s.apply(Request::Put(put("b", "1", 7))).unwrap();
    s.apply(Request::Put(put("c", "1", 0))).unwrap();
    assert_eq!(s.attached(7), ["a", "b"]);
    assert_eq!(s.value("a"), Some(("1".into(), 7)));
    assert_eq!(lease::all(&View::new(&s.engine)).unwrap(), [(7, 10)]);

    let before = s.state.revision;
    s.apply(revoke(7)).unwrap();
    assert_eq!(s.state.revision, before + 1, "one revision for every key deleted");
    assert_eq!((s.value("a"), s.value("b")), (None, None));
    assert_eq!(s.value("c"), Some(("1".into(), 0)));
    assert!(s.attached(7).is_empty());
    assert!(lease::all(&View::new(&s.engine)).unwrap().is_empty());
    assert_eq!(
        s.changes,
        [LeaseChange::Granted { id: 7, ttl: 10 }, LeaseChange::Revoked { id: 7 }]
    );
    // Watchers see the deletions as ordinary delete events.
    let chunk =
        history::read(&s.engine, (before + 1, before + 1), 0, None, usize::MAX, false).unwrap();
    assert_eq!(chunk.events.len(), 2);
}

#[test]
fn attachments_follow_puts_and_deletes() {
    let mut s = Store::new();
    s.apply(grant(1, 10)).unwrap();
    s.apply(grant(2, 10)).unwrap();
    s.apply(Request::Put(put("k", "1", 1))).unwrap();
    // Moving the key to another lease detaches it from the first.
    s.apply(Request::Put(put("k", "2", 2))).unwrap();
    assert_eq!((s.attached(1), s.attached(2)), (vec![], vec!["k".to_string()]));
    // ignore_lease keeps the lease.
    let keep = PutRequest { ignore_lease: true, ..put("k", "3", 0) };
    s.apply(Request::Put(keep)).unwrap();
    assert_eq!(s.value("k"), Some(("3".into(), 2)));
    assert_eq!(s.attached(2), ["k"]);
    // A put without a lease detaches it.
    s.apply(Request::Put(put("k", "4", 0))).unwrap();
    assert!(s.attached(2).is_empty());
    s.apply(Request::Put(put("k", "5", 2))).unwrap();
    s.apply(Request::DeleteRange(DeleteRangeRequest { key: "k".into(), ..Default::default() }))
        .unwrap();
    assert!(s.attached(2).is_empty(), "a deleted key is detached");
    // Revoking lease 2 now deletes nothing and takes no revision.
    let before = s.state.revision;
    s.apply(revoke(2)).unwrap();
    assert_eq!(s.state.revision, before);
}

#[test]
fn lease_errors_are_etcds() {
    let mut s = Store::new();
    s.apply(grant(1, 10)).unwrap();
    assert_eq!(s.apply(grant(1, 5)), Err(Error::LeaseExists));
    assert_eq!(s.apply(revoke(9)), Err(Error::LeaseNotFound));
    assert_eq!(s.apply(Request::Put(put("a", "1", 9))), Err(Error::LeaseNotFound));
    // The lease is checked before the missing key (as etcd does outside transactions).
    let ignore = PutRequest { ignore_value: true, ..put("missing", "", 9) };
    assert_eq!(s.apply(Request::Put(ignore)), Err(Error::LeaseNotFound));
    let op = |p| RequestOp { request: Some(OpRequest::RequestPut(p)) };
    let txn = TxnRequest {
        success: vec![op(put("x", "1", 1)), op(put("y", "1", 9))],
        ..Default::default()
    };
    assert_eq!(s.apply(Request::Txn(txn)), Err(Error::LeaseNotFound));
    assert_eq!(s.value("x"), None, "a failed transaction writes nothing");
    assert!(s.attached(1).is_empty(), "nor attaches anything");
    // Granted and revoked within one run, the grant first.
    s.apply(revoke(1)).unwrap();
    assert_eq!(s.apply(Request::Put(put("a", "1", 1))), Err(Error::LeaseNotFound));
}
