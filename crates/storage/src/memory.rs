//! An in-memory engine for tests and the deterministic simulator.
//!
//! It keeps two images: what readers see, and what would survive a power loss (everything up to
//! the last `Sync` write of each journal). [`MemEngine::crash`] drops the difference, which is
//! how the simulator models "lost everything not yet fsynced". Like the durable engine it has
//! two journals, the `Raft` keyspace's and the others', each synced and lost on its own.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::{
    Durability, Engine, Keyspace, KvPair, Result, ScanIter, WriteBatch, WriteOp, checksum,
};

type Image = BTreeMap<(Keyspace, Vec<u8>), Vec<u8>>;

#[derive(Default)]
struct State {
    visible: Image,
    durable: Image,
    /// Writes not yet durable, per journal: the `Raft` keyspace's, then the others'.
    unsynced: [Vec<WriteBatch>; 2],
}

const RAFT: usize = 0;
const DATA: usize = 1;

impl State {
    fn sync(&mut self, journal: usize) {
        for batch in std::mem::take(&mut self.unsynced[journal]) {
            apply(&mut self.durable, &batch);
        }
    }
}

/// The journal that holds a keyspace.
fn journal(keyspace: Keyspace) -> usize {
    if keyspace == Keyspace::Raft { RAFT } else { DATA }
}

/// A batch's two parts: its operations on the `Raft` keyspace, and the rest.
fn split(batch: &WriteBatch) -> [WriteBatch; 2] {
    let mut parts = [WriteBatch::new(), WriteBatch::new()];
    for op in batch.ops().iter().cloned() {
        match op {
            WriteOp::Put { keyspace, key, value } => {
                parts[journal(keyspace)].put(keyspace, key, value)
            }
            WriteOp::Delete { keyspace, key } => parts[journal(keyspace)].delete(keyspace, key),
        }
    }
    parts
}

/// An engine held in memory. Cloning gives another handle to the same store.
#[derive(Clone, Default)]
pub struct MemEngine {
    state: Arc<RwLock<State>>,
}

const LOCATION: &str = "memory engine";

fn apply(image: &mut Image, batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            WriteOp::Put { keyspace, key, value } => {
                image.insert((*keyspace, key.clone()), checksum::seal(key, value));
            }
            WriteOp::Delete { keyspace, key } => {
                image.remove(&(*keyspace, key.clone()));
            }
        }
    }
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power loss: every write not yet made durable is gone.
    pub fn crash(&self) {
        self.crash_keeping(0, 0);
    }

    /// Simulates a power loss after the system wrote back the oldest `raft_kept` writes not yet
    /// durable of the `Raft` journal and the oldest `data_kept` of the other: those survive
    /// whole, every later one is gone. (A journal is written in order and a torn record fails
    /// its checksum, so what survives of each is a prefix of whole writes.)
    pub fn crash_keeping(&self, raft_kept: usize, data_kept: usize) {
        let mut state = self.state.write().expect("engine lock poisoned");
        let unsynced = std::mem::take(&mut state.unsynced);
        for (journal, kept) in [(RAFT, raft_kept), (DATA, data_kept)] {
            for batch in unsynced[journal].iter().take(kept) {
                apply(&mut state.durable, batch);
            }
        }
        state.visible = state.durable.clone();
    }

    /// Writes a batch the way the durable engine leaves a synced write whose fsync failed. The
    /// part on the other keyspaces is written first: if `first_fails` and there is such a part,
    /// its fsync failed, and the `Raft` part was never written; otherwise that part is durable,
    /// and the `Raft` part written but not durable.
    pub fn write_failing_sync(&self, batch: &WriteBatch, first_fails: bool) -> Result<()> {
        crate::check_batch(batch, LOCATION)?;
        let mut state = self.state.write().expect("engine lock poisoned");
        let [raft, data] = split(batch);
        if !data.is_empty() {
            apply(&mut state.visible, &data);
            state.unsynced[DATA].push(data);
            if first_fails {
                return Ok(());
            }
            state.sync(DATA);
        }
        if !raft.is_empty() {
            apply(&mut state.visible, &raft);
            state.unsynced[RAFT].push(raft);
        }
        Ok(())
    }

    /// How many writes are not yet durable: of the `Raft` journal, and of the other.
    pub fn unsynced_writes(&self) -> (usize, usize) {
        let state = self.state.read().expect("engine lock poisoned");
        (state.unsynced[RAFT].len(), state.unsynced[DATA].len())
    }

    /// Overwrites the stored bytes of one record (as written and as durable), for corruption
    /// tests.
    pub fn corrupt(&self, keyspace: Keyspace, key: &[u8]) {
        let mut guard = self.state.write().expect("engine lock poisoned");
        let state = &mut *guard;
        let id = (keyspace, key.to_vec());
        for image in [&mut state.visible, &mut state.durable] {
            if let Some(value) = image.get_mut(&id) {
                if let Some(last) = value.last_mut() {
                    *last ^= 0xff;
                } else {
                    value.push(0);
                }
            }
        }
    }

    /// Every durable record's keyspace and key, in order (for picking one to damage).
    pub fn durable_keys(&self) -> Vec<(Keyspace, Vec<u8>)> {
        let state = self.state.read().expect("engine lock poisoned");
        state.durable.keys().cloned().collect()
    }
}

impl Engine for MemEngine {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let state = self.state.read().expect("engine lock poisoned");
        match state.visible.get(&(keyspace, key.to_vec())) {
            Some(framed) => Ok(Some(checksum::open(LOCATION, keyspace, key, framed)?)),
            None => Ok(None),
        }
    }

    fn scan(&self, keyspace: Keyspace, start: &[u8], end: &[u8]) -> Result<ScanIter<'_>> {
        use std::ops::Bound;
        let state = self.state.read().expect("engine lock poisoned");
        let lower = Bound::Included((keyspace, start.to_vec()));
        let upper = if end.is_empty() {
            // Every key of this keyspace sorts before the first key of the next.
            match Keyspace::ALL.iter().position(|k| *k == keyspace) {
                Some(i) if i + 1 < Keyspace::ALL.len() => {
                    Bound::Excluded((Keyspace::ALL[i + 1], Vec::new()))
                }
                _ => Bound::Unbounded,
            }
        } else {
            Bound::Excluded((keyspace, end.to_vec()))
        };
        if !end.is_empty() && end <= start {
            return Ok(Box::new(std::iter::empty()));
        }
        // Copy the matching records: the view must not hold the lock while the caller iterates.
        let items: Vec<Result<KvPair>> = state
            .visible
            .range((lower, upper))
            .map(|((ks, key), framed)| {
                checksum::open(LOCATION, *ks, key, framed).map(|value| (key.clone(), value))
            })
            .collect();
        Ok(Box::new(items.into_iter()))
    }

    fn write(&self, batch: &WriteBatch, durability: Durability) -> Result<()> {
        crate::check_batch(batch, LOCATION)?;
        let mut state = self.state.write().expect("engine lock poisoned");
        apply(&mut state.visible, batch);
        // The other keyspaces' part first, then the Raft part, as the durable engine does.
        let [raft, data] = split(batch);
        for (journal, part) in [(DATA, data), (RAFT, raft)] {
            if part.is_empty() {
                continue;
            }
            state.unsynced[journal].push(part);
            if durability == Durability::Sync {
                state.sync(journal);
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.state.write().expect("engine lock poisoned");
        state.sync(DATA);
        state.sync(RAFT);
        Ok(())
    }
}
