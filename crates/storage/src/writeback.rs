//! Starts the writeback of fjall's files while they are being written, as RocksDB's
//! `bytes_per_sync` does.
//!
//! fjall writes its journal and the tables of a flush or compaction through the page cache, and
//! the kernel sends them to the disk in bursts: at the fsync that ends a table (tens of MiB at
//! once) or when dirty pages grow old. On a disk the Raft log shares, a burst holds up the log's
//! next fdatasync, and with it every write the member is committing, for tens of milliseconds.
//! So a thread asks the kernel every [`INTERVAL`] to start writing out whatever fjall wrote
//! lately (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`: it neither waits nor flushes the
//! disk's cache), and the bursts become a trickle. Measured in `docs/benchmarks.md` (put's p99
//! at 256 clients): fsyncs over 10 ms fell to a third.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime};

/// How often the thread looks for files to write out while fjall writes: about 2 MiB of a
/// flush at a time here.
const INTERVAL: Duration = Duration::from_millis(20);
/// How often it looks while fjall writes nothing (an idle or read-only member). A pass costs
/// a listing of every folder of the store, about 45 system calls here; every 20 ms that was
/// three quarters of an idle member's CPU. The first table of a new burst of writes comes
/// seconds after the burst starts (a memtable must fill first), well after the next look.
const IDLE_INTERVAL: Duration = Duration::from_millis(500);
/// Files modified this recently are being written.
const RECENT: Duration = Duration::from_secs(2);

/// The writeback thread of one engine directory; dropping this stops it.
pub(crate) struct Writeback {
    _stop: mpsc::Sender<()>,
    /// Passes over the directory so far, which the tests count.
    #[cfg_attr(not(test), allow(dead_code))]
    passes: Arc<AtomicU64>,
}

impl Writeback {
    /// Starts the thread for the files under `dir`. If no thread can be started, the store
    /// works as before, in bursts.
    pub(crate) fn start(dir: PathBuf) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let passes = Arc::new(AtomicU64::new(0));
        let counted = passes.clone();
        let run = move || {
            let mut open: HashMap<PathBuf, File> = HashMap::new();
            let mut settled = HashSet::new();
            let mut interval = INTERVAL;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let written = recently_written(&dir, SystemTime::now(), &mut settled);
                counted.fetch_add(1, Ordering::Relaxed);
                interval = if written.is_empty() { IDLE_INTERVAL } else { INTERVAL };
                open.retain(|path, _| written.contains(path));
                for path in written {
                    if !open.contains_key(&path) {
                        let Ok(file) = File::open(&path) else { continue };
                        open.insert(path.clone(), file);
                    }
                    start_writeback(&open[&path]);
                }
            }
        };
        let _ = std::thread::Builder::new().name("strata-writeout".into()).spawn(run);
        Self { _stop: stop, passes }
    }

    #[cfg(test)]
    fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }
}

/// The files under `dir` (fjall's journals and tables) modified within [`RECENT`] of `now`.
/// A table is written once: one seen older than that goes into `settled` and is not looked at
/// again, so a large store costs a directory listing, not a `stat` of every table, each time.
fn recently_written(dir: &Path, now: SystemTime, settled: &mut HashSet<PathBuf>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut listed = HashSet::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if settled.contains(&path) {
                listed.insert(path);
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                folders.push(path);
                continue;
            }
            let age = meta.modified().ok().and_then(|modified| now.duration_since(modified).ok());
            if age.is_some_and(|age| age < RECENT) {
                found.push(path);
            } else if path.extension().is_none_or(|extension| extension != "jnl") {
                // The journal being appended to may rest a while and be written again.
                listed.insert(path.clone());
                settled.insert(path);
            }
        }
    }
    // Tables compacted away are gone.
    settled.retain(|path| listed.contains(path));
    found
}

/// Asks the kernel to start writing `file`'s dirty pages out, without waiting for them.
#[allow(unsafe_code)]
fn start_writeback(file: &File) {
    // SAFETY: a plain system call on a descriptor `file` keeps open; it touches no memory of
    // ours. Its result does not matter: at worst the pages go out later, as without it.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_written_lately_are_written_out() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("tables")).unwrap();
        let (fresh, old) = (dir.path().join("tables/7"), dir.path().join("1.jnl"));
        fs::write(&fresh, b"table").unwrap();
        fs::write(&old, b"journal").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(60);
        File::options().write(true).open(&old).unwrap().set_modified(long_ago).unwrap();
        let mut settled = HashSet::new();
        assert_eq!(
            recently_written(dir.path(), SystemTime::now(), &mut settled),
            vec![fresh.clone()]
        );
        // The journal is looked at every time; the table, once old, no more.
        assert!(settled.is_empty());
        let later = SystemTime::now() + RECENT;
        assert!(recently_written(dir.path(), later, &mut settled).is_empty());
        assert_eq!(settled, HashSet::from([fresh.clone()]));
        File::options().write(true).open(&old).unwrap().set_modified(later).unwrap();
        assert_eq!(recently_written(dir.path(), later, &mut settled), vec![old]);
        // A table compacted away leaves the settled set.
        fs::remove_file(&fresh).unwrap();
        recently_written(dir.path(), later, &mut settled);
        assert!(settled.is_empty());
    }

    #[test]
    fn the_thread_looks_seldom_while_nothing_is_written_and_often_while_something_is() {
        let dir = tempfile::tempdir().unwrap();
        let writeback = Writeback::start(dir.path().to_path_buf());
        // Idle: a pass at 20 ms, then one every 500 ms (a slow machine only makes fewer).
        std::thread::sleep(Duration::from_millis(400));
        let idle = writeback.passes();
        assert!(idle <= 2, "{idle} passes over an idle store in 400 ms");
        // A file being written is found at the next idle pass, and from then on the thread
        // looks every 20 ms: dozens of passes in the next second, where idle makes two.
        fs::write(dir.path().join("0.jnl"), b"journal").unwrap();
        std::thread::sleep(Duration::from_millis(1_500));
        let busy = writeback.passes() - idle;
        assert!(busy >= 8, "{busy} passes in 1.5 s with a file being written");
    }
}
