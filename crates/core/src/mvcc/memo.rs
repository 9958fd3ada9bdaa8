//! What a range's applier remembers about the store from one batch to the next, so applying a
//! write does not search the store for what it replaces.
//!
//! Finding the newest version of a key means a range scan in the engine (versions are stored
//! newest first under the key, and the newest revision is not known in advance). A put needs
//! only that version's metadata (create revision, version, lease), and under load the scan was
//! the largest cost of applying one. The memo keeps that metadata for recently read or written
//! keys, and whether a `NOSPACE` alarm is active.
//!
//! Invariant: every entry describes the engine's contents once the current round's writes are
//! in (a failed engine write stops the process, taking the memo with it). Anything that replaces
//! the store's contents some other way (a snapshot) clears it. Entries only make reads cheaper,
//! never different: debug builds check every answer against the scan it saved.

use std::collections::HashMap;

use crate::pb::mvccpb::KeyValue;

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

/// Bytes of memo, counted as key bytes plus a fixed cost per entry, before half is dropped.
const MEMO_BYTES_MAX: usize = 8 << 20;
/// What an entry costs besides its key: the metadata, the key's allocation and the map's slot.
const ENTRY_OVERHEAD: usize = 80;

#[derive(Default)]
pub struct Memo {
    newest: HashMap<Vec<u8>, Newest>,
    bytes: usize,
    /// Whether a `NOSPACE` alarm is active; `None` until read.
    pub(super) no_space: Option<bool>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("keys", &self.newest.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Memo {
    pub fn get(&self, key: &[u8]) -> Option<&Newest> {
        self.newest.get(key)
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
            self.insert(key, newest);
        }
        self.no_space = if alarms_written { None } else { learned.no_space.or(self.no_space) };
    }

    pub fn insert(&mut self, key: Vec<u8>, newest: Newest) {
        let cost = key.len() + ENTRY_OVERHEAD;
        if self.newest.insert(key, newest).is_none() {
            self.bytes += cost;
        }
        if self.bytes > MEMO_BYTES_MAX {
            self.shed();
        }
    }

    /// Forgets everything: the store's contents were replaced.
    pub fn clear(&mut self) {
        *self = Memo::default();
    }

    /// Drops every other entry, in the map's (unordered) iteration order: about half, with no
    /// bookkeeping per access. Keys in use come back on their next miss.
    fn shed(&mut self) {
        let mut keep = false;
        let mut bytes = 0;
        self.newest.retain(|key, _| {
            keep = !keep;
            if keep {
                bytes += key.len() + ENTRY_OVERHEAD;
            }
            keep
        });
        self.bytes = bytes;
    }
}

#[cfg(test)]
mod tests {
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
        memo: std::sync::RwLock<Memo>,
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
    fn shedding_keeps_the_memo_within_its_bound() {
        let mut memo = Memo::default();
        let entry = Newest::of(None, 1);
        let n = MEMO_BYTES_MAX / (8 + ENTRY_OVERHEAD) + 10;
        for i in 0..n as u64 {
            memo.insert(i.to_be_bytes().to_vec(), entry);
        }
        assert!(memo.bytes <= MEMO_BYTES_MAX);
        let len = memo.newest.len();
        assert!(len > n / 4 && len < n, "{len} of {n}");
        assert_eq!(memo.bytes, len * (8 + ENTRY_OVERHEAD));
    }
}
