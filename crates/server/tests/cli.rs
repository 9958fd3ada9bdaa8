//! The command line over real processes: `strata dev` starts a working cluster (its metrics
//! time its disk writes and rounds and count each peer's traffic) and stops every member on
//! SIGTERM;
//! `strata put/get/del/status` talk to it; `strata start` refuses data directories that are
//! not its own, naming the file, and never panics on damaged ones.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{STRATA, free_port, http_get, run};

fn members_of(dir: &std::path::Path) -> Vec<u32> {
    let (_, out, _) = run("pgrep", &["-f", "--", &format!("--data-dir {}", dir.display())]);
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `strata dev`, stopped with every member it started (SIGTERM) if the test ends before it
/// does so itself.
struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn dev_cluster_serves_the_cli_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Three consecutive client ports and three peer ports 100 above them must be free.
    let port = loop {
        let p = free_port();
        if p < 60_000 && (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let mut dev = Dev(Command::new(STRATA)
        .args(["dev", "--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let endpoints: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", port + i)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !endpoints.iter().all(|e| http_get(e, "/health").is_some_and(|b| b.contains("\"true\"")))
    {
        assert!(Instant::now() < deadline, "dev cluster never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(members_of(dir.path()).len(), 3);

    let csv = endpoints.join(",");
    let strata = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--endpoints", &csv]);
        let (ok, out, err) = run(STRATA, &full);
        assert!(ok, "strata {args:?}: {err}");
        out
    };
    assert_eq!(strata(&["put", "cli/a", "1"]).trim(), "OK");
    strata(&["put", "cli/b", "2"]);
    assert_eq!(strata(&["get", "cli/a"]), "cli/a\n1\n");
    assert_eq!(strata(&["get", "cli/", "--prefix"]), "cli/a\n1\ncli/b\n2\n");
    assert_eq!(strata(&["get", "cli/a", "--rev", "2"]), "cli/a\n1\n");
    assert_eq!(strata(&["del", "cli/", "--prefix"]).trim(), "2");
    let status = strata(&["status"]);
    assert_eq!(status.lines().count(), 4, "{status}");
    // One range, the meta range, over the whole key space, replicated on all three members.
    let table = strata(&["ranges"]);
    assert_eq!(table.lines().count(), 2, "{table}");
    let ranges: serde_json::Value =
        serde_json::from_str(&strata(&["ranges", "-w", "json"])).unwrap();
    let range = &ranges[0];
    assert_eq!(ranges.as_array().map(Vec::len), Some(1), "{ranges}");
    assert_eq!((range["range_id"].as_u64(), range["start_key"].as_str()), (Some(1), Some("")));
    assert_eq!(range["replicas"].as_array().map(Vec::len), Some(3), "{range}");
    assert_ne!(range["leader_id"], "0", "{range}");
    assert_eq!(range["epoch"]["version"], 1, "{range}");
    let leaders = (endpoints.iter())
        .filter(|e| {
            http_get(e, "/metrics").unwrap().contains("strata_range_is_leader{range=\"1\"} 1")
        })
        .count();
    assert_eq!(leaders, 1, "one member reports it leads range 1");
    // Every member persisted, applied and ran rounds, and `/metrics` times each.
    let mut peers_sent_to = Vec::new();
    for endpoint in &endpoints {
        let metrics = http_get(endpoint, "/metrics").unwrap();
        for histogram in ["fsync", "buffered_write", "raftstore_round"] {
            let name = format!("strata_{histogram}_seconds_count ");
            let count = (metrics.lines().find_map(|l| l.strip_prefix(name.as_str())))
                .and_then(|count| count.parse::<u64>().ok());
            assert!(count.is_some_and(|c| c > 0), "{name}in {endpoint}:\n{metrics}");
        }
        // Each peer's traffic is counted: every member exchanged messages with the leader.
        let per_peer = |counter: &str| -> Vec<u64> {
            let name = format!("strata_peer_{counter}_total{{peer=\"");
            (metrics.lines().filter_map(|l| l.strip_prefix(name.as_str())))
                .filter_map(|rest| rest.split_whitespace().nth(1)?.parse().ok())
                .collect()
        };
        for counter in ["sent_messages", "sent_bytes", "received_messages", "dropped_messages"] {
            assert_eq!(per_peer(counter).len(), 2, "{counter} in {endpoint}:\n{metrics}");
        }
        let talked = |counter| per_peer(counter).iter().filter(|&&n| n > 0).count();
        assert!(talked("sent_messages") >= 1 && talked("received_messages") >= 1, "{metrics}");
        peers_sent_to.push(talked("sent_messages"));
    }
    assert!(peers_sent_to.contains(&2), "the leader sent to both followers: {peers_sent_to:?}");

    // SIGTERM to `strata dev` stops every member it started.
    run("kill", &["-TERM", &dev.0.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if dev.0.try_wait().unwrap().is_some() && members_of(dir.path()).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members still running after SIGTERM: {:?}",
            members_of(dir.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_single(data_dir: &std::path::Path) -> std::process::Output {
    let (client, peer) = (free_port(), free_port());
    let mut child = Command::new(STRATA)
        .args(["start", "--name", "solo", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A member that starts fine runs until stopped: give it a moment, then stop it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    run("kill", &["-TERM", &child.id().to_string()]);
    child.wait_with_output().unwrap()
}

#[test]
fn start_refuses_foreign_and_unknown_data_directories() {
    let dir = tempfile::tempdir().unwrap();
    // An etcd data directory is not ours.
    let etcd_dir = dir.path().join("etcd");
    std::fs::create_dir_all(etcd_dir.join("member/snap")).unwrap();
    let out = start_single(&etcd_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("FORMAT")
            && stderr.contains("not a Strata data directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A Strata directory of an unknown format version.
    let ours = dir.path().join("ours");
    let first = start_single(&ours);
    assert!(
        first.status.success() || first.status.code().is_none(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    std::fs::write(ours.join("FORMAT"), "strata-storage 99 future\n").unwrap();
    let out = start_single(&ours);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("FORMAT")
            && stderr.contains("unsupported storage format"),
        "{stderr}"
    );
}

#[test]
fn start_refuses_a_store_whose_raft_log_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    start_single(&data);
    let raft_log = data.join("raft.log");
    std::fs::remove_file(&raft_log).unwrap();
    let out = start_single(&data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && out.status.code().is_some()
            && stderr.contains("refusing to start")
            && names(&stderr, &raft_log),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Whether `text` names `file` as a whole path (not as the start of a longer one).
fn names(text: &str, file: &std::path::Path) -> bool {
    let path = file.display().to_string();
    text.match_indices(&path).any(|(at, _)| {
        text[at + path.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric() && c != '/')
    })
}

#[test]
fn start_never_panics_on_a_damaged_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    start_single(&data);
    // Damage every file of the store in the middle, one at a time; each start must either
    // work or refuse with an error message — never panic.
    let raft_log = data.join("raft.log");
    let mut files = vec![raft_log.clone()];
    let mut stack = vec![data.join("engine")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    assert!(!files.is_empty());
    let mut refusals = 0;
    for file in &files {
        let Ok(original) = std::fs::read(file) else { continue };
        if original.len() < 32 {
            continue;
        }
        let mut damaged = original.clone();
        // The Raft log is extended with zeros ahead of its records: damage the records.
        let end = match file == &raft_log {
            true => original.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1),
            false => original.len(),
        };
        let middle = end / 2;
        damaged[middle..middle + 16].iter_mut().for_each(|b| *b ^= 0xa5);
        std::fs::write(file, &damaged).unwrap();
        let out = start_single(&data);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "panic after damaging {}: {stderr}", file.display());
        if !out.status.success() && out.status.code().is_some() {
            // A refusal says so, and names the damaged file.
            assert!(
                stderr.contains("refusing to start") && names(&stderr, file),
                "unclear failure after damaging {}: {stderr}",
                file.display()
            );
            refusals += 1;
        }
        std::fs::write(file, &original).unwrap();
    }
    eprintln!("{refusals} of {} damaged files refused", files.len());
}
