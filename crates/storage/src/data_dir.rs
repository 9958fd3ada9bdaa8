//! A data directory's marks: the `FORMAT` file that makes it Strata's, and where its Raft log
//! lives: `<dir>/raft.log`, or `<log-dir>/raft.log` in a directory of its own (etcd's
//! `--wal-dir`), on another disk, so that the log's fsyncs do not queue behind the state
//! machine's flushes (measured in `docs/benchmarks.md`).
//!
//! A log kept apart is bound to its store: `FORMAT` carries the store's random id on its second
//! line (`store <hex>`), and the log's directory holds `STORE`, naming the same id, and `LOCK`,
//! locked by the process that uses the log. Opening a store with another store's log, with a
//! log directory that another process uses or that holds something else, or with `--wal-dir`
//! while its log is still in the data directory, is refused.

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::BuildHasher as _;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::log_journal::replace;
use crate::{Error, Result};

/// The first line of `FORMAT`. Bump it when the on-disk layout changes incompatibly.
const FORMAT_LINE: &str = "strata-storage 2 fjall-3 raft-log-1";
const FORMAT_FILE: &str = "FORMAT";
const RAFT_LOG_FILE: &str = "raft.log";
const STORE_FILE: &str = "STORE";
const LOCK_FILE: &str = "LOCK";

fn dir_error(path: &Path, message: String) -> Error {
    Error::DataDir { path: path.display().to_string(), message }
}

/// Checks that `dir` is a Strata data directory of this format, or makes an empty (or absent)
/// one into one.
pub(crate) fn check_or_create_format(dir: &Path) -> Result<()> {
    let format_path = dir.join(FORMAT_FILE);
    match fs::read_to_string(&format_path) {
        Ok(content) => {
            let first = content.lines().next().unwrap_or("");
            if first != FORMAT_LINE {
                return Err(dir_error(
                    &format_path,
                    format!(
                        "unsupported storage format {first:?} (this build reads {FORMAT_LINE:?}); refusing to start"
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let occupied =
                fs::read_dir(dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
            if occupied {
                return Err(dir_error(
                    &format_path,
                    format!(
                        "missing: {} is not empty and is not a Strata data directory; refusing to start",
                        dir.display()
                    ),
                ));
            }
            fs::create_dir_all(dir).map_err(|e| dir_error(dir, format!("cannot create: {e}")))?;
            replace(&format_path, format!("{FORMAT_LINE}\n").as_bytes())
                .map_err(|e| dir_error(&format_path, format!("cannot write: {e}")))
        }
        Err(e) => Err(dir_error(&format_path, format!("cannot read: {e}"))),
    }
}

/// Where a store's Raft log is, and the lock on its directory when it has one of its own.
pub(crate) struct LogPlace {
    pub path: PathBuf,
    /// Held while the store is open; the lock goes with the file.
    _lock: Option<File>,
}

/// Finds (or makes) the place of the Raft log of the store in `dir`: `log_dir`, if given and
/// not `dir` itself, or `dir`. Call after [`check_or_create_format`].
pub(crate) fn place_log(dir: &Path, log_dir: Option<&Path>) -> Result<LogPlace> {
    let in_data_dir = dir.join(RAFT_LOG_FILE);
    let Some(log_dir) = log_dir.filter(|log_dir| !same_dir(dir, log_dir)) else {
        return Ok(LogPlace { path: in_data_dir, _lock: None });
    };
    if in_data_dir.exists() {
        return Err(dir_error(
            &in_data_dir,
            format!(
                "the Raft log is in the data directory, not in the log directory {}: start \
                 without --wal-dir, or move the file there (with the member stopped); refusing \
                 to start",
                log_dir.display()
            ),
        ));
    }
    fs::create_dir_all(log_dir).map_err(|e| dir_error(log_dir, format!("cannot create: {e}")))?;
    let lock_path = log_dir.join(LOCK_FILE);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| dir_error(&lock_path, format!("cannot open: {e}")))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(dir_error(
                &lock_path,
                "locked: another process uses this log directory; refusing to start".into(),
            ));
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(dir_error(&lock_path, format!("cannot lock: {e}")));
        }
    }
    let mark = format!("store {}", store_id(dir)?);
    let store_path = log_dir.join(STORE_FILE);
    match fs::read_to_string(&store_path) {
        Ok(content) if content.trim() == mark => {}
        Ok(content) => {
            return Err(dir_error(
                &store_path,
                format!(
                    "the log here belongs to another store ({:?}), not to the one in {} ({mark:?}); \
                     refusing to start",
                    content.trim(),
                    dir.display()
                ),
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // A new log directory, or a log moved here by hand: nothing else may be in it.
            let foreign = fs::read_dir(log_dir)
                .map_err(|e| dir_error(log_dir, format!("cannot read: {e}")))?
                .flatten()
                .any(|entry| {
                    let name = entry.file_name();
                    ![RAFT_LOG_FILE, LOCK_FILE, "STORE.tmp"].contains(&&*name.to_string_lossy())
                });
            if foreign {
                return Err(dir_error(
                    &store_path,
                    format!(
                        "missing: {} is not empty and is not a Strata log directory; refusing to start",
                        log_dir.display()
                    ),
                ));
            }
            replace(&store_path, format!("{mark}\n").as_bytes())
                .map_err(|e| dir_error(&store_path, format!("cannot write: {e}")))?;
        }
        Err(e) => return Err(dir_error(&store_path, format!("cannot read: {e}"))),
    }
    Ok(LogPlace { path: log_dir.join(RAFT_LOG_FILE), _lock: Some(lock) })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// The store's id, from the second line of `FORMAT`; a store made before ids gets one now.
fn store_id(dir: &Path) -> Result<String> {
    let format_path = dir.join(FORMAT_FILE);
    let content = fs::read_to_string(&format_path)
        .map_err(|e| dir_error(&format_path, format!("cannot read: {e}")))?;
    if let Some(id) = content.lines().find_map(|line| line.strip_prefix("store ")) {
        return Ok(id.to_string());
    }
    // Random enough to tell stores apart: std's hasher keys are drawn from the OS.
    let draw = || RandomState::new().hash_one(std::process::id());
    let id = format!("{:016x}{:016x}", draw(), draw());
    replace(&format_path, format!("{FORMAT_LINE}\nstore {id}\n").as_bytes())
        .map_err(|e| dir_error(&format_path, format!("cannot write: {e}")))?;
    Ok(id)
}
