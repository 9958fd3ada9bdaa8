//! `strata get/put/del/status`: a small client over the etcd v3 API.

use anyhow::{Context, bail};
use strata_core::mvcc::read::prefix_end;
use strata_core::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, StatusRequest};
use tonic::transport::Channel;

use crate::pb::etcd::kv_client::KvClient;
use crate::pb::etcd::maintenance_client::MaintenanceClient;
use crate::pb::strata::admin_client::AdminClient;
use crate::pb::strata::{RangeStatus, RangesRequest, RangesResponse, SplitRequest};

fn endpoints(spec: &str) -> Vec<String> {
    spec.split(',')
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| if e.starts_with("http") { e.to_string() } else { format!("http://{e}") })
        .collect()
}

async fn connect(spec: &str) -> anyhow::Result<Channel> {
    let mut last_error = None;
    for endpoint in endpoints(spec) {
        let attempt = Channel::from_shared(endpoint.clone())
            .context("invalid endpoint")?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect()
            .await;
        match attempt {
            Ok(channel) => return Ok(channel),
            Err(e) => last_error = Some(format!("{endpoint}: {e}")),
        }
    }
    bail!("no endpoint reachable ({})", last_error.unwrap_or_else(|| "none given".into()))
}

pub async fn get(spec: &str, key: &str, prefix: bool, revision: i64) -> anyhow::Result<()> {
    let mut kv = KvClient::new(connect(spec).await?);
    let range_end = if prefix { prefix_end(key.as_bytes()) } else { Vec::new() };
    let response = kv
        .range(RangeRequest { key: key.into(), range_end, revision, ..Default::default() })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    for kv in response.kvs {
        println!("{}\n{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
    }
    Ok(())
}

pub async fn put(spec: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let mut kv = KvClient::new(connect(spec).await?);
    kv.put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    println!("OK");
    Ok(())
}

pub async fn del(spec: &str, key: &str, prefix: bool) -> anyhow::Result<()> {
    let mut kv = KvClient::new(connect(spec).await?);
    let range_end = if prefix { prefix_end(key.as_bytes()) } else { Vec::new() };
    let response = kv
        .delete_range(DeleteRangeRequest { key: key.into(), range_end, ..Default::default() })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    println!("{}", response.deleted);
    Ok(())
}

pub async fn status(spec: &str) -> anyhow::Result<()> {
    println!(
        "{:<28} {:>18} {:>18} {:>6} {:>10} {:>10}",
        "ENDPOINT", "MEMBER", "LEADER", "TERM", "INDEX", "REVISION"
    );
    for endpoint in endpoints(spec) {
        let result = async {
            let mut client = MaintenanceClient::new(connect(&endpoint).await?);
            let status = client
                .status(StatusRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            anyhow::Ok(status.into_inner())
        }
        .await;
        match result {
            Ok(s) => {
                let header = s.header.unwrap_or_default();
                println!(
                    "{endpoint:<28} {:>18x} {:>18x} {:>6} {:>10} {:>10}",
                    header.member_id, s.leader, s.raft_term, s.raft_index, header.revision
                );
            }
            Err(e) => println!("{endpoint:<28} unreachable: {e:#}"),
        }
    }
    Ok(())
}

/// `strata ranges`: every range of the cluster, merged from what each endpoint's replicas
/// report. A range's descriptor is taken from the replica with the newest epoch, its progress
/// (term, indexes, revision, keys) from its leader's own report where one answered.
pub async fn ranges(spec: &str, json: bool) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for endpoint in endpoints(spec) {
        let result = async {
            let mut client = AdminClient::new(connect(&endpoint).await?);
            let response = client
                .ranges(RangesRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            anyhow::Ok(response.into_inner())
        }
        .await;
        match result {
            Ok(response) => reports.push(response),
            Err(e) => eprintln!("{endpoint}: unreachable: {e:#}"),
        }
    }
    if reports.is_empty() {
        bail!("no endpoint answered");
    }
    let ranges = merge_ranges(&reports);
    if json {
        let ranges: Vec<serde_json::Value> = ranges.iter().map(range_json).collect();
        println!("{}", serde_json::to_string_pretty(&ranges)?);
        return Ok(());
    }
    println!(
        "{:>6} {:<16} {:<16} {:>7} {:>16} {:>5} {:>9} {:>9} {:>8}  REPLICAS",
        "RANGE", "START", "END", "EPOCH", "LEADER", "TERM", "APPLIED", "REVISION", "KEYS"
    );
    for range in &ranges {
        println!(
            "{:>6} {:<16} {:<16} {:>7} {:>16x} {:>5} {:>9} {:>9} {:>8}  {}",
            range.range_id,
            show_key(&range.start_key, "\"\""),
            show_key(&range.end_key, "(end)"),
            format!("{}/{}", range.epoch_version, range.epoch_conf_ver),
            range.leader_id,
            range.term,
            range.applied_index,
            range.revision,
            range.keys,
            replicas_text(range),
        );
    }
    Ok(())
}

/// `strata range split KEY`: splits the range holding `key` at it, through the first
/// endpoint that answers.
pub async fn split(spec: &str, key: &str) -> anyhow::Result<()> {
    let mut client = AdminClient::new(connect(spec).await?);
    let request = SplitRequest { key: key.as_bytes().to_vec() };
    let response =
        (client.split(request).await).map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
    let (Some(left), Some(right)) = (response.left, response.right) else {
        bail!("the split's answer lacks its ranges");
    };
    for range in [left, right] {
        println!(
            "range {} [{}, {}) epoch {}/{}",
            range.range_id,
            show_key(&range.start_key, "\"\""),
            show_key(&range.end_key, "(end)"),
            range.epoch_version,
            range.epoch_conf_ver
        );
    }
    Ok(())
}

/// One status per range: the newest epoch's descriptor, with the leader's own progress where
/// the leader answered (else the most advanced replica's).
fn merge_ranges(reports: &[RangesResponse]) -> Vec<RangeStatus> {
    use std::collections::BTreeMap;
    let mut merged: BTreeMap<u64, (RangeStatus, bool)> = BTreeMap::new();
    for report in reports {
        for range in &report.ranges {
            let from_leader = range.leader_id == report.member_id && range.leader_id != 0;
            let rank = |r: &RangeStatus, leader: bool| {
                ((r.epoch_version, r.epoch_conf_ver), leader, r.term, r.applied_index)
            };
            match merged.get(&range.range_id) {
                Some((kept, leader)) if rank(kept, *leader) >= rank(range, from_leader) => {}
                _ => {
                    merged.insert(range.range_id, (range.clone(), from_leader));
                }
            }
        }
    }
    merged.into_values().map(|(range, _)| range).collect()
}

fn replicas_text(range: &RangeStatus) -> String {
    let replicas = range.replicas.iter().map(|r| {
        let learner = if r.learner { "(learner)" } else { "" };
        format!("{:x}{learner}", r.node_id)
    });
    replicas.collect::<Vec<_>>().join(",")
}

/// A key as text: printable ASCII as is, other bytes escaped; `empty` for an empty key.
fn show_key(key: &[u8], empty: &str) -> String {
    if key.is_empty() { empty.to_string() } else { key.escape_ascii().to_string() }
}

fn range_json(range: &RangeStatus) -> serde_json::Value {
    let replicas: Vec<serde_json::Value> = (range.replicas.iter())
        .map(|r| {
            serde_json::json!({
                "replica_id": format!("{:x}", r.replica_id),
                "node_id": format!("{:x}", r.node_id),
                "learner": r.learner,
            })
        })
        .collect();
    serde_json::json!({
        "range_id": range.range_id,
        "start_key": range.start_key.escape_ascii().to_string(),
        "end_key": range.end_key.escape_ascii().to_string(),
        "epoch": { "version": range.epoch_version, "conf_ver": range.epoch_conf_ver },
        "replicas": replicas,
        "leader_id": format!("{:x}", range.leader_id),
        "term": range.term,
        "commit_index": range.commit_index,
        "applied_index": range.applied_index,
        "revision": range.revision,
        "closed_revision": range.closed_revision,
        "locks": range.locks,
        "keys": range.keys,
    })
}
