//! Test support: real `strata` processes on 127.0.0.1, started and stopped by PID.
//!
//! Every cluster lives in its own temporary directory and on ports found free (see
//! [`free_port`]), so tests run in parallel. Dropping a [`Cluster`] kills every process it started.

#![allow(dead_code)]

pub mod etcd;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A port nothing listens on, for a server a test starts. It is taken below the kernel's
/// ephemeral range (32768 and up on Linux): a port the kernel hands out for binding port 0 can
/// be taken again as the source port of another connection before the server binds it (a test
/// then failed with "Address already in use"). Each test process starts at its own offset, and
/// a port another test holds fails the bind and is skipped.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    static OFFSET: OnceLock<u32> = OnceLock::new();
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let offset = *OFFSET.get_or_init(|| std::process::id().wrapping_mul(7_919) % COUNT);
    loop {
        let port = FIRST + (offset + TAKEN.fetch_add(1, Ordering::Relaxed)) % COUNT;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    /// The Raft log's own directory (`--wal-dir`), if the test gives it one.
    pub wal_dir: Option<PathBuf>,
    pub child: Option<Child>,
    /// Started with `--initial-cluster-state existing` (added to a running cluster).
    pub join: bool,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    initial_cluster: String,
    /// Extra flags for every member.
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `n` members with fast Raft timing (20 ms ticks, 200 ms election timeout) and
    /// waits until they have a leader.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    pub fn start_with(n: usize, extra_args: &[&str]) -> Self {
        let mut cluster = Self::create(n, extra_args);
        cluster.start_all();
        cluster
    }

    /// A cluster's directories and ports, with nothing started yet (to prepare data directories
    /// first); [`Cluster::start_all`] starts it.
    pub fn create(n: usize, extra_args: &[&str]) -> Self {
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        // The suites run again against a cluster pre-split at these keys (see `scripts/test`).
        if let Ok(keys) = std::env::var("STRATA_TEST_SPLIT_KEYS")
            && !extra_args.iter().any(|a| a == "--experimental-initial-split-keys")
        {
            extra_args.extend(["--experimental-initial-split-keys".to_string(), keys]);
        }
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (1..=n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                wal_dir: None,
                child: None,
                join: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Self { dir, members, initial_cluster, extra_args }
    }

    /// Starts every member and waits until they have a leader.
    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        self.wait_for_leader(Duration::from_secs(30));
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.members[i].name))
    }

    /// A new member for this cluster (the caller adds it with `member add`), not started yet;
    /// returns its index. The initial cluster every member starts with from now on lists it.
    pub fn add_member(&mut self) -> usize {
        let i = self.members.len() + 1;
        let member = Member {
            name: format!("m{i}"),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: self.dir.path().join(format!("m{i}")),
            wal_dir: None,
            child: None,
            join: true,
        };
        self.initial_cluster += &format!(",{}=http://127.0.0.1:{}", member.name, member.peer_port);
        self.members.push(member);
        self.members.len() - 1
    }

    /// Gives member `i` a new peer port (after `member update`): it listens there from its next
    /// start, and the initial cluster says so.
    pub fn move_peer_port(&mut self, i: usize, port: u16) {
        let old =
            format!("{}=http://127.0.0.1:{}", self.members[i].name, self.members[i].peer_port);
        let new = format!("{}=http://127.0.0.1:{port}", self.members[i].name);
        self.initial_cluster = self.initial_cluster.replace(&old, &new);
        self.members[i].peer_port = port;
    }

    /// Starts member `i` (again).
    pub fn spawn(&mut self, i: usize) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).unwrap();
        let m = &self.members[i];
        // Fast Raft timing, unless the test sets its own.
        let timing: &[&str] = match self.extra_args.iter().any(|a| a == "--election-timeout") {
            true => &[],
            false => &["--heartbeat-interval", "20", "--election-timeout", "200"],
        };
        let child = Command::new(STRATA)
            .arg("start")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.endpoint()])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer_port)])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(timing)
            .args(["--request-timeout", "3000"])
            .args(&self.extra_args)
            .args(
                m.wal_dir
                    .iter()
                    .flat_map(|dir| [std::ffi::OsStr::new("--wal-dir"), dir.as_os_str()]),
            )
            .args(if m.join { &["--initial-cluster-state", "existing"][..] } else { &[] })
            .env("STRATA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start strata");
        self.members[i].child = Some(child);
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM member `i` and wait for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.members[i].child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The log a member wrote, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Waits until every running member reports the same known leader.
    /// Whether every range the running members hold has one leader among them (a cluster
    /// pre-split into several ranges elects one per range).
    fn every_range_led(&self, running: &[usize]) -> bool {
        let mut leaders: std::collections::BTreeMap<String, f64> = Default::default();
        for i in running {
            let Some(body) = http_get(&self.members[*i].endpoint(), "/metrics") else {
                return false;
            };
            for line in body.lines().filter(|l| l.starts_with("strata_range_is_leader{")) {
                let mut fields = line.split_whitespace();
                let (Some(range), Some(Ok(value))) =
                    (fields.next(), fields.next().map(str::parse::<f64>))
                else {
                    return false;
                };
                *leaders.entry(range.to_string()).or_default() += value;
            }
        }
        leaders.values().all(|count| *count == 1.0)
    }

    pub fn wait_for_leader(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let running: Vec<usize> =
            (0..self.members.len()).filter(|i| self.members[*i].child.is_some()).collect();
        loop {
            let leaders: Vec<Option<u64>> =
                running.iter().map(|i| leader_of(&self.members[*i].endpoint())).collect();
            if let Some(Some(first)) = leaders.first()
                && *first != 0
                && leaders.iter().all(|l| *l == Some(*first))
                && self.every_range_led(&running)
            {
                return;
            }
            if Instant::now() > deadline {
                let logs: String = running
                    .iter()
                    .map(|i| format!("--- {}\n{}", self.members[*i].name, self.log(*i)))
                    .collect();
                panic!("no leader after {timeout:?}: {leaders:?}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The leader a member knows of, read from its `/metrics` over plain HTTP (no async runtime,
/// so it works inside and outside tokio tests).
pub fn leader_of(endpoint: &str) -> Option<u64> {
    let body = http_get(endpoint, "/metrics")?;
    let line = body.lines().find(|l| l.starts_with("strata_raft_leader_id "))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|v| v as u64)
}

/// One value from a member's `/metrics`.
pub fn metric(endpoint: &str, name: &str) -> Option<f64> {
    let body = http_get(endpoint, "/metrics")?;
    let line = body.lines().find(|l| l.split_whitespace().next() == Some(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A minimal HTTP/1.1 GET; returns the body.
pub fn http_get(endpoint: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// Runs a command and returns (success, stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let output =
        Command::new(program).args(args).env("ETCDCTL_API", "3").output().unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} — the test suite needs it installed (see README)")
        });
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Connects an etcd-client to the given endpoints.
pub async fn client(endpoints: &[String]) -> etcd_client::Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect(endpoints, Some(options)).await.expect("connect")
}

/// The index of the member that is leader, asked of each member in turn.
pub async fn leader_index(endpoints: &[String]) -> Option<usize> {
    for (i, endpoint) in endpoints.iter().enumerate() {
        let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await else { continue };
        if let Ok(status) = c.status().await
            && status.header().is_some_and(|h| h.member_id() == status.leader())
        {
            return Some(i);
        }
    }
    None
}

/// Puts a key, retrying while the cluster answers with a retryable error (no leader, leader
/// changed, timed out) — what a client does while a new leader is being elected — and returns
/// the revision it was written at. Only for idempotent writes.
pub async fn put_retrying(
    client: &mut etcd_client::Client,
    key: &str,
    value: impl AsRef<[u8]>,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.put(key, value.as_ref(), None).await {
            Ok(put) => return put.header().expect("a header").revision(),
            Err(etcd_client::Error::GRpcStatus(s))
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) =>
            {
                assert!(Instant::now() < deadline, "put {key} kept failing: {}", s.message());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}
