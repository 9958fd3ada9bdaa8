//! Golden scenario tests for the MVCC state machine: each file under `testdata/mvcc/` is a
//! script of etcd operations with the expected output recorded beneath each one.
//!
//! ```text
//! # What the scenario covers.
//! put a 1 prev_kv
//! ----
//! revision=2
//! ```
//!
//! Commands: `put KEY VALUE [prev_kv] [ignore_value] [ignore_lease] [lease=N]`,
//! `get KEY [end=K|prefix|fromkey] [rev=N] [limit=N] [sort=TARGET] [order=asc|desc] [keys_only]
//! [count_only] [serializable] [min_mod=N] [max_mod=N] [min_create=N] [max_create=N]`,
//! `del KEY [end=K|prefix|fromkey] [prev_kv]`, `compact REV`, and
//! `txn if=CMP;CMP then=OP;OP else=OP;OP` where CMP is `TARGET(KEY)OPVALUE` (targets `value`,
//! `version`, `create`, `mod`, `lease`; operators `=`, `!=`, `>`, `<`) and OP is `put(K,V)`,
//! `get(K)`, `range(K,END)` or `del(K)` / `del(K,END)`.
//! Regenerate the expected output with `UPDATE_GOLDEN=1 cargo test -p strata-core --test
//! mvcc_golden` and review the diff.

mod support;

use std::fmt::Write as _;
use std::path::Path;

use strata_core::command::Request;
use strata_core::mvcc::{Limits, Response, read, validate};
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use strata_core::pb::etcdserverpb::request_op::Request as Op;
use strata_core::pb::etcdserverpb::response_op::Response as OpResponse;
use strata_core::pb::etcdserverpb::*;
use strata_core::pb::mvccpb::KeyValue;
use support::Store;

/// `""` stands for an empty string in scripts.
fn text(word: &str) -> Vec<u8> {
    if word == "\"\"" { Vec::new() } else { word.as_bytes().to_vec() }
}

fn span(key: &str, args: &[&str]) -> Vec<u8> {
    for arg in args {
        if let Some(end) = arg.strip_prefix("end=") {
            return end.as_bytes().to_vec();
        }
        if *arg == "fromkey" {
            return vec![0];
        }
        if *arg == "prefix" {
            let mut end = key.as_bytes().to_vec();
            *end.last_mut().unwrap() += 1;
            return end;
        }
    }
    Vec::new()
}

fn num(args: &[&str], name: &str) -> i64 {
    args.iter().find_map(|a| a.strip_prefix(&format!("{name}="))).map_or(0, |v| v.parse().unwrap())
}

fn flag(args: &[&str], name: &str) -> bool {
    args.contains(&name)
}

fn range_request(key: &str, args: &[&str]) -> RangeRequest {
    let target =
        args.iter().find_map(|a| a.strip_prefix("sort=")).map_or(SortTarget::Key, |t| match t {
            "key" => SortTarget::Key,
            "version" => SortTarget::Version,
            "create" => SortTarget::Create,
            "mod" => SortTarget::Mod,
            "value" => SortTarget::Value,
            other => panic!("unknown sort target {other}"),
        });
    let order =
        args.iter().find_map(|a| a.strip_prefix("order=")).map_or(SortOrder::None, |o| match o {
            "asc" => SortOrder::Ascend,
            "desc" => SortOrder::Descend,
            other => panic!("unknown order {other}"),
        });
    RangeRequest {
        key: key.into(),
        range_end: span(key, args),
        limit: num(args, "limit"),
        revision: num(args, "rev"),
        sort_order: order as i32,
        sort_target: target as i32,
        serializable: flag(args, "serializable"),
        keys_only: flag(args, "keys_only"),
        count_only: flag(args, "count_only"),
        min_mod_revision: num(args, "min_mod"),
        max_mod_revision: num(args, "max_mod"),
        min_create_revision: num(args, "min_create"),
        max_create_revision: num(args, "max_create"),
    }
}

fn parse_compare(text: &str) -> Compare {
    let open = text.find('(').unwrap();
    let close = text.find(')').unwrap();
    let (target, key, rest) = (&text[..open], &text[open + 1..close], &text[close + 1..]);
    let (result, value) = if let Some(v) = rest.strip_prefix("!=") {
        (CompareResult::NotEqual, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (CompareResult::Equal, v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (CompareResult::Greater, v)
    } else if let Some(v) = rest.strip_prefix('<') {
        (CompareResult::Less, v)
    } else {
        panic!("bad compare {text}")
    };
    let (target, union) = match target {
        "value" => (CompareTarget::Value, TargetUnion::Value(value.into())),
        "version" => (CompareTarget::Version, TargetUnion::Version(value.parse().unwrap())),
        "create" => (CompareTarget::Create, TargetUnion::CreateRevision(value.parse().unwrap())),
        "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(value.parse().unwrap())),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(value.parse().unwrap())),
        other => panic!("unknown compare target {other}"),
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: vec![],
        target_union: Some(union),
    }
}

fn parse_op(text: &str) -> RequestOp {
    let open = text.find('(').unwrap();
    let args: Vec<&str> = text[open + 1..text.len() - 1].split(',').collect();
    let request = match &text[..open] {
        "put" => Op::RequestPut(PutRequest {
            key: args[0].into(),
            value: args[1].into(),
            ..Default::default()
        }),
        "get" => Op::RequestRange(RangeRequest { key: args[0].into(), ..Default::default() }),
        "range" => Op::RequestRange(RangeRequest {
            key: args[0].into(),
            range_end: args[1].into(),
            ..Default::default()
        }),
        "del" => Op::RequestDeleteRange(DeleteRangeRequest {
            key: args[0].into(),
            range_end: args.get(1).map_or(Vec::new(), |e| e.as_bytes().to_vec()),
            ..Default::default()
        }),
        other => panic!("unknown txn op {other}"),
    };
    RequestOp { request: Some(request) }
}

fn list<T>(args: &[&str], name: &str, parse: fn(&str) -> T) -> Vec<T> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
        .map_or(Vec::new(), |v| v.split(';').filter(|s| !s.is_empty()).map(parse).collect())
}

fn show_kv(out: &mut String, indent: &str, kv: &KeyValue) {
    let _ = writeln!(
        out,
        "{indent}{}={} create={} mod={} version={} lease={}",
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    );
}

fn show_range(out: &mut String, indent: &str, r: &RangeResponse) {
    for kv in &r.kvs {
        show_kv(out, indent, kv);
    }
    let _ = writeln!(
        out,
        "{indent}count={} more={} revision={}",
        r.count,
        r.more,
        r.header.as_ref().unwrap().revision
    );
}

fn show_response(out: &mut String, indent: &str, response: &OpResponse) {
    match response {
        OpResponse::ResponseRange(r) => {
            let _ = writeln!(out, "{indent}range:");
            show_range(out, &format!("{indent}  "), r);
        }
        OpResponse::ResponsePut(r) => {
            let _ = writeln!(out, "{indent}put: revision={}", r.header.as_ref().unwrap().revision);
        }
        OpResponse::ResponseDeleteRange(r) => {
            let _ = writeln!(out, "{indent}del: deleted={}", r.deleted);
        }
        OpResponse::ResponseTxn(r) => {
            let _ = writeln!(out, "{indent}txn: succeeded={}", r.succeeded);
        }
    }
}

fn run_command(store: &mut Store, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = String::new();
    let result: Result<(), strata_core::Error> = (|| {
        match words[0] {
            "put" => {
                let args = &words[3..];
                let req = PutRequest {
                    key: text(words[1]),
                    value: text(words[2]),
                    lease: num(args, "lease"),
                    prev_kv: flag(args, "prev_kv"),
                    ignore_value: flag(args, "ignore_value"),
                    ignore_lease: flag(args, "ignore_lease"),
                };
                validate::check_put(&req)?;
                let Response::Put(r) = store.write(Request::Put(req))? else { unreachable!() };
                if let Some(prev) = &r.prev_kv {
                    out.push_str("prev: ");
                    show_kv(&mut out, "", prev);
                }
                let _ = writeln!(out, "revision={}", r.header.unwrap().revision);
            }
            "get" => {
                let req = range_request(words[1], &words[2..]);
                validate::check_range(&req)?;
                // Served through the key index, as a member serves it; the engine alone must
                // answer the same.
                let r = read::range(&store.indexed(), &store.state, &req)?;
                assert_eq!(Ok(&r), read::range(&store.plain(), &store.state, &req).as_ref());
                show_range(&mut out, "", &r);
            }
            "del" => {
                let args = &words[2..];
                let req = DeleteRangeRequest {
                    key: words[1].into(),
                    range_end: span(words[1], args),
                    prev_kv: flag(args, "prev_kv"),
                };
                validate::check_delete_range(&req)?;
                let Response::DeleteRange(r) = store.write(Request::DeleteRange(req))? else {
                    unreachable!()
                };
                for kv in &r.prev_kvs {
                    out.push_str("prev: ");
                    show_kv(&mut out, "", kv);
                }
                let _ =
                    writeln!(out, "deleted={} revision={}", r.deleted, r.header.unwrap().revision);
            }
            "txn" => {
                let args = &words[1..];
                let req = TxnRequest {
                    compare: list(args, "if", parse_compare),
                    success: list(args, "then", parse_op),
                    failure: list(args, "else", parse_op),
                };
                validate::check_txn(&req, &Limits::default())?;
                let Response::Txn(r) = store.write(Request::Txn(req))? else { unreachable!() };
                let _ = writeln!(
                    out,
                    "succeeded={} revision={}",
                    r.succeeded,
                    r.header.unwrap().revision
                );
                for op in &r.responses {
                    show_response(&mut out, "  ", op.response.as_ref().unwrap());
                }
            }
            "compact" => {
                let req =
                    CompactionRequest { revision: words[1].parse().unwrap(), physical: false };
                let Response::Compaction(r) = store.write(Request::Compaction(req))? else {
                    unreachable!()
                };
                let _ = writeln!(out, "compacted revision={}", r.header.unwrap().revision);
            }
            other => panic!("unknown command {other}"),
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

fn run_file(path: &Path) -> (String, String) {
    let original = std::fs::read_to_string(path).unwrap();
    let mut store = Store::new();
    let mut rendered = String::new();
    let mut lines = original.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rendered.push_str(line);
            rendered.push('\n');
            continue;
        }
        // A command; skip its recorded output (up to the next blank line).
        let output = run_command(&mut store, line);
        let _ = write!(rendered, "{line}\n----\n{output}");
        if lines.peek() == Some(&"----") {
            for expected in lines.by_ref() {
                if expected.trim().is_empty() {
                    break;
                }
            }
        }
        rendered.push('\n');
    }
    (original, rendered)
}

#[test]
fn mvcc_golden_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/mvcc");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for path in files {
        let (original, rendered) = run_file(&path);
        let mut rendered = rendered.trim_end().to_string() + "\n";
        while rendered.contains("\n\n\n") {
            rendered = rendered.replace("\n\n\n", "\n\n");
        }
        if update {
            std::fs::write(&path, &rendered).unwrap();
        } else if original != rendered {
            failures.push(format!(
                "{}:\n--- expected\n{original}\n--- actual\n{rendered}",
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden files differ (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
