//! The operator's admin splits (`--splits`): during the load, under every fault, ranges other
//! than the meta range are split at keys the clients use, one after another, as `strata range
//! split` does it — a range id from the meta range, then the split proposed to the range that
//! holds the key, routed and tried again after a failure. Every checker runs over the result:
//! the clients' histories, the bank's audits across the new boundaries, the leases (whose marks
//! the new ranges inherit), the watchers (whose groups grow by the new ranges), and convergence
//! replica by replica of every range, new ones included.

use strata_core::Error;
use strata_core::command::{RangeIdAllocate, Request, SplitRequest};
use strata_core::mvcc::Response;
use strata_core::range::META_RANGE_ID;

use super::{CLIENT_TIMEOUT, Event, MS, Reply, World};

/// Where splits may cut, in the order they are made: between the bank's accounts of range 2,
/// between the lease clients' keys there, and between the key-value clients' keys.
const SPLIT_KEYS: [&[u8]; 4] = [b"m1", b"mlease/2", b"x2", b"x4"];
/// Tries of one split before it is given up (a run's faults may keep it from ever landing).
const ATTEMPTS_MAX: u32 = 40;

/// Which step of a split an answer belongs to.
#[derive(Clone, Copy, Debug)]
pub(super) enum SplitStep {
    Allocate,
    Split,
}

#[derive(Default)]
pub(super) struct Splits {
    /// The keys still to split at, in order.
    keys: Vec<&'static [u8]>,
    /// The range id allocated for the next split, once the meta range gave one.
    new_range_id: Option<u64>,
    attempts: u32,
    pub done: usize,
}

impl Splits {
    /// A plan of one to four splits, drawn from the run's seed.
    pub(super) fn new(rng: &mut strata_core::rng::Rng) -> Self {
        let count = rng.range(1, SPLIT_KEYS.len() as u64 + 1) as usize;
        let mut keys: Vec<&'static [u8]> = SPLIT_KEYS.to_vec();
        while keys.len() > count {
            let at = rng.range(0, keys.len() as u64) as usize;
            keys.remove(at);
        }
        Self { keys, ..Self::default() }
    }
}

impl World {
    /// The operator's next step: allocate an id, or propose the split, on a member.
    pub(super) fn split_next(&mut self) {
        let Some(&key) = self.splits.keys.first() else { return };
        if self.splits.attempts >= ATTEMPTS_MAX {
            self.log(|| format!("split at {} given up", key.escape_ascii()));
            return self.split_finished();
        }
        self.splits.attempts += 1;
        let node = self.any_member();
        let deadline = self.now + CLIENT_TIMEOUT;
        let new_range_id = self.splits.new_range_id;
        let proposed = self.with_node(node, |_, driver| {
            let Some(new_range_id) = new_range_id else {
                let allocate = Request::RangeIdAllocate(RangeIdAllocate {});
                driver.propose(
                    META_RANGE_ID,
                    allocate,
                    deadline,
                    Reply::Split(SplitStep::Allocate),
                );
                return true;
            };
            let node = driver.node();
            let Some(range_id) = node.range_of(key) else { return false };
            // Split already (an earlier try's answer was lost): the plan moves on.
            if node.descriptor(range_id).is_some_and(|d| d.start_key == key) {
                return false;
            }
            let split = Request::Split(SplitRequest { split_key: key.to_vec(), new_range_id });
            driver.propose(range_id, split, deadline, Reply::Split(SplitStep::Split));
            true
        });
        match proposed {
            Some(true) => self.round(node),
            Some(false) => self.split_finished(),
            None => self.schedule(50 * MS, Event::SplitNext),
        }
    }

    pub(super) fn split_answered(&mut self, step: SplitStep, result: Result<Response, Error>) {
        match (step, result) {
            (SplitStep::Allocate, Ok(Response::RangeIdAllocated(id))) => {
                self.splits.new_range_id = Some(id);
                self.schedule(MS, Event::SplitNext);
            }
            (SplitStep::Split, Ok(Response::Split { left, right })) => {
                let span = |d: &strata_core::range::RangeDescriptor| {
                    format!(
                        "range {} [{}, {})",
                        d.range_id,
                        d.start_key.escape_ascii(),
                        d.end_key.escape_ascii()
                    )
                };
                self.log(|| format!("split: {} and {}", span(&left), span(&right)));
                self.splits.done += 1;
                self.split_finished();
            }
            (_, Err(Error::SplitRefused(why))) => {
                self.log(|| format!("split refused: {why}"));
                self.split_finished();
            }
            (_, other) => {
                self.log(|| format!("split step {step:?}: {other:?}"));
                self.schedule(50 * MS, Event::SplitNext);
            }
        }
    }

    /// The current split is over (made, refused or given up): the next comes a while later.
    fn split_finished(&mut self) {
        if self.splits.keys.is_empty() {
            return;
        }
        self.splits.keys.remove(0);
        self.splits.new_range_id = None;
        self.splits.attempts = 0;
        let gap = self.client_rng.range(100 * MS, 800 * MS);
        self.schedule(gap, Event::SplitNext);
    }
}
