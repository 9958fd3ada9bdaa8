//! Node-to-node transport: one long-lived gRPC client stream per peer carrying batches of Raft
//! messages, tagged with their range id. A large message (a snapshot) is cut into pieces that
//! travel in order and are joined on arrival, so no gRPC message is large.
//!
//! Sending never blocks the raftstore: messages go into a bounded per-peer queue, which the
//! peer's stream drains itself whenever the HTTP/2 connection asks for more, batching whatever
//! has accumulated — no task sits between the raftstore and the connection. When the queue is
//! full (in messages, or in bytes of entries and snapshots) the message is dropped and raft-rs is told the peer is unreachable — Raft is built to
//! tolerate lost messages, and dropping beats buffering without bound. A broken stream is
//! re-opened with backoff by a task per peer; HTTP/2 keep-alives detect a silent peer (a
//! partition, a paused process) within a few seconds, and connecting has its own deadline.
//!
//! Every peer's traffic is counted for `/metrics` ([`PeerStats`]): batches, messages and bytes
//! each way, and the messages dropped on the way out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;

use prost::Message as _;
use strata_core::raftstore::{Message, NodeMessage, OutMessage, decode_raft, encode_raft};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

pub use crate::admission::Admission;
use crate::pb::strata::raft_transport_client::RaftTransportClient;
use crate::pb::strata::raft_transport_server::RaftTransport;
use crate::pb::strata::{RaftBatch, RaftEnvelope, SendResponse};
use crate::shell::{Input, Outbox, ShellHandle};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 8_192;
/// Bytes of entries and snapshots queued per peer before new ones are dropped: raft-rs keeps
/// up to 256 appends of up to 1 MiB in flight to a follower per range, so an unreachable peer
/// of a node holding many ranges would otherwise pin gigabytes here.
const PEER_QUEUE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Messages per batch on the wire at most.
const BATCH_MESSAGES_MAX: usize = 512;
/// A batch is closed once its messages reach this many bytes.
const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// A Raft message larger than this (a snapshot, a large append) travels in pieces of this
/// size, so no gRPC message is large and each piece gets its own send deadline.
const PIECE_BYTES: usize = 1024 * 1024;
/// Largest gRPC message accepted from a peer: a full batch, with room to spare.
pub const PEER_MESSAGE_BYTES_MAX: usize = 4 * BATCH_BYTES_MAX;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A peer that answers no ping for this long (partitioned, paused) breaks its stream, which is
/// then re-opened; until then its queue fills and further messages to it are dropped.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to a peer, whatever carries it.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens a connection to the peer at a URL.
pub type Connect = Arc<
    dyn Fn(http::Uri) -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Io>>> + Send>>
        + Send
        + Sync,
>;

/// How the transport reaches peers: TCP, or a connector supplied by a test that runs the
/// transport over a simulated network.
#[derive(Clone, Default)]
pub enum Connector {
    #[default]
    Tcp,
    Custom(Connect),
}

/// What peers announced about themselves on their streams (name, client URLs), for
/// `MemberList`.
pub type PeerClientUrls = Arc<Mutex<HashMap<u64, Announced>>>;

#[derive(Clone, Debug, Default)]
pub struct Announced {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// The traffic with every peer this member has sent to or heard from, for `/metrics`.
#[derive(Default)]
pub struct PeerStats {
    peers: Mutex<BTreeMap<u64, Arc<PeerCounters>>>,
}

/// One peer's traffic. Bytes are those of the Raft messages, without the gRPC framing; a
/// message cut into pieces counts once.
#[derive(Default)]
pub struct PeerCounters {
    sent_batches: AtomicU64,
    sent_messages: AtomicU64,
    sent_bytes: AtomicU64,
    /// Messages that never left: the peer's queue was full (a slow or unreachable peer), or its
    /// stream broke with them still in it.
    dropped_messages: AtomicU64,
    received_batches: AtomicU64,
    received_messages: AtomicU64,
    received_bytes: AtomicU64,
    /// Bytes of the messages waiting in the peer's queue (`PEER_QUEUE_BYTES_MAX`); not a
    /// counter, so not in `/metrics`' list.
    queued_bytes: AtomicU64,
}

impl PeerCounters {
    /// The counters' names in `/metrics` (`strata_peer_<name>_total`), in [`Self::values`]'
    /// order.
    pub const NAMES: [&'static str; 7] = [
        "sent_batches",
        "sent_messages",
        "sent_bytes",
        "dropped_messages",
        "received_batches",
        "received_messages",
        "received_bytes",
    ];

    pub fn values(&self) -> [u64; 7] {
        [
            &self.sent_batches,
            &self.sent_messages,
            &self.sent_bytes,
            &self.dropped_messages,
            &self.received_batches,
            &self.received_messages,
            &self.received_bytes,
        ]
        .map(|counter| counter.load(Ordering::Relaxed))
    }
}

impl PeerStats {
    /// The counters of `peer`, created on first use.
    pub fn of(&self, peer: u64) -> Arc<PeerCounters> {
        self.peers.lock().expect("peer stats lock").entry(peer).or_default().clone()
    }

    /// Forgets the peers not in `ids` (members removed from the cluster).
    fn retain(&self, ids: &[u64]) {
        self.peers.lock().expect("peer stats lock").retain(|id, _| ids.contains(id));
    }

    /// Every peer's counters, in id order.
    pub fn all(&self) -> Vec<(u64, Arc<PeerCounters>)> {
        let peers = self.peers.lock().expect("peer stats lock");
        peers.iter().map(|(id, counters)| (*id, counters.clone())).collect()
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// Where the transport reports undeliverable messages: the shell, once it runs.
pub type Reports = Arc<Mutex<Option<ShellHandle>>>;

fn report(reports: &Reports, input: Input) {
    if let Some(shell) = reports.lock().expect("reports lock").as_ref() {
        let _ = shell.try_send(input);
    }
}

/// The sending side, owned by the shell.
pub struct Transport {
    /// A queue per peer, the URL its sender task dials, and its counters.
    peers: HashMap<u64, (String, mpsc::Sender<Queued>, Arc<PeerCounters>)>,
    reports: Reports,
    stats: Arc<PeerStats>,
    runtime: tokio::runtime::Handle,
    me: Announced,
    self_id: u64,
    admission: Arc<Admission>,
    connector: Connector,
}

impl Transport {
    /// A transport with no peers yet (see `set_peers`). Undeliverable messages are reported to
    /// `reports`, the traffic is counted in `stats`, and `admission` follows the peers.
    pub fn new(
        runtime: &tokio::runtime::Handle,
        self_id: u64,
        me: Announced,
        reports: Reports,
        stats: Arc<PeerStats>,
        admission: Arc<Admission>,
        connector: Connector,
    ) -> Self {
        Self {
            peers: HashMap::new(),
            reports,
            stats,
            runtime: runtime.clone(),
            me,
            self_id,
            admission,
            connector,
        }
    }

    /// Sends to exactly `peers` from now on: starts senders for new peers (or new URLs) and
    /// stops those of peers no longer listed (their tasks end with their queues).
    fn connect(&mut self, peers: &[(u64, String)]) {
        self.peers.retain(|id, (url, ..)| peers.iter().any(|(p, u)| p == id && u == url));
        self.stats.retain(&peers.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        for (peer_id, url) in peers {
            if self.peers.contains_key(peer_id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            let counters = self.stats.of(*peer_id);
            counters.queued_bytes.store(0, Ordering::Relaxed);
            self.peers.insert(*peer_id, (url.clone(), tx, counters.clone()));
            let url = if url.starts_with("http") { url.clone() } else { format!("http://{url}") };
            self.runtime.spawn(peer_sender(
                (self.self_id, self.me.clone(), self.admission.clone()),
                (*peer_id, url),
                rx,
                self.reports.clone(),
                counters,
                self.connector.clone(),
            ));
        }
    }
}

impl Outbox for Transport {
    fn set_peers(&mut self, peers: &[(u64, String)], cluster_id: Option<u64>) {
        self.admission.update(peers, cluster_id);
        self.connect(peers);
    }

    fn send(&mut self, messages: Vec<OutMessage>) {
        for out in messages {
            let to = out.message.to;
            let range_id = out.range_id;
            let Some((_, queue, counters)) = self.peers.get(&to) else { continue };
            let bytes = payload_bytes(&out.message);
            let queued = counters.queued_bytes.load(Ordering::Relaxed);
            // One message always fits an empty queue: a snapshot larger than the budget must
            // still go.
            let over = queued > 0 && queued + bytes > PEER_QUEUE_BYTES_MAX;
            if over || queue.try_send(Queued::Raft(out)).is_err() {
                add(&counters.dropped_messages, 1);
                report(&self.reports, Input::Unreachable { range_id, peer: to });
            } else {
                counters.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }

    fn send_node(&mut self, messages: Vec<NodeMessage>) {
        for message in messages {
            let Some((_, queue, counters)) = self.peers.get(&message.to) else { continue };
            // A lost ask is asked again, a lost answer given up by its asker: drop it.
            if queue.try_send(Queued::Node(message)).is_err() {
                add(&counters.dropped_messages, 1);
            }
        }
    }
}

async fn peer_sender(
    (self_id, me, admission): (u64, Announced, Arc<Admission>),
    (peer_id, url): (u64, String),
    queue: mpsc::Receiver<Queued>,
    reports: Reports,
    counters: Arc<PeerCounters>,
    connector: Connector,
) {
    let mut backoff = Duration::from_millis(50);
    let endpoint = match Endpoint::from_shared(url.clone()) {
        Ok(e) => e
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true),
        Err(e) => {
            tracing::error!(peer = peer_id, %url, error = %e, "invalid peer URL; not sending to it");
            return;
        }
    };
    let queue = Arc::new(Mutex::new(queue));
    // The last reason the peer gave for refusing this member's stream, logged once.
    let mut refused: Option<String> = None;
    loop {
        let channel: Channel = match &connector {
            Connector::Tcp => {
                endpoint.connect_with_connector_lazy(tower::service_fn(crate::coalesce::connect))
            }
            Connector::Custom(connect) => {
                let connect = connect.clone();
                endpoint.connect_with_connector_lazy(tower::service_fn(move |uri| {
                    let connecting = connect(uri);
                    async move { connecting.await.map(TokioIo::new) }
                }))
            }
        };
        let mut client =
            RaftTransportClient::new(channel).max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let cluster_id = admission.cluster_id.load(Ordering::Relaxed);
        let introduction = (self_id, cluster_id, &me);
        let outgoing =
            Outgoing::new(introduction, peer_id, queue.clone(), reports.clone(), counters.clone());
        let started = tokio::time::Instant::now();
        // The call lasts as long as the stream: until the peer is dropped from the members
        // (the queue closes), or the connection breaks or stays silent past its keep-alive.
        let ended = client.send(Request::new(outgoing)).await;
        if queue.lock().expect("peer queue lock").is_closed() {
            return;
        }
        report(
            &reports,
            Input::Unreachable { range_id: strata_core::FIRST_RANGE_ID, peer: peer_id },
        );
        match ended {
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                if refused.as_deref() != Some(status.message()) {
                    tracing::warn!(peer = format!("{peer_id:x}"), %url, "the peer refused this member's stream: {}", status.message());
                    refused = Some(status.message().to_string());
                }
            }
            ended => {
                tracing::debug!(peer = peer_id, %url, ended = ?ended.err(), "stream to peer broken; reconnecting");
            }
        }
        if started.elapsed() > RECONNECT_BACKOFF_MAX {
            backoff = Duration::from_millis(50);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// The stream of batches one call to a peer carries. It draws straight from the peer's queue,
/// so a message goes from the raftstore to the HTTP/2 connection without a task in between;
/// whatever has accumulated since the last poll goes out as one batch.
struct Outgoing {
    from_node: u64,
    peer: u64,
    queue: Arc<Mutex<mpsc::Receiver<Queued>>>,
    /// Batches drawn from the queue and not yet sent, first the introduction.
    ready: VecDeque<Outbound>,
    reports: Reports,
    counters: Arc<PeerCounters>,
}

impl Outgoing {
    /// A stream introduced as coming from `from_node` of cluster `cluster_id`, with `me`.
    fn new(
        (from_node, cluster_id, me): (u64, u64, &Announced),
        peer: u64,
        queue: Arc<Mutex<mpsc::Receiver<Queued>>>,
        reports: Reports,
        counters: Arc<PeerCounters>,
    ) -> Self {
        // Introduce ourselves right away (not only with the first Raft message), so every
        // member learns every other member's client URLs even if they never exchange messages.
        let hello = RaftBatch {
            from_node,
            messages: Vec::new(),
            client_urls: me.client_urls.clone(),
            name: me.name.clone(),
            cluster_id,
        };
        let ready = VecDeque::from([Outbound { batch: hello, snapshots: Vec::new() }]);
        Self { from_node, peer, queue, ready, reports, counters }
    }
}

impl Stream for Outgoing {
    type Item = RaftBatch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RaftBatch>> {
        let this = &mut *self;
        if this.ready.is_empty() {
            let mut queue = this.queue.lock().expect("peer queue lock");
            let mut batches = Batches::new(this.from_node);
            let queued_bytes = &this.counters.queued_bytes;
            let take = |batches: &mut Batches, queued: Queued| {
                if let Queued::Raft(out) = &queued {
                    queued_bytes.fetch_sub(payload_bytes(&out.message), Ordering::Relaxed);
                }
                batches.push(queued);
            };
            match queue.poll_recv(cx) {
                Poll::Ready(Some(out)) => take(&mut batches, out),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
            while batches.messages < BATCH_MESSAGES_MAX {
                match queue.try_recv() {
                    Ok(out) => take(&mut batches, out),
                    Err(_) => break,
                }
            }
            this.ready.extend(batches.ready);
        }
        let Outbound { batch, snapshots } = this.ready.pop_front().expect("a batch is ready");
        let counters = &this.counters;
        if !batch.messages.is_empty() {
            add(&counters.sent_batches, 1);
            add(&counters.sent_messages, whole_messages(&batch));
            add(&counters.sent_bytes, batch.messages.iter().map(|e| e.message.len()).sum());
        }
        // Handed to the connection: as delivered as the transport can tell.
        for range_id in snapshots {
            let status = Input::SnapshotStatus { range_id, peer: this.peer, delivered: true };
            report(&this.reports, status);
        }
        Poll::Ready(Some(batch))
    }
}

impl Drop for Outgoing {
    /// The call ended with batches unsent: their messages, and the snapshots among them, did
    /// not arrive.
    fn drop(&mut self) {
        let unsent = self.ready.iter().map(|outbound| whole_messages(&outbound.batch)).sum();
        add(&self.counters.dropped_messages, unsent);
        for range_id in self.ready.drain(..).flat_map(|outbound| outbound.snapshots) {
            let status = Input::SnapshotStatus { range_id, peer: self.peer, delivered: false };
            report(&self.reports, status);
        }
    }
}

/// The bytes of entries and snapshot a Raft message carries: what the per-peer byte budget
/// counts (a message without any, a heartbeat or a vote, is limited by the count alone).
fn payload_bytes(message: &Message) -> u64 {
    let entries: usize = message.entries.iter().map(|entry| entry.data.len()).sum();
    let snapshot = message.snapshot.as_ref().map_or(0, |snapshot| snapshot.data.len());
    (entries + snapshot) as u64
}

/// The Raft messages a batch completes (a message in pieces counts with its last piece).
fn whole_messages(batch: &RaftBatch) -> usize {
    batch.messages.iter().filter(|envelope| !envelope.more).count()
}

/// What waits in a peer's queue: a Raft message, or a message for the peer's driver (an ask
/// of the revision oracle, or its answer). Raft messages are nearly all the traffic: they stay
/// unboxed, whatever the size difference costs the rare node message.
#[allow(clippy::large_enum_variant)]
pub enum Queued {
    Raft(OutMessage),
    Node(NodeMessage),
}

/// A batch for the wire, and the ranges whose snapshot it completes.
struct Outbound {
    batch: RaftBatch,
    snapshots: Vec<u64>,
}

/// Raft messages packed into batches for the wire, in order.
struct Batches {
    from_node: u64,
    /// Every batch but the last is closed; the last takes more messages.
    ready: Vec<Outbound>,
    /// Messages taken so far.
    messages: usize,
    /// Bytes of the messages in the last batch.
    last_bytes: usize,
}

impl Batches {
    fn new(from_node: u64) -> Self {
        let first = Outbound {
            batch: RaftBatch { from_node, ..Default::default() },
            snapshots: Vec::new(),
        };
        Self { from_node, ready: vec![first], messages: 0, last_bytes: 0 }
    }

    fn push(&mut self, queued: Queued) {
        let out = match queued {
            Queued::Raft(out) => out,
            Queued::Node(message) => {
                // Small, and never in pieces.
                self.messages += 1;
                let message = message.encode_to_vec();
                let envelope = RaftEnvelope { message, node: true, ..Default::default() };
                self.last().batch.messages.push(envelope);
                return;
            }
        };
        self.messages += 1;
        let snapshot = out.message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot;
        let message = encode_raft(&out.message);
        let range_id = out.range_id;
        let whole = message.len() <= PIECE_BYTES;
        if whole {
            if self.last_bytes + message.len() > BATCH_BYTES_MAX {
                self.close();
            }
            self.last_bytes += message.len();
            let envelope = RaftEnvelope { range_id, message, ..Default::default() };
            self.last().batch.messages.push(envelope);
        } else {
            // In pieces, each in a batch of its own, before whatever follows it.
            let count = message.len().div_ceil(PIECE_BYTES);
            for (i, piece) in message.chunks(PIECE_BYTES).enumerate() {
                let more = i + 1 < count;
                self.close();
                let message = piece.to_vec();
                let envelope = RaftEnvelope { range_id, message, more, ..Default::default() };
                self.last().batch.messages.push(envelope);
            }
        }
        if snapshot {
            self.last().snapshots.push(range_id);
        }
        if !whole {
            self.close();
        }
    }

    /// Starts a new batch unless the last one is empty.
    fn close(&mut self) {
        if !self.last().batch.messages.is_empty() {
            let batch = RaftBatch { from_node: self.from_node, ..Default::default() };
            self.ready.push(Outbound { batch, snapshots: Vec::new() });
            self.last_bytes = 0;
        }
    }

    fn last(&mut self) -> &mut Outbound {
        self.ready.last_mut().expect("there is always a batch")
    }
}

/// Joins the pieces of large messages arriving on one stream.
#[derive(Default)]
struct Joiner {
    pieces: Vec<u8>,
}

impl Joiner {
    /// The whole encoded message once `envelope` completes one.
    fn accept(&mut self, envelope: RaftEnvelope) -> Option<Vec<u8>> {
        if !envelope.more && self.pieces.is_empty() {
            return Some(envelope.message);
        }
        self.pieces.extend_from_slice(&envelope.message);
        (!envelope.more).then(|| std::mem::take(&mut self.pieces))
    }
}

/// The receiving side: a gRPC service that hands every message to the shell.
pub struct TransportService {
    /// This node: the only addressee its peers may send to.
    pub node_id: u64,
    pub shell: ShellHandle,
    pub peer_client_urls: PeerClientUrls,
    pub stats: Arc<PeerStats>,
    pub admission: Arc<Admission>,
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn send(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<SendResponse>, Status> {
        let mut stream = request.into_inner();
        let mut joiner = Joiner::default();
        let mut counters: Option<Arc<PeerCounters>> = None;
        let mut sender: Option<u64> = None;
        while let Some(batch) = stream.message().await? {
            // The first batch introduces the stream: it comes from a member of this cluster,
            // and every batch after it from the same one.
            let from = *sender.get_or_insert(batch.from_node);
            let refusal = match from == batch.from_node {
                true => self.admission.refuses(from, batch.cluster_id),
                false => Some(format!(
                    "a stream of node {from:x} carried node {:x}'s batch",
                    batch.from_node
                )),
            };
            if let Some(reason) = refusal {
                tracing::warn!("refusing a peer stream: {reason}");
                return Err(Status::permission_denied(reason));
            }
            let counters = counters.get_or_insert_with(|| self.stats.of(batch.from_node));
            if !batch.messages.is_empty() {
                add(&counters.received_batches, 1);
                add(&counters.received_messages, whole_messages(&batch));
                add(&counters.received_bytes, batch.messages.iter().map(|e| e.message.len()).sum());
            }
            if !batch.client_urls.is_empty() {
                let announced = Announced { name: batch.name, client_urls: batch.client_urls };
                self.peer_client_urls.lock().expect("urls lock").insert(batch.from_node, announced);
            }
            for envelope in batch.messages {
                if envelope.node {
                    self.receive_node(batch.from_node, &envelope.message);
                    continue;
                }
                let range_id = envelope.range_id;
                let Some(encoded) = joiner.accept(envelope) else { continue };
                let message: Message = match decode_raft("raft message", &encoded) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(from = batch.from_node, error = %e, "dropping undecodable raft message");
                        continue;
                    }
                };
                if let Some(problem) = misaddressed(self.node_id, &message) {
                    tracing::warn!(
                        from = batch.from_node,
                        range_id,
                        "dropping a raft message: {problem}"
                    );
                    continue;
                }
                // A full queue drops the message; Raft will resend.
                let _ = self.shell.try_send(Input::Raft { range_id, message });
            }
        }
        Ok(Response::new(SendResponse {}))
    }
}

impl TransportService {
    /// A message for this node's driver, from peer `from`.
    fn receive_node(&self, from: u64, encoded: &[u8]) {
        match NodeMessage::decode(encoded) {
            Ok(message) if message.to == self.node_id => {
                let _ = self.shell.try_send(Input::Node(message));
            }
            Ok(message) => tracing::warn!(
                from,
                "dropping a node message addressed to node {:x}, this is node {:x}",
                message.to,
                self.node_id
            ),
            Err(e) => tracing::warn!(from, error = %e, "dropping an undecodable node message"),
        }
    }
}

/// Why a message that arrived from a peer must not reach this node's Raft, if it must not: it
/// is addressed to another node. The node asserts the addressee of what it is handed; here a
/// peer's mistake (or a stray process) is dropped instead. (A message's sender may differ from
/// the stream's: raft-rs relays a proposal or a ReadIndex request that reached a follower to
/// the leader with its original sender.)
fn misaddressed(node_id: u64, message: &Message) -> Option<String> {
    (message.to != node_id)
        .then(|| format!("addressed to node {:x}, this is node {node_id:x}", message.to))
}

#[cfg(test)]
mod tests;
