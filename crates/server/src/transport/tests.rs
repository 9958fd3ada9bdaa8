//! The transport's tests: addressing, pieces, batching, and what is dropped and why.

use prost::Message as _;
use raft::prelude::{MessageType, Snapshot};

use super::*;

fn message(kind: MessageType, to: u64, snapshot_bytes: usize) -> OutMessage {
    let mut message = Message::default();
    message.set_msg_type(kind);
    message.to = to;
    if snapshot_bytes > 0 {
        let data = (0..snapshot_bytes).map(|i| (i % 251) as u8).collect();
        message.snapshot = Some(Snapshot { data, ..Default::default() });
    }
    OutMessage { range_id: 7, message }
}

/// A transport of node 9 with no peers yet, counting in `stats`.
fn transport(stats: &Arc<PeerStats>) -> Transport {
    Transport {
        peers: HashMap::new(),
        reports: Reports::default(),
        stats: stats.clone(),
        runtime: tokio::runtime::Handle::current(),
        me: Announced::default(),
        self_id: 9,
        admission: Default::default(),
        connector: Connector::default(),
    }
}

#[test]
fn a_message_for_another_node_is_refused() {
    let heartbeat = message(MessageType::MsgHeartbeat, 2, 0).message;
    assert_eq!(misaddressed(2, &heartbeat), None);
    let refused = misaddressed(3, &heartbeat).expect("for node 2, not 3");
    assert!(refused.contains("addressed to node 2"), "{refused}");
}

#[test]
fn large_messages_travel_in_pieces_and_arrive_whole_in_order() {
    let sent = [
        message(MessageType::MsgHeartbeat, 1, 0),
        message(MessageType::MsgSnapshot, 2, 3 * PIECE_BYTES + 12_345),
        message(MessageType::MsgHeartbeat, 3, 0),
        message(MessageType::MsgSnapshot, 4, PIECE_BYTES / 2),
    ];
    let mut batches = Batches::new(9);
    for out in sent.iter().cloned() {
        batches.push(Queued::Raft(out));
    }
    assert!(batches.ready.len() >= 6, "the large snapshot is cut: {}", batches.ready.len());
    let mut joiner = Joiner::default();
    let mut received = Vec::new();
    let mut snapshots_completed = 0;
    for Outbound { batch, snapshots } in batches.ready {
        assert!(batch.encoded_len() <= PEER_MESSAGE_BYTES_MAX);
        assert_eq!(batch.from_node, 9);
        for envelope in batch.messages {
            assert_eq!(envelope.range_id, 7);
            if let Some(encoded) = joiner.accept(envelope) {
                received.push(decode_raft::<Message>("message", &encoded).unwrap());
            }
        }
        // A snapshot counts as sent with the batch that carries its last piece.
        for range_id in snapshots {
            assert_eq!(range_id, 7);
            let last = received.last().expect("a message completed");
            assert_eq!(last.get_msg_type(), MessageType::MsgSnapshot);
            snapshots_completed += 1;
        }
    }
    assert_eq!(snapshots_completed, 2);
    let sent: Vec<Message> = sent.into_iter().map(|out| out.message).collect();
    assert_eq!(received, sent);
}

#[tokio::test]
async fn a_stream_introduces_itself_then_batches_what_has_queued_until_the_queue_closes() {
    use tokio_stream::StreamExt as _;
    let (tx, rx) = mpsc::channel(16);
    let me = Announced { name: "a".into(), client_urls: vec!["http://127.0.0.1:1".into()] };
    let queue = Arc::new(Mutex::new(rx));
    let counters = Arc::new(PeerCounters::default());
    let mut outgoing =
        Outgoing::new((9, 5, &me), 2, queue.clone(), Reports::default(), counters.clone());
    let closed = || queue.lock().unwrap().is_closed();
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

    let hello = outgoing.next().await.expect("the introduction");
    assert_eq!((hello.name.as_str(), hello.cluster_id, hello.messages.len()), ("a", 5, 0));
    assert_eq!(count(&counters.sent_batches), 0, "the introduction carries no messages");
    for _ in 0..3 {
        tx.try_send(Queued::Raft(message(MessageType::MsgAppend, 2, 0))).unwrap();
    }
    let batch = outgoing.next().await.expect("a batch");
    assert_eq!(batch.messages.len(), 3, "everything queued goes out together");
    let bytes: usize = batch.messages.iter().map(|e| e.message.len()).sum();
    assert_eq!(count(&counters.sent_batches), 1);
    assert_eq!(count(&counters.sent_messages), 3);
    assert_eq!(count(&counters.sent_bytes), bytes as u64);
    assert!(!closed());
    drop(tx);
    assert!(outgoing.next().await.is_none());
    assert!(closed(), "a closed queue ends the call for good");
    assert_eq!(count(&counters.dropped_messages), 0);
}

#[tokio::test]
async fn messages_that_cannot_leave_are_counted_as_dropped() {
    let stats = Arc::new(PeerStats::default());
    let mut transport = transport(&stats);
    // A peer whose queue holds two messages and is never drained.
    let (tx, rx) = mpsc::channel(2);
    transport.peers.insert(2, ("http://127.0.0.1:1".into(), tx, stats.of(2)));
    transport.send((0..5).map(|_| message(MessageType::MsgAppend, 2, 0)).collect());
    let dropped = |peer| stats.of(peer).dropped_messages.load(Ordering::Relaxed);
    assert_eq!(dropped(2), 3, "three did not fit in the queue");

    // A stream that breaks with a batch drawn from its queue but not yet sent (the pieces
    // of a large message wait like this), and its introduction, which carries no messages.
    let mut outgoing = Outgoing::new(
        (9, 5, &Announced::default()),
        2,
        Arc::new(Mutex::new(rx)),
        Reports::default(),
        stats.of(2),
    );
    let envelope = RaftEnvelope { range_id: 7, message: vec![1], ..Default::default() };
    let batch = RaftBatch { messages: vec![envelope], ..Default::default() };
    outgoing.ready.push_back(Outbound { batch, snapshots: Vec::new() });
    drop(outgoing);
    assert_eq!(dropped(2), 4, "the unsent batch is dropped with its stream");
    assert_eq!(stats.all().iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![2]);
    transport.set_peers(&[], None);
    assert!(stats.all().is_empty(), "a removed member's counters go with it");
}

#[tokio::test]
async fn a_peer_s_queue_holds_a_bounded_number_of_bytes() {
    let stats = Arc::new(PeerStats::default());
    let mut transport = transport(&stats);
    let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
    transport.peers.insert(2, ("http://127.0.0.1:1".into(), tx, stats.of(2)));
    // Snapshots of 10 MiB to a peer that takes nothing: six fit in the budget, and
    // heartbeats still go in after them.
    let big = || message(MessageType::MsgSnapshot, 2, 10 * 1024 * 1024);
    transport.send((0..8).map(|_| big()).collect());
    transport.send(vec![message(MessageType::MsgHeartbeat, 2, 0)]);
    let counters = stats.of(2);
    let dropped = || counters.dropped_messages.load(Ordering::Relaxed);
    assert_eq!(dropped(), 2, "two did not fit in the budget");
    let queued = counters.queued_bytes.load(Ordering::Relaxed);
    assert_eq!(queued, 6 * 10 * 1024 * 1024);
    // Drawn from the queue for the wire, they leave the budget.
    use tokio_stream::StreamExt as _;
    let me = Announced::default();
    let mut outgoing =
        Outgoing::new((9, 5, &me), 2, Arc::new(Mutex::new(rx)), Reports::default(), stats.of(2));
    outgoing.next().await.expect("the introduction");
    outgoing.next().await.expect("a batch");
    assert_eq!(counters.queued_bytes.load(Ordering::Relaxed), 0);
    transport.send(vec![big()]);
    assert_eq!(dropped(), 2, "room again");
    // However large, a message goes into an empty queue.
    let (tx, _rx) = mpsc::channel(PEER_QUEUE_MAX);
    transport.peers.insert(3, ("http://127.0.0.1:1".into(), tx, stats.of(3)));
    transport.send(vec![message(MessageType::MsgSnapshot, 3, 80 * 1024 * 1024)]);
    assert_eq!(stats.of(3).dropped_messages.load(Ordering::Relaxed), 0);
}
