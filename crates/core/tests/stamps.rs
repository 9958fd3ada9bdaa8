//! Applying writes stamped by the revision oracle (`docs/design/revisions.md`): a write takes
//! the next revision its block allows, a request that writes nothing reports every revision
//! handed out before its block, and no write ever lands outside its block.

mod support;

use strata_core::command::{Request, TsoCeiling};
use strata_core::mvcc::Response;
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::request_op::Request as Op;
use strata_core::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use strata_core::raftstore::oracle::Block;
use support::Store;

fn put(key: &str) -> Request {
    Request::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() })
}

fn stamp(lo: i64, hi: i64) -> Option<Block> {
    Some(Block { lo, hi })
}

fn revision(response: Response) -> i64 {
    let header = match response {
        Response::Put(r) => r.header,
        Response::DeleteRange(r) => r.header,
        Response::Txn(r) => r.header,
        other => panic!("unexpected {other:?}"),
    };
    header.expect("a header").revision
}

#[test]
fn a_stamped_write_takes_the_next_revision_its_block_allows() {
    let mut store = Store::new();
    // One round's block of three, shared by its writes in log order.
    assert_eq!(revision(store.write_stamped(put("a"), stamp(10, 12)).unwrap()), 10);
    assert_eq!(revision(store.write_stamped(put("b"), stamp(10, 12)).unwrap()), 11);
    // A later block starts past what the range used.
    assert_eq!(revision(store.write_stamped(put("a"), stamp(20, 20)).unwrap()), 20);
    assert_eq!(store.state.revision, 20);
    // An unstamped write (a range counting itself) takes the next one.
    assert_eq!(revision(store.apply(put("c"))), 21);
    let a = store.indexed().get(b"a", 21).unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (10, 20, 2));
}

#[test]
fn a_request_that_writes_nothing_reports_every_revision_handed_out_before_its_block() {
    let mut store = Store::new();
    store.write_stamped(put("a"), stamp(5, 5)).unwrap();
    let delete =
        Request::DeleteRange(DeleteRangeRequest { key: b"absent".to_vec(), ..Default::default() });
    assert_eq!(revision(store.write_stamped(delete, stamp(9, 9)).unwrap()), 8);
    assert_eq!(store.state.revision, 5, "and takes no revision");
    let compare = Compare {
        key: b"a".to_vec(),
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        target_union: Some(TargetUnion::Value(b"other".to_vec())),
        ..Default::default()
    };
    let read = RequestOp {
        request: Some(Op::RequestRange(RangeRequest { key: b"a".to_vec(), ..Default::default() })),
    };
    let write = RequestOp {
        request: Some(Op::RequestPut(PutRequest { key: b"a".to_vec(), ..Default::default() })),
    };
    let txn = TxnRequest { compare: vec![compare], success: vec![write], failure: vec![read] };
    let response = store.write_stamped(Request::Txn(txn), stamp(12, 12)).unwrap();
    assert_eq!(revision(response), 11, "the failure branch only read");
    // A block below what the range used reports the range's own revision.
    let delete =
        Request::DeleteRange(DeleteRangeRequest { key: b"absent".to_vec(), ..Default::default() });
    assert_eq!(revision(store.write_stamped(delete, stamp(3, 3)).unwrap()), 5);
}

#[test]
#[should_panic(expected = "is past its stamp")]
fn a_write_outside_its_block_is_a_bug_that_stops_the_process() {
    let mut store = Store::new();
    store.write_stamped(put("a"), stamp(10, 10)).unwrap();
    // A block the range has already passed: its write could only land above it.
    let _ = store.write_stamped(put("b"), stamp(4, 6));
}

#[test]
fn the_oracles_ceiling_only_rises() {
    let mut store = Store::new();
    for (ceiling, expected) in [(100, 100), (50, 100), (250, 250)] {
        store.apply(Request::TsoCeiling(TsoCeiling { ceiling }));
        assert_eq!(store.state.tso_ceiling, expected);
    }
    assert_eq!(store.state.revision, 1, "a ceiling is no write");
}
