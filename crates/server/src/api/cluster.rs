//! `etcdserverpb.Cluster`: the members, and changing them.
//!
//! Members are replicated records (`strata_core::mvcc::members`), changed by Raft configuration
//! changes that carry the record, so Raft's configuration and the records can never disagree.
//! One change at a time, each a single simple change (add a voter or a learner, promote a
//! learner, remove a member), as etcd makes them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_core::Error;
use strata_core::command::{MemberChange, MemberChangeKind, MemberRecord, Request as Command};
use strata_core::mvcc::Response as Applied;
use strata_core::pb::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::lease::{forward_error, forwarded, mark_forwarded};
use super::{Api, observed};
use crate::pb::etcd::cluster_client::ClusterClient;
use crate::pb::etcd::cluster_server::Cluster;

pub struct ClusterService {
    pub api: Arc<Api>,
}

impl Api {
    /// The cluster's members: the replicated records, or the configured initial cluster for a
    /// store written before members were recorded (or not caught up yet).
    fn members(&self) -> Result<Vec<(u64, MemberRecord)>, Error> {
        let view = strata_core::mvcc::view::View::new(self.engine.as_ref());
        let recorded = strata_core::mvcc::members::all(&view)?;
        if !recorded.is_empty() {
            return Ok(recorded);
        }
        Ok(self.config.initial_member_records())
    }

    /// A member's first announced client URL.
    pub(crate) fn client_url_of(&self, id: u64) -> Option<String> {
        let announced = self.peer_client_urls.lock().expect("urls lock");
        announced.get(&id)?.client_urls.first().cloned()
    }

    fn member_pb(&self, id: u64, record: &MemberRecord) -> Member {
        let announced = self.peer_client_urls.lock().expect("urls lock").get(&id).cloned();
        let me = id == self.config.member_id();
        let name = match (&announced, me) {
            _ if !record.name.is_empty() => record.name.clone(),
            (_, true) => self.config.name.clone(),
            (Some(a), false) => a.name.clone(),
            (None, false) => String::new(),
        };
        let client_ur_ls = if me {
            self.config.advertise_client_urls.clone()
        } else {
            announced.map(|a| a.client_urls).unwrap_or_default()
        };
        Member {
            id,
            name,
            peer_ur_ls: record.peer_urls.clone(),
            client_ur_ls,
            is_learner: record.is_learner,
        }
    }

    fn members_pb(&self) -> Result<Vec<Member>, Error> {
        Ok(self.members()?.iter().map(|(id, record)| self.member_pb(*id, record)).collect())
    }

    fn revision_header(&self) -> Option<ResponseHeader> {
        self.header(self.range().revision.load(Ordering::Acquire))
    }

    pub fn member_list_response(&self) -> MemberListResponse {
        MemberListResponse {
            header: self.revision_header(),
            members: self.members_pb().unwrap_or_default(),
        }
    }

    /// Makes a membership change: `member` is the record to write (none for a removal).
    async fn change_members(
        &self,
        kind: MemberChangeKind,
        id: u64,
        member: Option<MemberRecord>,
    ) -> Result<(), Error> {
        let change = MemberChange { kind: kind as i32, id, member };
        match self.write(Command::MemberChange(change)).await? {
            Applied::MemberChanged => Ok(()),
            other => Err(Error::Internal(format!("unexpected response {other:?}"))),
        }
    }

    pub async fn member_add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, Error> {
        let mut peer_urls = req.peer_ur_ls.clone();
        if peer_urls.is_empty() || peer_urls.iter().any(|u| crate::config::parse_url(u).is_err()) {
            return Err(Error::MemberBadUrls);
        }
        peer_urls.sort();
        // etcd's order: the id (derived from the URLs), then the URLs.
        let members = self.members()?;
        let id = crate::config::member_id(&peer_urls, &self.config.cluster_token);
        if members.iter().any(|(existing, _)| *existing == id) {
            return Err(Error::MemberExists);
        }
        if members.iter().any(|(_, m)| m.peer_urls.iter().any(|u| peer_urls.contains(u))) {
            return Err(Error::PeerUrlExists);
        }
        let record = MemberRecord { name: String::new(), peer_urls, is_learner: req.is_learner };
        let kind =
            if req.is_learner { MemberChangeKind::AddLearner } else { MemberChangeKind::AddVoter };
        self.change_members(kind, id, Some(record.clone())).await?;
        Ok(MemberAddResponse {
            header: self.revision_header(),
            member: Some(self.member_pb(id, &record)),
            members: self.members_pb()?,
        })
    }

    /// Promotes a learner that has caught up: only the leader can tell, so a member that does
    /// not lead asks the leader to do it.
    pub async fn member_promote(
        &self,
        req: MemberPromoteRequest,
        forwarded: bool,
    ) -> Result<MemberPromoteResponse, Error> {
        let members = self.members()?;
        let (_, record) =
            members.iter().find(|(id, _)| *id == req.id).ok_or(Error::MemberNotFound)?;
        if !record.is_learner {
            return Err(Error::MemberNotLearner);
        }
        let (me, leader) =
            (self.config.member_id(), self.range().leader_id.load(Ordering::Acquire));
        if leader != me {
            if forwarded || leader == 0 {
                return Err(if leader == 0 { Error::NoLeader } else { Error::NotLeader });
            }
            let url = self.client_url_of(leader).ok_or(Error::NoLeader)?;
            let mut client = ClusterClient::new(self.forwarder.channel(&url)?);
            client.member_promote(mark_forwarded(req)).await.map_err(forward_error)?;
            return Ok(MemberPromoteResponse {
                header: self.revision_header(),
                members: self.members_pb()?,
            });
        }
        if !self.shell.learner_ready(req.id).await? {
            return Err(Error::LearnerNotReady);
        }
        let promoted = MemberRecord { is_learner: false, ..record.clone() };
        self.change_members(MemberChangeKind::Promote, req.id, Some(promoted)).await?;
        Ok(MemberPromoteResponse { header: self.revision_header(), members: self.members_pb()? })
    }

    /// New peer URLs for a member (it must then listen on them; the others dial them from the
    /// change on).
    pub async fn member_update(
        &self,
        req: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, Error> {
        let mut peer_urls = req.peer_ur_ls.clone();
        if peer_urls.is_empty() || peer_urls.iter().any(|u| crate::config::parse_url(u).is_err()) {
            return Err(Error::MemberBadUrls);
        }
        peer_urls.sort();
        let members = self.members()?;
        let (_, record) =
            members.iter().find(|(id, _)| *id == req.id).ok_or(Error::MemberNotFound)?;
        let taken = members
            .iter()
            .any(|(id, m)| *id != req.id && m.peer_urls.iter().any(|u| peer_urls.contains(u)));
        if taken {
            return Err(Error::PeerUrlExists);
        }
        let updated = MemberRecord { peer_urls, ..record.clone() };
        self.change_members(MemberChangeKind::Update, req.id, Some(updated)).await?;
        Ok(MemberUpdateResponse { header: self.revision_header(), members: self.members_pb()? })
    }

    /// Removes a member. The leader is asked to do it when the leader itself is to go: it hands
    /// leadership to another voter first, so the cluster never runs led from outside its
    /// configuration.
    pub async fn member_remove(
        &self,
        req: MemberRemoveRequest,
        forwarded: bool,
    ) -> Result<MemberRemoveResponse, Error> {
        let members = self.members()?;
        if !members.iter().any(|(id, _)| *id == req.id) {
            return Err(Error::MemberNotFound);
        }
        let (me, leader) =
            (self.config.member_id(), self.range().leader_id.load(Ordering::Acquire));
        if req.id == leader && leader != me {
            if forwarded {
                return Err(Error::NotLeader);
            }
            let url = self.client_url_of(leader).ok_or(Error::NoLeader)?;
            let mut client = ClusterClient::new(self.forwarder.channel(&url)?);
            client.member_remove(mark_forwarded(req)).await.map_err(forward_error)?;
            return Ok(MemberRemoveResponse {
                header: self.revision_header(),
                members: self.members_pb()?,
            });
        }
        if req.id == me && leader == me {
            let successor = members
                .iter()
                .find(|(id, m)| *id != me && !m.is_learner)
                .ok_or_else(|| Error::Internal("cannot remove the only voter".into()))?;
            self.move_leader(MoveLeaderRequest { target_id: successor.0 }).await?;
        }
        self.change_members(MemberChangeKind::Remove, req.id, None).await?;
        Ok(MemberRemoveResponse { header: self.revision_header(), members: self.members_pb()? })
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let work = self.api.member_add(request.into_inner());
        observed(&self.api, "MemberAdd", work).await
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let forwarded = forwarded(&request);
        let work = self.api.member_remove(request.into_inner(), forwarded);
        observed(&self.api, "MemberRemove", work).await
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let work = self.api.member_update(request.into_inner());
        observed(&self.api, "MemberUpdate", work).await
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(self.api.member_list_response()))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let forwarded = forwarded(&request);
        let work = self.api.member_promote(request.into_inner(), forwarded);
        observed(&self.api, "MemberPromote", work).await
    }
}
