//! A member admits peer streams only from its cluster's members, over real processes: a stray
//! member of another cluster that shares a member's id, and a node the cluster never had, are
//! both refused with a log line that says why — on both sides — and the cluster keeps its
//! leader and term and goes on serving.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Cluster, STRATA, client, free_port, metric};

/// A stray process, stopped by PID when the test ends.
struct Stray(Child);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a lone process of another cluster: named `name`, advertising `advertised` as its peer
/// URL (while listening elsewhere), with `initial_cluster` and the test cluster's token, and
/// `state` (`new`, or `existing`: a member waiting to join, which knows no cluster id yet).
fn stray(
    dir: &std::path::Path,
    name: &str,
    advertised: &str,
    initial_cluster: &str,
    state: &str,
) -> Stray {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(STRATA)
        .args(["start", "--name", name, "--heartbeat-interval", "20", "--election-timeout", "200"])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--initial-advertise-peer-urls", advertised, "--initial-cluster", initial_cluster])
        .args(["--initial-cluster-state", state])
        .stderr(log)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Stray(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strays_cannot_reach_a_members_raft() {
    let cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();
    let peer_url = |i: usize| format!("http://127.0.0.1:{}", cluster.members[i].peer_port);
    let term = |i: usize| metric(&endpoints[i], "strata_raft_term");
    let leader = |i: usize| metric(&endpoints[i], "strata_raft_leader_id");
    let (term_before, leader_before) = (term(0), leader(0));

    let dir = tempfile::tempdir().unwrap();
    // A member of another cluster that took member 1's peer URL (so its member id): it
    // campaigns in its two-member cluster, sending to member 0 as member 1 would.
    let other_cluster = format!("x={},y={}", peer_url(1), peer_url(0));
    let _impostor = stray(dir.path(), "x", &peer_url(1), &other_cluster, "new");
    // A node this cluster never had, trying to join it.
    let outsider_url = format!("http://127.0.0.1:{}", free_port());
    let outsider_cluster = format!("z={outsider_url},y={}", peer_url(0));
    let _outsider = stray(dir.path(), "z", &outsider_url, &outsider_cluster, "existing");

    let refused_cluster = "refusing a peer stream: node";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = cluster.log(0);
        let seen =
            log.contains("belongs to cluster") && log.contains("is not a member of this cluster");
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "member 0 never refused both strays:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.log(0);
    assert!(log.contains(refused_cluster), "{log}");
    // The strays are told, and say so.
    for name in ["x", "z"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
            if log.contains("the peer refused this member's stream") {
                break;
            }
            assert!(Instant::now() < deadline, "{name} was never told:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Meanwhile the cluster was not disturbed: same leader, same term, still serving.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((term(0), leader(0)), (term_before, leader_before));
    let mut c = client(&endpoints).await;
    support::put_retrying(&mut c, "after-the-strays", "fine").await;
    let got = c.get("after-the-strays", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"fine");
}
