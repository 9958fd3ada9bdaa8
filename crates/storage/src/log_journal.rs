//! The Raft keyspace's own journal: an append-only file of write batches, kept apart from fjall.
//!
//! The Raft log is written once, read back only when a node starts, and deleted soon after it
//! is applied. Inside the LSM-tree it cost a memtable insert per entry, flushes and compactions
//! of data that is mostly deleted already, and it shared fjall's journal and locks with the state
//! machine: a round's fsync carried the applied data too, and waited while fjall's workers
//! flushed tables (measured in `docs/benchmarks.md`). Here a round's log write is one `write`
//! and one `fdatasync` of its own bytes.
//!
//! Every live record's key is held in memory with where its value is in the file, so reads
//! take one `pread` and the Raft driver's own copy of the log is not held twice.
//!
//! Layout: a 16-byte header (the magic `STRLOG01`, then `base`, a little-endian u64), then
//! records. A record is its payload's length and CRC-32 (u32 little endian each), then the
//! payload: operations, each a kind byte (put or delete), a u32 key length and the key, and for
//! a put a u32 value length and the value. `base` is the length of the prefix written and
//! fsynced whole by a rewrite (see below).
//!
//! Recovery replays records in order up to the first one that is incomplete or fails its CRC,
//! and the file is cut there before the next write: that is a write torn by a crash. Any record
//! after it was never covered by a completed fsync (one would have written the torn record
//! whole), so nothing cut was acknowledged. Damage inside `base` cannot be a torn write and is
//! reported instead.
//!
//! The file is extended [`EXTEND_BYTES`] at a time, ahead of the records: a write that does not
//! change the file's size is fsynced without a metadata update (on this machine an append with
//! fdatasync cost about 40 µs more per round). The zeros past the last record end the replay
//! like a torn write does.
//!
//! Space: once the file holds [`REWRITE_BYTES`] and four times its live records, the live
//! records are written to a new file, fsynced, and renamed over the old one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::{Error, KvPair, Result};

const MAGIC: &[u8; 8] = b"STRLOG01";
const HEADER_BYTES: usize = 16;
const RECORD_HEADER_BYTES: usize = 8;
/// The largest record buffer kept for the next write; a larger one (a round of large values)
/// is freed.
const FRAMED_KEPT_BYTES_MAX: usize = 1024 * 1024;
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// Rewrite the file once it is this large (and mostly dead records).
pub const REWRITE_BYTES: u64 = 64 * 1024 * 1024;
/// How far the file is extended past the last record, when a write would reach its end.
pub const EXTEND_BYTES: u64 = 16 * 1024 * 1024;
/// Records of a rewrite carry about this many bytes each.
const REWRITE_RECORD_BYTES: usize = 1024 * 1024;

/// One operation on the journal's keyspace.
#[derive(Clone, Copy, Debug)]
pub enum LogOp<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
}

/// Where a live record's value is in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    offset: u64,
    len: u32,
}

type Records = BTreeMap<Vec<u8>, Place>;

pub struct LogJournal {
    path: PathBuf,
    location: String,
    file: File,
    records: Records,
    /// Where opening found a torn write, if it did: its offset in the file.
    cut_at: Option<u64>,
    /// Whether the torn write is still in the file: it is cut before the next write, not at
    /// open, so that a member that refuses to start leaves the file as it found it.
    torn_in_file: bool,
    /// Bytes of the keys and values of `records`.
    live_bytes: u64,
    /// Where the next record goes: the end of the last one.
    end: u64,
    /// The file's size: `end` plus zeros.
    allocated: u64,
    /// The record being written, kept between writes: allocating a fresh buffer of a round's
    /// size each time showed in the raftstore's profile.
    framed: Vec<u8>,
}

impl LogJournal {
    /// Opens the journal at `path`, creating it if absent, and replays it.
    pub fn open(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        let io_error = |what: &str, e: std::io::Error| Error::Engine {
            location: location.clone(),
            message: format!("{what}: {e}"),
        };
        // A rewrite that did not reach its rename leaves a partial copy beside a whole file.
        match fs::remove_file(tmp_path(path)) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_error("cannot remove", e)),
            _ => {}
        }
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes).map_err(|e| io_error("cannot read", e))?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                bytes = with_header(Vec::new());
                replace(path, &bytes).map_err(|e| io_error("cannot create", e))?;
            }
            Err(e) => return Err(io_error("cannot open", e)),
        }
        let (records, live_bytes, valid) = replay(&location, &bytes)?;
        // Past the last record there are only zeros, unless a write was torn.
        let cut_at = bytes[valid..].iter().any(|&b| b != 0).then_some(valid as u64);
        let file = OpenOptions::new().read(true).write(true).open(path);
        let file = file.map_err(|e| io_error("cannot open for writing", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            location,
            file,
            records,
            cut_at,
            torn_in_file: cut_at.is_some(),
            live_bytes,
            end: valid as u64,
            allocated: bytes.len() as u64,
            framed: Vec::new(),
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.records.get(key).map(|place| self.read(*place)).transpose()
    }

    /// Copies the records in `[start, end)`; an empty `end` means no upper bound.
    pub fn scan(&self, start: &[u8], end: &[u8]) -> Result<Vec<KvPair>> {
        use std::ops::Bound;
        if !end.is_empty() && end <= start {
            return Ok(Vec::new());
        }
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        (self.records.range::<[u8], _>((Bound::Included(start), upper)))
            .map(|(key, place)| Ok((key.clone(), self.read(*place)?)))
            .collect()
    }

    fn read(&self, place: Place) -> Result<Vec<u8>> {
        let mut value = vec![0; place.len as usize];
        self.file
            .read_exact_at(&mut value, place.offset)
            .map_err(|e| self.error("read failed", e))?;
        Ok(value)
    }

    /// Appends `ops` as one record (atomic: a crash keeps all of them or none), with an fsync
    /// if `sync`. The record reaches the OS before this returns either way.
    pub fn write(&mut self, ops: &[LogOp<'_>], sync: bool) -> Result<()> {
        if !ops.is_empty() {
            // The header's place first, filled in once the payload is encoded after it.
            // Sized once: growing it op by op showed in the raftstore's profile.
            let len = RECORD_HEADER_BYTES + ops.iter().map(|op| op.encoded_len()).sum::<usize>();
            let mut framed = std::mem::take(&mut self.framed);
            framed.clear();
            framed.reserve(len);
            framed.resize(RECORD_HEADER_BYTES, 0);
            let mut places = Vec::with_capacity(ops.len());
            for op in ops {
                places.push(encode(&mut framed, *op));
            }
            debug_assert_eq!(framed.len(), len, "encoded_len disagrees with encode");
            seal_header(&mut framed);
            if self.torn_in_file {
                // Nothing of the torn write may follow the next record: a replay would take
                // whole records among it for new ones.
                self.file
                    .set_len(self.end)
                    .and_then(|()| self.file.sync_all())
                    .map_err(|e| self.error("cannot cut a torn write", e))?;
                (self.allocated, self.torn_in_file) = (self.end, false);
            }
            let end = self.end + framed.len() as u64;
            if end > self.allocated {
                // The new size reaches the disk with this write's fsync, or a later one.
                let size = end + EXTEND_BYTES;
                self.file.set_len(size).map_err(|e| self.error("cannot extend", e))?;
                self.allocated = size;
            }
            self.file.write_all_at(&framed, self.end).map_err(|e| self.error("write failed", e))?;
            for (op, place) in ops.iter().zip(places) {
                let place = place.map(|at| Place { offset: self.end + at.offset, len: at.len });
                apply(&mut self.records, &mut self.live_bytes, *op, place);
            }
            self.end = end;
            if framed.capacity() <= FRAMED_KEPT_BYTES_MAX {
                self.framed = framed;
            }
        }
        if sync {
            self.sync()?;
        }
        if self.end > REWRITE_BYTES && self.end > 4 * self.live_bytes {
            self.rewrite()?;
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| self.error("fsync failed", e))
    }

    /// Where opening found a torn write, if it did: the records end there, and the rest is cut
    /// before the next write. Only the last write can be torn by a crash; if acknowledged
    /// records went with it, the file was damaged, and the member refuses to start (its log
    /// lacks entries it committed): this says where to look.
    pub fn cut_at(&self) -> Option<u64> {
        self.cut_at
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of records in the file (the zeros ahead of them not counted).
    pub fn file_bytes(&self) -> u64 {
        self.end
    }

    /// Writes the live records to a new file that replaces this one.
    pub fn rewrite(&mut self) -> Result<()> {
        let mut bytes = with_header(Vec::with_capacity(self.live_bytes as usize * 11 / 10));
        let mut record = vec![0; RECORD_HEADER_BYTES];
        let mut places = Vec::with_capacity(self.records.len());
        for (key, place) in &self.records {
            let value = self.read(*place)?;
            let at = encode(&mut record, LogOp::Put(key, &value)).expect("a put has a value");
            places.push(Place { offset: (bytes.len() + at.offset as usize) as u64, len: at.len });
            if record.len() >= REWRITE_RECORD_BYTES {
                seal_header(&mut record);
                bytes.append(&mut record);
                record.resize(RECORD_HEADER_BYTES, 0);
            }
        }
        if record.len() > RECORD_HEADER_BYTES {
            seal_header(&mut record);
            bytes.append(&mut record);
        }
        let base = bytes.len() as u64;
        bytes[8..HEADER_BYTES].copy_from_slice(&base.to_le_bytes());
        replace(&self.path, &bytes).map_err(|e| self.error("rewrite failed", e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| self.error("cannot reopen after a rewrite", e))?;
        // The replaced file is unlinked; closing it frees its blocks, which took 13 ms of a
        // 28 ms rewrite here (80 MB). The raftstore thread need not wait for that: the rename
        // is durable already. (If no thread can be started, it is closed here.)
        let replaced = std::mem::replace(&mut self.file, file);
        let close = move || drop(replaced);
        let _ = std::thread::Builder::new().name("strata-log-close".into()).spawn(close);
        for (place, new) in self.records.values_mut().zip(places) {
            *place = new;
        }
        (self.end, self.allocated, self.torn_in_file) = (base, base, false);
        Ok(())
    }

    fn error(&self, what: &str, e: std::io::Error) -> Error {
        Error::Engine { location: self.location.clone(), message: format!("{what}: {e}") }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The header of a file whose fsynced prefix is the header itself.
fn with_header(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(HEADER_BYTES as u64).to_le_bytes());
    bytes
}

/// Writes `bytes` as the whole content of `path`, durably and atomically: into a temporary file,
/// fsynced, renamed over `path`, and the directory fsynced.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Fills in the header of the record that `record` holds after its first 8 bytes.
fn seal_header(record: &mut [u8]) {
    let (header, payload) = record.split_at_mut(RECORD_HEADER_BYTES);
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
}

/// Appends `op` to `out`; for a put, returns where in `out` its value went.
fn encode(out: &mut Vec<u8>, op: LogOp<'_>) -> Option<Place> {
    let put_bytes = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    match op {
        LogOp::Put(key, value) => {
            out.push(PUT);
            put_bytes(out, key);
            put_bytes(out, value);
            Some(Place { offset: (out.len() - value.len()) as u64, len: value.len() as u32 })
        }
        LogOp::Delete(key) => {
            out.push(DELETE);
            put_bytes(out, key);
            None
        }
    }
}

/// Applies one operation to the live records; `place` is where a put's value is in the file.
fn apply(records: &mut Records, live_bytes: &mut u64, op: LogOp<'_>, place: Option<Place>) {
    let old = match (op, place) {
        (LogOp::Put(key, _), Some(place)) => {
            *live_bytes += key.len() as u64 + place.len as u64;
            records.insert(key.to_vec(), place)
        }
        (LogOp::Delete(key), _) | (LogOp::Put(key, _), None) => records.remove(key),
    };
    if let Some((key_len, old)) = old.map(|old| (op.key().len(), old)) {
        *live_bytes -= key_len as u64 + old.len as u64;
    }
}

impl LogOp<'_> {
    fn key(&self) -> &[u8] {
        match self {
            LogOp::Put(key, _) | LogOp::Delete(key) => key,
        }
    }

    /// Its size in a record (see [`encode`]).
    fn encoded_len(&self) -> usize {
        match self {
            LogOp::Put(key, value) => 1 + 4 + key.len() + 4 + value.len(),
            LogOp::Delete(key) => 1 + 4 + key.len(),
        }
    }
}

/// Replays a journal's bytes: its records, and the length of the whole records they came from.
fn replay(location: &str, bytes: &[u8]) -> Result<(Records, u64, usize)> {
    let damaged = |message: String| Error::Engine { location: location.to_string(), message };
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(damaged("not a Strata Raft log (bad header)".into()));
    }
    let base = u64::from_le_bytes(bytes[8..HEADER_BYTES].try_into().expect("8 bytes"));
    if base < HEADER_BYTES as u64 || base > bytes.len() as u64 {
        return Err(damaged(format!("bad header: a fsynced prefix of {base} bytes")));
    }
    let mut records = Records::new();
    let mut live_bytes = 0;
    let mut at = HEADER_BYTES;
    while let Some(payload) = whole_record(&bytes[at..]) {
        let mut ops = Decoder(payload);
        while !ops.0.is_empty() {
            let op = ops.next_op().ok_or_else(|| {
                damaged(format!("record at byte {at} passes its checksum but does not decode"))
            })?;
            let place = match op {
                // The value is a slice of `bytes`: its offset there is its offset in the file.
                LogOp::Put(_, value) => Some(Place {
                    offset: (value.as_ptr() as usize - bytes.as_ptr() as usize) as u64,
                    len: value.len() as u32,
                }),
                LogOp::Delete(_) => None,
            };
            apply(&mut records, &mut live_bytes, op, place);
        }
        at += RECORD_HEADER_BYTES + payload.len();
    }
    if (at as u64) < base {
        return Err(damaged(format!(
            "damaged record at byte {at}, inside the part written whole by a rewrite"
        )));
    }
    Ok((records, live_bytes, at))
}

/// The payload of the record at the start of `bytes`, if it is whole and passes its CRC.
fn whole_record(bytes: &[u8]) -> Option<&[u8]> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    // Every record written has at least one operation: a zeroed header is not a record.
    let payload = bytes.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES.checked_add(len)?)?;
    (len > 0 && crc32fast::hash(payload) == crc).then_some(payload)
}

struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    fn next_op(&mut self) -> Option<LogOp<'a>> {
        let (&kind, rest) = self.0.split_first()?;
        self.0 = rest;
        let key = self.bytes()?;
        match kind {
            PUT => Some(LogOp::Put(key, self.bytes()?)),
            DELETE => Some(LogOp::Delete(key)),
            _ => None,
        }
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let bytes = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new journal in a directory of its own (removed when the first value is dropped).
    fn new_log() -> (tempfile::TempDir, PathBuf, LogJournal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.log");
        let log = LogJournal::open(&path).unwrap();
        (dir, path, log)
    }

    fn put<'a>(key: &'a [u8], value: &'a [u8]) -> LogOp<'a> {
        LogOp::Put(key, value)
    }

    #[test]
    fn records_survive_reopen_and_deletes_stay_deleted() {
        let (_dir, path, mut log) = new_log();
        log.write(&[put(b"a", b"1"), put(b"b", b"2")], true).unwrap();
        log.write(&[LogOp::Delete(b"a"), put(b"c", b"")], false).unwrap();
        drop(log);
        let log = LogJournal::open(&path).unwrap();
        assert_eq!(log.cut_at(), None, "the zeros ahead of the records are not a torn write");
        assert_eq!(
            log.scan(b"", b"").unwrap(),
            vec![(b"b".to_vec(), b"2".to_vec()), (b"c".to_vec(), vec![])]
        );
        assert_eq!(log.get(b"a").unwrap(), None);
    }

    /// Every way a crash can tear the last write: the file cut anywhere in it, or the part of
    /// it that did not reach the disk left as zeros. The records before it survive, the torn
    /// one is gone whole, and the file takes appends after it again.
    #[test]
    fn a_torn_last_write_is_cut_and_nothing_before_it_is_lost() {
        let (_dir, path, mut log) = new_log();
        log.write(&[put(b"a", b"1")], true).unwrap();
        let whole = log.file_bytes() as usize;
        log.write(&[put(b"b", &[7u8; 100]), put(b"c", b"3")], true).unwrap();
        let end = log.file_bytes() as usize;
        drop(log);
        // The written records and some of the zeros the file was extended with.
        let full = fs::read(&path).unwrap()[..end + 64].to_vec();
        let mut tears = Vec::new();
        // Every few bytes (each case reopens a file extended by 16 MiB), and the last one.
        for cut in (whole..end).step_by(5).chain([end - 1]) {
            tears.push(full[..cut].to_vec());
            let mut zeroed = full.clone();
            zeroed[cut..end].fill(0);
            tears.push(zeroed);
        }
        let mut flipped = full.clone();
        flipped[end - 1] ^= 1;
        tears.push(flipped);
        for torn in tears {
            fs::write(&path, &torn).unwrap();
            let mut log = LogJournal::open(&path).unwrap();
            assert_eq!(log.scan(b"", b"").unwrap(), vec![(b"a".to_vec(), b"1".to_vec())]);
            assert!(log.cut_at().is_none_or(|at| at == whole as u64));
            assert_eq!(fs::read(&path).unwrap(), torn, "opening leaves the file as it was");
            log.write(&[put(b"d", b"4")], true).unwrap();
            drop(log);
            let log = LogJournal::open(&path).unwrap();
            assert_eq!(log.get(b"d").unwrap(), Some(b"4".to_vec()), "appends go on after a cut");
        }
    }

    #[test]
    fn damage_inside_a_rewritten_prefix_is_reported() {
        let (_dir, path, mut log) = new_log();
        log.write(&[put(b"a", b"1"), put(b"b", b"2")], true).unwrap();
        log.rewrite().unwrap();
        drop(log);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = LogJournal::open(&path).err().expect("damage is reported");
        assert!(err.to_string().contains("inside the part written whole"), "{err}");
        assert!(err.to_string().contains("raft.log"), "{err}");
    }

    #[test]
    fn a_rewrite_keeps_exactly_the_live_records() {
        let (_dir, path, mut log) = new_log();
        let value = |i: u32| vec![i as u8; 300];
        for i in 0..1000u32 {
            log.write(&[put(&i.to_be_bytes(), &value(i))], false).unwrap();
            if i >= 10 {
                log.write(&[LogOp::Delete(&(i - 10).to_be_bytes())], false).unwrap();
            }
        }
        let mut expected: Vec<KvPair> =
            (990..1000u32).map(|i| (i.to_be_bytes().to_vec(), value(i))).collect();
        let before = log.file_bytes();
        log.rewrite().unwrap();
        assert!(log.file_bytes() < before / 50, "{} of {before} bytes", log.file_bytes());
        assert_eq!(log.scan(b"", b"").unwrap(), expected, "read from the new file");
        log.write(&[put(b"after", b"x")], true).unwrap();
        // A rewrite that died before its rename left a partial copy: it is ignored.
        fs::write(tmp_path(&path), b"partial").unwrap();
        drop(log);
        let log = LogJournal::open(&path).unwrap();
        expected.push((b"after".to_vec(), b"x".to_vec()));
        assert_eq!(log.scan(b"", b"").unwrap(), expected);
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.log");
        fs::write(&path, b"something else entirely").unwrap();
        let err = LogJournal::open(&path).err().expect("refused");
        assert!(err.to_string().contains("not a Strata Raft log"), "{err}");
    }
}
