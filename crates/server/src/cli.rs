//! The `strata` command line. `start` takes etcd's flag names so existing etcd scripts carry
//! over; `dev` runs a local three-member cluster; `get`/`put`/`del`/`status` are a small client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, NodeConfig};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a replicated, etcd-compatible key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member (flags as etcd's).
    Start(StartArgs),
    /// Run a local three-member cluster as child processes, until Ctrl-C.
    Dev(crate::dev::DevArgs),
    /// Read a key (or keys with --prefix).
    Get(GetArgs),
    /// Write a key.
    Put(PutArgs),
    /// Delete a key (or keys with --prefix).
    Del(DelArgs),
    /// Show each endpoint's status.
    Status(ClientArgs),
    /// List the cluster's ranges: span, epoch, replicas, leader, progress, keys.
    Ranges(RangesArgs),
    /// Measure any etcd v3 server (Strata or etcd) under load: throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Backups: `etcdctl snapshot save` takes one from a running member.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Restore a snapshot into an empty data directory, as the state of a new cluster. Restore
    /// the same file for every member, then start them with `strata start`.
    Restore {
        /// The snapshot file (from `etcdctl snapshot save`).
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// A directory of its own for the Raft log, as `strata start --wal-dir` will be given.
        #[arg(long)]
        wal_dir: Option<PathBuf>,
    },
}

/// etcd's default storage quota.
const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Args, Clone, Debug)]
pub struct StartArgs {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Where this member keeps its data (default: <name>.strata).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A directory of its own for the Raft log (default: in the data directory). On a disk of
    /// its own, the log's fsyncs do not wait behind the state machine's writes.
    #[arg(long)]
    pub wal_dir: Option<PathBuf>,
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub listen_client_urls: String,
    /// Client URLs announced to the cluster (default: the listen URLs).
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    pub listen_peer_urls: String,
    /// Peer URLs announced to the cluster (default: the listen URLs).
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// `name=peer-url,...` of every initial member (default: this member alone).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap, `existing` to join a running cluster.
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Milliseconds per Raft tick (etcd's heartbeat interval).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Milliseconds without a leader before an election.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Milliseconds a request may wait for the cluster before failing.
    #[arg(long, default_value_t = 7000)]
    pub request_timeout: u64,
    /// Applied Raft entries kept in a member's log before it is compacted (etcd's name; a
    /// follower further behind catches up by snapshot).
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// How often an idle watch that asked for progress notifications gets one (etcd's name and
    /// default).
    #[arg(long, default_value = "10m")]
    pub experimental_watch_progress_notify_interval: String,
    /// Storage quota in bytes (etcd's flag): past it the member raises the NOSPACE alarm and
    /// the cluster refuses writes that add data. 0 means the default, 2 GiB; negative, no quota.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,
    /// Records one compaction step examines (etcd's flag name; etcd counts revisions). The
    /// leader proposes a step every heartbeat until a compaction's deletions are done.
    #[arg(long, default_value_t = 10_000)]
    pub experimental_compaction_batch_limit: u64,
}

impl StartArgs {
    pub fn to_config(&self) -> anyhow::Result<NodeConfig> {
        let first = |urls: &str| urls.split(',').next().unwrap_or("").trim().to_string();
        let listen_client =
            config::parse_url(&first(&self.listen_client_urls)).context("--listen-client-urls")?;
        let listen_peer =
            config::parse_url(&first(&self.listen_peer_urls)).context("--listen-peer-urls")?;
        let advertise_peer = self
            .initial_advertise_peer_urls
            .clone()
            .unwrap_or_else(|| self.listen_peer_urls.clone());
        let advertise_client =
            self.advertise_client_urls.clone().unwrap_or_else(|| self.listen_client_urls.clone());
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, first(&advertise_peer)));
        let members = config::parse_initial_cluster(&initial_cluster, &self.initial_cluster_token)?;
        let Some(me) = members.iter().find(|m| m.name == self.name) else {
            bail!("--initial-cluster has no member named {:?} (--name)", self.name);
        };
        let mut advertised: Vec<String> =
            advertise_peer.split(',').map(|s| s.trim().to_string()).collect();
        advertised.sort();
        if advertised != me.peer_urls {
            bail!(
                "--initial-advertise-peer-urls {:?} do not match --initial-cluster's URLs for {:?}: {:?}",
                advertised,
                self.name,
                me.peer_urls
            );
        }
        let data_dir =
            self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.strata", self.name)));
        // `existing` with an empty directory joins a running cluster that added this member
        // (`etcdctl member add`); with data, it is a restart like any other.
        let join = match self.initial_cluster_state.as_str() {
            "new" => false,
            "existing" => !data_dir.join("FORMAT").exists(),
            other => bail!("--initial-cluster-state must be `new` or `existing`, not {other:?}"),
        };
        let watch_progress_interval =
            config::parse_duration(&self.experimental_watch_progress_notify_interval)
                .context("--experimental-watch-progress-notify-interval")?;
        if watch_progress_interval.is_zero() {
            bail!("--experimental-watch-progress-notify-interval must be positive");
        }
        if self.experimental_compaction_batch_limit == 0 {
            bail!("--experimental-compaction-batch-limit must be positive");
        }
        if self.snapshot_count < 10 {
            bail!("--snapshot-count must be at least 10");
        }
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            bail!("--election-timeout must be at least 5 × --heartbeat-interval");
        }
        Ok(NodeConfig {
            name: self.name.clone(),
            data_dir,
            wal_dir: self.wal_dir.clone(),
            listen_client,
            advertise_client_urls: advertise_client
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            listen_peer,
            members,
            cluster_token: self.initial_cluster_token.clone(),
            tick_interval: Duration::from_millis(self.heartbeat_interval),
            election_ticks: (self.election_timeout / self.heartbeat_interval) as usize,
            request_timeout: Duration::from_millis(self.request_timeout),
            log_entries_max: self.snapshot_count,
            watch_progress_interval,
            join,
            recorded_member_id: None,
            quota_bytes: match self.quota_backend_bytes {
                0 => DEFAULT_QUOTA_BYTES,
                q if q < 0 => 0,
                q => q as u64,
            },
            compaction_step_records: self.experimental_compaction_batch_limit,
        })
    }
}

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Comma-separated client URLs; the first that answers is used.
    #[arg(long, default_value = "http://127.0.0.1:2379", global = true)]
    pub endpoints: String,
}

#[derive(Args, Debug)]
struct RangesArgs {
    /// Output format: `table` or `json`.
    #[arg(short = 'w', long = "write-out", default_value = "table")]
    write_out: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct GetArgs {
    key: String,
    #[arg(long)]
    prefix: bool,
    /// Read at this revision.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct PutArgs {
    key: String,
    value: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct DelArgs {
    key: String,
    #[arg(long)]
    prefix: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Start(args) => {
                let config = args.to_config()?;
                crate::server::run(config, shutdown_signal()).await
            }
            Command::Dev(args) => crate::dev::run(args, shutdown_signal()).await,
            Command::Get(args) => {
                crate::cli_client::get(&args.client.endpoints, &args.key, args.prefix, args.rev)
                    .await
            }
            Command::Put(args) => {
                crate::cli_client::put(&args.client.endpoints, &args.key, &args.value).await
            }
            Command::Del(args) => {
                crate::cli_client::del(&args.client.endpoints, &args.key, args.prefix).await
            }
            Command::Status(args) => crate::cli_client::status(&args.endpoints).await,
            Command::Ranges(args) => {
                let json = match args.write_out.as_str() {
                    "table" => false,
                    "json" => true,
                    other => bail!("--write-out must be `table` or `json`, not {other:?}"),
                };
                crate::cli_client::ranges(&args.client.endpoints, json).await
            }
            Command::Snapshot(SnapshotCommand::Restore { file, data_dir, wal_dir }) => {
                crate::backup::restore(&file, &data_dir, wal_dir.as_deref())
            }
            Command::Bench(args) => {
                let summary = crate::bench::run(args).await?;
                match &summary.sum_check {
                    Some(check) if check.starts_with("FAILED") => anyhow::bail!("{check}"),
                    _ => Ok(()),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, filter};
    let env_filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    // Colours only on a terminal: log files and CI output stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_filter(env_filter);
    // The storage engine's debug records, kept only to name the file an open failed on.
    let trail = crate::open_trail::OpenTrail.with_filter(
        filter::Targets::new()
            .with_target("fjall", tracing::Level::DEBUG)
            .with_target("lsm_tree", tracing::Level::DEBUG),
    );
    let _ = tracing_subscriber::registry().with(output).with(trail).try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
