//! The simulator on many seeds, its determinism, and proof that its checkers catch deliberate
//! bugs.

use strata_sim::faults::{FaultCounts, Kind};
use strata_sim::{MUTATIONS, Mutation, Options, Report, run};

fn options(seed: u64) -> Options {
    Options { seed, ..Options::default() }
}

fn describe(report: &Report) -> String {
    format!(
        "seed {} failed:\n  {}\n  replay: {}",
        report.options.seed,
        report.violations.join("\n  "),
        report.options.replay_command()
    )
}

/// The suite's 500 seeds under mixed faults, in four shards the test runner spreads over the
/// cores. Every seed must pass every checker, and each shard must have done real work under
/// real faults (a checker over empty histories proves nothing): its quarter of the totals.
fn seeds_uphold_every_check(seeds: std::ops::Range<u64>) {
    let (mut simulated_ms, mut operations, mut acknowledged) = (0, 0, 0);
    let (mut watch_events, mut watch_connects) = (0, 0);
    let mut faults = FaultCounts::default();
    let mut leases = strata_sim::leases::Counts::default();
    let mut membership = strata_sim::members::Counts::default();
    let mut oracle = strata_sim::oracle::Counts::default();
    for seed in seeds.clone() {
        let report = run(options(seed));
        assert!(report.passed(), "{}", describe(&report));
        simulated_ms += report.simulated_ms;
        operations += report.history.len();
        acknowledged += report.acknowledged_writes();
        watch_events += report.watch_events;
        watch_connects += report.watch_connects;
        leases.add(&report.leases);
        membership.add(&report.membership);
        oracle.add(&report.oracle);
        faults.add(&report.faults);
    }
    println!(
        "seeds {seeds:?}: {:.0} s simulated, {operations} operations, {acknowledged} \
         acknowledged writes, {watch_events} watch events checked ({watch_connects} connects), \
         leases {leases:?}, membership {membership:?}, oracle {oracle:?}, faults {faults:?}",
        simulated_ms as f64 / 1000.0
    );
    assert!(acknowledged > 5_000, "{acknowledged} acknowledged writes");
    assert!(faults.crashes > 75 && faults.partitions > 75 && faults.pauses > 75);
    assert!(faults.drifts > 75 && faults.fsync_failures > 25 && faults.corruptions > 25);
    assert!(faults.messages_dropped > 2_500);
    // Watchers followed the store through all of it, reconnecting after crashes.
    assert!(watch_events > 5_000 && watch_connects > 375, "{watch_events} {watch_connects}");
    // Leases were kept alive across leader changes, and expired when let go.
    assert!(leases.kept_alive > 750 && leases.moved > 75, "{leases:?}");
    assert!(leases.expired > 250, "{leases:?}");
    // Members were added, promoted and removed — the leader too — under the same faults.
    assert!(membership.applied > 75 && membership.joined > 35, "{membership:?}");
    assert!(membership.removed > 20, "{membership:?}");
    // The revision oracle handed out blocks and read timestamps through meta-leader changes.
    assert!(oracle.blocks > 2_000 && oracle.read_timestamps > 2_000, "{oracle:?}");
}

#[test]
fn seeds_0_to_124_of_mixed_faults_uphold_every_check() {
    seeds_uphold_every_check(0..125);
}

#[test]
fn seeds_125_to_249_of_mixed_faults_uphold_every_check() {
    seeds_uphold_every_check(125..250);
}

#[test]
fn seeds_250_to_374_of_mixed_faults_uphold_every_check() {
    seeds_uphold_every_check(250..375);
}

#[test]
fn seeds_375_to_499_of_mixed_faults_uphold_every_check() {
    seeds_uphold_every_check(375..500);
}

#[test]
fn five_voters_uphold_every_check() {
    // Among five voters a follower's read is confirmed by a round of the leader's heartbeats,
    // where among three the follower's request itself completes a quorum.
    for seed in 0..50 {
        let report = run(Options { nodes: 5, clients: 8, ..options(seed) });
        assert!(report.passed(), "{}", describe(&report));
    }
}

#[test]
fn keys_in_two_ranges_uphold_every_check() {
    // Half the keys in the range past the meta range: its writes are stamped with the
    // oracle's blocks and its reads taken at the oracle's read timestamps, through every fault.
    let (mut acknowledged_elsewhere, mut oracle) = (0, strata_sim::oracle::Counts::default());
    for seed in 0..100 {
        let report = run(Options { spread_keys: true, ..options(seed) });
        assert!(report.passed(), "{}", describe(&report));
        acknowledged_elsewhere += (report.history.iter())
            .filter(|op| op.outcome.changed_store() && op.op.key().starts_with('x'))
            .count();
        oracle.add(&report.oracle);
    }
    println!("{acknowledged_elsewhere} acknowledged writes past the meta range, oracle {oracle:?}");
    assert!(acknowledged_elsewhere > 1_000, "{acknowledged_elsewhere}");
    assert!(oracle.blocks > 2_000 && oracle.read_timestamps > 2_000, "{oracle:?}");
}

#[test]
fn bank_transfers_across_ranges_uphold_every_check() {
    // Transfers between accounts of the meta range and range 2, each a transaction across
    // ranges run by the core's coordinator on the node a client reaches, audited by snapshot
    // reads over both ranges, through every fault (crashed coordinators included). Seed 5 found
    // a read at a timestamp served at the range's newer revision: a snapshot over two ranges
    // then saw a transfer in one and not in the other. Seed 542 with keys in both ranges found
    // a lock whose start timestamp was 0 taken for no lock at all: a range closed past its
    // transaction, and a watcher missed its events.
    let mut bank = strata_sim::bank::Counts::default();
    let seeds = (0..60).map(|seed| (seed, false)).chain([(542, true)]);
    for (seed, spread_keys) in seeds {
        let report = run(Options { bank: true, spread_keys, ..options(seed) });
        assert!(report.passed(), "{}", describe(&report));
        bank.add(&report.bank);
    }
    println!("bank {bank:?}");
    assert!(bank.transfers > 200 && bank.audits > 200, "{bank:?}");
    assert!(bank.resolved > 0, "no abandoned lock was resolved: {bank:?}");
}

#[test]
fn admin_splits_under_faults_uphold_every_check() {
    // One to four splits of the ranges past the meta range, under every fault, with keys and
    // bank accounts on both sides of each split point. Seed 137 found a node that lagged
    // through a split, its new range not yet there, serving a read of the range's key from
    // the meta range (no range held it): an empty answer for a key that existed. Seed 40200
    // found a leader sending a snapshot it had prepared before its range split, whose wider
    // span a lagging member's new range overlapped: the member waited for it forever. Seed
    // 42150 found a crash that kept a split's descriptor of the new range and lost its log's
    // part (not synced): the member refused to start. Seed 91684 found a new range's replica
    // answering its leader before the batch that created it was durable: after a crash the
    // leader counted on a log the replica no longer had, and raft-rs panicked.
    let (mut splits, mut bank) = (0, strata_sim::bank::Counts::default());
    for seed in (0..60).chain([137, 40_200, 42_150, 91_684]) {
        let report =
            run(Options { spread_keys: true, bank: seed % 2 == 0, splits: true, ..options(seed) });
        assert!(report.passed(), "{}", describe(&report));
        splits += report.splits;
        bank.add(&report.bank);
    }
    println!("{splits} splits, bank {bank:?}");
    assert!(splits > 60, "{splits}");
    assert!(bank.transfers > 100 && bank.audits > 100, "{bank:?}");
}

/// Seeds beyond the suite's 500 that long runs found failing, each with what it found.
const FOUND_BY_LONG_RUNS: &[u64] = &[
    // The removed leader committed the end of the joint configuration with a member whose
    // disk was then damaged; the two others, never told, still needed its vote.
    604_353,
    // A node restarted, its driver numbering its asks of the revision oracle from 1 again; an
    // answer to an ask of its previous life, delayed in the network, passed for the answer to
    // a new ask: a read served at a read timestamp from before the restart went back in time.
    13_002_613,
];

#[test]
fn seeds_that_long_runs_found_failing_pass() {
    for &seed in FOUND_BY_LONG_RUNS {
        let report = run(options(seed));
        assert!(report.passed(), "{}", describe(&report));
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = run(options(7));
    let second = run(options(7));
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(format!("{:?}", first.history), format!("{:?}", second.history));
    assert_ne!(first.trace_hash, run(options(8)).trace_hash);
}

#[test]
fn without_faults_every_request_is_answered() {
    // No faults, and no membership changes (a removed member stops, and its requests with it).
    let report = run(Options { faults: Vec::new(), spare_nodes: 0, ..options(3) });
    assert!(report.passed(), "{}", describe(&report));
    let unanswered = report.history.iter().filter(|op| op.completed.is_none()).count();
    assert_eq!(unanswered, 0);
    assert!(report.acknowledged_writes() > 300, "{}", report.acknowledged_writes());
}

/// Runs seeds from 0 until one fails; returns it.
fn first_failure(
    mutation: Mutation,
    faults: &[Kind],
    seeds: u64,
    shape: Options,
) -> Option<Report> {
    (0..seeds)
        .map(|seed| run(Options { seed, mutation, faults: faults.to_vec(), ..shape.clone() }))
        .find(|report| !report.passed())
}

#[test]
fn checkers_catch_every_deliberate_bug() {
    for (name, mutation) in MUTATIONS {
        // Trusting a lease goes wrong only when a leader's clock runs slow while it is cut off;
        // those two faults alone make that common enough.
        // A deposed leader acting on what it believes shows most when it is paused, and then
        // drains its connections in some order.
        // A follower's read meets a leader's round under way only when reads are frequent, and
        // only where the leader and one follower are not a quorum: among five voters (with one
        // range, where it concerns the clients' reads alone and shows sooner).
        let shape = Options::default();
        let (faults, seeds, shape): (&[Kind], u64, Options) = match mutation {
            // With one range: where ranges take revisions from the oracle, a read first waits
            // for a read timestamp, whose quorum check hides a leader's stale lease.
            Mutation::LeaseReads => {
                (&[Kind::Partition, Kind::Drift], 400, Options { ranges: 1, ..shape })
            }
            Mutation::KeepAliveWithoutReadIndex | Mutation::OracleWithoutQuorumCheck => {
                (&[Kind::Pause], 400, shape)
            }
            // Only a power loss tells a buffered compaction from a synced one.
            Mutation::CompactWithoutSync => (&[Kind::Crash], 100, shape),
            Mutation::RemoteReadsJoinRoundUnderWay => {
                (&Kind::ALL, 50, Options { clients: 16, nodes: 5, ranges: 1, ..shape })
            }
            // A block used below a read, a read not waiting for what was stamped below it, or
            // watchers given events past unapplied ones, need keys outside the meta range,
            // where writes wait for blocks.
            Mutation::StampPassedRead
            | Mutation::ReadAtCommitIndex
            | Mutation::CloseWithoutReadIndex => {
                (&Kind::ALL, 100, Options { spread_keys: true, ..shape })
            }
            // Locks exist only where transactions cross ranges.
            Mutation::LocksUnpublished => (&Kind::ALL, 50, Options { bank: true, ..shape }),
            // Leases with keys in several ranges need keys outside the meta range.
            Mutation::RevokeForgetsRanges => {
                (&Kind::ALL, 50, Options { spread_keys: true, ..shape })
            }
            // A write routed before a split and applied after it needs splits.
            Mutation::EpochUnchecked => {
                (&Kind::ALL, 100, Options { spread_keys: true, splits: true, ..shape })
            }
            _ => (&Kind::ALL, 50, shape),
        };
        let report = first_failure(mutation, faults, seeds, shape)
            .unwrap_or_else(|| panic!("mutation {name} went unnoticed for {seeds} seeds"));
        println!(
            "{name}: caught at seed {} by: {}",
            report.options.seed,
            report.violations[0].lines().next().unwrap_or_default()
        );
    }
}
