//! The fault model: which faults a run injects and how often, all drawn from the run's seed.
//!
//! Each run enables a random subset of fault kinds, so some seeds are calm and some hostile,
//! and between faults waits 100–700 ms of simulated time.

use crate::world::Time;
use strata_core::rng::Rng;

const MS: Time = 1_000;

/// The network's behaviour for one run.
#[derive(Clone, Debug)]
pub struct Network {
    drop: f64,
    duplicate: f64,
    /// Chance that a message takes the slow path (which also reorders it).
    slow: f64,
    slow_max: Time,
}

impl Network {
    pub fn calm() -> Self {
        Self { drop: 0.0, duplicate: 0.0, slow: 0.0, slow_max: 0 }
    }

    fn hostile(rng: &mut Rng) -> Self {
        Self {
            drop: rng.unit() * 0.1,
            duplicate: rng.unit() * 0.05,
            slow: rng.unit() * 0.1,
            slow_max: rng.range(5 * MS, 300 * MS),
        }
    }

    /// How many copies of a message arrive: 0 (dropped), 1 or 2 (duplicated).
    pub fn copies(&self, rng: &mut Rng) -> u32 {
        if rng.chance(self.drop) {
            0
        } else if rng.chance(self.duplicate) {
            2
        } else {
            1
        }
    }

    pub fn delay(&self, rng: &mut Rng) -> Time {
        if rng.chance(self.slow) {
            rng.range(5 * MS, self.slow_max)
        } else {
            rng.range(200, 2 * MS)
        }
    }
}

#[derive(Clone, Debug)]
pub enum Fault {
    /// Cut these directed links (from, to).
    Partition { links: Vec<(u64, u64)>, heal_after: Time },
    /// Power loss: everything not fsynced is lost.
    Crash { node: u64, restart_after: Time },
    /// The process stops (ticks, messages, requests) and resumes with stale state.
    Pause { node: u64, resume_after: Time },
    /// The node's clock runs at `percent` of the normal tick interval from now on.
    Drift { node: u64, percent: u64 },
    /// The node's next fsync fails.
    FailSync { node: u64 },
    /// Power loss, and one durable record on the node's disk is damaged (the `pick`-th, modulo
    /// how many there are). Only one node per run is damaged.
    Corrupt { node: u64, pick: u64 },
}

/// How many faults of each kind a run injected.
#[derive(Clone, Debug, Default)]
pub struct FaultCounts {
    pub partitions: u64,
    pub crashes: u64,
    pub pauses: u64,
    pub drifts: u64,
    pub fsync_failures: u64,
    pub corruptions: u64,
    pub messages_dropped: u64,
}

impl FaultCounts {
    pub fn add(&mut self, other: &FaultCounts) {
        self.partitions += other.partitions;
        self.crashes += other.crashes;
        self.pauses += other.pauses;
        self.drifts += other.drifts;
        self.fsync_failures += other.fsync_failures;
        self.corruptions += other.corruptions;
        self.messages_dropped += other.messages_dropped;
    }
}

/// The kinds of process, network-partition and disk faults (message loss, duplication and
/// delay are the network's behaviour, chosen per run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Partition,
    Crash,
    Pause,
    Drift,
    FailSync,
    Corrupt,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Partition, Kind::Crash, Kind::Pause, Kind::Drift, Kind::FailSync, Kind::Corrupt];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Partition => "partition",
            Kind::Crash => "crash",
            Kind::Pause => "pause",
            Kind::Drift => "drift",
            Kind::FailSync => "fail-sync",
            Kind::Corrupt => "corrupt",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

pub struct FaultPlan {
    rng: Rng,
    nodes: u64,
    kinds: Vec<Kind>,
    /// The one node whose disk may be damaged.
    damaged: Option<u64>,
    pub network: Network,
    pub counts: FaultCounts,
}

impl FaultPlan {
    /// A plan using some of `allowed` (each with probability 0.6); none when `allowed` is empty.
    pub fn new(mut rng: Rng, allowed: &[Kind], nodes: u64) -> Self {
        let kinds: Vec<Kind> = allowed.iter().copied().filter(|_| rng.chance(0.6)).collect();
        let hostile = !allowed.is_empty() && rng.chance(0.7);
        let network = if hostile { Network::hostile(&mut rng) } else { Network::calm() };
        Self { rng, nodes, kinds, damaged: None, network, counts: FaultCounts::default() }
    }

    /// Time until the next fault.
    pub fn next_gap(&mut self) -> Time {
        self.rng.range(100 * MS, 700 * MS)
    }

    /// How many of `unsynced` writes the system wrote back before a power loss.
    pub fn writes_kept(&mut self, unsynced: usize) -> usize {
        self.rng.range(0, unsynced as u64 + 1) as usize
    }

    /// How long a node stopped by a storage error stays down.
    pub fn restart_delay(&mut self) -> Time {
        self.rng.range(10 * MS, 500 * MS)
    }

    /// The next fault, given which nodes are up.
    pub fn choose(&mut self, up: &[bool]) -> Option<Fault> {
        let kind = *self.rng.pick(if self.kinds.is_empty() { return None } else { &self.kinds });
        let node = self.rng.range(1, self.nodes + 1);
        let up_nodes: Vec<u64> = (1..=self.nodes).filter(|n| up[*n as usize - 1]).collect();
        Some(match kind {
            Kind::Partition => {
                self.counts.partitions += 1;
                let heal_after = self.rng.range(100 * MS, 2_000 * MS);
                let others = (1..=self.nodes).filter(|n| *n != node);
                let links = match self.rng.range(0, 4) {
                    // Isolate one node.
                    0 | 1 => others.flat_map(|o| [(node, o), (o, node)]).collect(),
                    // It can hear the others but not reach them.
                    2 => others.map(|o| (node, o)).collect(),
                    // Any set of directed links.
                    _ => {
                        let mut links = Vec::new();
                        for from in 1..=self.nodes {
                            for to in (1..=self.nodes).filter(|to| *to != from) {
                                if self.rng.chance(0.4) {
                                    links.push((from, to));
                                }
                            }
                        }
                        links
                    }
                };
                Fault::Partition { links, heal_after }
            }
            Kind::Crash => {
                let node =
                    *self.rng.pick(if up_nodes.is_empty() { return None } else { &up_nodes });
                self.counts.crashes += 1;
                Fault::Crash { node, restart_after: self.rng.range(50 * MS, 1_500 * MS) }
            }
            Kind::Pause => {
                self.counts.pauses += 1;
                Fault::Pause { node, resume_after: self.rng.range(50 * MS, 1_500 * MS) }
            }
            Kind::Drift => {
                self.counts.drifts += 1;
                Fault::Drift { node, percent: self.rng.range(25, 800) }
            }
            Kind::FailSync => Fault::FailSync { node },
            Kind::Corrupt => {
                self.counts.corruptions += 1;
                let node = *self.damaged.get_or_insert(node);
                Fault::Corrupt { node, pick: self.rng.next_u64() }
            }
        })
    }
}
