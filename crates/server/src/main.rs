//! The `strata` binary.

/// mimalloc, not glibc's malloc. The raftstore thread allocates what other threads free (write
/// batches the engine takes, messages the transport sends), and with a store that has history
/// glibc's slow path (`unlink_chunk`, `_int_free`) took about a fifth of that thread. Over 40 s
/// of put at 256 clients the raftstore threads spent 53–55 µs per put with mimalloc against
/// 83–86 µs, the members 118–126 against 150–152 µs in all; the cost is resident memory, about
/// 40% more (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
