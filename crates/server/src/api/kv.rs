//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message as _;
use strata_core::command::Request;
use strata_core::mvcc::{Response, alarm, locks, read, validate};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::response_op::Response as OpResponse;
use strata_core::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, RequestOp, TxnRequest,
    TxnResponse,
};
use strata_core::raftstore::{RangeShared, local_read};
use strata_core::range::RangeEpoch;
use strata_core::{Error, FIRST_RANGE_ID, RangeId};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::{Api, observed, status};
use crate::pb::etcd::kv_server::Kv;

pub struct KvService {
    pub api: Arc<Api>,
}

impl Api {
    /// Serves a `Range`: linearizable unless `serializable`. A read that meets keys locked by
    /// a transaction across ranges (which may commit at or below its read timestamp) is served
    /// again once they are released.
    pub async fn range_request(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        validate::check_range(&req)?;
        self.retrying_locked(|| self.range_once(req.clone())).await
    }

    async fn range_once(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        let mut ranges = self.shell.shared_ranges().holding(&req.key, &req.range_end)?;
        if ranges.len() > 1 {
            return self.range_across(req, ranges).await;
        }
        let (range_id, shared) = ranges.pop().unwrap_or((FIRST_RANGE_ID, self.range()));
        let single_key = req.range_end.is_empty();
        let routed = epoch_of(&shared);
        let read_ts = match req.serializable {
            false => self.shell.read_index(range_id, self.timeout()).await?,
            true => None,
        };
        let engine = self.engine.clone();
        // A range that split while the read was routed or waited may no longer hold all of it:
        // routed again.
        let read = move || {
            let response = match read_ts {
                Some(ts) => local_read::range_at(engine.as_ref(), &shared, &req, ts),
                None => local_read::range(engine.as_ref(), &shared, &req),
            };
            unchanged(range_id, &shared, routed)?;
            response
        };
        let mut response = if single_key {
            read()?
        } else {
            // A range over many keys can take long (every version of every key in it is read to
            // count them): it runs on the blocking pool, so that the async workers carrying Raft
            // traffic and other requests never wait behind it.
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| Error::Internal(format!("range read failed: {e}")))??
        };
        response.header = self.header(response.header.map_or(0, |h| h.revision));
        Ok(response)
    }

    /// Serves a `Range` over keys of several ranges as one snapshot: at one read timestamp
    /// from the revision oracle, each range read once it has applied every write at or below
    /// it (serializable: at the least closed revision of those ranges, from the local
    /// replicas alone), and the parts joined as one store would answer.
    async fn range_across(
        &self,
        req: RangeRequest,
        ranges: Vec<(RangeId, Arc<RangeShared>)>,
    ) -> Result<RangeResponse, Error> {
        let routed: Vec<_> = ranges.iter().map(|(_, shared)| epoch_of(shared)).collect();
        let at = if req.serializable {
            ranges.iter().map(|(_, shared)| shared.closed_revision()).min()
        } else {
            let (first, _) = &ranges[0];
            let ts = self.shell.read_index(*first, self.timeout()).await?;
            let ts =
                ts.ok_or_else(|| Error::Internal("a range without a read timestamp".into()))?;
            // The other ranges confirm together.
            let mut confirming = tokio::task::JoinSet::new();
            for (range_id, _) in &ranges[1..] {
                let (shell, range_id, timeout) = (self.shell.clone(), *range_id, self.timeout());
                confirming.spawn(async move { shell.read_index_at(range_id, ts, timeout).await });
            }
            while let Some(confirmed) = confirming.join_next().await {
                confirmed.map_err(|e| Error::Internal(format!("read failed: {e}")))??;
            }
            Some(ts)
        };
        let at = at.unwrap_or(0);
        if req.revision > at {
            return Err(Error::FutureRevision);
        }
        let engine = self.engine.clone();
        let mut response = tokio::task::spawn_blocking(move || {
            let mut parts = Vec::with_capacity(ranges.len());
            for (_, shared) in &ranges {
                let descriptor = shared.descriptor.read().expect("descriptor lock").clone();
                let (first, past) = descriptor.span();
                let mut part = read::part_of(&req, first, past);
                if part.revision == 0 {
                    part.revision = at;
                }
                parts.push(local_read::range_at(engine.as_ref(), shared, &part, at)?);
            }
            // Parts read by spans a split changed meanwhile may miss keys: read again.
            for ((range_id, shared), routed) in ranges.iter().zip(routed) {
                unchanged(*range_id, shared, routed)?;
            }
            Ok::<_, Error>(read::merge(&req, parts, at))
        })
        .await
        .map_err(|e| Error::Internal(format!("range read failed: {e}")))??;
        response.header = self.header(at);
        Ok(response)
    }

    /// The ranges holding the keys a write touches (the cluster's own requests: the meta
    /// range), in no particular order.
    fn ranges_of_write(
        &self,
        request: &Request,
    ) -> Result<Vec<(RangeId, Arc<RangeShared>)>, Error> {
        match request {
            Request::Put(put) => self.ranges_of_spans(&[(put.key.as_slice(), &[][..])]),
            Request::DeleteRange(delete) => {
                self.ranges_of_spans(&[(&delete.key, &delete.range_end)])
            }
            Request::Txn(txn) => self.ranges_of_txn(txn),
            _ => Ok(Vec::new()),
        }
    }

    /// The ranges holding the keys a transaction touches.
    fn ranges_of_txn(&self, txn: &TxnRequest) -> Result<Vec<(RangeId, Arc<RangeShared>)>, Error> {
        let mut spans = Vec::new();
        locks::txn_spans(txn, &mut spans);
        self.ranges_of_spans(&spans)
    }

    fn ranges_of_spans(
        &self,
        spans: &[(&[u8], &[u8])],
    ) -> Result<Vec<(RangeId, Arc<RangeShared>)>, Error> {
        self.shell.shared_ranges().holding_any(spans)
    }

    /// Proposes a write and waits for it to be applied.
    pub async fn write(&self, request: Request) -> Result<Response, Error> {
        let size = match &request {
            Request::Put(r) => r.encoded_len(),
            Request::DeleteRange(r) => r.encoded_len(),
            Request::Txn(r) => r.encoded_len(),
            Request::Compaction(r) => r.encoded_len(),
            Request::LeaseGrant(r) => r.encoded_len(),
            Request::LeaseRevoke(r) => r.encoded_len(),
            Request::Alarm(r) => r.encoded_len(),
            Request::MemberChange(r) => r.encoded_len(),
            Request::CompactionStep(r) => r.encoded_len(),
            Request::TsoCeiling(r) => r.encoded_len(),
            Request::TxnPrepare(r) => r.encoded_len(),
            Request::TxnCommit(r) => r.encoded_len(),
            Request::TxnRollback(r) | Request::TxnForget(r) => r.encoded_len(),
            Request::LeaseRegister(r) => r.encoded_len(),
            Request::LeaseMark(r) => r.encoded_len(),
            Request::RangeIdAllocate(r) => r.encoded_len(),
            Request::Split(r) => r.encoded_len(),
        };
        if size > self.limits.request_bytes_max {
            return Err(Error::RequestTooLarge);
        }
        if alarm::adds_data(&request) && self.over_quota(size as u64) {
            self.raise_no_space().await;
            return Err(Error::NoSpace);
        }
        // A write refused for a lock, or by a range that split since it was routed, was not
        // applied: it is routed and proposed again once the lock is released (or resolved).
        self.retrying_locked(|| async {
            let mut ranges = self.ranges_of_write(&request)?;
            if ranges.len() > 1 {
                return match request.clone() {
                    Request::Txn(txn) => self.txn_across(txn).await.map(Response::Txn),
                    Request::DeleteRange(delete) => {
                        self.delete_across(delete).await.map(Response::DeleteRange)
                    }
                    other => Err(Error::Internal(format!("{other:?} across ranges"))),
                };
            }
            let range_id = ranges.pop().map_or(FIRST_RANGE_ID, |(id, _)| id);
            self.propose_leased(range_id, request.clone()).await
        })
        .await
    }

    /// A `DeleteRange` over keys of several ranges: a transaction of it alone.
    async fn delete_across(
        &self,
        delete: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        let op = RequestOp { request: Some(OpRequest::RequestDeleteRange(delete)) };
        let txn = TxnRequest { success: vec![op], ..Default::default() };
        let mut response = self.txn_across(txn).await?;
        match response.responses.pop().and_then(|op| op.response) {
            Some(OpResponse::ResponseDeleteRange(deleted)) => Ok(deleted),
            other => Err(Error::Internal(format!("a delete answered {other:?}"))),
        }
    }

    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse, Error> {
        validate::check_put(&req)?;
        match self.write(Request::Put(req)).await? {
            Response::Put(mut r) => {
                r.header = self.header(r.header.map_or(0, |h| h.revision));
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_range_request(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        validate::check_delete_range(&req)?;
        match self.write(Request::DeleteRange(req)).await? {
            Response::DeleteRange(mut r) => {
                r.header = self.header(r.header.map_or(0, |h| h.revision));
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn txn_request(&self, req: TxnRequest) -> Result<TxnResponse, Error> {
        validate::check_txn(&req, &self.limits)?;
        let read_only = is_read_only(&req);
        let serializable = read_only && all_serializable(&req);
        if read_only {
            // A read-only transaction of one range needs no log entry: etcd serves it like a
            // read. Run it against a scratch applier whose writes are discarded.
            let read = || async {
                let mut ranges = self.ranges_of_txn(&req)?;
                if ranges.len() > 1 {
                    return Ok(None); // across ranges: a transaction across ranges
                }
                let (range_id, shared) = ranges.pop().unwrap_or((FIRST_RANGE_ID, self.range()));
                let routed = epoch_of(&shared);
                let read_ts = match serializable {
                    false => self.shell.read_index(range_id, self.timeout()).await?,
                    true => None,
                };
                let (engine, req) = (self.engine.as_ref(), req.clone());
                let response = local_read::read_only_txn(engine, &shared, range_id, req, read_ts);
                unchanged(range_id, &shared, routed)?;
                response.map(Some)
            };
            if let Some(mut response) = self.retrying_locked(read).await? {
                response.header = self.header(response.header.map_or(0, |h| h.revision));
                return Ok(response);
            }
        }
        match self.write(Request::Txn(req)).await? {
            Response::Txn(mut r) => {
                r.header = self.header(r.header.map_or(0, |h| h.revision));
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Compacts. The answer comes once reads below the revision are refused; the deletions
    /// follow in steps, and with `physical` set the answer waits until this member has done
    /// them, as etcd's does.
    ///
    /// In a cluster of several ranges (taking revisions from the oracle) the revision is checked
    /// against a read timestamp — a range's own last revision may be far below the cluster's —
    /// and the compaction goes to the meta range, which keeps the cluster's compaction revision
    /// and refuses one at or below it, then to every other range, each compacting up to its own
    /// last revision (see `Applier::compact`).
    pub async fn compact_request(
        &self,
        req: CompactionRequest,
    ) -> Result<CompactionResponse, Error> {
        let physical = req.physical;
        let deadline = tokio::time::Instant::now() + self.timeout();
        let ranges = self.shell.shared_ranges().all();
        let oracle =
            |r: &RangeShared| r.descriptor.read().expect("descriptor lock").oracle_revisions;
        let mut response = if ranges.len() > 1 && ranges.iter().all(|(_, r)| oracle(r)) {
            let ts = self.shell.read_index(FIRST_RANGE_ID, self.timeout()).await?;
            if req.revision > ts.unwrap_or(0) {
                return Err(Error::FutureRevision);
            }
            let mut response = self.compact_range(FIRST_RANGE_ID, &req).await?;
            let mut others = tokio::task::JoinSet::new();
            for (range_id, _) in ranges.iter().filter(|(id, _)| *id != FIRST_RANGE_ID) {
                let (shell, range_id, timeout) = (self.shell.clone(), *range_id, self.timeout());
                let request = Request::Compaction(req);
                others.spawn(async move { shell.propose(range_id, request, timeout).await });
            }
            while let Some(done) = others.join_next().await {
                done.map_err(|e| Error::Internal(format!("compaction failed: {e}")))??;
            }
            response.header = ts.map(|revision| strata_core::pb::etcdserverpb::ResponseHeader {
                revision,
                ..Default::default()
            });
            response
        } else {
            let request = Request::Compaction(req);
            match self.write(request).await? {
                Response::Compaction(r) => r,
                other => return Err(unexpected(other)),
            }
        };
        if physical {
            for (_, range) in &ranges {
                let pending = &range.compaction_pending;
                self.wait_for(deadline, || !pending.load(Ordering::Acquire)).await?;
            }
        }
        response.header = self.header(response.header.map_or(0, |h| h.revision));
        Ok(response)
    }

    async fn compact_range(
        &self,
        range_id: RangeId,
        req: &CompactionRequest,
    ) -> Result<CompactionResponse, Error> {
        let request = Request::Compaction(*req);
        match self.shell.propose(range_id, request, self.timeout()).await? {
            Response::Compaction(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}

fn is_read_only(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| match &op.request {
        Some(OpRequest::RequestRange(_)) | None => true,
        Some(OpRequest::RequestTxn(t)) => is_read_only(t),
        _ => false,
    })
}

fn all_serializable(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| match &op.request {
        Some(OpRequest::RequestRange(r)) => r.serializable,
        Some(OpRequest::RequestTxn(t)) => all_serializable(t),
        _ => true,
    })
}

fn unexpected(response: Response) -> Error {
    Error::Internal(format!("unexpected response kind {response:?}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: GrpcRequest<RangeRequest>,
    ) -> Result<GrpcResponse<RangeResponse>, Status> {
        observed(&self.api, "Range", self.api.range_request(request.into_inner())).await
    }

    type RangeStreamStream = tokio_stream::Once<Result<RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        request: GrpcRequest<RangeRequest>,
    ) -> Result<GrpcResponse<Self::RangeStreamStream>, Status> {
        // One chunk for now; streaming large results in pieces comes with bounded reads.
        let response = self.api.range_request(request.into_inner()).await.map_err(status)?;
        let chunk = RangeStreamResponse { range_response: Some(response) };
        Ok(GrpcResponse::new(tokio_stream::once(Ok(chunk))))
    }

    async fn put(
        &self,
        request: GrpcRequest<PutRequest>,
    ) -> Result<GrpcResponse<PutResponse>, Status> {
        observed(&self.api, "Put", self.api.put_request(request.into_inner())).await
    }

    async fn delete_range(
        &self,
        request: GrpcRequest<DeleteRangeRequest>,
    ) -> Result<GrpcResponse<DeleteRangeResponse>, Status> {
        observed(&self.api, "DeleteRange", self.api.delete_range_request(request.into_inner()))
            .await
    }

    async fn txn(
        &self,
        request: GrpcRequest<TxnRequest>,
    ) -> Result<GrpcResponse<TxnResponse>, Status> {
        observed(&self.api, "Txn", self.api.txn_request(request.into_inner())).await
    }

    async fn compact(
        &self,
        request: GrpcRequest<CompactionRequest>,
    ) -> Result<GrpcResponse<CompactionResponse>, Status> {
        observed(&self.api, "Compact", self.api.compact_request(request.into_inner())).await
    }
}

/// The epoch of a range's span as this node applied it.
fn epoch_of(shared: &RangeShared) -> Option<RangeEpoch> {
    shared.descriptor.read().expect("descriptor lock").epoch
}

/// Refuses a read whose range's span changed since it was routed (`EpochNotMatch`: routed
/// again), after reading: a split applied meanwhile may have taken keys it read from.
fn unchanged(
    range_id: RangeId,
    shared: &RangeShared,
    routed: Option<RangeEpoch>,
) -> Result<(), Error> {
    let now = epoch_of(shared);
    match (routed, now) {
        (Some(routed), Some(now)) if routed.version != now.version => {
            Err(Error::EpochNotMatch { range_id, proposed: routed.version, current: now.version })
        }
        _ => Ok(()),
    }
}
