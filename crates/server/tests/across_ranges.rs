//! Transactions across ranges (two-phase commit) on a cluster of real processes pre-split into
//! two ranges at "m", with etcd-client: a `Txn` or `DeleteRange` over keys of both ranges
//! commits in both at one revision or in neither, answers as one store would, is seen whole by
//! reads and watches; and bank transfers between the ranges, through every member, while one
//! member is killed with SIGKILL and restarted, never create or destroy money.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use etcd_client::{PutOptions, WatchOptions};
use support::{Cluster, client, put_retrying};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_across_ranges_commits_whole_at_one_revision() {
    let cluster = Cluster::start_with(3, &["--experimental-initial-split-keys", "m"]);
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();
    let mut c = client(&endpoints).await;
    put_retrying(&mut c, "a", "1").await;
    let before = put_retrying(&mut c, "x", "1").await;
    let mut w = client(&endpoints[1..2]).await;
    let options = WatchOptions::new().with_all_keys().with_start_revision(before + 1);
    let mut watch = w.watch("", Some(options)).await.unwrap();

    // Both comparisons hold: both puts apply at one revision, and the read after them (over
    // both ranges) sees them.
    let swap = Txn::new()
        .when([
            Compare::value("a", CompareOp::Equal, "1"),
            Compare::value("x", CompareOp::Equal, "1"),
        ])
        .and_then([
            TxnOp::put("x", "2", Some(PutOptions::new().with_prev_key())),
            TxnOp::put("a", "2", None),
            TxnOp::get("", Some(GetOptions::new().with_all_keys())),
        ])
        .or_else([TxnOp::get("a", None)]);
    let done = c.txn(swap.clone()).await.unwrap();
    assert!(done.succeeded());
    let revision = done.header().unwrap().revision();
    let responses = done.op_responses();
    match &responses[0] {
        TxnOpResponse::Put(put) => assert_eq!(put.prev_key().unwrap().value(), b"1"),
        other => panic!("{other:?}"),
    }
    match &responses[2] {
        TxnOpResponse::Get(get) => {
            let kvs: Vec<(&str, &str, i64)> = (get.kvs().iter())
                .map(|kv| (kv.key_str().unwrap(), kv.value_str().unwrap(), kv.mod_revision()))
                .collect();
            assert_eq!(kvs, vec![("a", "2", revision), ("x", "2", revision)]);
        }
        other => panic!("{other:?}"),
    }
    for endpoint in &endpoints {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        let all = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
        let mods: Vec<i64> = all.kvs().iter().map(|kv| kv.mod_revision()).collect();
        assert_eq!(mods, vec![revision, revision], "{endpoint}");
    }
    // The same transaction again: its comparisons fail, the other branch runs, nothing changes.
    let again = c.txn(swap).await.unwrap();
    assert!(!again.succeeded());
    match &again.op_responses()[0] {
        TxnOpResponse::Get(get) => assert_eq!(get.kvs()[0].value(), b"2"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get("x", None).await.unwrap().kvs()[0].mod_revision(), revision);

    // A delete over both ranges.
    put_retrying(&mut c, "b", "1").await;
    let options = DeleteOptions::new().with_all_keys().with_prev_key();
    let deleted = c.delete("", Some(options)).await.unwrap();
    assert_eq!(deleted.deleted(), 3);
    let keys: Vec<&str> = deleted.prev_kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, ["a", "b", "x"]);
    let gone = deleted.header().unwrap().revision();
    assert_eq!(c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap().count(), 0);

    // The watcher is given each transaction's events at its one revision.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let response = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .unwrap_or_else(|_| {
                let closed = |range: u64| {
                    let name = format!("strata_range_closed_revision{{range=\"{range}\"}}");
                    support::metric(&endpoints[1], &name)
                };
                panic!(
                    "events in time: {seen:?}, closed {:?} {:?}, deleted at {gone}",
                    closed(1),
                    closed(2)
                )
            })
            .unwrap()
            .unwrap();
        for event in response.events() {
            let kv = event.kv().unwrap();
            seen.push((kv.key_str().unwrap().to_string(), kv.mod_revision()));
        }
    }
    let at = |key: &str, revision: i64| (key.to_string(), revision);
    assert_eq!(seen[..2], [at("a", revision), at("x", revision)]);
    assert_eq!(seen[3..], [at("a", gone), at("b", gone), at("x", gone)]);

    // What transactions across ranges cannot do yet is refused, and says so.
    let lease = c.lease_grant(60, None).await.unwrap().id();
    let leased = Txn::new().and_then([
        TxnOp::put("a", "v", Some(PutOptions::new().with_lease(lease))),
        TxnOp::put("x", "v", None),
    ]);
    let refused = c.txn(leased).await.unwrap_err().to_string();
    assert!(refused.contains("a put with a lease in a transaction across ranges"), "{refused}");
}

const ACCOUNTS: usize = 8;
const OPENING: u64 = 100;

fn account(i: usize) -> String {
    // Half in each range.
    if i.is_multiple_of(2) { format!("acct-a{i}") } else { format!("x-acct-{i}") }
}

/// The balances of every account, in one read over both ranges.
async fn balances(
    c: &mut etcd_client::Client,
) -> Result<Vec<(String, u64, i64)>, etcd_client::Error> {
    let all = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    Ok(all
        .kvs()
        .iter()
        .map(|kv| {
            let balance = kv.value_str().unwrap().parse().unwrap();
            (kv.key_str().unwrap().to_string(), balance, kv.mod_revision())
        })
        .collect())
}

/// One transfer between an account of each range, if both are unchanged since read.
async fn transfer(
    c: &mut etcd_client::Client,
    from: usize,
    to: usize,
    amount: u64,
) -> Result<bool, etcd_client::Error> {
    let (from, to) = (account(from), account(to));
    let read = c.get(from.as_str(), None).await?;
    let Some(from_kv) = read.kvs().first() else { return Ok(false) };
    let read = c.get(to.as_str(), None).await?;
    let Some(to_kv) = read.kvs().first() else { return Ok(false) };
    let (a, b): (u64, u64) = (
        from_kv.value_str().unwrap().parse().unwrap(),
        to_kv.value_str().unwrap().parse().unwrap(),
    );
    if a < amount {
        return Ok(false);
    }
    let txn = Txn::new()
        .when([
            Compare::mod_revision(from.as_str(), CompareOp::Equal, from_kv.mod_revision()),
            Compare::mod_revision(to.as_str(), CompareOp::Equal, to_kv.mod_revision()),
        ])
        .and_then([
            TxnOp::put(from.as_str(), (a - amount).to_string(), None),
            TxnOp::put(to.as_str(), (b + amount).to_string(), None),
        ]);
    Ok(c.txn(txn).await?.succeeded())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_across_ranges_keep_the_total_through_a_kill() {
    let mut cluster = Cluster::start_with(3, &["--experimental-initial-split-keys", "m"]);
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();
    let mut c = client(&endpoints).await;
    for i in 0..ACCOUNTS {
        put_retrying(&mut c, &account(i), &OPENING.to_string()).await;
    }
    let total = OPENING * ACCOUNTS as u64;

    // Transfers through every member, each client on one member; bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..6usize {
        let endpoint = endpoints[worker % 3].clone();
        let (stop, committed) = (stop.clone(), committed.clone());
        clients.spawn(async move {
            let mut c = client(&[endpoint]).await;
            for n in 0..200usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let from = (worker + n) % ACCOUNTS;
                let to = (from + 1 + 2 * (n % 3)) % ACCOUNTS; // always the other range
                match transfer(&mut c, from, to, 1 + (n % 7) as u64).await {
                    Ok(true) => {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    // Conflicts, and the killed member's errors: both leave the total whole.
                    Ok(false) | Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
    }
    // Every snapshot read meanwhile holds the whole total.
    let mut reads = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut killed = false;
    while !clients.is_empty() && tokio::time::Instant::now() < deadline {
        if !killed && committed.load(Ordering::Relaxed) >= 40 {
            cluster.kill(2);
            killed = true;
        }
        let mut reader = client(&endpoints[0..2]).await;
        if let Ok(accounts) = balances(&mut reader).await {
            assert_eq!(accounts.len(), ACCOUNTS);
            let sum: u64 = accounts.iter().map(|(_, balance, _)| balance).sum();
            assert_eq!(sum, total, "a read saw a transfer half done: {accounts:?}");
            reads += 1;
        }
        while let Some(Ok(())) = clients.try_join_next() {}
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio::time::Instant::now() + Duration::from_secs(30) > deadline {
            stop.store(true, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    assert!(killed, "the transfers ended before the kill");

    // The killed member comes back; every account is readable through every member (the
    // killed coordinator's locks resolved), and the money is all there.
    cluster.spawn(2);
    cluster.wait_for_leader(Duration::from_secs(30));
    for endpoint in &endpoints {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        let mut accounts = Err(None);
        for _ in 0..50 {
            match balances(&mut c).await {
                Ok(found) => {
                    accounts = Ok(found);
                    break;
                }
                Err(e) => accounts = Err(Some(e)),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let accounts = accounts.unwrap_or_else(|e| panic!("{endpoint}: {e:?}"));
        let sum: u64 = accounts.iter().map(|(_, balance, _)| balance).sum();
        assert_eq!(sum, total, "{endpoint}: {accounts:?}");
    }
    // No lock is left anywhere: those of the transactions the killed member was coordinating
    // were resolved by the leaders of their ranges.
    let locks_left = || {
        let mut left = 0.0;
        for endpoint in &endpoints {
            for range in [1, 2] {
                let name = format!("strata_range_locks{{range=\"{range}\"}}");
                left += support::metric(endpoint, &name).expect("a lock gauge per range");
            }
        }
        left
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while locks_left() > 0.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(locks_left(), 0.0, "locks left behind");
    let total_of = |name: &str| -> f64 {
        endpoints.iter().filter_map(|endpoint| support::metric(endpoint, name)).sum()
    };
    let committed = committed.load(Ordering::Relaxed);
    println!(
        "{committed} transfers committed, {reads} snapshot reads checked; {} conflicts retried, {} abandoned locks resolved",
        total_of("strata_txn_across_conflicts_total"),
        total_of("strata_txn_locks_resolved_total"),
    );
    assert!(committed >= 40, "{committed} transfers committed");
}
