//! The watchers of a node and the live events waiting for them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::history::event_bytes;
use super::{HUB_BUFFER_BYTES_MAX, Spec, WATCHER_BUFFER_BYTES_MAX, revision_of};
use crate::pb::mvccpb::Event;

/// A watcher: the client stream it belongs to and its watch id on that stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatcherId {
    pub stream: u64,
    pub watch: i64,
}

struct Watcher {
    spec: Spec,
    /// The first revision not yet handed to the stream: everything before it was taken (or did
    /// not match).
    next: i64,
    /// Behind the published revision, with nothing buffered: catches up from storage.
    lagging: bool,
    buffer: Vec<Arc<Event>>,
    buffer_bytes: usize,
}

/// What a stream should do next for one of its watchers.
#[derive(Debug, PartialEq)]
pub enum Take {
    /// Send these events (none: nothing new). Every revision up to `through` is accounted for.
    Events { events: Vec<Arc<Event>>, through: i64 },
    /// The watcher is behind: read revisions `from..=to` from storage, send them, and report
    /// with [`Hub::caught_up`].
    CatchUp { from: i64, to: i64 },
}

/// Every watcher of a node, indexed by what it watches, and the revision published so far.
///
/// Single-key watchers are found by a hash lookup per event; range watchers are checked one by
/// one (an interval index is the next step if thousands of range watchers become common).
pub struct Hub {
    watchers: HashMap<WatcherId, Watcher>,
    by_key: HashMap<Vec<u8>, BTreeSet<WatcherId>>,
    ranged: BTreeSet<WatcherId>,
    streams: BTreeMap<u64, BTreeSet<i64>>,
    /// Every event up to this revision has been published.
    published: i64,
    buffer_bytes_max: usize,
    /// Bytes buffered for all watchers together (an event buffered for two watchers counts
    /// twice), and the most they may hold.
    buffered: usize,
    buffered_max: usize,
    /// Watchers that asked for previous versions.
    prev_kv_watchers: usize,
}

impl Hub {
    /// A hub whose events start after `published`.
    pub fn new(published: i64) -> Self {
        Self::with_buffer_limits(published, WATCHER_BUFFER_BYTES_MAX, HUB_BUFFER_BYTES_MAX)
    }

    /// A hub whose watchers buffer at most `buffer_bytes_max` each and `buffered_max` together.
    pub fn with_buffer_limits(
        published: i64,
        buffer_bytes_max: usize,
        buffered_max: usize,
    ) -> Self {
        Self {
            watchers: HashMap::new(),
            by_key: HashMap::new(),
            ranged: BTreeSet::new(),
            streams: BTreeMap::new(),
            published,
            buffer_bytes_max,
            buffered: 0,
            buffered_max,
            prev_kv_watchers: 0,
        }
    }

    pub fn published(&self) -> i64 {
        self.published
    }

    /// Whether events should be published with their previous versions.
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers > 0
    }

    pub fn contains(&self, id: WatcherId) -> bool {
        self.watchers.contains_key(&id)
    }

    /// Adds a watcher whose first event is at revision `start`. A start at or below the
    /// published revision begins by catching up from storage.
    /// What each watcher watches.
    pub fn specs(&self) -> impl Iterator<Item = &Spec> {
        self.watchers.values().map(|watcher| &watcher.spec)
    }

    pub fn add(&mut self, id: WatcherId, spec: Spec, start: i64) {
        self.remove(id);
        match spec.range_end {
            None => {
                self.by_key.entry(spec.key.clone()).or_default().insert(id);
            }
            Some(_) => {
                self.ranged.insert(id);
            }
        }
        self.prev_kv_watchers += usize::from(spec.prev_kv);
        self.streams.entry(id.stream).or_default().insert(id.watch);
        let watcher = Watcher {
            spec,
            next: start,
            lagging: start <= self.published,
            buffer: Vec::new(),
            buffer_bytes: 0,
        };
        self.watchers.insert(id, watcher);
    }

    /// Removes a watcher; false if it did not exist.
    pub fn remove(&mut self, id: WatcherId) -> bool {
        let Some(watcher) = self.watchers.remove(&id) else { return false };
        self.buffered -= watcher.buffer_bytes;
        match &watcher.spec.range_end {
            None => {
                if let Some(ids) = self.by_key.get_mut(&watcher.spec.key) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_key.remove(&watcher.spec.key);
                    }
                }
            }
            Some(_) => {
                self.ranged.remove(&id);
            }
        }
        self.prev_kv_watchers -= usize::from(watcher.spec.prev_kv);
        if let Some(watches) = self.streams.get_mut(&id.stream) {
            watches.remove(&id.watch);
            if watches.is_empty() {
                self.streams.remove(&id.stream);
            }
        }
        true
    }

    /// Removes every watcher of a stream (it closed).
    pub fn remove_stream(&mut self, stream: u64) {
        let watches = self.streams.get(&stream).cloned().unwrap_or_default();
        for watch in watches {
            self.remove(WatcherId { stream, watch });
        }
    }

    /// Publishes the events of revisions `published + 1 ..= through`, in revision order, read
    /// with their previous versions or not (`with_prev`). Returns the streams that have
    /// something new to do.
    ///
    /// A watcher that wants previous versions but is handed events read without them (it was
    /// added while they were being read) falls behind instead, and reads them from storage.
    pub fn publish(
        &mut self,
        events: &[Arc<Event>],
        through: i64,
        with_prev: bool,
    ) -> BTreeSet<u64> {
        assert!(through >= self.published, "published revisions only grow");
        let mut woken = BTreeSet::new();
        for event in events {
            let Some(kv) = &event.kv else { continue };
            let revision = kv.mod_revision;
            debug_assert!(revision > self.published && revision <= through);
            let exact = self.by_key.get(&kv.key).into_iter().flatten();
            let ranged = self.ranged.iter().filter(|id| self.watchers[id].spec.contains(&kv.key));
            let ids: Vec<WatcherId> = exact.chain(ranged).copied().collect();
            for id in ids {
                let limit = self.buffer_bytes_max;
                let watcher = self.watchers.get_mut(&id).expect("indexed watchers exist");
                if watcher.lagging || revision < watcher.next || !watcher.spec.wants(event) {
                    continue;
                }
                let bytes = event_bytes(event);
                let over_watcher =
                    !watcher.buffer.is_empty() && watcher.buffer_bytes + bytes > limit;
                let lacks_prev = watcher.spec.prev_kv && !with_prev;
                if over_watcher || lacks_prev || self.buffered + bytes > self.buffered_max {
                    // Too far behind to buffer: drop the buffer, read it back from storage
                    // later. `next` still points at the first event it has not taken.
                    self.buffered -= watcher.buffer_bytes;
                    watcher.lagging = true;
                    watcher.buffer = Vec::new();
                    watcher.buffer_bytes = 0;
                } else {
                    watcher.buffer.push(event.clone());
                    watcher.buffer_bytes += bytes;
                    self.buffered += bytes;
                }
                woken.insert(id.stream);
            }
        }
        self.published = through;
        woken
    }

    /// Publishes that every revision up to `through` happened without handing out its events
    /// (the publisher could not read them: a compaction overtook it). Every watcher that may
    /// have wanted them falls behind, and finds out from storage what it missed.
    pub fn skip_to(&mut self, through: i64) -> BTreeSet<u64> {
        let mut woken = BTreeSet::new();
        for (id, watcher) in &mut self.watchers {
            if !watcher.lagging && watcher.next <= through {
                self.buffered -= watcher.buffer_bytes;
                watcher.lagging = true;
                watcher.buffer = Vec::new();
                watcher.buffer_bytes = 0;
                woken.insert(id.stream);
            }
        }
        self.published = self.published.max(through);
        woken
    }

    /// What the stream should send next for a watcher, or `None` if it does not exist.
    pub fn take(&mut self, id: WatcherId) -> Option<Take> {
        let published = self.published;
        let watcher = self.watchers.get_mut(&id)?;
        if watcher.lagging {
            return Some(Take::CatchUp { from: watcher.next, to: published });
        }
        let events = std::mem::take(&mut watcher.buffer);
        self.buffered -= watcher.buffer_bytes;
        watcher.buffer_bytes = 0;
        watcher.next = watcher.next.max(published + 1);
        debug_assert!(events.iter().all(|e| revision_of(e) <= published));
        Some(Take::Events { events, through: published })
    }

    /// Reports that a lagging watcher has been sent everything up to `through` (read from
    /// storage). It syncs again once that reaches the published revision.
    pub fn caught_up(&mut self, id: WatcherId, through: i64) {
        let published = self.published;
        let Some(watcher) = self.watchers.get_mut(&id) else { return };
        assert!(watcher.lagging, "only a lagging watcher catches up");
        watcher.next = watcher.next.max(through + 1);
        if watcher.next > published {
            watcher.lagging = false;
        }
    }

    /// Whether a watcher is synced with nothing waiting: it has been sent every event up to the
    /// published revision.
    pub fn is_idle(&self, id: WatcherId) -> bool {
        self.watchers.get(&id).is_some_and(|w| !w.lagging && w.buffer.is_empty())
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    pub fn lagging_count(&self) -> usize {
        self.watchers.values().filter(|w| w.lagging).count()
    }

    /// Bytes of events buffered for all watchers.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// The most bytes buffered for any one watcher.
    pub fn largest_buffer_bytes(&self) -> usize {
        self.watchers.values().map(|w| w.buffer_bytes).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::KeyValue;
    use crate::pb::mvccpb::event::EventType;

    fn put(key: &str, revision: i64, value_len: usize) -> Arc<Event> {
        Arc::new(Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: revision,
                value: vec![b'x'; value_len],
                ..Default::default()
            }),
            prev_kv: None,
        })
    }

    fn single(key: &str) -> Spec {
        Spec { key: key.as_bytes().to_vec(), ..Default::default() }
    }

    fn revisions(take: Option<Take>) -> Vec<i64> {
        match take {
            Some(Take::Events { events, .. }) => events.iter().map(|e| revision_of(e)).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    const A: WatcherId = WatcherId { stream: 1, watch: 0 };
    const B: WatcherId = WatcherId { stream: 2, watch: 0 };

    #[test]
    fn synced_watchers_get_matching_events_once() {
        let mut hub = Hub::new(5);
        hub.add(A, single("a"), 6);
        let prefix =
            Spec { key: b"a".to_vec(), range_end: Some(b"b".to_vec()), ..Default::default() };
        hub.add(B, prefix, 6);
        let woken = hub.publish(&[put("a", 6, 1), put("ab", 7, 1), put("c", 8, 1)], 8, true);
        assert_eq!(woken, BTreeSet::from([1, 2]));
        assert_eq!(revisions(hub.take(A)), vec![6]);
        assert_eq!(revisions(hub.take(B)), vec![6, 7]);
        assert_eq!(revisions(hub.take(A)), Vec::<i64>::new(), "nothing twice");
        assert!(hub.is_idle(A));
    }

    #[test]
    fn a_start_in_the_past_catches_up_then_syncs() {
        let mut hub = Hub::new(10);
        hub.add(A, single("a"), 4);
        assert_eq!(hub.take(A), Some(Take::CatchUp { from: 4, to: 10 }));
        // Published while the watcher reads storage: not buffered, read next time.
        hub.publish(&[put("a", 11, 1)], 11, true);
        hub.caught_up(A, 10);
        assert_eq!(hub.take(A), Some(Take::CatchUp { from: 11, to: 11 }));
        hub.caught_up(A, 11);
        hub.publish(&[put("a", 12, 1)], 12, true);
        assert_eq!(revisions(hub.take(A)), vec![12]);
    }

    #[test]
    fn a_future_start_skips_earlier_events() {
        let mut hub = Hub::new(3);
        hub.add(A, single("a"), 6);
        hub.publish(&[put("a", 4, 1), put("a", 6, 1)], 6, true);
        assert_eq!(revisions(hub.take(A)), vec![6]);
    }

    #[test]
    fn a_full_buffer_turns_the_watcher_lagging_and_frees_it() {
        let mut hub = Hub::with_buffer_limits(1, 1000, usize::MAX);
        hub.add(A, single("a"), 2);
        hub.add(B, single("a"), 2);
        hub.publish(&[put("a", 2, 400), put("a", 3, 400)], 3, true);
        assert_eq!(revisions(hub.take(B)), vec![2, 3], "B keeps up");
        hub.publish(&[put("a", 4, 400)], 4, true);
        assert_eq!(hub.lagging_count(), 1);
        assert_eq!(hub.largest_buffer_bytes(), event_bytes(&put("a", 4, 400)));
        assert_eq!(revisions(hub.take(B)), vec![4]);
        // A resumes from its first untaken event, from storage.
        assert_eq!(hub.take(A), Some(Take::CatchUp { from: 2, to: 4 }));
        assert_eq!(hub.buffered_bytes(), 0);
    }

    #[test]
    fn the_hub_wide_limit_sends_the_overflowing_watcher_to_storage() {
        let mut hub = Hub::with_buffer_limits(1, 1000, 1000);
        hub.add(A, single("a"), 2);
        hub.add(B, single("b"), 2);
        hub.publish(&[put("a", 2, 600)], 2, true);
        hub.publish(&[put("b", 3, 600)], 3, true);
        assert_eq!(hub.lagging_count(), 1, "B would take the hub past its limit");
        assert_eq!(hub.take(B), Some(Take::CatchUp { from: 2, to: 3 }));
        assert_eq!(revisions(hub.take(A)), vec![2]);
        assert_eq!(hub.buffered_bytes(), 0);
    }

    #[test]
    fn events_read_without_previous_versions_send_a_prev_kv_watcher_to_storage() {
        // Added while the publisher read revision 2 without previous versions.
        let mut hub = Hub::new(1);
        hub.add(A, Spec { prev_kv: true, ..single("a") }, 2);
        hub.add(B, single("a"), 2);
        hub.publish(&[put("a", 2, 1)], 2, false);
        assert_eq!(hub.take(A), Some(Take::CatchUp { from: 2, to: 2 }));
        assert_eq!(revisions(hub.take(B)), vec![2]);
    }

    #[test]
    fn skipped_revisions_send_synced_watchers_to_storage() {
        let mut hub = Hub::new(1);
        hub.add(A, single("a"), 2);
        hub.skip_to(9);
        assert_eq!(hub.take(A), Some(Take::CatchUp { from: 2, to: 9 }));
    }

    /// Random interleavings of publishing, taking, partial catch-ups from a model store, tight
    /// buffer limits and late-starting watchers: every watcher must end up with exactly the
    /// events it asked for, in order, each once.
    #[test]
    fn random_interleavings_deliver_every_event_once_in_order() {
        use crate::rng::Rng;
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let keys: [&str; 3] = ["a", "b", "c"];
            let mut store: Vec<Arc<Event>> = Vec::new(); // every event, in revision order
            let mut hub = Hub::with_buffer_limits(1, 200, 600);
            let mut specs: Vec<(WatcherId, Spec, i64)> = Vec::new();
            let mut delivered: BTreeMap<WatcherId, Vec<i64>> = BTreeMap::new();
            let mut revision = 1;
            let drain = |hub: &mut Hub,
                         store: &[Arc<Event>],
                         specs: &[(WatcherId, Spec, i64)],
                         id: WatcherId,
                         rng: &mut Rng,
                         out: &mut Vec<i64>| {
                match hub.take(id).unwrap() {
                    Take::Events { events, .. } => {
                        out.extend(events.iter().map(|e| revision_of(e)))
                    }
                    Take::CatchUp { from, to } => {
                        // Read part of the way, as a chunked storage read would.
                        let through = if rng.chance(0.5) {
                            to
                        } else {
                            rng.range(from as u64, to as u64 + 1) as i64
                        };
                        let spec = &specs.iter().find(|s| s.0 == id).unwrap().1;
                        let wanted = |e: &&Arc<Event>| {
                            (from..=through).contains(&revision_of(e))
                                && spec.contains(&e.kv.as_ref().unwrap().key)
                                && spec.wants(e)
                        };
                        out.extend(store.iter().filter(wanted).map(|e| revision_of(e)));
                        hub.caught_up(id, through);
                    }
                }
            };
            for step in 0..300 {
                match rng.range(0, 10) {
                    0..=3 => {
                        let mut batch = Vec::new();
                        for _ in 0..rng.range(1, 4) {
                            revision += 1;
                            let event =
                                put(rng.pick::<&str>(&keys), revision, rng.range(1, 150) as usize);
                            store.push(event.clone());
                            batch.push(event);
                        }
                        hub.publish(&batch, revision, true);
                    }
                    4 if specs.len() < 6 => {
                        let id = WatcherId { stream: step, watch: 0 };
                        let spec = if rng.chance(0.5) {
                            single(rng.pick::<&str>(&keys))
                        } else {
                            Spec {
                                key: b"a".to_vec(),
                                range_end: Some(b"c".to_vec()),
                                ..Default::default()
                            }
                        };
                        let start = rng.range(1, revision as u64 + 2) as i64;
                        hub.add(id, spec.clone(), start);
                        specs.push((id, spec, start));
                    }
                    _ if !specs.is_empty() => {
                        let id = specs[rng.range(0, specs.len() as u64) as usize].0;
                        drain(
                            &mut hub,
                            &store,
                            &specs,
                            id,
                            &mut rng,
                            delivered.entry(id).or_default(),
                        );
                    }
                    _ => {}
                }
            }
            for (id, spec, start) in &specs {
                let out = delivered.entry(*id).or_default();
                while !hub.is_idle(*id) {
                    drain(&mut hub, &store, &specs, *id, &mut rng, out);
                }
                drain(&mut hub, &store, &specs, *id, &mut rng, out);
                let expected: Vec<i64> = store
                    .iter()
                    .filter(|e| {
                        revision_of(e) >= *start && spec.contains(&e.kv.as_ref().unwrap().key)
                    })
                    .map(|e| revision_of(e))
                    .collect();
                assert_eq!(out, &expected, "seed {seed}, watcher {id:?} from {start}");
            }
            assert_eq!(hub.buffered_bytes(), 0, "seed {seed}");
        }
    }

    #[test]
    fn removing_a_stream_removes_its_watchers() {
        let mut hub = Hub::new(1);
        hub.add(A, Spec { prev_kv: true, ..single("a") }, 2);
        hub.add(WatcherId { stream: 1, watch: 1 }, single("b"), 2);
        hub.add(B, single("a"), 2);
        assert!(hub.wants_prev_kv());
        hub.remove_stream(1);
        assert_eq!(hub.watcher_count(), 1);
        assert!(!hub.wants_prev_kv());
        assert_eq!(hub.publish(&[put("b", 2, 1)], 2, true), BTreeSet::new());
    }
}
