//! The floor of serving etcd's KV API on this machine: a server that keeps nothing and answers
//! every `Put` and `Range` at once, through the same stack as a Strata member's client port
//! (tokio, axum, tonic, mimalloc, and [`strata::server::client_connections`]).
//!
//! `bench/compare` runs three of these under the same load as the two clusters. The CPU they
//! spend per operation is what speaking etcd's gRPC API costs before any storage, consensus or
//! replication, so with the load generator's own CPU it bounds the throughput any etcd-API
//! server could reach here (`docs/benchmarks.md`).
//!
//! ```sh
//! cargo run --release -p strata --example floor -- 127.0.0.1:24379
//! ```

use std::sync::atomic::{AtomicI64, Ordering};

use strata::pb::etcd::kv_server::{Kv, KvServer};
use strata::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, ResponseHeader, TxnRequest,
    TxnResponse,
};
use strata::pb::mvccpb::KeyValue;
use tonic::{Request, Response, Status};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Answers gets with a value of the benchmarks' default size.
const VALUE_SIZE: usize = 256;

struct Floor {
    revision: AtomicI64,
}

impl Floor {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { cluster_id: 1, member_id: 1, revision, raft_term: 1 })
    }
}

fn only_put_and_range() -> Status {
    Status::unimplemented("the floor server answers Put and Range only")
}

#[tonic::async_trait]
impl Kv for Floor {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let revision = self.revision.load(Ordering::Relaxed);
        let kv = KeyValue {
            key: request.into_inner().key,
            create_revision: 1,
            mod_revision: revision,
            version: 1,
            value: vec![b'v'; VALUE_SIZE],
            lease: 0,
        };
        Ok(Response::new(RangeResponse {
            header: self.header(revision),
            kvs: vec![kv],
            more: false,
            count: 1,
        }))
    }

    type RangeStreamStream = tokio_stream::Once<Result<RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _: Request<RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(only_put_and_range())
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::new(PutResponse { header: self.header(revision), prev_kv: None }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(only_put_and_range())
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(only_put_and_range())
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(only_put_and_range())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:24379".to_string());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let app = axum::Router::new().route_service(
        "/etcdserverpb.KV/{*method}",
        KvServer::new(Floor { revision: AtomicI64::new(1) }),
    );
    axum::serve(strata::server::client_connections(listener), app).await?;
    Ok(())
}
