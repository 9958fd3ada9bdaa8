//! The checkers. Each returns violations as readable sentences; an empty list means the run
//! upheld the property.
//!
//! * [`linearizability`]: clients' histories, key by key.
//! * [`RaftObserver`]: Raft safety, watched while the run goes — at most one leader per range
//!   and term, and every replica applies the same entry at each index of a range.
//! * [`revisions`]: revisions increase with real time and each key's versions tell one story.
//! * [`convergence`] and [`durability`]: the replicas' final stores, range by range.

pub mod linearizability;

use std::collections::BTreeMap;

use strata_core::RangeId;
use strata_core::mvcc::view::View;
use strata_core::raftstore::AppliedEntry;
use strata_core::range::RangeDescriptor;
use strata_core::rng::fnv1a;
use strata_storage::{Engine, Keyspace, KvPair};

use crate::history::{Key, Op, Operation, Outcome, Value};

/// Watches leaders and applied entries as the run goes.
#[derive(Default)]
pub struct RaftObserver {
    /// The leader seen for each (range, term).
    leaders: BTreeMap<(RangeId, u64), u64>,
    /// What was applied at each (range, index): term and a hash of the entry.
    applied: BTreeMap<(u64, u64), (u64, u64, u64)>,
    /// Per node and range, the last index it applied since the node last started.
    last_applied: BTreeMap<(u64, RangeId), u64>,
    pub violations: Vec<String>,
}

impl RaftObserver {
    /// Node `node` leads `range` in `term`. Ranges elect independently, so two ranges may
    /// have leaders in the same term; one range may not have two.
    pub fn leader(&mut self, node: u64, range: RangeId, term: u64) {
        let first = *self.leaders.entry((range, term)).or_insert(node);
        if first != node && self.violations.len() < 10 {
            self.violations
                .push(format!("two leaders of range {range} in term {term}: n{first} and n{node}"));
        }
    }

    pub fn restarted(&mut self, node: u64) {
        self.last_applied.retain(|(n, _), _| *n != node);
    }

    pub fn applied(&mut self, node: u64, entries: &[AppliedEntry]) {
        for entry in entries {
            let last = self.last_applied.insert((node, entry.range_id), entry.index).unwrap_or(0);
            if entry.index <= last {
                self.violations.push(format!(
                    "n{node} applied index {} of range {} after index {last}",
                    entry.index, entry.range_id
                ));
            }
            let seen = (entry.term, fnv1a(&entry.data), node);
            let first = *self.applied.entry((entry.range_id, entry.index)).or_insert(seen);
            if (first.0, first.1) != (seen.0, seen.1) && self.violations.len() < 10 {
                self.violations.push(format!(
                    "range {} index {}: n{} applied an entry of term {}, n{node} one of term {} \
                     (different contents)",
                    entry.range_id, entry.index, first.2, first.0, entry.term
                ));
            }
        }
    }
}

/// Revisions and versions:
/// * every write that changed the store has its own revision;
/// * an operation invoked after another completed never reports a lower revision (a write,
///   never the same one) — serializable reads excepted, which may be stale by design;
/// * all observations of a key at one `mod_revision` agree on value, version and
///   `create_revision`, and `version` is 1 exactly when the key was created at that revision;
/// * a read answered at revision `r` that found a key last changed at `m` misses no
///   acknowledged change of that key in `(m, r]`: a read at a revision is a snapshot at it,
///   whichever range served it (rules 3 and 4 of `docs/design/revisions.md`).
pub fn revisions(history: &[Operation]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut owners: BTreeMap<i64, usize> = BTreeMap::new();
    for op in history.iter().filter(|op| op.outcome.changed_store()) {
        let revision = op.outcome.revision().expect("answered");
        if let Some(other) = owners.insert(revision, op.id) {
            violations.push(format!(
                "revision {revision} reported by two writes:\n    {}\n    {op}",
                history[other]
            ));
        }
    }

    // Real-time order: sweep invocations, folding in every operation completed before.
    let answered: Vec<&Operation> = history
        .iter()
        .filter(|op| op.op.is_linearizable() && op.outcome.revision().is_some())
        .collect();
    let mut by_completion = answered.clone();
    by_completion.sort_by_key(|op| op.completed);
    let mut by_invocation = answered;
    by_invocation.sort_by_key(|op| op.invoked);
    let mut done = by_completion.iter().peekable();
    let mut highest: Option<&Operation> = None;
    for op in by_invocation {
        while let Some(before) = done.next_if(|b| b.completed.unwrap_or(u64::MAX) < op.invoked) {
            if highest.is_none_or(|h| h.outcome.revision() < before.outcome.revision()) {
                highest = Some(before);
            }
        }
        let Some(before) = highest else { continue };
        let (earlier, later) = (before.outcome.revision(), op.outcome.revision());
        let backwards = later < earlier
            || (later == earlier && before.outcome.changed_store() && op.outcome.changed_store());
        if backwards && violations.len() < 10 {
            violations
                .push(format!("revision went backwards in real time:\n    {before}\n    {op}"));
        }
    }

    // Reads are snapshots: nothing acknowledged below a read's revision is missing from it.
    let mut changes: BTreeMap<&Key, BTreeMap<i64, usize>> = BTreeMap::new();
    for op in history.iter().filter(|op| op.outcome.changed_store()) {
        let (Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. }) = &op.op else {
            continue;
        };
        changes.entry(key).or_default().insert(op.outcome.revision().expect("answered"), op.id);
    }
    for op in history {
        let Outcome::Read { revision, kvs } = &op.outcome else { continue };
        for kv in kvs {
            if kv.mod_revision > *revision && violations.len() < 10 {
                violations.push(format!(
                    "a read at revision {revision} found {:?} changed at {}, after it:\n    {op}",
                    kv.key, kv.mod_revision
                ));
            }
            if kv.mod_revision >= *revision {
                continue;
            }
            let Some(of_key) = changes.get(&kv.key) else { continue };
            if let Some((_, missed)) = of_key.range(kv.mod_revision + 1..=*revision).next()
                && violations.len() < 10
            {
                violations.push(format!(
                    "a read at revision {revision} found {:?} as changed at {}, missing a \
                     change below its revision:\n    {op}\n    {}",
                    kv.key, kv.mod_revision, history[*missed]
                ));
            }
        }
    }

    // One story per key version.
    type Seen = (Value, Option<(i64, i64)>, usize);
    let mut versions: BTreeMap<(Key, i64), Seen> = BTreeMap::new();
    let mut observe = |key: &Key, mod_revision: i64, seen: Seen, violations: &mut Vec<String>| {
        let first = versions.entry((key.clone(), mod_revision)).or_insert(seen.clone());
        let agree =
            first.0 == seen.0 && (first.1.is_none() || seen.1.is_none() || first.1 == seen.1);
        if first.1.is_none() {
            first.1 = seen.1;
        }
        if !agree && violations.len() < 10 {
            violations.push(format!(
                "key {key:?} at mod_revision {mod_revision} seen two ways:\n    {}\n    {}",
                history[first.2], history[seen.2]
            ));
        }
    };
    for op in history {
        match (&op.op, &op.outcome) {
            (Op::Put { key, value } | Op::Cas { key, value, .. }, outcome)
                if outcome.changed_store() =>
            {
                let revision = outcome.revision().expect("answered");
                observe(key, revision, (value.clone(), None, op.id), &mut violations);
            }
            (_, Outcome::Read { kvs, .. }) => {
                for kv in kvs {
                    if (kv.version == 1) != (kv.create_revision == kv.mod_revision) {
                        violations.push(format!("inconsistent version {kv:?} in\n    {op}"));
                    }
                    let seen = (kv.value.clone(), Some((kv.create_revision, kv.version)), op.id);
                    observe(&kv.key, kv.mod_revision, seen, &mut violations);
                }
            }
            _ => {}
        }
    }
    violations
}

/// A node's replicas at the end of a run.
pub struct FinalReplica<'a> {
    pub id: u64,
    pub engine: &'a dyn Engine,
    /// Each range it holds: its descriptor and applied index. `None` when its process is not
    /// running.
    pub ranges: Option<BTreeMap<RangeId, (RangeDescriptor, u64)>>,
}

/// Every node runs at the end and holds a replica of every range (that still has a majority of
/// its voters), its ranges tile the key space, and the replicas of each range all applied the same index and hold the same records
/// of the range (the records its descriptor owns).
pub fn convergence(replicas: &[FinalReplica]) -> Vec<String> {
    let mut violations = Vec::new();
    // Every range some running replica holds, with its newest descriptor; a range whose
    // voters lost their majority for good (removed and damaged members) cannot take a new
    // replica, and is not required of the members that joined after.
    let running: std::collections::BTreeSet<u64> =
        replicas.iter().filter(|r| r.ranges.is_some()).map(|r| r.id).collect();
    let mut newest: BTreeMap<RangeId, &RangeDescriptor> = BTreeMap::new();
    for (range_id, (descriptor, _)) in replicas.iter().filter_map(|r| r.ranges.as_ref()).flatten() {
        let kept = newest.entry(*range_id).or_insert(descriptor);
        if descriptor.epoch() > kept.epoch() {
            *kept = descriptor;
        }
    }
    let alive = |descriptor: &RangeDescriptor| {
        let voters: Vec<u64> =
            (descriptor.replicas.iter()).filter(|r| !r.learner).map(|r| r.node_id).collect();
        2 * voters.iter().filter(|id| running.contains(id)).count() > voters.len()
    };
    for replica in replicas {
        let Some(ranges) = &replica.ranges else { continue };
        let missing: Vec<&RangeId> = newest.keys().filter(|id| !ranges.contains_key(id)).collect();
        let required: Vec<&&RangeId> = missing.iter().filter(|id| alive(newest[**id])).collect();
        if !required.is_empty() {
            violations
                .push(format!("liveness: n{} holds no replica of ranges {required:?}", replica.id));
        }
        if !missing.is_empty() {
            continue;
        }
        let mut spans: Vec<(&[u8], &[u8])> = ranges.values().map(|(d, _)| d.span()).collect();
        spans.sort();
        let tiled = spans.first().is_some_and(|(start, _)| start.is_empty())
            && spans.windows(2).all(|pair| pair[0].1 == pair[1].0)
            && spans.last().is_some_and(|(_, end)| end.is_empty());
        if !tiled {
            let spans: Vec<String> = (spans.iter())
                .map(|(s, e)| format!("[{}, {})", s.escape_ascii(), e.escape_ascii()))
                .collect();
            violations
                .push(format!("n{}'s ranges do not tile the key space: {spans:?}", replica.id));
        }
    }
    // Per range: the first replica seen, its applied index and its records.
    let mut reference: BTreeMap<RangeId, (u64, u64, Vec<KvPair>)> = BTreeMap::new();
    for replica in replicas {
        let Some(ranges) = &replica.ranges else {
            violations.push(format!("n{} is not running at the end", replica.id));
            continue;
        };
        let all: Vec<KvPair> = match replica.engine.scan(Keyspace::Mvcc, b"", b"") {
            Ok(iter) => iter.filter_map(|item| item.ok()).collect(),
            Err(e) => {
                violations.push(format!("n{}: cannot scan its data: {e}", replica.id));
                continue;
            }
        };
        for (range_id, (descriptor, applied)) in ranges {
            let owned = || -> Vec<KvPair> {
                all.iter().filter(|(k, v)| descriptor.owns(k, v)).cloned().collect()
            };
            match reference.get(range_id) {
                None => {
                    reference.insert(*range_id, (replica.id, *applied, owned()));
                }
                Some((first, index, _)) if index != applied => violations.push(format!(
                    "liveness: at the end n{} applied range {range_id} up to {applied}, n{first} \
                     up to {index}",
                    replica.id
                )),
                Some((first, _, expected)) if *expected != owned() => violations.push(format!(
                    "n{} holds different data of range {range_id} than n{first} at applied \
                     index {applied}",
                    replica.id
                )),
                Some(_) => {}
            }
        }
    }
    violations
}

/// Every acknowledged write is in every running replica's history, at its revision.
pub fn durability(replicas: &[FinalReplica], history: &[Operation]) -> Vec<String> {
    let mut violations = Vec::new();
    for replica in replicas.iter().filter(|r| r.ranges.is_some()) {
        let view = View::new(replica.engine);
        for op in history.iter().filter(|op| op.outcome.changed_store()) {
            let revision = op.outcome.revision().expect("answered");
            let (key, expected) = match &op.op {
                Op::Put { key, value } | Op::Cas { key, value, .. } => (key, Some(value)),
                Op::Delete { key } => (key, None),
                _ => continue,
            };
            let found = view.get(key.as_bytes(), revision);
            let holds = match (&found, expected) {
                (Ok(Some(kv)), Some(value)) => {
                    kv.value == value.as_bytes() && kv.mod_revision == revision
                }
                (Ok(None), None) => true,
                _ => false,
            };
            if !holds && violations.len() < 10 {
                violations.push(format!(
                    "lost acknowledged write on n{}: {op}; the store has {found:?} at revision \
                     {revision}",
                    replica.id
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::RaftObserver;

    #[test]
    fn ranges_elect_independently_but_one_range_has_one_leader_per_term() {
        let mut observer = RaftObserver::default();
        observer.leader(1, 1, 6);
        observer.leader(2, 2, 6);
        observer.leader(1, 1, 6);
        assert!(observer.violations.is_empty(), "{:?}", observer.violations);
        observer.leader(3, 1, 6);
        assert_eq!(observer.violations, ["two leaders of range 1 in term 6: n1 and n3"]);
    }
}
