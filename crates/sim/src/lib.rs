//! Deterministic simulation of a whole Strata cluster.
//!
//! A run is one seed. From it come the fault schedule, the network's behaviour, the clients'
//! requests and raft-rs's election timeouts; the simulator reads no clock, draws no other
//! random number and starts no thread, so the same seed replays the same run event for event
//! (the [`Report::trace_hash`] proves it). The nodes are the production cores — the raftstore
//! [`Node`](strata_core::raftstore::Node), raft-rs, the MVCC state machine — over in-memory
//! disks that lose what was not fsynced when a node crashes.
//!
//! * [`world`]: the event loop, nodes, network and clients;
//! * [`faults`]: the fault model;
//! * [`workload`]: what clients send;
//! * [`history`]: what clients saw;
//! * [`check`]: the checkers run on every history;
//! * [`watchers`]: watch clients on every node's watch hub, and their checker;
//! * [`leases`]: lease clients keeping leases alive across leader changes, and their checker;
//! * [`members`]: an operator changing the membership under faults, and its checker;
//! * [`bank`]: bank clients moving money by transactions across ranges, and their checker;
//! * [`scenario`]: scripted, hand-stepped clusters for golden tests.

pub mod bank;
pub mod check;
pub mod disk;
pub mod faults;
pub mod history;
pub mod leases;
pub mod members;
pub mod oracle;
pub mod scenario;
pub mod watchers;
pub mod workload;
pub mod world;

pub use strata_core::raftstore::Mutation;
pub use world::{Options, Report, World};

/// Runs one seed.
pub fn run(options: Options) -> Report {
    World::new(options).run()
}

/// The deliberate bugs, by the names the command line uses.
pub const MUTATIONS: [(&str, Mutation); 15] = [
    ("ack-before-fsync", Mutation::AckBeforeFsync),
    ("skip-apply", Mutation::SkipApply),
    ("compact-without-sync", Mutation::CompactWithoutSync),
    ("lease-reads", Mutation::LeaseReads),
    ("reads-without-read-index", Mutation::ReadsWithoutReadIndex),
    ("keep-alive-without-read-index", Mutation::KeepAliveWithoutReadIndex),
    ("remote-reads-join-round-under-way", Mutation::RemoteReadsJoinRoundUnderWay),
    ("oracle-without-quorum-check", Mutation::OracleWithoutQuorumCheck),
    ("oracle-starts-below-ceiling", Mutation::OracleStartsBelowCeiling),
    ("stamp-passed-read", Mutation::StampPassedRead),
    ("read-at-commit-index", Mutation::ReadAtCommitIndex),
    ("close-without-read-index", Mutation::CloseWithoutReadIndex),
    ("locks-unpublished", Mutation::LocksUnpublished),
    ("revoke-forgets-ranges", Mutation::RevokeForgetsRanges),
    ("epoch-unchecked", Mutation::EpochUnchecked),
];

pub fn mutation_name(mutation: Mutation) -> Option<&'static str> {
    MUTATIONS.iter().find(|(_, m)| *m == mutation).map(|(name, _)| *name)
}

pub fn parse_mutation(name: &str) -> Option<Mutation> {
    MUTATIONS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
}
