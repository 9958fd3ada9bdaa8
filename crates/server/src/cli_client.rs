//! `strata get/put/del/status`: a small client over the etcd v3 API.

use anyhow::{Context, bail};
use strata_core::mvcc::read::prefix_end;
use strata_core::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, StatusRequest};
use tonic::transport::Channel;

use crate::pb::etcd::kv_client::KvClient;
use crate::pb::etcd::maintenance_client::MaintenanceClient;

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
