//! Closed revisions: how a node learns that it holds every event up to some revision in every
//! range it holds, so that its watchers can be given events across ranges in revision order,
//! each exactly once (`docs/sharding.md`, "Watches across ranges").
//!
//! In a range taking its revisions from the oracle, revisions grow along the range's log: a
//! replica that applied an entry at revision r holds every event of its range at or below r.
//! But an idle range's applied revision stays where it is while other ranges move on, and a
//! watcher of both must not be given their events until it is known that the idle range will
//! have none below them. A **close round** proves that: it takes a read timestamp T from the
//! oracle and runs a ReadIndex at T in every range the node holds. A range's leader answering
//! it raises its highest answered read timestamp to T, so it stamps no write at or below T from
//! then on, and names its last log index, below which every entry stamped at or below T lies.
//! Once the local replica has applied that index it holds every event of its range at or below
//! T: T is its **closed revision** (`RangeShared::closed`). The node's **frontier** is the
//! least closed revision over its ranges (`SharedRanges::watermarks`); its watch feeder
//! publishes events up to the frontier only.
//!
//! A round starts when some range has applied beyond the least closed revision and none is
//! under way — at once while the node has watchers, at most once a tick otherwise (a watch
//! from "now" then starts at most about a tick in the past) — so an idle cluster sends nothing,
//! and under load one round follows the other, each costing one ask of the oracle and one
//! ReadIndex per range. A cluster of one range needs none: its frontier is its revision.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::desk::Ask;
use super::driver::Driver;
use super::revisions::{ASK_RETRY_TICKS, Purpose};
use crate::RangeId;

/// A close round not finished after this many ticks is given up (a ReadIndex lost to a leader
/// change, an ask of a meta leader that went away); the next starts when events wait.
const GIVE_UP_TICKS: u64 = 2 * ASK_RETRY_TICKS;

/// The close round under way, if any.
#[derive(Default)]
pub(super) struct Closing {
    round: Option<CloseRound>,
    /// The tick the last round started.
    last_started: u64,
}

struct CloseRound {
    started_tick: u64,
    /// The read timestamp, once the oracle gave one (0 until then).
    ts: i64,
    /// The ReadIndex requests at it still waiting, by read id.
    waiting: BTreeMap<u64, RangeId>,
}

impl<T: Ord + Copy, P, R, K, O> Driver<T, P, R, K, O> {
    /// At the start of a round: starts a close round if none is under way and some range of
    /// this node has applied events beyond the node's frontier.
    pub(super) fn start_closing(&mut self) {
        // Called every round: a node of one range (every cluster before ranges) stops here,
        // before anything is allocated.
        if self.node.replicas.len() < 2 {
            return;
        }
        if let Some(round) = &self.closing.round {
            if self.ticks - round.started_tick < GIVE_UP_TICKS {
                return;
            }
            self.closing.round = None;
        }
        if self.closing.last_started == self.ticks && !self.node.shared_ranges.watched() {
            return;
        }
        let ranges = self.oracle_ranges();
        if ranges.len() < 2 {
            return;
        }
        let closed: Vec<i64> = (ranges.iter())
            .filter_map(|range_id| self.node.shared(*range_id))
            .map(|shared| shared.closed_revision())
            .collect();
        let (least, most) = (closed.iter().min(), closed.iter().max());
        if least >= most {
            return;
        }
        let started_tick = self.ticks;
        self.closing.last_started = started_tick;
        self.closing.round = Some(CloseRound { started_tick, ts: 0, waiting: BTreeMap::new() });
        self.ask(Ask::ReadTs, Purpose::Close);
    }

    /// The oracle gave the close round its read timestamp: a ReadIndex at it in every range.
    pub(super) fn close_at(&mut self, ts: i64) {
        let ranges = self.oracle_ranges();
        let ids: Vec<u64> = ranges.iter().map(|_| self.take_id()).collect();
        // A round given up since has nothing to do; one with a timestamp already keeps it.
        let Some(round) = self.closing.round.as_mut().filter(|r| r.ts == 0) else { return };
        round.ts = ts;
        if self.node.config().mutation == super::Mutation::CloseWithoutReadIndex {
            for shared in ranges.iter().filter_map(|range_id| self.node.shared(*range_id)) {
                shared.closed.fetch_max(ts, Ordering::AcqRel);
            }
            self.closing.round = None;
            return;
        }
        for (id, range_id) in ids.into_iter().zip(ranges) {
            round.waiting.insert(id, range_id);
            self.node.read_index_at(range_id, id, Some(ts));
        }
    }

    /// The close round's ask of the oracle was given up: the next round starts afresh.
    pub(super) fn close_given_up(&mut self) {
        self.closing.round = None;
    }

    /// A ReadIndex request was released: if it was the close round's, its range is closed at
    /// the round's timestamp (its replica has applied what the leader named). True if it was.
    pub(super) fn closed(&mut self, read_id: u64) -> bool {
        let Some(round) = self.closing.round.as_mut() else { return false };
        let Some(range_id) = round.waiting.remove(&read_id) else { return false };
        if let Some(shared) = self.node.shared(range_id) {
            shared.closed.fetch_max(round.ts, Ordering::AcqRel);
        }
        if round.waiting.is_empty() {
            self.closing.round = None;
        }
        true
    }

    /// The ranges this node holds that take their revisions from the oracle.
    fn oracle_ranges(&self) -> Vec<RangeId> {
        let node = &self.node;
        let ranges = node.range_ids().into_iter();
        ranges.filter(|r| node.descriptor(*r).is_some_and(|d| d.oracle_revisions)).collect()
    }
}
