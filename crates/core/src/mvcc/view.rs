//! A read view of the Mvcc keyspace: the engine's contents overlaid with writes that the
//! current apply batch has made but not yet written. Applying a batch of Raft entries writes
//! the engine once at the end, yet every entry (and every operation inside a transaction) must
//! see the writes before it; the overlay is how.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::sync::RwLock;

use strata_storage::{Engine, Keyspace, KvPair, ScanIter};

use super::memo::Memo;
use super::record::VersionRecord;
use crate::pb::mvccpb::KeyValue;
use crate::{Result, keys};

/// Pending writes to the Mvcc keyspace: `None` is a deletion.
pub type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Overlay records in key order, copied out of the overlay for one scan.
type OverlayIter = Peekable<std::vec::IntoIter<(Vec<u8>, Option<Vec<u8>>)>>;

#[derive(Clone, Copy)]
pub struct View<'a> {
    engine: &'a dyn Engine,
    overlay: Option<&'a Overlay>,
    memo: Option<&'a RwLock<Memo>>,
}

impl<'a> View<'a> {
    /// A view of what the engine holds.
    pub fn new(engine: &'a dyn Engine) -> Self {
        Self { engine, overlay: None, memo: None }
    }

    pub fn with_overlay(engine: &'a dyn Engine, overlay: &'a Overlay) -> Self {
        Self { engine, overlay: Some(overlay), memo: None }
    }

    /// A view of what the engine holds that reads through the range's memo where it can: a
    /// key's current version is one point lookup, and a range at a revision the memo covers
    /// walks the memo's keys instead of every version in the engine.
    pub fn with_memo(engine: &'a dyn Engine, memo: &'a RwLock<Memo>) -> Self {
        Self { engine, overlay: None, memo: Some(memo) }
    }

    /// Scans raw Mvcc records in `[start, end)` (empty `end`: to the end).
    pub fn scan(&self, start: &[u8], end: &[u8]) -> Result<Merged<'a>> {
        let engine = self.engine.scan(Keyspace::Mvcc, start, end)?.peekable();
        let overlay: Vec<(Vec<u8>, Option<Vec<u8>>)> = match self.overlay {
            Some(o) if end.is_empty() => {
                o.range(start.to_vec()..).map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            Some(o) if start < end => {
                o.range(start.to_vec()..end.to_vec()).map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            _ => Vec::new(),
        };
        Ok(Merged { engine, overlay: overlay.into_iter().peekable() })
    }

    /// The raw record stored under `raw_key`, if any.
    pub fn get_raw(&self, raw_key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut end = raw_key.to_vec();
        end.push(0);
        Ok(self.scan(raw_key, &end)?.next().transpose()?.map(|(_, value)| value))
    }

    /// The latest version of `key` at or below `revision`, unless that version is a deletion.
    pub fn get(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>> {
        if let Some(memo) = self.memo {
            let known =
                memo.read().expect("memo lock").lookup(key).and_then(|n| n.at(key, revision));
            match known {
                Some(None) => return Ok(None),
                Some(Some(kv)) => {
                    let version_key = keys::version(key, kv.mod_revision);
                    // Absent only if a snapshot replaced the store since the memo was read:
                    // then the scan below answers.
                    if let Some(bytes) = self.engine.get(Keyspace::Mvcc, &version_key)? {
                        let record = VersionRecord::decode(&bytes)?;
                        return Ok(Some(record.into_key_value(key.to_vec(), kv.mod_revision)));
                    }
                }
                None => {}
            }
        }
        self.get_stored(key, revision)
    }

    /// [`Self::get`], from the engine alone.
    fn get_stored(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>> {
        let start = keys::version(key, revision);
        match self.scan(&start, &versions_end(key))?.next() {
            None => Ok(None),
            Some(item) => {
                let (raw_key, bytes) = item?;
                let (_, mod_revision) = decoded(&raw_key)?;
                let record = VersionRecord::decode(&bytes)?;
                Ok((!record.tombstone).then(|| record.into_key_value(key.to_vec(), mod_revision)))
            }
        }
    }

    /// Visits every key in `[start, end)` that exists at `revision`, in key order, with its
    /// version current at that revision (decoded only if the visitor asks: counting keys past
    /// a limit need not). The visitor returns `false` to stop early.
    pub fn for_each_live(
        &self,
        start: &[u8],
        end: &[u8],
        revision: i64,
        mut visit: impl FnMut(Live<'a>) -> Result<bool>,
    ) -> Result<()> {
        if end.len() == start.len() + 1 && end.starts_with(start) && end.last() == Some(&0) {
            // One key (a plain get): read its version at `revision` and stop, rather than step
            // through the versions behind it to find that no other key follows.
            if let Some(kv) = self.get(start, revision)? {
                visit(Live(Found::Decoded(kv)))?;
            }
            return Ok(());
        }
        match self.memo {
            Some(memo) => self.walk_memo(memo, start, end, revision, visit),
            None => self.walk_versions(start, end, revision, visit),
        }
    }

    /// [`Self::for_each_live`] over the memo's keys: a key whose entry is at or below
    /// `revision` is answered by the entry (its value read only if the visitor asks), any other
    /// from the engine. The memo is read a chunk at a time, so a long range never holds its
    /// lock for long; entries only move forward in between, except when a snapshot replaces
    /// the store, and then the rest of the range is read from the engine.
    fn walk_memo(
        &self,
        memo: &RwLock<Memo>,
        start: &[u8],
        end: &[u8],
        revision: i64,
        mut visit: impl FnMut(Live<'a>) -> Result<bool>,
    ) -> Result<()> {
        let mut generation = None;
        let mut last: Option<Vec<u8>> = None;
        loop {
            let chunk = {
                let memo = memo.read().expect("memo lock");
                if !memo.is_complete() || generation.is_some_and(|g| g != memo.generation()) {
                    drop(memo);
                    // Go on from the engine, after the last key visited.
                    let rest = match &last {
                        Some(key) => [key.as_slice(), &[0]].concat(),
                        None => start.to_vec(),
                    };
                    return self.walk_versions(&rest, end, revision, visit);
                }
                generation = Some(memo.generation());
                memo.chunk(start, end, last.as_deref(), MEMO_CHUNK)
            };
            let Some((key, _)) = chunk.last() else { return Ok(()) };
            last = Some(key.clone());
            for (key, newest) in chunk {
                let live = match newest.at(&key, revision) {
                    Some(None) => continue,
                    Some(Some(kv)) => Found::Indexed { kv, engine: self.engine },
                    None => match self.get_stored(&key, revision)? {
                        Some(kv) => Found::Decoded(kv),
                        None => continue,
                    },
                };
                if !visit(Live(live))? {
                    return Ok(());
                }
            }
        }
    }

    /// [`Self::for_each_live`] over every version in the engine.
    fn walk_versions(
        &self,
        start: &[u8],
        end: &[u8],
        revision: i64,
        mut visit: impl FnMut(Live<'a>) -> Result<bool>,
    ) -> Result<()> {
        let (mut from, hi) = keys::version_bounds(start, end);
        'scan: loop {
            let mut last_key: Option<Vec<u8>> = None;
            let mut skipped = 0;
            for item in self.scan(&from, &hi)? {
                let (raw_key, bytes) = item?;
                let (user_key, mod_revision) = decoded(&raw_key)?;
                let older = last_key.as_deref() == Some(user_key.as_slice());
                if older || mod_revision > revision {
                    // A key written often has a long history: after a few versions, seek past
                    // the rest (to the next key, or to the version at `revision`) rather than
                    // read them all.
                    skipped += 1;
                    if skipped > VERSIONS_READ_BEFORE_SEEK {
                        from = if older {
                            versions_end(&user_key)
                        } else {
                            keys::version(&user_key, revision)
                        };
                        if from >= hi {
                            return Ok(()); // nothing left in the span
                        }
                        continue 'scan;
                    }
                    continue;
                }
                skipped = 0;
                // The newest version at or below `revision`: it decides whether the key exists.
                last_key = Some(user_key.clone());
                if VersionRecord::is_tombstone(&bytes)? {
                    continue;
                }
                if !visit(Live(Found::Encoded { key: user_key, mod_revision, bytes }))? {
                    return Ok(());
                }
            }
            return Ok(());
        }
    }
}

/// A key's version that a read found live.
pub struct Live<'a>(Found<'a>);

enum Found<'a> {
    Encoded {
        key: Vec<u8>,
        mod_revision: i64,
        bytes: Vec<u8>,
    },
    Decoded(KeyValue),
    /// From the memo: everything but the value, which is in the engine.
    Indexed {
        kv: KeyValue,
        engine: &'a dyn Engine,
    },
}

impl Live<'_> {
    pub fn into_key_value(self) -> Result<KeyValue> {
        match self.0 {
            Found::Encoded { key, mod_revision, bytes } => {
                Ok(VersionRecord::decode(&bytes)?.into_key_value(key, mod_revision))
            }
            Found::Decoded(kv) => Ok(kv),
            Found::Indexed { mut kv, engine } => {
                // Missing only if a compaction or a snapshot overtook the read; readers check
                // the compaction floor afterwards and read again (see the server's read path).
                let bytes = engine.get(Keyspace::Mvcc, &keys::version(&kv.key, kv.mod_revision))?;
                let bytes = bytes.ok_or_else(|| {
                    crate::Error::Storage(format!(
                        "version {} of {} is missing",
                        kv.mod_revision,
                        strata_storage::display_key(&kv.key)
                    ))
                })?;
                kv.value = VersionRecord::decode(&bytes)?.value;
                Ok(kv)
            }
        }
    }
}

/// Memo entries copied out per lock of the memo, in a range read.
const MEMO_CHUNK: usize = 1024;

/// Versions of one key skipped by reading before a scan seeks past the rest.
const VERSIONS_READ_BEFORE_SEEK: usize = 8;

/// The first raw key after every version of `user_key`.
fn versions_end(user_key: &[u8]) -> Vec<u8> {
    let mut end = keys::version_prefix(user_key);
    *end.last_mut().expect("prefix ends with a terminator") += 1;
    end
}

fn decoded(raw_key: &[u8]) -> Result<(Vec<u8>, i64)> {
    keys::decode_version(raw_key).ok_or_else(|| {
        crate::Error::Storage(format!(
            "malformed MVCC key {}",
            strata_storage::display_key(raw_key)
        ))
    })
}

/// Engine records merged with overlay records, in key order; the overlay wins on equal keys.
pub struct Merged<'a> {
    engine: Peekable<ScanIter<'a>>,
    overlay: OverlayIter,
}

impl Iterator for Merged<'_> {
    type Item = Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            use std::cmp::Ordering;
            let engine_vs_overlay = match (self.engine.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((engine_key, _))), Some((overlay_key, _))) => engine_key.cmp(overlay_key),
            };
            match engine_vs_overlay {
                Ordering::Less => return self.engine.next().map(|r| r.map_err(Into::into)),
                // The engine's record is shadowed by the overlay's.
                Ordering::Equal => drop(self.engine.next()),
                Ordering::Greater => {}
            }
            match self.overlay.next() {
                Some((key, Some(value))) => return Some(Ok((key, value))),
                Some((_, None)) => continue, // deleted in the overlay
                None => return None,
            }
        }
    }
}
