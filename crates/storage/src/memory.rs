//! An in-memory engine for tests and the deterministic simulator.
//!
//! It keeps two images: what readers see, and what would survive a power loss (everything up to
//! the last `Sync` write). [`MemEngine::crash`] drops the difference, which is how the simulator
//! models "lost everything not yet fsynced".

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
    unsynced: Vec<WriteBatch>,
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
        self.crash_keeping(0);
    }

    /// Simulates a power loss after the system wrote back the oldest `kept` of the writes not
    /// yet made durable: those survive whole, every later one is gone. (A journal is written in
    /// order and a torn record fails its checksum, so what survives is always a prefix of whole
    /// batches.)
    pub fn crash_keeping(&self, kept: usize) {
        let mut state = self.state.write().expect("engine lock poisoned");
        let unsynced = std::mem::take(&mut state.unsynced);
        for batch in unsynced.iter().take(kept) {
            apply(&mut state.durable, batch);
        }
        state.visible = state.durable.clone();
    }

    /// How many writes are not yet durable.
    pub fn unsynced_writes(&self) -> usize {
        self.state.read().expect("engine lock poisoned").unsynced.len()
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
        state.unsynced.push(batch.clone());
        if durability == Durability::Sync {
            drop(state);
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.state.write().expect("engine lock poisoned");
        let unsynced = std::mem::take(&mut state.unsynced);
        for batch in &unsynced {
            apply(&mut state.durable, batch);
        }
        Ok(())
    }
}
