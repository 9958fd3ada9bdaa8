//! etcd's v3 API on the client port: gRPC services, and plain HTTP routes on the same port.
//!
//! Handlers validate a request the way etcd does, then either propose it through Raft (writes)
//! or read the local state machine (reads; after a ReadIndex round unless `serializable`).
//! Errors from the core are mapped to gRPC statuses here, and only here.

pub mod across;
pub mod admin;
pub mod cluster;
pub mod gateway;
pub mod health;
pub mod http;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use strata_core::error::Code;
use strata_core::mvcc::Limits;
use strata_core::pb::etcdserverpb::ResponseHeader;
use strata_core::raftstore::RangeShared;
use strata_core::{Error, FIRST_RANGE_ID};
use strata_storage::Engine;

use crate::config::NodeConfig;
use crate::shell::ShellHandle;
use crate::transport::PeerClientUrls;

/// What every handler needs.
pub struct Api {
    pub config: NodeConfig,
    pub shell: ShellHandle,
    pub engine: Arc<dyn Engine>,
    pub limits: Limits,
    pub peer_client_urls: PeerClientUrls,
    pub metrics: Arc<crate::api::http::Metrics>,
    /// Sizes and space reclamation of the store (not through `engine`, which every engine has).
    pub store: Arc<dyn crate::server::StoreAdmin>,
    pub watches: watch::Watches,
    pub lease_ids: lease::LeaseIds,
    /// Connections to the leader, for lease questions only it can answer.
    pub forwarder: lease::Forwarder,
    /// The store's size when last measured, for the quota check.
    pub db_size_cache: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
    /// A backup is being streamed (one at a time).
    pub snapshot_busy: std::sync::atomic::AtomicBool,
    /// The recorded cluster id, once read (see `cluster_id`).
    pub cluster_id_cache: std::sync::atomic::AtomicU64,
    /// Transactions across ranges this member coordinates or resolves.
    pub txns: across::Txns,
}

impl Api {
    /// The replica serving user keys: the meta range's, until requests are routed by key.
    pub fn range(&self) -> Arc<RangeShared> {
        self.shell.shared(FIRST_RANGE_ID).expect("the first range exists")
    }

    pub fn timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Waits until `done` holds, checking every 10 ms, for at most `until` (then: timed out).
    pub async fn wait_for(
        &self,
        until: tokio::time::Instant,
        done: impl Fn() -> bool,
    ) -> Result<(), Error> {
        while !done() {
            if tokio::time::Instant::now() >= until {
                return Err(Error::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Runs a request, recording its latency and outcome under `method` (for gRPC and the
    /// JSON gateway alike).
    pub async fn observe<T>(
        &self,
        method: &'static str,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = std::time::Instant::now();
        let result = work.await;
        self.metrics.observe_request(method, started.elapsed(), result.is_ok());
        result
    }

    /// The cluster's id as the cluster recorded it when bootstrapped (a member that joined
    /// later learns it with the cluster's state); the id computed from the flags until then.
    pub fn cluster_id(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let cached = self.cluster_id_cache.load(Relaxed);
        if cached != 0 {
            return cached;
        }
        let key = strata_core::keys::cluster_id();
        match self.engine.get(strata_storage::Keyspace::Mvcc, &key) {
            Ok(Some(bytes)) if bytes.len() == 8 => {
                let id = u64::from_be_bytes(bytes.as_slice().try_into().expect("8 bytes"));
                self.cluster_id_cache.store(id, Relaxed);
                id
            }
            _ => self.config.cluster_id(),
        }
    }

    /// A response header: cluster and member ids, the given revision, the current term.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.config.member_id(),
            revision,
            raft_term: self.range().term.load(std::sync::atomic::Ordering::Acquire),
        })
    }
}

/// Runs a gRPC request through [`Api::observe`] and maps its error: how every unary handler
/// answers.
pub(crate) async fn observed<T>(
    api: &Api,
    method: &'static str,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    api.observe(method, work).await.map(tonic::Response::new).map_err(status)
}

/// Maps a core error to the gRPC status etcd would answer with.
pub fn status(error: Error) -> tonic::Status {
    let code = match error.code() {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::NotFound => tonic::Code::NotFound,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::OutOfRange => tonic::Code::OutOfRange,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::Internal => tonic::Code::Internal,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Unknown => tonic::Code::Unknown,
    };
    tonic::Status::new(code, error.to_string())
}

/// The answer of an etcd RPC Strata does not serve yet.
pub fn not_yet(method: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "{method} is not implemented by Strata yet (it is on the roadmap: watches, leases, locks, election, membership and maintenance)"
    ))
}
