//! `etcdserverpb.Maintenance`: `Status` now; the rest answers "not implemented yet".

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_core::pb::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::{Api, not_yet};
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
        Err(not_yet("Maintenance.Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(not_yet("Maintenance.HashKV"))
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
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("Maintenance.MoveLeader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Maintenance.Downgrade"))
    }
}
