//! Plain HTTP on the client port: `/health`, `/metrics`, and the answer for etcd gRPC services
//! that are not served yet.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Api;

/// Request counters and latency sums per RPC, in Prometheus text format.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, bool), (u64, f64)>>,
}

impl Metrics {
    pub fn observe_request(&self, method: &'static str, latency: Duration, ok: bool) {
        let mut requests = self.requests.lock().expect("metrics lock");
        let entry = requests.entry((method, ok)).or_default();
        entry.0 += 1;
        entry.1 += latency.as_secs_f64();
    }

    fn render(&self, api: &Api) -> String {
        let mut out = String::new();
        let range = api.range();
        let gauges = [
            ("strata_raft_term", range.term.load(Ordering::Acquire) as f64),
            ("strata_raft_commit_index", range.commit_index.load(Ordering::Acquire) as f64),
            ("strata_raft_applied_index", range.applied_index.load(Ordering::Acquire) as f64),
            ("strata_mvcc_revision", range.revision.load(Ordering::Acquire) as f64),
            ("strata_mvcc_compact_revision", range.compact_revision.load(Ordering::Acquire) as f64),
            ("strata_has_leader", f64::from(u8::from(range.leader_id.load(Ordering::Acquire) != 0))),
            ("strata_raft_leader_id", range.leader_id.load(Ordering::Acquire) as f64),
        ];
        for (name, value) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
        }
        let _ = writeln!(out, "# TYPE strata_grpc_requests_total counter");
        let _ = writeln!(out, "# TYPE strata_grpc_request_seconds_sum counter");
        for ((method, ok), (count, seconds)) in self.requests.lock().expect("metrics lock").iter() {
            let outcome = if *ok { "ok" } else { "error" };
            let _ = writeln!(out, "strata_grpc_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}} {count}");
            let _ = writeln!(out, "strata_grpc_request_seconds_sum{{method=\"{method}\",outcome=\"{outcome}\"}} {seconds}");
        }
        out
    }
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .with_state(api)
}

/// Healthy when this member knows a leader, as etcd's `/health` reports.
async fn health(State(api): State<Arc<Api>>) -> Response {
    let has_leader = api.range().leader_id.load(Ordering::Acquire) != 0;
    let body = if has_leader { r#"{"health":"true"}"# } else { r#"{"health":"false","reason":"no leader"}"# };
    let code = if has_leader { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [("content-type", "application/json")], body).into_response()
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
