//! The revision oracle: one counter, kept by the meta range's leader, that hands out the
//! cluster's revisions — blocks of them to range leaders, which stamp their writes with them,
//! and read timestamps to readers. The rules it follows, and why each is needed, are in
//! `docs/design/revisions.md`; the rule numbers below are that note's.
//!
//! This is the pure part: what to hand out and when the ceiling must rise. The driver around
//! it answers only after a quorum check issued after the requests arrived (rule 2), and
//! proposes the ceilings it asks for through the meta range's log (rule 1).

/// How far ahead of what it hands out the oracle reserves numbers through the meta range's
/// log: after a failover of the meta leader, at most this many numbers are skipped.
pub const WINDOW: i64 = 100_000;

/// A block of revisions `[lo, hi]` handed to a range leader for one round of writes.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Block {
    #[prost(int64, tag = "1")]
    pub lo: i64,
    #[prost(int64, tag = "2")]
    pub hi: i64,
}

/// The oracle of one meta leader, for one term: created when the node becomes the meta
/// range's leader and has applied an entry of its term, dropped when it stops leading.
#[derive(Debug)]
pub struct Oracle {
    /// The next number to hand out.
    next: i64,
    /// The highest ceiling the meta range has applied: nothing above it is handed out.
    ceiling: i64,
    /// A ceiling proposed and not yet applied.
    proposed: Option<i64>,
    /// The highest read timestamp handed out.
    max_read_issued: i64,
    window: i64,
}

impl Oracle {
    /// The oracle of a new meta leader that has applied everything committed before its term:
    /// `ceiling` is the highest ceiling applied (0 if none ever was), `revision` the highest
    /// revision the meta range itself applied. Every number an earlier leader handed out is at
    /// most the ceiling, so the first one handed out now is above all of them (rule 1).
    pub fn start(ceiling: i64, revision: i64, window: i64) -> Self {
        assert!(window > 1, "a window holds more than one number");
        let next = ceiling.max(revision) + 1;
        Self { next, ceiling, proposed: None, max_read_issued: next - 1, window }
    }

    /// A ceiling to propose through the meta range's log, when less than half a window is left
    /// below the highest one applied or proposed.
    pub fn ceiling_to_propose(&mut self) -> Option<i64> {
        let highest = self.proposed.unwrap_or(self.ceiling).max(self.ceiling);
        if highest - self.next >= self.window / 2 {
            return None;
        }
        let ceiling = self.next + self.window;
        self.proposed = Some(ceiling);
        Some(ceiling)
    }

    /// A ceiling was applied by the meta range (this leader's or an earlier one's).
    pub fn applied_ceiling(&mut self, ceiling: i64) {
        self.ceiling = self.ceiling.max(ceiling);
        if self.proposed.is_some_and(|proposed| proposed <= self.ceiling) {
            self.proposed = None;
        }
    }

    /// A proposed ceiling may have been lost (a dropped proposal): propose again.
    pub fn forget_proposal(&mut self) {
        self.proposed = None;
    }

    /// `count` consecutive revisions, if the applied ceiling covers them; `None` means wait for
    /// the next ceiling to be applied.
    pub fn block(&mut self, count: u64) -> Option<Block> {
        assert!(count > 0, "a block of no revisions");
        let hi = self.next.checked_add(count as i64 - 1)?;
        if hi > self.ceiling {
            return None;
        }
        let block = Block { lo: self.next, hi };
        self.next = hi + 1;
        Some(block)
    }

    /// The timestamp a read takes: every number handed out so far (rule 4).
    pub fn read_ts(&mut self) -> i64 {
        let ts = self.next - 1;
        self.max_read_issued = self.max_read_issued.max(ts);
        ts
    }

    /// A range leader hands back the unused end of a block whose entries have all applied:
    /// `next` goes back to `last_used + 1` only if nothing was handed out since the block and no
    /// read saw a number above `last_used` (rule 6). Says whether it went back.
    pub fn hand_back(&mut self, block: Block, last_used: i64) -> bool {
        let rewind = self.next == block.hi + 1
            && self.max_read_issued <= last_used
            && (block.lo - 1..block.hi).contains(&last_used);
        if rewind {
            self.next = last_used + 1;
        }
        rewind
    }

    /// The next number to hand out.
    pub fn next(&self) -> i64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(ceiling: i64, revision: i64) -> Oracle {
        let mut oracle = Oracle::start(ceiling, revision, 10);
        if let Some(ceiling) = oracle.ceiling_to_propose() {
            oracle.applied_ceiling(ceiling);
        }
        oracle
    }

    #[test]
    fn a_new_leader_starts_above_every_number_its_predecessors_could_hand_out() {
        // The old leader applied ceiling 40: whatever it handed out is at most 40.
        let mut oracle = Oracle::start(40, 12, 10);
        assert_eq!(oracle.block(1), None, "nothing before a ceiling above 40 is applied");
        let ceiling = oracle.ceiling_to_propose().expect("a ceiling to propose");
        assert_eq!(ceiling, 51);
        oracle.applied_ceiling(ceiling);
        assert_eq!(oracle.block(3), Some(Block { lo: 41, hi: 43 }));
        // A store from before the oracle: no ceiling, the meta range's own revision.
        assert_eq!(started(0, 7).block(1), Some(Block { lo: 8, hi: 8 }));
    }

    #[test]
    fn blocks_never_pass_the_applied_ceiling_and_the_ceiling_rises_ahead() {
        let mut oracle = started(0, 1); // next 2, ceiling 12
        assert_eq!(oracle.block(4), Some(Block { lo: 2, hi: 5 }));
        assert_eq!(oracle.ceiling_to_propose(), None, "7 of 10 left");
        assert_eq!(oracle.block(2), Some(Block { lo: 6, hi: 7 }));
        let ceiling = oracle.ceiling_to_propose().expect("under half a window left");
        assert_eq!(oracle.ceiling_to_propose(), None, "one proposal at a time");
        assert_eq!(oracle.block(6), None, "13 would pass the applied ceiling 12");
        oracle.applied_ceiling(ceiling);
        assert_eq!(oracle.block(6), Some(Block { lo: 8, hi: 13 }));
        oracle.forget_proposal();
        assert!(oracle.ceiling_to_propose().is_some(), "a lost proposal is made again");
    }

    #[test]
    fn numbers_handed_out_are_unique_and_increasing() {
        let mut oracle = started(0, 1);
        let mut last = 1;
        for count in [1, 3, 2, 5, 1, 4, 2, 2, 1] {
            if oracle.block(count).is_none() {
                let ceiling = oracle.ceiling_to_propose().unwrap_or(oracle.next() + 10);
                oracle.applied_ceiling(ceiling);
            }
            let ts = oracle.read_ts();
            assert_eq!(ts, oracle.next() - 1);
            assert!(ts >= last);
            last = ts;
        }
    }

    #[test]
    fn a_block_is_handed_back_only_if_nobody_took_or_saw_a_number_since() {
        let mut oracle = started(0, 1);
        let block = oracle.block(3).unwrap(); // 2..=4
        assert!(oracle.hand_back(block, 2), "3 and 4 unused");
        assert_eq!(oracle.block(1), Some(Block { lo: 3, hi: 3 }));

        let block = oracle.block(2).unwrap(); // 4..=5
        let _ = oracle.block(1).unwrap(); // 6: handed out since
        assert!(!oracle.hand_back(block, 4));

        let block = oracle.block(2).unwrap(); // 7..=8
        assert_eq!(oracle.read_ts(), 8);
        assert!(!oracle.hand_back(block, 7), "a read saw 8");

        let block = oracle.block(2).unwrap(); // 9..=10
        assert!(oracle.hand_back(block, 8), "nothing of it used");
        assert_eq!(oracle.next(), 9);
        assert!(!oracle.hand_back(Block { lo: 9, hi: 10 }, 12), "not a number of the block");
    }
}
