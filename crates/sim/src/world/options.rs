//! What a run simulates (its options, and the command that replays it) and what it reports.

use strata_core::raftstore::Mutation;

use crate::faults::{FaultCounts, Kind as FaultKind};
use crate::history::Operation;
use crate::leases;
use crate::members;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub nodes: u64,
    pub clients: usize,
    /// Ids beyond the first `nodes` the membership operator may add members under. Whether a
    /// run changes its membership at all is drawn from its seed.
    pub spare_nodes: u64,
    /// Simulated time under load and faults.
    pub duration_ms: u64,
    /// Ranges every node holds from the start: the meta range, which holds every key the
    /// clients use, and idle ranges from `m` on, whose groups elect, heartbeat, crash and
    /// restart beside it. (Clients write to more than one range once revisions come from the
    /// revision oracle; see `docs/sharding.md`.)
    pub ranges: u64,
    /// Clients use keys in every range, not only the meta range's: writes and reads take their
    /// revisions and read timestamps from the oracle, in several ranges at once. (Membership
    /// changes are left out of such runs: they change the meta range's replicas only, and would
    /// leave the others without a quorum.)
    pub spread_keys: bool,
    /// Bank clients move money between accounts of the meta range and range 2 by transactions
    /// across ranges, and audit the total (see `bank`). Membership changes are left out, as
    /// with `spread_keys`.
    pub bank: bool,
    /// The operator splits ranges other than the meta range during the load, one to four
    /// times (see `world::splits`).
    pub splits: bool,
    /// The fault kinds a run may use; empty for a run without faults (and a calm network).
    pub faults: Vec<FaultKind>,
    pub mutation: Mutation,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 0,
            nodes: 3,
            clients: 4,
            spare_nodes: 2,
            duration_ms: 3_000,
            ranges: 2,
            spread_keys: false,
            bank: false,
            splits: false,
            faults: FaultKind::ALL.to_vec(),
            mutation: Mutation::None,
        }
    }
}

impl Options {
    /// The one command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut command = format!(
            "cargo run --release -p strata-sim -- --seed {} --nodes {} --clients {} --duration-ms {}",
            self.seed, self.nodes, self.clients, self.duration_ms
        );
        if self.faults != FaultKind::ALL {
            let names: Vec<&str> = self.faults.iter().map(|k| k.name()).collect();
            command.push_str(&format!(" --faults '{}'", names.join(",")));
        }
        if self.ranges != Options::default().ranges {
            command.push_str(&format!(" --ranges {}", self.ranges));
        }
        if self.spread_keys {
            command.push_str(" --spread-keys");
        }
        if self.bank {
            command.push_str(" --bank");
        }
        if self.splits {
            command.push_str(" --splits");
        }
        if self.spare_nodes != Options::default().spare_nodes {
            command.push_str(&format!(" --spare-nodes {}", self.spare_nodes));
        }
        if let Some(name) = crate::mutation_name(self.mutation) {
            command.push_str(&format!(" --mutation {name}"));
        }
        command.push_str(" --verbose");
        command
    }
}

/// Where the initial ranges begin, past the meta range: `m`, `n`, ... (every client key sorts
/// before them).
pub(super) fn split_keys(ranges: u64) -> Vec<Vec<u8>> {
    (0..ranges.saturating_sub(1)).map(|i| vec![b'm' + i as u8]).collect()
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    pub options: Options,
    /// A fingerprint of every event in order: equal for equal seeds.
    pub trace_hash: u64,
    pub simulated_ms: u64,
    pub events: u64,
    pub faults: FaultCounts,
    pub history: Vec<Operation>,
    pub violations: Vec<String>,
    /// Keys whose linearizability search ran out of budget.
    pub inconclusive_keys: usize,
    /// Events the watch clients saw (all checked against the final store), and how often they
    /// connected to a node.
    pub watch_events: usize,
    pub watch_connects: usize,
    /// What the lease clients did (all checked).
    pub leases: leases::Counts,
    /// What the membership operator did.
    pub membership: members::Counts,
    /// What the revision oracle handed out (all checked).
    pub oracle: crate::oracle::Counts,
    /// What the bank clients did (all audits checked).
    pub bank: crate::bank::Counts,
    /// Splits the operator made.
    pub splits: usize,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn acknowledged_writes(&self) -> usize {
        self.history.iter().filter(|op| op.outcome.changed_store()).count()
    }
}
