//! Storage for Strata: a small [`Engine`] trait and its implementations.
//!
//! Everything a node keeps on disk goes through this trait: the Raft log and hard state of every
//! range, the MVCC versions of every key, and per-range metadata such as the applied index. The
//! trait is shaped by what those callers need and nothing more:
//!
//! * point reads and ascending scans over one [`Keyspace`];
//! * atomic [`WriteBatch`]es (so "log entries + hard state" and "applied index + the MVCC data it
//!   produced" each land together or not at all);
//! * an explicit [`Durability`] per write, so the Raft driver can write a whole round of work and
//!   pay for **one** fsync (group commit across ranges);
//! * two journals: the [`Keyspace::Raft`] records in one, the others in another, so that a
//!   round's fsync carries the log and nothing else. A batch spanning both is two atomic parts,
//!   written in a fixed order (see [`Engine::write`]).
//!
//! Every value is stored with a CRC-32 of its key and value. A mismatch on read is reported as
//! [`Error::Corruption`] naming the keyspace and key: a flipped bit never becomes wrong data.
//!
//! Two implementations share one conformance suite ([`conformance`]): [`FjallEngine`], durable,
//! on the `fjall` LSM-tree, and [`MemEngine`], in memory, for tests and the simulator.

mod checksum;
pub mod conformance;
mod data_dir;
mod fjall_engine;
mod log_journal;
mod memory;
mod writeback;

pub use fjall_engine::{FjallEngine, damaged_tables};
pub use memory::MemEngine;

use std::fmt;

/// The separate key spaces a node stores. Each is an independent ordered map; a [`WriteBatch`]
/// may touch several atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keyspace {
    /// Raft state per range: log entries, hard state, the log's compaction point. Journaled
    /// apart from the other keyspaces.
    Raft,
    /// MVCC versions of user keys (one global, ordered key space; ranges are spans of it).
    Mvcc,
    /// Small per-range and per-node records: applied index, revisions, node identity.
    Meta,
}

impl Keyspace {
    pub const ALL: [Keyspace; 3] = [Keyspace::Raft, Keyspace::Mvcc, Keyspace::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Raft => "raft",
            Keyspace::Mvcc => "mvcc",
            Keyspace::Meta => "meta",
        }
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a write must be on stable storage before `write` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning: the write survives a power loss.
    Sync,
    /// Buffered: the write survives a process crash once the OS has it, and a power loss only
    /// after a later `Sync` write or [`Engine::sync`]. Writes become durable in order.
    Buffered,
}

/// One mutation in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put { keyspace: Keyspace, key: Vec<u8>, value: Vec<u8> },
    Delete { keyspace: Keyspace, key: Vec<u8> },
}

/// An ordered list of mutations applied atomically: after a crash either all of them are
/// visible or none is. Later operations on the same key win.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    bytes: usize,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, keyspace: Keyspace, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(WriteOp::Put { keyspace, key, value });
    }

    pub fn delete(&mut self, keyspace: Keyspace, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(WriteOp::Delete { keyspace, key });
    }

    /// Makes room for `additional` more operations at once (a log compaction's deletes).
    pub fn reserve(&mut self, additional: usize) {
        self.ops.reserve(additional);
    }

    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate payload size (keys and values), for metrics and limits.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Drops every operation after the first `len`, undoing the most recent ones.
    pub fn truncate(&mut self, len: usize) {
        self.ops.truncate(len);
        self.bytes = self
            .ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, value, .. } => key.len() + value.len(),
                WriteOp::Delete { key, .. } => key.len(),
            })
            .sum();
    }

    /// Appends all operations of `other`, keeping their order after this batch's.
    pub fn extend(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }
}

/// A key-value pair read from an engine.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An iterator over a scan; it owns a point-in-time view of the keyspace.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KvPair>> + Send + 'a>;

/// Largest key an engine accepts. Keys must also be non-empty.
pub const KEY_BYTES_MAX: usize = 60 * 1024;

/// Checks that every key of a batch is one an engine can store.
pub(crate) fn check_batch(batch: &WriteBatch, location: &str) -> Result<()> {
    for op in batch.ops() {
        let key = match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => key,
        };
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(Error::Engine {
                location: location.to_string(),
                message: format!(
                    "invalid key of {} bytes (1 to {KEY_BYTES_MAX} allowed)",
                    key.len()
                ),
            });
        }
    }
    Ok(())
}

/// What every storage engine provides. Implementations must be safe to share between the Raft
/// driver (the only writer) and request handlers (readers).
pub trait Engine: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Scans keys in `[start, end)` in ascending order; an empty `end` means "to the end of the
    /// keyspace". The iterator sees a consistent view taken when it was created.
    fn scan(&self, keyspace: Keyspace, start: &[u8], end: &[u8]) -> Result<ScanIter<'_>>;

    /// Applies a batch, durably if asked. Keys must be 1 to [`KEY_BYTES_MAX`] bytes; a batch
    /// with any other key is rejected whole.
    ///
    /// The [`Keyspace::Raft`] operations of a batch are atomic among themselves, and so are the
    /// others, but the two parts are not atomic together: the part on the other keyspaces is
    /// written first and, with [`Durability::Sync`], made durable before the `Raft` part is
    /// written. After a power loss each journal keeps a prefix of its writes, whatever the
    /// other kept: a `Buffered` write to one may survive while an earlier one to the other is
    /// lost.
    fn write(&self, batch: &WriteBatch, durability: Durability) -> Result<()>;

    /// Makes every earlier write to either journal durable.
    fn sync(&self) -> Result<()>;
}

/// Storage errors. None of them is retryable by a client: each means the node cannot safely
/// serve from this store until an operator looks at it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("corrupted record in {location}, keyspace {keyspace}, key {key}: checksum mismatch")]
    Corruption { location: String, keyspace: Keyspace, key: String },
    #[error("{path}: {message}")]
    DataDir { path: String, message: String },
    #[error("storage engine failure in {location}: {message}")]
    Engine { location: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Renders a key for error messages: printable ASCII as is, other bytes as `\xNN`.
pub fn display_key(key: &[u8]) -> String {
    key.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect()
}
