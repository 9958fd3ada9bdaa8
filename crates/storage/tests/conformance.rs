//! Runs the engine conformance suite against every engine, plus the durability and corruption
//! checks that only make sense for the on-disk engine.

use std::fs;

use strata_storage::{
    Durability, Engine, Error, FjallEngine, Keyspace, MemEngine, WriteBatch, conformance,
};

#[test]
fn memory_engine_conforms() {
    for (name, check) in conformance::CHECKS {
        eprintln!("memory: {name}");
        check(&MemEngine::new());
    }
}

#[test]
fn fjall_engine_conforms() {
    for (name, check) in conformance::CHECKS {
        eprintln!("fjall: {name}");
        let dir = tempfile::tempdir().unwrap();
        check(&FjallEngine::open(dir.path()).unwrap());
    }
}

fn put(engine: &dyn Engine, key: &[u8], value: &[u8], durability: Durability) {
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Raft, key, value);
    engine.write(&batch, durability).unwrap();
}

#[test]
fn fjall_synced_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = FjallEngine::open(dir.path()).unwrap();
        put(&engine, b"a", b"1", Durability::Sync);
        put(&engine, b"b", b"2", Durability::Buffered);
        let mut mixed = WriteBatch::new();
        mixed.put(Keyspace::Mvcc, b"x", b"1");
        mixed.put(Keyspace::Raft, b"c", b"3");
        engine.write(&mixed, Durability::Buffered).unwrap();
        engine.sync().unwrap();
    }
    let engine = FjallEngine::open(dir.path()).unwrap();
    assert_eq!(engine.get(Keyspace::Raft, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(Keyspace::Raft, b"b").unwrap(), Some(b"2".to_vec()));
    assert_eq!(engine.get(Keyspace::Raft, b"c").unwrap(), Some(b"3".to_vec()));
    assert_eq!(engine.get(Keyspace::Mvcc, b"x").unwrap(), Some(b"1".to_vec()));
    assert!(dir.path().join("raft.log").is_file(), "the Raft keyspace has its own file");
}

#[test]
fn memory_crash_loses_only_unsynced_writes() {
    let engine = MemEngine::new();
    put(&engine, b"a", b"1", Durability::Sync);
    put(&engine, b"b", b"2", Durability::Buffered);
    engine.crash();
    assert_eq!(engine.get(Keyspace::Raft, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(Keyspace::Raft, b"b").unwrap(), None);
}

/// Each journal keeps a prefix of its own unsynced writes, whatever the other kept.
#[test]
fn memory_crash_keeps_a_prefix_of_each_journal() {
    let engine = MemEngine::new();
    put(&engine, b"a", b"1", Durability::Buffered);
    let mut mixed = WriteBatch::new();
    mixed.put(Keyspace::Raft, b"b", b"2");
    mixed.put(Keyspace::Mvcc, b"x", b"1");
    engine.write(&mixed, Durability::Buffered).unwrap();
    put(&engine, b"c", b"3", Durability::Buffered);
    let mut data = WriteBatch::new();
    data.put(Keyspace::Meta, b"y", b"2");
    engine.write(&data, Durability::Buffered).unwrap();
    assert_eq!(engine.unsynced_writes(), (3, 2));
    engine.crash_keeping(1, 2);
    assert_eq!(engine.get(Keyspace::Raft, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(Keyspace::Raft, b"b").unwrap(), None, "the Raft part of a batch");
    assert_eq!(engine.get(Keyspace::Mvcc, b"x").unwrap(), Some(b"1".to_vec()), "its other part");
    assert_eq!(engine.get(Keyspace::Raft, b"c").unwrap(), None);
    assert_eq!(engine.get(Keyspace::Meta, b"y").unwrap(), Some(b"2".to_vec()));
    assert_eq!(engine.unsynced_writes(), (0, 0));
}

/// A synced write syncs the journals it touches and no other.
#[test]
fn memory_sync_is_per_journal() {
    let engine = MemEngine::new();
    let mut data = WriteBatch::new();
    data.put(Keyspace::Mvcc, b"x", b"1");
    engine.write(&data, Durability::Buffered).unwrap();
    put(&engine, b"a", b"1", Durability::Sync);
    assert_eq!(engine.unsynced_writes(), (0, 1));
    engine.crash();
    assert_eq!(engine.get(Keyspace::Raft, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(engine.get(Keyspace::Mvcc, b"x").unwrap(), None);
}

#[test]
fn memory_corruption_is_reported_not_served() {
    let engine = MemEngine::new();
    put(&engine, b"a", b"1", Durability::Sync);
    engine.corrupt(Keyspace::Raft, b"a");
    let err = engine.get(Keyspace::Raft, b"a").unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    let scanned: Result<Vec<_>, _> = engine.scan(Keyspace::Raft, b"", b"").unwrap().collect();
    assert!(scanned.is_err());
}

#[test]
fn fjall_refuses_a_foreign_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("member.wal"), b"someone else's data").unwrap();
    let err = FjallEngine::open(dir.path()).err().expect("must refuse");
    let message = err.to_string();
    assert!(
        message.contains("FORMAT") && message.contains("not a Strata data directory"),
        "{message}"
    );
}

#[test]
fn fjall_refuses_an_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    drop(FjallEngine::open(dir.path()).unwrap());
    fs::write(dir.path().join("FORMAT"), "strata-storage 99 something\n").unwrap();
    let message = FjallEngine::open(dir.path()).err().expect("must refuse").to_string();
    assert!(
        message.contains("FORMAT") && message.contains("unsupported storage format"),
        "{message}"
    );
}

#[test]
fn fjall_refuses_a_store_without_its_raft_log() {
    let dir = tempfile::tempdir().unwrap();
    // A store that never wrote anything may lose its log (a crash right after creating the
    // directory): the log is created again.
    drop(FjallEngine::open(dir.path()).unwrap());
    fs::remove_file(dir.path().join("raft.log")).unwrap();
    drop(FjallEngine::open(dir.path()).unwrap());
    // One with data may not.
    {
        let engine = FjallEngine::open(dir.path()).unwrap();
        put(&engine, b"a", b"1", Durability::Sync);
        let mut applied = WriteBatch::new();
        applied.put(Keyspace::Meta, b"applied", b"1");
        engine.write(&applied, Durability::Sync).unwrap();
    }
    fs::remove_file(dir.path().join("raft.log")).unwrap();
    let message = FjallEngine::open(dir.path()).err().expect("must refuse").to_string();
    assert!(message.contains("raft.log") && message.contains("refusing to start"), "{message}");
    assert!(!dir.path().join("raft.log").exists(), "no empty log left in its place");
}

#[test]
fn fjall_keeps_its_raft_log_in_a_directory_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (data, wal) = (dir.path().join("data"), dir.path().join("wal"));
    let log_data = |engine: &FjallEngine| engine.get(Keyspace::Raft, b"a").unwrap();
    {
        let engine = FjallEngine::open_with_log_dir(&data, Some(&wal)).unwrap();
        put(&engine, b"a", b"1", Durability::Sync);
        let mut applied = WriteBatch::new();
        applied.put(Keyspace::Meta, b"applied", b"1");
        engine.write(&applied, Durability::Sync).unwrap();
        // While it is open, no other store may use the directory.
        let other = FjallEngine::open_with_log_dir(&dir.path().join("other"), Some(&wal));
        let message = other.err().expect("must refuse").to_string();
        assert!(message.contains("LOCK") && message.contains("another process"), "{message}");
    }
    assert!(wal.join("raft.log").is_file() && !data.join("raft.log").exists());
    let engine = FjallEngine::open_with_log_dir(&data, Some(&wal)).unwrap();
    assert_eq!(log_data(&engine), Some(b"1".to_vec()));
    drop(engine);
    // Without the flag, the store's log is missing: refused, with a hint.
    let message = FjallEngine::open(&data).err().expect("must refuse").to_string();
    assert!(message.contains("--wal-dir") && message.contains("refusing to start"), "{message}");
    // Another store may not take this log.
    let message = FjallEngine::open_with_log_dir(&dir.path().join("other"), Some(&wal))
        .err()
        .expect("must refuse")
        .to_string();
    assert!(message.contains("STORE") && message.contains("another store"), "{message}");
    // A directory that holds something else is not taken either.
    fs::create_dir(dir.path().join("etcd-wal")).unwrap();
    fs::write(dir.path().join("etcd-wal/0000000000000000-0000000000000000.wal"), b"etcd").unwrap();
    let foreign = FjallEngine::open_with_log_dir(&data, Some(&dir.path().join("etcd-wal")));
    let message = foreign.err().expect("must refuse").to_string();
    assert!(message.contains("not a Strata log directory"), "{message}");
}

#[test]
fn fjall_moves_its_raft_log_only_when_told_where() {
    let dir = tempfile::tempdir().unwrap();
    let (data, wal) = (dir.path().join("data"), dir.path().join("wal"));
    drop(FjallEngine::open(&data).map(|engine| put(&engine, b"a", b"1", Durability::Sync)));
    // Asked for a log directory while the log is still in the data directory: refused.
    let message =
        FjallEngine::open_with_log_dir(&data, Some(&wal)).err().expect("must refuse").to_string();
    assert!(message.contains("raft.log") && message.contains("data directory"), "{message}");
    // Moved there by hand (the member stopped), it is taken.
    fs::create_dir(&wal).unwrap();
    fs::rename(data.join("raft.log"), wal.join("raft.log")).unwrap();
    let engine = FjallEngine::open_with_log_dir(&data, Some(&wal)).unwrap();
    assert_eq!(engine.get(Keyspace::Raft, b"a").unwrap(), Some(b"1".to_vec()));
    // The data directory itself named as the log directory is the usual place.
    drop(engine);
    let fresh = dir.path().join("fresh");
    drop(FjallEngine::open_with_log_dir(&fresh, Some(&fresh)).unwrap());
    assert!(fresh.join("raft.log").is_file() && !fresh.join("STORE").exists());
}

/// Flips bytes in every file of the store, one file at a time, and checks that opening and
/// reading either works with correct data or fails with an error: never a panic, never a wrong
/// value.
#[test]
fn fjall_damaged_files_never_serve_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = FjallEngine::open(dir.path()).unwrap();
        for i in 0..200u32 {
            let mut batch = WriteBatch::new();
            for ks in [Keyspace::Raft, Keyspace::Mvcc] {
                batch.put(ks, i.to_be_bytes(), format!("value-{i}"));
            }
            engine.write(&batch, Durability::Buffered).unwrap();
        }
        engine.sync().unwrap();
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    assert!(!files.is_empty());
    for file in files {
        let Ok(original) = fs::read(&file) else { continue };
        if original.len() < 16 {
            continue;
        }
        let mut damaged = original.clone();
        let middle = damaged.len() / 2;
        for b in &mut damaged[middle..(middle + 8).min(original.len())] {
            *b ^= 0x5a;
        }
        fs::write(&file, &damaged).unwrap();
        match FjallEngine::open(dir.path()) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(engine) => {
                for (i, ks) in (0..200u32).flat_map(|i| [(i, Keyspace::Raft), (i, Keyspace::Mvcc)])
                {
                    // Missing or refused is acceptable here; a different value is not.
                    if let Ok(Some(v)) = engine.get(ks, &i.to_be_bytes()) {
                        let expected = format!("value-{i}");
                        assert_eq!(
                            v,
                            expected.as_bytes(),
                            "wrong data after damaging {}",
                            file.display()
                        );
                    }
                }
            }
        }
        fs::write(&file, &original).unwrap();
    }
}

/// With several tables in one keyspace, damage in any one of them is pinned on that table, not
/// on a sibling (what a failed open's message relies on).
#[test]
fn damaged_tables_names_exactly_the_damaged_table() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let keyspace = db.keyspace("data", fjall::KeyspaceCreateOptions::default).unwrap();
        for table in 0..3u32 {
            for i in 0..500u32 {
                keyspace.insert((table * 1000 + i).to_be_bytes(), [b'v'; 100]).unwrap();
            }
            keyspace.rotate_memtable_and_wait().unwrap();
        }
    }
    let folders: Vec<_> = fs::read_dir(dir.path().join("keyspaces"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("tables"))
        .filter(|p| fs::read_dir(p).is_ok_and(|d| d.count() >= 3))
        .collect();
    let [tables] = &folders[..] else { panic!("one keyspace with 3 tables: {folders:?}") };
    assert_eq!(strata_storage::damaged_tables(tables), Vec::<std::path::PathBuf>::new());
    let mut files: Vec<_> = fs::read_dir(tables).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    for file in &files {
        let original = fs::read(file).unwrap();
        // Damage the first data block, which only reading the table back touches.
        let mut damaged = original.clone();
        for b in &mut damaged[64..72] {
            *b ^= 0x5a;
        }
        fs::write(file, &damaged).unwrap();
        assert_eq!(strata_storage::damaged_tables(tables), vec![file.clone()]);
        fs::write(file, &original).unwrap();
    }
}
