//! End to end over real processes with the `etcd-client` crate: a 3-member cluster, requests
//! sent to every member (followers forward to the leader), etcd's semantics and errors.

mod support;

use etcd_client::{
    CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};
use support::{Cluster, client, put_retrying};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_through_every_member() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    // Each member serves writes and reads, wherever the leader is.
    for (i, endpoint) in endpoints.iter().enumerate() {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        let key = format!("member/{i}");
        c.put(key.as_str(), format!("v{i}"), None).await.unwrap();
        let got = c.get(key.as_str(), None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), format!("v{i}").as_bytes());
    }
    // Every member sees every write (linearizable reads).
    for endpoint in &endpoints {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        let got = c.get("member/", Some(GetOptions::new().with_prefix())).await.unwrap();
        assert_eq!(got.count(), 3, "at {endpoint}");
    }
    let header = client(&endpoints).await.get("member/0", None).await.unwrap();
    let header = header.header().unwrap();
    assert_ne!(header.cluster_id(), 0);
    assert_ne!(header.member_id(), 0);
    assert!(header.raft_term() >= 1);
}

/// Answers of every size cross the client port intact: one over h2's 1 KiB copy limit, one over
/// the 64 KiB a connection gathers before a send, and a range of many answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_and_many_in_flight_arrive_whole() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let mut c = client(&endpoints).await;
    let values: Vec<Vec<u8>> = [300, 1500, 100_000, 1_000_000]
        .iter()
        .map(|&n| (0..n).map(|i| (i % 251) as u8).collect())
        .collect();
    for (i, value) in values.iter().enumerate() {
        // The first write may meet the first election's leader change.
        put_retrying(&mut c, &format!("big/{i}"), value).await;
    }
    for endpoint in &endpoints {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        for (i, value) in values.iter().enumerate() {
            let got = c.get(format!("big/{i}"), None).await.unwrap();
            assert_eq!(got.kvs()[0].value(), &value[..], "big/{i} at {endpoint}");
        }
        let all = c.get("big/", Some(GetOptions::new().with_prefix())).await.unwrap();
        let sizes: Vec<usize> = all.kvs().iter().map(|kv| kv.value().len()).collect();
        assert_eq!(sizes, vec![300, 1500, 100_000, 1_000_000], "at {endpoint}");
    }
    // Many requests in flight on one connection: their answers share sends.
    let gets = (0..200).map(|i| {
        let mut c = c.clone();
        tokio::spawn(async move { c.get(format!("big/{}", i % 4), None).await })
    });
    for (i, get) in gets.enumerate() {
        let got = get.await.unwrap().unwrap();
        assert_eq!(got.kvs()[0].value(), &values[i % 4][..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_history_and_compaction() {
    let cluster = Cluster::start(3);
    let mut c = client(&cluster.endpoints()).await;
    let r1 = c.put("k", "1", None).await.unwrap().header().unwrap().revision();
    let r2 = c.put("k", "2", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(r2.prev_key().unwrap().value(), b"1");
    let r2 = r2.header().unwrap().revision();
    assert_eq!(r2, r1 + 1);
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (r1, r2, 2));
    // History read.
    let old = c.get("k", Some(GetOptions::new().with_revision(r1))).await.unwrap();
    assert_eq!(old.kvs()[0].value(), b"1");
    // Delete, then recreate: version restarts.
    let deleted = c.delete("k", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(deleted.deleted(), 1);
    assert_eq!(deleted.prev_kvs()[0].value(), b"2");
    c.put("k", "3", None).await.unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.version(), 1);
    // Compaction: old revisions become unreadable, current ones stay.
    c.compact(r2, None).await.unwrap();
    let err = c.get("k", Some(GetOptions::new().with_revision(r1))).await.unwrap_err();
    assert!(err.to_string().contains("required revision has been compacted"), "{err}");
    let at_r2 = c.get("k", Some(GetOptions::new().with_revision(r2))).await.unwrap();
    assert_eq!(at_r2.kvs()[0].value(), b"2");
    let err = c.get("k", Some(GetOptions::new().with_revision(1_000_000))).await.unwrap_err();
    assert!(err.to_string().contains("required revision is a future revision"), "{err}");
}

/// A compaction's deletions go in steps (20 records each here): reads act on it at once, writes
/// go on between the steps, `physical` waits for them, and once every member is done their
/// stores are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_deletes_in_steps() {
    let cluster = Cluster::start_with(3, &["--experimental-compaction-batch-limit", "20"]);
    let endpoints = cluster.endpoints();
    let mut c = client(&endpoints[..1]).await;
    for i in 0..300 {
        c.put(format!("k{}", i % 10), i.to_string(), None).await.unwrap();
    }
    let revision = c.get("k0", None).await.unwrap().header().unwrap().revision();
    c.compact(revision - 50, None).await.unwrap();
    let pending = |endpoint: &str| support::metric(endpoint, "strata_mvcc_compaction_pending");
    assert_eq!(pending(&endpoints[0]), Some(1.0), "600 records take 30 steps of 20");
    let err = c.get("k0", Some(GetOptions::new().with_revision(revision - 51))).await.unwrap_err();
    assert!(err.to_string().contains("required revision has been compacted"), "{err}");
    let at = c.get("k0", Some(GetOptions::new().with_revision(revision - 50))).await.unwrap();
    assert_eq!(at.kvs()[0].value(), b"240", "put 240 was the last of k0 by revision 251");
    c.put("during", "the steps", None).await.unwrap();

    c.compact(revision - 10, Some(CompactionOptions::new().with_physical())).await.unwrap();
    assert_eq!(pending(&endpoints[0]), Some(0.0), "physical compaction waits for its deletions");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while endpoints.iter().any(|e| pending(e) != Some(0.0)) {
        assert!(std::time::Instant::now() < deadline, "members did not finish compacting");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut hashes = Vec::new();
    for endpoint in &endpoints {
        hashes.push(client(std::slice::from_ref(endpoint)).await.hash().await.unwrap().hash());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "members' stores differ: {hashes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compare_and_swap() {
    let cluster = Cluster::start(3);
    let mut c = client(&cluster.endpoints()).await;
    c.put("counter", "0", None).await.unwrap();
    let swap = |from: &str, to: &str| {
        Txn::new()
            .when(vec![Compare::value("counter", CompareOp::Equal, from)])
            .and_then(vec![TxnOp::put("counter", to, None)])
            .or_else(vec![TxnOp::get("counter", None)])
    };
    let ok = c.txn(swap("0", "1")).await.unwrap();
    assert!(ok.succeeded());
    let lost = c.txn(swap("0", "2")).await.unwrap();
    assert!(!lost.succeeded());
    match &lost.op_responses()[0] {
        TxnOpResponse::Get(get) => assert_eq!(get.kvs()[0].value(), b"1"),
        other => panic!("unexpected {other:?}"),
    }
    // Version compare on a missing key compares as 0.
    let created = c
        .txn(
            Txn::new()
                .when(vec![Compare::version("fresh", CompareOp::Equal, 0)])
                .and_then(vec![TxnOp::put("fresh", "x", None)]),
        )
        .await
        .unwrap();
    assert!(created.succeeded());
    // Duplicate keys are rejected as etcd rejects them.
    let err = c
        .txn(Txn::new().and_then(vec![TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("duplicate key given in txn request"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_match_etcd() {
    let cluster = Cluster::start(1);
    let mut c = client(&cluster.endpoints()).await;
    let err = c.put("", "v", None).await.unwrap_err();
    assert!(err.to_string().contains("key is not provided"), "{err}");
    let err = c.put("k", "v", Some(PutOptions::new().with_lease(42))).await.unwrap_err();
    assert!(err.to_string().contains("requested lease not found"), "{err}");
    let big = vec![b'x'; 1536 * 1024 + 1];
    let err = c.put("big", big, None).await.unwrap_err();
    assert!(err.to_string().contains("request is too large"), "{err}");
    let ops: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("k{i}"), "v", None)).collect();
    let err = c.txn(Txn::new().and_then(ops)).await.unwrap_err();
    assert!(err.to_string().contains("too many operations in txn request"), "{err}");
    let err = c.put("k", "v", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert!(err.to_string().contains("value is provided"), "{err}");
    let err = c.put("k", "", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert!(err.to_string().contains("key not found"), "{err}");
    // The server is still up and serving.
    c.put("k", "v", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_limits_and_sorting() {
    let cluster = Cluster::start(1);
    let mut c = client(&cluster.endpoints()).await;
    for k in ["a", "b", "c", "d"] {
        c.put(k, format!("value-{k}"), None).await.unwrap();
    }
    let limited = c.get("a", Some(GetOptions::new().with_range("d").with_limit(2))).await.unwrap();
    assert_eq!((limited.kvs().len(), limited.count(), limited.more()), (2, 3, true));
    let all = c.get("\0", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(all.count(), 4);
    let counted =
        c.get("a", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((counted.count(), counted.kvs().len()), (1, 0));
    let sorted = c
        .get(
            "a",
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    let keys: Vec<&[u8]> = sorted.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, vec![b"d", b"c", b"b", b"a"]);
    let keys_only = c.get("a", Some(GetOptions::new().with_keys_only())).await.unwrap();
    assert!(keys_only.kvs()[0].value().is_empty());
    let serializable = c.get("a", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(serializable.kvs()[0].value(), b"value-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_member_list() {
    let cluster = Cluster::start(3);
    let mut c = client(&cluster.endpoints()).await;
    let status = c.status().await.unwrap();
    assert_ne!(status.leader(), 0);
    assert!(status.raft_index() > 0);
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
    let names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    assert!(names.contains(&"m1") && names.contains(&"m3"));
}
