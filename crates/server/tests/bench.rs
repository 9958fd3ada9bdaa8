//! `strata bench` drives Strata and a real etcd 3.4 alike: every workload completes with no
//! errors against a 3-member Strata cluster, the txn workload's counters add up, every watcher
//! sees every put, and the same command measures etcd.

mod support;

use serde_json::Value;
use support::Cluster;
use support::etcd::Etcd;

/// Runs `strata bench --json` with `args`; returns its JSON line.
fn bench(endpoints: &str, args: &[&str]) -> Value {
    let mut all = vec!["bench", "--endpoints", endpoints, "--json", "--duration", "20"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = support::run(support::STRATA, &all);
    assert!(ok, "strata {all:?} failed:\n{stdout}\n{stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {stdout}"))
}

fn assert_clean(result: &Value, ops: u64) {
    assert_eq!(result["ops"], ops, "{result}");
    assert_eq!(result["errors"], serde_json::json!({}), "{result}");
    let p50 = result["latency_ms"]["p50"].as_f64().unwrap();
    let max = result["latency_ms"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{result}");
}

#[test]
fn every_workload_runs_against_strata() {
    // etcd's default timing: the suite runs heavy tests beside this one on two cores, and the
    // tests' 200 ms election timeout then lets a starved follower call an election, which fails
    // the writes in flight with "leader changed" — an error this test counts.
    let timing = ["--heartbeat-interval", "100", "--election-timeout", "1000"];
    let cluster = Cluster::start_with(3, &timing);
    let endpoints = cluster.endpoints_csv();
    for workload in ["put", "get", "get-serializable", "mixed", "range"] {
        let result = bench(
            &endpoints,
            &["--workload", workload, "--clients", "4", "--total", "200", "--key-space", "50"],
        );
        assert_eq!(result["workload"], workload);
        assert_clean(&result, 200);
    }
    // YCSB's core workloads, with the mix each one defines: its kinds of operation, and the
    // share of the first kind (in name order).
    for (workload, kinds, share) in [
        ("ycsb-a", &["read", "update"][..], 0.5),
        ("ycsb-b", &["read", "update"], 0.95),
        ("ycsb-c", &["read"], 1.0),
        ("ycsb-d", &["insert", "read"], 0.05),
        ("ycsb-e", &["insert", "scan"], 0.05),
        ("ycsb-f", &["read", "read-modify-write"], 0.5),
    ] {
        let result = bench(
            &endpoints,
            &["--workload", workload, "--clients", "4", "--total", "400", "--key-space", "50"],
        );
        assert_clean(&result, 400);
        let counted: Vec<&str> =
            result["kinds"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(counted, kinds, "{result}");
        let first = result["kinds"][kinds[0]].as_u64().unwrap() as f64 / 400.0;
        assert!((first - share).abs() < 0.1, "{workload}: {first} of {share} {result}");
    }
    let txn = bench(&endpoints, &["--workload", "txn", "--clients", "8", "--total", "200"]);
    assert_clean(&txn, 200);
    assert_eq!(txn["sum_check"], "ok", "{txn}");
    // Watch: each of 200 puts reaches each of 5 watchers, in order.
    let watch = bench(
        &endpoints,
        &["--workload", "watch", "--watchers", "5", "--clients", "4", "--total", "200"],
    );
    assert_clean(&watch, 1000);
    assert_eq!(watch["sum_check"], "ok (5 watchers saw all 200 puts, in order)", "{watch}");
    // Open loop, zipfian keys: the requests due in the time allowed are all sent.
    let open = bench(
        &endpoints,
        &["--rate", "200", "--clients", "4", "--total", "100", "--distribution", "zipfian"],
    );
    assert_clean(&open, 100);
    assert_eq!(open["rate"], 200);
    // A trace: every request, through every endpoint, its slowest the run's maximum.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.txt");
    let traced =
        bench(&endpoints, &["--clients", "6", "--total", "300", "--trace", path.to_str().unwrap()]);
    assert_clean(&traced, 300);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().ends_with(&format!("endpoints {endpoints}")), "{text}");
    assert_eq!(lines.next().unwrap(), "# sent_micros latency_micros endpoint outcome");
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(' ').collect()).collect();
    assert_eq!(rows.len(), 300, "{text}");
    assert!(rows.iter().all(|row| row.len() == 4 && row[3] == "ok"), "{text}");
    let sent: Vec<u64> = rows.iter().map(|row| row[0].parse().unwrap()).collect();
    assert!(sent.is_sorted(), "{text}");
    let endpoints_used: std::collections::BTreeSet<&str> = rows.iter().map(|row| row[2]).collect();
    assert_eq!(endpoints_used, ["0", "1", "2"].into(), "{text}");
    let slowest = rows.iter().map(|row| row[1].parse::<u64>().unwrap()).max().unwrap();
    let max = traced["latency_ms"]["max"].as_f64().unwrap();
    assert!((slowest as f64 / 1000.0 - max).abs() < 0.002, "{slowest} µs against {traced}");
    // bench/tail reads it: the same requests and p99 as the run's own summary.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/tail");
    let (ok, stdout, stderr) = support::run("python3", &[script, "--json", path.to_str().unwrap()]);
    assert!(ok, "bench/tail failed:\n{stdout}\n{stderr}");
    let tail: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(tail["requests"], 300, "{tail}");
    assert_eq!(tail["p99_ms"], traced["latency_ms"]["p99"], "{tail} against {traced}");
    assert!(tail["slow"].as_u64().unwrap() >= 3, "{tail}");
}

#[test]
fn the_same_command_measures_etcd() {
    let etcd = Etcd::start("bench");
    for workload in ["put", "get", "range", "ycsb-a", "ycsb-e"] {
        let result =
            bench(&etcd.endpoint, &["--workload", workload, "--clients", "4", "--total", "100"]);
        assert_clean(&result, 100);
    }
    let txn = bench(&etcd.endpoint, &["--workload", "txn", "--clients", "4", "--total", "100"]);
    assert_clean(&txn, 100);
    assert_eq!(txn["sum_check"], "ok", "{txn}");
    let watch = bench(
        &etcd.endpoint,
        &["--workload", "watch", "--watchers", "3", "--clients", "2", "--total", "100"],
    );
    assert_clean(&watch, 300);
    assert_eq!(watch["sum_check"], "ok (3 watchers saw all 100 puts, in order)", "{watch}");
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let (ok, _, stderr) = support::run(
        support::STRATA,
        &["bench", "--endpoints", "127.0.0.1:1", "--read-ratio", "2"],
    );
    assert!(!ok);
    assert!(stderr.contains("--read-ratio must be between 0 and 1"), "{stderr}");
    let (ok, _, stderr) = support::run(
        support::STRATA,
        &["bench", "--endpoints", "127.0.0.1:1", "--workload", "watch", "--trace", "t.txt"],
    );
    assert!(!ok);
    assert!(stderr.contains("--trace records requests"), "{stderr}");
}
