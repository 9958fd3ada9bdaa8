//! `etcdserverpb.Cluster`: `MemberList` now; membership changes come with their own issue.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_core::pb::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::{Api, not_yet};
use crate::pb::etcd::cluster_server::Cluster;

pub struct ClusterService {
    pub api: Arc<Api>,
}

impl Api {
    pub fn member_list_response(&self) -> MemberListResponse {
        let known_urls = self.peer_client_urls.lock().expect("urls lock").clone();
        let me = self.config.member_id();
        let members = self
            .config
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: if m.id == me {
                    self.config.advertise_client_urls.clone()
                } else {
                    known_urls.get(&m.id).cloned().unwrap_or_default()
                },
                is_learner: false,
            })
            .collect();
        MemberListResponse {
            header: self.header(self.range().revision.load(Ordering::Acquire)),
            members,
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet("Cluster.MemberUpdate"))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(self.api.member_list_response()))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet("Cluster.MemberPromote"))
    }
}
