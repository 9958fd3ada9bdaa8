//! Watches under faults: each simulated node runs the production watch [`Hub`], fed from what
//! it applied exactly as the server's feeder feeds it, and simulated watch clients follow the
//! store through it — taking events late (so their buffers overflow and they catch up from the
//! change index), and reconnecting to another node, from the revision after the last event they
//! saw, whenever their node crashes.
//!
//! The checker: at the end, every watcher must have seen exactly the events the converged store
//! holds for what it watches, from its start revision on — in order, without gaps and without
//! duplicates, across crashes, restarts, partitions, pauses and snapshot installs.

use std::sync::Mutex;

use strata_core::Result;
use strata_core::pb::mvccpb::Event;
use strata_core::raftstore::{SharedRanges, Watermarks};
use strata_core::rng::Rng;
use strata_core::watch::{Hubs, Spec, Take, WatcherId, feed, history};
use strata_storage::Engine;

/// Small limits, so that buffers overflow and catch-ups run in short simulations.
const WATCHER_BUFFER_BYTES: usize = 300;
const HUB_BUFFER_BYTES: usize = 2_000;
const READ_BYTES: usize = 400;

/// An event as a watcher saw it: key, revision, type, version.
type Seen = (Vec<u8>, i64, i32, i64);

fn seen(event: &Event) -> Seen {
    let kv = event.kv.clone().unwrap_or_default();
    (kv.key, kv.mod_revision, event.r#type, kv.version)
}

struct Client {
    id: WatcherId,
    spec: Spec,
    start: i64,
    /// The node it is connected to.
    node: Option<u64>,
    seen: Vec<Seen>,
}

impl Client {
    /// Where to resume: the revision after the last event seen.
    fn next(&self) -> i64 {
        self.seen.last().map_or(self.start, |e| e.1 + 1)
    }
}

pub struct Watchers {
    rng: Rng,
    /// Each node's hubs, while its process runs (index: node id - 1); in a mutex, as the
    /// server's watch tasks share it.
    hubs: Vec<Option<Mutex<Hubs>>>,
    clients: Vec<Client>,
    pub reconnects: usize,
}

impl Watchers {
    pub fn new(rng: Rng, nodes: u64, keys: &[String]) -> Self {
        let prefix =
            Spec { key: b"k".to_vec(), range_end: Some(b"l".to_vec()), ..Default::default() };
        let single = Spec { key: keys[0].as_bytes().to_vec(), ..Default::default() };
        let no_puts = Spec { no_put: true, ..prefix.clone() };
        let mut specs = vec![(prefix, 1), (single, 1), (no_puts, 5)];
        if keys.iter().any(|k| !k.starts_with('k')) {
            // Keys in a second range: watchers of it alone, and of every key (across ranges).
            let others =
                Spec { key: b"x".to_vec(), range_end: Some(b"y".to_vec()), ..Default::default() };
            let every = Spec { key: vec![0], range_end: Some(Vec::new()), ..Default::default() };
            specs.extend([(others, 1), (every, 3)]);
        }
        let clients = specs
            .into_iter()
            .enumerate()
            .map(|(i, (spec, start))| Client {
                id: WatcherId { stream: i as u64, watch: 0 },
                spec,
                start,
                node: None,
                seen: Vec::new(),
            })
            .collect();
        Self { rng, hubs: (0..nodes).map(|_| None).collect(), clients, reconnects: 0 }
    }

    /// Node `id`'s process started: fresh hubs.
    pub fn node_started(&mut self, id: u64) {
        let hubs = Hubs::with_buffer_limits(WATCHER_BUFFER_BYTES, HUB_BUFFER_BYTES);
        self.hubs[id as usize - 1] = Some(Mutex::new(hubs));
    }

    /// Node `id`'s process is gone, and with it its hub: its watchers must reconnect.
    pub fn node_stopped(&mut self, id: u64) {
        self.hubs[id as usize - 1] = None;
        for client in &mut self.clients {
            if client.node == Some(id) {
                client.node = None;
            }
        }
    }

    /// After a round on node `id`: publishes what it applied, connects watchers that lost their
    /// node (sometimes), and lets its watchers take what is ready (sometimes: a slow consumer).
    pub fn after_round(&mut self, id: u64, engine: &dyn Engine, ranges: &SharedRanges) {
        if self.feed(id, engine, ranges).is_err() {
            // A damaged store: the process would stop serving its watchers.
            return self.node_stopped(id);
        }
        for i in 0..self.clients.len() {
            if self.clients[i].node.is_none() && self.rng.chance(0.3) {
                self.connect(i, id, ranges);
            }
            if self.clients[i].node == Some(id)
                && self.rng.chance(0.5)
                && self.drain(i, engine, ranges, 4).is_err()
            {
                self.node_stopped(id);
            }
        }
    }

    /// Publishes to node `id`'s hub what it applied, as the server's feeder does.
    fn feed(&mut self, id: u64, engine: &dyn Engine, ranges: &SharedRanges) -> Result<()> {
        let Some(hub) = &self.hubs[id as usize - 1] else { return Ok(()) };
        feed::publish_applied(engine, ranges, hub, READ_BYTES).map(drop)
    }

    fn connect(&mut self, client: usize, node: u64, ranges: &SharedRanges) {
        let Some(hubs) = self.hubs[node as usize - 1].as_mut() else { return };
        let hubs = hubs.get_mut().expect("hubs lock");
        let c = &mut self.clients[client];
        hubs.add(c.id, c.spec.clone(), Some(c.next()), ranges);
        c.node = Some(node);
        self.reconnects += 1;
    }

    /// Takes what the watcher's hub has for it, reading from storage while it is behind, for at
    /// most `steps` steps.
    fn drain(
        &mut self,
        client: usize,
        engine: &dyn Engine,
        ranges: &SharedRanges,
        steps: usize,
    ) -> Result<()> {
        let c = &mut self.clients[client];
        let Some(hub) = c.node.and_then(|n| self.hubs[n as usize - 1].as_mut()) else {
            return Ok(());
        };
        let hub = hub.get_mut().expect("hub lock");
        for _ in 0..steps {
            match hub.take(c.id) {
                None => return Ok(()),
                Some(Take::Events { events, .. }) => {
                    c.seen.extend(events.iter().map(|e| seen(e)));
                    return Ok(());
                }
                Some(Take::CatchUp { from, to }) => {
                    let (spec, prev_kv) = (Some(&c.spec), c.spec.prev_kv);
                    let chunk =
                        feed::read_events(engine, ranges, (from, to), spec, READ_BYTES, prev_kv)?;
                    c.seen.extend(chunk.events.iter().map(seen));
                    hub.caught_up(c.id, chunk.through);
                }
            }
        }
        Ok(())
    }

    /// The end: every watcher catches up on a running node, then what it saw is compared with
    /// what `reference` (a converged node, whose ranges have applied through `marks`) holds.
    /// `up` lists the running, undamaged nodes.
    pub fn check(
        &mut self,
        up: &[(u64, &dyn Engine, SharedRanges)],
        reference: &dyn Engine,
        marks: Watermarks,
    ) -> (Vec<String>, usize) {
        let mut violations = Vec::new();
        let Some((first, _, first_ranges)) = up.first() else { return (violations, 0) };
        for (id, engine, ranges) in up {
            if self.feed(*id, *engine, ranges).is_err() {
                violations.push(format!("n{id}'s store failed while feeding its watchers"));
            }
        }
        let mut events = 0;
        for i in 0..self.clients.len() {
            if self.clients[i].node.is_none_or(|n| !up.iter().any(|u| u.0 == n)) {
                self.clients[i].node = None;
                self.connect(i, *first, first_ranges);
            }
            let node = self.clients[i].node.expect("connected");
            let (_, engine, ranges) = up.iter().find(|u| u.0 == node).expect("up");
            if self.drain(i, *engine, ranges, 100_000).is_err() {
                violations.push(format!("n{node} failed to serve watcher {i}"));
            }
            let c = &self.clients[i];
            let expected = match history::read(
                reference,
                (c.start, marks.frontier),
                marks.floor,
                Some(&c.spec),
                usize::MAX,
                false,
            ) {
                Ok(chunk) => chunk.events.iter().map(seen).collect::<Vec<_>>(),
                Err(e) => {
                    violations.push(format!("cannot read the reference history: {e}"));
                    continue;
                }
            };
            events += c.seen.len();
            if c.seen != expected {
                let position = c.seen.iter().zip(&expected).position(|(a, b)| a != b);
                violations.push(format!(
                    "watcher {i} ({:?} from {}) saw {} events, the store holds {}; first \
                     difference at {position:?}: saw {:?}, expected {:?}",
                    String::from_utf8_lossy(&c.spec.key),
                    c.start,
                    c.seen.len(),
                    expected.len(),
                    position.and_then(|p| c.seen.get(p)),
                    position.and_then(|p| expected.get(p)),
                ));
            }
        }
        (violations, events)
    }
}
