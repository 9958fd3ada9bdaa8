//! A node's watchers, grouped by the ranges their keys lie in: one [`Hub`] per group, each
//! published up to a frontier of its own — the least closed revision over the group's ranges
//! (see `raftstore::closing`). So a range whose closed revision stalls (its leader lost, its
//! quorum gone) holds back only the watchers whose keys lie in it; a watcher of keys in one
//! range follows that range alone.
//!
//! A node holding one range has one group. A group's hub exists while it has watchers; one
//! created later starts at the group's frontier then, and its watchers read anything older from
//! storage. The feeder reads each group's events for it (`feed::publish_applied`): an event is
//! read once per group that wants it, which is cheap while groups are few (an interval index of
//! range feeds is the step for many ranges).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{HUB_BUFFER_BYTES_MAX, Hub, Spec, Take, WATCHER_BUFFER_BYTES_MAX, WatcherId};
use crate::RangeId;
use crate::pb::mvccpb::Event;
use crate::raftstore::SharedRanges;

/// The ranges of a group, in id order.
pub type Group = Vec<RangeId>;

pub struct Hubs {
    hubs: BTreeMap<Group, Hub>,
    groups: HashMap<WatcherId, Group>,
    /// Each hub's limits: per watcher, and for all of its watchers together.
    buffer_bytes_max: usize,
    buffered_max: usize,
}

impl Default for Hubs {
    fn default() -> Self {
        Self::with_buffer_limits(WATCHER_BUFFER_BYTES_MAX, HUB_BUFFER_BYTES_MAX)
    }
}

impl Hubs {
    pub fn with_buffer_limits(buffer_bytes_max: usize, buffered_max: usize) -> Self {
        Self { hubs: BTreeMap::new(), groups: HashMap::new(), buffer_bytes_max, buffered_max }
    }

    /// The group of a watcher of `spec` on a node holding `ranges`: the ranges its keys lie in.
    pub fn group_of(spec: &Spec, ranges: &SharedRanges) -> Group {
        let end: &[u8] = match &spec.range_end {
            None => &[],
            Some(end) if end.is_empty() => &[0],
            Some(end) => end,
        };
        let mut group: Group =
            ranges.overlapping(&spec.key, end).iter().map(|(id, _)| *id).collect();
        group.sort_unstable();
        group
    }

    /// The revision through which the node holds every event of a group's ranges (the node's
    /// frontier for a group of ranges it does not hold).
    pub fn frontier_of(group: &Group, ranges: &SharedRanges) -> i64 {
        let closed = group.iter().filter_map(|id| ranges.get(*id)).map(|r| r.closed_revision());
        closed.min().unwrap_or_else(|| ranges.watermarks().frontier)
    }

    /// Adds a watcher whose first event is at `start`, or (`None`) the first after its group's
    /// frontier. Returns the frontier: the revision the watcher starts from.
    pub fn add(
        &mut self,
        id: WatcherId,
        spec: Spec,
        start: Option<i64>,
        ranges: &SharedRanges,
    ) -> i64 {
        self.remove(id);
        let group = Self::group_of(&spec, ranges);
        let frontier = Self::frontier_of(&group, ranges);
        let (buffer_bytes_max, buffered_max) = (self.buffer_bytes_max, self.buffered_max);
        let hub = (self.hubs.entry(group.clone()))
            .or_insert_with(|| Hub::with_buffer_limits(frontier, buffer_bytes_max, buffered_max));
        // A frontier may fall back below what the group was given (a transaction across ranges
        // locked one of its ranges since): "now" is never before what was given.
        let frontier = frontier.max(hub.published());
        hub.add(id, spec, start.unwrap_or(frontier + 1));
        self.groups.insert(id, group);
        frontier
    }

    /// Removes a watcher; false if it did not exist.
    pub fn remove(&mut self, id: WatcherId) -> bool {
        let Some(group) = self.groups.remove(&id) else { return false };
        let hub = self.hubs.get_mut(&group).expect("a watcher's hub exists");
        hub.remove(id);
        if hub.watcher_count() == 0 {
            self.hubs.remove(&group);
        }
        true
    }

    /// Removes every watcher of a stream (it closed).
    pub fn remove_stream(&mut self, stream: u64) {
        let ids: Vec<WatcherId> =
            self.groups.keys().filter(|id| id.stream == stream).copied().collect();
        for id in ids {
            self.remove(id);
        }
    }

    pub fn contains(&self, id: WatcherId) -> bool {
        self.groups.contains_key(&id)
    }

    /// The groups with watchers: what the feeder reads for.
    pub fn groups(&self) -> Vec<Group> {
        self.hubs.keys().cloned().collect()
    }

    /// The revision a group's hub has published through, and whether any of its watchers wants
    /// previous versions; `None` once it has no watchers.
    pub fn state(&self, group: &Group) -> Option<(i64, bool)> {
        self.hubs.get(group).map(|hub| (hub.published(), hub.wants_prev_kv()))
    }

    /// Publishes a group's events of revisions `after + 1 ..= through` (see [`Hub::publish`]),
    /// unless its hub has moved on from `after` meanwhile (its watchers left, and a new hub
    /// started later): then nothing.
    pub fn publish(
        &mut self,
        group: &Group,
        after: i64,
        events: &[Arc<Event>],
        through: i64,
        with_prev: bool,
    ) -> BTreeSet<u64> {
        match self.hubs.get_mut(group) {
            Some(hub) if hub.published() == after => hub.publish(events, through, with_prev),
            _ => BTreeSet::new(),
        }
    }

    /// As [`Hub::skip_to`], for a group's hub still at `after`.
    pub fn skip_to(&mut self, group: &Group, after: i64, through: i64) -> BTreeSet<u64> {
        match self.hubs.get_mut(group) {
            Some(hub) if hub.published() == after => hub.skip_to(through),
            _ => BTreeSet::new(),
        }
    }

    fn hub_of(&self, id: WatcherId) -> Option<&Hub> {
        self.hubs.get(self.groups.get(&id)?)
    }

    fn hub_of_mut(&mut self, id: WatcherId) -> Option<&mut Hub> {
        self.hubs.get_mut(self.groups.get(&id)?)
    }

    /// See [`Hub::take`].
    pub fn take(&mut self, id: WatcherId) -> Option<Take> {
        self.hub_of_mut(id)?.take(id)
    }

    /// See [`Hub::caught_up`].
    pub fn caught_up(&mut self, id: WatcherId, through: i64) {
        if let Some(hub) = self.hub_of_mut(id) {
            hub.caught_up(id, through);
        }
    }

    /// See [`Hub::is_idle`].
    pub fn is_idle(&self, id: WatcherId) -> bool {
        self.hub_of(id).is_some_and(|hub| hub.is_idle(id))
    }

    /// The revision a watcher's hub has published through.
    pub fn published(&self, id: WatcherId) -> Option<i64> {
        self.hub_of(id).map(Hub::published)
    }

    pub fn watcher_count(&self) -> usize {
        self.groups.len()
    }

    pub fn lagging_count(&self) -> usize {
        self.hubs.values().map(Hub::lagging_count).sum()
    }

    /// Bytes of events buffered for all watchers.
    pub fn buffered_bytes(&self) -> usize {
        self.hubs.values().map(Hub::buffered_bytes).sum()
    }

    /// The most bytes buffered for any one watcher.
    pub fn largest_buffer_bytes(&self) -> usize {
        self.hubs.values().map(Hub::largest_buffer_bytes).max().unwrap_or(0)
    }
}
