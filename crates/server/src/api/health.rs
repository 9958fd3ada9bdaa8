//! Health and version endpoints on the client port, answered as etcd 3.5 answers them, so that
//! load balancers, Kubernetes probes and tools such as Patroni work unchanged:
//!
//! * `/health` — JSON `{"health":"true"|"false","reason":…}`: unhealthy (503) with an active
//!   alarm not named by an `exclude=` parameter, without a leader (unless `serializable=true`),
//!   or when a one-key read fails (linearizable unless `serializable=true`).
//! * `/livez` and `/readyz` — plain text `ok` (with `?verbose`, a line per check); a failing
//!   check answers 503 listing every check. `/livez` runs `serializable_read`; `/readyz` runs
//!   `data_corruption`, `serializable_read` and `linearizable_read`. `exclude=NAME` skips a
//!   check, and each check has a path of its own (`/readyz/linearizable_read`).
//! * `/version` — `{"etcdserver":…,"etcdcluster":…}`.
//!
//! And the standard `grpc.health.v1.Health` service, which answers `SERVING` for the server as
//! a whole (the empty service name) while the process serves.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use strata_core::mvcc::{alarm, view::View};
use strata_core::pb::etcdserverpb::{AlarmType, RangeRequest};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::Api;
use super::maintenance::ETCD_API_VERSION;
use crate::pb::health::health_check_response::ServingStatus;
use crate::pb::health::health_server::Health;
use crate::pb::health::{HealthCheckRequest, HealthCheckResponse};

/// The query parameters the endpoints read: every `exclude=` value, and the two flags.
#[derive(Default)]
struct Query {
    exclude: Vec<String>,
    serializable: bool,
    verbose: bool,
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut query = Query::default();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "exclude" if !value.is_empty() => query.exclude.push(value.to_string()),
                "serializable" => query.serializable = value == "true",
                "verbose" => query.verbose = true,
                _ => {}
            }
        }
        query
    }
}

/// `/health`: the alarms, then the leader, then a read.
pub async fn health(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    let query = Query::parse(raw.as_deref());
    let verdict = match check_alarms(&api, &query.exclude) {
        Err(reason) => Err(reason),
        Ok(()) if !query.serializable && !has_leader(&api) => Err("RAFT NO LEADER".to_string()),
        Ok(()) => read(&api, query.serializable).await.map_err(|e| format!("RANGE ERROR:{e}")),
    };
    let (code, health, reason) = match verdict {
        Ok(()) => (StatusCode::OK, "true", String::new()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, "false", reason),
    };
    if code != StatusCode::OK {
        tracing::warn!(%reason, "serving /health false");
    }
    let body = serde_json::json!({ "health": health, "reason": reason }).to_string();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `/version`: the etcd release whose API this member speaks, and the cluster's.
pub async fn version() -> Response {
    let body =
        serde_json::json!({ "etcdserver": ETCD_API_VERSION, "etcdcluster": ETCD_API_VERSION });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The probes' checks, in the order they run and report.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
}

impl Check {
    const LIVEZ: &[Check] = &[Check::SerializableRead];
    const READYZ: &[Check] =
        &[Check::DataCorruption, Check::SerializableRead, Check::LinearizableRead];

    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
        }
    }

    async fn run(self, api: &Api) -> Result<(), String> {
        match self {
            Check::DataCorruption => {
                let alarms =
                    alarm::all(&View::new(api.engine.as_ref())).map_err(|e| e.to_string())?;
                match alarms.iter().any(|a| a.alarm == AlarmType::Corrupt as i32) {
                    true => Err("alarm activated: CORRUPT".to_string()),
                    false => Ok(()),
                }
            }
            Check::SerializableRead => read(api, true).await.map_err(|e| e.to_string()),
            Check::LinearizableRead => read(api, false).await.map_err(|e| e.to_string()),
        }
    }
}

pub async fn livez(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    probe(&api, Check::LIVEZ, &Query::parse(raw.as_deref())).await
}

pub async fn readyz(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Response {
    probe(&api, Check::READYZ, &Query::parse(raw.as_deref())).await
}

/// `/livez/NAME` and `/readyz/NAME`: one check alone.
pub async fn livez_check(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    one_check(&api, Check::LIVEZ, &name, raw).await
}

pub async fn readyz_check(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    one_check(&api, Check::READYZ, &name, raw).await
}

async fn one_check(api: &Api, checks: &[Check], name: &str, raw: Option<String>) -> Response {
    let Some(check) = checks.iter().find(|c| c.name() == name) else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    let query = Query { exclude: Vec::new(), ..Query::parse(raw.as_deref()) };
    probe(api, std::slice::from_ref(check), &query).await
}

/// Runs the checks not excluded; `ok` when all pass, else 503 with a line per check (names
/// excluded that are not checks are ignored, as etcd ignores them).
async fn probe(api: &Api, checks: &[Check], query: &Query) -> Response {
    let mut report = String::new();
    let mut failed = false;
    for check in checks.iter().filter(|c| !query.exclude.iter().any(|e| e == c.name())) {
        match check.run(api).await {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", check.name())),
            Err(e) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {e}\n", check.name()));
            }
        }
    }
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if failed {
        tracing::warn!(report = report.trim_end(), "health check failed");
        return (StatusCode::SERVICE_UNAVAILABLE, text, report).into_response();
    }
    let body = if query.verbose { report + "ok\n" } else { "ok\n".to_string() };
    (StatusCode::OK, text, body).into_response()
}

/// The first active alarm not excluded, as etcd names it.
fn check_alarms(api: &Api, exclude: &[String]) -> Result<(), String> {
    let alarms = alarm::all(&View::new(api.engine.as_ref())).map_err(|e| e.to_string())?;
    for member_alarm in alarms {
        let kind = AlarmType::try_from(member_alarm.alarm).unwrap_or(AlarmType::None);
        if exclude.iter().any(|e| e == kind.as_str_name()) {
            continue;
        }
        return Err(match kind {
            AlarmType::Nospace => "ALARM NOSPACE",
            AlarmType::Corrupt => "ALARM CORRUPT",
            AlarmType::None => "ALARM UNKNOWN",
        }
        .to_string());
    }
    Ok(())
}

fn has_leader(api: &Api) -> bool {
    api.range().leader_id.load(Ordering::Acquire) != 0
}

/// A read of one key, the check etcd's probes make (a single key, so that it costs the same
/// however large the store).
async fn read(api: &Api, serializable: bool) -> Result<(), strata_core::Error> {
    let request = RangeRequest {
        key: b"health".to_vec(),
        keys_only: true,
        serializable,
        ..Default::default()
    };
    api.range_request(request).await.map(|_| ())
}

/// `grpc.health.v1.Health`.
pub struct HealthService;

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: GrpcRequest<HealthCheckRequest>,
    ) -> Result<GrpcResponse<HealthCheckResponse>, Status> {
        let status = serving_status(&request.into_inner().service)?;
        Ok(GrpcResponse::new(HealthCheckResponse { status: status as i32 }))
    }

    type WatchStream = WatchStream;

    /// The status once; the stream then stays open, as the status of a serving process does
    /// not change until it stops (and the stream with it).
    async fn watch(
        &self,
        request: GrpcRequest<HealthCheckRequest>,
    ) -> Result<GrpcResponse<Self::WatchStream>, Status> {
        let status = serving_status(&request.into_inner().service)?;
        let first = HealthCheckResponse { status: status as i32 };
        use tokio_stream::StreamExt as _;
        let stream = tokio_stream::once(Ok(first)).chain(tokio_stream::pending());
        Ok(GrpcResponse::new(Box::pin(stream)))
    }
}

fn serving_status(service: &str) -> Result<ServingStatus, Status> {
    match service {
        "" => Ok(ServingStatus::Serving),
        other => Err(Status::not_found(format!("unknown service {other}"))),
    }
}
