//! `stratapb.Admin`: Strata's own administration API (see `proto/strata/admin.proto`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_core::command::{RangeIdAllocate, Request as Proposal, SplitRequest as Split};
use strata_core::mvcc::Response as Applied;
use strata_core::raftstore::RangeShared;
use strata_core::range::{META_RANGE_ID, RangeDescriptor};
use strata_core::{Error, RangeId};
use tonic::{Request, Response, Status};

use super::{Api, status};
use crate::pb::strata::admin_server::Admin;
use crate::pb::strata::{
    RangeStatus, RangesRequest, RangesResponse, ReplicaStatus, SplitRequest, SplitResponse,
};

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
                range_status(range_id, descriptor, Some(&shared))
            })
            .collect()
    }

    /// Splits the range holding `key` at it (see `raftstore::split`): answers with the range
    /// that was split, as it is now, and the new one.
    pub async fn split(&self, key: Vec<u8>) -> Result<(RangeDescriptor, RangeDescriptor), Error> {
        if key.is_empty() {
            return Err(Error::SplitRefused("the key is empty".into()));
        }
        let allocate = Proposal::RangeIdAllocate(RangeIdAllocate {});
        let new_range_id = match self.shell.propose(META_RANGE_ID, allocate, self.timeout()).await?
        {
            Applied::RangeIdAllocated(id) => id,
            other => return Err(Error::Internal(format!("allocating a range id: {other:?}"))),
        };
        self.retrying_locked(|| async {
            let ranges = self.shell.shared_ranges();
            let Some((range_id, shared)) = ranges.holding(&key, &[])?.pop() else {
                return Err(Error::RangeUnavailable);
            };
            let descriptor = shared.descriptor.read().expect("descriptor lock").clone();
            if descriptor.start_key == key {
                return Err(Error::SplitRefused(format!("range {range_id} starts at the key")));
            }
            let split = Proposal::Split(Split { split_key: key.clone(), new_range_id });
            match self.shell.propose(range_id, split, self.timeout()).await? {
                Applied::Split { left, right } => Ok((left, right)),
                other => Err(Error::Internal(format!("a split answered {other:?}"))),
            }
        })
        .await
    }
}

fn range_status(
    range_id: RangeId,
    descriptor: RangeDescriptor,
    shared: Option<&RangeShared>,
) -> RangeStatus {
    let epoch = descriptor.epoch();
    let replicas = (descriptor.replicas.iter())
        .map(|r| ReplicaStatus { replica_id: r.replica_id, node_id: r.node_id, learner: r.learner })
        .collect();
    let mut status = RangeStatus {
        range_id,
        start_key: descriptor.start_key,
        end_key: descriptor.end_key,
        epoch_version: epoch.version,
        epoch_conf_ver: epoch.conf_ver,
        replicas,
        ..Default::default()
    };
    if let Some(shared) = shared {
        status.leader_id = shared.leader_id.load(Ordering::Acquire);
        status.term = shared.term.load(Ordering::Acquire);
        status.commit_index = shared.commit_index.load(Ordering::Acquire);
        status.applied_index = shared.applied_index.load(Ordering::Acquire);
        status.revision = shared.revision.load(Ordering::Acquire);
        status.keys = shared.memo.read().expect("memo lock").len() as u64;
        status.closed_revision = shared.closed_revision();
        status.locks = shared.lock_count.load(Ordering::Acquire);
    }
    status
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

    async fn split(
        &self,
        request: Request<SplitRequest>,
    ) -> Result<Response<SplitResponse>, Status> {
        let (left, right) = self.api.split(request.into_inner().key).await.map_err(status)?;
        let (left_id, right_id) = (left.range_id, right.range_id);
        Ok(Response::new(SplitResponse {
            left: Some(range_status(left_id, left, None)),
            right: Some(range_status(right_id, right, None)),
        }))
    }
}
