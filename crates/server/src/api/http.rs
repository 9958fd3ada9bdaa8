//! Plain HTTP on the client port: `/health`, `/metrics`, and the answer for etcd gRPC services
//! that are not served yet.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use strata_core::raftstore::stats::{Histogram, NodeStats, SECONDS_BOUNDS};

use super::Api;
use crate::pb::strata::RangeStatus;
use crate::timed_engine::Timings;
use crate::transport::{PeerCounters, PeerStats};

/// One RPC's counters: outcomes and latency. Atomics, so recording a request takes the map's
/// lock only long enough to find its entry.
struct RequestStats {
    ok: AtomicU64,
    error: AtomicU64,
    seconds: Histogram,
}

/// The node's metrics, rendered in Prometheus text format: Raft and MVCC state, the raftstore's
/// own counters (proposals, applies, rounds, batch sizes, leader changes), the latency of its
/// writes and rounds, the traffic with each peer, and request counts and latency per RPC.
pub struct Metrics {
    requests: Mutex<BTreeMap<&'static str, Arc<RequestStats>>>,
    node: Arc<NodeStats>,
    timings: Arc<Timings>,
    peers: Arc<PeerStats>,
}

impl Metrics {
    pub fn new(node: Arc<NodeStats>, timings: Arc<Timings>, peers: Arc<PeerStats>) -> Self {
        Self { requests: Mutex::default(), node, timings, peers }
    }

    pub fn observe_request(&self, method: &'static str, latency: Duration, ok: bool) {
        let stats = self
            .requests
            .lock()
            .expect("metrics lock")
            .entry(method)
            .or_insert_with(|| {
                Arc::new(RequestStats {
                    ok: AtomicU64::new(0),
                    error: AtomicU64::new(0),
                    seconds: Histogram::new(SECONDS_BOUNDS),
                })
            })
            .clone();
        let outcome = if ok { &stats.ok } else { &stats.error };
        outcome.fetch_add(1, Ordering::Relaxed);
        stats.seconds.observe(latency.as_secs_f64());
    }

    fn render(&self, api: &Api) -> String {
        let mut out = String::new();
        let range = api.range();
        let [watchers, lagging, buffered, largest] = api.watches.gauges();
        // The member's store as a whole, over the ranges it holds (each range's own are the
        // `strata_range_*` gauges).
        let shared_ranges = api.shell.shared_ranges();
        let ranges = shared_ranges.all();
        let keys: usize = ranges.iter().map(|(_, r)| r.memo.read().expect("memo lock").len()).sum();
        let pending = ranges.iter().any(|(_, r)| r.compaction_pending.load(Ordering::Acquire));
        let gauges = [
            ("strata_raft_term", range.term.load(Ordering::Acquire) as f64),
            ("strata_raft_commit_index", range.commit_index.load(Ordering::Acquire) as f64),
            ("strata_raft_applied_index", range.applied_index.load(Ordering::Acquire) as f64),
            ("strata_mvcc_revision", shared_ranges.newest_revision() as f64),
            ("strata_mvcc_compact_revision", range.compact_revision.load(Ordering::Acquire) as f64),
            ("strata_mvcc_keys", keys as f64),
            ("strata_mvcc_compaction_pending", f64::from(u8::from(pending))),
            (
                "strata_has_leader",
                f64::from(u8::from(range.leader_id.load(Ordering::Acquire) != 0)),
            ),
            ("strata_raft_leader_id", range.leader_id.load(Ordering::Acquire) as f64),
            ("strata_watchers", watchers as f64),
            ("strata_watchers_lagging", lagging as f64),
            ("strata_watch_buffered_bytes", buffered as f64),
            ("strata_watch_largest_buffer_bytes", largest as f64),
        ];
        for (name, value) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
        }
        let node = &self.node;
        let counters = [
            ("strata_proposals_total", &node.proposals),
            ("strata_entries_applied_total", &node.entries_applied),
            ("strata_raftstore_rounds_total", &node.rounds),
            ("strata_leader_changes_total", &node.leader_changes),
            ("strata_snapshots_sent_total", &node.snapshots_sent),
            ("strata_snapshots_applied_total", &node.snapshots_applied),
            ("strata_watch_events_sent_total", &api.watches.events_sent),
            ("strata_txn_across_committed_total", &api.txns.committed),
            ("strata_txn_across_conflicts_total", &api.txns.conflicts),
            ("strata_txn_locks_resolved_total", &api.txns.resolved),
        ];
        for (name, counter) in counters {
            let _ =
                writeln!(out, "# TYPE {name} counter\n{name} {}", counter.load(Ordering::Relaxed));
        }
        render_histogram(&mut out, "strata_log_batch_entries", "", &node.log_batch_entries);
        render_histogram(&mut out, "strata_apply_batch_entries", "", &node.apply_batch_entries);
        let timings = &self.timings;
        render_histogram(&mut out, "strata_fsync_seconds", "", &timings.fsync);
        render_histogram(&mut out, "strata_buffered_write_seconds", "", &timings.buffered_write);
        render_histogram(&mut out, "strata_raftstore_round_seconds", "", &timings.round);
        render_peers(&mut out, &self.peers);
        render_ranges(&mut out, api);
        let requests: Vec<_> = self
            .requests
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(method, stats)| (*method, stats.clone()))
            .collect();
        let _ = writeln!(out, "# TYPE strata_grpc_request_seconds histogram");
        for (method, stats) in &requests {
            let labels = format!("method=\"{method}\"");
            render_histogram(&mut out, "strata_grpc_request_seconds", &labels, &stats.seconds);
        }
        let _ = writeln!(out, "# TYPE strata_grpc_requests_total counter");
        for (method, stats) in &requests {
            for (outcome, count) in [("ok", &stats.ok), ("error", &stats.error)] {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "strata_grpc_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}} {count}"
                    );
                }
            }
        }
        out
    }
}

/// Writes each range's state on this node, labelled with the range id: the unlabelled
/// `strata_raft_*` and `strata_mvcc_*` gauges above are the meta range's.
fn render_ranges(out: &mut String, api: &Api) {
    let ranges = api.range_statuses();
    let me = api.config.member_id();
    // How far each range holds back the watchers of its keys, behind the freshest range.
    let freshest = ranges.iter().map(|r| r.closed_revision).max().unwrap_or(0);
    let lag = |r: &RangeStatus| (freshest - r.closed_revision) as f64;
    type Gauge<'a> = &'a dyn Fn(&RangeStatus, u64) -> f64;
    let gauges: [(&str, Gauge); 11] = [
        ("strata_range_term", &|r, _| r.term as f64),
        ("strata_range_commit_index", &|r, _| r.commit_index as f64),
        ("strata_range_applied_index", &|r, _| r.applied_index as f64),
        ("strata_range_revision", &|r, _| r.revision as f64),
        ("strata_range_keys", &|r, _| r.keys as f64),
        ("strata_range_epoch_version", &|r, _| r.epoch_version as f64),
        ("strata_range_epoch_conf_ver", &|r, _| r.epoch_conf_ver as f64),
        ("strata_range_is_leader", &|r, me| f64::from(u8::from(r.leader_id == me))),
        ("strata_range_closed_revision", &|r, _| r.closed_revision as f64),
        ("strata_range_closed_lag_revisions", &|r, _| lag(r)),
        ("strata_range_locks", &|r, _| r.locks as f64),
    ];
    for (name, value) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge");
        for range in &ranges {
            let _ = writeln!(out, "{name}{{range=\"{}\"}} {}", range.range_id, value(range, me));
        }
    }
}

/// Writes the traffic with each peer, labelled with the peer's member id in hex (as
/// `member list` shows it).
fn render_peers(out: &mut String, stats: &PeerStats) {
    let peers: Vec<(u64, [u64; 7])> =
        stats.all().into_iter().map(|(peer, counters)| (peer, counters.values())).collect();
    for (i, counter) in PeerCounters::NAMES.iter().enumerate() {
        let name = format!("strata_peer_{counter}_total");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (peer, values) in &peers {
            let _ = writeln!(out, "{name}{{peer=\"{peer:x}\"}} {}", values[i]);
        }
    }
}

/// Writes one histogram in Prometheus's text format; `labels` are extra labels (may be empty).
fn render_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let (buckets, sum) = histogram.snapshot();
    if labels.is_empty() {
        let _ = writeln!(out, "# TYPE {name} histogram");
    }
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, count) in &buckets {
        let le = if bound.is_infinite() { "+Inf".to_string() } else { bound.to_string() };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let count = buckets.last().map_or(0, |(_, c)| *c);
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {count}");
}

/// The client port's plain HTTP routes: probes, metrics and etcd's JSON gateway.
pub fn router(api: Arc<Api>) -> Router {
    probes_and_metrics().merge(super::gateway::routes()).fallback(fallback).with_state(api)
}

/// What a metrics port (`--listen-metrics-urls`) serves: the probes and `/metrics` alone.
pub fn metrics_router(api: Arc<Api>) -> Router {
    probes_and_metrics().with_state(api)
}

fn probes_and_metrics() -> Router<Arc<Api>> {
    use super::health;
    Router::new()
        .route("/health", get(health::health))
        .route("/livez", get(health::livez))
        .route("/livez/{check}", get(health::livez_check))
        .route("/readyz", get(health::readyz))
        .route("/readyz/{check}", get(health::readyz_check))
        .route("/version", get(health::version))
        .route("/metrics", get(metrics))
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], api.metrics.render(&api)).into_response()
}

/// gRPC calls to services Strata does not serve yet get `UNIMPLEMENTED` with a message that
/// names them, instead of a bare 404.
async fn fallback(uri: Uri, headers: HeaderMap) -> Response {
    let is_grpc = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let method = uri.path().trim_start_matches('/').replace('/', ".");
    let status = super::not_yet(&method);
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if let Ok(message) = HeaderValue::from_str(&status.message().replace(['\r', '\n'], " ")) {
        headers.insert("grpc-message", message);
    }
    response
}
