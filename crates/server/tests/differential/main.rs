//! Differential test against a real etcd: the same sequence of etcd v3 requests (KV, leases,
//! locks and elections, maintenance, membership, and finally a snapshot of each restored into a
//! new cluster) goes to a single-member etcd (Debian's `etcd-server`, 3.4) and to a
//! single-member Strata, and every response is compared field by field.
//!
//! What it proves: for every step below, Strata answers as etcd does — the same keys, values,
//! revisions, versions, `count` and `more`, transaction branches and per-operation responses,
//! and for errors the same gRPC code and message. Left out of the comparison is only what
//! legitimately differs between two clusters: cluster and member ids, the Raft term, timing, and
//! in Status and MemberList the database sizes, Raft indexes and URLs.
//! Both stores start empty, so revisions must match exactly. The few deliberate differences are
//! listed in [`DELIBERATE`] with their reason, and in docs/etcd-compatibility.md; a listed
//! difference that no longer shows up fails the test too, so the list stays true.
//!
//! The test fails, never skips, when no etcd binary is installed: an interop test that did not
//! run proves nothing.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod json;
mod kv;
mod snapshot;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, CompactionResponse, Compare,
    CompareOp, DeleteOptions, DeleteResponse, GetOptions, GetResponse, KeyValue, LeaderKey,
    LeaseGrantOptions, LeaseGrantResponse, LeaseLeasesResponse, LeaseTimeToLiveOptions,
    LeaseTimeToLiveResponse, LockOptions, MemberAddOptions, MemberListResponse, ProclaimOptions,
    PutOptions, PutResponse, ResignOptions, ResponseHeader, SortOrder, SortTarget, StatusResponse,
    Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde_json::{Value, json};
use support::etcd::Etcd;
use support::{Cluster, client};

use cluster::{leases, locks_and_elections, members};
use json::*;
use kv::{compaction, deletes, errors, ranges, txns, writes};

/// Steps whose responses differ on purpose: (step name, reason). Keep in sync with the table in
/// docs/etcd-compatibility.md.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "get: key above Strata's 28 KiB key cap",
        "Strata caps user keys at 28 KiB (\"etcdserver: key is too large\") because its storage \
         engine stores escaped keys of at most 60 KiB; etcd has no key limit below the request \
         size",
    ),
    (
        "sort: VALUE with no order, with limit",
        "given a sort target but no order, etcd keeps the limit, fetches only the first limit + 1 \
         keys by key and sorts those; Strata sorts the whole range, as etcd does when the order \
         is given",
    ),
    (
        "duplicate: put + from-key delete covering it",
        "etcd's duplicate-key check reads a from-key (\"\\0\") range end as an empty interval \
         and accepts a put inside the deleted range; Strata rejects it as it \
         rejects the same overlap spelled with an explicit range end",
    ),
    (
        "status",
        "Status.version reports 3.5.0, the etcd API level Strata speaks, not an etcd release",
    ),
    (
        "hashkv: current revision",
        "HashKV's hash_revision field is etcd 3.5's; etcd 3.4 leaves it at 0, Strata fills it in",
    ),
    (
        "hashkv: an older revision",
        "HashKV's hash_revision field is etcd 3.5's; etcd 3.4 leaves it at 0, Strata fills it in",
    ),
    (
        "member: add a learner",
        "etcd 3.4 leaves the revision out of membership answers' headers; Strata fills in the \
         current revision, as in every other header",
    ),
    (
        "member: remove the learner",
        "etcd 3.4 leaves the revision out of membership answers' headers; Strata fills in the \
         current revision, as in every other header",
    ),
    (
        "member: update a learner's peer URLs",
        "etcd 3.4 records an updated learner as a voter (a bug fixed in etcd 3.5), and leaves the \
         revision out of the header; Strata keeps the member a learner and fills in the revision",
    ),
    (
        "member: list with the learner",
        "follows from the update above: etcd 3.4 lists the updated learner as a voter",
    ),
    (
        "member list",
        "etcd 3.4 leaves the revision out of MemberList's header; Strata fills in the current \
         revision, as in every other header",
    ),
];

/// etcd's default `--max-request-bytes` (1.5 MiB), which Strata shares.
const REQUEST_BYTES_MAX: usize = 1536 * 1024;

/// etcd's default `--max-txn-ops`, which Strata shares.
const TXN_OPS_MAX: usize = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_etcd() {
    let etcd = Etcd::start("m1");
    let strata = Cluster::start(1);
    let mut d = Differ {
        etcd: client(std::slice::from_ref(&etcd.endpoint)).await,
        strata: client(&strata.endpoints()).await,
        names: HashSet::new(),
        mismatches: Vec::new(),
        revision: 0,
    };
    let marks = writes(&mut d).await;
    ranges(&mut d, &marks).await;
    deletes(&mut d).await;
    txns(&mut d).await;
    compaction(&mut d).await;
    errors(&mut d).await;
    leases(&mut d).await;
    locks_and_elections(&mut d).await;
    d.get("get: every key at the end", "\0", Some(GetOptions::new().with_from_key())).await;
    d.step("hashkv: current revision", Op::HashKv(0)).await;
    d.step("hashkv: an older revision", Op::HashKv(d.revision - 3)).await;
    d.step("hashkv: a future revision", Op::HashKv(d.revision + 100)).await;
    d.step("hashkv: a compacted revision", Op::HashKv(2)).await;
    d.step("move-leader: to a member that does not exist", Op::MoveLeader(12345)).await;
    d.step("alarm: list, none raised", Op::Alarm(AlarmAction::Get, AlarmType::None)).await;
    d.step(
        "alarm: disarm one never raised",
        Op::Alarm(AlarmAction::Deactivate, AlarmType::Nospace),
    )
    .await;
    d.step("defragment", Op::Defragment).await;
    members(&mut d).await;
    d.step("status", Op::Status).await;
    d.step("member list", Op::MemberList).await;
    let _restored = snapshot::snapshot_and_restore(&mut d).await;
    d.finish();
}

// --- Running a step against both servers ---------------------------------------------------

/// Sends each step to both servers, etcd first, and records where the responses differ.
struct Differ {
    etcd: Client,
    strata: Client,
    names: HashSet<String>,
    mismatches: Vec<Mismatch>,
    /// The latest revision etcd reported: later steps refer to earlier revisions through it.
    revision: i64,
}

struct Mismatch {
    step: String,
    diffs: Vec<String>,
}

/// One etcd v3 request, sent as is to both servers.
#[derive(Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>, Option<PutOptions>),
    Get(Vec<u8>, Option<GetOptions>),
    Delete(Vec<u8>, Option<DeleteOptions>),
    Txn(Txn),
    Compact(i64, Option<CompactionOptions>),
    Status,
    MemberList,
    /// TTL, and the lease id unless the server is to choose one.
    LeaseGrant(i64, Option<i64>),
    LeaseRevoke(i64),
    LeaseTimeToLive(i64, bool),
    LeaseLeases,
    /// Peer URL, learner.
    /// Peer URLs separated by commas, and whether a learner.
    MemberAdd(String, bool),
    /// A member by peer URL (empty: the member asked); unknown URLs name id 12345.
    MemberPromote(String),
    MemberUpdate(String, String),
    MemberRemove(String),
    HashKv(i64),
    Alarm(AlarmAction, AlarmType),
    Defragment,
    MoveLeader(u64),
    Lock(String, i64),
    Unlock(String),
    Campaign(String, String, i64),
    Proclaim(LeaderKey, String),
    Leader(String),
    Resign(LeaderKey),
}

impl Op {
    /// The response in comparable form: `{"ok": …}` or `{"error": {code, message}}`.
    async fn send(self, client: &mut Client) -> Value {
        let result = match self {
            Op::Put(key, value, options) => {
                client.put(key, value, options).await.map(|r| put_json(&r))
            }
            Op::Get(key, options) => client.get(key, options).await.map(|r| get_json(&r)),
            Op::Delete(key, options) => client.delete(key, options).await.map(|r| delete_json(&r)),
            Op::Txn(txn) => client.txn(txn).await.map(|r| txn_json(&r)),
            Op::Compact(revision, options) => {
                client.compact(revision, options).await.map(|r| compact_json(&r))
            }
            Op::Status => client.status().await.map(|r| status_json(&r)),
            Op::MemberList => client.member_list().await.map(|r| member_list_json(&r)),
            Op::LeaseGrant(ttl, id) => {
                let options = id.map(|id| LeaseGrantOptions::new().with_id(id));
                client.lease_grant(ttl, options).await.map(|r| lease_grant_json(&r, id.is_none()))
            }
            Op::LeaseRevoke(id) => {
                client.lease_revoke(id).await.map(|r| json!({ "header": header_json(r.header()) }))
            }
            Op::LeaseTimeToLive(id, keys) => {
                let options = if keys {
                    LeaseTimeToLiveOptions::new().with_keys()
                } else {
                    LeaseTimeToLiveOptions::new()
                };
                client.lease_time_to_live(id, Some(options)).await.map(|r| time_to_live_json(&r))
            }
            Op::LeaseLeases => client.leases().await.map(|r| leases_json(&r)),
            // Hash values are each server's own: only which revisions they cover compares.
            Op::HashKv(revision) => client.hash_kv(revision).await.map(|r| {
                json!({
                    "header": header_json(r.header()),
                    "compact_revision": r.compact_version(),
                    "hash_revision": r.hash_revision(),
                })
            }),
            Op::Alarm(action, alarm) => {
                let member = client.status().await.map(|s| s.header().unwrap().member_id());
                let mut options = AlarmOptions::new();
                options.with_member(member.unwrap_or(0));
                client.alarm(action, alarm, Some(options)).await.map(|r| {
                    let alarms: Vec<Value> =
                        r.alarms().iter().map(|a| json!(format!("{:?}", a.alarm()))).collect();
                    json!({ "header": header_json(r.header()), "alarms": alarms })
                })
            }
            Op::Defragment => {
                client.defragment().await.map(|r| json!({ "header": header_json(r.header()) }))
            }
            Op::MemberAdd(urls, learner) => {
                let options = learner.then(|| MemberAddOptions::new().with_is_learner());
                let urls: Vec<&str> = urls.split(',').collect();
                client.member_add(urls, options).await.map(|r| {
                    let this = r.header().map_or(0, |h| h.member_id());
                    json!({
                        "header": header_json(r.header()),
                        "member": r.member().map(|m| member_json(m, this)),
                    })
                })
            }
            Op::MemberPromote(url) => match member_id(client, &url).await {
                Ok(id) => client.member_promote(id).await.map(|r| {
                    let this = r.header().map_or(0, |h| h.member_id());
                    json!({ "header": header_json(r.header()), "members": members_json(r.members(), this) })
                }),
                Err(e) => Err(e),
            },
            Op::MemberUpdate(url, new_url) => match member_id(client, &url).await {
                Ok(id) => client.member_update(id, vec![new_url]).await.map(|r| {
                    let this = r.header().map_or(0, |h| h.member_id());
                    json!({ "header": header_json(r.header()), "members": members_json(r.members(), this) })
                }),
                Err(e) => Err(e),
            },
            Op::MemberRemove(url) => match member_id(client, &url).await {
                Ok(id) => client.member_remove(id).await.map(|r| {
                    let this = r.header().map_or(0, |h| h.member_id());
                    json!({ "header": header_json(r.header()), "members": members_json(r.members(), this) })
                }),
                Err(e) => Err(e),
            },
            Op::MoveLeader(target) => {
                client.move_leader(target).await.map(|r| json!({ "header": header_json(r.header()) }))
            }
            Op::Lock(name, lease) => {
                let options = LockOptions::new().with_lease(lease);
                client.lock(name, Some(options)).await.map(|r| {
                    json!({ "header": header_json(r.header()), "key": text(r.key()) })
                })
            }
            Op::Unlock(key) => {
                client.unlock(key).await.map(|r| json!({ "header": header_json(r.header()) }))
            }
            Op::Campaign(name, value, lease) => client.campaign(name, value, lease).await.map(|r| {
                let leader = r.leader().map(|l| {
                    json!({ "name": text(l.name()), "key": text(l.key()), "rev": l.rev(), "lease": l.lease() })
                });
                json!({ "header": header_json(r.header()), "leader": leader })
            }),
            Op::Proclaim(leader, value) => {
                let options = ProclaimOptions::new().with_leader(leader);
                client.proclaim(value, Some(options)).await.map(|r| json!({ "header": header_json(r.header()) }))
            }
            Op::Leader(name) => client.leader(name).await.map(|r| {
                json!({ "header": header_json(r.header()), "kv": r.kv().map(kv_json) })
            }),
            Op::Resign(leader) => {
                let options = ResignOptions::new().with_leader(leader);
                client.resign(Some(options)).await.map(|r| json!({ "header": header_json(r.header()) }))
            }
        };
        match result {
            Ok(response) => json!({ "ok": response }),
            Err(etcd_client::Error::GRpcStatus(status)) => json!({
                "error": { "code": format!("{:?}", status.code()), "message": status.message() }
            }),
            // Not an answer from the server (transport, client-side checks): compared as text.
            Err(other) => json!({ "client_error": other.to_string() }),
        }
    }
}

impl Differ {
    /// Runs one step on both servers and returns etcd's response.
    async fn step(&mut self, name: &str, op: Op) -> Value {
        assert!(self.names.insert(name.to_string()), "step name used twice: {name}");
        let etcd = op.clone().send(&mut self.etcd).await;
        let strata = op.send(&mut self.strata).await;
        if let Some(revision) = etcd["ok"]["header"]["revision"].as_i64() {
            self.revision = revision;
        }
        let mut diffs = Vec::new();
        diff("", Some(&etcd), Some(&strata), &mut diffs);
        if !diffs.is_empty() {
            self.mismatches.push(Mismatch { step: name.to_string(), diffs });
        }
        etcd
    }

    async fn put(
        &mut self,
        name: &str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Value {
        self.step(name, Op::Put(key.into(), value.into(), options)).await
    }

    async fn get(
        &mut self,
        name: &str,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Value {
        self.step(name, Op::Get(key.into(), options)).await
    }

    async fn delete(
        &mut self,
        name: &str,
        key: impl Into<Vec<u8>>,
        options: Option<DeleteOptions>,
    ) -> Value {
        self.step(name, Op::Delete(key.into(), options)).await
    }

    async fn txn(&mut self, name: &str, txn: Txn) -> Value {
        self.step(name, Op::Txn(txn)).await
    }

    async fn compact(
        &mut self,
        name: &str,
        revision: i64,
        options: Option<CompactionOptions>,
    ) -> Value {
        self.step(name, Op::Compact(revision, options)).await
    }

    /// Prints every mismatch, then fails on any that is not a deliberate difference, and on any
    /// deliberate difference that no longer shows up.
    fn finish(self) {
        let mut report = String::new();
        let mut unexpected = 0;
        for mismatch in &self.mismatches {
            match DELIBERATE.iter().find(|(step, _)| *step == mismatch.step) {
                Some((_, reason)) => {
                    let _ =
                        writeln!(report, "step `{}` differs deliberately: {reason}", mismatch.step);
                }
                None => {
                    unexpected += 1;
                    let _ = writeln!(report, "step `{}` MISMATCH (etcd | strata):", mismatch.step);
                }
            }
            for line in &mismatch.diffs {
                let _ = writeln!(report, "    {line}");
            }
        }
        let stale: Vec<&str> = DELIBERATE
            .iter()
            .map(|(step, _)| *step)
            .filter(|step| !self.mismatches.iter().any(|m| m.step == *step))
            .collect();
        for step in &stale {
            let _ = writeln!(
                report,
                "step `{step}` is listed in DELIBERATE but now answers as etcd does: remove it \
                 there and from docs/etcd-compatibility.md"
            );
        }
        println!("{} steps compared against etcd\n{report}", self.names.len());
        assert!(
            unexpected == 0 && stale.is_empty(),
            "{unexpected} unexpected mismatch(es), {} stale deliberate difference(s):\n{report}",
            stale.len()
        );
    }
}

/// Appends a line per leaf where `etcd` and `strata` differ, named by its path.
fn diff(path: &str, etcd: Option<&Value>, strata: Option<&Value>, out: &mut Vec<String>) {
    let child =
        |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    match (etcd, strata) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let fields: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for field in fields {
                diff(&child(field), a.get(field), b.get(field), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => {
            let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), Value::to_string);
            out.push(format!(
                "{}: {} | {}",
                if path.is_empty() { "." } else { path },
                show(a),
                show(b)
            ));
        }
    }
}
