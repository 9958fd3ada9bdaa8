//! End to end with `etcdctl` (Debian's `etcd-client` package) against a 3-member cluster: the
//! commands operators use every day must work unchanged. A missing `etcdctl` fails the test.

mod support;

use support::{Cluster, run};

fn etcdctl(cluster: &Cluster, args: &[&str]) -> String {
    // Every command gets `http://host:port` endpoints, as operators write them. `endpoint ...`,
    // `move-leader` and `defrag` then send the URL as the HTTP/2 authority, which Strata's client
    // port must accept as etcd does.
    let csv = cluster.endpoints_csv();
    // `snapshot save` asks exactly one member.
    let csv = if args[0] == "snapshot" { cluster.endpoints()[0].clone() } else { csv };
    let endpoints = format!("--endpoints={csv}");
    let mut full = vec![endpoints.as_str()];
    full.extend_from_slice(args);
    let (ok, stdout, stderr) = run("etcdctl", &full);
    assert!(ok, "etcdctl {args:?} failed: {stderr}");
    stdout
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn put_get_delete_prefix_and_revisions() {
    let cluster = Cluster::start(3);
    assert_eq!(etcdctl(&cluster, &["put", "foo", "bar"]).trim(), "OK");
    etcdctl(&cluster, &["put", "foo/1", "one"]);
    etcdctl(&cluster, &["put", "foo/2", "two"]);
    assert_eq!(etcdctl(&cluster, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(
        etcdctl(&cluster, &["get", "foo/", "--prefix", "--keys-only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["foo/1", "foo/2"]
    );
    // -w json: revisions and base64 keys as etcd prints them.
    let out = json(&etcdctl(&cluster, &["get", "foo", "-w", "json"]));
    assert_eq!(out["kvs"][0]["key"], "Zm9v");
    assert_eq!(out["kvs"][0]["create_revision"], 2);
    assert_eq!(out["header"]["revision"], 4);
    etcdctl(&cluster, &["put", "foo", "baz"]);
    assert_eq!(etcdctl(&cluster, &["get", "foo", "--rev=2"]), "foo\nbar\n");
    assert_eq!(etcdctl(&cluster, &["del", "foo/", "--prefix"]).trim(), "2");
    assert_eq!(etcdctl(&cluster, &["get", "foo/", "--prefix"]), "");
}

#[test]
fn txn_from_stdin() {
    let cluster = Cluster::start(3);
    etcdctl(&cluster, &["put", "lock", "free"]);
    let endpoints = format!("--endpoints={}", cluster.endpoints_csv());
    let mut child = std::process::Command::new("etcdctl")
        .args([endpoints.as_str(), "txn"])
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl must be installed");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"value(\"lock\") = \"free\"\n\nput lock taken\n\nget lock\n\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("SUCCESS"), "{stdout}");
    assert_eq!(etcdctl(&cluster, &["get", "lock", "--print-value-only"]).trim(), "taken");
}

#[test]
fn compaction_status_and_members() {
    let cluster = Cluster::start(3);
    for i in 0..5 {
        etcdctl(&cluster, &["put", "k", &i.to_string()]);
    }
    assert!(etcdctl(&cluster, &["compaction", "4"]).contains("compacted revision 4"));
    let endpoints = format!("--endpoints={}", cluster.endpoints_csv());
    let (ok, _, stderr) = run("etcdctl", &[endpoints.as_str(), "get", "k", "--rev=2"]);
    assert!(!ok && stderr.contains("required revision has been compacted"), "{stderr}");

    let status = json(&etcdctl(&cluster, &["endpoint", "status", "-w", "json"]));
    let statuses = status.as_array().unwrap();
    assert_eq!(statuses.len(), 3);
    let leaders: Vec<&serde_json::Value> =
        statuses.iter().map(|s| &s["Status"]["leader"]).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0] && l.as_u64() != Some(0)), "{status}");

    let members = json(&etcdctl(&cluster, &["member", "list", "-w", "json"]));
    let members = members["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(
            m["clientURLs"].as_array().map(|a| a.len()),
            Some(1),
            "every member knows every client URL: {m}"
        );
    }
    let table = etcdctl(&cluster, &["member", "list"]);
    assert!(table.contains("m1") && table.contains("started"), "{table}");
    // etcdctl 3.4 prints health to stderr. Bare `host:port` endpoints work as well.
    let (ok, stdout, stderr) = run(
        "etcdctl",
        &[
            &format!("--endpoints={}", cluster.endpoints_csv().replace("http://", "")),
            "endpoint",
            "health",
        ],
    );
    let health = stdout + &stderr;
    assert!(ok && health.matches("is healthy").count() == 3, "{health}");
}

/// A running `etcdctl` command that does not end by itself (`watch`, `lock`, `elect`), its
/// output collected as it arrives; killed by PID when dropped.
struct Watching {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Watching {
    fn start(cluster: &Cluster, args: &[&str]) -> Self {
        let mut full = vec!["watch"];
        full.extend_from_slice(args);
        Self::spawn(cluster, &full)
    }

    fn spawn(cluster: &Cluster, args: &[&str]) -> Self {
        let endpoints = format!("--endpoints={}", cluster.endpoints_csv());
        let mut child = std::process::Command::new("etcdctl")
            .arg(endpoints.as_str())
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcdctl must be installed");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, out }
    }

    /// Waits until the output is exactly `expected` (fails on anything else after 10 s).
    fn expect(&self, expected: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = self.out.lock().unwrap().clone();
            if out == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "watch printed {out:?}, expected {expected:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Watching {
    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until some output line starts with `start` (fails after 10 s).
    fn wait_for_line(&self, start: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.output().lines().any(|line| line.starts_with(start)) {
            assert!(
                std::time::Instant::now() < deadline,
                "no line {start:?} in {:?}",
                self.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Ctrl-C: etcdctl releases what it holds and exits.
    fn interrupt(&self) {
        run("kill", &["-INT", &self.child.id().to_string()]);
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_with_rev_prefix_and_prev_kv() {
    let cluster = Cluster::start(3);
    etcdctl(&cluster, &["put", "foo", "1"]);
    etcdctl(&cluster, &["put", "foo", "2"]);
    // From a past revision: history first, then live events.
    let history = Watching::start(&cluster, &["foo", "--rev=2"]);
    history.expect("PUT\nfoo\n1\nPUT\nfoo\n2\n");
    // Starting at the next revision, so no event is missed however long etcdctl takes to start.
    let now = json(&etcdctl(&cluster, &["get", "foo", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .unwrap();
    let next = format!("--rev={}", now + 1);
    let prefix = Watching::start(&cluster, &["p/", "--prefix", "--prev-kv", &next]);
    etcdctl(&cluster, &["put", "p/a", "x"]);
    etcdctl(&cluster, &["put", "p/a", "y"]);
    etcdctl(&cluster, &["put", "q", "outside"]);
    etcdctl(&cluster, &["del", "p/a"]);
    etcdctl(&cluster, &["put", "foo", "3"]);
    // etcdctl prints the previous key and value before the event's own.
    prefix.expect("PUT\np/a\nx\nPUT\np/a\nx\np/a\ny\nDELETE\np/a\ny\np/a\n\n");
    history.expect("PUT\nfoo\n1\nPUT\nfoo\n2\nPUT\nfoo\n3\n");
}

#[test]
fn lease_grant_keep_alive_time_to_live_and_revoke() {
    let cluster = Cluster::start(3);
    let granted = etcdctl(&cluster, &["lease", "grant", "60"]);
    // "lease 694d7a6b2b1f1a04 granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).expect("a lease id").to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    etcdctl(&cluster, &["put", "k1", "v", &format!("--lease={id}")]);
    etcdctl(&cluster, &["put", "k2", "v", &format!("--lease={id}")]);
    let ttl = etcdctl(&cluster, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([k1 k2])"),
        "{ttl}"
    );
    let kept = etcdctl(&cluster, &["lease", "keep-alive", "--once", &id]);
    assert!(kept.contains(&format!("lease {id} keepalived with TTL(60)")), "{kept}");
    let list = etcdctl(&cluster, &["lease", "list"]);
    assert!(list.contains("found 1 leases") && list.contains(&id), "{list}");
    let revoked = etcdctl(&cluster, &["lease", "revoke", &id]);
    assert!(revoked.contains(&format!("lease {id} revoked")), "{revoked}");
    assert_eq!(etcdctl(&cluster, &["get", "k", "--prefix"]), "");
    let gone = etcdctl(&cluster, &["lease", "timetolive", &id]);
    assert!(gone.contains("already expired"), "{gone}");
}

#[test]
fn lock_runs_a_command_holding_the_lock_and_a_second_waits() {
    let cluster = Cluster::start(3);
    // With a command: runs it holding the lock, with the key and revision in its environment.
    let out = etcdctl(
        &cluster,
        &["lock", "job", "--", "sh", "-c", "echo held $ETCD_LOCK_KEY $ETCD_LOCK_REV"],
    );
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(words.len() == 3 && words[0] == "held" && words[1].starts_with("job/"), "{out}");
    assert!(words[2].parse::<i64>().is_ok(), "{out}");

    // Without: holds the lock until interrupted; a second contender waits until then.
    let first = Watching::spawn(&cluster, &["lock", "job"]);
    first.wait_for_line("job/");
    let second = Watching::spawn(&cluster, &["lock", "job", "echo", "second"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(second.output(), "", "the second contender must wait");
    first.interrupt();
    second.wait_for_line("second");
}

#[test]
fn elect_proclaims_and_a_listener_sees_the_leader() {
    let cluster = Cluster::start(3);
    let candidate = Watching::spawn(&cluster, &["elect", "e", "p1"]);
    candidate.wait_for_line("p1");
    let listener = Watching::spawn(&cluster, &["elect", "-l", "e"]);
    listener.wait_for_line("p1");
    let second = Watching::spawn(&cluster, &["elect", "e", "p2"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!second.output().contains("p2"), "a second leader: {}", second.output());
    candidate.interrupt();
    second.wait_for_line("p2");
    listener.wait_for_line("p2");
}

#[test]
fn endpoint_hashkv_agrees_and_move_leader_moves_leadership() {
    let cluster = Cluster::start(3);
    let mut revisions = Vec::new();
    for i in 0..20 {
        let put =
            json(&etcdctl(&cluster, &["put", &format!("k{i}"), &i.to_string(), "-w", "json"]));
        revisions.push(put["header"]["revision"].as_i64().unwrap());
    }
    // At the tenth put's revision (10 in a cluster of one range, whose revisions are dense).
    let compacted = revisions[9];
    etcdctl(&cluster, &["compaction", &compacted.to_string()]);
    etcdctl(&cluster, &["put", "after", "compaction"]);
    // Members apply a moment apart: ask until all answer at the same revision.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answers = json(&etcdctl(&cluster, &["endpoint", "hashkv", "-w", "json"]));
        let seen: Vec<(i64, i64, i64)> = answers
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let h = &a["HashKV"];
                let field = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
                (field(&h["header"]["revision"]), field(&h["hash"]), field(&h["compact_revision"]))
            })
            .collect();
        assert_eq!(seen.len(), 3);
        if seen.iter().all(|s| s.0 == seen[0].0) {
            assert!(seen.iter().all(|s| *s == seen[0]), "members disagree: {seen:?}");
            assert_eq!(seen[0].2, compacted, "hashes name the compaction revision");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "members never reached one revision");
    }

    let status = json(&etcdctl(&cluster, &["endpoint", "status", "-w", "json"]));
    let leader = status[0]["Status"]["leader"].as_u64().unwrap();
    let members = json(&etcdctl(&cluster, &["member", "list", "-w", "json"]));
    let target = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ID"].as_u64().unwrap())
        .find(|id| *id != leader)
        .unwrap();
    let moved = etcdctl(&cluster, &["move-leader", &format!("{target:x}")]);
    assert!(moved.contains("Leadership transferred"), "{moved}");
    let status = json(&etcdctl(&cluster, &["endpoint", "status", "-w", "json"]));
    assert_eq!(status[0]["Status"]["leader"].as_u64(), Some(target));
}

#[test]
fn storage_quota_raises_nospace_and_compaction_defrag_and_disarm_recover() {
    let cluster = Cluster::start_with(1, &["--quota-backend-bytes", "1048576"]);
    let endpoints = format!("--endpoints={}", cluster.endpoints_csv());
    let value = "x".repeat(100_000);
    let mut refused = None;
    for i in 0..60 {
        let (ok, _, stderr) =
            run("etcdctl", &[endpoints.as_str(), "put", &format!("k{i}"), &value]);
        if !ok {
            refused = Some(stderr);
            break;
        }
    }
    let refused = refused.expect("a 1 MiB quota must refuse 6 MB of puts");
    assert!(refused.contains("database space exceeded"), "{refused}");
    let alarms = etcdctl(&cluster, &["alarm", "list"]);
    assert!(alarms.starts_with("memberID:") && alarms.contains("alarm:NOSPACE"), "{alarms}");
    // Reads, deletions and compaction still work; writes that add data do not.
    let (ok, _, stderr) = run("etcdctl", &[endpoints.as_str(), "put", "small", "1"]);
    assert!(!ok && stderr.contains("database space exceeded"), "{stderr}");
    assert!(etcdctl(&cluster, &["get", "k0", "--keys-only"]).contains("k0"));
    etcdctl(&cluster, &["del", "k", "--prefix"]);
    let revision = json(&etcdctl(&cluster, &["get", "k0", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .unwrap();
    etcdctl(&cluster, &["compaction", &revision.to_string(), "--physical"]);
    let defrag = etcdctl(&cluster, &["defrag"]);
    assert!(defrag.contains("Finished defragmenting"), "{defrag}");
    let disarmed = etcdctl(&cluster, &["alarm", "disarm"]);
    assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
    assert_eq!(etcdctl(&cluster, &["alarm", "list"]), "");
    assert_eq!(etcdctl(&cluster, &["put", "small", "1"]).trim(), "OK");
}

#[test]
fn snapshot_save_and_restore_into_a_new_cluster() {
    let cluster = Cluster::start(3);
    for i in 0..10 {
        etcdctl(&cluster, &["put", &format!("k{}", i % 4), &i.to_string()]);
    }
    etcdctl(&cluster, &["compaction", "5"]);
    let granted = etcdctl(&cluster, &["lease", "grant", "600"]);
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    etcdctl(&cluster, &["put", "leased", "v", &format!("--lease={lease}")]);
    let before = json(&etcdctl(&cluster, &["get", "", "--from-key", "-w", "json"]));
    let history = etcdctl(&cluster, &["get", "k1", "--rev=6"]);

    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("backup.db");
    let file = file.to_str().unwrap();
    let saved = etcdctl(&cluster, &["snapshot", "save", file]);
    assert!(saved.contains("Snapshot saved"), "{saved}");
    drop(cluster);

    // Every member of the new cluster starts from its own restored copy, its Raft log in a
    // directory of its own.
    let mut restored = Cluster::create(3, &[]);
    for m in &mut restored.members {
        let wal_dir = m.data_dir.with_extension("wal");
        let (data_dir, wal) = (m.data_dir.to_str().unwrap(), wal_dir.to_str().unwrap());
        let (ok, out, err) = run(
            support::STRATA,
            &["snapshot", "restore", file, "--data-dir", data_dir, "--wal-dir", wal],
        );
        assert!(ok && out.contains("restored revision"), "{out}{err}");
        assert!(wal_dir.join("raft.log").is_file() && !m.data_dir.join("raft.log").exists());
        m.wal_dir = Some(wal_dir);
    }
    restored.start_all();
    let after = json(&etcdctl(&restored, &["get", "", "--from-key", "-w", "json"]));
    assert_eq!(after["kvs"], before["kvs"], "the same keys, values and revisions");
    assert_eq!(after["header"]["revision"], before["header"]["revision"]);
    assert_eq!(etcdctl(&restored, &["get", "k1", "--rev=6"]), history, "history survives");
    let ttl = etcdctl(&restored, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("attached keys([leased])"), "leases survive: {ttl}");
    // And it takes writes, continuing the revisions.
    etcdctl(&restored, &["put", "new", "1"]);
    let new = json(&etcdctl(&restored, &["get", "new", "-w", "json"]));
    assert_eq!(
        new["kvs"][0]["mod_revision"].as_i64(),
        before["header"]["revision"].as_i64().map(|r| r + 1)
    );
    // A damaged file is refused.
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
    let target = restored.dir.path().join("elsewhere");
    let (ok, _, err) = run(
        support::STRATA,
        &["snapshot", "restore", file, "--data-dir", target.to_str().unwrap()],
    );
    assert!(!ok && err.contains("damaged"), "{err}");
}

/// Polls `etcdctl` until `check` accepts its output (10 s at most).
fn eventually(cluster: &Cluster, args: &[&str], check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let endpoints = format!("--endpoints={}", cluster.endpoints_csv());
        let mut full = vec![endpoints.as_str()];
        full.extend_from_slice(args);
        let (ok, out, err) = run("etcdctl", &full);
        if ok && check(&out) {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "etcdctl {args:?}: {out}{err}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn member_add_as_learner_promote_and_remove_the_leader() {
    let mut cluster = Cluster::start(3);
    for i in 0..20 {
        etcdctl(&cluster, &["put", &format!("k{i}"), &i.to_string()]);
    }
    let new = cluster.add_member();
    let peer_url = format!("--peer-urls=http://127.0.0.1:{}", cluster.members[new].peer_port);
    let added = etcdctl(&cluster, &["member", "add", "m4", "--learner", &peer_url]);
    assert!(added.contains("added to cluster"), "{added}");
    // A learner that has not caught up (it has not even started) cannot be promoted.
    let list = json(&etcdctl(&cluster, &["member", "list", "-w", "json"]));
    let learner_id = list["members"].as_array().unwrap().iter().find(|m| m["isLearner"] == true);
    let learner_id =
        learner_id.unwrap_or_else(|| panic!("no learner in {list}"))["ID"].as_u64().unwrap();
    let endpoints = format!("--endpoints={}", cluster.endpoints_csv());
    let (ok, _, err) =
        run("etcdctl", &[&endpoints, "member", "promote", &format!("{learner_id:x}")]);
    assert!(!ok && err.contains("in sync with leader"), "{err}");
    cluster.spawn(new);

    // The new member catches up (the leader sends it a snapshot) and serves reads.
    let only_new = format!("--endpoints={}", cluster.members[new].endpoint());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (ok, out, _) =
            run("etcdctl", &[&only_new, "get", "k19", "--consistency=s", "--print-value-only"]);
        if ok && out.trim() == "19" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new member never caught up:\n{}",
            cluster.log(new)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let list = json(&etcdctl(&cluster, &["member", "list", "-w", "json"]));
    let members = list["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 4, "{list}");
    assert!(members.iter().any(|m| m["ID"].as_u64() == Some(learner_id) && m["isLearner"] == true));
    // Its name, once it started and introduced itself.
    eventually(&cluster, &["member", "list"], |out| out.contains("m4"));

    let promoted = etcdctl(&cluster, &["member", "promote", &format!("{learner_id:x}")]);
    assert!(promoted.contains("promoted"), "{promoted}");
    let list = json(&etcdctl(&cluster, &["member", "list", "-w", "json"]));
    assert!(list["members"].as_array().unwrap().iter().all(|m| m["isLearner"] != true), "{list}");
    let (ok, _, err) = run("etcdctl", &[&only_new, "put", "through-m4", "v"]);
    assert!(ok, "{err}\n{}\n--- m1\n{}", cluster.log(new), cluster.log(0));

    // New peer URLs for m4: recorded, then m4 restarts on them and the others reach it there.
    let moved = support::free_port();
    let new_url = format!("--peer-urls=http://127.0.0.1:{moved}");
    let updated = etcdctl(&cluster, &["member", "update", &format!("{learner_id:x}"), &new_url]);
    assert!(updated.contains("updated"), "{updated}");
    cluster.stop(new);
    cluster.move_peer_port(new, moved);
    cluster.spawn(new);
    etcdctl(&cluster, &["put", "after-update", "v"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let read = ["get", "after-update", "--consistency=s", "--print-value-only"];
        let (ok, out, _) = run("etcdctl", &[&[only_new.as_str()][..], &read[..]].concat());
        if ok && out.trim() == "v" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "m4 unreachable at its new URL:\n{}",
            cluster.log(new)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // Remove the leader: it hands over leadership, leaves, and stops.
    let status = json(&etcdctl(&cluster, &["endpoint", "status", "-w", "json"]));
    let leader = status[0]["Status"]["leader"].as_u64().unwrap();
    let removed = etcdctl(&cluster, &["member", "remove", &format!("{leader:x}")]);
    assert!(removed.contains("removed from cluster"), "{removed}");
    let list = eventually(&cluster, &["member", "list", "-w", "json"], |out| {
        json(out)["members"].as_array().is_some_and(|m| m.len() == 3)
    });
    let ids: Vec<u64> = json(&list)["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ID"].as_u64().unwrap())
        .collect();
    assert!(!ids.contains(&leader), "{list}");
    let leader_index = (0..cluster.members.len())
        .find(|&i| {
            json(&list)["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["name"] != cluster.members[i].name.as_str())
        })
        .expect("the removed member");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cluster.is_running(leader_index) {
        assert!(std::time::Instant::now() < deadline, "the removed member kept running");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eventually(&cluster, &["put", "after-removal", "v"], |out| out.trim() == "OK");
    assert_eq!(etcdctl(&cluster, &["get", "through-m4", "--print-value-only"]).trim(), "v");
}
