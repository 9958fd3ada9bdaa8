//! The `strata` binary.

/// mimalloc, not glibc's malloc. The raftstore thread allocates what other threads free (write
/// batches the engine takes, messages the transport sends), and with a store that has history
/// glibc's slow path (`unlink_chunk`, `_int_free`) took about a fifth of that thread. Over 40 s
/// of put at 256 clients the raftstore threads spent 53–55 µs per put with mimalloc against
/// 83–86 µs, the members 118–126 against 150–152 µs in all; the cost is resident memory, about
/// 40% more (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc.h; the Rust
/// bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc returns it to the system: 10 s
/// instead of its 1 s. Under write load memory is freed and needed again within seconds (a
/// memtable fills in a few and is freed when flushed); returned after 1 s, it was faulted in
/// afresh: under put at 256 clients the members made 0.18 page faults and 0.02 `madvise` calls
/// per put, and none with 10 s. Put ran 4–18% faster in five interleaved pairs of six (10%
/// slower in the sixth), for 10–25% more peak RSS; memory freed after a burst still goes back,
/// 10 s later.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

fn main() -> std::process::ExitCode {
    // MIMALLOC_PURGE_DELAY, if set, is the operator's choice and stays.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads options atomically from any thread.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS)
        };
    }
    strata::cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_the_option_set() {
        // SAFETY: reads and sets integer options.
        unsafe {
            // Its documented default, which no neighbouring option shares: the constant still
            // names the purge delay in the mimalloc built.
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1_000);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
        }
    }
}
