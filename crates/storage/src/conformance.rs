//! The conformance suite every [`Engine`] must pass. Each check takes a fresh, empty engine and
//! panics on a violation; `tests/conformance.rs` runs all of them against every implementation.

use crate::{Durability, Engine, Keyspace, WriteBatch};

/// A conformance check: panics if the engine violates the contract.
pub type Check = fn(&dyn Engine);

/// Every check, by name, so the test harness can run each one as its own test.
pub const CHECKS: &[(&str, Check)] = &[
    ("point_reads", point_reads),
    ("scan_bounds", scan_bounds),
    ("keyspaces_are_separate", keyspaces_are_separate),
    ("batch_order_last_wins", batch_order_last_wins),
    ("scan_is_a_snapshot", scan_is_a_snapshot),
    ("binary_keys_sort_bytewise", binary_keys_sort_bytewise),
    ("empty_values_are_values", empty_values_are_values),
    ("invalid_keys_reject_the_batch", invalid_keys_reject_the_batch),
];

fn put(engine: &dyn Engine, ks: Keyspace, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(ks, key, value);
    engine.write(&batch, Durability::Buffered).expect("write");
}

fn scan(engine: &dyn Engine, ks: Keyspace, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine.scan(ks, start, end).expect("scan").collect::<Result<_, _>>().expect("scan item")
}

fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    pairs.iter().map(|(k, _)| k.as_slice()).collect()
}

/// Each keyspace (the `Raft` one has a journal of its own) reads back what was written.
pub fn point_reads(engine: &dyn Engine) {
    for ks in Keyspace::ALL {
        assert_eq!(engine.get(ks, b"a").unwrap(), None);
        put(engine, ks, b"a", b"1");
        assert_eq!(engine.get(ks, b"a").unwrap(), Some(b"1".to_vec()));
        put(engine, ks, b"a", b"2");
        assert_eq!(engine.get(ks, b"a").unwrap(), Some(b"2".to_vec()));
        let mut batch = WriteBatch::new();
        batch.delete(ks, b"a");
        engine.write(&batch, Durability::Sync).unwrap();
        assert_eq!(engine.get(ks, b"a").unwrap(), None);
        // Deleting a missing key is not an error.
        engine.write(&batch, Durability::Sync).unwrap();
    }
}

pub fn scan_bounds(engine: &dyn Engine) {
    for ks in Keyspace::ALL {
        for k in [b"a", b"b", b"c", b"d"] {
            put(engine, ks, k, k);
        }
        assert_eq!(keys(&scan(engine, ks, b"b", b"d")), vec![b"b", b"c"]);
        assert_eq!(keys(&scan(engine, ks, b"b", b"")), vec![b"b", b"c", b"d"]);
        assert_eq!(keys(&scan(engine, ks, b"", b"")).len(), 4);
        assert!(scan(engine, ks, b"c", b"c").is_empty());
        assert!(scan(engine, ks, b"d", b"a").is_empty());
        assert_eq!(scan(engine, ks, b"a", b"b"), vec![(b"a".to_vec(), b"a".to_vec())]);
    }
}

pub fn keyspaces_are_separate(engine: &dyn Engine) {
    put(engine, Keyspace::Raft, b"k", b"raft");
    put(engine, Keyspace::Mvcc, b"k", b"mvcc");
    put(engine, Keyspace::Meta, b"k", b"meta");
    assert_eq!(engine.get(Keyspace::Raft, b"k").unwrap(), Some(b"raft".to_vec()));
    assert_eq!(engine.get(Keyspace::Mvcc, b"k").unwrap(), Some(b"mvcc".to_vec()));
    for ks in Keyspace::ALL {
        assert_eq!(scan(engine, ks, b"", b"").len(), 1, "keyspace {ks} sees only its own keys");
    }
}

pub fn batch_order_last_wins(engine: &dyn Engine) {
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Raft, b"x", b"1");
    batch.put(Keyspace::Meta, b"y", b"1");
    batch.put(Keyspace::Raft, b"x", b"2");
    batch.delete(Keyspace::Meta, b"y");
    batch.put(Keyspace::Meta, b"z", b"3");
    assert_eq!(batch.len(), 5);
    engine.write(&batch, Durability::Sync).unwrap();
    assert_eq!(engine.get(Keyspace::Raft, b"x").unwrap(), Some(b"2".to_vec()));
    assert_eq!(engine.get(Keyspace::Meta, b"y").unwrap(), None);
    assert_eq!(engine.get(Keyspace::Meta, b"z").unwrap(), Some(b"3".to_vec()));
    engine.sync().unwrap();
}

pub fn scan_is_a_snapshot(engine: &dyn Engine) {
    for ks in Keyspace::ALL {
        put(engine, ks, b"a", b"1");
        put(engine, ks, b"c", b"1");
        let iter = engine.scan(ks, b"", b"").unwrap();
        put(engine, ks, b"b", b"1");
        let seen: Vec<_> = iter.map(|r| r.unwrap().0).collect();
        assert_eq!(seen, vec![b"a".to_vec(), b"c".to_vec()], "a scan does not see later writes");
    }
}

pub fn binary_keys_sort_bytewise(engine: &dyn Engine) {
    let ordered: [&[u8]; 5] = [b"\x00", b"\x00\x00", b"\x01", b"\x7f\xff", b"\xff"];
    for ks in Keyspace::ALL {
        for k in ordered.iter().rev() {
            put(engine, ks, k, b"v");
        }
        assert_eq!(keys(&scan(engine, ks, b"", b"")), ordered.to_vec());
    }
}

pub fn empty_values_are_values(engine: &dyn Engine) {
    put(engine, Keyspace::Meta, b"e", b"");
    assert_eq!(engine.get(Keyspace::Meta, b"e").unwrap(), Some(Vec::new()));
}

pub fn invalid_keys_reject_the_batch(engine: &dyn Engine) {
    for bad in [Vec::new(), vec![b'x'; crate::KEY_BYTES_MAX + 1]] {
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Mvcc, b"ok", b"1");
        batch.put(Keyspace::Mvcc, bad, b"1");
        assert!(engine.write(&batch, Durability::Sync).is_err());
        assert_eq!(
            engine.get(Keyspace::Mvcc, b"ok").unwrap(),
            None,
            "nothing of the batch applied"
        );
    }
    put(engine, Keyspace::Mvcc, &vec![b'x'; crate::KEY_BYTES_MAX], b"largest key");
}
