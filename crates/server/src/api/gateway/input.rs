//! Input: JSON request bodies to request messages, with protobuf's JSON mapping as
//! grpc-gateway applies it for etcd (see the module above).

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use strata_core::Error;
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::watch_create_request::FilterType;
use strata_core::pb::etcdserverpb::watch_request::RequestUnion;
use strata_core::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use strata_core::pb::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};

use super::super::Api;
use super::{BODY_OVERHEAD_BYTES, BODY_OVERHEAD_FACTOR, Failure};

/// Why a request body is not a valid JSON encoding of the request message.
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
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

/// Reads a request body and decodes it with `message`.
pub(super) async fn decode<T>(
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
pub(super) fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::Deserializer::from_slice(bytes).into_iter::<Value>().next() {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(object))) => Ok(object),
        Some(Ok(_)) => Err(DecodeError::NotAnObject),
        Some(Err(e)) => Err(e.into()),
    }
}

/// One JSON object read as a protobuf message.
pub(super) struct Input<'a>(pub(super) &'a Map<String, Value>);

impl<'a> Input<'a> {
    /// A field by its lowerCamelCase JSON name or its original name, preferring the former as
    /// Go's jsonpb does. `null` means "not set".
    pub(super) fn get(&self, name: &'static str) -> Option<&'a Value> {
        let camel = lower_camel(name);
        self.0.get(&camel).or_else(|| self.0.get(name)).filter(|v| !v.is_null())
    }

    pub(super) fn int64(&self, name: &'static str) -> Result<i64, DecodeError> {
        let parsed = match self.get(name) {
            None => return Ok(0),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        parsed.ok_or_else(|| mismatch(name, "an int64 as a number or a string", self.get(name)))
    }

    pub(super) fn bool(&self, name: &'static str) -> Result<bool, DecodeError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            other => Err(mismatch(name, "true or false", other)),
        }
    }

    pub(super) fn bytes(&self, name: &'static str) -> Result<Vec<u8>, DecodeError> {
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
    pub(super) fn enumeration<E: Into<i32>>(
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

    pub(super) fn message(&self, name: &'static str) -> Result<Option<Input<'a>>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(Input(object))),
            other => Err(mismatch(name, "an object", other)),
        }
    }

    pub(super) fn messages(&self, name: &'static str) -> Result<Vec<Input<'a>>, DecodeError> {
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
    pub(super) fn oneof(
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

pub(super) fn mismatch(
    field: &'static str,
    expected: &'static str,
    got: Option<&Value>,
) -> DecodeError {
    let got = got.map_or_else(|| "null".to_string(), Value::to_string);
    DecodeError::Type { field, expected, got }
}

/// protoc's JSON name for a field: `range_end` → `rangeEnd`.
pub(super) fn lower_camel(name: &str) -> String {
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

pub(super) fn range_request(input: &Input) -> Result<RangeRequest, DecodeError> {
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

pub(super) fn put_request(input: &Input) -> Result<PutRequest, DecodeError> {
    Ok(PutRequest {
        key: input.bytes("key")?,
        value: input.bytes("value")?,
        lease: input.int64("lease")?,
        prev_kv: input.bool("prev_kv")?,
        ignore_value: input.bool("ignore_value")?,
        ignore_lease: input.bool("ignore_lease")?,
    })
}

pub(super) fn delete_range_request(input: &Input) -> Result<DeleteRangeRequest, DecodeError> {
    Ok(DeleteRangeRequest {
        key: input.bytes("key")?,
        range_end: input.bytes("range_end")?,
        prev_kv: input.bool("prev_kv")?,
    })
}

pub(super) fn txn_request(input: &Input) -> Result<TxnRequest, DecodeError> {
    let ops = |name| input.messages(name)?.iter().map(request_op).collect::<Result<Vec<_>, _>>();
    Ok(TxnRequest {
        compare: input.messages("compare")?.iter().map(compare).collect::<Result<_, _>>()?,
        success: ops("success")?,
        failure: ops("failure")?,
    })
}

pub(super) fn compare(input: &Input) -> Result<Compare, DecodeError> {
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

pub(super) fn request_op(input: &Input) -> Result<RequestOp, DecodeError> {
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

pub(super) fn watch_request(input: &Input) -> Result<WatchRequest, DecodeError> {
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

pub(super) fn compaction_request(input: &Input) -> Result<CompactionRequest, DecodeError> {
    Ok(CompactionRequest { revision: input.int64("revision")?, physical: input.bool("physical")? })
}
