//! Leases over real processes with the `etcd-client` crate: the RPCs (also through a follower,
//! which forwards keep-alives and time-to-live questions to the leader), expiry deleting keys on
//! every member, keep-alives holding a lease past its TTL, and a leader change that must not
//! expire a lease early.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions};
use support::{Cluster, client};

/// A client of one member that is not the leader.
async fn follower_client(cluster: &Cluster) -> etcd_client::Client {
    let endpoints = cluster.endpoints();
    let leader = support::leader_index(&endpoints).await.expect("a leader");
    client(&[endpoints[(leader + 1) % endpoints.len()].clone()]).await
}

fn error_text(result: Result<impl std::fmt::Debug, etcd_client::Error>) -> String {
    match result {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(etcd_client::Error::GRpcStatus(s)) => s.message().to_string(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_rpcs_through_a_follower() {
    let cluster = Cluster::start(3);
    let mut c = follower_client(&cluster).await;
    let granted = c.lease_grant(10, None).await.expect("grant");
    let id = granted.id();
    assert!(id > 0 && granted.ttl() == 10, "{granted:?}");
    let with_lease = || Some(PutOptions::new().with_lease(id));
    c.put("a", "1", with_lease()).await.expect("put a");
    c.put("b", "1", with_lease()).await.expect("put b");
    let a = c.get("a", None).await.unwrap();
    assert_eq!(a.kvs()[0].lease(), id);

    let ttl = c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await;
    let ttl = ttl.expect("time to live");
    assert!((8..=10).contains(&ttl.ttl()) && ttl.granted_ttl() == 10, "{ttl:?}");
    assert_eq!(ttl.keys(), [b"a".to_vec(), b"b".to_vec()]);

    let (mut keeper, mut responses) = c.lease_keep_alive(id).await.expect("keep alive");
    keeper.keep_alive().await.unwrap();
    let renewed = responses.message().await.unwrap().expect("a keep-alive answer");
    assert_eq!((renewed.id(), renewed.ttl()), (id, 10));
    let leases = c.leases().await.unwrap();
    assert_eq!(leases.leases().iter().map(|l| l.id()).collect::<Vec<_>>(), [id]);

    c.lease_revoke(id).await.expect("revoke");
    let gone = c.get("a", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(gone.count(), 0, "revoking deleted the lease's keys");
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    assert!(c.lease_keep_alive(id).await.is_err(), "a revoked lease cannot be kept alive");

    c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(42))).await.expect("grant 42");
    let again = c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(42))).await;
    assert_eq!(error_text(again), "etcdserver: lease already exists");
    let missing = c.put("x", "1", Some(PutOptions::new().with_lease(999))).await;
    assert_eq!(error_text(missing), "etcdserver: requested lease not found");
    assert_eq!(error_text(c.lease_revoke(999).await), "etcdserver: requested lease not found");
    let huge = c.lease_grant(9_000_000_001, None).await;
    assert_eq!(error_text(huge), "etcdserver: too large lease TTL");
    // A TTL below the minimum is raised to it (1.5 election timeouts, here 1 s).
    assert_eq!(c.lease_grant(0, None).await.unwrap().ttl(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_on_every_member() {
    let cluster = Cluster::start(3);
    let mut c = client(&cluster.endpoints()).await;
    let id = c.lease_grant(1, None).await.unwrap().id();
    let revision = c.put("k", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();
    let revision = revision.header().unwrap().revision();
    let options = etcd_client::WatchOptions::new().with_start_revision(revision + 1);
    let mut watch = c.watch("k", Some(options)).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let deleted = loop {
        let response = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
        let response = response.expect("the lease expired").unwrap().unwrap();
        if let Some(event) = response.events().first() {
            break event.kv().unwrap().mod_revision();
        }
        assert!(Instant::now() < deadline);
    };
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    for endpoint in cluster.endpoints() {
        let mut member = client(std::slice::from_ref(&endpoint)).await;
        let serializable = GetOptions::new().with_serializable().with_revision(deleted);
        let deadline = Instant::now() + Duration::from_secs(5);
        // A follower applies the revocation a moment after the leader.
        while member.get("k", Some(serializable.clone())).await.is_err() {
            assert!(Instant::now() < deadline, "{endpoint} never applied revision {deleted}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let now = member.get("k", Some(GetOptions::new().with_serializable())).await.unwrap();
        assert_eq!(now.count(), 0, "{endpoint} still has the key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_hold_a_lease_and_a_leader_change_does_not_expire_it_early() {
    let mut cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let mut c = client(&endpoints).await;
    const TTL: i64 = 3;
    let id = c.lease_grant(TTL, None).await.unwrap().id();
    c.put("held", "v", Some(PutOptions::new().with_lease(id))).await.unwrap();

    // Twice the TTL of keep-alives: the key stays.
    let (mut keeper, mut responses) = c.lease_keep_alive(id).await.unwrap();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(2 * TTL as u64) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        keeper.keep_alive().await.unwrap();
        assert_eq!(responses.message().await.unwrap().unwrap().ttl(), TTL);
    }
    last = Instant::now();
    drop((keeper, responses));

    // The leader dies right after the last keep-alive; its successor knows nothing of it.
    let leader = support::leader_index(&endpoints).await.unwrap();
    cluster.kill(leader);
    let survivors: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e.clone())
        .collect();
    let mut c = client(&survivors).await;
    let exists = |r: etcd_client::GetResponse| r.count() == 1;
    while last.elapsed() < Duration::from_millis(TTL as u64 * 1000 - 300) {
        let read = c.get("held", None).await;
        if let Ok(r) = read {
            assert!(
                exists(r),
                "expired {:?} after the last keep-alive (TTL {TTL} s)",
                last.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it does expire, on the new leader's clock.
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.get("held", None).await.map(exists).unwrap_or(true) {
        assert!(Instant::now() < deadline, "the lease never expired after the leader change");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("expired {:?} after the last keep-alive", last.elapsed());
}
