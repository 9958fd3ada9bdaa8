//! Micro-benchmarks of the hot paths of a write: MVCC key encoding, applying a batch of puts,
//! the engine's batch write, and Raft message encoding. Run with
//! `cargo bench -p strata-core --bench hot_paths`; docs/benchmarks.md has the figures.

use std::hint::black_box;
use std::sync::RwLock;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use raft::prelude::{Entry, Message, MessageType};
use strata_core::command::Request;
use strata_core::keys;
use strata_core::mvcc::memo::Memo;
use strata_core::mvcc::{AppliedState, Applier};
use strata_core::pb::etcdserverpb::PutRequest;
use strata_core::raftstore::{decode_raft, encode_raft};
use strata_storage::{Durability, Engine, FjallEngine, Keyspace, WriteBatch};

/// Puts in one apply batch, as a member applies them under load (256 clients).
const BATCH: usize = 256;
/// Keys the puts spread over, all written once before measuring.
const KEY_SPACE: u64 = 10_000;

fn put(i: u64) -> Request {
    Request::Put(PutRequest {
        key: format!("{:08}", i % KEY_SPACE).into_bytes(),
        value: vec![b'v'; 256],
        ..Default::default()
    })
}

fn key_encoding(c: &mut Criterion) {
    c.bench_function("keys/version encode+decode", |b| {
        b.iter(|| {
            let key = keys::version(black_box(b"00001234"), black_box(123_456));
            keys::decode_version(&key)
        })
    });
}

/// One apply run of `BATCH` puts over a fjall engine holding every key, finished into its
/// batch (not written, so every iteration sees the same store).
fn apply_batch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = FjallEngine::open(dir.path()).unwrap();
    let memo = RwLock::new(Memo::default());
    let mut state = AppliedState::initial();
    for chunk in (0..KEY_SPACE).collect::<Vec<_>>().chunks(BATCH) {
        let mut applier = Applier::with_memo(&engine, 1, state, &memo);
        for &i in chunk {
            applier.apply(&put(i)).unwrap();
        }
        let (batch, next) = applier.finish();
        engine.write(&batch, Durability::Buffered).unwrap();
        state = next;
    }
    let mut group = c.benchmark_group("apply");
    group.throughput(criterion::Throughput::Elements(BATCH as u64));
    let mut round = 0u64;
    let mut run = |memo: Option<&RwLock<Memo>>| {
        round += 1;
        let mut applier = match memo {
            Some(memo) => Applier::with_memo(&engine, 1, state, memo),
            None => Applier::new(&engine, 1, state),
        };
        for i in 0..BATCH as u64 {
            applier.apply(&put(round * 7919 + i * 13)).unwrap();
        }
        applier.finish()
    };
    group.bench_function("256 puts, memo warm", |b| b.iter(|| run(Some(&memo))));
    group.bench_function("256 puts, no memo (range scans)", |b| b.iter(|| run(None)));
    group.finish();
}

/// A round's write of 256 records: MVCC versions into fjall, and Raft log entries into the Raft
/// log's own file.
fn engine_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = FjallEngine::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("engine");
    group.throughput(criterion::Throughput::Elements(BATCH as u64));
    let mut next = 0u64;
    let mut batch_of = |keyspace: Keyspace| {
        let mut batch = WriteBatch::new();
        for _ in 0..BATCH {
            next += 1;
            let key = match keyspace {
                // A member's log stays within 10,000 entries (compaction): so does this one.
                Keyspace::Raft => keys::raft_log(1, next % 10_000),
                _ => keys::version(b"00001234", next as i64),
            };
            batch.put(keyspace, key, vec![b'v'; 280]);
        }
        batch
    };
    for (name, keyspace) in [("", Keyspace::Mvcc), ("Raft log: ", Keyspace::Raft)] {
        for (how, durability) in [("buffered", Durability::Buffered), ("fsync", Durability::Sync)] {
            group.bench_function(format!("{name}write 256 records, {how}"), |b| {
                b.iter_batched(
                    || batch_of(keyspace),
                    |batch| engine.write(&batch, durability).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// A leader's append to one follower: 64 entries of a 256-byte put each.
fn raft_message(c: &mut Criterion) {
    let mut message = Message {
        msg_type: MessageType::MsgAppend.into(),
        to: 2,
        from: 1,
        term: 3,
        ..Default::default()
    };
    message.entries = (0..64)
        .map(|i| Entry { term: 3, index: 100 + i, data: vec![b'e'; 300], ..Default::default() })
        .collect();
    let bytes = encode_raft(&message);
    let mut group = c.benchmark_group("raft message (64 entries)");
    group.bench_function("encode", |b| b.iter(|| encode_raft(black_box(&message))));
    group.bench_function("decode", |b| {
        b.iter(|| decode_raft::<Message>("message", black_box(&bytes)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, key_encoding, apply_batch, engine_write, raft_message);
criterion_main!(benches);
