//! The durable engine, on the `fjall` LSM-tree.
//!
//! Layout of a data directory:
//!
//! ```text
//! <dir>/FORMAT    the storage format, checked at every open (and the store's id: `data_dir`)
//! <dir>/engine/   fjall's files (journal, tables): the `Mvcc` and `Meta` keyspaces
//! <dir>/raft.log  the `Raft` keyspace (see `log_journal`), unless it has a directory of its own
//! ```
//!
//! Both journals are written with manual persistence: a write reaches the OS with
//! [`Durability::Buffered`] and the disk only with [`Durability::Sync`] or [`Engine::sync`],
//! which is what lets the Raft driver pay one fsync for a whole round of work. A batch's `Raft`
//! operations go to the Raft log, the rest to fjall, in the order [`Engine::write`] documents.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable as _};

use crate::data_dir::{LogPlace, check_or_create_format, place_log};
use crate::log_journal::{LogJournal, LogOp};
use crate::writeback::Writeback;
use crate::{Durability, Engine, Error, Keyspace, Result, ScanIter, WriteBatch, WriteOp, checksum};

pub struct FjallEngine {
    db: Database,
    /// The `Mvcc` and `Meta` keyspaces.
    keyspaces: [fjall::Keyspace; 2],
    raft: Mutex<LogJournal>,
    location: String,
    /// Holds the lock on the log's own directory, if it has one.
    _log_place: LogPlace,
    /// Writes fjall's files out as they are written, not in bursts.
    _writeback: Writeback,
}

/// How large a keyspace's memtable grows before it is flushed. fjall's default, 64 MiB for each,
/// made up most of a member's resident memory under load (a 30 s put run: 197 MB peak per
/// member with it, 117 MB with these, at a throughput within this machine's noise).
fn memtable_bytes(ks: Keyspace) -> u64 {
    const MIB: u64 = 1024 * 1024;
    if ks == Keyspace::Mvcc { 32 * MIB } else { 4 * MIB }
}

/// fjall's background threads (flushes and compactions). One, whatever the machine: with more,
/// fjall 3.1's first worker hands every compaction request back to the queue for the others and
/// takes it again at once, so while another worker compacts it spins on the queue and burns a
/// core (a fifth of the members' CPU in a profile under put load, during a compaction). One
/// worker does flushes and compactions in turn; a flush waits for a compaction under way, and
/// writes stop only once four memtables wait to be flushed.
const FJALL_WORKERS: usize = 1;

impl FjallEngine {
    /// Opens (or creates) the engine in `dir`. Refuses a directory that holds something other
    /// than a Strata store, naming the file that is wrong.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_log_dir(dir, None)
    }

    /// [`FjallEngine::open`], with the Raft log in `log_dir` rather than in `dir` (etcd's
    /// `--wal-dir`; see `data_dir`).
    pub fn open_with_log_dir(dir: &Path, log_dir: Option<&Path>) -> Result<Self> {
        check_or_create_format(dir)?;
        let log_place = place_log(dir, log_dir)?;
        let engine_dir = dir.join("engine");
        let location = engine_dir.display().to_string();
        let engine_error = |message: String| Error::Engine { location: location.clone(), message };
        // fjall reports damage as errors, but a store damaged in a way it does not expect could
        // still trip an assertion inside it; refuse to start either way rather than crash.
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Database::builder(&engine_dir)
                .manual_journal_persist(true)
                .worker_threads(FJALL_WORKERS)
                .open()
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(engine_error(format!("cannot open the store: {e:?}"))),
            Err(_) => return Err(engine_error("the store is damaged (open aborted)".into())),
        };
        let open_keyspace = |ks: Keyspace| {
            let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes(ks));
            db.keyspace(ks.name(), options)
                .map_err(|e| engine_error(format!("cannot open keyspace {ks}: {e:?}")))
        };
        let keyspaces = [open_keyspace(Keyspace::Mvcc)?, open_keyspace(Keyspace::Meta)?];
        // The log is created with the store, before anything is written to fjall. A store with
        // data and no log lost it: an empty one in its place would forget the member's vote (it
        // could vote twice in one term) and the entries it acknowledged but had not applied.
        let log_path = &log_place.path;
        if !log_path.exists() && keyspaces.iter().any(|ks| ks.first_key_value().is_some()) {
            let hint = match log_dir {
                None => " (if it is kept in a directory of its own, start with --wal-dir)",
                Some(_) => "",
            };
            return Err(Error::DataDir {
                path: log_path.display().to_string(),
                message: format!(
                    "missing: {} holds a store but not its Raft log{hint}, without which the \
                     member would forget its vote and the entries it acknowledged; put the file \
                     back, or remove the member from the cluster and add it again with an empty \
                     data directory; refusing to start",
                    dir.display()
                ),
            });
        }
        let raft = Mutex::new(LogJournal::open(log_path)?);
        let _writeback = Writeback::start(engine_dir);
        Ok(Self { db, keyspaces, raft, location, _log_place: log_place, _writeback })
    }

    /// One of fjall's keyspaces; the `Raft` keyspace is not among them.
    fn keyspace(&self, ks: Keyspace) -> &fjall::Keyspace {
        match ks {
            Keyspace::Mvcc => &self.keyspaces[0],
            Keyspace::Meta => &self.keyspaces[1],
            Keyspace::Raft => unreachable!("the Raft keyspace lives in the Raft log"),
        }
    }

    fn raft(&self) -> std::sync::MutexGuard<'_, LogJournal> {
        self.raft.lock().expect("raft log lock poisoned")
    }

    fn error(&self, what: &str, e: impl std::fmt::Debug) -> Error {
        Error::Engine { location: self.location.clone(), message: format!("{what}: {e:?}") }
    }

    /// Bytes the store occupies on disk, including journal space allocated ahead of use.
    pub fn disk_space_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0) + self.raft().file_bytes()
    }

    /// The Raft log's file, and where opening it cut a torn write off, if it did (see
    /// `LogJournal::cut_at`).
    pub fn raft_log_cut(&self) -> Option<(PathBuf, u64)> {
        let raft = self.raft();
        raft.cut_at().map(|at| (raft.path().to_path_buf(), at))
    }

    /// Bytes of user data the store holds: the tables of the `Mvcc` keyspace plus every write
    /// buffer not yet flushed (the Raft log's tables are left out: the log is compacted on its
    /// own schedule, and counting it would let a quota trip on log alone).
    pub fn data_bytes(&self) -> u64 {
        self.keyspace(Keyspace::Mvcc).disk_space() + self.db.write_buffer_size()
    }

    /// Reclaims the space of deleted and overwritten data: flushes every keyspace's write
    /// buffer and compacts its tables into one level, dropping what no snapshot can see, and
    /// rewrites the Raft log with only its live records. Reads and writes go on meanwhile (a
    /// log-structured store compacts beside them).
    pub fn defragment(&self) -> Result<()> {
        for ks in [Keyspace::Mvcc, Keyspace::Meta] {
            let keyspace = self.keyspace(ks);
            keyspace
                .rotate_memtable_and_wait()
                .and_then(|()| keyspace.major_compact())
                .map_err(|e| self.error(&format!("defragmenting keyspace {ks}"), e))?;
        }
        self.raft().rewrite()
    }
}

/// The table files under `folder` that do not read back whole: each is opened on its own and
/// every block read, which checks its checksum. A failed open needs this to name the damaged
/// table: fjall reads a keyspace's data blocks only after opening all its tables, and its
/// errors carry no path.
pub fn damaged_tables(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(folder) else { return Vec::new() };
    let mut damaged: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && !table_reads_back(path))
        .collect();
    damaged.sort();
    damaged
}

fn table_reads_back(path: &Path) -> bool {
    let read = || -> lsm_tree::Result<()> {
        let cache = std::sync::Arc::new(lsm_tree::Cache::with_capacity_bytes(1 << 20));
        // The checksum argument is what the manifest recorded; it is not checked on open, and
        // every block carries its own.
        let checksum = lsm_tree::Checksum::from_raw(0);
        let table =
            lsm_tree::Table::recover(path.to_path_buf(), checksum, 0, 0, cache, None, true, true)?;
        table.iter().try_for_each(|item| item.map(drop))
    };
    // Damage fjall does not expect can trip an assertion in it, as in `FjallEngine::open`.
    matches!(catch_unwind(AssertUnwindSafe(read)), Ok(Ok(())))
}

impl Engine for FjallEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if keyspace == Keyspace::Raft {
            return self.raft().get(key);
        }
        match self.keyspace(keyspace).get(key) {
            Ok(Some(framed)) => Ok(Some(checksum::open(&self.location, keyspace, key, &framed)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(self.error("read failed", e)),
        }
    }

    fn scan(&self, keyspace: Keyspace, start: &[u8], end: &[u8]) -> Result<ScanIter<'_>> {
        if keyspace == Keyspace::Raft {
            return Ok(Box::new(self.raft().scan(start, end)?.into_iter().map(Ok)));
        }
        let ks = self.keyspace(keyspace);
        // A snapshot, so the scan is one point-in-time view however long the caller iterates.
        let snapshot = self.db.snapshot();
        let iter = if end.is_empty() {
            snapshot.range(ks, start.to_vec()..)
        } else if end <= start {
            return Ok(Box::new(std::iter::empty()));
        } else {
            snapshot.range(ks, start.to_vec()..end.to_vec())
        };
        let location = self.location.clone();
        Ok(Box::new(iter.map(move |guard| {
            let (key, framed) = guard.into_inner().map_err(|e| Error::Engine {
                location: location.clone(),
                message: format!("scan failed: {e:?}"),
            })?;
            let value = checksum::open(&location, keyspace, &key, &framed)?;
            Ok((key.to_vec(), value))
        })))
    }

    fn write(&self, batch: &WriteBatch, durability: Durability) -> Result<()> {
        crate::check_batch(batch, &self.location)?;
        // Sized for the whole batch: growing them op by op showed in the raftstore's profile.
        // (`Database::batch` minus the capacity, as the journal is persisted by hand.)
        let mut fjall_batch = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), batch.len());
        let mut raft_ops = Vec::with_capacity(batch.len());
        for op in batch.ops() {
            match op {
                WriteOp::Put { keyspace: Keyspace::Raft, key, value } => {
                    raft_ops.push(LogOp::Put(key, value))
                }
                WriteOp::Delete { keyspace: Keyspace::Raft, key } => {
                    raft_ops.push(LogOp::Delete(key))
                }
                WriteOp::Put { keyspace, key, value } => fjall_batch.insert(
                    self.keyspace(*keyspace),
                    key.clone(),
                    checksum::seal(key, value),
                ),
                WriteOp::Delete { keyspace, key } => {
                    fjall_batch.remove(self.keyspace(*keyspace), key.clone())
                }
            }
        }
        let sync = durability == Durability::Sync;
        if !fjall_batch.is_empty() {
            fjall_batch.commit().map_err(|e| self.error("write failed", e))?;
            // Buffered: hand the journal to the OS so a process crash loses nothing written.
            let mode = if sync { PersistMode::SyncData } else { PersistMode::Buffer };
            self.db.persist(mode).map_err(|e| self.error("persist failed", e))?;
        }
        if !raft_ops.is_empty() {
            self.raft().write(&raft_ops, sync)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData).map_err(|e| self.error("fsync failed", e))?;
        self.raft().sync()
    }
}
