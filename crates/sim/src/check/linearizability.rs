//! Linearizability of a history, checked key by key.
//!
//! A history of single-key operations is linearizable exactly when each key's sub-history is
//! (linearizability is compositional), so each key is checked alone, which keeps the search
//! small. The search is Wing and Gong's, with Lowe's memoisation of (set of operations already
//! linearized, model state), the algorithm Porcupine uses. An operation with an unknown outcome
//! returns at "infinity": it may take effect at any point after its invocation, or never.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{Key, Op, Operation, Outcome, Value};

/// What one operation does to one key, as the model sees it.
#[derive(Clone, Debug)]
enum Step {
    Put(u32),
    Delete { deleted: Option<i64> },
    Read(u32),
    Cas { expect: u32, value: u32, succeeded: Option<bool> },
}

/// One key's view of one operation.
#[derive(Clone, Debug)]
struct KeyOp {
    id: usize,
    call: u64,
    /// `u64::MAX` when the outcome is unknown.
    ret: u64,
    step: Step,
}

/// The model: a register holding a value id, `ABSENT` when the key does not exist.
const ABSENT: u32 = 0;

fn apply(state: u32, step: &Step) -> Option<u32> {
    match *step {
        Step::Put(value) => Some(value),
        Step::Delete { deleted } => match deleted {
            Some(n) if n != i64::from(state != ABSENT) => None,
            _ => Some(ABSENT),
        },
        Step::Read(value) => (value == state).then_some(state),
        Step::Cas { expect, value, succeeded } => match succeeded {
            Some(true) => (state == expect).then_some(value),
            Some(false) => (state != expect).then_some(state),
            None if state == expect => Some(value),
            None => Some(state),
        },
    }
}

/// The result for one key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations explains what clients saw.
    Violation,
    /// The search gave up after its step budget.
    Inconclusive,
}

/// Checks every key; returns the keys that are not linearizable (with a printout of their
/// sub-history) and how many keys the search gave up on.
pub fn check(history: &[Operation], keys: &[Key], budget: u64) -> (Vec<String>, usize) {
    let mut values = Interner::default();
    let mut per_key: BTreeMap<&str, Vec<KeyOp>> = BTreeMap::new();
    for operation in history {
        for (key, step) in steps(operation, keys, &mut values) {
            let ret = match operation.outcome {
                Outcome::Unknown | Outcome::Pending => u64::MAX,
                _ => operation.completed.unwrap_or(u64::MAX),
            };
            let op = KeyOp { id: operation.id, call: operation.invoked, ret, step };
            per_key.entry(key).or_default().push(op);
        }
    }
    let mut violations = Vec::new();
    let mut inconclusive = 0;
    for (key, ops) in per_key {
        match check_key(&ops, budget) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => inconclusive += 1,
            Verdict::Violation => {
                let mut text = format!("key {key:?} is not linearizable; its operations:");
                for op in &ops {
                    text.push_str(&format!("\n    {}", history[op.id]));
                }
                violations.push(text);
            }
        }
    }
    (violations, inconclusive)
}

/// The key steps of one operation. Failed operations had no effect and say nothing; reads with
/// unknown outcomes say nothing either.
fn steps<'k>(
    operation: &Operation,
    keys: &'k [Key],
    values: &mut Interner,
) -> Vec<(&'k str, Step)> {
    let find = |key: &str| keys.iter().find(|k| k.as_str() == key).map(String::as_str);
    let unknown = matches!(operation.outcome, Outcome::Unknown | Outcome::Pending);
    let read_value = |kvs: &[crate::history::Kv], key: &str, values: &mut Interner| {
        kvs.iter().find(|kv| kv.key == key).map_or(ABSENT, |kv| values.id(&kv.value))
    };
    match (&operation.op, &operation.outcome) {
        (_, Outcome::Failed(_)) => Vec::new(),
        (Op::Put { key, value }, _) => {
            find(key).map(|k| (k, Step::Put(values.id(value)))).into_iter().collect()
        }
        (Op::Delete { key }, outcome) => {
            let deleted = match outcome {
                Outcome::Delete { deleted, .. } => Some(*deleted),
                _ => None,
            };
            find(key).map(|k| (k, Step::Delete { deleted })).into_iter().collect()
        }
        (Op::Cas { key, expect, value }, outcome) => {
            let succeeded = match outcome {
                Outcome::Cas { succeeded, .. } => Some(*succeeded),
                _ => None,
            };
            let expect = expect.as_ref().map_or(ABSENT, |v| values.id(v));
            let step = Step::Cas { expect, value: values.id(value), succeeded };
            find(key).map(|k| (k, step)).into_iter().collect()
        }
        (Op::Get { serializable: true, .. }, _) => Vec::new(),
        (Op::Get { .. } | Op::Scan, _) if unknown => Vec::new(),
        (Op::Get { key, .. }, Outcome::Read { kvs, .. }) => {
            find(key).map(|k| (k, Step::Read(read_value(kvs, k, values)))).into_iter().collect()
        }
        // A scan reads the keys under `k` (the meta range's; see `workload::read_request`).
        (Op::Scan, Outcome::Read { kvs, .. }) => (keys.iter())
            .filter(|k| k.starts_with('k'))
            .map(|k| (k.as_str(), Step::Read(read_value(kvs, k, values))))
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Default)]
struct Interner(HashMap<Value, u32>);

impl Interner {
    fn id(&mut self, value: &str) -> u32 {
        let next = self.0.len() as u32 + 1;
        *self.0.entry(value.to_string()).or_insert(next)
    }
}

/// The search over one key's operations.
fn check_key(ops: &[KeyOp], budget: u64) -> Verdict {
    let n = ops.len();
    // Events in time order; at equal times calls come first, which treats the two operations
    // as concurrent (the permissive reading of a tie).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret, true, i));
    }
    events.sort();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // A doubly linked list over the events, between a head and a tail sentinel.
    let (head, tail) = (2 * n, 2 * n + 1);
    let (mut next, mut prev) = (vec![0; 2 * n + 2], vec![0; 2 * n + 2]);
    let order: Vec<usize> = std::iter::once(head).chain(0..2 * n).chain([tail]).collect();
    for pair in order.windows(2) {
        next[pair[0]] = pair[1];
        prev[pair[1]] = pair[0];
    }
    let mut return_at = vec![0; n];
    for (position, (_, is_return, i)) in events.iter().enumerate() {
        if *is_return {
            return_at[*i] = position;
        }
    }

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, p: usize| {
        let (a, b) = (prev[p], next[p]);
        next[a] = b;
        prev[b] = a;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, p: usize| {
        let (a, b) = (prev[p], next[p]);
        next[a] = p;
        prev[b] = p;
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut state = ABSENT;
    let mut entry = next[head];
    let mut steps = 0u64;
    while next[head] != tail {
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive;
        }
        let (_, is_return, i) = events[entry];
        if !is_return {
            if let Some(new_state) = apply(state, &ops[i].step) {
                let mut candidate = linearized.clone();
                candidate[i / 64] |= 1 << (i % 64);
                if seen.insert((candidate.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    linearized = candidate;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, return_at[i]);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // Some operation returned before any order could place it: undo the last choice.
            let Some((call, before)) = stack.pop() else { return Verdict::Violation };
            let i = events[call].2;
            state = before;
            linearized[i / 64] &= !(1 << (i % 64));
            relink(&mut next, &mut prev, return_at[i]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, step: Step) -> KeyOp {
        KeyOp { id: 0, call, ret, step }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = [
            op(0, 1, Step::Put(1)),
            op(2, 3, Step::Read(1)),
            op(4, 5, Step::Delete { deleted: Some(1) }),
        ];
        assert_eq!(check_key(&ops, 1_000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_a_violation() {
        let ops = [op(0, 1, Step::Put(1)), op(2, 3, Step::Put(2)), op(4, 5, Step::Read(1))];
        assert_eq!(check_key(&ops, 1_000), Verdict::Violation);
    }

    #[test]
    fn concurrent_write_may_be_seen_or_not() {
        let ops = [op(0, 10, Step::Put(1)), op(1, 2, Step::Read(ABSENT)), op(3, 4, Step::Read(1))];
        assert_eq!(check_key(&ops, 1_000), Verdict::Linearizable);
        let reversed =
            [op(0, 10, Step::Put(1)), op(1, 2, Step::Read(1)), op(3, 4, Step::Read(ABSENT))];
        assert_eq!(check_key(&reversed, 1_000), Verdict::Violation);
    }

    #[test]
    fn unknown_write_may_apply_late_or_never() {
        let late =
            [op(0, u64::MAX, Step::Put(1)), op(5, 6, Step::Read(ABSENT)), op(7, 8, Step::Read(1))];
        assert_eq!(check_key(&late, 1_000), Verdict::Linearizable);
        let never = [op(0, u64::MAX, Step::Put(1)), op(5, 6, Step::Read(ABSENT))];
        assert_eq!(check_key(&never, 1_000), Verdict::Linearizable);
    }

    #[test]
    fn compare_and_swap_outcomes_must_match_the_state() {
        let cas = |succeeded| Step::Cas { expect: 1, value: 2, succeeded };
        let ok = [op(0, 1, Step::Put(1)), op(2, 3, cas(Some(true))), op(4, 5, Step::Read(2))];
        assert_eq!(check_key(&ok, 1_000), Verdict::Linearizable);
        let wrong = [op(0, 1, Step::Put(1)), op(2, 3, cas(Some(false)))];
        assert_eq!(check_key(&wrong, 1_000), Verdict::Violation);
    }
}
