//! `etcdserverpb.Maintenance`: `Status`, `Hash`, `HashKV` and `MoveLeader`; the rest answers
//! "not implemented yet".

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_core::Error;
use strata_core::mvcc::{hash, read, view::View};
use strata_core::pb::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::{Api, not_yet, status};
use crate::pb::etcd::maintenance_server::Maintenance;

/// The etcd API version Strata speaks (what `etcdctl endpoint status` shows as the version).
pub const ETCD_API_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    pub api: Arc<Api>,
}

impl Api {
    pub fn status_response(&self) -> StatusResponse {
        let range = self.range();
        let revision = range.revision.load(Ordering::Acquire);
        let db_size = (self.db_size)() as i64;
        StatusResponse {
            header: self.header(revision),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: range.leader_id.load(Ordering::Acquire),
            raft_index: range.commit_index.load(Ordering::Acquire),
            raft_term: range.term.load(Ordering::Acquire),
            raft_applied_index: range.applied_index.load(Ordering::Acquire),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }
    }
}

impl Api {
    /// A hash of every key version up to a revision (0: the current one), with the compaction
    /// revision it was taken at: members at the same compaction revision must agree.
    pub fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, Error> {
        let view = View::new(self.engine.as_ref());
        let ((hash, revision), state) = self.read_stable(|state| {
            let revision = read::read_revision(&state, req.revision)?;
            Ok((hash::hash_kv(&view, revision)?, revision))
        })?;
        Ok(HashKvResponse {
            header: self.header(state.revision),
            hash,
            compact_revision: state.compact_revision,
            hash_revision: revision,
        })
    }

    pub fn hash(&self) -> Result<HashResponse, Error> {
        let revision = self.range().revision.load(Ordering::Acquire);
        let hash = hash::hash_all(&View::new(self.engine.as_ref()))?;
        Ok(HashResponse { header: self.header(revision), hash })
    }

    /// Hands leadership to `target` and waits until it leads (or the request times out).
    pub async fn move_leader(&self, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, Error> {
        self.shell.transfer_leader(req.target_id).await?;
        let deadline = tokio::time::Instant::now() + self.timeout();
        while self.range().leader_id.load(Ordering::Acquire) != req.target_id {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let revision = self.range().revision.load(Ordering::Acquire);
        Ok(MoveLeaderResponse { header: self.header(revision) })
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Err(not_yet("Maintenance.Alarm"))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.api.status_response()))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("Maintenance.Defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let api = &self.api;
        api.observe("Hash", async { api.hash() }).await.map(Response::new).map_err(status)
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let (api, req) = (&self.api, request.into_inner());
        api.observe("HashKV", async { api.hash_kv(req) }).await.map(Response::new).map_err(status)
    }

    type SnapshotStream = tokio_stream::Empty<Result<SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("Maintenance.Snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let work = self.api.move_leader(request.into_inner());
        self.api.observe("MoveLeader", work).await.map(Response::new).map_err(status)
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Maintenance.Downgrade"))
    }
}
