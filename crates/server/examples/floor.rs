//! The floor of serving etcd's KV API on this machine: a server that keeps nothing and answers
//! every `Put` and `Range` at once, through the same stack as a Strata member's client port
//! (tokio, axum, tonic, mimalloc, and [`strata::server::client_connections`]).
//!
//! `bench/compare` runs three of these under the same load as the two clusters. The CPU they
//! spend per operation is what speaking etcd's gRPC API costs before any storage, consensus or
//! replication, so with the load generator's own CPU it bounds the throughput any etcd-API
//! server could reach here (`docs/benchmarks.md`).
//!
//! With `--replicate`, three of them do the least a replicated put needs, and nothing else: a
//! member that is not the leader forwards its puts to the leader in batches; the leader writes
//! each batch of puts to its log file with one `fdatasync`, sends it to both other members,
//! which write and `fdatasync` it too, and answers the batch's puts once its own write and one
//! other member's are durable. No consensus, no state machine, no recovery: every put costs
//! what any replicated store must spend on it here, so this floor bounds what a replicated
//! store of etcd's API could reach on this machine.
//!
//! ```sh
//! cargo run --release -p strata --example floor -- 127.0.0.1:24379
//! # Three members replicating; the first address after the log file is the leader's.
//! floor 127.0.0.1:24479 --replicate /tmp/f1.log 127.0.0.1:24479 127.0.0.1:24480 127.0.0.1:24481
//! ```

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message as _;
use strata::pb::etcd::kv_client::KvClient;
use strata::pb::etcd::kv_server::{Kv, KvServer};
use strata::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse, request_op,
};
use strata::pb::mvccpb::KeyValue;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Answers gets with a value of the benchmarks' default size.
const VALUE_SIZE: usize = 256;

struct Floor {
    revision: AtomicI64,
    /// With `--replicate`: what this member does with a put.
    role: Option<Role>,
}

enum Role {
    /// Logs puts (its own and forwarded batches) and sends them to the other members.
    Leader { log: Batcher<Vec<PutRequest>, Result<i64, Status>> },
    /// Forwards its puts to the leader, and logs the leader's batches.
    Follower {
        forward: Batcher<PutRequest, Result<i64, Status>>,
        appends: Batcher<Vec<u8>, Result<(), Status>>,
    },
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

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let revision = match &self.role {
            None => self.revision.fetch_add(1, Ordering::Relaxed) + 1,
            Some(Role::Leader { log }) => log.call(vec![request.into_inner()]).await?,
            Some(Role::Follower { forward, .. }) => forward.call(request.into_inner()).await?,
        };
        Ok(Response::new(PutResponse { header: self.header(revision), prev_kv: None }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(only_put_and_range())
    }

    /// Between replicating members: a batch of forwarded puts (to the leader), or a batch of
    /// the leader's log (to a follower, as the value of the one put).
    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let puts = request.into_inner().success.into_iter().filter_map(|op| match op.request {
            Some(request_op::Request::RequestPut(put)) => Some(put),
            _ => None,
        });
        let revision = match &self.role {
            None => return Err(only_put_and_range()),
            Some(Role::Leader { log }) => log.call(puts.collect()).await?,
            Some(Role::Follower { appends, .. }) => {
                let batch = puts.map(|put| put.value).next().unwrap_or_default();
                appends.call(batch).await?;
                0
            }
        };
        Ok(Response::new(TxnResponse { header: self.header(revision), ..Default::default() }))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(only_put_and_range())
    }
}

/// Hands items to one task that serves them in batches: whatever arrived while it served the
/// last batch goes together in the next, as a group commit does.
struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<(T, oneshot::Sender<R>)>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// `serve` answers a batch with one result per item, in order.
    fn spawn<F, Fut>(mut serve: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, oneshot::Sender<R>)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let (mut items, mut replies) = (vec![first.0], vec![first.1]);
                while let Ok((item, reply)) = rx.try_recv() {
                    items.push(item);
                    replies.push(reply);
                }
                for (result, reply) in serve(items).await.into_iter().zip(replies) {
                    let _ = reply.send(result);
                }
            }
        });
        Self { tx }
    }

    async fn call(&self, item: T) -> R {
        let (reply, rx) = oneshot::channel();
        self.tx.send((item, reply)).unwrap_or_else(|_| panic!("batcher gone"));
        rx.await.expect("batcher answers every item")
    }
}

/// Appends to the log file and waits until it is on disk.
async fn write_durably(log: &Arc<Mutex<std::fs::File>>, bytes: Vec<u8>) -> Result<(), Status> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || {
        let mut file = log.lock().expect("log lock");
        file.write_all(&bytes)?;
        file.sync_data()
    })
    .await
    .expect("log writer")
    .map_err(|e| Status::internal(format!("log: {e}")))
}

fn client(address: &str) -> anyhow::Result<KvClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{address}"))?.tcp_nodelay(true);
    Ok(KvClient::new(channel.connect_lazy()))
}

fn batch_request(puts: Vec<PutRequest>) -> TxnRequest {
    let success = puts
        .into_iter()
        .map(|put| RequestOp { request: Some(request_op::Request::RequestPut(put)) })
        .collect();
    TxnRequest { success, ..Default::default() }
}

/// The leader: a batch of puts gets its revisions, goes to the log and to both followers, and
/// is answered once it is durable here and on one follower.
fn leader(log: Arc<Mutex<std::fs::File>>, followers: Vec<KvClient<Channel>>) -> Role {
    let revision = Arc::new(AtomicI64::new(1));
    let log = Batcher::spawn(move |batches: Vec<Vec<PutRequest>>| {
        let (log, followers, revision) = (log.clone(), followers.clone(), revision.clone());
        async move {
            let puts: usize = batches.iter().map(Vec::len).sum();
            let first = revision.fetch_add(puts as i64, Ordering::Relaxed) + 1;
            let mut bytes = Vec::new();
            for put in batches.iter().flatten() {
                put.encode_length_delimited(&mut bytes).expect("a vector grows");
            }
            let (acks_tx, mut acks) = mpsc::channel(followers.len());
            for mut follower in followers {
                let (acks_tx, value) = (acks_tx.clone(), bytes.clone());
                let append = batch_request(vec![PutRequest { value, ..Default::default() }]);
                tokio::spawn(async move {
                    let _ = acks_tx.send(follower.txn(append).await.is_ok()).await;
                });
            }
            drop(acks_tx);
            let durable = write_durably(&log, bytes).await;
            let mut replicated = false;
            while let Some(ok) = acks.recv().await {
                if ok {
                    replicated = true;
                    break;
                }
            }
            let mut next = first;
            let mut results = Vec::with_capacity(batches.len());
            for batch in &batches {
                results.push(match (&durable, replicated) {
                    (Ok(()), true) => Ok(next),
                    (Err(e), _) => Err(e.clone()),
                    (_, false) => Err(Status::unavailable("no follower has the batch")),
                });
                next += batch.len() as i64;
            }
            results
        }
    });
    Role::Leader { log }
}

/// A follower: its puts go to the leader in batches, and the leader's batches to its log.
fn follower(log: Arc<Mutex<std::fs::File>>, leader: KvClient<Channel>) -> Role {
    let forward = Batcher::spawn(move |puts: Vec<PutRequest>| {
        let mut leader = leader.clone();
        async move {
            let count = puts.len();
            match leader.txn(batch_request(puts)).await {
                Ok(response) => {
                    let first = response.into_inner().header.map_or(0, |h| h.revision);
                    (0..count as i64).map(|i| Ok(first + i)).collect()
                }
                Err(e) => vec![Err(e); count],
            }
        }
    });
    let appends = Batcher::spawn(move |batches: Vec<Vec<u8>>| {
        let log = log.clone();
        async move {
            let count = batches.len();
            let result = write_durably(&log, batches.concat()).await;
            vec![result; count]
        }
    });
    Role::Follower { forward, appends }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let address = args.first().cloned().unwrap_or_else(|| "127.0.0.1:24379".to_string());
    let role = match &args[1..] {
        [] => None,
        [flag, log, leader_address, others @ ..] if flag == "--replicate" => {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
            let log = Arc::new(Mutex::new(log));
            Some(if *leader_address == address {
                leader(log, others.iter().map(|a| client(a)).collect::<Result<_, _>>()?)
            } else {
                follower(log, client(leader_address)?)
            })
        }
        _ => anyhow::bail!("usage: floor ADDRESS [--replicate LOG LEADER_ADDRESS OTHERS...]"),
    };
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let app = axum::Router::new().route_service(
        "/etcdserverpb.KV/{*method}",
        KvServer::new(Floor { revision: AtomicI64::new(1), role }),
    );
    axum::serve(strata::server::client_connections(listener), app).await?;
    Ok(())
}
