//! Health and version endpoints over real processes, as etcd 3.5 answers them: `/health` (its
//! alarms, `exclude=`, `serializable=true`), `/livez` and `/readyz` (their checks, `verbose`,
//! `exclude=`, one check's own path), `/version`, and gRPC's standard health service — on a
//! healthy cluster, under an alarm, and on a member that lost its quorum.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
use serde_json::{Value, json};
use strata::pb::health::HealthCheckRequest;
use strata::pb::health::health_check_response::ServingStatus;
use strata::pb::health::health_client::HealthClient;
use support::{Cluster, client};

/// Status code and body of an HTTP request (`Connection: close`, no body).
fn request(endpoint: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("an answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, body.to_string())
}

fn get(endpoint: &str, path: &str) -> (u16, String) {
    request(endpoint, "GET", path)
}

fn get_json(endpoint: &str, path: &str) -> (u16, Value) {
    let (status, body) = get(endpoint, path);
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// Polls `path` until its status is `status` (bounded), returning the last answer.
fn wait_for_status(endpoint: &str, path: &str, status: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = get(endpoint, path);
        if answer.0 == status || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_and_version_answer_as_etcd_does() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(30));
    let endpoints = cluster.endpoints();
    let one = endpoints[0].as_str();

    // Healthy.
    assert_eq!(get_json(one, "/health"), (200, json!({"health": "true", "reason": ""})));
    assert_eq!(get(one, "/livez"), (200, "ok\n".to_string()));
    assert_eq!(get(one, "/readyz"), (200, "ok\n".to_string()));
    assert_eq!(
        get(one, "/readyz?verbose"),
        (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
                .to_string()
        )
    );
    assert_eq!(
        get(one, "/readyz?verbose&exclude=linearizable_read&exclude=no_such_check"),
        (200, "[+]data_corruption ok\n[+]serializable_read ok\nok\n".to_string())
    );
    assert_eq!(get(one, "/livez/serializable_read?verbose").1, "[+]serializable_read ok\nok\n");
    assert_eq!(get(one, "/readyz/linearizable_read").0, 200);
    assert_eq!(get(one, "/readyz/no_such_check").0, 404);
    assert_eq!(request(one, "POST", "/health").0, 405);
    let (status, version) = get_json(one, "/version");
    assert_eq!(status, 200);
    for field in ["etcdserver", "etcdcluster"] {
        let text = version[field].as_str().unwrap_or_else(|| panic!("{field} in {version}"));
        assert!(text.starts_with("3.5."), "{version}");
    }

    // gRPC's health service: the server as a whole serves; other names are unknown.
    let mut grpc = HealthClient::connect(one.to_string()).await.unwrap();
    let check = |service: &str| HealthCheckRequest { service: service.to_string() };
    let answer = grpc.check(check("")).await.unwrap().into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);
    let unknown = grpc.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let mut watch = grpc.watch(check("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // An alarm makes `/health` unhealthy unless excluded; the probes do not look at NOSPACE.
    let mut c = client(&endpoints).await;
    let member = c.status().await.unwrap().header().unwrap().member_id();
    let options = || {
        let mut options = AlarmOptions::new();
        options.with_member(member);
        Some(options)
    };
    c.alarm(AlarmAction::Activate, AlarmType::Nospace, options()).await.unwrap();
    let unhealthy = json!({"health": "false", "reason": "ALARM NOSPACE"});
    for endpoint in &endpoints {
        let (status, _) = wait_for_status(endpoint, "/health", 503);
        assert_eq!(get_json(endpoint, "/health"), (status, unhealthy.clone()), "{endpoint}");
    }
    assert_eq!(get_json(one, "/health?exclude=NOSPACE").0, 200);
    assert_eq!(get_json(one, "/health?exclude=CORRUPT").1, unhealthy);
    assert_eq!(get(one, "/livez").0, 200);
    assert_eq!(get(one, "/readyz").0, 200);
    c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, options()).await.unwrap();
    assert_eq!(wait_for_status(one, "/health", 200).0, 200);

    // A member that lost its quorum: no leader, linearizable reads fail; serializable ones
    // and the process itself are fine.
    cluster.kill(1);
    cluster.kill(2);
    // (A read may time out first, until the member notices it has lost its leader.)
    let no_leader = json!({"health": "false", "reason": "RAFT NO LEADER"});
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(one, "/health").1 != no_leader && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get_json(one, "/health"), (503, no_leader));
    assert_eq!(get_json(one, "/health?serializable=true").0, 200);
    assert_eq!(get(one, "/livez"), (200, "ok\n".to_string()));
    let (status, report) = get(one, "/readyz");
    assert_eq!(status, 503, "{report}");
    assert!(report.starts_with("[+]data_corruption ok\n[+]serializable_read ok\n"), "{report}");
    assert!(report.contains("[-]linearizable_read failed: "), "{report}");
    assert_eq!(get(one, "/readyz?exclude=linearizable_read").0, 200);
    let answer = grpc.check(check("")).await.unwrap().into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32, "the process still serves");
}
