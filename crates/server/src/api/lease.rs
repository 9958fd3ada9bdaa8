//! `etcdserverpb.Lease`: grant, revoke, keep-alive, time-to-live, list.
//!
//! Grants and revocations are writes, proposed through Raft like puts. Keep-alives and
//! time-to-live questions are about the lease clock, which only the leader keeps
//! (`strata_core::raftstore::lessor`): a member that is not the leader forwards them to the
//! leader's client port, as etcd's followers do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_core::command::Request;
use strata_core::coordinator::{Participant, Registration};
use strata_core::mvcc::view::View;
use strata_core::mvcc::{Response, lease};
use strata_core::pb::etcdserverpb::*;
use strata_core::{Error, FIRST_RANGE_ID, RangeId};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use super::{Api, observed, status};
use crate::pb::etcd::lease_client::LeaseClient;
use crate::pb::etcd::lease_server::Lease;

/// The longest TTL a lease may have (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;
/// How long a forwarded keep-alive or time-to-live may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// Marks a request one member forwarded to the member it took for the leader. That member
/// answers it or says "not leader", never forwards it again: two members that disagree on who
/// leads cannot bounce a request between them.
const FORWARDED: &str = "strata-forwarded";

/// Whether a request was forwarded by another member.
pub(crate) fn forwarded<T>(request: &GrpcRequest<T>) -> bool {
    request.metadata().contains_key(FORWARDED)
}

pub(crate) fn mark_forwarded<T>(message: T) -> GrpcRequest<T> {
    let mut request = GrpcRequest::new(message);
    request.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// Lease ids this member hands out: its id's low 16 bits, then a counter started from the clock
/// (as etcd's generator), so ids differ across members and restarts.
pub struct LeaseIds {
    prefix: u64,
    counter: AtomicU64,
}

impl LeaseIds {
    pub fn new(member_id: u64) -> Self {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Self { prefix: (member_id & 0xffff) << 47, counter: AtomicU64::new((millis as u64) << 8) }
    }

    fn next(&self) -> i64 {
        loop {
            let suffix = self.counter.fetch_add(1, Ordering::Relaxed) & ((1 << 47) - 1);
            let id = ((self.prefix | suffix) & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

/// Channels to other members' client ports, for forwarding to the leader.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    /// A channel to a member's client port (one per URL, reused).
    pub fn channel(&self, url: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().expect("forwarder lock");
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::Internal(format!("leader's client URL {url}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(FORWARD_TIMEOUT);
        let channel = endpoint.connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Where a lease-clock question goes.
enum Leader {
    Me,
    Elsewhere(LeaseClient<Channel>),
}

impl Api {
    /// The smallest TTL granted: a lease must outlive a leader election (etcd's rule:
    /// 1.5 election timeouts, in whole seconds).
    pub fn lease_ttl_min(&self) -> i64 {
        let election = self.config.tick_interval * self.config.election_ticks as u32;
        (election.as_secs_f64() * 1.5).ceil().max(1.0) as i64
    }

    pub async fn lease_grant(&self, req: LeaseGrantRequest) -> Result<LeaseGrantResponse, Error> {
        if req.ttl > LEASE_TTL_MAX {
            return Err(Error::LeaseTtlTooLarge);
        }
        let id = if req.id == 0 { self.lease_ids.next() } else { req.id };
        let ttl = req.ttl.max(self.lease_ttl_min());
        match self.write(Request::LeaseGrant(LeaseGrantRequest { ttl, id })).await? {
            Response::LeaseGrant(mut r) => {
                r.header = self.header(r.header.map_or(0, |h| h.revision));
                Ok(r)
            }
            other => Err(Error::Internal(format!("unexpected response {other:?}"))),
        }
    }

    pub async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, Error> {
        let revoked = match self.write(Request::LeaseRevoke(req)).await {
            Err(Error::LeaseInRanges(lease)) => self.revoke_across(lease, 0).await,
            other => other,
        };
        match revoked? {
            Response::LeaseRevoke(mut r) => {
                r.header = self.header(r.header.map_or(0, |h| h.revision));
                Ok(r)
            }
            other => Err(Error::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Proposes a write to a range. One refused because a lease it gives keys was not
    /// registered for the range yet (`Error::LeaseUnregistered`) is proposed again once it is
    /// (`coordinator::Registration`). A lease revoked in between is registered again, a few
    /// times at most.
    pub(super) async fn propose_leased(
        &self,
        range_id: RangeId,
        request: Request,
    ) -> Result<Response, Error> {
        let timeout = self.timeout();
        let mut registrations = 0;
        loop {
            match self.shell.propose(range_id, request.clone(), timeout).await {
                Err(Error::LeaseUnregistered(lease)) if registrations < 3 => {
                    let shared = (self.shell.shared_ranges().get(range_id))
                        .ok_or_else(|| Error::Internal(format!("range {range_id} is not here")))?;
                    let range = Participant::of(range_id, &shared);
                    let (mut machine, progress) = Registration::start(lease, range);
                    self.run(|answer| machine.handle(answer), progress).await?;
                    registrations += 1;
                }
                other => return other,
            }
        }
    }

    /// Who answers a lease-clock question: this member if it leads, else the leader — unless
    /// the question was forwarded here already.
    fn leader(&self, forwarded: bool) -> Result<Leader, Error> {
        let leader = self.range().leader_id.load(Ordering::Acquire);
        if leader == self.config.member_id() {
            return Ok(Leader::Me);
        }
        if forwarded {
            return Err(Error::NotLeader);
        }
        if leader == 0 {
            return Err(Error::NoLeader);
        }
        let url = self.client_url_of(leader).ok_or(Error::NoLeader)?;
        Ok(Leader::Elsewhere(LeaseClient::new(self.forwarder.channel(&url)?)))
    }

    /// Renews a lease; a TTL of 0 means it does not exist (any more).
    pub async fn lease_keep_alive_once(
        &self,
        id: i64,
        forwarded: bool,
    ) -> Result<LeaseKeepAliveResponse, Error> {
        let ttl = match self.leader(forwarded)? {
            // Renewed once leadership is confirmed (see `Driver::lease_keep_alive`).
            Leader::Me => self.shell.lease_keep_alive(id, self.timeout()).await?,
            Leader::Elsewhere(mut client) => {
                let request = LeaseKeepAliveRequest { id };
                let mut responses = client
                    .lease_keep_alive(mark_forwarded(tokio_stream::once(request)))
                    .await
                    .map_err(forward_error)?
                    .into_inner();
                let response = responses.message().await.map_err(forward_error)?;
                response.ok_or(Error::LeaderChanged)?.ttl
            }
        };
        Ok(LeaseKeepAliveResponse { header: self.header(self.revision()), id, ttl })
    }

    pub async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
        forwarded: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        match self.leader(forwarded)? {
            Leader::Me => {
                let Some((ttl, granted_ttl)) = self.shell.lease_time_to_live(req.id).await? else {
                    // etcd's answer for a lease that does not exist.
                    return Ok(LeaseTimeToLiveResponse {
                        header: self.header(self.revision()),
                        id: req.id,
                        ttl: -1,
                        ..Default::default()
                    });
                };
                let keys = if req.keys {
                    lease::attached_keys(&View::new(self.engine.as_ref()), req.id)?
                } else {
                    Vec::new()
                };
                Ok(LeaseTimeToLiveResponse {
                    header: self.header(self.revision()),
                    id: req.id,
                    ttl,
                    granted_ttl,
                    keys,
                })
            }
            Leader::Elsewhere(mut client) => {
                let mut response = client
                    .lease_time_to_live(mark_forwarded(req))
                    .await
                    .map_err(forward_error)?
                    .into_inner();
                response.header = self.header(self.revision());
                Ok(response)
            }
        }
    }

    /// Every lease, as this member has applied them (after a ReadIndex, so none is missing).
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, Error> {
        self.shell.read_index(FIRST_RANGE_ID, self.timeout()).await?;
        let leases = lease::all(&View::new(self.engine.as_ref()))?
            .into_iter()
            .map(|(id, _)| LeaseStatus { id })
            .collect();
        Ok(LeaseLeasesResponse { header: self.header(self.revision()), leases })
    }

    fn revision(&self) -> i64 {
        self.range().revision.load(Ordering::Acquire)
    }
}

/// An error from the leader, as this member's own: the leader's message is etcd's text already.
pub(crate) fn forward_error(status: Status) -> Error {
    // The leader's own answer, when it is one of etcd's errors, passes through unchanged.
    let known = [
        Error::LeaseNotFound,
        Error::LeaseExists,
        Error::NotLeader,
        Error::MemberNotFound,
        Error::MemberExists,
        Error::PeerUrlExists,
        Error::MemberNotLearner,
        Error::LearnerNotReady,
        Error::MembershipChangePending,
        Error::BadLeaderTransferee,
        Error::NoLeader,
        Error::Timeout,
    ];
    if let Some(error) = known.into_iter().find(|e| e.to_string() == status.message()) {
        return error;
    }
    match status.code() {
        tonic::Code::NotFound => Error::LeaseNotFound,
        tonic::Code::FailedPrecondition => Error::NotLeader,
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
            Error::LeaderChanged
        }
        _ => Error::Internal(format!("forwarded to the leader: {}", status.message())),
    }
}

pub struct LeaseService {
    pub api: Arc<Api>,
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: GrpcRequest<LeaseGrantRequest>,
    ) -> Result<GrpcResponse<LeaseGrantResponse>, Status> {
        let work = self.api.lease_grant(request.into_inner());
        observed(&self.api, "LeaseGrant", work).await
    }

    async fn lease_revoke(
        &self,
        request: GrpcRequest<LeaseRevokeRequest>,
    ) -> Result<GrpcResponse<LeaseRevokeResponse>, Status> {
        let work = self.api.lease_revoke(request.into_inner());
        observed(&self.api, "LeaseRevoke", work).await
    }

    type LeaseKeepAliveStream =
        tokio_stream::wrappers::ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: GrpcRequest<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<GrpcResponse<Self::LeaseKeepAliveStream>, Status> {
        let forwarded = forwarded(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let api = self.api.clone();
        tokio::spawn(async move {
            while let Some(Ok(request)) = inbound.next().await {
                let work = api.lease_keep_alive_once(request.id, forwarded);
                let response = api.observe("LeaseKeepAlive", work).await.map_err(status);
                let failed = response.is_err();
                if tx.send(response).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(GrpcResponse::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: GrpcRequest<LeaseTimeToLiveRequest>,
    ) -> Result<GrpcResponse<LeaseTimeToLiveResponse>, Status> {
        let forwarded = forwarded(&request);
        let work = self.api.lease_time_to_live(request.into_inner(), forwarded);
        observed(&self.api, "LeaseTimeToLive", work).await
    }

    async fn lease_leases(
        &self,
        _request: GrpcRequest<LeaseLeasesRequest>,
    ) -> Result<GrpcResponse<LeaseLeasesResponse>, Status> {
        let work = self.api.lease_leases();
        observed(&self.api, "LeaseLeases", work).await
    }
}
