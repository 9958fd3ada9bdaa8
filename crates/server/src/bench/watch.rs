//! The watch workload: `--watchers` streams watch the prefix `w` while the clients put keys
//! under it. Each event's delivery is one operation, timed from when its put was sent (the put
//! carries its send time in its value), so the latency is what a watcher waits for a change.
//! At the end every watcher must have seen every acknowledged put, in revision order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_core::pb::etcdserverpb::watch_request::RequestUnion;
use strata_core::pb::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::keys::{Chooser, Rng, key};
use super::{Shared, timed};
use crate::pb::etcd::kv_client::KvClient;
use crate::pb::etcd::watch_client::WatchClient;

/// Bytes at the start of each value that carry its put's send time (hex microseconds).
pub const STAMP_BYTES: usize = 16;
/// How long watchers may take, after the last put, to deliver what they still owe.
const DRAIN: Duration = Duration::from_secs(5);

/// A watch stream: the request side (kept open while watching) and the responses.
type Stream = (mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>);

/// What one watcher saw.
struct Seen {
    events: u64,
    in_order: bool,
}

/// Runs the workload; returns how long the puts ran and the delivery check.
pub(super) async fn run(
    shared: &Arc<Shared>,
    channels: &[Channel],
    clients: &[KvClient<Channel>],
    started: Instant,
) -> anyhow::Result<(Duration, String)> {
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // Until the puts end, watchers have no number of events to reach.
    let owed = Arc::new(AtomicU64::new(u64::MAX));
    let mut watchers = Vec::new();
    for i in 0..shared.args.watchers {
        let channel = channels[i % channels.len()].clone();
        let stream = open(channel).await.with_context(|| format!("opening watcher {i}"))?;
        let (shared, owed) = (shared.clone(), owed.clone());
        watchers.push(tokio::spawn(watch(shared, stream, owed, started)));
    }

    let deadline = started + Duration::from_secs_f64(shared.args.duration);
    let issued = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let (shared, issued, mut client) = (shared.clone(), issued.clone(), client.clone());
        let (acknowledged, failed) = (acknowledged.clone(), failed.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x5eed ^ i as u64);
            let mut chooser =
                Chooser::new(shared.args.distribution, shared.args.key_space, i as u64);
            while issued.fetch_add(1, Ordering::Relaxed) < shared.args.total
                && Instant::now() < deadline
            {
                let mut value = format!("{:016x}", started.elapsed().as_micros()).into_bytes();
                value.resize(shared.args.value_size, b'v');
                let key = key("w", chooser.next(&mut rng), shared.args.key_size);
                let put = PutRequest { key, value, ..Default::default() };
                match timed(shared.timeout, client.put(put)).await {
                    Ok(_) => acknowledged.fetch_add(1, Ordering::Relaxed),
                    Err(kind) => {
                        super::record_error(&shared, format!("put {kind}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for writer in writers {
        let _ = writer.await;
    }
    let elapsed = started.elapsed();
    let (acknowledged, failed) =
        (acknowledged.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    owed.store(acknowledged, Ordering::Relaxed);
    let mut seen = Vec::new();
    for watcher in watchers {
        seen.push(watcher.await.context("a watcher failed")?);
    }
    Ok((elapsed, check(&seen, acknowledged, failed)))
}

/// Every watcher saw each acknowledged put (and perhaps some that failed but took effect),
/// in revision order.
fn check(seen: &[Seen], acknowledged: u64, failed: u64) -> String {
    let short = seen.iter().filter(|s| s.events < acknowledged).count();
    let over = seen.iter().filter(|s| s.events > acknowledged + failed).count();
    let disordered = seen.iter().filter(|s| !s.in_order).count();
    if short + over + disordered == 0 {
        format!("ok ({} watchers saw all {acknowledged} puts, in order)", seen.len())
    } else {
        format!(
            "FAILED: of {} watchers, {short} missed events, {over} saw more than was written, \
             {disordered} saw them out of order ({acknowledged} puts acknowledged)",
            seen.len()
        )
    }
}

/// A watch stream on the prefix `w`, once the server confirmed it.
async fn open(channel: Channel) -> anyhow::Result<Stream> {
    let (tx, rx) = mpsc::channel(1);
    let create =
        WatchCreateRequest { key: b"w".to_vec(), range_end: b"x".to_vec(), ..Default::default() };
    tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await?;
    let mut client = WatchClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = client.watch(ReceiverStream::new(rx)).await?.into_inner();
    let created = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .context("no answer to the watch")??
        .context("the watch stream ended")?;
    if !created.created || created.canceled {
        bail!("the watch was refused: {}", created.cancel_reason);
    }
    Ok((tx, stream))
}

/// Receives events until the watcher has as many as it is owed, or the drain time after the
/// puts ended runs out.
async fn watch(
    shared: Arc<Shared>,
    (_requests, mut stream): Stream,
    owed: Arc<AtomicU64>,
    started: Instant,
) -> Seen {
    let mut seen = Seen { events: 0, in_order: true };
    let mut last_revision = 0;
    let mut drain_until: Option<Instant> = None;
    loop {
        let owed = owed.load(Ordering::Relaxed);
        if owed != u64::MAX {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
            if seen.events >= owed || Instant::now() >= until {
                return seen;
            }
        }
        let response =
            match tokio::time::timeout(Duration::from_millis(100), stream.message()).await {
                Err(_) => continue, // nothing yet: look at what is owed again
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    super::record_error(&shared, "watch stream ended".to_string());
                    return seen;
                }
            };
        let mut latencies = Vec::with_capacity(response.events.len());
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            seen.in_order &= kv.mod_revision > last_revision;
            last_revision = kv.mod_revision;
            seen.events += 1;
            let sent = kv
                .value
                .get(..STAMP_BYTES)
                .and_then(|stamp| std::str::from_utf8(stamp).ok())
                .and_then(|stamp| u64::from_str_radix(stamp, 16).ok());
            if let Some(sent) = sent {
                let now = started.elapsed().as_micros() as u64;
                latencies.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
        }
        super::record_latencies(&shared, &latencies);
    }
}
