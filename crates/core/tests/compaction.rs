//! Compaction in steps: whatever point a replica's deletions have reached, every read allowed
//! after the compaction answers the same, `HashKV` agrees, and once the steps are done exactly
//! the versions such reads can see are left.

mod support;

use std::sync::RwLock;

use strata_core::command::{CompactionStep, Request};
use strata_core::keys;
use strata_core::mvcc::memo::Memo;
use strata_core::mvcc::view::View;
use strata_core::mvcc::{hash, read};
use strata_core::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
};
use strata_storage::{Engine, Keyspace};
use support::Store;

/// Every read a client may still make: each key and the whole key space, at every
/// revision from the compaction revision on, plus `HashKV` at each. Reads through the key
/// index must answer as reads of the engine alone do.
fn answers(store: &Store) -> Vec<(RangeResponse, u32)> {
    let answers = answers_through(store, store.plain());
    assert!(answers == answers_through(store, store.indexed()));
    answers
}

fn answers_through(store: &Store, view: View<'_>) -> Vec<(RangeResponse, u32)> {
    (store.state.compact_revision..=store.state.revision)
        .flat_map(|revision| {
            let spans =
                (0..KEYS).map(|k| (key(k), Vec::new())).chain([(b"\0".to_vec(), b"\0".to_vec())]);
            let view = &view;
            spans.map(move |(key, range_end)| {
                let req = RangeRequest { key, range_end, revision, ..Default::default() };
                let mut response = read::range(view, &store.state, &req).unwrap();
                response.header = None;
                let hash = hash::hash_kv(view, revision, store.state.compact_revision).unwrap();
                (response, hash)
            })
        })
        .collect()
}

fn versions(store: &Store) -> usize {
    let (lo, hi) = keys::version_bounds(b"", b"");
    store.engine.scan(Keyspace::Mvcc, &lo, &hi).unwrap().count()
}

fn changes_below(store: &Store, revision: i64) -> usize {
    let (lo, hi) = keys::change_bounds(0, revision);
    store.engine.scan(Keyspace::Mvcc, &lo, &hi).unwrap().count()
}

const KEYS: u64 = 12;

fn key(k: u64) -> Vec<u8> {
    format!("k{k:02}").into_bytes()
}

/// A history of puts and deletes over a few keys, from a fixed pseudo-random sequence.
fn history(seed: u64, writes: usize) -> Store {
    let mut store = Store::new();
    let mut x = seed;
    for i in 0..writes {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let k = key((x >> 33) % KEYS);
        let request = if (x >> 20).is_multiple_of(4) {
            Request::DeleteRange(DeleteRangeRequest { key: k, ..Default::default() })
        } else {
            Request::Put(PutRequest {
                key: k,
                value: i.to_string().into_bytes(),
                ..Default::default()
            })
        };
        store.apply(request);
    }
    store
}

#[test]
fn reads_answer_the_same_at_every_step() {
    for (seed, budget) in [(1, 2), (2, 3), (3, 7), (4, 1000)] {
        let mut store = history(seed, 120);
        let revision = store.state.revision * 2 / 3;
        store.apply(Request::Compaction(CompactionRequest { revision, physical: false }));
        assert!(store.state.compaction_pending);
        let expected = answers(&store);
        let versions_before = versions(&store);
        let mut steps = 0;
        while store.state.compaction_pending {
            store.apply(Request::CompactionStep(CompactionStep { records: budget }));
            steps += 1;
            assert!(answers(&store) == expected, "seed {seed}: answers changed at step {steps}");
        }
        assert!(budget > 100 || steps > 5, "seed {seed}: {steps} steps of {budget} records");
        assert!(versions(&store) < versions_before);
        assert_eq!(changes_below(&store, revision), 0);
        assert!(store.engine.get(Keyspace::Mvcc, &keys::compaction_cursor(1)).unwrap().is_none());

        // Exactly what reads at or above the revision can see is left: each key's versions
        // above it, and its version at it unless that is a deletion.
        let view = View::new(&store.engine);
        let mut left = 0;
        for k in 0..KEYS {
            let at = view.get(&key(k), revision).unwrap();
            let mut newer = 0;
            for r in revision + 1..=store.state.revision {
                newer += usize::from(
                    store.engine.get(Keyspace::Mvcc, &keys::version(&key(k), r)).unwrap().is_some(),
                );
            }
            left += usize::from(at.is_some()) + newer;
        }
        assert_eq!(versions(&store), left, "seed {seed}");
        // The key index forgot the keys compaction left without any version.
        let loaded = RwLock::new(Memo::load(&store.engine, (b"", b"")).unwrap());
        assert_eq!(store.memo.read().unwrap().len(), loaded.read().unwrap().len(), "seed {seed}");
        let view = View::with_memo(&store.engine, &loaded);
        assert!(answers_through(&store, view) == expected, "seed {seed}: a loaded memo differs");

        // A step proposed after the work is done changes nothing.
        let index = store.index;
        store.apply(Request::CompactionStep(CompactionStep { records: 1 }));
        assert_eq!(answers(&store), expected);
        assert_eq!(store.index, index + 1);
    }
}

#[test]
fn a_later_compaction_takes_over_a_pending_one() {
    let mut store = history(9, 200);
    let first = store.state.revision / 3;
    store.apply(Request::Compaction(CompactionRequest { revision: first, physical: false }));
    store.apply(Request::CompactionStep(CompactionStep { records: 5 }));
    store.apply(Request::Put(PutRequest {
        key: key(0),
        value: b"x".to_vec(),
        ..Default::default()
    }));
    let second = store.state.revision - 10;
    store.apply(Request::Compaction(CompactionRequest { revision: second, physical: false }));
    let expected = answers(&store);
    while store.state.compaction_pending {
        store.apply(Request::CompactionStep(CompactionStep { records: 4 }));
    }
    assert_eq!(answers(&store), expected);
    assert_eq!(changes_below(&store, second), 0);
}

/// A range compacts only what it owns: the versions of its keys and the change records naming
/// them, with a cursor of its own. Another range's records on the same node stay as they were.
#[test]
fn a_range_compacts_only_its_own_keys() {
    use strata_core::mvcc::Applier;
    use strata_core::range::RangeDescriptor;
    let mut store = Store::new();
    for round in 0..5 {
        for key in ["a", "l", "m", "x"] {
            let value = format!("{key}{round}").into_bytes();
            store.apply(Request::Put(PutRequest { key: key.into(), value, ..Default::default() }));
        }
    }
    let meta = RangeDescriptor::bootstrap(1, b"", b"m", &[1]);
    let data = RangeDescriptor::bootstrap(2, b"m", b"", &[1]);
    let owned = |store: &Store, range: &RangeDescriptor| -> Vec<(Vec<u8>, Vec<u8>)> {
        let records = store.engine.scan(Keyspace::Mvcc, b"", b"").unwrap();
        records.map(|r| r.unwrap()).filter(|(k, v)| range.owns(k, v)).collect()
    };
    let meta_before = owned(&store, &meta);
    let compact_at = store.state.revision - 2;
    // Range 2 applies the compaction and its steps, a few records at a time.
    let mut requests =
        vec![Request::Compaction(CompactionRequest { revision: compact_at, ..Default::default() })];
    requests.extend((0..30).map(|_| Request::CompactionStep(CompactionStep { records: 3 })));
    for request in requests {
        store.index += 1;
        let mut applier =
            Applier::with_memo(&store.engine, 2, store.state, &store.memo).with_span(data.span());
        applier.mark_applied(store.index, 1);
        applier.apply(&request).unwrap();
        let (batch, state) = applier.finish();
        store.engine.write(&batch, strata_storage::Durability::Buffered).unwrap();
        store.state = state;
    }
    assert!(!store.state.compaction_pending, "the steps finished");
    assert_eq!(owned(&store, &meta), meta_before, "range 1's records are untouched");
    let left: Vec<(Vec<u8>, i64)> =
        owned(&store, &data).iter().filter_map(|(k, _)| keys::decode_version(k)).collect();
    // Of m and x, only the version a read at the compaction revision sees, and the newer ones.
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(left.iter().all(|(_, revision)| *revision >= compact_at - 3), "{left:?}");
    let change_names: Vec<Vec<u8>> = {
        let (lo, hi) = keys::change_bounds(0, compact_at);
        let changes = store.engine.scan(Keyspace::Mvcc, &lo, &hi).unwrap();
        changes.map(|r| r.unwrap().1).collect()
    };
    assert!(change_names.iter().all(|key| key.as_slice() < b"m".as_slice()), "{change_names:?}");
    assert!(store.engine.get(Keyspace::Mvcc, &keys::compaction_cursor(2)).unwrap().is_none());
}

/// In a cluster of ranges taking revisions from the oracle, a range's own last revision may be
/// far below the cluster's: a compaction past it compacts the range up to its own revision
/// (never beyond: its readers rely on that), the meta range keeps the cluster's compaction
/// revision and refuses one at or below it as etcd does, and a range with nothing new since its
/// last compaction answers without compacting again.
#[test]
fn ranges_of_the_oracle_compact_up_to_their_own_revision() {
    use strata_core::mvcc::Applier;
    let mut store = Store::new();
    for round in 0..3 {
        let value = format!("v{round}").into_bytes();
        store.apply(Request::Put(PutRequest { key: "a".into(), value, ..Default::default() }));
    }
    let own = store.state.revision;
    let compact = |store: &mut Store, range_id: u64, revision: i64| {
        store.index += 1;
        let mut applier = Applier::with_memo(&store.engine, range_id, store.state, &store.memo)
            .with_oracle_revisions(true);
        applier.mark_applied(store.index, 1);
        let request = CompactionRequest { revision, ..Default::default() };
        let result = applier.apply(&Request::Compaction(request));
        let (batch, state) = applier.finish();
        store.engine.write(&batch, strata_storage::Durability::Buffered).unwrap();
        store.state = state;
        result.map(drop)
    };
    // The cluster is at revision 100; this range wrote nothing since `own`.
    compact(&mut store, 1, 100).unwrap();
    assert_eq!(store.state.compact_revision, own, "compacted up to its own revision");
    let floor = store.engine.get(Keyspace::Mvcc, &keys::cluster_compaction()).unwrap();
    assert_eq!(floor, Some(100i64.to_be_bytes().to_vec()), "the cluster's revision is kept");
    let again = compact(&mut store, 1, 100).unwrap_err();
    assert!(matches!(again, strata_core::Error::Compacted), "{again:?}");
    compact(&mut store, 1, 120).unwrap();
    assert_eq!(store.state.compact_revision, own, "nothing new to compact");
    // Another range keeps no cluster revision, and a compaction with nothing new is no error.
    compact(&mut store, 2, 120).unwrap();
    assert_eq!(store.state.compact_revision, own);
}
