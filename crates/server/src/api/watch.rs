//! `etcdserverpb.Watch`: bidirectional streams of events, on the core's watch [`Hub`].
//!
//! Three parts:
//! * the **feeder** ([`feed`]), one task per member, wakes when the node's frontier moves (the
//!   revision through which every range it holds has applied every event), reads the events
//!   once from the change index and publishes them to the hub;
//! * a **session** per client stream handles create, cancel and progress requests, takes each
//!   watcher's events from the hub (or reads them from storage while the watcher is behind)
//!   and sends them, in order;
//! * the hub in between bounds what each watcher may buffer (see `strata_core::watch`).
//!
//! Nothing here can block a write: the raftstore only wakes the feeder, and the feeder only
//! appends to bounded buffers. A client that reads slowly blocks its own session on the
//! bounded outbound channel; its watchers overflow, fall behind and later catch up from storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use strata_core::Error;
use strata_core::pb::etcdserverpb::watch_request::RequestUnion;
use strata_core::pb::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use strata_core::pb::mvccpb::Event;
use strata_core::watch::{Hubs, Spec, Take, WatcherId, feed};
use tokio::sync::{Notify, mpsc};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::{Api, status};
use crate::pb::etcd::watch_server::Watch;

/// Responses queued for one client stream before its session waits for the client.
const OUTBOUND_RESPONSES_MAX: usize = 4;
/// Bytes of events read from storage at a time, by the feeder and by a catching-up watcher.
const READ_BYTES_TARGET: usize = 256 * 1024;
/// etcd's error texts, which clients may match on.
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// The watch state of a member: its hubs and a waker per client stream.
pub struct Watches {
    hub: Mutex<Hubs>,
    wakers: Mutex<HashMap<u64, Arc<Notify>>>,
    next_stream: AtomicU64,
    /// How often idle watchers that asked for it get an empty progress response.
    progress_interval: Duration,
    pub events_sent: AtomicU64,
}

impl Watches {
    pub fn new(progress_interval: Duration) -> Self {
        Self {
            hub: Mutex::default(),
            wakers: Mutex::default(),
            next_stream: AtomicU64::new(1),
            progress_interval,
            events_sent: AtomicU64::new(0),
        }
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hubs> {
        self.hub.lock().expect("watch hub lock")
    }

    fn wake(&self, streams: BTreeSet<u64>) {
        let wakers = self.wakers.lock().expect("watch wakers lock");
        for stream in streams {
            if let Some(waker) = wakers.get(&stream) {
                waker.notify_one();
            }
        }
    }

    /// Watchers, lagging watchers, buffered bytes, largest buffer: for `/metrics`.
    pub fn gauges(&self) -> [usize; 4] {
        let hub = self.hub();
        [hub.watcher_count(), hub.lagging_count(), hub.buffered_bytes(), hub.largest_buffer_bytes()]
    }
}

/// Publishes applied events to the hub, for the member's lifetime. `applied` is notified by the
/// raftstore whenever the revision moves.
pub async fn feed(api: Arc<Api>, applied: Arc<Notify>) {
    loop {
        applied.notified().await;
        while let Err(e) = api.feed_once() {
            // A storage error here stops only watch delivery; the raftstore stops the process
            // on its own storage errors. Try again shortly.
            tracing::error!(error = %e, "cannot read applied events for watchers; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Api {
    /// Publishes every event applied since the last call.
    fn feed_once(&self) -> Result<(), Error> {
        let (engine, ranges) = (self.engine.as_ref(), self.shell.shared_ranges());
        let woken = feed::publish_applied(engine, ranges, &self.watches.hub, READ_BYTES_TARGET)?;
        self.watches.wake(woken);
        Ok(())
    }
}

pub struct WatchService {
    pub api: Arc<Api>,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner().map(|r| r.map_err(|_| ()));
        let rx = open(self.api.clone(), inbound);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// Starts a session for a client stream; its responses arrive on the returned channel, which
/// closes when the client's requests end (or fail) or the client stops listening.
pub fn open(
    api: Arc<Api>,
    inbound: impl Stream<Item = Result<WatchRequest, ()>> + Send + Unpin + 'static,
) -> mpsc::Receiver<Result<WatchResponse, Status>> {
    let (tx, rx) = mpsc::channel(OUTBOUND_RESPONSES_MAX);
    let stream = api.watches.next_stream.fetch_add(1, Ordering::Relaxed);
    let waker = Arc::new(Notify::new());
    api.watches.wakers.lock().expect("watch wakers lock").insert(stream, waker.clone());
    let session = Session {
        api,
        stream,
        waker,
        tx,
        watches: BTreeMap::new(),
        next_watch_id: 0,
        progress_requested: false,
    };
    tokio::spawn(session.run(inbound));
    rx
}

/// One watch of a session, as the client asked for it.
struct Watching {
    spec: Spec,
    progress_notify: bool,
    fragment: bool,
    /// Something was sent since the last progress tick.
    sent: bool,
}

/// The client went away.
struct Closed;

struct Session {
    api: Arc<Api>,
    stream: u64,
    waker: Arc<Notify>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    watches: BTreeMap<i64, Watching>,
    next_watch_id: i64,
    /// A progress request waits until every watcher has been sent everything published.
    progress_requested: bool,
}

impl Session {
    async fn run(mut self, inbound: impl Stream<Item = Result<WatchRequest, ()>> + Unpin) {
        let mut ticker = tokio::time::interval(self.api.watches.progress_interval);
        ticker.reset(); // the first tick is one interval away
        // A client may close its side after its last request and keep listening (the JSON
        // gateway does, as etcd's does): the session then runs until the client goes away.
        let mut inbound = Some(inbound);
        loop {
            if self.flush().await.is_err() {
                break;
            }
            let next_request = async {
                match inbound.as_mut() {
                    Some(requests) => requests.next().await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                request = next_request => match request {
                    Some(Ok(request)) => self.handle(request).await,
                    Some(Err(())) => Err(Closed),
                    None => {
                        inbound = None;
                        Ok(())
                    }
                },
                () = self.waker.notified() => Ok(()),
                _ = ticker.tick() => self.progress_tick().await,
                () = self.tx.closed() => Err(Closed),
            };
            if step.is_err() {
                break;
            }
        }
        self.api.watches.hub().remove_stream(self.stream);
        self.api.watches.wakers.lock().expect("watch wakers lock").remove(&self.stream);
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Closed> {
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }

    fn id(&self, watch: i64) -> WatcherId {
        WatcherId { stream: self.stream, watch }
    }

    /// The revision through which this member can give every event: a watch from "now" starts
    /// after it.
    fn store_revision(&self) -> i64 {
        self.api.shell.shared_ranges().watermarks().frontier
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Closed> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let response = self.create(create);
                self.send(response).await
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                // As etcd: cancelling an unknown watch answers nothing.
                if self.watches.remove(&cancel.watch_id).is_none() {
                    return Ok(());
                }
                self.api.watches.hub().remove(self.id(cancel.watch_id));
                self.send(WatchResponse {
                    header: self.api.header(self.store_revision()),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Registers a watch; answers with its id (or why it could not be created).
    fn create(&mut self, req: WatchCreateRequest) -> WatchResponse {
        let revision = self.store_revision();
        let refuse = |reason: &str| WatchResponse {
            header: self.api.header(revision),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        // etcd's conventions: an empty key is "\0", the smallest key; an empty end watches one
        // key; an end of "\0" watches every key from `key` on.
        let key = if req.key.is_empty() { vec![0] } else { req.key };
        let range_end = match req.range_end.as_slice() {
            [] => None,
            [0] => Some(Vec::new()),
            end => Some(end.to_vec()),
        };
        if range_end.as_ref().is_some_and(|end| !end.is_empty() && key.as_slice() >= end.as_slice())
        {
            return refuse(ERR_EMPTY_RANGE);
        }
        let watch_id = if req.watch_id != 0 {
            if self.watches.contains_key(&req.watch_id) {
                return refuse(ERR_DUPLICATE_ID);
            }
            req.watch_id
        } else {
            // As etcd: ids count up and are not reused within a stream.
            while self.watches.contains_key(&self.next_watch_id) {
                self.next_watch_id += 1;
            }
            self.next_watch_id += 1;
            self.next_watch_id - 1
        };
        let filter = |f: i32| req.filters.contains(&f);
        let spec =
            Spec { key, range_end, no_put: filter(0), no_delete: filter(1), prev_kv: req.prev_kv };
        // From "now": after the revision through which this member holds every event of the
        // ranges the keys lie in.
        let start = (req.start_revision > 0).then_some(req.start_revision);
        let ranges = self.api.shell.shared_ranges();
        let revision = self.api.watches.hub().add(self.id(watch_id), spec.clone(), start, ranges);
        self.watches.insert(
            watch_id,
            Watching {
                spec,
                progress_notify: req.progress_notify,
                fragment: req.fragment,
                sent: false,
            },
        );
        WatchResponse {
            header: self.api.header(revision),
            watch_id,
            created: true,
            ..Default::default()
        }
    }

    /// Sends what each watcher has waiting. A watcher that is behind gets one chunk from
    /// storage per call, so that one long catch-up does not hold up the session's other
    /// watchers or its requests.
    async fn flush(&mut self) -> Result<(), Closed> {
        let mut more = false;
        let ids: Vec<i64> = self.watches.keys().copied().collect();
        for watch in ids {
            let take = self.api.watches.hub().take(self.id(watch));
            match take {
                Some(Take::Events { events, through }) if !events.is_empty() => {
                    let events = events.iter().map(|e| e.as_ref().clone()).collect();
                    self.send_events(watch, events, through).await?;
                }
                Some(Take::CatchUp { from, to }) => {
                    more |= self.catch_up(watch, from, to).await?;
                }
                Some(Take::Events { .. }) | None => {}
            }
        }
        if more {
            self.waker.notify_one();
        } else if self.progress_requested
            && self.watches.keys().all(|&w| self.api.watches.hub().is_idle(self.id(w)))
        {
            self.progress_requested = false;
            // Every watcher of the stream has been sent everything up to its hub's revision.
            let published = {
                let hubs = self.api.watches.hub();
                self.watches.keys().filter_map(|&w| hubs.published(self.id(w))).min()
            };
            let published = published.unwrap_or_else(|| self.store_revision());
            self.send(WatchResponse {
                header: self.api.header(published),
                watch_id: -1,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Sends one chunk of a lagging watcher's events from storage; true if it is still behind.
    async fn catch_up(&mut self, watch: i64, from: i64, to: i64) -> Result<bool, Closed> {
        let spec = &self.watches[&watch].spec;
        let api = &self.api;
        let (engine, ranges) = (api.engine.as_ref(), api.shell.shared_ranges());
        let read = feed::read_events(
            engine,
            ranges,
            (from, to),
            Some(spec),
            READ_BYTES_TARGET,
            spec.prev_kv,
        );
        match read {
            Ok(chunk) => {
                if !chunk.events.is_empty() {
                    self.send_events(watch, chunk.events, chunk.through).await?;
                }
                let id = self.id(watch);
                let mut hub = self.api.watches.hub();
                hub.caught_up(id, chunk.through);
                Ok(!hub.is_idle(id))
            }
            Err(Error::Compacted) => {
                // As etcd: the watch is cancelled, naming the revision it may resume from.
                self.watches.remove(&watch);
                self.api.watches.hub().remove(self.id(watch));
                let compact_revision = self.api.shell.shared_ranges().watermarks().floor;
                self.send(WatchResponse {
                    // etcd's header here carries no revision.
                    header: self.api.header(0),
                    watch_id: watch,
                    canceled: true,
                    compact_revision,
                    ..Default::default()
                })
                .await?;
                Ok(false)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read events for a watcher; closing its stream");
                let _ = self.tx.send(Err(status(e))).await;
                Err(Closed)
            }
        }
    }

    /// Sends events of one watch, split into fragments if the client asked for them and they
    /// exceed the request size limit (as etcd does).
    async fn send_events(
        &mut self,
        watch: i64,
        mut events: Vec<Event>,
        revision: i64,
    ) -> Result<(), Closed> {
        let watching = self.watches.get_mut(&watch).expect("sending for a live watch");
        watching.sent = true;
        if !watching.spec.prev_kv {
            events.iter_mut().for_each(|e| e.prev_kv = None);
        }
        // etcd's limit: the request limit plus the gRPC overhead it allows.
        let limit = self.api.limits.request_bytes_max + crate::server::GRPC_OVERHEAD_BYTES;
        let pieces = if watching.fragment { fragments(events, limit) } else { vec![events] };
        let count = pieces.len();
        for (i, events) in pieces.into_iter().enumerate() {
            self.api.watches.events_sent.fetch_add(events.len() as u64, Ordering::Relaxed);
            self.send(WatchResponse {
                header: self.api.header(revision),
                watch_id: watch,
                events,
                fragment: i + 1 < count,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Sends an empty response to each idle watch that asked for progress notifications and
    /// was sent nothing since the last tick, so the client learns the revision it is at.
    async fn progress_tick(&mut self) -> Result<(), Closed> {
        let due: Vec<i64> = self
            .watches
            .iter_mut()
            .filter_map(|(&watch, w)| {
                let quiet = !std::mem::take(&mut w.sent);
                (w.progress_notify && quiet).then_some(watch)
            })
            .collect();
        for watch in due {
            let published = {
                let hubs = self.api.watches.hub();
                hubs.published(self.id(watch)).filter(|_| hubs.is_idle(self.id(watch)))
            };
            if let Some(published) = published {
                self.send(WatchResponse {
                    header: self.api.header(published),
                    watch_id: watch,
                    ..Default::default()
                })
                .await?;
            }
        }
        Ok(())
    }
}

/// Splits events into pieces whose encoding stays below `limit` (one event per piece at least),
/// as etcd splits them.
fn fragments(events: Vec<Event>, limit: usize) -> Vec<Vec<Event>> {
    let mut pieces = vec![Vec::new()];
    let mut size = 0;
    for event in events {
        let len = event.encoded_len() + 8;
        let piece = pieces.last_mut().expect("never empty");
        if !piece.is_empty() && size + len >= limit {
            pieces.push(Vec::new());
            size = 0;
        }
        size += len;
        pieces.last_mut().expect("never empty").push(event);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::pb::mvccpb::KeyValue;

    #[test]
    fn fragments_stay_under_the_limit_with_at_least_one_event_each() {
        let event = |n: usize| Event {
            kv: Some(KeyValue { key: b"k".to_vec(), value: vec![0; n], ..Default::default() }),
            ..Default::default()
        };
        let sizes =
            |pieces: Vec<Vec<Event>>| -> Vec<usize> { pieces.iter().map(Vec::len).collect() };
        assert_eq!(sizes(fragments(vec![event(10), event(10), event(10)], 1000)), [3]);
        assert_eq!(sizes(fragments(vec![event(600), event(600), event(10)], 1000)), [1, 2]);
        assert_eq!(sizes(fragments(vec![event(5000)], 1000)), [1]);
    }
}
