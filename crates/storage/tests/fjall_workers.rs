//! The durable engine runs one fjall worker thread (see `FJALL_WORKERS` in `fjall_engine.rs`:
//! with more, fjall's first worker spins on its queue while another compacts). Its own test
//! binary, so that no other test opens an engine in this process meanwhile.

use strata_storage::FjallEngine;

fn fjall_workers() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("a Linux /proc");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "fjall:worker")
        .count()
}

#[test]
fn an_engine_runs_one_fjall_worker() {
    let dir = tempfile::tempdir().unwrap();
    let before = fjall_workers();
    let engine = FjallEngine::open(dir.path()).unwrap();
    assert_eq!(fjall_workers() - before, 1);
    drop(engine);
}
