//! `strata-sim`: runs simulation seeds, one to replay a failure or many for a soak.
//!
//! ```text
//! strata-sim --seed 42 --verbose            # replay one seed, printing its events
//! strata-sim --seeds 100000 --time 3600     # soak: up to 100,000 seeds or an hour
//! strata-sim --seeds 200 --mutation skip-apply   # how fast the checkers catch a bug
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use strata_sim::faults::{FaultCounts, Kind};
use strata_sim::{Options, World, parse_mutation};

const USAGE: &str = "usage: strata-sim [--seed N | --seeds COUNT [--first-seed N] [--time SECONDS]]
                  [--nodes N] [--spare-nodes N] [--clients N] [--duration-ms MS] [--ranges N]
                  [--spread-keys] [--bank] [--splits]
                  [--faults partition,crash,pause,drift,fail-sync (default: all; '' for none)]
                  [--mutation ack-before-fsync|skip-apply|compact-without-sync|lease-reads|
                              reads-without-read-index|keep-alive-without-read-index|
                              remote-reads-join-round-under-way|oracle-without-quorum-check|
                              oracle-starts-below-ceiling|stamp-passed-read|
                              read-at-commit-index|close-without-read-index|
                              locks-unpublished|revoke-forgets-ranges|epoch-unchecked]
                  [--verbose]";

struct Args {
    seed: Option<u64>,
    seeds: u64,
    first_seed: Option<u64>,
    time: Option<Duration>,
    options: Options,
    verbose: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seed: None,
        seeds: 1,
        first_seed: None,
        time: None,
        options: Options::default(),
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--seed" => args.seed = Some(number(value()?)?),
            "--seeds" => args.seeds = number(value()?)?,
            "--first-seed" => args.first_seed = Some(number(value()?)?),
            "--time" => args.time = Some(Duration::from_secs(number(value()?)?)),
            "--nodes" => args.options.nodes = number(value()?)?,
            "--clients" => args.options.clients = number(value()?)? as usize,
            "--spare-nodes" => args.options.spare_nodes = number(value()?)?,
            "--duration-ms" => args.options.duration_ms = number(value()?)?,
            "--ranges" => args.options.ranges = number(value()?)?,
            "--spread-keys" => args.options.spread_keys = true,
            "--bank" => args.options.bank = true,
            "--splits" => args.options.splits = true,
            "--faults" => {
                let list = value()?;
                args.options.faults = list
                    .split(',')
                    .filter(|name| !name.is_empty())
                    .map(|name| Kind::parse(name).ok_or(format!("unknown fault kind {name}")))
                    .collect::<Result<_, _>>()?;
            }
            "--mutation" => {
                let name = value()?;
                args.options.mutation =
                    parse_mutation(&name).ok_or(format!("unknown mutation {name}"))?;
            }
            "--verbose" => args.verbose = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !(1..=7).contains(&args.options.nodes) {
        return Err("--nodes must be 1 to 7".into());
    }
    if !(1..=8).contains(&args.options.ranges) {
        return Err("--ranges must be 1 to 8".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let options = Options { seed, ..args.options };
        let report = World::new(options).verbose(args.verbose).run();
        println!(
            "seed {seed}: {} operations, {} acknowledged writes, {} watch events ({} connects), \
             leases {:?}, membership {:?}, oracle {:?}, bank {:?}, {} splits, {} ms simulated, \
             {} events, trace {:016x}, faults {:?}",
            report.history.len(),
            report.acknowledged_writes(),
            report.watch_events,
            report.watch_connects,
            report.leases,
            report.membership,
            report.oracle,
            report.bank,
            report.splits,
            report.simulated_ms,
            report.events,
            report.trace_hash,
            report.faults
        );
        if args.verbose {
            for op in &report.history {
                println!("  {op}");
            }
        }
        for violation in &report.violations {
            println!("VIOLATION: {violation}");
        }
        return if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }

    // A soak picks fresh seeds unless told where to start; the seeds themselves replay exactly.
    let first = args.first_seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    let started = Instant::now();
    let (mut run, mut failed, mut simulated_ms, mut inconclusive) = (0u64, 0u64, 0u64, 0usize);
    let mut watch_events = 0;
    let mut leases = strata_sim::leases::Counts::default();
    let mut membership = strata_sim::members::Counts::default();
    let mut oracle = strata_sim::oracle::Counts::default();
    let mut bank = strata_sim::bank::Counts::default();
    let mut splits = 0;
    let mut faults = FaultCounts::default();
    println!("seeds {first}.. ({} at most)", args.seeds);
    for seed in first..first.saturating_add(args.seeds) {
        if args.time.is_some_and(|limit| started.elapsed() >= limit) {
            break;
        }
        let options = Options { seed, ..args.options.clone() };
        let report = World::new(options.clone()).run();
        run += 1;
        simulated_ms += report.simulated_ms;
        inconclusive += report.inconclusive_keys;
        watch_events += report.watch_events;
        leases.add(&report.leases);
        membership.add(&report.membership);
        oracle.add(&report.oracle);
        bank.add(&report.bank);
        splits += report.splits;
        faults.add(&report.faults);
        if !report.passed() {
            failed += 1;
            println!("seed {seed} FAILED:");
            for violation in &report.violations {
                println!("  {violation}");
            }
            println!("  replay: {}", options.replay_command());
        }
        if run % 100 == 0 {
            println!("{run} seeds, {failed} failed, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    println!(
        "{run} seeds run, {failed} failed; {:.1} s simulated in {:.1} s; faults {faults:?}; \
         {inconclusive} keys inconclusive; {watch_events} watch events checked; leases {leases:?}; \
         membership {membership:?}; oracle {oracle:?}; bank {bank:?}; {splits} splits",
        simulated_ms as f64 / 1000.0,
        started.elapsed().as_secs_f64()
    );
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
