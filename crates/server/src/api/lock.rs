//! `v3lockpb.Lock` and `v3electionpb.Election`: etcd's lock and election recipes, run inside the
//! member on its own KV, lease and watch services, exactly as etcd runs them (its
//! `concurrency` package against a client of itself).
//!
//! Both rest on one idea. A contender writes a key `<name>/<lease id in hex>` attached to its
//! lease, only if that key does not exist yet; its key's `create_revision` is its place in line.
//! The contender with the lowest `create_revision` under `<name>/` holds the lock (or leads);
//! every other one waits until every key created before its own is deleted — by an unlock, a
//! resignation, or its lease expiring. That `create_revision` is also the holder's **fencing
//! token**: writes guarded by it (a transaction comparing it) cannot land after the lock has
//! passed to someone else (see docs/locks.md).

use std::sync::Arc;

use strata_core::Error;
use strata_core::mvcc::read::prefix_end;
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::response_op::Response as OpResponse;
use strata_core::pb::etcdserverpb::watch_request::RequestUnion;
use strata_core::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
};
use strata_core::pb::mvccpb::KeyValue;
use strata_core::pb::mvccpb::event::EventType;
use strata_core::pb::v3electionpb::*;
use strata_core::pb::v3lockpb::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{Api, observed, status};
use crate::pb::election::election_server::Election;
use crate::pb::lock::lock_server::Lock;

/// The TTL of the lease a lock or campaign gets when the request names none (etcd's session
/// default).
const SESSION_TTL: i64 = 60;

fn op(request: OpRequest) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn get(key: &[u8]) -> RequestOp {
    op(OpRequest::RequestRange(RangeRequest { key: key.to_vec(), ..Default::default() }))
}

/// The oldest key under `prefix`: the holder.
fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        target: CompareTarget::Create as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}

/// The range result of operation `i` of a transaction.
fn range_at(txn: &TxnResponse, i: usize) -> Option<&RangeResponse> {
    match txn.responses.get(i)?.response.as_ref()? {
        OpResponse::ResponseRange(range) => Some(range),
        _ => None,
    }
}

/// The key a contender with `lease` writes under `name`.
fn contender_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix(name);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

fn prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Deletes a contender's key if the request waiting for it goes away (the client cancelled),
/// as etcd does, so an abandoned waiter does not take the lock later.
struct Abandon {
    api: Arc<Api>,
    key: Option<Vec<u8>>,
}

impl Abandon {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let api = self.api.clone();
            tokio::spawn(async move {
                let _ = api
                    .delete_range_request(DeleteRangeRequest { key, ..Default::default() })
                    .await;
            });
        }
    }
}

impl Api {
    /// The lease a recipe runs under: the one asked for, or a new one.
    async fn session_lease(&self, lease: i64) -> Result<i64, Error> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self.lease_grant(LeaseGrantRequest { ttl: SESSION_TTL, id: 0 }).await?;
        Ok(granted.id)
    }

    /// Waits until no key under `prefix` created at or before `max_create` exists; returns
    /// the header of the read that found none.
    async fn wait_deletes(
        self: &Arc<Self>,
        prefix: &[u8],
        max_create: i64,
    ) -> Result<Option<ResponseHeader>, Error> {
        loop {
            let newest_before = RangeRequest {
                sort_order: SortOrder::Descend as i32,
                max_create_revision: max_create,
                ..first_created(prefix)
            };
            let found = self.range_request(newest_before).await?;
            let Some(kv) = found.kvs.first() else { return Ok(found.header) };
            let revision = found.header.as_ref().map_or(0, |h| h.revision);
            self.wait_delete(&kv.key, revision).await?;
        }
    }

    /// Waits for `key` to be deleted at or after `revision`, through a watch.
    async fn wait_delete(self: &Arc<Self>, key: &[u8], mut revision: i64) -> Result<(), Error> {
        while let Some(kv) = self.next_change(key, revision).await? {
            revision = kv.mod_revision + 1;
        }
        Ok(())
    }

    pub async fn lock(self: &Arc<Self>, req: LockRequest) -> Result<LockResponse, Error> {
        let lease = self.session_lease(req.lease).await?;
        let (prefix, key) = (prefix(&req.name), contender_key(&req.name, lease));
        let put = PutRequest { key: key.clone(), lease, ..Default::default() };
        let owner = op(OpRequest::RequestRange(first_created(&prefix)));
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(OpRequest::RequestPut(put)), owner.clone()],
            failure: vec![get(&key), owner],
        };
        let response = self.txn_request(txn).await?;
        // Once the key is written, a cancelled request must not leave it behind.
        let abandon = Abandon { api: self.clone(), key: Some(key.clone()) };
        let header = response.header;
        let my_revision = if response.succeeded {
            header.as_ref().map_or(0, |h| h.revision)
        } else {
            range_at(&response, 0).and_then(|r| r.kvs.first()).map_or(0, |kv| kv.create_revision)
        };
        let holder = range_at(&response, 1).and_then(|r| r.kvs.first());
        let header = match holder {
            Some(kv) if kv.create_revision != my_revision => {
                self.wait_deletes(&prefix, my_revision - 1).await?
            }
            _ => header,
        };
        abandon.disarm();
        Ok(LockResponse { header, key })
    }

    pub async fn unlock(&self, req: UnlockRequest) -> Result<UnlockResponse, Error> {
        let deleted =
            self.delete_range_request(DeleteRangeRequest { key: req.key, ..Default::default() });
        Ok(UnlockResponse { header: deleted.await?.header })
    }

    pub async fn campaign(
        self: &Arc<Self>,
        req: CampaignRequest,
    ) -> Result<CampaignResponse, Error> {
        let lease = self.session_lease(req.lease).await?;
        let (prefix, key) = (prefix(&req.name), contender_key(&req.name, lease));
        let put =
            PutRequest { key: key.clone(), value: req.value.clone(), lease, ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(OpRequest::RequestPut(put))],
            failure: vec![get(&key)],
        };
        let response = self.txn_request(txn).await?;
        let abandon = Abandon { api: self.clone(), key: Some(key.clone()) };
        let mut revision = response.header.as_ref().map_or(0, |h| h.revision);
        let leader = |rev| LeaderKey { name: req.name.clone(), key: key.clone(), rev, lease };
        if !response.succeeded {
            // Campaigning again with the same lease: the key is ours already.
            let existing = range_at(&response, 0).and_then(|r| r.kvs.first()).cloned();
            let existing = existing.ok_or(Error::ElectionNotLeader)?;
            revision = existing.create_revision;
            if existing.value != req.value {
                let proclaim =
                    ProclaimRequest { leader: Some(leader(revision)), value: req.value.clone() };
                self.proclaim(proclaim).await?;
            }
        }
        self.wait_deletes(&prefix, revision - 1).await?;
        abandon.disarm();
        Ok(CampaignResponse { header: response.header, leader: Some(leader(revision)) })
    }

    pub async fn proclaim(&self, req: ProclaimRequest) -> Result<ProclaimResponse, Error> {
        let leader = req.leader.ok_or(Error::MissingLeaderKey)?;
        let put = PutRequest {
            key: leader.key.clone(),
            value: req.value,
            ignore_lease: true,
            ..Default::default()
        };
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(OpRequest::RequestPut(put))],
            failure: Vec::new(),
        };
        let response = self.txn_request(txn).await?;
        if !response.succeeded {
            return Err(Error::ElectionNotLeader);
        }
        Ok(ProclaimResponse { header: response.header })
    }

    pub async fn election_leader(&self, req: LeaderRequest) -> Result<LeaderResponse, Error> {
        let found = self.range_request(first_created(&prefix(&req.name))).await?;
        let kv = found.kvs.into_iter().next().ok_or(Error::ElectionNoLeader)?;
        Ok(LeaderResponse { header: found.header, kv: Some(kv) })
    }

    pub async fn resign(&self, req: ResignRequest) -> Result<ResignResponse, Error> {
        let leader = req.leader.ok_or(Error::MissingLeaderKey)?;
        let delete = DeleteRangeRequest { key: leader.key.clone(), ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op(OpRequest::RequestDeleteRange(delete))],
            failure: Vec::new(),
        };
        Ok(ResignResponse { header: self.txn_request(txn).await?.header })
    }

    /// Sends the leader of `name` and every change to it (a proclaimed value, a new leader)
    /// until the client goes away.
    async fn observe_leader(
        self: Arc<Self>,
        name: Vec<u8>,
        tx: mpsc::Sender<Result<LeaderResponse, Status>>,
    ) -> Result<(), Error> {
        let prefix = prefix(&name);
        loop {
            let found = self.range_request(first_created(&prefix)).await?;
            let revision = found.header.as_ref().map_or(0, |h| h.revision);
            // No leader yet: the first key put under the prefix is the leader.
            let leader: KeyValue = match found.kvs.into_iter().next() {
                Some(kv) => kv,
                None => tokio::select! {
                    kv = self.next_put(&prefix, revision) => kv?,
                    () = tx.closed() => return Ok(()),
                },
            };
            let mut header = self.header(leader.mod_revision.max(revision));
            let mut current = leader.clone();
            loop {
                let response = LeaderResponse { header, kv: Some(current.clone()) };
                if tx.send(Ok(response)).await.is_err() {
                    return Ok(());
                }
                // Follow the leader's key until it is deleted (or the client leaves).
                let change = tokio::select! {
                    change = self.next_change(&leader.key, current.mod_revision + 1) => change?,
                    () = tx.closed() => return Ok(()),
                };
                match change {
                    Some(kv) => {
                        header = self.header(kv.mod_revision);
                        current = kv;
                    }
                    None => break,
                }
            }
        }
    }

    /// The first key put under `prefix` from `revision` on.
    async fn next_put(self: &Arc<Self>, prefix: &[u8], revision: i64) -> Result<KeyValue, Error> {
        let create = WatchCreateRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            start_revision: revision,
            ..Default::default()
        };
        let mut responses = self.internal_watch(create);
        while let Some(response) = responses.recv().await {
            let response = response.map_err(|s| Error::Internal(s.message().to_string()))?;
            if let Some(kv) = response
                .events
                .into_iter()
                .find(|e| e.r#type == EventType::Put as i32)
                .and_then(|e| e.kv)
            {
                return Ok(kv);
            }
        }
        Err(Error::Stopped)
    }

    /// The next version of `key` from `revision` on, or `None` once it is deleted.
    async fn next_change(
        self: &Arc<Self>,
        key: &[u8],
        revision: i64,
    ) -> Result<Option<KeyValue>, Error> {
        let create = WatchCreateRequest {
            key: key.to_vec(),
            start_revision: revision,
            ..Default::default()
        };
        let mut responses = self.internal_watch(create);
        while let Some(response) = responses.recv().await {
            let response = response.map_err(|s| Error::Internal(s.message().to_string()))?;
            if response.compact_revision != 0 {
                return Err(Error::Compacted);
            }
            if let Some(event) = response.events.into_iter().next() {
                return Ok((event.r#type == EventType::Put as i32).then_some(event.kv).flatten());
            }
        }
        Err(Error::Stopped)
    }

    fn internal_watch(
        self: &Arc<Self>,
        create: WatchCreateRequest,
    ) -> mpsc::Receiver<Result<strata_core::pb::etcdserverpb::WatchResponse, Status>> {
        let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
        super::watch::open(self.clone(), tokio_stream::iter([Ok(request)]))
    }
}

pub struct LockService {
    pub api: Arc<Api>,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let work = self.api.lock(request.into_inner());
        observed(&self.api, "Lock", work).await
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let work = self.api.unlock(request.into_inner());
        observed(&self.api, "Unlock", work).await
    }
}

pub struct ElectionService {
    pub api: Arc<Api>,
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let work = self.api.campaign(request.into_inner());
        observed(&self.api, "Campaign", work).await
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let work = self.api.proclaim(request.into_inner());
        observed(&self.api, "Proclaim", work).await
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let work = self.api.election_leader(request.into_inner());
        observed(&self.api, "Leader", work).await
    }

    type ObserveStream = tokio_stream::wrappers::ReceiverStream<Result<LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let (api, name) = (self.api.clone(), request.into_inner().name);
        tokio::spawn(async move {
            if let Err(e) = api.observe_leader(name, tx.clone()).await {
                let _ = tx.send(Err(status(e))).await;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let work = self.api.resign(request.into_inner());
        observed(&self.api, "Resign", work).await
    }
}
