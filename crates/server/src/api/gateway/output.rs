//! Output: response messages to JSON, with protobuf's JSON mapping as grpc-gateway applies it
//! for etcd (see the module above).

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Serialize, Serializer};
use serde_json::Value;
use strata_core::pb::etcdserverpb::WatchResponse;
use strata_core::pb::etcdserverpb::response_op::Response as OpResponse;
use strata_core::pb::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, Member, MemberListResponse, PutResponse,
    RangeResponse, ResponseHeader, ResponseOp, StatusResponse, TxnResponse,
};
use strata_core::pb::mvccpb::event::EventType;
use strata_core::pb::mvccpb::{Event, KeyValue};

use super::http_status;

/// Output JSON whose objects keep their fields in the order written: etcd writes them in
/// field-number order, and serde_json's own `Map` would sort them.
#[derive(Clone, Debug)]
pub(super) enum Json {
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
pub(super) struct Fields(Vec<(&'static str, Json)>);

impl Fields {
    pub(super) fn push(mut self, name: &'static str, value: Json) -> Self {
        self.0.push((name, value));
        self
    }

    /// A 64-bit integer, as a string: JSON numbers lose precision above 2^53.
    pub(super) fn int(self, name: &'static str, value: impl Into<i128>) -> Self {
        match value.into() {
            0 => self,
            v => self.push(name, Json::Value(Value::String(v.to_string()))),
        }
    }

    pub(super) fn bool(self, name: &'static str, value: bool) -> Self {
        if value { self.push(name, Json::Value(Value::Bool(true))) } else { self }
    }

    pub(super) fn string(self, name: &'static str, value: &str) -> Self {
        if value.is_empty() { self } else { self.push(name, Json::Value(Value::from(value))) }
    }

    pub(super) fn bytes(self, name: &'static str, value: &[u8]) -> Self {
        if value.is_empty() {
            self
        } else {
            self.push(name, Json::Value(BASE64.encode(value).into()))
        }
    }

    pub(super) fn strings(self, name: &'static str, values: &[String]) -> Self {
        self.messages(name, values.iter().map(|v| Json::Value(Value::from(v.as_str()))).collect())
    }

    /// A message field: written when set, even if every field in it is a default.
    pub(super) fn message(self, name: &'static str, value: Option<Json>) -> Self {
        match value {
            Some(value) => self.push(name, value),
            None => self,
        }
    }

    pub(super) fn messages(self, name: &'static str, values: Vec<Json>) -> Self {
        if values.is_empty() { self } else { self.push(name, Json::Array(values)) }
    }

    pub(super) fn done(self) -> Json {
        Json::Object(self.0)
    }
}

pub(super) fn header(h: &ResponseHeader) -> Json {
    Fields::default()
        .int("cluster_id", h.cluster_id)
        .int("member_id", h.member_id)
        .int("revision", h.revision)
        .int("raft_term", h.raft_term)
        .done()
}

pub(super) fn key_value(kv: &KeyValue) -> Json {
    Fields::default()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .done()
}

pub(super) fn range_response(r: &RangeResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .messages("kvs", r.kvs.iter().map(key_value).collect())
        .bool("more", r.more)
        .int("count", r.count)
        .done()
}

pub(super) fn put_response(r: &PutResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .message("prev_kv", r.prev_kv.as_ref().map(key_value))
        .done()
}

pub(super) fn delete_range_response(r: &DeleteRangeResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .int("deleted", r.deleted)
        .messages("prev_kvs", r.prev_kvs.iter().map(key_value).collect())
        .done()
}

pub(super) fn txn_response(r: &TxnResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .bool("succeeded", r.succeeded)
        .messages("responses", r.responses.iter().map(response_op).collect())
        .done()
}

pub(super) fn response_op(op: &ResponseOp) -> Json {
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

pub(super) fn compaction_response(r: &CompactionResponse) -> Json {
    Fields::default().message("header", r.header.as_ref().map(header)).done()
}

/// `StatusResponse`'s proto field names are camelCase already, so they are written as such.
pub(super) fn status_response(r: &StatusResponse) -> Json {
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

pub(super) fn watch_response(r: &WatchResponse) -> Json {
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

pub(super) fn event(e: &Event) -> Json {
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
pub(super) fn stream_error(status: &tonic::Status) -> Json {
    let number = |n: u16| Json::Value(Value::from(n));
    Fields::default()
        .push("grpc_code", number(status.code() as u16))
        .push("http_code", number(http_status(status.code()).as_u16()))
        .string("message", status.message())
        .string("http_status", http_status(status.code()).canonical_reason().unwrap_or(""))
        .done()
}

pub(super) fn member_list_response(r: &MemberListResponse) -> Json {
    Fields::default()
        .message("header", r.header.as_ref().map(header))
        .messages("members", r.members.iter().map(member).collect())
        .done()
}

/// `Member`'s proto names are `ID`, `peerURLs` and `clientURLs` (prost's `peer_ur_ls`).
pub(super) fn member(m: &Member) -> Json {
    Fields::default()
        .int("ID", m.id)
        .string("name", &m.name)
        .strings("peerURLs", &m.peer_ur_ls)
        .strings("clientURLs", &m.client_ur_ls)
        .bool("isLearner", m.is_learner)
        .done()
}
