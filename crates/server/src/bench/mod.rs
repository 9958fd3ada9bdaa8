//! `strata bench`: a load generator for any server that speaks etcd's v3 gRPC API, so the same
//! command measures Strata and etcd.
//!
//! Closed loop (the default): `--clients` tasks, each sending its next request when the last
//! one is answered, over `--connections` HTTP/2 connections spread over the endpoints. Open
//! loop (`--rate`): requests are due at a fixed rate, at most `--clients` in flight, and
//! latency is measured from when a request was due, so queueing shows instead of hiding.
//! A run stops after `--total` operations or `--duration` seconds, whichever comes first.
//! `--trace` writes every request's sending time, latency and endpoint to a file, to see when
//! the slow ones happened and through which member (`bench/tail` reads it).

pub mod keys;
mod report;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::request_op;
use strata_core::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::{Channel, Endpoint};

use crate::pb::etcd::kv_client::KvClient;
pub use keys::Distribution;
use keys::{Chooser, Rng, key};
pub use report::Summary;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Endpoints (host:port or http://host:port), comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    #[arg(long, value_enum, default_value = "put")]
    pub workload: Workload,
    /// Concurrent clients (closed loop), or most requests in flight (open loop).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// HTTP/2 connections the clients share (default: one per client, at most 64).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Stop after this many operations...
    #[arg(long, default_value_t = 100_000)]
    pub total: u64,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Open loop: requests per second in all; 0 for a closed loop.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys written and read (gets and mixed preload them first).
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Skip writing the key space before `get`, `get-serializable`, `mixed` or a YCSB workload:
    /// an earlier run wrote it (so that the server's CPU time can be measured over the reads alone).
    #[arg(long)]
    pub no_preload: bool,
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// Share of reads in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Counters the txn workload increments by compare-and-swap.
    #[arg(long, default_value_t = 10)]
    pub counters: u64,
    /// Keys under the prefix that each range request reads.
    #[arg(long, default_value_t = 100)]
    pub range_keys: u64,
    /// Watch streams on the written prefix (watch workload).
    #[arg(long, default_value_t = 16)]
    pub watchers: usize,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Print only the JSON line: no progress, no table.
    #[arg(long)]
    pub json: bool,
    /// Write one line per request to this file: when it was sent (µs after the measured run
    /// began), its latency (µs), the index of its endpoint in `--endpoints`, and `ok` or
    /// `error`. Not for the watch workload, whose operations are deliveries.
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Puts of `--value-size` bytes.
    Put,
    /// Linearizable gets.
    Get,
    /// Serializable gets (served by any member from its own state).
    GetSerializable,
    /// Linearizable gets and puts, `--read-ratio` of them gets.
    Mixed,
    /// Increments of `--counters` hot counters by compare-and-swap, retried on conflict; the
    /// counters' final sum is checked against the increments acknowledged.
    Txn,
    /// Transactions putting two keys half the key space apart: in a cluster split at the
    /// middle of the key space, each a transaction across ranges (two-phase commit).
    TxnPair,
    /// Prefix reads of `--range-keys` keys.
    Range,
    /// YCSB core workload A, update heavy: 50% reads, 50% updates.
    YcsbA,
    /// YCSB B, read mostly: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C, read only.
    YcsbC,
    /// YCSB D, read latest: 95% reads favouring the newest keys, 5% inserts.
    YcsbD,
    /// YCSB E, short ranges: 95% scans of up to 100 keys, 5% inserts.
    YcsbE,
    /// YCSB F, read-modify-write: 50% reads, 50% reads each followed by a write of the key.
    YcsbF,
    /// Puts under a prefix that `--watchers` streams watch; each event delivered is an
    /// operation, timed from its put's sending.
    Watch,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::GetSerializable => "get-serializable",
            Workload::Mixed => "mixed",
            Workload::Txn => "txn",
            Workload::TxnPair => "txn-pair",
            Workload::Range => "range",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
            Workload::Watch => "watch",
        }
    }

    fn is_ycsb(self) -> bool {
        matches!(
            self,
            Workload::YcsbA
                | Workload::YcsbB
                | Workload::YcsbC
                | Workload::YcsbD
                | Workload::YcsbE
                | Workload::YcsbF
        )
    }

    /// How keys are chosen: YCSB's workloads fix their own (Zipfian, over which D counts back
    /// from the newest key); the others take `--distribution`.
    fn distribution(self, asked: Distribution) -> Distribution {
        if self.is_ycsb() { Distribution::Zipfian } else { asked }
    }
}

/// What every operation shares.
struct Shared {
    args: BenchArgs,
    value: Vec<u8>,
    timeout: Duration,
    recorder: Mutex<Recorder>,
    completed: AtomicU64,
    /// Compare-and-swap attempts that lost to another client (txn workload).
    conflicts: AtomicU64,
    /// Keys in the key space so far: YCSB D and E insert past `--key-space`.
    keys: AtomicU64,
    /// Successful operations by kind (YCSB).
    kinds: Mutex<BTreeMap<&'static str, u64>>,
    /// The endpoint (index in `--endpoints`) each client's connection goes to.
    endpoint_of_client: Vec<usize>,
}

#[derive(Default)]
struct Recorder {
    /// Latencies of successful operations, in microseconds.
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
    /// Every request, with `--trace`.
    trace: Vec<TraceRow>,
}

/// One request of `--trace`.
struct TraceRow {
    sent_micros: u64,
    latency_micros: u32,
    endpoint: usize,
    ok: bool,
}

/// Runs a benchmark and returns its summary (also printed, unless `--json` asks for the JSON
/// line alone).
pub async fn run(args: BenchArgs) -> anyhow::Result<Summary> {
    validate(&args)?;
    let (channels, endpoint_of_channel) = connect(&args)?;
    let clients: Vec<KvClient<Channel>> = (0..args.clients)
        .map(|i| {
            KvClient::new(channels[i % channels.len()].clone()).max_decoding_message_size(64 << 20)
        })
        .collect();
    let shared = Arc::new(Shared {
        value: vec![b'v'; args.value_size],
        timeout: Duration::from_secs_f64(args.timeout),
        recorder: Mutex::new(Recorder::default()),
        completed: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        keys: AtomicU64::new(args.key_space),
        kinds: Mutex::default(),
        endpoint_of_client: (0..args.clients)
            .map(|i| endpoint_of_channel[i % channels.len()])
            .collect(),
        args: args.clone(),
    });
    prepare(&shared, &clients).await?;

    let started = Instant::now();
    let unix_started = std::time::SystemTime::now() - started.elapsed();
    let progress = (!args.json).then(|| tokio::spawn(progress(shared.clone(), started)));
    let mut sum_check = None;
    let elapsed = if args.workload == Workload::Watch {
        let (elapsed, check) = watch::run(&shared, &channels, &clients, started).await?;
        sum_check = Some(check);
        elapsed
    } else {
        if args.rate > 0 {
            open_loop(&shared, &clients, started).await;
        } else {
            closed_loop(&shared, &clients, started).await;
        }
        started.elapsed()
    };
    if let Some(progress) = progress {
        progress.abort();
    }
    if args.workload == Workload::Txn {
        sum_check = Some(check_counters(&shared, &clients[0]).await?);
    }
    let recorder = std::mem::take(&mut *shared.recorder.lock().expect("recorder lock"));
    if let Some(path) = &args.trace {
        write_trace(path, &args.endpoints, unix_started, &recorder.trace)
            .with_context(|| format!("cannot write the trace to {}", path.display()))?;
    }
    let mut summary = Summary::new(
        &args,
        elapsed,
        recorder.latencies,
        recorder.errors,
        shared.conflicts.load(Ordering::Relaxed),
        sum_check,
    );
    summary.kinds = std::mem::take(&mut *shared.kinds.lock().expect("kinds lock"));
    if !args.json {
        print!("{}", summary.table());
    }
    println!("{}", summary.json());
    Ok(summary)
}

fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.total == 0 {
        bail!("--clients and --total must be at least 1");
    }
    if !(args.duration > 0.0 && args.timeout > 0.0) {
        bail!("--duration and --timeout must be positive");
    }
    if !(1..=1024).contains(&args.key_size) {
        bail!("--key-size must be 1 to 1024 bytes");
    }
    if args.value_size > 1024 * 1024 {
        bail!("--value-size must be at most 1 MiB");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.key_space == 0 || args.counters == 0 || args.range_keys == 0 {
        bail!("--key-space, --counters and --range-keys must be at least 1");
    }
    if args.workload == Workload::Watch {
        if args.trace.is_some() {
            bail!("--trace records requests; the watch workload measures deliveries");
        }
        if args.watchers == 0 || args.rate > 0 {
            bail!("the watch workload needs --watchers of at least 1, and runs closed loop only");
        }
        if args.value_size < watch::STAMP_BYTES {
            bail!("the watch workload needs --value-size of at least {}", watch::STAMP_BYTES);
        }
    }
    Ok(())
}

/// The connections, and the endpoint (index in `--endpoints`) each one goes to.
fn connect(args: &BenchArgs) -> anyhow::Result<(Vec<Channel>, Vec<usize>)> {
    let endpoints: Vec<String> = args
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| if e.contains("://") { e.to_string() } else { format!("http://{e}") })
        .collect();
    if endpoints.is_empty() {
        bail!("--endpoints is empty");
    }
    let count = args.connections.unwrap_or(args.clients.min(64)).max(1);
    let channels = (0..count)
        .map(|i| {
            let url = &endpoints[i % endpoints.len()];
            let endpoint = Endpoint::from_shared(url.clone())
                .with_context(|| format!("invalid endpoint {url}"))?
                .connect_timeout(Duration::from_secs(5));
            Ok(endpoint.connect_with_connector_lazy(tower::service_fn(crate::coalesce::connect)))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((channels, (0..count).map(|i| i % endpoints.len()).collect()))
}

/// Writes what the workload reads before measuring: the key space for gets, the counters for
/// txn, the prefix for range.
async fn prepare(shared: &Arc<Shared>, clients: &[KvClient<Channel>]) -> anyhow::Result<()> {
    let args = &shared.args;
    let (prefix, count, value) = match args.workload {
        Workload::Txn => ("c", args.counters, b"0".to_vec()),
        Workload::Range => ("r", args.range_keys, shared.value.clone()),
        Workload::Put | Workload::Watch | Workload::TxnPair => return Ok(()),
        // The reads of the rest (get, get-serializable, mixed, YCSB) find every key written.
        _ if args.no_preload => return Ok(()),
        _ => ("", args.key_space, shared.value.clone()),
    };
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in clients.iter().take(64) {
        let (mut client, next, value) = (client.clone(), next.clone(), value.clone());
        let (key_size, timeout) = (args.key_size, shared.timeout);
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok(());
                }
                let put = PutRequest {
                    key: key(prefix, index, key_size),
                    value: value.clone(),
                    ..Default::default()
                };
                tokio::time::timeout(timeout, client.put(put))
                    .await
                    .context("preloading timed out")?
                    .context("preloading failed")?;
            }
        }));
    }
    for task in tasks {
        let result: anyhow::Result<()> = task.await?;
        result?;
    }
    Ok(())
}

async fn closed_loop(shared: &Arc<Shared>, clients: &[KvClient<Channel>], started: Instant) {
    let deadline = started + Duration::from_secs_f64(shared.args.duration);
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let (shared, issued, mut client) = (shared.clone(), issued.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x5eed ^ i as u64);
            let distribution = shared.args.workload.distribution(shared.args.distribution);
            let mut chooser = Chooser::new(distribution, shared.args.key_space, i as u64 * 7919);
            while issued.fetch_add(1, Ordering::Relaxed) < shared.args.total
                && Instant::now() < deadline
            {
                let sent = Instant::now();
                let result = operation(&shared, &mut client, &mut rng, &mut chooser).await;
                record(&shared, started, i, sent, result);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn open_loop(shared: &Arc<Shared>, clients: &[KvClient<Channel>], started: Instant) {
    let deadline = started + Duration::from_secs_f64(shared.args.duration);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(shared.args.clients));
    let interval = 1.0 / shared.args.rate as f64;
    let mut tasks = Vec::new();
    for i in 0..shared.args.total {
        let due = started + Duration::from_secs_f64(i as f64 * interval);
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore open");
        let client_index = i as usize % clients.len();
        let (shared, mut client) = (shared.clone(), clients[client_index].clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x5eed ^ i);
            let distribution = shared.args.workload.distribution(shared.args.distribution);
            let mut chooser = Chooser::new(distribution, shared.args.key_space, i);
            let result = operation(&shared, &mut client, &mut rng, &mut chooser).await;
            record(&shared, started, client_index, due, result);
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn record_error(shared: &Shared, kind: String) {
    *shared.recorder.lock().expect("recorder lock").errors.entry(kind).or_default() += 1;
    shared.completed.fetch_add(1, Ordering::Relaxed);
}

fn record_latencies(shared: &Shared, micros: &[u32]) {
    shared.recorder.lock().expect("recorder lock").latencies.extend_from_slice(micros);
    shared.completed.fetch_add(micros.len() as u64, Ordering::Relaxed);
}

/// Records one request of `client`, sent (or due) at `since`; trace times count from `started`.
fn record(
    shared: &Shared,
    started: Instant,
    client: usize,
    since: Instant,
    result: Result<(), String>,
) {
    let micros = since.elapsed().as_micros().min(u32::MAX as u128) as u32;
    if shared.args.trace.is_some() {
        shared.recorder.lock().expect("recorder lock").trace.push(TraceRow {
            sent_micros: since.saturating_duration_since(started).as_micros() as u64,
            latency_micros: micros,
            endpoint: shared.endpoint_of_client[client],
            ok: result.is_ok(),
        });
    }
    match result {
        Ok(()) => record_latencies(shared, &[micros]),
        Err(kind) => record_error(shared, kind),
    }
}

/// `--trace`'s file: a header naming the start (Unix time) and the endpoints, then one line
/// per request, in the order they were sent.
fn write_trace(
    path: &std::path::Path,
    endpoints: &str,
    unix_started: std::time::SystemTime,
    rows: &[TraceRow],
) -> std::io::Result<()> {
    use std::io::Write as _;
    let since_epoch = unix_started.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut order: Vec<&TraceRow> = rows.iter().collect();
    order.sort_by_key(|row| row.sent_micros);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "# strata bench trace; started_unix_micros {}; endpoints {endpoints}",
        since_epoch.as_micros()
    )?;
    writeln!(out, "# sent_micros latency_micros endpoint outcome")?;
    for row in order {
        let outcome = if row.ok { "ok" } else { "error" };
        writeln!(out, "{} {} {} {outcome}", row.sent_micros, row.latency_micros, row.endpoint)?;
    }
    out.flush()
}

/// One operation of the workload; an error is returned as its kind, for counting.
async fn operation(
    shared: &Shared,
    client: &mut KvClient<Channel>,
    rng: &mut Rng,
    chooser: &mut Chooser,
) -> Result<(), String> {
    let args = &shared.args;
    let timeout = shared.timeout;
    let read = args.workload == Workload::Get
        || args.workload == Workload::GetSerializable
        || (args.workload == Workload::Mixed && rng.unit() < args.read_ratio);
    match args.workload {
        Workload::Put | Workload::Get | Workload::GetSerializable | Workload::Mixed => {
            let key = key("", chooser.next(rng), args.key_size);
            if read {
                let request = RangeRequest {
                    key,
                    serializable: args.workload == Workload::GetSerializable,
                    ..Default::default()
                };
                timed(timeout, client.range(request)).await.map(drop)
            } else {
                let request = PutRequest { key, value: shared.value.clone(), ..Default::default() };
                timed(timeout, client.put(request)).await.map(drop)
            }
        }
        Workload::Range => {
            let request =
                RangeRequest { key: b"r".to_vec(), range_end: b"s".to_vec(), ..Default::default() };
            let response = timed(timeout, client.range(request)).await?.into_inner();
            if response.kvs.len() as u64 != args.range_keys {
                return Err(format!("range returned {} keys", response.kvs.len()));
            }
            Ok(())
        }
        Workload::Txn => increment(shared, client, rng.range(0, args.counters)).await,
        Workload::TxnPair => {
            let half = (args.key_space / 2).max(1);
            let first = chooser.next(rng) % half;
            let put = |index| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key("", index, args.key_size),
                    value: shared.value.clone(),
                    ..Default::default()
                })),
            };
            let txn =
                TxnRequest { success: vec![put(first), put(first + half)], ..Default::default() };
            timed(timeout, client.txn(txn)).await.map(drop)
        }
        Workload::Watch => Err("the watch workload runs its own loop".to_string()),
        _ => ycsb(shared, client, rng, chooser).await,
    }
}

/// One operation of a YCSB core workload (Cooper et al., "Benchmarking Cloud Serving Systems
/// with YCSB", 2010) in etcd's terms: a read is a linearizable get, an update a put of an
/// existing key, an insert a put of the next key past the key space, a scan a range of 1 to
/// 100 keys from a chosen one, a read-modify-write a get then a put of the same key (timed as
/// one operation, as YCSB does).
async fn ycsb(
    shared: &Shared,
    client: &mut KvClient<Channel>,
    rng: &mut Rng,
    chooser: &mut Chooser,
) -> Result<(), String> {
    let (args, timeout) = (&shared.args, shared.timeout);
    let size = args.key_size;
    // YCSB scrambles its Zipfian draws so the hot keys are spread over the key space.
    let existing = |rng: &mut Rng, chooser: &mut Chooser| {
        key("", strata_core::rng::mix(chooser.next(rng)) % args.key_space, size)
    };
    let get = |key: Vec<u8>| RangeRequest { key, ..Default::default() };
    let put = |key: Vec<u8>| PutRequest { key, value: shared.value.clone(), ..Default::default() };
    let p = rng.unit();
    let (kind, read, write) = match args.workload {
        Workload::YcsbA if p < 0.5 => ("read", Some(existing(rng, chooser)), None),
        Workload::YcsbA => ("update", None, Some(existing(rng, chooser))),
        Workload::YcsbB if p < 0.95 => ("read", Some(existing(rng, chooser)), None),
        Workload::YcsbB => ("update", None, Some(existing(rng, chooser))),
        Workload::YcsbC => ("read", Some(existing(rng, chooser)), None),
        Workload::YcsbD if p < 0.95 => {
            let newest = shared.keys.load(Ordering::Relaxed) - 1;
            ("read", Some(key("", newest.saturating_sub(chooser.next(rng)), size)), None)
        }
        Workload::YcsbF if p < 0.5 => ("read", Some(existing(rng, chooser)), None),
        Workload::YcsbF => {
            let key = existing(rng, chooser);
            ("read-modify-write", Some(key.clone()), Some(key))
        }
        Workload::YcsbE if p < 0.95 => {
            let from = existing(rng, chooser);
            let request = RangeRequest {
                key: from,
                range_end: vec![0],
                limit: rng.range(1, 101) as i64,
                ..Default::default()
            };
            timed(timeout, client.range(request)).await?;
            count(shared, "scan");
            return Ok(());
        }
        // Inserts (D, E).
        _ => ("insert", None, Some(key("", shared.keys.fetch_add(1, Ordering::Relaxed), size))),
    };
    if let Some(key) = read {
        timed(timeout, client.range(get(key))).await?;
    }
    if let Some(key) = write {
        timed(timeout, client.put(put(key))).await?;
    }
    count(shared, kind);
    Ok(())
}

fn count(shared: &Shared, kind: &'static str) {
    *shared.kinds.lock().expect("kinds lock").entry(kind).or_default() += 1;
}

/// Reads a counter and writes it plus one if nobody wrote it in between; retries until it wins.
async fn increment(
    shared: &Shared,
    client: &mut KvClient<Channel>,
    counter: u64,
) -> Result<(), String> {
    let key = key("c", counter, shared.args.key_size);
    loop {
        let request = RangeRequest { key: key.clone(), ..Default::default() };
        let read = timed(shared.timeout, client.range(request)).await?.into_inner();
        let Some(kv) = read.kvs.first() else { return Err("counter missing".into()) };
        let current: u64 = std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or("counter is not a number")?;
        let txn = TxnRequest {
            compare: vec![Compare {
                key: key.clone(),
                target: CompareTarget::Mod as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::ModRevision(kv.mod_revision)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: (current + 1).to_string().into_bytes(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let response = timed(shared.timeout, client.txn(txn)).await?.into_inner();
        if response.succeeded {
            return Ok(());
        }
        shared.conflicts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters must sum to the increments acknowledged (more only if failed increments took
/// effect, which the check reports).
async fn check_counters(shared: &Shared, client: &KvClient<Channel>) -> anyhow::Result<String> {
    let mut client = client.clone();
    let request =
        RangeRequest { key: b"c".to_vec(), range_end: b"d".to_vec(), ..Default::default() };
    let response = client.range(request).await.context("reading the counters")?.into_inner();
    let sum: u64 = response
        .kvs
        .iter()
        .map(|kv| {
            std::str::from_utf8(&kv.value).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum();
    let recorder = shared.recorder.lock().expect("recorder lock");
    let acknowledged = recorder.latencies.len() as u64;
    // A failed increment (a timeout, a leader change) may still have taken effect.
    let unknown: u64 = recorder.errors.values().sum();
    Ok(if sum == acknowledged {
        "ok".to_string()
    } else if sum > acknowledged && sum <= acknowledged + unknown {
        format!("ok ({} failed increments took effect)", sum - acknowledged)
    } else {
        format!("FAILED: counters sum to {sum}, {acknowledged} increments were acknowledged")
    })
}

/// A request with a deadline; an error comes back as its kind, for counting.
async fn timed<T>(
    timeout: Duration,
    request: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, String> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(|status| error_kind(&status)),
        Err(_) => Err("timeout".to_string()),
    }
}

fn error_kind(status: &tonic::Status) -> String {
    let message: String = status.message().chars().take(60).collect();
    format!("{:?}: {message}", status.code())
}

async fn progress(shared: Arc<Shared>, started: Instant) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let completed = shared.completed.load(Ordering::Relaxed);
        let errors: u64 = shared.recorder.lock().expect("recorder lock").errors.values().sum();
        eprintln!(
            "{:>6.1} s  {completed:>9} ops  {:>8} ops/s  {errors} errors",
            started.elapsed().as_secs_f64(),
            completed - last
        );
        last = completed;
    }
}
