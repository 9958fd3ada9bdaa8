//! Two-phase commit as each range applies it (`mvcc::locks`): two ranges, `[.., "m")` and
//! `["m", ..)`, each its own store, driven the way the coordinator drives them.

mod support;

use strata_core::Error;
use strata_core::command::{
    LeaseMarkRequest, LeaseRegister, Request, TxnCommit, TxnPrepare, TxnRollback,
};
use strata_core::mvcc::locks::{self, TxnStatus};
use strata_core::mvcc::{Response, judge_compares};
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::response_op::Response as OpResponse;
use strata_core::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use strata_core::raftstore::oracle::Block;
use support::Store;

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), prev_kv: true, ..Default::default() }
}

fn value_is(key: &str, value: &str) -> Compare {
    Compare {
        key: key.into(),
        target: CompareTarget::Value as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::Value(value.into())),
        ..Default::default()
    }
}

fn op(request: OpRequest) -> RequestOp {
    RequestOp { request: Some(request) }
}

/// Both ranges, with "a" = 1 in the first and "x" = 1 in the second.
fn two_ranges() -> (Store, Store) {
    let (mut low, mut high) = (Store::of_span("", "m"), Store::of_span("m", ""));
    low.apply(Request::Put(put("a", "1")));
    high.apply(Request::Put(put("x", "1")));
    (low, high)
}

/// Moves `a` to 2 and `x` to 2 if both are 1, reading every key as it goes.
fn transfer() -> TxnRequest {
    TxnRequest {
        compare: vec![value_is("a", "1"), value_is("x", "1")],
        success: vec![
            op(OpRequest::RequestPut(put("a", "2"))),
            op(OpRequest::RequestPut(put("x", "2"))),
            op(OpRequest::RequestRange(RangeRequest {
                key: "a".into(),
                range_end: "z".into(),
                ..Default::default()
            })),
        ],
        failure: vec![],
    }
}

fn prepare(id: u64, start_ts: i64, slot: u32, txn: &TxnRequest) -> Request {
    Request::TxnPrepare(TxnPrepare {
        id: locks::txn_id(1, 1, id).to_vec(),
        start_ts,
        primary_key: b"a".to_vec(),
        slot,
        txn: Some(txn.clone()),
        ..Default::default()
    })
}

fn commit(id: u64, commit_ts: i64, compares: Vec<bool>) -> Request {
    Request::TxnCommit(TxnCommit {
        id: locks::txn_id(1, 1, id).to_vec(),
        primary_key: b"a".to_vec(),
        commit_ts,
        compares,
    })
}

fn rollback(id: u64) -> Request {
    Request::TxnRollback(TxnRollback {
        id: locks::txn_id(1, 1, id).to_vec(),
        primary_key: b"a".to_vec(),
    })
}

fn judged(response: Response) -> Vec<i32> {
    match response {
        Response::TxnPrepared(said) => said,
        other => panic!("a prepare answered {other:?}"),
    }
}

fn get(store: &Store, key: &str) -> Option<(String, i64, i64)> {
    let kv = store.indexed().get(key.as_bytes(), store.state.revision).unwrap()?;
    Some((String::from_utf8(kv.value).unwrap(), kv.mod_revision, kv.version))
}

#[test]
fn a_transaction_across_two_ranges_commits_in_both_at_one_revision() {
    let (mut low, mut high) = two_ranges();
    let txn = transfer();
    let parts =
        vec![judged(low.apply(prepare(1, 5, 0, &txn))), judged(high.apply(prepare(1, 5, 1, &txn)))];
    assert_eq!(low.state.lock_count, 1);
    assert_eq!(low.state.lock_floor, 5);
    let compares = judge_compares(&txn.compare, &parts);
    assert_eq!(compares, vec![true, true]);

    let Response::Txn(part) = high.apply(commit(1, 10, compares.clone())) else { panic!() };
    assert!(part.succeeded);
    let Response::Txn(primary) = low.apply(commit(1, 10, compares)) else { panic!() };
    // Each range answers its part of every operation: its own put, its keys of the read.
    match &primary.responses[0].response {
        Some(OpResponse::ResponsePut(put)) => {
            assert_eq!(put.prev_kv.as_ref().map(|kv| kv.value.as_slice()), Some(&b"1"[..]))
        }
        other => panic!("{other:?}"),
    }
    match &part.responses[2].response {
        Some(OpResponse::ResponseRange(range)) => {
            let keys: Vec<&[u8]> = range.kvs.iter().map(|kv| kv.key.as_slice()).collect();
            assert_eq!(keys, vec![&b"x"[..]], "the second range reads only its keys");
            assert_eq!(range.kvs[0].value, b"2", "a read after a write sees it");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&low, "a"), Some(("2".into(), 10, 2)));
    assert_eq!(get(&high, "x"), Some(("2".into(), 10, 2)));
    for store in [&low, &high] {
        assert_eq!((store.state.lock_count, store.state.lock_floor), (0, 0));
        assert_eq!(store.state.revision, 10, "a commit raises its range's revision");
    }
    // A later write in a range reads what the commit wrote.
    let stamp = Some(Block { lo: 11, hi: 11 });
    match high.write_stamped(Request::Put(put("x", "3")), stamp).unwrap() {
        Response::Put(put) => {
            assert_eq!(put.prev_kv.map(|kv| (kv.value, kv.version)), Some((b"2".to_vec(), 2)))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn locked_keys_refuse_other_writes_until_released() {
    let (mut low, mut high) = two_ranges();
    let txn = transfer();
    low.apply(prepare(1, 5, 0, &txn));
    high.apply(prepare(1, 5, 1, &txn));
    let locked = |result: Result<Response, Error>| matches!(result, Err(Error::Locked(info)) if info.start_ts == 5);
    assert!(locked(low.write(Request::Put(put("a", "9")))));
    // The read of the transaction locks ["m", "z") in the second range.
    assert!(locked(high.write(Request::Put(put("y", "9")))));
    let delete =
        DeleteRangeRequest { key: "b".into(), range_end: "\0".into(), ..Default::default() };
    assert!(locked(low.write(Request::DeleteRange(delete.clone()))));
    let reads_a = TxnRequest { compare: vec![value_is("a", "1")], ..Default::default() };
    assert!(locked(low.write(Request::Txn(reads_a))), "a comparison is a read, and refused too");
    // Keys outside the transaction's spans are free.
    low.apply(Request::Put(put("0", "1")));
    high.apply(Request::Put(put("zz", "1")));
    // Another transaction over a locked key is refused at prepare, one elsewhere is not.
    let other = TxnRequest {
        success: vec![op(OpRequest::RequestPut(put("a", "7")))],
        ..Default::default()
    };
    assert!(locked(low.write(prepare(2, 6, 0, &other))));
    let apart = TxnRequest {
        success: vec![op(OpRequest::RequestPut(put("1", "7")))],
        ..Default::default()
    };
    low.apply(prepare(3, 7, 0, &apart));
    assert_eq!((low.state.lock_count, low.state.lock_floor), (2, 5));

    low.apply(rollback(1));
    high.apply(rollback(1));
    assert_eq!((low.state.lock_count, low.state.lock_floor), (1, 7));
    assert_eq!(high.state.lock_count, 0);
    low.apply(Request::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() }));
    high.apply(Request::Put(put("y", "9")));
    assert_eq!(
        get(&high, "x"),
        Some(("1".into(), 2, 1)),
        "a rolled back transaction wrote nothing"
    );
}

#[test]
fn the_primary_decides_a_transaction_once() {
    let (mut low, mut high) = two_ranges();
    let txn = transfer();
    low.apply(prepare(1, 5, 0, &txn));
    high.apply(prepare(1, 5, 1, &txn));
    // Taken for abandoned: the primary's range rolls it back, and says so to whoever asks.
    assert_eq!(low.apply(rollback(1)), Response::TxnDecided(TxnStatus::default()));
    assert_eq!(low.write(commit(1, 10, vec![true, true])), Err(Error::TxnAborted));
    assert_eq!(
        low.write(prepare(1, 5, 0, &txn)),
        Err(Error::TxnAborted),
        "a late prepare is fenced"
    );
    assert_eq!(high.apply(rollback(1)), Response::TxnDecided(TxnStatus::default()));

    // Committed first: a rollback asked later learns the commit, to finish the others with.
    low.apply(prepare(2, 12, 0, &txn));
    high.apply(prepare(2, 12, 1, &txn));
    low.apply(commit(2, 20, vec![true, false]));
    let committed = TxnStatus { committed: true, commit_ts: 20, compares: vec![true, false] };
    assert_eq!(low.apply(rollback(2)), Response::TxnDecided(committed));
    let Response::Txn(part) = high.apply(commit(2, 20, vec![true, false])) else { panic!() };
    assert!(!part.succeeded);
    assert_eq!(get(&high, "x"), Some(("1".into(), 2, 1)), "the failure branch writes nothing");
    assert_eq!(high.state.lock_count, 0);
}

#[test]
fn a_comparison_over_keys_of_two_ranges_holds_where_every_key_holds() {
    use strata_core::mvcc::{COMPARE_FAILS as F, COMPARE_HOLDS as H, COMPARE_NO_KEYS as N};
    let version_above_zero = Compare {
        key: "a".into(),
        range_end: "z".into(),
        target: CompareTarget::Version as i32,
        result: CompareResult::Greater as i32,
        target_union: Some(TargetUnion::Version(0)),
    };
    let compares = [version_above_zero.clone()];
    assert_eq!(judge_compares(&compares, &[vec![H], vec![N]]), vec![true]);
    assert_eq!(judge_compares(&compares, &[vec![H], vec![F]]), vec![false]);
    // No key at all compares as a missing key: version 0 is not above 0.
    assert_eq!(judge_compares(&compares, &[vec![N], vec![N]]), vec![false]);
    let version_zero = Compare { result: CompareResult::Equal as i32, ..version_above_zero };
    assert_eq!(judge_compares(&[version_zero], &[vec![N], vec![N]]), vec![true]);

    let (mut low, mut high) = two_ranges();
    let over_both = TxnRequest { compare: compares.to_vec(), ..Default::default() };
    let said = vec![
        judged(low.apply(prepare(1, 5, 0, &over_both))),
        judged(high.apply(prepare(1, 5, 1, &over_both))),
    ];
    assert_eq!(said, vec![vec![H], vec![H]]);
}

/// The meta range `[.., "m")` and range 2 `["m", ..)` with lease 7 granted, given to "a" in the
/// meta range and to "x" in range 2 (once registered there).
fn leased_in_two_ranges() -> (Store, Store, u64) {
    let (mut meta, mut high) = (Store::of_range(1, "", "m"), Store::of_range(2, "m", ""));
    meta.apply(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }));
    let leased = |key: &str| Request::Put(PutRequest { lease: 7, ..put(key, "held") });
    meta.apply(leased("a"));
    // Range 2 cannot read the lease's record: it refuses until the lease is registered.
    assert_eq!(high.write(leased("x")).unwrap_err(), Error::LeaseUnregistered(7));
    let Response::LeaseRegistered(incarnation) = meta.apply(register(7)) else { panic!() };
    high.apply(Request::LeaseMark(LeaseMarkRequest { lease: 7, incarnation }));
    high.apply(leased("x"));
    (meta, high, incarnation)
}

fn register(lease: i64) -> Request {
    let span = Some(locks::Span { start: b"m".to_vec(), end: Vec::new() });
    Request::LeaseRegister(LeaseRegister { lease, span })
}

fn revoke_prepare(slot: u32, lease_incarnation: u64) -> Request {
    Request::TxnPrepare(TxnPrepare {
        id: locks::txn_id(1, 1, 9).to_vec(),
        start_ts: 5,
        primary_key: Vec::new(),
        slot,
        revoke_lease: 7,
        lease_incarnation,
        ..Default::default()
    })
}

#[test]
fn a_lease_with_keys_in_two_ranges_is_revoked_in_both_at_one_revision() {
    let (mut meta, mut high, incarnation) = leased_in_two_ranges();
    let revoke = Request::LeaseRevoke(LeaseRevokeRequest { id: 7 });
    assert_eq!(meta.write(revoke).unwrap_err(), Error::LeaseInRanges(7));

    // The meta range locks the lease and names the ranges it was registered for.
    match meta.apply(revoke_prepare(0, 0)) {
        Response::LeasePrepared { incarnation: said, spans } => {
            assert_eq!(said, incarnation);
            assert_eq!(spans, vec![locks::Span { start: b"m".to_vec(), end: Vec::new() }]);
        }
        other => panic!("{other:?}"),
    }
    high.apply(revoke_prepare(1, incarnation));
    // While locked: the leased key, a put with the lease and a registration wait; other keys
    // do not.
    let leased = Request::Put(PutRequest { lease: 7, ..put("y", "new") });
    assert!(matches!(high.write(leased.clone()), Err(Error::Locked(_))));
    assert!(matches!(high.write(Request::Put(put("x", "mine"))), Err(Error::Locked(_))));
    assert!(matches!(meta.write(register(7)), Err(Error::Locked(_))));
    high.apply(Request::Put(put("y", "free")));

    let commit = |slot_store: &mut Store| {
        let request = Request::TxnCommit(TxnCommit {
            id: locks::txn_id(1, 1, 9).to_vec(),
            primary_key: Vec::new(),
            commit_ts: 20,
            compares: Vec::new(),
        });
        slot_store.apply(request)
    };
    commit(&mut meta);
    commit(&mut high);
    assert_eq!(get(&meta, "a"), None);
    assert_eq!(get(&high, "x"), None);
    for (store, key) in [(&meta, "a"), (&high, "x")] {
        let deleted = store.plain().get(key.as_bytes(), 19).unwrap();
        assert!(deleted.is_some() && store.plain().get(key.as_bytes(), 20).unwrap().is_none());
    }
    assert_eq!(get(&high, "y").map(|(value, ..)| value), Some("free".into()));

    // A registration of the revoked incarnation arriving late changes nothing; the lease is
    // gone, so registering it again is refused.
    high.apply(Request::LeaseMark(LeaseMarkRequest { lease: 7, incarnation }));
    assert_eq!(high.write(leased.clone()).unwrap_err(), Error::LeaseUnregistered(7));
    assert_eq!(meta.write(register(7)).unwrap_err(), Error::LeaseNotFound);

    // Granted again, the same id is a new incarnation, registered anew.
    meta.apply(Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }));
    let Response::LeaseRegistered(again) = meta.apply(register(7)) else { panic!() };
    assert!(again > incarnation);
    high.apply(Request::LeaseMark(LeaseMarkRequest { lease: 7, incarnation: again }));
    high.apply(leased);
}
