//! The revision oracle under faults: clients ask whichever node they believe leads the meta
//! range for blocks of revisions and read timestamps, as range leaders and readers will, while
//! meta leaders crash, are cut off, pause and are replaced.
//!
//! The checker (`docs/design/revisions.md`, rules 1 and 2):
//! * **unique**: no revision is in two blocks handed out, across every failover;
//! * **real-time order**: an answer to an ask sent after another answer was received is above
//!   it — a block starts above every number answered before (a read timestamp at or above).

use crate::world::Time;
use strata_core::raftstore::{Ask, Grant};
use strata_core::rng::Rng;

const MS: Time = 1_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Timed out or refused: it handed out nothing the client could use.
    Failed,
    Granted(Grant),
}

#[derive(Clone, Debug)]
pub struct Asked {
    pub client: usize,
    pub node: u64,
    pub ask: Ask,
    pub invoked: Time,
    pub completed: Option<Time>,
    pub outcome: Outcome,
}

/// How many asks were answered, and with what.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub blocks: u64,
    pub read_timestamps: u64,
    pub refused: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.blocks += other.blocks;
        self.read_timestamps += other.read_timestamps;
        self.refused += other.refused;
    }
}

pub struct OracleClients {
    rng: Rng,
    /// Per client, the node that answered it last (the meta leader, as far as it knows).
    leaders: Vec<Option<u64>>,
    pub asks: Vec<Asked>,
    pub counts: Counts,
}

impl OracleClients {
    pub fn new(rng: Rng, clients: usize) -> Self {
        Self { rng, leaders: vec![None; clients], asks: Vec::new(), counts: Counts::default() }
    }

    pub fn clients(&self) -> usize {
        self.leaders.len()
    }

    /// The client's next ask, and the node it goes to (`None`: any member).
    pub fn next(&mut self, client: usize) -> (Ask, Option<u64>) {
        let ask = if self.rng.chance(0.5) { Ask::ReadTs } else { Ask::Block(self.rng.range(1, 5)) };
        (ask, self.leaders[client])
    }

    pub fn invoke(&mut self, client: usize, node: u64, ask: Ask, now: Time) -> usize {
        let asked =
            Asked { client, node, ask, invoked: now, completed: None, outcome: Outcome::Pending };
        self.asks.push(asked);
        self.asks.len() - 1
    }

    /// An answer arrived (or the client gave up); returns when the client asks next.
    pub fn complete(&mut self, ask: usize, outcome: Outcome, now: Time) -> Option<Time> {
        let asked = &mut self.asks[ask];
        if asked.outcome != Outcome::Pending {
            return None; // answered already, or a timeout after the answer
        }
        asked.completed = Some(now);
        let client = asked.client;
        match &outcome {
            Outcome::Granted(Grant::Block(_)) => self.counts.blocks += 1,
            Outcome::Granted(Grant::ReadTs(_)) => self.counts.read_timestamps += 1,
            Outcome::Failed | Outcome::Pending => self.counts.refused += 1,
        }
        self.leaders[client] = match outcome {
            Outcome::Granted(_) => Some(asked.node),
            _ => None, // ask another member next time
        };
        asked.outcome = outcome;
        Some(self.rng.range(0, 20 * MS))
    }

    /// The checker: every grant is unique and in real-time order.
    pub fn check(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let mut granted: Vec<(&Asked, i64, i64)> = (self.asks.iter())
            .filter_map(|asked| match asked.outcome {
                Outcome::Granted(Grant::Block(block)) => Some((asked, block.lo, block.hi)),
                Outcome::Granted(Grant::ReadTs(ts)) => Some((asked, ts, ts)),
                _ => None,
            })
            .collect();
        // Unique: blocks, in order of their first number, do not overlap.
        let mut blocks: Vec<&(&Asked, i64, i64)> =
            granted.iter().filter(|(a, _, _)| matches!(a.ask, Ask::Block(_))).collect();
        blocks.sort_by_key(|(_, lo, _)| *lo);
        for pair in blocks.windows(2) {
            let ((a, _, a_hi), (b, b_lo, _)) = (pair[0], pair[1]);
            if b_lo <= a_hi && violations.len() < 10 {
                violations.push(format!("revisions handed out twice:\n    {a:?}\n    {b:?}"));
            }
        }
        // Real-time order: sweep asks by invocation, folding in every answer received before.
        granted.sort_by_key(|(a, _, _)| a.invoked);
        let mut by_completion: Vec<&(&Asked, i64, i64)> = granted.iter().collect();
        by_completion.sort_by_key(|(a, _, _)| a.completed);
        let mut done = by_completion.into_iter().peekable();
        let mut highest: Option<&(&Asked, i64, i64)> = None;
        for later in &granted {
            while let Some(earlier) = done.next_if(|e| e.0.completed < Some(later.0.invoked)) {
                if highest.is_none_or(|h| h.2 < earlier.2) {
                    highest = Some(earlier);
                }
            }
            let Some(&(earlier, _, high)) = highest else { continue };
            let (low, block) = (later.1, matches!(later.0.ask, Ask::Block(_)));
            let backwards = if block { low <= high } else { low < high };
            if backwards && violations.len() < 10 {
                violations.push(format!(
                    "the oracle answered below an earlier answer:\n    {earlier:?}\n    {:?}",
                    later.0
                ));
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use strata_core::raftstore::oracle::Block;

    use super::*;

    fn asked(invoked: Time, completed: Time, ask: Ask, grant: Grant) -> Asked {
        let outcome = Outcome::Granted(grant);
        Asked { client: 0, node: 1, ask, invoked, completed: Some(completed), outcome }
    }

    fn clients(asks: Vec<Asked>) -> OracleClients {
        OracleClients { asks, ..OracleClients::new(Rng::new(1), 1) }
    }

    #[test]
    fn the_checker_accepts_grants_in_order_and_catches_repeats_and_reversals() {
        let block = |lo, hi| (Ask::Block((hi - lo + 1) as u64), Grant::Block(Block { lo, hi }));
        let (b1, g1) = block(2, 4);
        let (b2, g2) = block(5, 5);
        let good = vec![
            asked(0, 10, b1, g1),
            asked(20, 30, Ask::ReadTs, Grant::ReadTs(4)),
            asked(25, 40, b2, g2),
            // Concurrent with the block of 5: may be below it.
            asked(26, 41, Ask::ReadTs, Grant::ReadTs(4)),
        ];
        assert!(clients(good.clone()).check().is_empty());

        let (b3, g3) = block(4, 6);
        let mut repeated = good.clone();
        repeated.push(asked(50, 60, b3, g3));
        assert!(clients(repeated).check().iter().any(|v| v.contains("handed out twice")));

        let mut reversed = good;
        reversed.push(asked(50, 60, Ask::ReadTs, Grant::ReadTs(3)));
        assert!(clients(reversed).check().iter().any(|v| v.contains("below an earlier answer")));
    }
}
