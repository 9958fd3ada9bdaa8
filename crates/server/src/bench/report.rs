//! A benchmark's result: a table for people and one JSON line for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::BenchArgs;

#[derive(Clone, Debug)]
pub struct Summary {
    pub workload: &'static str,
    pub clients: usize,
    pub rate: u64,
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_second: f64,
    /// Latency percentiles of successful operations, in milliseconds: p50, p90, p99, p99.9, max.
    pub latency_ms: [f64; 5],
    pub mean_ms: f64,
    pub errors: BTreeMap<String, u64>,
    pub conflicts: u64,
    pub sum_check: Option<String>,
    /// Operations by kind, for workloads that mix kinds (YCSB): read, update, insert, scan,
    /// read-modify-write.
    pub kinds: BTreeMap<&'static str, u64>,
    settings: serde_json::Value,
}

impl Summary {
    pub fn new(
        args: &BenchArgs,
        elapsed: Duration,
        mut latencies: Vec<u32>,
        errors: BTreeMap<String, u64>,
        conflicts: u64,
        sum_check: Option<String>,
    ) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
            f64::from(latencies[index - 1]) / 1000.0
        };
        let mean_ms = if latencies.is_empty() {
            0.0
        } else {
            latencies.iter().map(|&l| f64::from(l)).sum::<f64>() / latencies.len() as f64 / 1000.0
        };
        let seconds = elapsed.as_secs_f64();
        let ops = latencies.len() as u64;
        Self {
            workload: args.workload.name(),
            clients: args.clients,
            rate: args.rate,
            seconds,
            ops,
            ops_per_second: ops as f64 / seconds.max(f64::EPSILON),
            latency_ms: [at(0.5), at(0.9), at(0.99), at(0.999), at(1.0)],
            mean_ms,
            errors,
            conflicts,
            sum_check,
            kinds: BTreeMap::new(),
            settings: json!({
                "endpoints": args.endpoints,
                "connections": args.connections.unwrap_or(args.clients.min(64)),
                "key_size": args.key_size,
                "value_size": args.value_size,
                "key_space": args.key_space,
                "distribution": format!("{:?}", args.distribution).to_lowercase(),
                "read_ratio": args.read_ratio,
                "counters": args.counters,
                "range_keys": args.range_keys,
                "watchers": args.watchers,
                "total": args.total,
                "duration": args.duration,
                "timeout": args.timeout,
            }),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn json(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latency_ms;
        json!({
            "workload": self.workload,
            "clients": self.clients,
            "rate": self.rate,
            "seconds": round(self.seconds),
            "ops": self.ops,
            "ops_per_second": round(self.ops_per_second),
            "latency_ms": {
                "mean": round(self.mean_ms), "p50": round(p50), "p90": round(p90),
                "p99": round(p99), "p99_9": round(p999), "max": round(max),
            },
            "errors": self.errors,
            "conflicts": self.conflicts,
            "sum_check": self.sum_check,
            "kinds": self.kinds,
            "settings": self.settings,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latency_ms;
        let mut out = String::new();
        let mode = if self.rate > 0 {
            format!("open loop at {} req/s, at most {} in flight", self.rate, self.clients)
        } else {
            format!("{} clients, closed loop", self.clients)
        };
        let _ = writeln!(out, "\n{} — {mode}", self.workload);
        let _ = writeln!(
            out,
            "  {} ops in {:.1} s: {:.0} ops/s, {} errors",
            self.ops,
            self.seconds,
            self.ops_per_second,
            self.error_count()
        );
        let _ = writeln!(
            out,
            "  latency ms: mean {:.2}  p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2}",
            self.mean_ms
        );
        for (kind, count) in &self.errors {
            let _ = writeln!(out, "  error {kind}: {count}");
        }
        if self.conflicts > 0 {
            let _ = writeln!(out, "  compare-and-swap conflicts (retried): {}", self.conflicts);
        }
        if !self.kinds.is_empty() {
            let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(out, "  operations: {}", kinds.join(", "));
        }
        if let Some(check) = &self.sum_check {
            let _ = writeln!(out, "  counter sum check: {check}");
        }
        out
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
