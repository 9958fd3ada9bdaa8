//! etcd's HTTP/JSON gateway (`POST /v3/...`) over real processes: Strata alone, then Strata and
//! a real etcd 3.4 side by side, answering the same requests with the same JSON.
//!
//! The comparison needs etcd 3.4 installed (`etcd` on the PATH, or the binary named by
//! `STRATA_TEST_ETCD`); without it the test fails and says so.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use support::Cluster;
use support::etcd::Etcd;

/// One HTTP answer: status code, content type, the body as written and parsed (`Value::Null`
/// when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    text: String,
    body: Value,
}

/// A minimal HTTP/1.1 POST with `Connection: close`; understands chunked bodies (etcd sends its
/// error answers chunked).
fn http(endpoint: &str, method: &str, path: &str, body: &str) -> Answer {
    let addr = endpoint.trim_start_matches("http://");
    let failed =
        |what: &str, e: std::io::Error| -> ! { panic!("{what} {method} {path} at {addr}: {e}") };
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| failed("connect for", e));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // In one write, as HTTP clients send a small request. Written piece by piece (as `write!`
    // on the socket does), the body can arrive after a server that answers without reading it
    // (etcd's 404 for an unknown route) has closed the connection, and the reset that follows
    // can lose the answer: the likely cause of two failures under load, both on that route.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| failed("send", e));
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| failed("read the answer to", e));
    let raw = String::from_utf8(raw).expect("utf-8 answer");
    let (head, payload) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let header = |name: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let text = if chunked { dechunk(payload) } else { payload.to_string() };
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, content_type: header("content-type").unwrap_or_default(), text, body }
}

/// Opens a watch over HTTP and reads its stream for a moment: the status and the JSON objects
/// received, one per line.
fn watch(endpoint: &str, body: &str) -> (u16, Vec<Value>) {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let request = format!(
        "POST /v3/watch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {} // nothing yet
        }
    }
    let raw = String::from_utf8(raw).expect("utf-8 answer");
    let (head, payload) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let lines = dechunk(payload)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    (status, lines)
}

fn post(endpoint: &str, path: &str, body: &str) -> Answer {
    http(endpoint, "POST", path, body)
}

fn dechunk(mut payload: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = payload.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        payload = &rest[size + 2..];
    }
    out
}

/// Object keys in the order they are written, which a `Value` forgets: every string that is
/// followed by `:` (both etcd and Strata write JSON without spaces).
fn keys_in_order(text: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c != '"' {
            continue;
        }
        let (mut end, mut escaped) = (text.len(), false);
        for (i, c) in chars.by_ref() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        if chars.peek().is_some_and(|(_, c)| *c == ':') {
            keys.push(&text[start + 1..end]);
        }
    }
    keys
}

fn b64(s: &str) -> String {
    BASE64.encode(s)
}

/// The body etcd's gateway answers an error with.
fn error_body(message: &str, code: i32) -> Value {
    json!({ "error": message, "message": message, "code": code })
}

#[test]
fn put_range_delete_with_etcd_encodings() {
    let cluster = Cluster::start(1);
    let ep = &cluster.endpoints()[0];

    let put =
        post(ep, "/v3/kv/put", &json!({ "key": b64("foo"), "value": b64("bar") }).to_string());
    assert_eq!(put.status, 200, "{put:?}");
    let header = &put.body["header"];
    // 64-bit integers are strings; ids are non-zero.
    let rev1: i64 = header["revision"].as_str().expect("revision as a string").parse().unwrap();
    assert!(header["cluster_id"].as_str().is_some_and(|s| s != "0"), "{header}");
    assert!(header["member_id"].as_str().is_some_and(|s| s != "0"), "{header}");
    assert!(header["raft_term"].is_string(), "{header}");
    // Defaults are left out: no prev_kv was asked for.
    assert_eq!(put.body.as_object().unwrap().len(), 1, "{put:?}");

    // lowerCamelCase input names, the original names on output.
    let body = json!({ "key": b64("foo"), "value": b64("baz"), "prevKv": true });
    let put = post(ep, "/v3/kv/put", &body.to_string());
    let prev = &put.body["prev_kv"];
    assert_eq!(prev["value"], b64("bar"));
    assert_eq!(prev["create_revision"], rev1.to_string());
    assert_eq!(prev["version"], "1");
    assert!(prev.get("lease").is_none(), "{prev}");
    // Written as etcd writes it: fields in proto order, no spaces.
    assert_eq!(put.content_type, "application/json");
    let prev_kv = format!(
        r#","prev_kv":{{"key":"Zm9v","create_revision":"{rev1}","mod_revision":"{rev1}","version":"1","value":"YmFy"}}}}"#
    );
    assert!(put.text.starts_with(r#"{"header":{"cluster_id":""#), "{}", put.text);
    assert!(put.text.ends_with(&prev_kv), "{}", put.text);

    let range = post(ep, "/v3/kv/range", &json!({ "key": b64("foo") }).to_string());
    assert_eq!(range.status, 200);
    let kv = &range.body["kvs"][0];
    assert_eq!((kv["key"].as_str(), kv["value"].as_str()), (Some("Zm9v"), Some("YmF6")));
    assert_eq!(kv["mod_revision"], (rev1 + 1).to_string());
    assert_eq!(range.body["count"], "1");
    assert!(range.body.get("more").is_none());

    // int64 as a number or a string, enums as names or numbers, both field name styles.
    post(ep, "/v3/kv/put", &json!({ "key": b64("foo2"), "value": b64("x") }).to_string());
    for body in [
        json!({ "key": b64("foo"), "range_end": b64("fop"), "limit": "1",
                "sort_order": "DESCEND", "sort_target": "KEY" }),
        json!({ "key": b64("foo"), "rangeEnd": b64("fop"), "limit": 1,
                "sortOrder": 2, "sortTarget": 0 }),
    ] {
        let range = post(ep, "/v3/kv/range", &body.to_string());
        assert_eq!(range.body["kvs"][0]["key"], b64("foo2"), "{body}");
        assert_eq!(range.body["more"], true);
        assert_eq!(range.body["count"], "2");
    }
    let keys_only =
        post(ep, "/v3/kv/range", &json!({ "key": b64("foo"), "keys_only": true }).to_string());
    assert!(keys_only.body["kvs"][0].get("value").is_none(), "{keys_only:?}");
    let count_only =
        post(ep, "/v3/kv/range", &json!({ "key": b64("foo"), "countOnly": true }).to_string());
    assert!(count_only.body.get("kvs").is_none(), "{count_only:?}");
    assert_eq!(count_only.body["count"], "1");
    // When both name styles are given, the camelCase one wins, as in Go's jsonpb.
    let both = json!({ "key": b64("foo"), "keys_only": false, "keysOnly": true });
    assert!(post(ep, "/v3/kv/range", &both.to_string()).body["kvs"][0].get("value").is_none());
    let missing = post(ep, "/v3/kv/range", &json!({ "key": b64("nope") }).to_string());
    assert_eq!(missing.body.as_object().unwrap().keys().collect::<Vec<_>>(), ["header"]);

    // Binary keys and values survive base64 both ways.
    let binary = BASE64.encode([0u8, 255, 10, 13]);
    post(ep, "/v3/kv/put", &json!({ "key": binary, "value": binary }).to_string());
    let range = post(ep, "/v3/kv/range", &json!({ "key": binary }).to_string());
    assert_eq!(range.body["kvs"][0]["value"], binary);

    let body = json!({ "key": b64("foo"), "range_end": b64("fop"), "prev_kv": true });
    let deleted = post(ep, "/v3/kv/deleterange", &body.to_string());
    assert_eq!(deleted.body["deleted"], "2", "{deleted:?}");
    let prev_keys: Vec<&Value> =
        deleted.body["prev_kvs"].as_array().unwrap().iter().map(|kv| &kv["key"]).collect();
    assert_eq!(prev_keys, [&json!(b64("foo")), &json!(b64("foo2"))]);
    let none = post(ep, "/v3/kv/deleterange", &json!({ "key": b64("foo") }).to_string());
    assert!(none.body.get("deleted").is_none(), "{none:?}");
}

#[test]
fn txn_compare_success_and_failure() {
    let cluster = Cluster::start(1);
    let ep = &cluster.endpoints()[0];
    post(ep, "/v3/kv/put", &json!({ "key": b64("k"), "value": b64("v1") }).to_string());

    // Value compare holds: the success branch runs.
    let txn = json!({
        "compare": [{ "key": b64("k"), "result": "EQUAL", "target": "VALUE", "value": b64("v1") }],
        "success": [
            { "request_put": { "key": b64("k"), "value": b64("v2"), "prev_kv": true } },
            { "request_range": { "key": b64("k") } },
        ],
        "failure": [{ "request_delete_range": { "key": b64("k") } }],
    });
    let answer = post(ep, "/v3/kv/txn", &txn.to_string());
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["succeeded"], true);
    let responses = answer.body["responses"].as_array().unwrap();
    assert_eq!(responses[0]["response_put"]["prev_kv"]["value"], b64("v1"));
    assert_eq!(responses[1]["response_range"]["kvs"][0]["value"], b64("v2"));

    // The same compare fails now: the failure branch runs, `succeeded` (false) is left out.
    // camelCase names and enum numbers (GREATER = 1, MOD = 2) are accepted in ops and compares.
    let txn = json!({
        "compare": [
            { "key": b64("k"), "result": "EQUAL", "target": "VALUE", "value": b64("v1") },
            { "key": b64("k"), "result": 1, "target": 2, "modRevision": 1 },
        ],
        "failure": [
            { "requestRange": { "key": b64("k"), "countOnly": true } },
            { "request_txn": { "success": [{ "request_range": { "key": b64("k") } }] } },
        ],
    });
    let answer = post(ep, "/v3/kv/txn", &txn.to_string());
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.get("succeeded").is_none(), "{answer:?}");
    let responses = answer.body["responses"].as_array().unwrap();
    assert_eq!(responses[0]["response_range"]["count"], "1");
    let nested = &responses[1]["response_txn"];
    assert_eq!(nested["succeeded"], true);
    assert_eq!(nested["responses"][0]["response_range"]["kvs"][0]["value"], b64("v2"));

    // Version and create-revision compares, with int64 as strings.
    let txn = json!({
        "compare": [
            { "key": b64("k"), "target": "VERSION", "result": "EQUAL", "version": "2" },
            { "key": b64("k"), "target": "CREATE", "result": "LESS", "create_revision": "100" },
            { "key": b64("k"), "target": "LEASE", "result": "EQUAL", "lease": "0" },
        ],
    });
    assert_eq!(post(ep, "/v3/kv/txn", &txn.to_string()).body["succeeded"], true);

    // Two members of one oneof are refused rather than picking one.
    let txn = json!({ "success": [{ "request_put": { "key": b64("a") }, "request_range": { "key": b64("a") } }] });
    assert_eq!(post(ep, "/v3/kv/txn", &txn.to_string()).status, 400);
}

#[test]
fn compaction_status_and_member_list() {
    let cluster = Cluster::start(1);
    let ep = &cluster.endpoints()[0];
    let mut revision = 0;
    for v in ["1", "2", "3"] {
        let put = post(ep, "/v3/kv/put", &json!({ "key": b64("c"), "value": b64(v) }).to_string());
        revision = put.body["header"]["revision"].as_str().unwrap().parse::<i64>().unwrap();
    }
    let compacted = post(ep, "/v3/kv/compaction", &json!({ "revision": revision - 1 }).to_string());
    assert_eq!(compacted.status, 200, "{compacted:?}");
    assert!(compacted.body["header"]["revision"].is_string());
    let old = post(
        ep,
        "/v3/kv/range",
        &json!({ "key": b64("c"), "revision": (revision - 2).to_string() }).to_string(),
    );
    assert_eq!(
        (old.status, old.body),
        (400, error_body("etcdserver: mvcc: required revision has been compacted", 11))
    );
    let body = json!({ "key": b64("c"), "revision": (revision - 1).to_string() });
    assert_eq!(post(ep, "/v3/kv/range", &body.to_string()).body["kvs"][0]["value"], b64("2"));

    let status = post(ep, "/v3/maintenance/status", "{}");
    assert_eq!(status.status, 200);
    let header = &status.body["header"];
    assert_eq!(header["revision"], revision.to_string());
    assert_eq!(status.body["leader"], header["member_id"], "{status:?}");
    for field in ["version", "dbSize", "raftIndex", "raftTerm", "raftAppliedIndex", "dbSizeInUse"] {
        assert!(status.body[field].is_string(), "{field} in {status:?}");
    }
    assert!(status.body.get("isLearner").is_none());
    // An empty body is an empty request.
    assert_eq!(post(ep, "/v3/maintenance/status", "").status, 200);

    let list = post(ep, "/v3/cluster/member/list", "{}");
    assert_eq!(list.status, 200);
    let member = &list.body["members"][0];
    assert_eq!(member["ID"], list.body["header"]["member_id"], "{list:?}");
    assert_eq!(member["name"], "m1");
    assert_eq!(member["clientURLs"], json!([ep]));
    assert!(member["peerURLs"][0].as_str().unwrap().starts_with("http://127.0.0.1:"));
}

#[test]
fn errors_answer_like_grpc_gateway() {
    let cluster = Cluster::start(1);
    let ep = &cluster.endpoints()[0];
    let empty_key = error_body("etcdserver: key is not provided", 3);
    for (path, body) in [
        ("/v3/kv/put", r#"{"key":""}"#),
        ("/v3/kv/put", "{}"),
        ("/v3/kv/range", ""),
        ("/v3/kv/deleterange", r#"{"value":"eA=="}"#),
        ("/v3/kv/txn", r#"{"success":[{"request_put":{}}]}"#),
    ] {
        let answer = post(ep, path, body);
        assert_eq!((answer.status, &answer.body), (400, &empty_key), "{path} {body}");
    }
    let future =
        post(ep, "/v3/kv/range", &json!({ "key": b64("k"), "revision": "1000" }).to_string());
    let message = "etcdserver: mvcc: required revision is a future revision";
    assert_eq!((future.status, future.body), (400, error_body(message, 11)));
    let txn = json!({ "success": [{ "request_put": { "key": b64("a") } }, { "request_put": { "key": b64("a") } }] });
    let duplicate = post(ep, "/v3/kv/txn", &txn.to_string());
    let message = "etcdserver: duplicate key given in txn request";
    assert_eq!((duplicate.status, duplicate.body), (400, error_body(message, 3)));

    // Bodies that are not the request message: 400 with InvalidArgument, a message naming why.
    for body in [
        "garbage",
        "[]",
        r#"{"key":"Zm9v","limit":1.5}"#,
        r#"{"key":"Zm9v","limit":"ten"}"#,
        r#"{"key":"Zm9vYg"}"#,
        r#"{"key":"Zm9v","sort_order":"SIDEWAYS"}"#,
        r#"{"key":"Zm9v","serializable":"yes"}"#,
    ] {
        let answer = post(ep, "/v3/kv/range", body);
        assert_eq!((answer.status, &answer.body["code"]), (400, &json!(3)), "{body}: {answer:?}");
        assert_eq!(answer.body["error"], answer.body["message"]);
    }
    // Unknown fields are ignored, as etcd does.
    let answer = post(ep, "/v3/kv/range", &json!({ "key": b64("k"), "bogus": 1 }).to_string());
    assert_eq!(answer.status, 200);
    // Only POST is routed.
    assert_eq!(http(ep, "GET", "/v3/kv/range", "").status, 405);
}

// ---------------------------------------------------------------------------------------------
// Side by side with etcd 3.4

/// Drops the parts of response headers that differ between two clusters by nature: cluster
/// and member ids, and the Raft term. Revisions stay: both stores start at revision 1.
fn without_ids(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(object) => {
                if let Some(Value::Object(header)) = object.get_mut("header") {
                    for id in ["cluster_id", "member_id", "raft_term"] {
                        header.remove(id);
                    }
                }
                object.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

/// Field names of an object, sorted.
fn names(value: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    names.sort();
    names
}

#[test]
fn same_answers_as_etcd_3_4() {
    let etcd = Etcd::start("default");
    let cluster = Cluster::start(1);
    let strata = &cluster.endpoints()[0];
    let k = |s: &str| b64(s);
    let steps: Vec<(&str, Value)> = vec![
        ("/v3/kv/put", json!({ "key": k("foo"), "value": k("bar") })),
        ("/v3/kv/put", json!({ "key": k("foo"), "value": k("baz"), "prev_kv": true })),
        ("/v3/kv/put", json!({ "key": k("foo2"), "value": k("x"), "prevKv": true, "lease": "0" })),
        ("/v3/kv/range", json!({ "key": k("foo") })),
        ("/v3/kv/range", json!({ "key": k("foo"), "keys_only": true })),
        ("/v3/kv/range", json!({ "key": k("foo"), "count_only": true })),
        ("/v3/kv/range", json!({ "key": k("nope") })),
        (
            "/v3/kv/range",
            json!({ "key": k("f"), "range_end": k("g"), "limit": "1", "sort_order": "DESCEND", "sort_target": "MOD" }),
        ),
        (
            "/v3/kv/range",
            json!({ "key": "AA==", "rangeEnd": "AA==", "sortOrder": 1, "sortTarget": 4, "limit": 5 }),
        ),
        (
            "/v3/kv/range",
            json!({ "key": "AA==", "range_end": "AA==", "sort_order": 7, "minModRevision": 3 }),
        ),
        (
            "/v3/kv/range",
            json!({ "key": k("f"), "range_end": k("g"), "min_mod_revision": "3", "serializable": true }),
        ),
        (
            "/v3/kv/txn",
            json!({
                "compare": [{ "key": k("foo"), "result": "EQUAL", "target": "VALUE", "value": k("baz") }],
                "success": [
                    { "request_put": { "key": k("foo"), "value": k("1"), "prev_kv": true } },
                    { "request_range": { "key": k("foo") } },
                    { "request_delete_range": { "key": k("none") } },
                ],
            }),
        ),
        (
            "/v3/kv/txn",
            json!({
                "compare": [{ "key": k("foo"), "result": "EQUAL", "target": "VALUE", "value": k("baz") }],
                "success": [{ "requestPut": { "key": k("foo"), "value": k("2") } }],
                "failure": [
                    { "requestRange": { "key": k("foo") } },
                    { "request_txn": { "success": [{ "request_range": { "key": k("foo"), "count_only": true } }] } },
                ],
            }),
        ),
        (
            "/v3/kv/txn",
            json!({
                "compare": [
                    { "key": k("foo"), "result": "GREATER", "target": "VERSION", "version": "1" },
                    { "key": k("foo"), "result": 2, "target": 2, "mod_revision": 100 },
                    { "key": k("foo"), "target": "CREATE", "create_revision": "2" },
                    { "key": k("foo"), "target": "LEASE", "lease": "0" },
                    { "key": k("a"), "range_end": k("z"), "result": "NOT_EQUAL", "target": "VERSION", "version": "0" },
                ],
                "success": [{ "request_delete_range": { "key": k("foo2"), "prev_kv": true } }],
            }),
        ),
        ("/v3/kv/txn", json!({})),
        ("/v3/kv/deleterange", json!({ "key": k("foo"), "prev_kv": true })),
        ("/v3/kv/deleterange", json!({ "key": k("foo") })),
        ("/v3/kv/compaction", json!({ "revision": "3" })),
        ("/v3/kv/range", json!({ "key": k("foo"), "revision": "2" })),
        ("/v3/kv/range", json!({ "key": k("foo"), "revision": "1000" })),
        ("/v3/kv/compaction", json!({ "revision": "1000" })),
        ("/v3/kv/compaction", json!({ "revision": "2" })),
        ("/v3/kv/put", json!({ "key": "" })),
        ("/v3/kv/put", json!({ "key": k("foo"), "value": k("v"), "ignore_value": true })),
        ("/v3/kv/put", json!({ "key": k("foo"), "lease": "42", "ignore_lease": true })),
        ("/v3/kv/put", json!({ "key": k("foo"), "lease": "42" })),
        ("/v3/kv/range", json!({})),
        ("/v3/kv/deleterange", json!({ "key": "" })),
        ("/v3/kv/txn", json!({ "success": [{ "request_put": {} }] })),
        (
            "/v3/kv/txn",
            json!({ "success": [{ "request_put": { "key": k("a") } }, { "request_delete_range": { "key": k("a") } }] }),
        ),
        ("/v3/lease/grant", json!({ "TTL": "60", "ID": "7" })),
        ("/v3/lease/grant", json!({ "TTL": 60, "ID": 7 })),
        ("/v3/kv/put", json!({ "key": k("leased"), "value": k("v"), "lease": "7" })),
        ("/v3/kv/lease/timetolive", json!({ "ID": "7", "keys": true })),
        ("/v3/lease/timetolive", json!({ "ID": "8" })),
        ("/v3/lease/leases", json!({})),
        ("/v3/lease/keepalive", json!({ "ID": "7" })),
        ("/v3/lease/revoke", json!({ "ID": "7" })),
        ("/v3/kv/lease/revoke", json!({ "ID": "7" })),
        ("/v3/kv/range", json!({ "key": k("leased") })),
        ("/v3/maintenance/alarm", json!({ "action": "GET" })),
        ("/v3/maintenance/defragment", json!({})),
        ("/v3/maintenance/transfer-leadership", json!({ "targetID": "12345" })),
        ("/v3/lease/grant", json!({ "TTL": "60", "ID": "153" })),
        ("/v3/lock/lock", json!({ "name": k("L"), "lease": "153" })),
        ("/v3/kv/range", json!({ "key": k("L/"), "range_end": k("L0") })),
        ("/v3/lock/unlock", json!({ "key": k("L/99") })),
        ("/v3/election/leader", json!({ "name": k("E") })),
        ("/v3/election/campaign", json!({ "name": k("E"), "lease": "153", "value": k("v1") })),
        ("/v3/election/leader", json!({ "name": k("E") })),
    ];
    let mut differences = Vec::new();
    for (path, body) in &steps {
        let body = body.to_string();
        let want = post(&etcd.endpoint, path, &body);
        let got = post(strata, path, &body);
        // Field order too, which the parsed bodies do not keep.
        let same_order = keys_in_order(&want.text) == keys_in_order(&got.text);
        let (want_body, got_body) = (without_ids(want.body), without_ids(got.body));
        if want.status != got.status || want_body != got_body || !same_order {
            differences.push(format!(
                "POST {path} {body}\n  etcd:   {} {}\n  strata: {} {}",
                want.status, want.text, got.status, got.text
            ));
        }
    }
    // The election's leader key, as etcd answered the campaign, drives the rest of it.
    let campaign = json!({ "name": k("E"), "lease": "153", "value": k("v1") }).to_string();
    let won = post(&etcd.endpoint, "/v3/election/campaign", &campaign);
    let leader = won.body["leader"].clone();
    assert!(leader.is_object(), "etcd's campaign answer: {won:?}");
    let election_steps = [
        ("/v3/election/proclaim", json!({ "leader": leader, "value": k("v2") })),
        ("/v3/election/leader", json!({ "name": k("E") })),
        ("/v3/election/resign", json!({ "leader": leader })),
        ("/v3/election/leader", json!({ "name": k("E") })),
        ("/v3/election/proclaim", json!({ "leader": leader, "value": k("v3") })),
    ];
    post(strata, "/v3/election/campaign", &campaign);
    for (path, body) in &election_steps {
        let body = body.to_string();
        let (want, got) = (post(&etcd.endpoint, path, &body), post(strata, path, &body));
        let (want_body, got_body) = (without_ids(want.body.clone()), without_ids(got.body.clone()));
        if want.status != got.status || want_body != got_body {
            differences.push(format!(
                "POST {path} {body}\n  etcd:   {} {}\n  strata: {} {}",
                want.status, want.text, got.status, got.text
            ));
        }
    }
    // Hashes are each server's own: both answer with one. `hashkv` is etcd 3.5's route (3.4
    // answers 404); Strata serves it.
    for (path, etcd_status) in [("/v3/maintenance/hash", 200), ("/v3/maintenance/hashkv", 404)] {
        let (want, got) = (post(&etcd.endpoint, path, "{}"), post(strata, path, "{}"));
        if want.status != etcd_status || got.status != 200 || !got.body["hash"].is_u64() {
            differences.push(format!("POST {path}\n  etcd:   {want:?}\n  strata: {got:?}"));
        }
    }
    // Bodies etcd cannot decode: same status and code; the messages are Go's own words.
    for body in
        ["garbage", "[]", r#"{"key":"Zm9vYg"}"#, r#"{"limit":1.5}"#, r#"{"sort_order":"BOGUS"}"#]
    {
        let want = post(&etcd.endpoint, "/v3/kv/range", body);
        let got = post(strata, "/v3/kv/range", body);
        if (want.status, &want.body["code"]) != (got.status, &got.body["code"]) {
            differences
                .push(format!("POST /v3/kv/range {body}\n  etcd:   {want:?}\n  strata: {got:?}"));
        }
    }
    // Status and member list describe different servers: compare which fields are there.
    for path in ["/v3/maintenance/status", "/v3/cluster/member/list"] {
        let want = post(&etcd.endpoint, path, "{}");
        let got = post(strata, path, "{}");
        let shape = |a: &Answer| {
            let member = &a.body["members"][0];
            (a.status, names(&a.body), names(member))
        };
        if shape(&want) != shape(&got) {
            differences.push(format!("POST {path}\n  etcd:   {want:?}\n  strata: {got:?}"));
        }
    }
    // Watches: the stream's first lines, read for a moment, as one JSON object per line.
    for (key, value) in [("w", "1"), ("w", "2"), ("wx", "3")] {
        for endpoint in [&etcd.endpoint, strata] {
            post(endpoint, "/v3/kv/put", &json!({ "key": k(key), "value": k(value) }).to_string());
        }
    }
    post(&etcd.endpoint, "/v3/kv/deleterange", &json!({ "key": k("wx") }).to_string());
    post(strata, "/v3/kv/deleterange", &json!({ "key": k("wx") }).to_string());
    let watches = [
        json!({ "create_request": { "key": k("w"), "start_revision": "1" } }),
        json!({ "createRequest": { "key": k("w"), "rangeEnd": k("x"), "prevKv": true, "startRevision": 2 } }),
        json!({ "create_request": { "key": k("w"), "range_end": k("x"), "filters": ["NOPUT"], "start_revision": "1" } }),
        json!({ "create_request": { "key": k("w"), "range_end": k("x"), "filters": [1], "start_revision": "1" } }),
    ];
    for body in watches.iter().map(Value::to_string) {
        let (want, got) = (watch(&etcd.endpoint, &body), watch(strata, &body));
        let strip =
            |lines: Vec<Value>| -> Vec<Value> { lines.into_iter().map(without_ids).collect() };
        assert!(
            want.1.len() >= 2,
            "etcd answered the watch with its creation and events: {want:?}"
        );
        if (want.0, strip(want.1.clone())) != (got.0, strip(got.1.clone())) {
            differences
                .push(format!("POST /v3/watch {body}\n  etcd:   {want:?}\n  strata: {got:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} answers differ from etcd 3.4:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
