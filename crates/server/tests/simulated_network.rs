//! Three members with the real node-to-node transport and the real KV service, on turmoil's
//! simulated network and clock: a partition kills the cut-off member's peer connections, the
//! transport re-establishes them once the partition heals, and every request to the cut-off
//! member ends within its deadline instead of hanging.
//!
//! Each member's raftstore runs as a task on its host's simulated clock
//! (`shell::spawn_task`); everything else — transport, gRPC services, the Driver, raft-rs, MVCC
//! — is the production code, over an in-memory engine.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use strata::config::{Member, NodeConfig, member_id};
use strata::pb::etcd::kv_client::KvClient;
use strata::server::{Parts, Runner, assemble};
use strata::transport::{Connector, Io};
use strata_core::pb::etcdserverpb::{PutRequest, RangeRequest};
use strata_storage::MemEngine;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
const NAMES: [&str; 3] = ["n1", "n2", "n3"];
const TOKEN: &str = "simulated";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn config(name: &str) -> NodeConfig {
    let members = NAMES
        .iter()
        .map(|n| {
            let peer_urls = vec![format!("http://{n}:{PEER_PORT}")];
            Member { id: member_id(&peer_urls, TOKEN), name: n.to_string(), peer_urls }
        })
        .collect();
    NodeConfig {
        name: name.to_string(),
        data_dir: "in-memory".into(),
        wal_dir: None,
        listen_clients: vec![(Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into()],
        listen_metrics: Vec::new(),
        advertise_client_urls: vec![format!("http://{name}:{CLIENT_PORT}")],
        listen_peer: (Ipv4Addr::UNSPECIFIED, PEER_PORT).into(),
        members,
        cluster_token: TOKEN.into(),
        tick_interval: Duration::from_millis(20),
        election_ticks: 10,
        request_timeout: REQUEST_TIMEOUT,
        log_entries_max: 10_000,
        watch_progress_interval: Duration::from_secs(600),
        quota_bytes: 0,
        compaction_step_records: 10_000,
        limits: Default::default(),
        initial_split_keys: Vec::new(),
        auto_compaction: None,
        join: false,
        recorded_member_id: None,
    }
}

/// Connections over the simulated network.
fn connector() -> Connector {
    Connector::Custom(Arc::new(|uri: http::Uri| {
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        }) as Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send>>
    }))
}

/// A simulated connection as tonic's server wants it.
struct Conn(turmoil::net::TcpStream);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepted simulated connections on `port`.
async fn incoming(port: u16) -> io::Result<ReceiverStream<io::Result<Conn>>> {
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), port)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(stream, _)| Conn(stream));
            if tx.send(accepted).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

async fn run_member(name: &'static str) -> Result<(), Box<dyn std::error::Error>> {
    let parts = Parts {
        epoch: 1,
        timings: Default::default(),
        store: Arc::new(strata::server::NoStoreAdmin),
        connector: connector(),
        runner: Runner::Task,
    };
    let member = assemble(&config(name), Arc::new(MemEngine::new()), parts)?;
    let kv = member.kv_service();
    let peers = tonic::transport::Server::builder()
        .add_service(member.peer_service)
        .serve_with_incoming(incoming(PEER_PORT).await?);
    let clients = tonic::transport::Server::builder()
        .add_service(kv)
        .serve_with_incoming(incoming(CLIENT_PORT).await?);
    tokio::try_join!(peers, clients)?;
    Ok(())
}

async fn client(name: &str) -> KvClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{name}:{CLIENT_PORT}")).unwrap();
    let Connector::Custom(connect) = connector() else { unreachable!() };
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |uri| {
        let connecting = connect(uri);
        async move { connecting.await.map(hyper_util::rt::TokioIo::new) }
    }));
    KvClient::new(channel)
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

/// Retries a put until it succeeds (an election may be under way), for at most `within`.
async fn put_eventually(kv: &mut KvClient<Channel>, key: &str, value: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match kv.put(put(key, value)).await {
            Ok(_) => return,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("put {key}={value} never succeeded: {status}"),
        }
    }
}

async fn serializable_get(kv: &mut KvClient<Channel>, key: &str) -> Option<Vec<u8>> {
    let request = RangeRequest { key: key.into(), serializable: true, ..Default::default() };
    let response = kv.range(request).await.ok()?.into_inner();
    response.kvs.first().map(|kv| kv.value.clone())
}

#[test]
fn transport_reconnects_after_a_partition_heals_and_requests_keep_their_deadlines()
-> turmoil::Result {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .rng_seed(7)
        .build();
    for name in NAMES {
        sim.host(name, move || run_member(name));
    }
    sim.client("client", async {
        let mut n1 = client("n1").await;
        let mut n2 = client("n2").await;
        put_eventually(&mut n1, "a", "1", Duration::from_secs(10)).await;

        // Cut n1 off. Whatever it was, it cannot commit now: a request to it must end within
        // its deadline (plus the client's margin), not hang.
        turmoil::partition("n1", "n2");
        turmoil::partition("n1", "n3");
        let started = tokio::time::Instant::now();
        let cut_off = n1.put(put("a", "cut-off")).await;
        assert!(cut_off.is_err(), "a member without a quorum acknowledged a write");
        assert!(started.elapsed() <= REQUEST_TIMEOUT + Duration::from_secs(1));

        // The majority side elects a leader (if it lost it) and serves writes.
        put_eventually(&mut n2, "a", "2", Duration::from_secs(10)).await;
        // Long enough for every connection across the cut to be declared dead (HTTP/2
        // keep-alive) and for reconnection attempts to fail.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_ne!(serializable_get(&mut n1, "a").await.as_deref(), Some(b"2".as_slice()));

        // Once the partition heals, n1's transport reconnects and it catches up.
        turmoil::repair("n1", "n2");
        turmoil::repair("n1", "n3");
        let healed = tokio::time::Instant::now();
        loop {
            if serializable_get(&mut n1, "a").await.as_deref() == Some(b"2".as_slice()) {
                break;
            }
            assert!(
                healed.elapsed() < Duration::from_secs(20),
                "n1 did not catch up within 20 s of the partition healing"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And it serves linearizable writes again.
        put_eventually(&mut n1, "b", "after", Duration::from_secs(10)).await;
        Ok(())
    });
    sim.run()
}
