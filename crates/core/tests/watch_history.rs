//! Reading past events from the change index: order, types, previous versions, filters,
//! chunking, and what compaction leaves readable.

mod support;

use strata_core::command::{CompactionStep, Request};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
};
use strata_core::pb::mvccpb::Event;
use strata_core::watch::{Spec, history};
use support::Store;

/// The events `history::read` finds from `from` on, rendered.
fn events(store: &Store, from: i64, spec: Option<&Spec>, prev_kv: bool) -> Vec<String> {
    let chunk = history::read(
        &store.engine,
        (from, store.state.revision),
        store.state.compact_revision,
        spec,
        usize::MAX,
        prev_kv,
    )
    .unwrap();
    assert_eq!(chunk.through, store.state.revision);
    chunk.events.iter().map(show).collect()
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

fn del(key: &str, end: &str) -> Request {
    Request::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    })
}

/// `PUT a=1 @2 v1 (prev a=0 @1)`: type, key, value, revision, version, previous version.
fn show(event: &Event) -> String {
    let kv = event.kv.clone().unwrap_or_default();
    let kind = if event.r#type == 0 { "PUT" } else { "DELETE" };
    let mut out = format!(
        "{kind} {}={} @{} v{}",
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.mod_revision,
        kv.version
    );
    if let Some(prev) = &event.prev_kv {
        out += &format!(" (prev {} @{})", String::from_utf8_lossy(&prev.value), prev.mod_revision);
    }
    out
}

/// Revisions 2..=7: a=1, b=1, a=2, delete a, txn {c=1, delete b}, a=3.
fn sample() -> Store {
    let mut store = Store::new();
    store.apply(put("a", "1"));
    store.apply(put("b", "1"));
    store.apply(put("a", "2"));
    store.apply(del("a", ""));
    let op = |request| RequestOp { request: Some(request) };
    store.apply(Request::Txn(TxnRequest {
        success: vec![
            op(OpRequest::RequestPut(PutRequest {
                key: "c".into(),
                value: "1".into(),
                ..Default::default()
            })),
            op(OpRequest::RequestDeleteRange(DeleteRangeRequest {
                key: "b".into(),
                ..Default::default()
            })),
        ],
        ..Default::default()
    }));
    store.apply(put("a", "3"));
    store
}

#[test]
fn events_come_in_revision_order_with_previous_versions() {
    let store = sample();
    assert_eq!(
        events(&store, 1, None, true),
        [
            "PUT a=1 @2 v1",
            "PUT b=1 @3 v1",
            "PUT a=2 @4 v2 (prev 1 @2)",
            "DELETE a= @5 v0 (prev 2 @4)",
            "PUT c=1 @6 v1",
            "DELETE b= @6 v0 (prev 1 @3)",
            "PUT a=3 @7 v1",
        ]
    );
    assert_eq!(
        events(&store, 6, None, false),
        ["PUT c=1 @6 v1", "DELETE b= @6 v0", "PUT a=3 @7 v1"]
    );
}

#[test]
fn specs_select_keys_and_event_types() {
    let store = sample();
    let a = Spec { key: b"a".to_vec(), ..Default::default() };
    assert_eq!(
        events(&store, 1, Some(&a), false),
        ["PUT a=1 @2 v1", "PUT a=2 @4 v2", "DELETE a= @5 v0", "PUT a=3 @7 v1"]
    );
    let from_b_no_put = Spec {
        key: b"b".to_vec(),
        range_end: Some(Vec::new()),
        no_put: true,
        ..Default::default()
    };
    assert_eq!(events(&store, 1, Some(&from_b_no_put), false), ["DELETE b= @6 v0"]);
    let a_to_c_no_delete = Spec {
        key: b"a".to_vec(),
        range_end: Some(b"c".to_vec()),
        no_delete: true,
        ..Default::default()
    };
    assert_eq!(
        events(&store, 3, Some(&a_to_c_no_delete), false),
        ["PUT b=1 @3 v1", "PUT a=2 @4 v2", "PUT a=3 @7 v1"]
    );
}

#[test]
fn reads_stop_at_revision_boundaries() {
    let store = sample();
    // A budget of one byte still reads one whole revision, and revision 6 has two events.
    let mut from = 1;
    let mut seen = Vec::new();
    while from <= store.state.revision {
        let chunk =
            history::read(&store.engine, (from, store.state.revision), 0, None, 1, false).unwrap();
        assert!(chunk.through >= from, "every read makes progress");
        let revisions: Vec<i64> =
            chunk.events.iter().map(strata_core::watch::revision_of).collect();
        assert!(
            revisions.windows(2).all(|w| w[0] == w[1]),
            "one revision per chunk: {revisions:?}"
        );
        seen.extend(chunk.events.iter().map(show));
        from = chunk.through + 1;
    }
    assert_eq!(seen, events(&store, 1, None, false));
}

#[test]
fn compaction_keeps_every_event_from_its_revision_on() {
    let mut store = sample();
    store.apply(del("c", ""));
    // Compacting at 8 removes the tombstone written at 8 itself: the event is still read as a
    // deletion, from its change record. Its previous version is compacted away (as in etcd,
    // where reading it at revision 7 fails), while a's, still visible at 8, is kept.
    store.apply(Request::Compaction(CompactionRequest { revision: 8, physical: false }));
    assert_eq!(events(&store, 8, None, true), ["DELETE c= @8 v0"]);
    // The deletions come in steps; the history reads the same before, between and after them.
    while store.state.compaction_pending {
        store.apply(Request::CompactionStep(CompactionStep { records: 1 }));
        assert_eq!(events(&store, 8, None, true), ["DELETE c= @8 v0"]);
    }
    store.apply(put("a", "4"));
    assert_eq!(events(&store, 8, None, true), ["DELETE c= @8 v0", "PUT a=4 @9 v2 (prev 3 @7)"]);
}
