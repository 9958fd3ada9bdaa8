//! A node's configuration, from etcd's flag names, and the ids derived from it.
//!
//! Member and cluster ids are derived the way etcd derives them — a member's id from its peer
//! URLs and the cluster token, the cluster's from its members' ids — so that restarting a
//! member with the same flags yields the same ids. (The hash is FNV-1a, not etcd's SHA-1, so
//! the numbers differ from etcd's.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use strata_core::rng::fnv1a;

/// One member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the Raft log lives, if not in `data_dir` (etcd's `--wal-dir`).
    pub wal_dir: Option<PathBuf>,
    /// Every address the client port listens on (etcd's `--listen-client-urls`, one or more).
    pub listen_clients: Vec<SocketAddr>,
    /// Addresses serving only `/metrics` and the probes (etcd's `--listen-metrics-urls`).
    pub listen_metrics: Vec<SocketAddr>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer: SocketAddr,
    pub members: Vec<Member>,
    pub cluster_token: String,
    pub tick_interval: Duration,
    pub election_ticks: usize,
    /// How long a request may wait for Raft before failing with a timeout.
    pub request_timeout: Duration,
    /// Applied entries kept in the Raft log before it is compacted.
    pub log_entries_max: u64,
    /// How often idle watches that asked for it get a progress notification.
    pub watch_progress_interval: Duration,
    /// Bytes of storage past which the member raises the `NOSPACE` alarm; 0: no quota.
    pub quota_bytes: u64,
    /// Records a compaction step examines; the leader proposes one step per tick.
    pub compaction_step_records: u64,
    /// Request size and transaction length limits (etcd's `--max-request-bytes`,
    /// `--max-txn-ops`).
    pub limits: strata_core::mvcc::Limits,
    /// Keys at which a new cluster's key space is cut into ranges (experimental: see
    /// `docs/sharding.md` for what serves across ranges so far).
    pub initial_split_keys: Vec<Vec<u8>>,
    /// Automatic compaction (etcd's `--auto-compaction-mode` and `-retention`), if on.
    pub auto_compaction: Option<crate::auto_compaction::Mode>,
    /// Join a running cluster that has added this member (`--initial-cluster-state existing`
    /// with an empty data directory).
    pub join: bool,
    /// The member id recorded in the data directory, which outlives a change of peer URLs; the
    /// id computed from the URLs until the member has one.
    pub recorded_member_id: Option<u64>,
}

impl NodeConfig {
    /// This node's member entry.
    pub fn me(&self) -> &Member {
        self.members.iter().find(|m| m.name == self.name).expect("validated in parse")
    }

    pub fn member_id(&self) -> u64 {
        self.recorded_member_id.unwrap_or(self.me().id)
    }

    /// The initial cluster as member records (every member a voter).
    pub fn initial_member_records(&self) -> Vec<(u64, strata_core::command::MemberRecord)> {
        let record = |m: &Member| strata_core::command::MemberRecord {
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            is_learner: false,
        };
        self.members.iter().map(|m| (m.id, record(m))).collect()
    }

    pub fn cluster_id(&self) -> u64 {
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        let mut bytes = Vec::new();
        for id in ids {
            bytes.extend_from_slice(&id.to_be_bytes());
        }
        nonzero(fnv1a(&bytes))
    }
}

/// Parses `name1=url1,name2=url2,...` (a name may appear with several URLs).
pub fn parse_initial_cluster(spec: &str, token: &str) -> anyhow::Result<Vec<Member>> {
    let mut members: Vec<Member> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {part:?} is not name=url"))?;
        parse_url(url).with_context(|| format!("--initial-cluster entry {part:?}"))?;
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url.to_string()),
            None => members.push(Member {
                id: 0,
                name: name.to_string(),
                peer_urls: vec![url.to_string()],
            }),
        }
    }
    if members.is_empty() {
        bail!("--initial-cluster is empty");
    }
    for m in &mut members {
        m.peer_urls.sort();
        m.id = member_id(&m.peer_urls, token);
    }
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != members.len() {
        bail!("--initial-cluster lists the same peer URLs for two members");
    }
    Ok(members)
}

pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut bytes = peer_urls.join(",").into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    nonzero(fnv1a(&bytes))
}

/// Parses a duration the way etcd's flags write them (Go's syntax): `10m`, `1m30s`, `250ms`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        anyhow::bail!("empty duration");
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let number: f64 = number.parse().map_err(|_| anyhow::anyhow!("bad duration {text:?}"))?;
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => anyhow::bail!("bad duration {text:?}: unit must be h, m, s, ms, us or ns"),
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = tail;
    }
    Ok(total)
}

/// Parses `http://host:port` (or `host:port`) into a socket address.
pub fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if url.starts_with("https://") || url.starts_with("unix") {
        bail!("{url}: only http:// URLs are supported so far (TLS is on the roadmap)");
    }
    let host_port = rest.trim_end_matches('/');
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().with_context(|| format!("{url}: expected http://IP:PORT"))
}

/// Raft reserves id 0 for "none".
fn nonzero(id: u64) -> u64 {
    if id == 0 { 1 } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster() {
        let members = parse_initial_cluster(
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,c=http://127.0.0.1:2382",
            "tok",
        )
        .unwrap();
        assert_eq!(members.len(), 3);
        assert_ne!(members[0].id, members[1].id);
        assert_eq!(members[0].id, member_id(&["http://127.0.0.1:2380".into()], "tok"));
        assert!(parse_initial_cluster("a", "t").is_err());
        assert!(parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:1", "t").is_err());
        assert!(parse_url("https://1.2.3.4:5").is_err());
        assert_eq!(parse_url("http://localhost:2379").unwrap().port(), 2379);
    }

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "10", "5x", "m", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
