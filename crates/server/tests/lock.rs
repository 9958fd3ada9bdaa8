//! Locks and elections over real processes with the `etcd-client` crate: mutual exclusion,
//! waiters served in order, release by unlock or by the holder's lease expiring, the fencing
//! token that makes a stale holder's writes fail; campaign, observe, proclaim, leader, resign.

mod support;

use std::time::Duration;

use etcd_client::{Compare, CompareOp, LockOptions, ProclaimOptions, ResignOptions, Txn, TxnOp};
use support::{Cluster, client};

/// Runs `future` and says whether it finished within `wait`.
async fn finishes<T>(handle: &mut tokio::task::JoinHandle<T>, wait: Duration) -> Option<T> {
    tokio::time::timeout(wait, handle).await.ok().map(|r| r.expect("task"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_has_one_holder_and_its_fencing_token_stops_a_stale_one() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let mut a = client(&endpoints[..1]).await;
    let lease_a = a.lease_grant(2, None).await.unwrap().id();
    let held = a.lock("job", Some(LockOptions::new().with_lease(lease_a))).await.unwrap();
    let key_a = held.key().to_vec();
    assert!(key_a.starts_with(b"job/"), "{:?}", String::from_utf8_lossy(&key_a));
    // The fencing token: the lock key's create revision.
    let token_a = a.get(key_a.clone(), None).await.unwrap().kvs()[0].create_revision();

    // A second contender, through another member, waits.
    let mut waiter = {
        let endpoint = endpoints[1].clone();
        tokio::spawn(async move {
            let mut b = client(&[endpoint]).await;
            let lease_b = b.lease_grant(30, None).await.unwrap().id();
            let got = b.lock("job", Some(LockOptions::new().with_lease(lease_b))).await.unwrap();
            got.key().to_vec()
        })
    };
    assert!(finishes(&mut waiter, Duration::from_millis(800)).await.is_none(), "two holders");

    // A's holder stalls: no keep-alive, its lease expires, the lock passes to B...
    let key_b = finishes(&mut waiter, Duration::from_secs(10)).await.expect("B gets the lock");
    let token_b = a.get(key_b.clone(), None).await.unwrap().kvs()[0].create_revision();
    assert!(token_b > token_a, "tokens grow: {token_a} then {token_b}");

    // ...and A, waking up, writes only under its token, which no longer holds.
    let guarded = |key: Vec<u8>, token: i64, value: &str| {
        Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, token)])
            .and_then([TxnOp::put("protected", value, None)])
    };
    assert!(!a.txn(guarded(key_a, token_a, "from A")).await.unwrap().succeeded());
    assert!(a.txn(guarded(key_b.clone(), token_b, "from B")).await.unwrap().succeeded());
    assert_eq!(a.get("protected", None).await.unwrap().kvs()[0].value(), b"from B");

    // Unlocking hands it on at once.
    a.unlock(key_b).await.unwrap();
    let mut c = client(&endpoints[2..]).await;
    let lease_c = c.lease_grant(30, None).await.unwrap().id();
    let quick = c.lock("job", Some(LockOptions::new().with_lease(lease_c)));
    tokio::time::timeout(Duration::from_secs(3), quick).await.expect("free lock").unwrap();
    // A lock without a lease gets one of its own.
    let own = c.lock("other", None).await.unwrap();
    let lease = c.get(own.key().to_vec(), None).await.unwrap().kvs()[0].lease();
    assert!(lease != 0);
    let missing = c.lock("job2", Some(LockOptions::new().with_lease(12345))).await;
    assert!(missing.is_err(), "a lock on a missing lease fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_observe_proclaim_and_resign() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let mut a = client(&endpoints[..1]).await;
    let no_leader = a.leader("e").await;
    assert!(format!("{no_leader:?}").contains("election: no leader"), "{no_leader:?}");

    let lease_a = a.lease_grant(30, None).await.unwrap().id();
    let won = a.campaign("e", "a1", lease_a).await.unwrap();
    let leader_a = won.leader().expect("a leader key").clone();
    assert_eq!(leader_a.lease(), lease_a);

    let mut observer = a.observe("e").await.unwrap();
    let mut next_value = async || {
        let response = tokio::time::timeout(Duration::from_secs(5), observer.message()).await;
        let response = response.expect("an observation").unwrap().expect("stream open");
        String::from_utf8(response.kv().expect("a leader").value().to_vec()).unwrap()
    };
    assert_eq!(next_value().await, "a1");

    let mut challenger = {
        let endpoint = endpoints[1].clone();
        tokio::spawn(async move {
            let mut b = client(&[endpoint]).await;
            let lease_b = b.lease_grant(30, None).await.unwrap().id();
            b.campaign("e", "b1", lease_b).await.unwrap().leader().unwrap().clone()
        })
    };
    assert!(finishes(&mut challenger, Duration::from_millis(500)).await.is_none());

    a.proclaim("a2", Some(ProclaimOptions::new().with_leader(leader_a.clone()))).await.unwrap();
    assert_eq!(next_value().await, "a2");
    let current = a.leader("e").await.unwrap();
    assert_eq!(current.kv().unwrap().value(), b"a2");

    a.resign(Some(ResignOptions::new().with_leader(leader_a.clone()))).await.unwrap();
    let leader_b = finishes(&mut challenger, Duration::from_secs(5)).await.expect("B leads");
    assert_eq!(next_value().await, "b1");
    assert!(leader_b.rev() > leader_a.rev());

    // A's old leader key no longer leads.
    let stale = a.proclaim("a3", Some(ProclaimOptions::new().with_leader(leader_a))).await;
    assert!(format!("{stale:?}").contains("election: not leader"), "{stale:?}");
}
