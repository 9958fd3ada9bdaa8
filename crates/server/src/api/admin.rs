//! `stratapb.Admin`: Strata's own administration API (see `proto/strata/admin.proto`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tonic::{Request, Response, Status};

use super::Api;
use crate::pb::strata::admin_server::Admin;
use crate::pb::strata::{RangeStatus, RangesRequest, RangesResponse, ReplicaStatus};

pub struct AdminService {
    pub api: Arc<Api>,
}

impl Api {
    /// Every range this node holds a replica of, as that replica applied it.
    pub fn range_statuses(&self) -> Vec<RangeStatus> {
        let ranges = self.shell.shared_ranges().all();
        ranges
            .into_iter()
            .map(|(range_id, shared)| {
                let descriptor = shared.descriptor.read().expect("descriptor lock").clone();
                let epoch = descriptor.epoch();
                let replicas = (descriptor.replicas.iter())
                    .map(|r| ReplicaStatus {
                        replica_id: r.replica_id,
                        node_id: r.node_id,
                        learner: r.learner,
                    })
                    .collect();
                RangeStatus {
                    range_id,
                    start_key: descriptor.start_key,
                    end_key: descriptor.end_key,
                    epoch_version: epoch.version,
                    epoch_conf_ver: epoch.conf_ver,
                    replicas,
                    leader_id: shared.leader_id.load(Ordering::Acquire),
                    term: shared.term.load(Ordering::Acquire),
                    commit_index: shared.commit_index.load(Ordering::Acquire),
                    applied_index: shared.applied_index.load(Ordering::Acquire),
                    revision: shared.revision.load(Ordering::Acquire),
                    keys: shared.memo.read().expect("memo lock").len() as u64,
                    closed_revision: shared.closed_revision(),
                    locks: shared.lock_count.load(Ordering::Acquire),
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn ranges(
        &self,
        _request: Request<RangesRequest>,
    ) -> Result<Response<RangesResponse>, Status> {
        let member_id = self.api.config.member_id();
        Ok(Response::new(RangesResponse { member_id, ranges: self.api.range_statuses() }))
    }
}
