//! A cluster of real processes pre-split into two ranges (experimental), with etcd-client:
//! writes in either range take revisions from the meta leader's oracle over the peer transport
//! — unique, increasing in real time, through a failover of the meta leader — reads see them
//! through every member, a read over both ranges is one snapshot with etcd's limit, sort and
//! count, a watch over both ranges is given every event once in revision order (live, and from
//! an old revision), compaction reaches both ranges, and a lease attaches keys of both ranges
//! and is revoked (or expires) in both at one revision.

mod support;

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, LeaseTimeToLiveOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchOptions, WatchStream,
};
use support::{Cluster, client, leader_index, put_retrying};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ranges_share_one_revision_and_one_snapshot() {
    let mut cluster = Cluster::start_with(3, &["--experimental-initial-split-keys", "m"]);
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();

    // Watches opened before the writes: of every key (both ranges) on one member, of range 2's
    // keys on another.
    let mut c = client(&endpoints[0..1]).await;
    let mut every = c.watch("", Some(WatchOptions::new().with_all_keys())).await.unwrap();
    let mut c = client(&endpoints[1..2]).await;
    let mut range_2 = c.watch("x", Some(WatchOptions::new().with_prefix())).await.unwrap();

    // Writes in both ranges, through every member, one after another: each revision is new and
    // above every one before it (it follows real time), whichever range took it.
    let mut revisions = Vec::new();
    for i in 0..12 {
        let mut c = client(std::slice::from_ref(&endpoints[i % 3])).await;
        let key = if i % 2 == 0 { format!("a{i:02}") } else { format!("x{i:02}") };
        let revision = put_retrying(&mut c, &key, &format!("v{i}")).await;
        assert!(
            revisions.last().is_none_or(|last| revision > *last),
            "{revisions:?} then {revision}"
        );
        revisions.push(revision);
    }
    let last = *revisions.last().unwrap();

    // Each watcher is given every event it watches once, in revision order, including the last
    // one (in range 2), given once range 1 is known to hold nothing below it.
    let written: Vec<(String, i64)> = (0..12)
        .map(|i| if i % 2 == 0 { format!("a{i:02}") } else { format!("x{i:02}") })
        .zip(revisions.iter().copied())
        .collect();
    assert_eq!(events(&mut every, 12).await, written);
    let in_range_2 = written.iter().filter(|(k, _)| k.starts_with('x')).cloned();
    assert_eq!(events(&mut range_2, 6).await, in_range_2.collect::<Vec<_>>());
    // From an old revision, on the third member: read from its history.
    let mut c = client(&endpoints[2..3]).await;
    let options = WatchOptions::new().with_all_keys().with_start_revision(revisions[0]);
    let mut from_history = c.watch("", Some(options)).await.unwrap();
    assert_eq!(events(&mut from_history, 12).await, written);
    // The member that gave the last event has closed range 1 (idle since) past it.
    let closed = |range: u64| {
        let name = format!("strata_range_closed_revision{{range=\"{range}\"}}");
        support::metric(&endpoints[0], &name).expect("a closed revision per range") as i64
    };
    assert!(closed(1) >= last && closed(2) >= last, "{} {} {last}", closed(1), closed(2));

    // Every member reads both ranges; a read over both is one snapshot at one revision.
    for endpoint in &endpoints {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        assert_eq!(c.get("x01", None).await.unwrap().kvs()[0].value(), b"v1");
        let all = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
        assert_eq!(all.count(), 12, "{endpoint}");
        assert!(all.header().unwrap().revision() >= last);
        let keys: Vec<&str> = all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "key order across ranges");
        assert_eq!(keys.first(), Some(&"a00"));
        assert_eq!(keys.last(), Some(&"x11"));
    }
    let mut c = client(&endpoints).await;
    let limited = c.get("", Some(GetOptions::new().with_all_keys().with_limit(3))).await.unwrap();
    let keys: Vec<&str> = limited.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!((keys, limited.more(), limited.count()), (vec!["a00", "a02", "a04"], true, 12));
    let options = GetOptions::new()
        .with_all_keys()
        .with_sort(SortTarget::Key, SortOrder::Descend)
        .with_limit(2);
    let last_two = c.get("", Some(options)).await.unwrap();
    let keys: Vec<&str> = last_two.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, ["x11", "x09"]);
    let by_mod = GetOptions::new().with_all_keys().with_sort(SortTarget::Mod, SortOrder::Descend);
    let newest = c.get("", Some(by_mod.with_limit(1))).await.unwrap();
    assert_eq!(newest.kvs()[0].mod_revision(), last);
    let counted = c.get("", Some(GetOptions::new().with_all_keys().with_count_only())).await;
    assert_eq!(counted.unwrap().count(), 12);

    // Within one range, transactions work as in etcd (across ranges: `across_ranges.rs`).
    let txn = Txn::new()
        .when([Compare::value("x01", CompareOp::Equal, "v1")])
        .and_then([TxnOp::put("x03", "swapped", None)]);
    assert!(c.txn(txn).await.unwrap().succeeded());

    // A lease attaches keys of every range; revoking it deletes them all at one revision.
    let lease = c.lease_grant(60, None).await.unwrap().id();
    let with_lease = Some(etcd_client::PutOptions::new().with_lease(lease));
    c.put("a-leased", "v", with_lease.clone()).await.unwrap();
    c.put("x-leased", "v", with_lease.clone()).await.unwrap();
    let listed = c.lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()));
    let listed = listed.await.unwrap();
    assert_eq!(listed.keys(), [&b"a-leased"[..], &b"x-leased"[..]]);
    let revoked = c.lease_revoke(lease).await.unwrap().header().unwrap().revision();
    for key in ["a-leased", "x-leased"] {
        assert_eq!(c.get(key, None).await.unwrap().count(), 0, "{key}");
        let before = c.get(key, Some(GetOptions::new().with_revision(revoked - 1))).await;
        assert_eq!(before.unwrap().count(), 1, "{key} until the revocation's revision");
    }
    let refused = c.put("x-leased", "v", with_lease).await.unwrap_err().to_string();
    assert!(refused.contains("requested lease not found"), "{refused}");
    // One that expires: the meta leader's lease clock revokes it across both ranges, and a
    // watcher is given both deletions at one revision.
    let short = c.lease_grant(1, None).await.unwrap().id();
    let with_short = Some(etcd_client::PutOptions::new().with_lease(short));
    let mut w = client(&endpoints[1..2]).await;
    let mut expiring = w.watch("", Some(WatchOptions::new().with_all_keys())).await.unwrap();
    c.put("b-expiring", "v", with_short.clone()).await.unwrap();
    c.put("y-expiring", "v", with_short).await.unwrap();
    let expired = tokio::time::timeout(Duration::from_secs(30), async {
        let mut deleted = Vec::new();
        while deleted.len() < 2 {
            let response = expiring.message().await.unwrap().expect("the watch stays open");
            for event in response.events() {
                if event.event_type() == etcd_client::EventType::Delete {
                    let kv = event.kv().unwrap();
                    deleted.push((kv.key_str().unwrap().to_string(), kv.mod_revision()));
                }
            }
        }
        deleted
    });
    let deleted = expired.await.expect("the expired lease's keys are deleted");
    assert_eq!((deleted[0].0.as_str(), deleted[1].0.as_str()), ("b-expiring", "y-expiring"));
    assert_eq!(deleted[0].1, deleted[1].1, "one revision: {deleted:?}");

    // Compaction at the cluster's newest revision (range 2's, above anything range 1 wrote)
    // reaches both ranges: reads below it are refused in either, once more is refused, and one
    // past the cluster's revision too.
    let physical = Some(etcd_client::CompactionOptions::new().with_physical());
    c.compact(last, physical).await.unwrap();
    for key in ["a00", "x01"] {
        let old = c.get(key, Some(GetOptions::new().with_revision(revisions[1]))).await;
        let error = old.unwrap_err().to_string();
        assert!(error.contains("required revision has been compacted"), "{key}: {error}");
    }
    assert_eq!(c.get("x11", None).await.unwrap().kvs()[0].value(), b"v11");
    let again = c.compact(last, None).await.unwrap_err().to_string();
    assert!(again.contains("required revision has been compacted"), "{again}");
    let future = c.compact(last + 1_000_000, None).await.unwrap_err().to_string();
    assert!(future.contains("required revision is a future revision"), "{future}");

    // The meta leader, which runs the oracle, fails: range 2 goes on writing, with revisions
    // above every one handed out before.
    let meta_leader = leader_index(&endpoints).await.expect("a meta leader");
    cluster.kill(meta_leader);
    let survivors: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != meta_leader)
        .map(|(_, e)| e.clone())
        .collect();
    let mut c = client(&survivors).await;
    let after = put_retrying(&mut c, "x99", "after the failover").await;
    assert!(after > last, "{after} after {last}");
    let again = put_retrying(&mut c, "a99", "meta range too").await;
    assert!(again > after, "{again} after {after}");
    let all = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(all.count(), 14);
}

/// Takes events from a watch until `count` have arrived (each as key and revision), then makes
/// sure no more come for a moment.
async fn events(stream: &mut WatchStream, count: usize) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let quiet = Duration::from_millis(300);
    loop {
        let wait = if seen.len() < count {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            quiet
        };
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(response))) => {
                assert!(!response.canceled(), "watch cancelled: {response:?}");
                for event in response.events() {
                    let kv = event.kv().expect("an event's key");
                    seen.push((kv.key_str().unwrap().to_string(), kv.mod_revision()));
                }
            }
            Ok(other) => panic!("the watch ended: {other:?} after {seen:?}"),
            Err(_) if seen.len() < count => panic!("{count} events expected, {seen:?} came"),
            Err(_) => return seen,
        }
    }
}
