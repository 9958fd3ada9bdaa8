//! The durable engine's threads: one fjall worker (see `FJALL_WORKERS` in `fjall_engine.rs`:
//! with more, fjall's first worker spins on its queue while another compacts) and one writeback
//! thread (`writeback.rs`), which stops with the engine. Its own test binary, so that no other
//! test opens an engine in this process meanwhile.

use std::time::{Duration, Instant};

use strata_storage::FjallEngine;

fn threads_named(name: &str) -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("a Linux /proc");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

#[test]
fn an_engine_runs_one_fjall_worker_and_one_writeback_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (workers, writebacks) = (threads_named("fjall:worker"), threads_named("strata-writeout"));
    let engine = FjallEngine::open(dir.path()).unwrap();
    assert_eq!(threads_named("fjall:worker") - workers, 1);
    // A thread names itself once it runs: wait for that, then for it to end with the engine.
    eventually("a writeback thread", || threads_named("strata-writeout") == writebacks + 1);
    drop(engine);
    eventually("the writeback thread to stop", || threads_named("strata-writeout") == writebacks);
}

fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "waited 5 s for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
