//! Admin splits on a cluster of real processes (pre-split into two ranges, so revisions come
//! from the oracle): `strata range split KEY` while a writer runs loses no write, watchers of
//! keys on both sides of the split point are given every event once in revision order,
//! transactions across the new boundary commit atomically, a restarted member reopens every
//! range, and a member that was down through the split catches up on the new range.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions, WatchStream};
use support::{Cluster, STRATA, client, put_retrying, run};

/// Every range as `strata ranges -w json` lists it: (id, start, end).
fn ranges(endpoints: &str) -> Vec<(u64, String, String)> {
    let (ok, out, err) = run(STRATA, &["ranges", "-w", "json", "--endpoints", endpoints]);
    assert!(ok, "strata ranges failed: {err}");
    let ranges: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    (ranges.iter())
        .map(|r| {
            let text = |field: &str| r[field].as_str().unwrap_or_default().to_string();
            (r["range_id"].as_u64().unwrap(), text("start_key"), text("end_key"))
        })
        .collect()
}

fn split(endpoints: &str, key: &str) -> String {
    let (ok, out, err) = run(STRATA, &["range", "split", key, "--endpoints", endpoints]);
    assert!(ok, "strata range split {key} failed: {err}");
    out
}

/// The next `count` events of a watch, as (key, revision).
async fn events(stream: &mut WatchStream, count: usize) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} events of {count}: {seen:?}", seen.len()))
            .expect("watch stream")
            .expect("watch open");
        for event in message.events() {
            let kv = event.kv().expect("a key");
            seen.push((kv.key_str().unwrap().to_string(), kv.mod_revision()));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_under_writes_lose_nothing_and_watchers_see_every_event_once() {
    let mut cluster = Cluster::start_with(3, &["--experimental-initial-split-keys", "m"]);
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();
    let csv = cluster.endpoints_csv();

    let mut c = client(&endpoints[0..1]).await;
    let mut every = c.watch("", Some(WatchOptions::new().with_all_keys())).await.unwrap();
    let mut c = client(&endpoints[1..2]).await;
    let mut of_x = c.watch("x", Some(WatchOptions::new().with_prefix())).await.unwrap();

    // A writer through every member, while the range of x… is split twice.
    let writer = {
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..150 {
                let mut c = client(std::slice::from_ref(&endpoints[i % 3])).await;
                let key = format!("x{:03}", (i * 7) % 150);
                written.push((key.clone(), put_retrying(&mut c, &key, format!("v{i}")).await));
            }
            written
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = split(&csv, "x050");
    assert!(first.contains("[x050, (end))"), "{first}");
    let second = split(&csv, "x100");
    assert!(second.contains("[x100, (end))"), "{second}");
    let written = writer.await.unwrap();

    // Four ranges now, tiling the key space, on every member.
    let spans: Vec<(String, String)> = ranges(&csv).into_iter().map(|(_, s, e)| (s, e)).collect();
    let expected = [("", "m"), ("m", "x050"), ("x050", "x100"), ("x100", "")];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(s, e)| (s.to_string(), e.to_string())).collect();
    assert_eq!(spans, expected);
    let mut revisions: Vec<i64> = written.iter().map(|(_, r)| *r).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), written.len(), "a revision was given twice");

    // Every write is there, on every member (a serializable read: its own replicas).
    let last = written.iter().map(|(_, r)| *r).max().unwrap();
    for endpoint in &endpoints {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let options = GetOptions::new().with_prefix().with_serializable();
            let got = c.get("x", Some(options)).await.unwrap();
            let newest = got.kvs().iter().map(|kv| kv.mod_revision()).max().unwrap_or(0);
            if got.count() == 150 && newest == last {
                break;
            }
            assert!(Instant::now() < deadline, "{endpoint}: {} keys, newest {newest}", got.count());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A transaction across the new boundaries commits all of its writes at one revision.
    let mut c = client(&endpoints).await;
    let txn = Txn::new()
        .when([Compare::version("x010", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("x010", "t", None), TxnOp::put("x120", "t", None)]);
    let done = c.txn(txn).await.unwrap();
    assert!(done.succeeded());
    let at = done.header().unwrap().revision();
    for key in ["x010", "x120"] {
        let got = c.get(key, None).await.unwrap();
        assert_eq!(got.kvs()[0].mod_revision(), at, "{key}");
    }

    // The watchers saw every write once, in revision order, through both splits.
    let mut expected = written.clone();
    expected.push(("x010".into(), at));
    expected.push(("x120".into(), at));
    expected.sort_by_key(|(key, revision)| (*revision, key.clone()));
    assert_eq!(events(&mut every, expected.len()).await, expected);
    assert_eq!(events(&mut of_x, expected.len()).await, expected);

    // A restarted member opens all four ranges and serves them.
    cluster.kill(2);
    cluster.spawn(2);
    cluster.wait_for_leader(Duration::from_secs(30));
    let mut c = client(&endpoints[2..3]).await;
    let got = c.get("x", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(got.count(), 150);
    assert_eq!(ranges(&endpoints[2]).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_through_a_split_catches_up_on_the_new_range() {
    // A tiny log: the split range's log is compacted past the split while the member is down.
    let mut cluster = Cluster::start_with(
        3,
        &["--experimental-initial-split-keys", "m", "--snapshot-count", "20"],
    );
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();
    cluster.kill(2);
    let up = endpoints[..2].join(",");
    let mut c = client(&endpoints[..2]).await;
    for i in 0..40 {
        put_retrying(&mut c, &format!("y{i:03}"), "before").await;
    }
    split(&up, "y020");
    let mut last = 0;
    for i in 0..80 {
        last = put_retrying(&mut c, &format!("y{:03}", i % 40), format!("after{i}")).await;
    }
    cluster.spawn(2);
    let mut lagging = client(&endpoints[2..]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let options = GetOptions::new().with_prefix().with_serializable();
        if let Ok(got) = lagging.get("y", Some(options)).await {
            let newest = got.kvs().iter().map(|kv| kv.mod_revision()).max().unwrap_or(0);
            if got.count() == 40 && newest == last {
                assert!(got.kvs().iter().all(|kv| kv.value_str().unwrap().starts_with("after")));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member never caught up:\n{}",
            cluster.log(2)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new range's log starts past what the member missed: it took a snapshot.
    let snapshots = support::metric(&endpoints[2], "strata_snapshots_applied_total");
    assert!(snapshots.is_some_and(|n| n >= 1.0), "caught up without a snapshot: {snapshots:?}");
    let mine = ranges(&endpoints[2]);
    assert_eq!(mine.len(), 3, "{mine:?}");
    assert!(mine.iter().any(|(_, start, end)| start == "y020" && end.is_empty()), "{mine:?}");
}
