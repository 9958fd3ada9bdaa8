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
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use strata_core::Error;
use strata_core::pb::etcdserverpb::alarm_request::AlarmAction;
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::response_op::Response as OpResponse;
use strata_core::pb::etcdserverpb::watch_create_request::FilterType;
use strata_core::pb::etcdserverpb::watch_request::RequestUnion;
use strata_core::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, HashKvRequest, MoveLeaderRequest,
};
use strata_core::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    Member, MemberListResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, StatusResponse, TxnRequest, TxnResponse,
};
use strata_core::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use strata_core::pb::mvccpb::event::EventType;
use strata_core::pb::mvccpb::{Event, KeyValue};
use strata_core::pb::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use strata_core::pb::v3lockpb::{LockRequest, UnlockRequest};
use tokio_stream::StreamExt as _;

use super::{Api, status};

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

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a request body is not a valid JSON encoding of the request message.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("{field}: expected {expected}, got {got}")]
    Type { field: &'static str, expected: &'static str, got: String },
    #[error("{field}: illegal base64 data: {source}")]
    Base64 { field: &'static str, source: base64::DecodeError },
    #[error("{field}: unknown enum value {value}")]
    Enum { field: &'static str, value: String },
    #[error("{0}: more than one field of the oneof is set")]
    Oneof(&'static str),
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

// ---------------------------------------------------------------------------------------------
// Input: JSON to request messages

/// Reads a request body and decodes it with `message`.
async fn decode<T>(
    api: &Api,
    body: Body,
    message: impl FnOnce(&Input) -> Result<T, DecodeError>,
) -> Result<T, Failure> {
    let limit = api.limits.request_bytes_max * BODY_OVERHEAD_FACTOR + BODY_OVERHEAD_BYTES;
    // Reading fails on the limit or on a broken connection; only the former has anyone
    // waiting for the answer.
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| Error::RequestTooLarge)?;
    let object = parse_body(&bytes)?;
    Ok(message(&Input(&object))?)
}

/// The body's JSON object. Like grpc-gateway, an empty body is an empty message and anything
/// after the first JSON value is ignored.
fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::Deserializer::from_slice(bytes).into_iter::<Value>().next() {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(object))) => Ok(object),
        Some(Ok(_)) => Err(DecodeError::NotAnObject),
        Some(Err(e)) => Err(e.into()),
    }
}

/// One JSON object read as a protobuf message.
struct Input<'a>(&'a Map<String, Value>);

impl<'a> Input<'a> {
    /// A field by its lowerCamelCase JSON name or its original name, preferring the former as
    /// Go's jsonpb does. `null` means "not set".
    fn get(&self, name: &'static str) -> Option<&'a Value> {
        let camel = lower_camel(name);
        self.0.get(&camel).or_else(|| self.0.get(name)).filter(|v| !v.is_null())
    }

    fn int64(&self, name: &'static str) -> Result<i64, DecodeError> {
        let parsed = match self.get(name) {
            None => return Ok(0),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        parsed.ok_or_else(|| mismatch(name, "an int64 as a number or a string", self.get(name)))
    }

    fn bool(&self, name: &'static str) -> Result<bool, DecodeError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            other => Err(mismatch(name, "true or false", other)),
        }
    }

    fn bytes(&self, name: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => {
                BASE64.decode(s).map_err(|source| DecodeError::Base64 { field: name, source })
            }
            other => Err(mismatch(name, "a base64 string", other)),
        }
    }

    /// An enum by name (`from_name` is prost's `from_str_name`) or by number. Unknown numbers
    /// are kept, as protobuf does for open enums.
    fn enumeration<E: Into<i32>>(
        &self,
        name: &'static str,
        from_name: fn(&str) -> Option<E>,
    ) -> Result<i32, DecodeError> {
        match self.get(name) {
            None => Ok(0),
            Some(Value::String(s)) => from_name(s)
                .map(Into::into)
                .ok_or_else(|| DecodeError::Enum { field: name, value: format!("{s:?}") }),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| DecodeError::Enum { field: name, value: n.to_string() }),
            other => Err(mismatch(name, "an enum name or number", other)),
        }
    }

    fn message(&self, name: &'static str) -> Result<Option<Input<'a>>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(Input(object))),
            other => Err(mismatch(name, "an object", other)),
        }
    }

    fn messages(&self, name: &'static str) -> Result<Vec<Input<'a>>, DecodeError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Object(object) => Ok(Input(object)),
                    other => Err(mismatch(name, "an array of objects", Some(other))),
                })
                .collect(),
            other => Err(mismatch(name, "an array", other)),
        }
    }

    /// Which member of a oneof is set, if any.
    fn oneof(
        &self,
        oneof: &'static str,
        members: &[&'static str],
    ) -> Result<Option<&'static str>, DecodeError> {
        let set: Vec<&'static str> =
            members.iter().copied().filter(|m| self.get(m).is_some()).collect();
        match set.as_slice() {
            [] => Ok(None),
            [member] => Ok(Some(member)),
            _ => Err(DecodeError::Oneof(oneof)),
        }
    }
}

fn mismatch(field: &'static str, expected: &'static str, got: Option<&Value>) -> DecodeError {
    let got = got.map_or_else(|| "null".to_string(), Value::to_string);
    DecodeError::Type { field, expected, got }
}

/// protoc's JSON name for a field: `range_end` → `rangeEnd`.
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

fn range_request(input: &Input) -> Result<RangeRequest, DecodeError> {
    Ok(RangeRequest {
        key: input.bytes("key")?,
        range_end: input.bytes("range_end")?,
        limit: input.int64("limit")?,
        revision: input.int64("revision")?,
        sort_order: input.enumeration("sort_order", SortOrder::from_str_name)?,
        sort_target: input.enumeration("sort_target", SortTarget::from_str_name)?,
        serializable: input.bool("serializable")?,
        keys_only: input.bool("keys_only")?,
        count_only: input.bool("count_only")?,
        min_mod_revision: input.int64("min_mod_revision")?,
        max_mod_revision: input.int64("max_mod_revision")?,
        min_create_revision: input.int64("min_create_revision")?,
        max_create_revision: input.int64("max_create_revision")?,
    })
}

fn put_request(input: &Input) -> Result<PutRequest, DecodeError> {
    Ok(PutRequest {
        key: input.bytes("key")?,
        value: input.bytes("value")?,
        lease: input.int64("lease")?,
        prev_kv: input.bool("prev_kv")?,
        ignore_value: input.bool("ignore_value")?,
        ignore_lease: input.bool("ignore_lease")?,
    })
}

fn delete_range_request(input: &Input) -> Result<DeleteRangeRequest, DecodeError> {
    Ok(DeleteRangeRequest {
        key: input.bytes("key")?,
        range_end: input.bytes("range_end")?,
        prev_kv: input.bool("prev_kv")?,
    })
}

fn txn_request(input: &Input) -> Result<TxnRequest, DecodeError> {
    let ops = |name| input.messages(name)?.iter().map(request_op).collect::<Result<Vec<_>, _>>();
    Ok(TxnRequest {
        compare: input.messages("compare")?.iter().map(compare).collect::<Result<_, _>>()?,
        success: ops("success")?,
        failure: ops("failure")?,
    })
}

fn compare(input: &Input) -> Result<Compare, DecodeError> {
    let union = ["version", "create_revision", "mod_revision", "value", "lease"];
    let target_union = match input.oneof("target_union", &union)? {
        Some("version") => Some(TargetUnion::Version(input.int64("version")?)),
        Some("create_revision") => {
            Some(TargetUnion::CreateRevision(input.int64("create_revision")?))
        }
        Some("mod_revision") => Some(TargetUnion::ModRevision(input.int64("mod_revision")?)),
        Some("value") => Some(TargetUnion::Value(input.bytes("value")?)),
        Some("lease") => Some(TargetUnion::Lease(input.int64("lease")?)),
        _ => None,
    };
    Ok(Compare {
        result: input.enumeration("result", CompareResult::from_str_name)?,
        target: input.enumeration("target", CompareTarget::from_str_name)?,
        key: input.bytes("key")?,
        range_end: input.bytes("range_end")?,
        target_union,
    })
}

fn request_op(input: &Input) -> Result<RequestOp, DecodeError> {
    let ops = ["request_range", "request_put", "request_delete_range", "request_txn"];
    let Some(name) = input.oneof("request", &ops)? else {
        return Ok(RequestOp { request: None });
    };
    // `oneof` only names members that are set, so the message is there.
    let Some(inner) = input.message(name)? else { return Ok(RequestOp { request: None }) };
    let request = match name {
        "request_range" => OpRequest::RequestRange(range_request(&inner)?),
        "request_put" => OpRequest::RequestPut(put_request(&inner)?),
        "request_delete_range" => OpRequest::RequestDeleteRange(delete_range_request(&inner)?),
        _ => OpRequest::RequestTxn(txn_request(&inner)?),
    };
    Ok(RequestOp { request: Some(request) })
}

fn watch_request(input: &Input) -> Result<WatchRequest, DecodeError> {
    let members = ["create_request", "cancel_request", "progress_request"];
    let Some(name) = input.oneof("request_union", &members)? else {
        return Ok(WatchRequest { request_union: None });
    };
    let Some(inner) = input.message(name)? else { return Ok(WatchRequest { request_union: None }) };
    let request = match name {
        "create_request" => {
            let filters = match inner.get("filters") {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        let wrapper = Map::from_iter([("f".to_string(), item.clone())]);
                        Input(&wrapper).enumeration("f", FilterType::from_str_name)
                    })
                    .collect::<Result<_, _>>()?,
                other => return Err(mismatch("filters", "an array", other)),
            };
            RequestUnion::CreateRequest(WatchCreateRequest {
                key: inner.bytes("key")?,
                range_end: inner.bytes("range_end")?,
                start_revision: inner.int64("start_revision")?,
                progress_notify: inner.bool("progress_notify")?,
                filters,
                prev_kv: inner.bool("prev_kv")?,
                watch_id: inner.int64("watch_id")?,
                fragment: inner.bool("fragment")?,
            })
        }
        "cancel_request" => {
            RequestUnion::CancelRequest(WatchCancelRequest { watch_id: inner.int64("watch_id")? })
        }
        _ => RequestUnion::ProgressRequest(WatchProgressRequest {}),
    };
    Ok(WatchRequest { request_union: Some(request) })
}

fn compaction_request(input: &Input) -> Result<CompactionRequest, DecodeError> {
    Ok(CompactionRequest { revision: input.int64("revision")?, physical: input.bool("physical")? })
}

// ---------------------------------------------------------------------------------------------
// Output: response messages to JSON

/// Output JSON whose objects keep their fields in the order written: etcd writes them in
/// field-number order, and serde_json's own `Map` would sort them.
#[derive(Clone, Debug)]
enum Json {
    Value(Value),
    Object(Vec<(&'static str, Json)>),
    Array(Vec<Json>),
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Value(value) => value.serialize(serializer),
            Json::Object(fields) => serializer.collect_map(fields.iter().map(|(k, v)| (k, v))),
            Json::Array(items) => serializer.collect_seq(items),
        }
    }
}

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}

/// One message's JSON object under construction; fields holding their default value are left
/// out, as protobuf's JSON mapping does unless asked to emit defaults.
#[derive(Default)]
struct Fields(Vec<(&'static str, Json)>);

impl Fields {
    fn push(mut self, name: &'static str, value: Json) -> Self {
        self.0.push((name, value));
        self
    }

    /// A 64-bit integer, as a string: JSON numbers lose precision above 2^53.
    fn int(self, name: &'static str, value: impl Into<i128>) -> Self {
        match value.into() {
            0 => self,
            v => self.push(name, Json::Value(Value::String(v.to_string()))),
        }
    }

    fn bool(self, name: &'static str, value: bool) -> Self {
        if value { self.push(name, Json::Value(Value::Bool(true))) } else { self }
    }

    fn string(self, name: &'static str, value: &str) -> Self {
        if value.is_empty() { self } else { self.push(name, Json::Value(Value::from(value))) }
    }

    fn bytes(self, name: &'static str, value: &[u8]) -> Self {
        if value.is_empty() {
            self
        } else {
            self.push(name, Json::Value(BASE64.encode(value).into()))
        }
    }

    fn strings(self, name: &'static str, values: &[String]) -> Self {
        self.messages(name, values.iter().map(|v| Json::Value(Value::from(v.as_str()))).collect())
    }

    /// A message field: written when set, even if every field in it is a default.
    fn message(self, name: &'static str, value: Option<Json>) -> Self {
        match value {
            Some(value) => self.push(name, value),
            None => self,
        }
    }

    fn messages(self, name: &'static str, values: Vec<Json>) -> Self {
        if values.is_empty() { self } else { self.push(name, Json::Array(values)) }
    }

    fn done(self) -> Json {
        Json::Object(self.0)
    }
}

fn header(h: &ResponseHeader) -> Json {
    Fields::default()
        .int("cluster_id", h.cluster_id)
        .int("member_id", h.member_id)
        .int("revision", h.revision)
        .int("raft_term", h.raft_term)
        .done()
}

fn key_value(kv: &KeyValue) -> Json {
    Fields::default()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .done()
}

fn range_response(r: &RangeResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .messages("kvs", r.kvs.iter().map(key_value).collect())
        .bool("more", r.more)
        .int("count", r.count)
        .done()
}

fn put_response(r: &PutResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .message("prev_kv", r.prev_kv.as_ref().map(key_value))
        .done()
}

fn delete_range_response(r: &DeleteRangeResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .int("deleted", r.deleted)
        .messages("prev_kvs", r.prev_kvs.iter().map(key_value).collect())
        .done()
}

fn txn_response(r: &TxnResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .bool("succeeded", r.succeeded)
        .messages("responses", r.responses.iter().map(response_op).collect())
        .done()
}

fn response_op(op: &ResponseOp) -> Json {
    let fields = Fields::default();
    match &op.response {
        Some(OpResponse::ResponseRange(r)) => {
            fields.message("response_range", Some(range_response(r)))
        }
        Some(OpResponse::ResponsePut(r)) => fields.message("response_put", Some(put_response(r))),
        Some(OpResponse::ResponseDeleteRange(r)) => {
            fields.message("response_delete_range", Some(delete_range_response(r)))
        }
        Some(OpResponse::ResponseTxn(r)) => fields.message("response_txn", Some(txn_response(r))),
        None => fields,
    }
    .done()
}

fn compaction_response(r: &CompactionResponse) -> Json {
    Fields::default().message("header", r.header.as_ref().map(header)).done()
}

/// `StatusResponse`'s proto field names are camelCase already, so they are written as such.
fn status_response(r: &StatusResponse) -> Json {
    let downgrade = r.downgrade_info.as_ref().map(|d| {
        Fields::default()
            .bool("enabled", d.enabled)
            .string("targetVersion", &d.target_version)
            .done()
    });
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .string("version", &r.version)
        .int("dbSize", r.db_size)
        .int("leader", r.leader)
        .int("raftIndex", r.raft_index)
        .int("raftTerm", r.raft_term)
        .int("raftAppliedIndex", r.raft_applied_index)
        .strings("errors", &r.errors)
        .int("dbSizeInUse", r.db_size_in_use)
        .bool("isLearner", r.is_learner)
        .string("storageVersion", &r.storage_version)
        .int("dbSizeQuota", r.db_size_quota)
        .message("downgradeInfo", downgrade)
        .done()
}

fn watch_response(r: &WatchResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .int("watch_id", r.watch_id)
        .bool("created", r.created)
        .bool("canceled", r.canceled)
        .int("compact_revision", r.compact_revision)
        .string("cancel_reason", &r.cancel_reason)
        .bool("fragment", r.fragment)
        .messages("events", r.events.iter().map(event).collect())
        .done()
}

fn event(e: &Event) -> Json {
    let kind = EventType::try_from(e.r#type).map_or("", |t| t.as_str_name());
    // PUT is the enum's zero value, left out like every default.
    let kind = if e.r#type == 0 { "" } else { kind };
    Fields::default()
        .string("type", kind)
        .message("kv", e.kv.as_ref().map(key_value))
        .message("prev_kv", e.prev_kv.as_ref().map(key_value))
        .done()
}

/// grpc-gateway's error object inside a stream.
fn stream_error(status: &tonic::Status) -> Json {
    let number = |n: u16| Json::Value(Value::from(n));
    Fields::default()
        .push("grpc_code", number(status.code() as u16))
        .push("http_code", number(http_status(status.code()).as_u16()))
        .string("message", status.message())
        .string("http_status", http_status(status.code()).canonical_reason().unwrap_or(""))
        .done()
}

fn member_list_response(r: &MemberListResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .messages("members", r.members.iter().map(member).collect())
        .done()
}

/// `Member`'s proto names are `ID`, `peerURLs` and `clientURLs` (prost's `peer_ur_ls`).
fn member(m: &Member) -> Json {
    Fields::default()
        .int("ID", m.id)
        .string("name", &m.name)
        .strings("peerURLs", &m.peer_ur_ls)
        .strings("clientURLs", &m.client_ur_ls)
        .bool("isLearner", m.is_learner)
        .done()
}
