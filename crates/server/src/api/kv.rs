//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message as _;
use strata_core::command::Request;
use strata_core::mvcc::{Response, alarm, validate};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, TxnRequest, TxnResponse,
};
use strata_core::raftstore::local_read;
use strata_core::{Error, FIRST_RANGE_ID};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::{Api, observed, status};
use crate::pb::etcd::kv_server::Kv;

pub struct KvService {
    pub api: Arc<Api>,
}

impl Api {
    /// Serves a `Range`: linearizable unless `serializable`.
    pub async fn range_request(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        validate::check_range(&req)?;
        let single_key = req.range_end.is_empty();
        let read_ts = match req.serializable {
            false => self.shell.read_index(FIRST_RANGE_ID, self.timeout()).await?,
            true => None,
        };
        let (engine, shared) = (self.engine.clone(), self.range().clone());
        let read = move || match read_ts {
            Some(ts) => local_read::range_at(engine.as_ref(), &shared, &req, ts),
            None => local_read::range(engine.as_ref(), &shared, &req),
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
        };
        if size > self.limits.request_bytes_max {
            return Err(Error::RequestTooLarge);
        }
        if alarm::adds_data(&request) && self.over_quota(size as u64) {
            self.raise_no_space().await;
            return Err(Error::NoSpace);
        }
        self.shell.propose(FIRST_RANGE_ID, request, self.timeout()).await
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
            // A read-only transaction needs no log entry: etcd serves it like a read. Run it
            // against a scratch applier whose writes are discarded.
            if !serializable {
                self.shell.read_index(FIRST_RANGE_ID, self.timeout()).await?;
            }
            let mut response = local_read::read_only_txn(
                self.engine.as_ref(),
                &self.range(),
                FIRST_RANGE_ID,
                req,
            )?;
            response.header = self.header(response.header.map_or(0, |h| h.revision));
            return Ok(response);
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
    pub async fn compact_request(
        &self,
        req: CompactionRequest,
    ) -> Result<CompactionResponse, Error> {
        let physical = req.physical;
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut response = match self.write(Request::Compaction(req)).await? {
            Response::Compaction(r) => r,
            other => return Err(unexpected(other)),
        };
        if physical {
            let pending = &self.range().compaction_pending;
            self.wait_for(deadline, || !pending.load(Ordering::Acquire)).await?;
        }
        response.header = self.header(response.header.map_or(0, |h| h.revision));
        Ok(response)
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
