//! Starting a node: open the store, start the raftstore shell and the transport, and serve the
//! client and peer ports until asked to stop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use strata_core::raftstore::{Config as RaftConfig, Node};
use strata_storage::{Engine, FjallEngine};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;

use crate::api::admin::AdminService;
use crate::api::cluster::ClusterService;
use crate::api::health::HealthService;
use crate::api::http::Metrics;
use crate::api::kv::KvService;
use crate::api::lease::{LeaseIds, LeaseService};
use crate::api::lock::{ElectionService, LockService};
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::{self, WatchService, Watches};
use crate::api::{Api, http};
use crate::authority::SchemeStrip;
use crate::coalesce::Coalesced;
use crate::config::NodeConfig;
use crate::pb::election::election_server::ElectionServer;
use crate::pb::etcd::cluster_server::ClusterServer;
use crate::pb::etcd::kv_server::KvServer;
use crate::pb::etcd::lease_server::LeaseServer;
use crate::pb::etcd::maintenance_server::MaintenanceServer;
use crate::pb::etcd::watch_server::WatchServer;
use crate::pb::health::health_server::HealthServer;
use crate::pb::lock::lock_server::LockServer;
use crate::pb::strata::admin_server::AdminServer;
use crate::pb::strata::raft_transport_server::RaftTransportServer;
use crate::shell::{self, Outbox as _};
use crate::timed_engine::{TimedEngine, Timings};
use crate::transport::{
    Admission, Announced, Connector, PEER_MESSAGE_BYTES_MAX, PeerStats, Transport, TransportService,
};

/// gRPC messages from clients may exceed the request limit by this much, so that a request just
/// over the limit is answered with etcd's "request is too large" rather than a transport error
/// (etcd allows the same overhead).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Runs a node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let (opened, last_path) = crate::open_trail::during_open(|| {
        FjallEngine::open_with_log_dir(&config.data_dir, config.wal_dir.as_deref())
    });
    let fjall = match opened {
        Ok(engine) => Arc::new(engine),
        Err(e @ strata_storage::Error::Engine { .. }) => match last_path {
            Some(path) => anyhow::bail!("{e}; {}; refusing to start", where_damaged(&path)),
            None => anyhow::bail!("{e}; refusing to start"),
        },
        Err(e) => return Err(e.into()),
    };
    let raft_log_cut = fjall.raft_log_cut().map(|(path, at)| {
        format!("the Raft log {} ended in a torn write, cut at byte {at}", path.display())
    });
    if let Some(cut) = &raft_log_cut {
        tracing::warn!("{cut} (the last write before a crash, or damage to the file)");
    }
    let mut config = config;
    config.recorded_member_id = Some(recorded_member_id(fjall.as_ref(), &config)?);
    let timings = Arc::new(Timings::default());
    let engine: Arc<dyn Engine> =
        Arc::new(TimedEngine { inner: fjall.clone(), timings: timings.clone() });
    let epoch =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let member = assemble(
        &config,
        engine,
        Parts { epoch, timings, store: fjall, connector: Connector::Tcp, runner: Runner::Thread },
    )
    .map_err(|e| match raft_log_cut {
        // Entries the member acknowledged went with the cut: the file was damaged.
        Some(cut) => e.context(format!("{cut}; refusing to start")),
        None => e,
    })?;
    let member_id = config.member_id();

    let client_listeners = bind_each(&config.listen_clients, "clients").await?;
    let peer_listener = TcpListener::bind(config.listen_peer)
        .await
        .with_context(|| format!("cannot listen for peers on {}", config.listen_peer))?;
    let metrics_listeners = bind_each(&config.listen_metrics, "metrics").await?;
    if let Some(mode) = config.auto_compaction {
        tokio::spawn(crate::auto_compaction::run(member.api.clone(), mode));
    }
    let client_app = member.client_router();
    let peer_server =
        tonic::transport::Server::builder().add_service(member.peer_service).serve_with_incoming(
            tokio_stream::wrappers::TcpListenerStream::new(peer_listener).map(|accepted| {
                let stream = accepted?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(stream)
            }),
        );

    tracing::info!(
        name = %config.name,
        member_id = format!("{member_id:x}"),
        cluster_id = format!("{:x}", config.cluster_id()),
        client = ?config.listen_clients,
        metrics = ?config.listen_metrics,
        peer = %config.listen_peer,
        data_dir = %config.data_dir.display(),
        "strata member started"
    );
    // One server per client address, all with the same routes.
    let mut client_servers = tokio::task::JoinSet::new();
    for listener in client_listeners {
        let app = client_app.clone();
        client_servers.spawn(async move { axum::serve(client_connections(listener), app).await });
    }
    // The metrics ports: plain HTTP/1.1, as Prometheus and probes speak it.
    for listener in metrics_listeners {
        let app = http::metrics_router(member.api.clone());
        client_servers.spawn(async move { axum::serve(listener, app).await });
    }
    tokio::select! {
        Some(result) = client_servers.join_next() => {
            result.context("client server stopped")?.context("client server failed")?
        }
        result = peer_server => result.context("peer server failed")?,
        () = shutdown => {
            tracing::info!("shutting down");
            hand_over(&member.api).await;
        }
    }
    // Dropping the last shell handles stops the raftstore thread; every acknowledged write is
    // already durable, so nothing needs flushing.
    Ok(())
}

/// Listens on each address, for `what` (to name in an error).
async fn bind_each(addresses: &[SocketAddr], what: &str) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for {what} on {address}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Before stopping, hands the leadership of every range this member leads to another voter and
/// waits (a few election timeouts at most) until each has a new leader: clients then wait for
/// a transfer, not for an election timeout, as with etcd's graceful stop.
async fn hand_over(api: &Api) {
    let me = api.config.member_id();
    let handed = match api.shell.hand_over().await {
        Ok(handed) => handed,
        Err(e) => return tracing::warn!(error = %e, "cannot hand over leadership"),
    };
    for (range_id, target) in &handed {
        tracing::info!(range_id, target = format!("{target:x}"), "handing over leadership");
    }
    let deadline = tokio::time::Instant::now()
        + api.config.tick_interval * api.config.election_ticks as u32 * 3;
    for (range_id, target) in handed {
        let Some(shared) = api.shell.shared(range_id) else { continue };
        let moved = || shared.leader_id.load(std::sync::atomic::Ordering::Acquire) != me;
        match api.wait_for(deadline, moved).await {
            Ok(()) => {
                tracing::info!(range_id, leader = format!("{target:x}"), "leadership handed over")
            }
            Err(_) => {
                tracing::warn!(range_id, "leadership not handed over in time; stopping anyway")
            }
        }
    }
}

/// The client port's connections, as every member (and the floor server of `bench/compare`)
/// serves them.
pub fn client_connections(
    listener: TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    WrapIo(listener, |stream: tokio::net::TcpStream| {
        // Small answers must leave at once: with Nagle's algorithm on, a reply waits for the
        // client's delayed acknowledgement (40 ms on Linux) whenever an earlier segment is
        // unacked.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
        SchemeStrip::new(Coalesced::new(stream))
    })
}

/// A listener whose connections are wrapped by its function as they are accepted.
struct WrapIo<L, F>(L, F);

impl<L, F, T> axum::serve::Listener for WrapIo<L, F>
where
    L: axum::serve::Listener,
    F: Fn(L::Io) -> T + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = T;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        ((self.1)(io), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Where the damage behind a failed store open is. fjall's errors carry no path, so the open
/// trail gives the last file or folder it opened. That is where the damage is, unless it is a
/// table: fjall reads a keyspace's data blocks only after opening all its tables, so when the
/// trail ends among tables (or at a keyspace), they are checked one by one here.
fn where_damaged(last_path: &str) -> String {
    let path = std::path::Path::new(last_path);
    let folder = path.parent().unwrap_or(path);
    let tables =
        if folder.ends_with("tables") { folder.to_path_buf() } else { path.join("tables") };
    let damaged = strata_storage::damaged_tables(&tables);
    if !damaged.is_empty() {
        let names: Vec<String> = damaged.iter().map(|p| p.display().to_string()).collect();
        return format!("the damaged file is {}", names.join(", "));
    }
    if path.is_file() {
        format!("the damaged file is {last_path} (the file it was reading)")
    } else {
        format!("the damage is under {last_path} (the folder it was reading)")
    }
}

/// What a member asks of its store besides the `Engine` trait: sizes, for `Status` and the
/// quota, and space reclamation, for `Defragment`.
pub trait StoreAdmin: Send + Sync {
    /// Bytes on disk, including space allocated ahead of use.
    fn disk_bytes(&self) -> u64;
    /// Bytes of data held: what the storage quota limits.
    fn data_bytes(&self) -> u64;
    /// Reclaims the space of deleted and compacted data while reads and writes go on.
    fn defragment(&self) -> Result<(), strata_storage::Error>;
}

impl StoreAdmin for FjallEngine {
    fn disk_bytes(&self) -> u64 {
        self.disk_space_bytes()
    }

    fn data_bytes(&self) -> u64 {
        FjallEngine::data_bytes(self)
    }

    fn defragment(&self) -> Result<(), strata_storage::Error> {
        FjallEngine::defragment(self)
    }
}

/// A store with nothing to report or reclaim (tests on an in-memory engine).
pub struct NoStoreAdmin;

impl StoreAdmin for NoStoreAdmin {
    fn disk_bytes(&self) -> u64 {
        0
    }

    fn data_bytes(&self) -> u64 {
        0
    }

    fn defragment(&self) -> Result<(), strata_storage::Error> {
        Ok(())
    }
}

/// The member id this data directory belongs to: recorded when the member first starts, so
/// it stays the same when the member's peer URLs change (`member update`).
fn recorded_member_id(engine: &dyn Engine, config: &NodeConfig) -> anyhow::Result<u64> {
    use strata_storage::{Durability, Keyspace, WriteBatch};
    let key = b"node/member-id";
    if let Some(bytes) = engine.get(Keyspace::Meta, key)? {
        let bytes: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("malformed member id record"))?;
        return Ok(u64::from_be_bytes(bytes));
    }
    let id = config.member_id();
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Meta, key.to_vec(), id.to_be_bytes().to_vec());
    engine.write(&batch, Durability::Sync)?;
    Ok(id)
}

/// How the raftstore runs: on a thread of its own (production), or as a task on the runtime's
/// clock, for tests that run members on a simulated network (see `shell::spawn_task`).
pub enum Runner {
    Thread,
    Task,
}

/// What a member is made of besides its configuration and storage.
pub struct Parts {
    /// Distinguishes this start from earlier ones (see `strata_core::command::Command`).
    pub epoch: u64,
    pub timings: Arc<Timings>,
    pub store: Arc<dyn StoreAdmin>,
    pub connector: Connector,
    pub runner: Runner,
}

/// A member before it listens anywhere: its services and its handle to the raftstore.
pub struct Member {
    pub api: Arc<Api>,
    pub peer_service: RaftTransportServer<TransportService>,
}

impl Member {
    /// The client port's routes: gRPC services by path prefix; everything else (HTTP routes,
    /// and gRPC calls to services not served yet) goes to the HTTP router.
    pub fn client_router(&self) -> axum::Router {
        let api = &self.api;
        http::router(api.clone())
            .route_service("/etcdserverpb.KV/{*method}", self.kv_service())
            .route_service(
                "/etcdserverpb.Maintenance/{*method}",
                MaintenanceServer::new(MaintenanceService { api: api.clone() }),
            )
            .route_service(
                "/v3lockpb.Lock/{*method}",
                LockServer::new(LockService { api: api.clone() }),
            )
            .route_service(
                "/v3electionpb.Election/{*method}",
                ElectionServer::new(ElectionService { api: api.clone() }),
            )
            .route_service(
                "/etcdserverpb.Lease/{*method}",
                LeaseServer::new(LeaseService { api: api.clone() }),
            )
            .route_service(
                "/etcdserverpb.Watch/{*method}",
                WatchServer::new(WatchService { api: api.clone() }),
            )
            .route_service(
                "/etcdserverpb.Cluster/{*method}",
                ClusterServer::new(ClusterService { api: api.clone() }),
            )
            .route_service(
                "/stratapb.Admin/{*method}",
                AdminServer::new(AdminService { api: api.clone() }),
            )
            .route_service("/grpc.health.v1.Health/{*method}", HealthServer::new(HealthService))
    }

    pub fn kv_service(&self) -> KvServer<KvService> {
        let request_bytes_max = self.api.limits.request_bytes_max + GRPC_OVERHEAD_BYTES;
        KvServer::new(KvService { api: self.api.clone() })
            .max_decoding_message_size(request_bytes_max)
    }
}

/// Opens the node on `engine` and starts its raftstore and transport (on the current tokio
/// runtime).
pub fn assemble(
    config: &NodeConfig,
    engine: Arc<dyn Engine>,
    parts: Parts,
) -> anyhow::Result<Member> {
    let member_id = config.member_id();
    let voters: Vec<u64> = config.members.iter().map(|m| m.id).collect();
    let mut raft_config = RaftConfig::new(member_id, parts.epoch, voters);
    raft_config.election_ticks = config.election_ticks;
    raft_config.join = config.join;
    raft_config.cluster_id = config.cluster_id();
    raft_config.initial_members = config.initial_member_records();
    raft_config.tick_ms = config.tick_interval.as_millis().max(1) as u64;
    raft_config.raft_logger = Some(crate::raft_log::logger());
    raft_config.log_entries_max = config.log_entries_max;
    raft_config.compaction_step_records = config.compaction_step_records;
    raft_config.initial_split_keys = config.initial_split_keys.clone();
    // Keep a fifth of the log after compaction so briefly lagging followers use the log.
    raft_config.log_entries_keep = config.log_entries_max / 5;
    let node = Node::open(raft_config, engine.clone()).with_context(|| {
        format!("cannot open the node's state in {}", config.data_dir.display())
    })?;

    // The members the cluster records, once it records them (they may have changed since the
    // initial cluster); the configured initial cluster before that.
    let recorded = node.members().with_context(|| "cannot read the cluster's members")?;
    let peers: Vec<(u64, String)> = if recorded.is_empty() {
        config.members.iter().map(|m| (m.id, m.peer_urls[0].clone())).collect()
    } else {
        recorded
            .into_iter()
            .filter_map(|(id, m)| Some((id, m.peer_urls.first()?.clone())))
            .collect()
    };
    let peers: Vec<(u64, String)> = peers.into_iter().filter(|(id, _)| *id != member_id).collect();
    let reports = Arc::new(Mutex::new(None));
    let peer_stats = Arc::new(PeerStats::default());
    let admission = Arc::new(Admission::default());
    let mut transport = Transport::new(
        &tokio::runtime::Handle::current(),
        member_id,
        Announced { name: config.name.clone(), client_urls: config.advertise_client_urls.clone() },
        reports.clone(),
        peer_stats.clone(),
        admission.clone(),
        parts.connector,
    );
    let cluster_id = node.cluster_id().with_context(|| "cannot read the cluster's id")?;
    transport.set_peers(&peers, cluster_id);
    let node_stats = node.stats();
    let handle = match parts.runner {
        Runner::Thread => {
            shell::spawn(node, transport, config.tick_interval, parts.timings.clone())?.0
        }
        Runner::Task => {
            shell::spawn_task(node, transport, config.tick_interval, parts.timings.clone())
        }
    };
    // The transport reports undeliverable messages to the shell from now on.
    *reports.lock().expect("reports lock") = Some(handle.clone());

    let peer_client_urls = Arc::new(Mutex::new(Default::default()));
    let api = Arc::new(Api {
        config: config.clone(),
        shell: handle.clone(),
        engine,
        limits: config.limits.clone(),
        peer_client_urls: peer_client_urls.clone(),
        metrics: Arc::new(Metrics::new(node_stats, parts.timings, peer_stats.clone())),
        store: parts.store,
        watches: Watches::new(config.watch_progress_interval),
        lease_ids: LeaseIds::new(member_id),
        forwarder: Default::default(),
        db_size_cache: Default::default(),
        snapshot_busy: Default::default(),
        cluster_id_cache: Default::default(),
        txns: crate::api::across::Txns::new(member_id, parts.epoch),
    });
    tokio::spawn(watch::feed(api.clone(), handle.applied()));
    tokio::spawn(api.clone().resolve_abandoned_locks());
    let peer_service = RaftTransportServer::new(TransportService {
        node_id: member_id,
        shell: handle,
        peer_client_urls,
        stats: peer_stats,
        admission,
    })
    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
    Ok(Member { api, peer_service })
}
