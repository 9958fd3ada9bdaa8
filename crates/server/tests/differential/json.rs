//! Responses in comparable form.

use super::*;

// --- Responses in comparable form -----------------------------------------------------------

/// Cluster and member ids and the Raft term belong to each cluster: zeroed. The revision stays.
pub(super) fn header_json(header: Option<&ResponseHeader>) -> Value {
    header.map_or(
        Value::Null,
        |h| json!({ "cluster_id": 0, "member_id": 0, "raft_term": 0, "revision": h.revision() }),
    )
}

pub(super) fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": text(kv.key()),
        "value": text(kv.value()),
        "create_revision": kv.create_revision(),
        "mod_revision": kv.mod_revision(),
        "version": kv.version(),
        "lease": kv.lease(),
    })
}

pub(super) fn kvs_json(kvs: &[KeyValue]) -> Value {
    kvs.iter().map(kv_json).collect()
}

pub(super) fn get_json(r: &GetResponse) -> Value {
    json!({
        "header": header_json(r.header()),
        "kvs": kvs_json(r.kvs()),
        "more": r.more(),
        "count": r.count(),
    })
}

pub(super) fn put_json(r: &PutResponse) -> Value {
    json!({ "header": header_json(r.header()), "prev_kv": r.prev_key().map(kv_json) })
}

pub(super) fn delete_json(r: &DeleteResponse) -> Value {
    json!({
        "header": header_json(r.header()),
        "deleted": r.deleted(),
        "prev_kvs": kvs_json(r.prev_kvs()),
    })
}

pub(super) fn txn_json(r: &TxnResponse) -> Value {
    let responses: Vec<Value> = r
        .op_responses()
        .iter()
        .map(|op| match op {
            TxnOpResponse::Put(put) => json!({ "put": put_json(put) }),
            TxnOpResponse::Get(get) => json!({ "range": get_json(get) }),
            TxnOpResponse::Delete(delete) => json!({ "delete_range": delete_json(delete) }),
            TxnOpResponse::Txn(txn) => json!({ "txn": txn_json(txn) }),
        })
        .collect();
    json!({ "header": header_json(r.header()), "succeeded": r.succeeded(), "responses": responses })
}

pub(super) fn compact_json(r: &CompactionResponse) -> Value {
    json!({ "header": header_json(r.header()) })
}

/// Sizes and Raft indexes depend on each server's storage and log: left out.
pub(super) fn status_json(r: &StatusResponse) -> Value {
    let member = r.header().map_or(0, |h| h.member_id());
    json!({
        "header": header_json(r.header()),
        "version": r.version(),
        "leader_is_this_member": r.leader() == member,
        "is_learner": r.is_learner(),
        "errors": r.errors(),
    })
}

/// The id of the member with this peer URL on the server asked (empty: the member asked; none:
/// an id no member has).
pub(super) async fn member_id(client: &mut Client, url: &str) -> Result<u64, etcd_client::Error> {
    let list = client.member_list().await?;
    let this = list.header().map_or(0, |h| h.member_id());
    if url.is_empty() {
        return Ok(this);
    }
    Ok(list
        .members()
        .iter()
        .find(|m| m.peer_urls().iter().any(|u| u == url))
        .map_or(12345, |m| m.id()))
}

/// A member, without its id; the member asked shows only how many URLs it has (its ports
/// differ between the servers), the others their URLs.
pub(super) fn member_json(m: &etcd_client::Member, this: u64) -> Value {
    let urls = |urls: &[String]| if m.id() == this { json!(urls.len()) } else { json!(urls) };
    json!({
        "is_this_member": m.id() == this,
        "name": m.name(),
        "peer_urls": urls(m.peer_urls()),
        "client_urls": urls(m.client_urls()),
        "is_learner": m.is_learner(),
    })
}

/// Members in a stable order (etcd lists them by id, and ids differ).
pub(super) fn members_json(members: &[etcd_client::Member], this: u64) -> Value {
    let mut out: Vec<Value> = members.iter().map(|m| member_json(m, this)).collect();
    out.sort_by_key(|v| v.to_string());
    json!(out)
}

/// Ids and URLs (ports) differ between the two clusters: only their relation and count compare.
pub(super) fn member_list_json(r: &MemberListResponse) -> Value {
    let this = r.header().map_or(0, |h| h.member_id());
    let members: Vec<Value> = r
        .members()
        .iter()
        .map(|m| {
            json!({
                "is_this_member": m.id() == this,
                "name": m.name(),
                "peer_urls": m.peer_urls().len(),
                "client_urls": m.client_urls().len(),
                "is_learner": m.is_learner(),
            })
        })
        .collect();
    json!({ "header": header_json(r.header()), "members": members })
}

/// The id of a lease the server chose differs between servers: only whether there is one compares.
pub(super) fn lease_grant_json(r: &LeaseGrantResponse, chosen: bool) -> Value {
    json!({
        "header": header_json(r.header()),
        "ID": if chosen { json!(r.id() > 0) } else { json!(r.id()) },
        "TTL": r.ttl(),
        "error": r.error(),
    })
}

/// Remaining TTL: time passes between grant and question on either server — seconds, on a
/// loaded machine. Keys sorted.
pub(super) fn time_to_live_json(r: &LeaseTimeToLiveResponse) -> Value {
    let remaining =
        if r.ttl() > 0 { json!(r.granted_ttl() - r.ttl() <= 5) } else { json!(r.ttl()) };
    // etcd lists a lease's keys in no particular order (a Go map's).
    let mut keys: Vec<String> = r.keys().iter().map(|k| text(k)).collect();
    keys.sort();
    json!({
        "header": header_json(r.header()),
        "ID": r.id(),
        "TTL within 5 s of granted": remaining,
        "grantedTTL": r.granted_ttl(),
        "keys": keys,
    })
}

/// etcd lists leases in no particular order: sorted, and the server-chosen one left out.
pub(super) fn leases_json(r: &LeaseLeasesResponse) -> Value {
    let mut ids: Vec<i64> = r.leases().iter().map(|l| l.id()).filter(|id| *id < 10_000).collect();
    ids.sort();
    json!({ "header": header_json(r.header()), "leases": ids })
}

/// Bytes as text when they are UTF-8 (every key and value here is), else as hex.
pub(super) fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().fold("0x".to_string(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
    }
}
