//! Members configured the way etcd deployments configure etcd, over real processes: one by a
//! production start script's flags (several client URLs and a metrics URL among them), one by `ETCD_*`
//! variables alone, as a container is, and one through a link named `etcd` with etcd's YAML
//! configuration file. Together they form one cluster. And a flag Strata cannot honour, given
//! either way, stops startup with a message naming it.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use support::{STRATA, client, free_port, http_get};

/// Processes stopped by PID when the test ends, however it ends.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_configured_by_etcd_flags_environment_and_name_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = ["a", "b", "c"].map(|_| (free_port(), free_port()));
    let (second_client_port, metrics_port) = (free_port(), free_port());
    let peer = |port: u16| format!("http://127.0.0.1:{port}");
    let initial_cluster = format!("a={},b={},c={}", peer(a.1), peer(b.1), peer(c.1));
    let log = |name: &str| std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();

    // a: a production script's flags, etcd's defaults spelled out, and two client URLs.
    let a_flags = [
        "--name=a".to_string(),
        format!("--data-dir={}", dir.path().join("a").display()),
        format!("--listen-client-urls=http://127.0.0.1:{},{}", a.0, peer(second_client_port)),
        format!("--advertise-client-urls=http://127.0.0.1:{}", a.0),
        format!("--listen-peer-urls={}", peer(a.1)),
        format!("--initial-advertise-peer-urls={}", peer(a.1)),
        format!("--initial-cluster={initial_cluster}"),
        "--initial-cluster-state=new".to_string(),
        "--initial-cluster-token=prod-1".to_string(),
        "--heartbeat-interval=20".to_string(),
        "--election-timeout=200".to_string(),
        "--snapshot-count=10000".to_string(),
        "--max-request-bytes=2097152".to_string(),
        "--logger=zap".to_string(),
        "--log-outputs=stderr".to_string(),
        "--log-level=info".to_string(),
        "--enable-v2=false".to_string(),
        "--auto-compaction-retention=0".to_string(),
        "--max-wals=5".to_string(),
        format!("--listen-metrics-urls={}", peer(metrics_port)),
        "--pre-vote".to_string(),
    ];
    let a_child = Command::new(STRATA)
        .arg("start")
        .args(&a_flags)
        .stderr(log("a"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // b: the environment alone, as a container is configured.
    let b_env = [
        ("ETCD_NAME", "b".to_string()),
        ("ETCD_DATA_DIR", dir.path().join("b").display().to_string()),
        ("ETCD_LISTEN_CLIENT_URLS", format!("http://127.0.0.1:{}", b.0)),
        ("ETCD_ADVERTISE_CLIENT_URLS", format!("http://127.0.0.1:{}", b.0)),
        ("ETCD_LISTEN_PEER_URLS", peer(b.1)),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer(b.1)),
        ("ETCD_INITIAL_CLUSTER", initial_cluster.clone()),
        ("ETCD_INITIAL_CLUSTER_TOKEN", "prod-1".to_string()),
        ("ETCD_HEARTBEAT_INTERVAL", "20".to_string()),
        ("ETCD_ELECTION_TIMEOUT", "200".to_string()),
        ("ETCD_ENABLE_V2", "false".to_string()),
        ("ETCD_MAX_SNAPSHOTS", "5".to_string()),
    ];
    let b_child = Command::new(STRATA)
        .arg("start")
        .envs(b_env.iter().map(|(k, v)| (k, v)))
        .stderr(log("b"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // c: the binary under etcd's name, with etcd's configuration file (and a flag it ignores).
    let etcd = dir.path().join("etcd");
    std::os::unix::fs::symlink(STRATA, &etcd).unwrap();
    let config_file = dir.path().join("c.yaml");
    let yaml = format!(
        "# etcd configuration\nname: 'c'\ndata-dir: {}\nlisten-client-urls: http://127.0.0.1:{}\n\
         listen-peer-urls: {}\ninitial-advertise-peer-urls: {}\ninitial-cluster: \"{}\"\n\
         initial-cluster-token: prod-1\nheartbeat-interval: 20\nelection-timeout: 200\n\
         enable-v2: false\nlog-outputs: [stderr]\nclient-transport-security:\n  \
         client-cert-auth: false\n",
        dir.path().join("c").display(),
        c.0,
        peer(c.1),
        peer(c.1),
        initial_cluster
    );
    std::fs::write(&config_file, yaml).unwrap();
    let c_child = Command::new(&etcd)
        .arg("-config-file")
        .arg(&config_file)
        .arg("--name=ignored-as-etcd-ignores-it")
        .stderr(log("c"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _members = Members(vec![a_child, b_child, c_child]);

    let endpoints: Vec<String> = [a.0, b.0, c.0, second_client_port]
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let logs = || {
        ["a", "b", "c"]
            .map(|n| {
                std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default()
            })
            .join("\n")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !endpoints.iter().all(|e| http_get(e, "/health").is_some_and(|b| b.contains("\"true\"")))
    {
        assert!(Instant::now() < deadline, "the cluster never became healthy:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    // One cluster: a write through a's second URL is read through every member.
    let mut second = client(&endpoints[3..]).await;
    // (A leader may still be settling in a cluster just started: retry as a client would.)
    support::put_retrying(&mut second, "configured", "by etcd's ways").await;
    for endpoint in &endpoints[..3] {
        let mut c = client(std::slice::from_ref(endpoint)).await;
        let got = c.get("configured", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"by etcd's ways", "{endpoint}");
    }
    let members = second.member_list().await.unwrap();
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    // --max-request-bytes was honoured: a 1.8 MB value fits (etcd's default would refuse it).
    let large = "v".repeat(1_800_000);
    support::put_retrying(&mut second, "large", &large).await;
    let got = second.get("large", Some(GetOptions::new().with_count_only())).await.unwrap();
    assert_eq!(got.count(), 1);
    let mut through_b = client(&endpoints[1..2]).await;
    let refused = through_b.put("large", large.as_str(), None).await.unwrap_err();
    assert!(refused.to_string().contains("too large"), "b keeps etcd's default: {refused}");

    // a's metrics port serves the metrics and probes, and nothing else.
    let metrics = peer(metrics_port);
    assert!(http_get(&metrics, "/metrics").unwrap().contains("strata_raft_term "));
    assert!(http_get(&metrics, "/health").unwrap().contains(r#""health":"true""#));
    assert_eq!(http_get(&metrics, "/readyz").unwrap(), "ok\n");
    let mut on_metrics_port = client(std::slice::from_ref(&metrics)).await;
    assert!(on_metrics_port.put("k", "v", None).await.is_err(), "no KV on the metrics port");

    // What was accepted in place of an etcd setting is logged, naming it.
    let log_a = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(log_a.contains("--max-wals=5 accepted: "), "{log_a}");
    let log_b = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(log_b.contains("ETCD_MAX_SNAPSHOTS=5 accepted: "), "{log_b}");
    let log_c = std::fs::read_to_string(dir.path().join("c.log")).unwrap();
    assert!(log_c.contains("1 other flags and the ETCD_* variables are ignored"), "{log_c}");
}

#[test]
fn a_flag_strata_cannot_honour_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = format!("--data-dir={}", dir.path().join("x").display());
    // Each must exit at once; one that starts instead is stopped and named.
    let refused = |command: &mut Command| {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("started instead of refusing: {command:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    let stderr = refused(Command::new(STRATA).args(["start", &data_dir, "--cert-file=/etc/a.pem"]));
    assert!(
        stderr.contains("etcd flag --cert-file=/etc/a.pem is not supported by Strata: TLS"),
        "{stderr}"
    );
    let stderr = refused(
        Command::new(STRATA).args(["start", &data_dir]).env("ETCD_CLIENT_CERT_AUTH", "true"),
    );
    assert!(
        stderr.contains("etcd flag ETCD_CLIENT_CERT_AUTH=true is not supported by Strata"),
        "{stderr}"
    );
    let stderr = refused(Command::new(STRATA).args(["start", &data_dir, "--no-such-flag"]));
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    assert!(!dir.path().join("x").exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_automatic_compaction_keeps_its_retention_window() {
    let flags = ["--auto-compaction-mode=periodic", "--auto-compaction-retention=2s"];
    let cluster = support::Cluster::start_with(3, &flags);
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();
    let mut c = client(&endpoints).await;
    // Writes for 5 s, each revision noted with when it was acknowledged.
    let started = Instant::now();
    let mut written = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        // A put failing while a leader settles is simply not counted.
        if let Ok(put) = c.put("ticking", format!("{:?}", started.elapsed()), None).await {
            written.push((Instant::now(), put.header().unwrap().revision()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let compacted = |e: &String| support::metric(e, "strata_mvcc_compact_revision").unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while endpoints.iter().any(|e| compacted(e) == 0.0) {
        assert!(Instant::now() < deadline, "no automatic compaction happened");
        std::thread::sleep(Duration::from_millis(100));
    }
    // History within the window stays: the compaction point is no newer than what was current
    // 2 s before it was looked at (less a tenth of the window, the sampling's grain).
    let at = compacted(&endpoints[0]) as i64;
    let window_start = Instant::now() - Duration::from_millis(1_800);
    let newest_allowed = written.iter().filter(|(when, _)| *when <= window_start).map(|(_, r)| *r);
    assert!(at <= newest_allowed.max().unwrap_or(0), "compacted to {at}: inside the window");
    let old = c.get("ticking", Some(GetOptions::new().with_revision(1))).await.unwrap_err();
    assert!(old.to_string().contains("compacted"), "{old}");
    let log: String = (0..3).map(|i| cluster.log(i)).collect();
    assert!(log.contains("automatic compaction done"), "{log}");
}
