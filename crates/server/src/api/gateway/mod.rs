//! etcd's HTTP/JSON gateway: `POST /v3/kv/range` and friends on the client port.
//!
//! etcd serves its gRPC API a second time as JSON through grpc-gateway. This module answers the
//! same routes the way etcd 3.4 does, so that `curl` scripts and HTTP-only clients written for
//! etcd work unchanged. Each route reads its body into the prost request message, calls the same
//! `Api` method the gRPC service calls, and writes the response message back as JSON.
//!
//! The JSON mapping is protobuf's, with grpc-gateway's settings as etcd configures them:
//!
//! - output uses the original proto field names (`create_revision`, `dbSize`, `peerURLs`), in
//!   field-number order, and leaves out every field that holds its default value; a message
//!   field that is set is written even when empty (`"header":{}`);
//! - `bytes` are standard base64 with padding; 64-bit integers are decimal strings;
//! - input accepts original and lowerCamelCase names (camelCase wins if both are given), 64-bit
//!   integers as strings or numbers, enums as names or numbers, `null` as "not set"; unknown
//!   fields are ignored and an empty body is an empty message;
//! - errors answer with the HTTP status grpc-gateway assigns to the gRPC code and the body
//!   `{"error":msg,"message":msg,"code":n}`.
//!
//! The conversion is written by hand over `serde_json::Value` rather than derived, because the
//! message types are generated and the mapping rules above are not serde's. Only the messages
//! these routes carry are converted. Where etcd is lenient by accident, Strata is strict: a oneof
//! with two members set is rejected (etcd keeps a random one).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use strata_core::Error;
use strata_core::pb::etcdserverpb::alarm_request::AlarmAction;
use strata_core::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, HashKvRequest, MoveLeaderRequest,
};
use strata_core::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
};
use strata_core::pb::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use strata_core::pb::v3lockpb::{LockRequest, UnlockRequest};
use tokio_stream::StreamExt as _;

use super::{Api, status};
use input::*;
use output::*;

mod input;
mod output;

/// Room for JSON syntax and base64's 4/3 growth over the largest request message. The message
/// size itself is checked after decoding, against `Limits::request_bytes_max`.
const BODY_OVERHEAD_FACTOR: usize = 2;
const BODY_OVERHEAD_BYTES: usize = 64 * 1024;

/// The gateway's routes, to merge into the client port's router. KV calls are recorded in the
/// same metrics as their gRPC twins: etcd's gateway calls its own gRPC server, so there too a
/// JSON request counts as an RPC.
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v3/kv/range", post(range))
        .route("/v3/kv/put", post(put))
        .route("/v3/kv/deleterange", post(delete_range))
        .route("/v3/kv/txn", post(txn))
        .route("/v3/kv/compaction", post(compaction))
        .route("/v3/maintenance/status", post(maintenance_status))
        .route("/v3/cluster/member/list", post(member_list))
        .route("/v3/watch", post(watch))
        .route("/v3/lease/grant", post(lease_grant))
        .route("/v3/lease/revoke", post(lease_revoke))
        .route("/v3/kv/lease/revoke", post(lease_revoke))
        .route("/v3/lease/keepalive", post(lease_keep_alive))
        .route("/v3/lease/timetolive", post(lease_time_to_live))
        .route("/v3/kv/lease/timetolive", post(lease_time_to_live))
        .route("/v3/lease/leases", post(lease_leases))
        .route("/v3/kv/lease/leases", post(lease_leases))
        .route("/v3/maintenance/alarm", post(alarm))
        .route("/v3/maintenance/defragment", post(defragment))
        .route("/v3/maintenance/hash", post(hash))
        .route("/v3/maintenance/hashkv", post(hash_kv))
        .route("/v3/maintenance/transfer-leadership", post(move_leader))
        .route("/v3/lock/lock", post(lock))
        .route("/v3/lock/unlock", post(unlock))
        .route("/v3/election/campaign", post(campaign))
        .route("/v3/election/proclaim", post(proclaim))
        .route("/v3/election/leader", post(election_leader))
        .route("/v3/election/resign", post(resign))
}

async fn alarm(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| {
        Ok(AlarmRequest {
            action: input.enumeration("action", AlarmAction::from_str_name)?,
            member_id: input.int64("memberID")? as u64,
            alarm: input.enumeration("alarm", AlarmType::from_str_name)?,
        })
    })
    .await?;
    let r = api.observe("Alarm", api.alarm(req)).await?;
    let alarm = |a: &AlarmMember| {
        let kind = AlarmType::try_from(a.alarm).map_or("", |t| t.as_str_name());
        let kind = if a.alarm == 0 { "" } else { kind };
        Fields::default().int("memberID", a.member_id).string("alarm", kind).done()
    };
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .messages("alarms", r.alarms.iter().map(alarm).collect())
        .done())
}

async fn defragment(State(api): State<Arc<Api>>, body: Body) -> Answer {
    decode(&api, body, |_| Ok(())).await?;
    let r = api.observe("Defragment", api.defragment()).await?;
    Ok(Fields::default().message("header", r.header.as_ref().map(header)).done())
}

async fn hash(State(api): State<Arc<Api>>, body: Body) -> Answer {
    decode(&api, body, |_| Ok(())).await?;
    let scan = api.clone();
    let work = super::maintenance::blocking(move || scan.hash());
    let r = api.observe("Hash", work).await?;
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .push("hash", Json::Value(Value::from(r.hash)))
        .done())
}

async fn hash_kv(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| Ok(HashKvRequest { revision: input.int64("revision")? }))
        .await?;
    let scan = api.clone();
    let work = super::maintenance::blocking(move || scan.hash_kv(req));
    let r = api.observe("HashKV", work).await?;
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .push("hash", Json::Value(Value::from(r.hash)))
        .int("compact_revision", r.compact_revision)
        .int("hash_revision", r.hash_revision)
        .done())
}

async fn move_leader(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| {
        Ok(MoveLeaderRequest { target_id: input.int64("targetID")? as u64 })
    })
    .await?;
    let r = api.observe("MoveLeader", api.move_leader(req)).await?;
    Ok(Fields::default().message("header", r.header.as_ref().map(header)).done())
}

async fn lock(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| {
        Ok(LockRequest { name: input.bytes("name")?, lease: input.int64("lease")? })
    })
    .await?;
    let r = api.observe("Lock", api.lock(req)).await?;
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .bytes("key", &r.key)
        .done())
}

async fn unlock(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| Ok(UnlockRequest { key: input.bytes("key")? })).await?;
    let r = api.observe("Unlock", api.unlock(req)).await?;
    Ok(Fields::default().message("header", r.header.as_ref().map(header)).done())
}

fn leader_key_input(input: &Input) -> Result<Option<LeaderKey>, DecodeError> {
    let Some(leader) = input.message("leader")? else { return Ok(None) };
    Ok(Some(LeaderKey {
        name: leader.bytes("name")?,
        key: leader.bytes("key")?,
        rev: leader.int64("rev")?,
        lease: leader.int64("lease")?,
    }))
}

fn leader_key(l: &LeaderKey) -> Json {
    Fields::default()
        .bytes("name", &l.name)
        .bytes("key", &l.key)
        .int("rev", l.rev)
        .int("lease", l.lease)
        .done()
}

async fn campaign(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| {
        Ok(CampaignRequest {
            name: input.bytes("name")?,
            lease: input.int64("lease")?,
            value: input.bytes("value")?,
        })
    })
    .await?;
    let r = api.observe("Campaign", api.campaign(req)).await?;
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .message("leader", r.leader.as_ref().map(leader_key))
        .done())
}

async fn proclaim(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| {
        Ok(ProclaimRequest { leader: leader_key_input(input)?, value: input.bytes("value")? })
    })
    .await?;
    let r = api.observe("Proclaim", api.proclaim(req)).await?;
    Ok(Fields::default().message("header", r.header.as_ref().map(header)).done())
}

async fn election_leader(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| Ok(LeaderRequest { name: input.bytes("name")? })).await?;
    let r = api.observe("Leader", api.election_leader(req)).await?;
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .message("kv", r.kv.as_ref().map(key_value))
        .done())
}

async fn resign(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req =
        decode(&api, body, |input| Ok(ResignRequest { leader: leader_key_input(input)? })).await?;
    let r = api.observe("Resign", api.resign(req)).await?;
    Ok(Fields::default().message("header", r.header.as_ref().map(header)).done())
}

async fn lease_grant(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| {
        Ok(LeaseGrantRequest { ttl: input.int64("TTL")?, id: input.int64("ID")? })
    })
    .await?;
    let r = api.observe("LeaseGrant", api.lease_grant(req)).await?;
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .string("error", &r.error)
        .done())
}

async fn lease_revoke(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| Ok(LeaseRevokeRequest { id: input.int64("ID")? })).await?;
    let r = api.observe("LeaseRevoke", api.lease_revoke(req)).await?;
    Ok(Fields::default().message("header", r.header.as_ref().map(header)).done())
}

/// One keep-alive, answered as grpc-gateway answers its stream: one `{"result": ...}` line.
async fn lease_keep_alive(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let id = decode(&api, body, |input| input.int64("ID")).await?;
    let r = api.observe("LeaseKeepAlive", api.lease_keep_alive_once(id, false)).await?;
    let result = Fields::default()
        .message("header", r.header.as_ref().map(header))
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .done();
    Ok(Json::Object(vec![("result", result)]))
}

async fn lease_time_to_live(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, |input| {
        Ok(LeaseTimeToLiveRequest { id: input.int64("ID")?, keys: input.bool("keys")? })
    })
    .await?;
    let r = api.observe("LeaseTimeToLive", api.lease_time_to_live(req, false)).await?;
    let keys: Vec<Json> = r.keys.iter().map(|k| Json::Value(BASE64.encode(k).into())).collect();
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .int("grantedTTL", r.granted_ttl)
        .messages("keys", keys)
        .done())
}

async fn lease_leases(State(api): State<Arc<Api>>, body: Body) -> Answer {
    decode(&api, body, |_| Ok(())).await?;
    let r = api.observe("LeaseLeases", api.lease_leases()).await?;
    let leases = r.leases.iter().map(|l| Fields::default().int("ID", l.id).done()).collect();
    Ok(Fields::default()
        .message("header", r.header.as_ref().map(header))
        .messages("leases", leases)
        .done())
}

type Answer = Result<Json, Failure>;

async fn range(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, range_request).await?;
    Ok(range_response(&api.observe("Range", api.range_request(req)).await?))
}

async fn put(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, put_request).await?;
    Ok(put_response(&api.observe("Put", api.put_request(req)).await?))
}

async fn delete_range(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, delete_range_request).await?;
    Ok(delete_range_response(&api.observe("DeleteRange", api.delete_range_request(req)).await?))
}

async fn txn(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, txn_request).await?;
    Ok(txn_response(&api.observe("Txn", api.txn_request(req)).await?))
}

async fn compaction(State(api): State<Arc<Api>>, body: Body) -> Answer {
    let req = decode(&api, body, compaction_request).await?;
    Ok(compaction_response(&api.observe("Compact", api.compact_request(req)).await?))
}

async fn maintenance_status(State(api): State<Arc<Api>>, body: Body) -> Answer {
    // `StatusRequest` has no fields, but a body that is not JSON is still an error, as in etcd.
    decode(&api, body, |_| Ok(())).await?;
    Ok(status_response(&api.status_response()))
}

async fn member_list(State(api): State<Arc<Api>>, body: Body) -> Answer {
    decode(&api, body, |_| Ok(())).await?;
    Ok(member_list_response(&api.member_list_response()))
}

/// A watch over HTTP: the body holds one or more `WatchRequest` objects; the response streams
/// one `{"result": WatchResponse}` object per line for as long as the client keeps the
/// connection open (grpc-gateway's streaming form). The whole body is read before the session
/// starts, so requests cannot be added later on the same connection.
async fn watch(State(api): State<Arc<Api>>, body: Body) -> Result<Response, Failure> {
    let limit = api.limits.request_bytes_max * BODY_OVERHEAD_FACTOR + BODY_OVERHEAD_BYTES;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| Error::RequestTooLarge)?;
    let mut requests = Vec::new();
    for value in serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>() {
        match value.map_err(DecodeError::from)? {
            Value::Object(object) => requests.push(Ok(watch_request(&Input(&object))?)),
            _ => return Err(DecodeError::NotAnObject.into()),
        }
    }
    let responses = super::watch::open(api, tokio_stream::iter(requests));
    let lines = tokio_stream::wrappers::ReceiverStream::new(responses).map(|item| {
        let object = match item {
            Ok(response) => Json::Object(vec![("result", watch_response(&response))]),
            Err(status) => Json::Object(vec![("error", stream_error(&status))]),
        };
        let mut line = serde_json::to_vec(&object).expect("JSON values serialize");
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    let content_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
    Ok((content_type, Body::from_stream(lines)).into_response())
}

/// A failed call, answered as grpc-gateway answers it: the HTTP status for the gRPC code and a
/// JSON body carrying the message twice (`error` is the field older clients read) and the code.
#[derive(Debug)]
struct Failure(tonic::Status);

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure(status(error))
    }
}

impl From<DecodeError> for Failure {
    fn from(error: DecodeError) -> Self {
        Failure(tonic::Status::invalid_argument(error.to_string()))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let message = Json::Value(Value::from(self.0.message()));
        let body = Json::Object(vec![
            ("error", message.clone()),
            ("message", message),
            ("code", Json::Value(Value::from(self.0.code() as i32))),
        ]);
        (http_status(self.0.code()), body).into_response()
    }
}

/// grpc-gateway's `HTTPStatusFromCode`.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
