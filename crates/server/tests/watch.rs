//! Watches over real processes: the same watch sessions against etcd and Strata, compared
//! response by response; exactly-once delivery across member kills and client reconnects; and
//! thousands of watchers with one stalled client.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata::pb::etcd::watch_client::WatchClient;
use strata_core::pb::etcdserverpb::watch_request::RequestUnion;
use strata_core::pb::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use support::etcd::Etcd;
use support::{Cluster, client};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// An open watch stream on one server, with a KV client beside it.
struct Session {
    kv: etcd_client::Client,
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl Session {
    async fn open(endpoint: &str) -> Self {
        let kv = client(&[endpoint.to_string()]).await;
        let mut watch = WatchClient::connect(endpoint.to_string()).await.expect("connect");
        watch = watch.max_decoding_message_size(64 * 1024 * 1024);
        let (requests, rx) = mpsc::channel(16);
        // etcd answers the call only with its first response, so the stream opens with a
        // watch of its own (an explicit id, which leaves the automatic ids untouched).
        let sentinel = WatchCreateRequest { watch_id: 999, ..create("~sentinel") };
        let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(sentinel)) };
        requests.send(request).await.expect("send");
        let responses = watch.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
        let mut session = Self { kv, requests, responses };
        let created = session.drain(Duration::from_millis(300)).await;
        assert!(created.len() == 1 && created[0].created, "{created:?}");
        session
    }

    async fn send(&self, request: RequestUnion) {
        self.requests.send(WatchRequest { request_union: Some(request) }).await.expect("send");
    }

    /// Responses until none arrives for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        while let Ok(Some(response)) =
            tokio::time::timeout(quiet, self.responses.message()).await.map(|r| r.expect("stream"))
        {
            out.push(response);
        }
        out
    }

    async fn act(&mut self, action: &Action) {
        match action {
            Action::Put(key, value) => {
                self.kv.put(key.as_bytes(), value.clone(), None).await.expect("put");
            }
            Action::DeletePrefix(prefix) => {
                let options = etcd_client::DeleteOptions::new().with_prefix();
                self.kv.delete(prefix.as_str(), Some(options)).await.expect("delete");
            }
            Action::PutTwo(a, b) => {
                let txn = etcd_client::Txn::new().and_then([
                    etcd_client::TxnOp::put(a.as_str(), "1", None),
                    etcd_client::TxnOp::put(b.as_str(), "2", None),
                ]);
                self.kv.txn(txn).await.expect("txn");
            }
            Action::Compact(revision) => {
                self.kv.compact(*revision, None).await.expect("compact");
            }
            Action::Create(create) => self.send(RequestUnion::CreateRequest(create.clone())).await,
            Action::Cancel(watch_id) => {
                self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: *watch_id }))
                    .await
            }
            Action::Progress => {
                self.send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Action {
    Put(String, Vec<u8>),
    DeletePrefix(String),
    /// One transaction writing two keys: two events at one revision.
    PutTwo(String, String),
    Compact(i64),
    Create(WatchCreateRequest),
    Cancel(i64),
    Progress,
}

fn put(key: &str, value: &str) -> Action {
    Action::Put(key.to_string(), value.as_bytes().to_vec())
}

fn create(key: &str) -> WatchCreateRequest {
    WatchCreateRequest { key: key.into(), ..Default::default() }
}

fn prefix(key: &str) -> WatchCreateRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    WatchCreateRequest { key: key.into(), range_end: end, ..Default::default() }
}

/// The script both servers run: (step name, action).
fn script() -> Vec<(&'static str, Action)> {
    let big = vec![b'v'; 1_000_000];
    vec![
        ("history: a=1", put("a", "1")),
        ("history: b=1", put("b", "1")),
        ("create: single key, from now", Action::Create(create("a"))),
        ("put: watched key", put("a", "2")),
        (
            "create: prefix with prev_kv",
            Action::Create(WatchCreateRequest { prev_kv: true, ..prefix("p/") }),
        ),
        ("put: under the prefix", put("p/x", "1")),
        ("put: overwrite under the prefix", put("p/x", "2")),
        ("delete: under the prefix", Action::DeletePrefix("p/x".into())),
        (
            "create: from revision 1 (history)",
            Action::Create(WatchCreateRequest { start_revision: 1, ..create("a") }),
        ),
        (
            "create: prefix without puts",
            Action::Create(WatchCreateRequest { filters: vec![0], ..prefix("p/") }),
        ),
        ("put: filtered out for one watch", put("p/y", "1")),
        ("delete: prefix", Action::DeletePrefix("p/".into())),
        (
            "create: explicit id",
            Action::Create(WatchCreateRequest { watch_id: 100, ..create("b") }),
        ),
        ("put: key of the explicit id", put("b", "2")),
        (
            "create: duplicate id",
            Action::Create(WatchCreateRequest { watch_id: 100, ..create("c") }),
        ),
        (
            "create: empty range",
            Action::Create(WatchCreateRequest { range_end: b"a".to_vec(), ..create("b") }),
        ),
        ("cancel: first watch", Action::Cancel(0)),
        ("put: key of a cancelled and a live watch", put("a", "3")),
        ("cancel: unknown id", Action::Cancel(555)),
        ("progress request", Action::Progress),
        (
            "create: every key (\\0 end), next auto id",
            Action::Create(WatchCreateRequest { range_end: vec![0], ..create("\0") }),
        ),
        ("txn: two keys at one revision", Action::PutTwo("t1".into(), "t2".into())),
        (
            "create: without deletes, from history",
            Action::Create(WatchCreateRequest {
                start_revision: 2,
                filters: vec![1],
                ..prefix("p/")
            }),
        ),
        (
            "create: future start revision",
            Action::Create(WatchCreateRequest { start_revision: 100, ..create("f") }),
        ),
        ("compact", Action::Compact(8)),
        (
            "create: below the compaction",
            Action::Create(WatchCreateRequest { start_revision: 5, ..create("a") }),
        ),
        (
            "create: at the compaction",
            Action::Create(WatchCreateRequest { start_revision: 8, ..create("a") }),
        ),
        ("big: 1", Action::Put("big/1".into(), big.clone())),
        ("big: 2", Action::Put("big/2".into(), big.clone())),
        ("big: 3", Action::Put("big/3".into(), big)),
        (
            "create: fragmenting, with prev_kv",
            Action::Create(WatchCreateRequest { prev_kv: true, fragment: true, ..prefix("big/") }),
        ),
        ("delete: 3 MB of previous values at one revision", Action::DeletePrefix("big/".into())),
    ]
}

/// A response in comparable form. Cluster and member ids and the term differ between the two
/// servers and are left out; values are summarised by length and first byte.
fn normalize(r: &WatchResponse) -> Value {
    let kv = |kv: &Option<strata_core::pb::mvccpb::KeyValue>| {
        kv.as_ref().map(|kv| {
            json!({
                "key": String::from_utf8_lossy(&kv.key),
                "value": format!("{}×{}", kv.value.first().map_or('-', |b| *b as char), kv.value.len()),
                "create": kv.create_revision, "mod": kv.mod_revision, "version": kv.version,
            })
        })
    };
    let events: Vec<Value> = r
        .events
        .iter()
        .map(|e| json!({ "type": e.r#type, "kv": kv(&e.kv), "prev_kv": kv(&e.prev_kv) }))
        .collect();
    json!({
        "revision": r.header.as_ref().map(|h| h.revision),
        "watch_id": r.watch_id,
        "created": r.created,
        "canceled": r.canceled,
        "compact_revision": r.compact_revision,
        "cancel_reason": r.cancel_reason,
        "fragment": r.fragment,
        "events": events,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sessions_match_etcd() {
    let etcd = Etcd::start("w1");
    let strata = Cluster::start(1);
    let mut sides =
        [Session::open(&etcd.endpoint).await, Session::open(&strata.endpoints()[0]).await];
    let mut mismatches = Vec::new();
    for (name, action) in script() {
        let [etcd_side, strata_side] = &mut sides;
        let quiet = Duration::from_millis(300);
        let (etcd_out, strata_out) = tokio::join!(
            async {
                etcd_side.act(&action).await;
                etcd_side.drain(quiet).await
            },
            async {
                strata_side.act(&action).await;
                strata_side.drain(quiet).await
            }
        );
        // Order is promised per watch, not across the watches of a stream.
        let by_watch = |responses: Vec<WatchResponse>| {
            let mut out: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
            for r in &responses {
                out.entry(r.watch_id).or_default().push(normalize(r));
            }
            out
        };
        let (etcd_out, strata_out) = (by_watch(etcd_out), by_watch(strata_out));
        if etcd_out != strata_out {
            mismatches.push(format!(
                "step `{name}`:\n  etcd:   {}\n  strata: {}",
                json!(etcd_out),
                json!(strata_out)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} step(s) differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// One event as a watcher saw it: key, revision, version (0 for a deletion).
type Seen = (String, i64, i64);

fn seen(event: &etcd_client::Event) -> Seen {
    let kv = event.kv().expect("events carry a key");
    (String::from_utf8_lossy(kv.key()).into_owned(), kv.mod_revision(), kv.version())
}

/// Watches `prefix` on one member from `start` and appends what it sees to `out` until the
/// stream breaks (the member died) or an event at `until` or later has arrived.
async fn watch_until(
    endpoint: &str,
    prefix: &str,
    start: i64,
    until: &std::sync::atomic::AtomicI64,
    out: &mut Vec<Seen>,
) {
    use std::sync::atomic::Ordering;
    let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else { return };
    let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(start);
    let Ok(mut stream) = client.watch(prefix, Some(options)).await else { return };
    loop {
        let done = |out: &Vec<Seen>| {
            let until = until.load(Ordering::Acquire);
            until > 0 && out.last().is_some_and(|e| e.1 >= until)
        };
        if done(out) {
            return;
        }
        match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
            Ok(Ok(Some(response))) => {
                assert!(!response.canceled(), "watch cancelled: {response:?}");
                out.extend(response.events().iter().map(seen));
            }
            Ok(_) => return, // the member went away
            Err(_) => {}     // quiet: check whether we are done
        }
    }
}

/// Puts `key` until a member acknowledges it, through member kills; returns its revision. A
/// retried put may have been applied before (its answer was lost): the key then has two events.
async fn put_until_acked(kv: &mut etcd_client::Client, key: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match kv.put(key, "v", None).await {
            Ok(response) => return response.header().expect("header").revision(),
            Err(e) => assert!(Instant::now() < deadline, "put {key} kept failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A watcher that follows a prefix while the member it is connected to is killed again and
/// again (and with it, sometimes, the leader) sees every event exactly once and in order: on
/// each break it reconnects to another member and resumes from the revision after the last one
/// it saw, as etcd's clients do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_once_and_in_order_across_kills_and_reconnects() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    let mut cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let watched = Arc::new(AtomicUsize::new(0));
    let last_revision = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let writer = {
        let endpoints = endpoints.clone();
        let (last_revision, stop) = (last_revision.clone(), stop.clone());
        tokio::spawn(async move {
            let mut kv = client(&endpoints).await;
            let mut acked = Vec::new();
            // Writes go on until the kills are over.
            for i in 0.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let key = format!("w/{i:05}");
                acked.push((key.clone(), put_until_acked(&mut kv, &key).await));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last_revision.store(acked.last().expect("writes").1, Ordering::Release);
            acked
        })
    };
    let watcher = {
        let (endpoints, watched, last_revision) =
            (endpoints.clone(), watched.clone(), last_revision.clone());
        tokio::spawn(async move {
            let mut out: Vec<Seen> = Vec::new();
            let mut reconnects = 0;
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let member = watched.load(Ordering::Acquire);
                let start = out.last().map_or(1, |e| e.1 + 1);
                watch_until(&endpoints[member], "w/", start, &last_revision, &mut out).await;
                let until = last_revision.load(Ordering::Acquire);
                if until > 0 && out.last().is_some_and(|e| e.1 >= until) {
                    return (out, reconnects);
                }
                assert!(Instant::now() < deadline, "the watcher did not catch up");
                // The member broke the stream: go to the next one.
                reconnects += 1;
                watched.store((member + 1) % endpoints.len(), Ordering::Release);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Kill the watched member four times, and the leader twice, while the writer runs.
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let victim = if round % 3 == 2 {
            support::leader_index(&endpoints).await.unwrap_or(0)
        } else {
            watched.load(Ordering::Acquire)
        };
        cluster.kill(victim);
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.spawn(victim);
    }
    stop.store(true, Ordering::Release);
    let acked = writer.await.expect("writer");
    let (events, reconnects) = watcher.await.expect("watcher");

    // What the store says happened, read back in one piece by a fresh watcher from revision 1.
    let until = AtomicI64::new(last_revision.load(Ordering::Acquire));
    let mut history = Vec::new();
    cluster.wait_for_leader(Duration::from_secs(20));
    watch_until(&endpoints[0], "w/", 1, &until, &mut history).await;

    assert!(reconnects >= 4, "the watcher should have been cut off repeatedly: {reconnects}");
    assert!(
        events.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions must strictly increase (no duplicates, in order)"
    );
    assert_eq!(events, history, "the watcher saw exactly the store's history");
    for (key, revision) in &acked {
        assert!(
            events.iter().any(|e| &e.0 == key && e.1 == *revision),
            "acknowledged write {key}@{revision} missing from the watch"
        );
    }
    println!(
        "{} events, {} acknowledged writes, {reconnects} reconnects",
        events.len(),
        acked.len()
    );
}

/// Latency percentiles of a sample, in milliseconds: (p50, p99, max).
fn percentiles(mut sample: Vec<Duration>) -> (f64, f64, f64) {
    sample.sort();
    let at = |q: f64| {
        let i = ((sample.len() as f64 - 1.0) * q).round() as usize;
        sample[i].as_secs_f64() * 1e3
    };
    (at(0.5), at(0.99), at(1.0))
}

/// 2,000 watchers on ten streams, plus one client that opens a watch on everything and then
/// never reads. The stalled client must not slow the others' events or the writers, and what
/// the member holds for it must stay under the per-watcher limit: its watcher falls behind (to
/// catch up from storage later) instead of buffering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_holds_back_no_one_and_stays_bounded() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const STREAMS: usize = 10;
    const KEYS_PER_PHASE: usize = 1000;
    const VALUE_BYTES: usize = 8 * 1024;
    const WRITERS: usize = 4;
    let cluster = Cluster::start(1);
    let endpoint = cluster.endpoints()[0].clone();
    let key = |i: usize| format!("w/{i:04}");

    // Ten streams, each with a prefix watcher (id 0) and 200 single-key watchers.
    let mut kv = client(std::slice::from_ref(&endpoint)).await;
    let arrivals: Arc<Mutex<Vec<HashMap<String, Instant>>>> =
        Arc::new(Mutex::new(vec![HashMap::new(); STREAMS]));
    let singles_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut receivers = Vec::new();
    for s in 0..STREAMS {
        let options = etcd_client::WatchOptions::new().with_prefix();
        let mut stream = kv.watch("w/", Some(options)).await.expect("watch");
        for i in (s..2 * KEYS_PER_PHASE).step_by(STREAMS) {
            stream.watch(key(i), None).await.expect("watch a key");
        }
        let (arrivals, singles_seen) = (arrivals.clone(), singles_seen.clone());
        receivers.push(tokio::spawn(async move {
            let (mut prefix_events, mut single_events) = (0, 0);
            while prefix_events < 2 * KEYS_PER_PHASE || single_events < 2 * KEYS_PER_PHASE / STREAMS
            {
                let Ok(Some(response)) = stream.message().await else { panic!("stream broke") };
                let now = Instant::now();
                for event in response.events() {
                    let key = String::from_utf8_lossy(event.kv().unwrap().key()).into_owned();
                    if response.watch_id() == 0 {
                        prefix_events += 1;
                        arrivals.lock().unwrap()[s].insert(key, now);
                    } else {
                        single_events += 1;
                        singles_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            stream
        }));
    }
    let created = Instant::now() + Duration::from_secs(20);
    while support::metric(&endpoint, "strata_watchers") != Some((STREAMS * 201) as f64) {
        assert!(Instant::now() < created, "watchers were not all created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writers put the keys of a phase; returns when each put was sent and how long it took.
    let write_phase = |phase: usize| {
        let endpoint = endpoint.clone();
        async move {
            let value = vec![b'x'; VALUE_BYTES];
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let (endpoint, value) = (endpoint.clone(), value.clone());
                tasks.push(tokio::spawn(async move {
                    let mut kv = client(&[endpoint]).await;
                    let mut out = Vec::new();
                    for i in
                        (phase * KEYS_PER_PHASE + w..(phase + 1) * KEYS_PER_PHASE).step_by(WRITERS)
                    {
                        let sent = Instant::now();
                        kv.put(key(i), value.clone(), None).await.expect("put");
                        out.push((key(i), sent, sent.elapsed()));
                    }
                    out
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("writer"));
            }
            all
        }
    };

    // Phase 1: every watcher keeps up.
    let baseline = write_phase(0).await;

    // Phase 2: one more client watches everything and never reads its stream.
    let mut stalled = WatchClient::connect(endpoint.clone()).await.expect("connect");
    let (stalled_requests, rx) = mpsc::channel(1);
    stalled_requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    let stalled_stream = stalled.watch(ReceiverStream::new(rx)).await.expect("watch").into_inner();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (endpoint, sampling) = (endpoint.clone(), sampling.clone());
        tokio::task::spawn_blocking(move || {
            let (mut largest, mut lagging) = (0.0f64, 0.0f64);
            while sampling.load(std::sync::atomic::Ordering::Acquire) {
                let gauge = |name| support::metric(&endpoint, name).unwrap_or(0.0);
                largest = largest.max(gauge("strata_watch_largest_buffer_bytes"));
                lagging = gauge("strata_watchers_lagging");
                std::thread::sleep(Duration::from_millis(20));
            }
            (largest, lagging)
        })
    };
    let stalled_phase = write_phase(1).await;

    // Every live watcher saw every event.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut streams = Vec::new();
    for receiver in receivers {
        let remaining = deadline.saturating_duration_since(Instant::now());
        streams.push(
            tokio::time::timeout(remaining, receiver).await.expect("events stopped").unwrap(),
        );
    }
    let singles = singles_seen.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(singles, 2 * KEYS_PER_PHASE, "each single-key watcher saw its key's event");
    sampling.store(false, std::sync::atomic::Ordering::Release);
    let (largest_buffer, lagging) = sampler.await.unwrap();

    let latencies = |writes: &[(String, Instant, Duration)]| {
        let arrivals = arrivals.lock().unwrap();
        let events: Vec<Duration> = writes
            .iter()
            .flat_map(|(key, sent, _)| arrivals.iter().map(move |a| a[key].duration_since(*sent)))
            .collect();
        let puts: Vec<Duration> = writes.iter().map(|w| w.2).collect();
        (percentiles(events), percentiles(puts))
    };
    let (events_before, puts_before) = latencies(&baseline);
    let (events_stalled, puts_stalled) = latencies(&stalled_phase);
    println!(
        "event latency p50/p99/max ms: {events_before:.1?} without, {events_stalled:.1?} with a stalled watcher\n\
         put latency p50/p99/max ms: {puts_before:.1?} without, {puts_stalled:.1?} with\n\
         largest watcher buffer: {largest_buffer} bytes; lagging watchers: {lagging}"
    );
    // The stalled client's watcher fell behind rather than buffering without limit.
    assert!(lagging >= 1.0, "the stalled watcher should be lagging");
    let limit = (strata_core::watch::WATCHER_BUFFER_BYTES_MAX + VALUE_BYTES + 1024) as f64;
    assert!(largest_buffer <= limit, "a watcher buffered {largest_buffer} bytes (limit {limit})");
    // Loose bounds: the machine is shared and noisy, but a watcher that held others back would
    // blow far past them.
    let flat = |before: (f64, f64, f64), after: (f64, f64, f64)| after.1 <= 4.0 * before.1 + 200.0;
    assert!(flat(events_before, events_stalled), "event latency rose with a stalled watcher");
    assert!(flat(puts_before, puts_stalled), "put latency rose with a stalled watcher");
    drop((stalled_stream, stalled_requests, streams));
}

/// An idle watch that asked for progress notifications gets an empty response carrying the
/// current revision every interval; a watch that did not ask gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watches_get_progress_notifications() {
    let cluster =
        Cluster::start_with(1, &["--experimental-watch-progress-notify-interval", "200ms"]);
    let mut kv = client(&cluster.endpoints()).await;
    let revision = kv.put("a", "1", None).await.unwrap().header().unwrap().revision();
    let options = etcd_client::WatchOptions::new().with_progress_notify();
    let mut stream = kv.watch("a", Some(options)).await.expect("watch");
    stream.watch("b", None).await.expect("watch b");
    let mut progress = 0;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let Ok(Ok(Some(response))) =
            tokio::time::timeout(Duration::from_millis(300), stream.message()).await
        else {
            continue;
        };
        if response.created() {
            continue;
        }
        assert_eq!(response.watch_id(), 0, "only the watch that asked: {response:?}");
        assert!(response.events().is_empty());
        assert_eq!(response.header().unwrap().revision(), revision);
        progress += 1;
    }
    assert!(progress >= 3, "expected a notification every 200 ms, got {progress} in 1.5 s");
}
