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
    /// The ranges' generation the groups were planned for (`SharedRanges::generation`).
    generation: u64,
    /// Groups whose ranges do not hold every key their watchers watch, on this node now (a
    /// lagging node that took a split range's snapshot before the new range's): they wait.
    uncovered: BTreeSet<Group>,
}

impl Default for Hubs {
    fn default() -> Self {
        Self::with_buffer_limits(WATCHER_BUFFER_BYTES_MAX, HUB_BUFFER_BYTES_MAX)
    }
}

impl Hubs {
    pub fn with_buffer_limits(buffer_bytes_max: usize, buffered_max: usize) -> Self {
        Self {
            hubs: BTreeMap::new(),
            groups: HashMap::new(),
            buffer_bytes_max,
            buffered_max,
            generation: 0,
            uncovered: BTreeSet::new(),
        }
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
        // Planned with the groups for the same ranges: a split between the two would make a
        // group here that an older hub grows into later.
        let group = loop {
            self.follow_ranges(ranges);
            let group = Self::group_of(&spec, ranges);
            if ranges.generation() == self.generation {
                break group;
            }
        };
        if !Self::covers(&group, &spec, ranges) {
            self.uncovered.insert(group.clone());
        }
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

    /// Plans the groups again once the node's ranges changed (a split, a replica created or
    /// given its span): a group grows by every range its watchers' keys lie in now, keeping its
    /// hub and what that published. The new range of a split starts at its parent's revision,
    /// so the group's frontier never falls below what was published (and `add` takes the
    /// greater anyway). Groups only grow: a range a group no longer needs merely holds it back.
    pub fn follow_ranges(&mut self, ranges: &SharedRanges) {
        let generation = ranges.generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let mut grown = Vec::new();
        for (group, hub) in &self.hubs {
            let mut ids: BTreeSet<RangeId> = group.iter().copied().collect();
            for spec in hub.specs() {
                ids.extend(Self::group_of(spec, ranges));
            }
            if ids.len() > group.len() {
                grown.push((group.clone(), ids.into_iter().collect::<Group>()));
            }
        }
        for (old, new) in grown {
            // Two groups never grow into one while ranges only split: a range new to a group
            // is new to the node, or the group's watchers would have had it from the start.
            if self.hubs.contains_key(&new) {
                debug_assert!(false, "watch groups {old:?} and {new:?} met");
                continue;
            }
            let hub = self.hubs.remove(&old).expect("a planned group's hub");
            for group in self.groups.values_mut().filter(|group| **group == old) {
                group.clone_from(&new);
            }
            self.hubs.insert(new, hub);
        }
        self.uncovered.clear();
        for (group, hub) in &self.hubs {
            if !hub.specs().all(|spec| Self::covers(group, spec, ranges)) {
                self.uncovered.insert(group.clone());
            }
        }
    }

    /// Whether the ranges of `group` this node holds hold every key `spec` watches.
    fn covers(group: &Group, spec: &Spec, ranges: &SharedRanges) -> bool {
        let mut spans: Vec<(Vec<u8>, Vec<u8>)> = (group.iter().filter_map(|id| ranges.get(*id)))
            .map(|shared| shared.descriptor.read().expect("descriptor lock").clone())
            .filter(|descriptor| descriptor.epoch.is_some())
            .map(|descriptor| (descriptor.start_key, descriptor.end_key))
            .collect();
        spans.sort();
        let mut from = spec.key.clone();
        for (start, end) in spans {
            if start > from {
                break;
            }
            if end.is_empty() {
                return true;
            }
            if end > from {
                from = end;
            }
        }
        match &spec.range_end {
            None => from > spec.key,
            Some(end) if end.is_empty() => false,
            Some(end) => from >= *end,
        }
    }

    /// Whether a group must wait until this node's ranges hold all of its keys.
    pub fn waits(&self, group: &Group) -> bool {
        self.uncovered.contains(group)
    }

    /// Removes a watcher; false if it did not exist.
    pub fn remove(&mut self, id: WatcherId) -> bool {
        let Some(group) = self.groups.remove(&id) else { return false };
        let hub = self.hubs.get_mut(&group).expect("a watcher's hub exists");
        hub.remove(id);
        if hub.watcher_count() == 0 {
            self.hubs.remove(&group);
            self.uncovered.remove(&group);
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
