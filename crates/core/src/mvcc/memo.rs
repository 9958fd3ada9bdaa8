//! Each key's newest version, without its value: the range's key index.
//!
//! Versions are stored newest first under their key, and the newest revision of a key is not
//! known in advance, so finding it in the engine is a range scan. A put needs only that
//! version's metadata (create revision, version, lease); a range needs to know which keys are
//! live to count them. The memo holds that metadata for every key the store has versions of,
//! like etcd's in-memory key index restricted to the newest version: applying a put reads it
//! instead of scanning, a get of a key is one point lookup, and a range at the current revision
//! walks keys here instead of every version in the engine. It also remembers whether a
//! `NOSPACE` alarm is active.
//!
//! A replica loads its memo from the engine when it opens, and again after a snapshot replaced
//! the store. An applier's private memo of what it learned (and test memos) start empty and
//! incomplete: they know some keys, and say nothing of the others.
//!
//! Invariant: every entry describes the engine's contents once the current round's writes are
//! in (a failed engine write stops the process, taking the memo with it); a complete memo has
//! an entry for every key with a version in the engine. Entries only make reads cheaper, never
//! different: debug builds check every answer the applier takes from it against a scan.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use strata_storage::{Engine, Keyspace};

use super::record::VersionRecord;
use crate::pb::mvccpb::KeyValue;
use crate::{Result, keys};

/// The newest version of a key, without its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Newest {
    /// The revision of the newest version; for a key with no live version, a revision at which
    /// it had none. The entry answers reads at this revision and later.
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    /// No live version: deleted, or never written.
    pub absent: bool,
}

impl Newest {
    /// What reads at `revision` see, if this entry can tell: `Some(None)` for no live version.
    pub fn at(&self, key: &[u8], revision: i64) -> Option<Option<KeyValue>> {
        if self.mod_revision > revision {
            return None;
        }
        Some((!self.absent).then(|| KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: Vec::new(),
            lease: self.lease,
        }))
    }

    /// The entry for `record`, written at `mod_revision` as its key's newest version.
    pub fn of_record(record: &VersionRecord, mod_revision: i64) -> Self {
        Newest {
            mod_revision,
            create_revision: record.create_revision,
            version: record.version,
            lease: record.lease,
            absent: record.tombstone,
        }
    }

    /// The entry for what a read at `revision` found.
    pub fn of(found: Option<&KeyValue>, revision: i64) -> Self {
        match found {
            Some(kv) => Newest {
                mod_revision: kv.mod_revision,
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
                absent: false,
            },
            None => Newest {
                mod_revision: revision,
                create_revision: 0,
                version: 0,
                lease: 0,
                absent: true,
            },
        }
    }
}

#[derive(Default)]
pub struct Memo {
    newest: BTreeMap<Vec<u8>, Newest>,
    /// Every key with a version in the engine has an entry: a key without one has no version.
    complete: bool,
    /// Changes whenever the contents are replaced wholesale (a snapshot), so a reader walking
    /// the memo a piece at a time notices.
    generation: u64,
    /// Whether a `NOSPACE` alarm is active; `None` until read.
    pub(super) no_space: Option<bool>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("keys", &self.newest.len())
            .field("complete", &self.complete)
            .finish()
    }
}

impl Memo {
    /// The complete memo of the keys in `[start, end)` (an empty end: to the end of the key
    /// space) that `engine` holds: one pass over their versions, reading the newest of each key.
    pub fn load(engine: &dyn Engine, (start, end): (&[u8], &[u8])) -> Result<Self> {
        let (start, end) = keys::version_bounds(start, end);
        let mut newest = BTreeMap::new();
        let mut last_prefix: Vec<u8> = Vec::new();
        for item in engine.scan(Keyspace::Mvcc, &start, &end)? {
            let (raw_key, bytes) = item?;
            // A version key is the key's prefix followed by 8 bytes of revision.
            let prefix = &raw_key[..raw_key.len().saturating_sub(8)];
            if prefix == last_prefix.as_slice() {
                continue; // an older version
            }
            last_prefix = prefix.to_vec();
            let (key, mod_revision) = keys::decode_version(&raw_key).ok_or_else(|| {
                crate::Error::Storage(format!(
                    "malformed MVCC key {}",
                    strata_storage::display_key(&raw_key)
                ))
            })?;
            newest.insert(key, Newest::of_record(&VersionRecord::decode(&bytes)?, mod_revision));
        }
        Ok(Self { newest, complete: true, generation: 0, no_space: None })
    }

    /// The entry of `key`, as far as this memo knows it.
    pub fn get(&self, key: &[u8]) -> Option<&Newest> {
        self.newest.get(key)
    }

    /// What the memo can say of `key`: its entry, or, in a complete memo, that it has no
    /// version at all.
    pub fn lookup(&self, key: &[u8]) -> Option<Newest> {
        self.newest.get(key).copied().or_else(|| self.complete.then(|| Newest::of(None, 0)))
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Keys with an entry.
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }

    /// Up to `max` entries of keys in `[start, end)` (empty `end`: no upper bound), in key
    /// order, starting after `after` when given.
    pub fn chunk(
        &self,
        start: &[u8],
        end: &[u8],
        after: Option<&[u8]>,
        max: usize,
    ) -> Vec<(Vec<u8>, Newest)> {
        let lower = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(start),
        };
        let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
        if let (Bound::Excluded(lo) | Bound::Included(lo), Bound::Excluded(hi)) = (lower, upper)
            && lo >= hi
        {
            return Vec::new();
        }
        self.newest
            .range::<[u8], _>((lower, upper))
            .take(max)
            .map(|(key, newest)| (key.clone(), *newest))
            .collect()
    }

    /// Takes in what one apply run learned about keys it did not write, the newest versions it
    /// wrote, and whether it raised or cleared an alarm.
    pub fn absorb(
        &mut self,
        learned: Memo,
        written: HashMap<Vec<u8>, Newest>,
        alarms_written: bool,
    ) {
        for (key, newest) in learned.newest.into_iter().chain(written) {
            self.newest.insert(key, newest);
        }
        self.no_space = if alarms_written { None } else { learned.no_space.or(self.no_space) };
    }

    pub fn insert(&mut self, key: Vec<u8>, newest: Newest) {
        self.newest.insert(key, newest);
    }

    /// Drops the entry of `key` if it is the deletion at `mod_revision`: compaction deleted
    /// that tombstone, the key's newest version, and with it every version the key had.
    pub fn forget_deleted(&mut self, key: &[u8], mod_revision: i64) {
        if self.newest.get(key).is_some_and(|n| n.absent && n.mod_revision == mod_revision) {
            self.newest.remove(key);
        }
    }

    /// Forgets everything: the store's contents are being replaced. The memo is incomplete
    /// until [`Self::reload`].
    pub fn clear(&mut self) {
        let generation = self.generation + 1;
        *self = Memo { generation, ..Memo::default() };
    }

    /// Loads the memo again from `engine`, which holds the store's new contents.
    pub fn reload(&mut self, engine: &dyn Engine, span: (&[u8], &[u8])) -> Result<()> {
        let generation = self.generation + 1;
        *self = Memo { generation, ..Memo::load(engine, span)? };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use strata_storage::{Durability, Engine, MemEngine};

    use super::*;
    use crate::command::Request;
    use crate::mvcc::view::View;
    use crate::mvcc::{AppliedState, Applier, Response};
    use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use crate::pb::etcdserverpb::request_op::Request as Op;
    use crate::pb::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};

    /// Applies each run of requests with one applier, carrying the memo between runs as a
    /// replica does, and returns the responses.
    struct Store {
        engine: MemEngine,
        state: AppliedState,
        memo: RwLock<Memo>,
    }

    impl Store {
        fn run(&mut self, requests: &[Request]) -> Vec<Response> {
            let mut applier = Applier::with_memo(&self.engine, 1, self.state, &self.memo);
            let responses = requests.iter().map(|r| applier.apply(r).unwrap()).collect();
            let (batch, state) = applier.finish();
            self.engine.write(&batch, Durability::Buffered).unwrap();
            self.state = state;
            responses
        }

        fn memo(&self) -> std::sync::RwLockReadGuard<'_, Memo> {
            self.memo.read().unwrap()
        }
    }

    fn put(key: &str, value: &str) -> Request {
        Request::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: true,
            ..Default::default()
        })
    }

    /// A transaction that puts `then` if `key` has `version`.
    fn txn_if_version(key: &str, version: i64, then: &str) -> Request {
        Request::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: key.into(),
                target_union: Some(TargetUnion::Version(version)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: then.into(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
    }

    fn previous(response: &Response) -> (i64, i64, i64, Vec<u8>) {
        let Response::Put(put) = response else { panic!("not a put: {response:?}") };
        let kv = put.prev_kv.clone().expect("a previous version");
        (kv.create_revision, kv.mod_revision, kv.version, kv.value)
    }

    #[test]
    fn later_runs_build_on_what_earlier_runs_learned_and_wrote() {
        let mut store = Store {
            engine: MemEngine::new(),
            state: AppliedState::initial(),
            memo: Default::default(),
        };
        store.run(&[put("a", "1")]); // revision 2
        assert_eq!(store.memo().get(b"a").unwrap().version, 1);
        // A compare reads `a` without writing it: a memo that does not know it (as after a
        // snapshot) learns it from the store.
        store.memo.write().unwrap().clear();
        let r = store.run(&[txn_if_version("a", 1, "b")]); // revision 3
        assert!(matches!(&r[0], Response::Txn(t) if t.succeeded));
        assert_eq!(store.memo().get(b"a").unwrap().version, 1);
        // Puts in one run see each other; the value comes from the store when asked for.
        let r = store.run(&[put("a", "2"), put("a", "3")]); // revisions 4, 5
        assert_eq!(previous(&r[0]), (2, 2, 1, b"1".to_vec()));
        assert_eq!(previous(&r[1]), (2, 4, 2, b"2".to_vec()));
        // A deletion, then a new incarnation.
        let delete =
            Request::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() });
        store.run(&[delete]); // revision 6
        store.memo.write().unwrap().clear();
        let r = store.run(&[txn_if_version("a", 0, "c")]); // revision 7
        assert!(matches!(&r[0], Response::Txn(t) if t.succeeded));
        let r = store.run(&[put("a", "4")]); // revision 8
        let Response::Put(response) = &r[0] else { unreachable!() };
        assert_eq!(response.prev_kv, None);
        let r = store.run(&[put("a", "5")]);
        assert_eq!(previous(&r[0]), (8, 8, 1, b"4".to_vec()));

        // Readers going through the memo see what a scan sees, at every revision.
        let (plain, memoized) =
            (View::new(&store.engine), View::with_memo(&store.engine, &store.memo));
        for key in [&b"a"[..], b"b", b"c", b"never"] {
            for revision in 1..=store.state.revision {
                assert_eq!(memoized.get(key, revision).unwrap(), plain.get(key, revision).unwrap());
            }
        }
        assert!(store.memo().get(b"a").is_some());
        // A memo that outlived the store's contents (a snapshot replaced them) is not trusted
        // for versions the store no longer holds.
        let other = MemEngine::new();
        assert_eq!(View::with_memo(&other, &store.memo).get(b"a", 9).unwrap(), None);
    }

    #[test]
    fn an_entry_answers_reads_at_and_after_its_revision_only() {
        let live =
            Newest { mod_revision: 7, create_revision: 3, version: 2, lease: 9, absent: false };
        assert_eq!(live.at(b"k", 6), None);
        let kv = live.at(b"k", 7).unwrap().unwrap();
        assert_eq!((kv.mod_revision, kv.create_revision, kv.version, kv.lease), (7, 3, 2, 9));
        let gone = Newest::of(None, 10);
        assert_eq!(gone.at(b"k", 9), None);
        assert_eq!(gone.at(b"k", 10), Some(None));
    }

    #[test]
    fn a_loaded_memo_matches_the_one_built_by_applying() {
        let mut store = Store {
            engine: MemEngine::new(),
            state: AppliedState::initial(),
            memo: RwLock::new(Memo::load(&MemEngine::new(), (b"", b"")).unwrap()),
        };
        store.run(&[put("a", "1"), put("b", "1"), put("a", "2")]);
        let delete =
            Request::DeleteRange(DeleteRangeRequest { key: "b".into(), ..Default::default() });
        store.run(&[delete, put("c", "1")]);
        let loaded = Memo::load(&store.engine, (b"", b"")).unwrap();
        assert!(loaded.is_complete());
        let built = store.memo();
        assert_eq!(loaded.chunk(b"", b"", None, 10), built.chunk(b"", b"", None, 10));
        assert_eq!(loaded.len(), 3);
        assert!(loaded.get(b"b").unwrap().absent);
        // A complete memo knows that a key it has no entry for has no version.
        assert_eq!(loaded.lookup(b"never").and_then(|n| n.at(b"never", 1)), Some(None));
        assert_eq!(Memo::default().lookup(b"never"), None);
        assert_eq!(loaded.chunk(b"b", b"c", None, 10).len(), 1);
        assert_eq!(loaded.chunk(b"a", b"", Some(b"a"), 1)[0].0, b"b");
        assert!(loaded.chunk(b"c", b"a", None, 10).is_empty());
    }
}
