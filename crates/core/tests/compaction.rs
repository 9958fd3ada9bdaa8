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
        assert!(store.engine.get(Keyspace::Mvcc, &keys::compaction_cursor()).unwrap().is_none());

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
