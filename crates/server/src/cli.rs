//! The `strata` command line. `start` takes etcd's flag names so existing etcd scripts carry
//! over; `dev` runs a local three-member cluster; `get`/`put`/`del`/`status` are a small client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use strata_core::mvcc::Limits;

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
    /// Run one member, configured as etcd is: etcd's flags (`--flag` or `-flag`) and `ETCD_*`
    /// variables, the command line first; etcd flags Strata cannot honour stop it, named.
    Start(Box<StartArgs>),
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
    /// Administer ranges: `strata range split KEY`.
    #[command(subcommand)]
    Range(RangeCommand),
    /// Measure any etcd v3 server (Strata or etcd) under load: throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Backups: `etcdctl snapshot save` takes one from a running member.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand)]
enum RangeCommand {
    /// Split the range holding KEY at it: the range keeps the keys below KEY, a new range
    /// (with the same replicas) takes the rest.
    Split {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
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
    /// Further URLs that serve only `/metrics` and the health probes (etcd's flag), for
    /// Prometheus and probes kept off the client port.
    #[arg(long, default_value = "")]
    pub listen_metrics_urls: String,
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
    /// Largest client request in bytes (etcd's flag and default).
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Most operations in one branch of a transaction (etcd's flag and default).
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: usize,
    /// `periodic` (keep --auto-compaction-retention worth of history) or `revision` (keep that
    /// many revisions); etcd's flags and semantics.
    #[arg(long, default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// A duration (a bare number: hours) or a count of revisions, as the mode says; 0 is off.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// Experimental: comma-separated keys at which a new cluster's key space is cut into
    /// ranges, each its own Raft group. Single-key requests and reads across ranges are
    /// served; writes and transactions across ranges, and watches past the first range, are
    /// not yet (`docs/sharding.md`). Read when the cluster is created only.
    #[arg(long, default_value = "", hide = true)]
    pub experimental_initial_split_keys: String,
    /// debug, info, warn or error (etcd's panic and fatal log as error). `STRATA_LOG`, a
    /// filter per module, takes precedence.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl StartArgs {
    pub fn to_config(&self) -> anyhow::Result<NodeConfig> {
        let first = |urls: &str| urls.split(',').next().unwrap_or("").trim().to_string();
        let listen_clients = (self.listen_client_urls.split(','))
            .map(|url| config::parse_url(url.trim()).context("--listen-client-urls"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let listen_metrics = (self.listen_metrics_urls.split(','))
            .filter(|url| !url.trim().is_empty())
            .map(|url| config::parse_url(url.trim()).context("--listen-metrics-urls"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.listen_peer_urls.contains(',') {
            bail!(
                "--listen-peer-urls: one URL only; listening for peers on several is not supported yet"
            );
        }
        let listen_peer =
            config::parse_url(self.listen_peer_urls.trim()).context("--listen-peer-urls")?;
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
        if self.max_request_bytes == 0 || self.max_txn_ops == 0 {
            bail!("--max-request-bytes and --max-txn-ops must be positive");
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
            listen_clients,
            listen_metrics,
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
            limits: Limits {
                request_bytes_max: self.max_request_bytes,
                txn_ops_max: self.max_txn_ops,
            },
            initial_split_keys: split_keys(&self.experimental_initial_split_keys)?,
            auto_compaction: crate::auto_compaction::Mode::parse(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )?,
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
    let (args, notes) = match command_line(std::env::args().collect(), std::env::vars().collect()) {
        Ok(taken) => taken,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    let log_level = match &cli.command {
        Command::Start(args) => args.log_level.as_str(),
        _ => "info",
    };
    if let Err(e) = init_logging(log_level) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    for note in notes {
        tracing::info!("{note}");
    }
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
            Command::Range(RangeCommand::Split { key, client }) => {
                crate::cli_client::split(&client.endpoints, &key).await
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

/// `--experimental-initial-split-keys`: distinct, non-empty keys, in any order.
fn split_keys(list: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut keys: Vec<Vec<u8>> =
        list.split(',').filter(|k| !k.is_empty()).map(|k| k.as_bytes().to_vec()).collect();
    keys.sort();
    let count = keys.len();
    keys.dedup();
    if keys.len() != count {
        bail!("--experimental-initial-split-keys lists a key twice: {list:?}");
    }
    Ok(keys)
}

/// The command line clap is to parse, and lines for the log: invoked as `etcd`, the binary is
/// `strata start`; `start`'s etcd flags that Strata does not implement are taken out (and
/// read from the environment) by `etcd_flags`, which refuses those it cannot honour.
fn command_line(
    mut args: Vec<String>,
    env: Vec<(String, String)>,
) -> Result<(Vec<String>, Vec<String>), String> {
    let invoked_as = args.first().map(|a| std::path::Path::new(a).file_name());
    let as_etcd = invoked_as.flatten().is_some_and(|name| name == "etcd");
    let wants_version = args.get(1).is_some_and(|a| a == "--version");
    if as_etcd && !wants_version {
        args.insert(1, "start".to_string());
    }
    if args.get(1).map(String::as_str) != Some("start") {
        return Ok((args, Vec::new()));
    }
    let start = StartArgs::augment_args(clap::Command::new("start"));
    let own: Vec<&str> = start.get_arguments().filter_map(|a| a.get_long()).collect();
    let mut notes = Vec::new();
    let (given, env) = match config_file(&args[2..], &env) {
        // As etcd: a configuration file replaces every other flag and variable.
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read --config-file {path}: {e}"))?;
            let from_file = crate::config_file::args_from(&text)
                .map_err(|e| format!("--config-file {path}: {e}"))?;
            let flag = |a: &&String| a.starts_with('-') && !a.contains("config-file");
            let others = args[2..].iter().filter(flag).count();
            notes.push(format!(
                "configured by --config-file {path}; {others} other flags and the ETCD_* \
                 variables are ignored, as etcd ignores them"
            ));
            (from_file, Vec::new())
        }
        None => (args[2..].to_vec(), env),
    };
    let taken = crate::etcd_flags::take(&given, &env, &own)?;
    notes.extend(taken.notes);
    let args = args[..2].iter().cloned().chain(taken.args).collect();
    Ok((args, notes))
}

/// The configuration file named by `--config-file` (or `-config-file`, or `ETCD_CONFIG_FILE`).
fn config_file(args: &[String], env: &[(String, String)]) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let spelled = arg.trim_start_matches('-');
        if let Some(path) = spelled.strip_prefix("config-file=") {
            return Some(path.to_string());
        }
        if spelled == "config-file" && arg.starts_with('-') {
            return args.next().cloned();
        }
    }
    env.iter().find(|(name, _)| name == "ETCD_CONFIG_FILE").map(|(_, path)| path.clone())
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, filter};
    let level = match level {
        "debug" | "info" | "warn" | "error" => level,
        "panic" | "fatal" => "error",
        other => {
            bail!("--log-level must be debug, info, warn, error, panic or fatal, not {other:?}")
        }
    };
    let default = format!("{level},fjall=warn,lsm_tree=warn");
    let env_filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd_flags::{FLAGS, Rule};

    /// Every flag `etcd --help` lists in 3.5, with its default (a value for those without).
    const ETCD_35_FLAGS: &[(&str, &str)] = &[
        ("name", "default"),
        ("data-dir", "default.etcd"),
        ("wal-dir", "wal"),
        ("snapshot-count", "100000"),
        ("heartbeat-interval", "100"),
        ("election-timeout", "1000"),
        ("initial-election-tick-advance", "true"),
        ("listen-peer-urls", "http://localhost:2380"),
        ("listen-client-urls", "http://localhost:2379"),
        ("listen-client-http-urls", ""),
        ("max-snapshots", "5"),
        ("max-wals", "5"),
        ("quota-backend-bytes", "0"),
        ("backend-bbolt-freelist-type", "map"),
        ("backend-batch-interval", ""),
        ("backend-batch-limit", "0"),
        ("max-txn-ops", "128"),
        ("max-request-bytes", "1572864"),
        ("max-concurrent-streams", "4294967295"),
        ("enable-grpc-gateway", "true"),
        ("grpc-keepalive-min-time", "5s"),
        ("grpc-keepalive-interval", "2h"),
        ("grpc-keepalive-timeout", "20s"),
        ("socket-reuse-port", "false"),
        ("socket-reuse-address", "false"),
        ("raft-read-timeout", "5s"),
        ("raft-write-timeout", "5s"),
        ("initial-advertise-peer-urls", "http://localhost:2380"),
        ("initial-cluster", "default=http://localhost:2380"),
        ("initial-cluster-state", "new"),
        ("initial-cluster-token", "etcd-cluster"),
        ("advertise-client-urls", "http://localhost:2379"),
        ("discovery", ""),
        ("discovery-fallback", "proxy"),
        ("discovery-proxy", ""),
        ("discovery-srv", ""),
        ("discovery-srv-name", ""),
        ("strict-reconfig-check", "false"),
        ("pre-vote", "true"),
        ("auto-compaction-retention", "0"),
        ("auto-compaction-mode", "periodic"),
        ("enable-v2", "false"),
        ("v2-deprecation", "not-yet"),
        ("cert-file", ""),
        ("key-file", ""),
        ("client-cert-auth", "false"),
        ("client-cert-file", ""),
        ("client-key-file", ""),
        ("client-crl-file", ""),
        ("client-cert-allowed-hostname", ""),
        ("trusted-ca-file", ""),
        ("auto-tls", "false"),
        ("peer-cert-file", ""),
        ("peer-key-file", ""),
        ("peer-client-cert-auth", "false"),
        ("peer-trusted-ca-file", ""),
        ("peer-cert-allowed-cn", ""),
        ("peer-cert-allowed-hostname", ""),
        ("peer-auto-tls", "false"),
        ("peer-client-cert-file", ""),
        ("peer-client-key-file", ""),
        ("self-signed-cert-validity", "1"),
        ("peer-crl-file", ""),
        ("cipher-suites", ""),
        ("cors", "*"),
        ("host-whitelist", "*"),
        ("tls-min-version", "TLS1.2"),
        ("tls-max-version", ""),
        ("auth-token", "simple"),
        ("bcrypt-cost", "10"),
        ("auth-token-ttl", "300"),
        ("enable-pprof", "false"),
        ("metrics", "basic"),
        ("listen-metrics-urls", ""),
        ("logger", "zap"),
        ("log-outputs", "default"),
        ("log-level", "info"),
        ("enable-log-rotation", "false"),
        ("log-rotation-config-json", "{\"maxsize\": 100}"),
        ("experimental-enable-distributed-tracing", "false"),
        ("experimental-distributed-tracing-address", "localhost:4317"),
        ("experimental-distributed-tracing-service-name", "etcd"),
        ("experimental-distributed-tracing-instance-id", ""),
        ("experimental-distributed-tracing-sampling-rate", "0"),
        ("proxy", "off"),
        ("proxy-failure-wait", "5000"),
        ("proxy-refresh-interval", "30000"),
        ("proxy-dial-timeout", "1000"),
        ("proxy-write-timeout", "5000"),
        ("proxy-read-timeout", "0"),
        ("experimental-initial-corrupt-check", "false"),
        ("experimental-corrupt-check-time", "0s"),
        ("experimental-compact-hash-check-enabled", "false"),
        ("experimental-compact-hash-check-time", "1m"),
        ("experimental-enable-v2v3", ""),
        ("experimental-enable-lease-checkpoint", "false"),
        ("experimental-enable-lease-checkpoint-persist", "false"),
        ("experimental-compaction-batch-limit", "1000"),
        ("experimental-compaction-sleep-interval", "10ms"),
        ("experimental-peer-skip-client-san-verification", "false"),
        ("experimental-watch-progress-notify-interval", "10m"),
        ("experimental-downgrade-check-time", "5s"),
        ("experimental-memory-mlock", "false"),
        ("experimental-warning-apply-duration", "100ms"),
        ("experimental-txn-mode-write-with-shared-buffer", "true"),
        ("experimental-bootstrap-defrag-threshold-megabytes", "0"),
        ("experimental-stop-grpc-service-on-defrag", "false"),
        ("force-new-cluster", "false"),
        ("unsafe-no-fsync", "false"),
    ];

    fn start(args: &[String], env: &[(&str, &str)]) -> Result<StartArgs, String> {
        let line = ["strata", "start"].iter().map(|s| s.to_string()).chain(args.iter().cloned());
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (args, _) = command_line(line.collect(), env)?;
        match Cli::try_parse_from(args).map_err(|e| e.to_string())?.command {
            Command::Start(args) => Ok(*args),
            _ => unreachable!("parsed as start"),
        }
    }

    #[test]
    fn every_etcd_flag_with_its_default_is_honoured_or_accepted() {
        for (name, value) in ETCD_35_FLAGS {
            if let Err(e) = start(&[format!("--{name}={value}")], &[]) {
                panic!("--{name}={value}: {e}");
            }
            let variable = crate::etcd_flags::env_name(name);
            if let Err(e) = start(&[], &[(variable.as_str(), value)]) {
                panic!("{variable}={value}: {e}");
            }
        }
        // Nothing in the table that etcd does not have.
        for flag in FLAGS {
            assert!(ETCD_35_FLAGS.iter().any(|(n, _)| *n == flag.name), "{}", flag.name);
        }
    }

    #[test]
    fn every_etcd_flag_strata_cannot_honour_is_refused_by_name() {
        for flag in FLAGS {
            let value = match flag.rule {
                Rule::Accepted(_) => continue,
                Rule::Only(accepted, _) if accepted == ["true"] => "false",
                Rule::Only(_, _) if flag.boolean => "true",
                Rule::Only(_, _) => "something-else",
            };
            let error = start(&[format!("--{}={value}", flag.name)], &[]).unwrap_err();
            let named = format!("etcd flag --{}={value} is not supported by Strata: ", flag.name);
            assert!(error.starts_with(&named), "{error}");
        }
    }

    #[test]
    fn the_environment_configures_a_member_and_the_command_line_wins() {
        let env = [
            ("ETCD_NAME", "infra1"),
            ("ETCD_INITIAL_CLUSTER", "infra1=http://10.0.0.1:2380"),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://10.0.0.1:2380"),
            ("ETCD_LISTEN_CLIENT_URLS", "http://10.0.0.1:2379,http://127.0.0.1:2379"),
            ("ETCD_MAX_TXN_OPS", "512"),
        ];
        let args = start(&[], &env).unwrap();
        let config = args.to_config().unwrap();
        assert_eq!(config.name, "infra1");
        assert_eq!(config.listen_clients.len(), 2);
        assert_eq!(config.limits.txn_ops_max, 512);
        let args = start(&["-max-txn-ops".to_string(), "64".to_string()], &env).unwrap();
        assert_eq!(args.max_txn_ops, 64);
    }

    #[test]
    fn invoked_as_etcd_the_binary_starts_a_member() {
        let line = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (args, _) = command_line(line(&["/usr/bin/etcd", "--name", "a"]), Vec::new()).unwrap();
        assert_eq!(args, line(&["/usr/bin/etcd", "start", "--name", "a"]));
        let (args, _) = command_line(line(&["etcd", "--version"]), Vec::new()).unwrap();
        assert_eq!(args, line(&["etcd", "--version"]));
    }
}
