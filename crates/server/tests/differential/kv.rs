//! The KV steps: writes, ranges and sorting, deletes, transactions, compaction, errors.

use super::*;

// --- The sequence ---------------------------------------------------------------------------

/// Revisions recorded while writing the data set, for history reads and filters.
pub(super) struct Marks {
    /// The first write ("a" = "1").
    first: i64,
    /// A revision in the middle of the data set: keys written after it are newer.
    middle: i64,
}

/// Puts that build the data set: several keys, some written twice, one under a prefix and one
/// just past it.
pub(super) async fn writes(d: &mut Differ) -> Marks {
    d.put("put: new key", "a", "1", None).await;
    let first = d.revision;
    d.put("put: second key", "b", "2", None).await;
    d.put("put: third key", "c", "3", None).await;
    d.put("put: overwrite with prev_kv", "a", "4", Some(PutOptions::new().with_prev_key())).await;
    let keep = PutOptions::new().with_ignore_value().with_prev_key();
    d.put("put: ignore_value keeps the value, with prev_kv", "b", "", Some(keep)).await;
    d.put("put: prev_kv of a new key", "prefix/x", "9", Some(PutOptions::new().with_prev_key()))
        .await;
    let middle = d.revision;
    d.put("put: second key under the prefix", "prefix/y", "1", None).await;
    d.put("put: key just past the prefix", "prefiy", "5", None).await;
    d.put("put: key d", "d", "0", None).await;
    d.put("put: overwrite without prev_kv", "c", "7", None).await;
    d.put("put: empty value", "e", "", None).await;
    Marks { first, middle }
}

/// Range in all its forms over the data set.
pub(super) async fn ranges(d: &mut Differ, marks: &Marks) {
    let all = || GetOptions::new().with_from_key();
    d.get("get: single key", "a", None).await;
    d.get("get: missing key", "nope", None).await;
    d.get("range: [a, c)", "a", Some(GetOptions::new().with_range("c"))).await;
    d.get("range: end before start", "c", Some(GetOptions::new().with_range("a"))).await;
    d.get("range: prefix", "prefix/", Some(GetOptions::new().with_prefix())).await;
    d.get("range: from key", "b", Some(all())).await;
    let every = d.get("range: every key (\\0 from key)", "\0", Some(all())).await;
    let total = every["ok"]["count"].as_i64().expect("etcd counts every key");

    d.get("range: limit with more", "\0", Some(all().with_limit(2))).await;
    d.get("range: limit equal to the count", "\0", Some(all().with_limit(total))).await;
    d.get("range: limit with count_only", "\0", Some(all().with_limit(2).with_count_only())).await;
    d.get("range: history read", "a", Some(GetOptions::new().with_revision(marks.first))).await;
    d.get("range: every key at an older revision", "\0", Some(all().with_revision(marks.middle)))
        .await;
    d.get("range: revision 1, before any write", "\0", Some(all().with_revision(1))).await;

    sorts(d).await;

    d.get("range: keys_only", "\0", Some(all().with_keys_only())).await;
    d.get("range: count_only", "prefix/", Some(GetOptions::new().with_prefix().with_count_only()))
        .await;
    d.get("range: keys_only with limit", "\0", Some(all().with_keys_only().with_limit(3))).await;

    let middle = marks.middle;
    d.get("filter: min_mod_revision", "\0", Some(all().with_min_mod_revision(middle))).await;
    d.get("filter: max_mod_revision", "\0", Some(all().with_max_mod_revision(middle))).await;
    d.get("filter: min_create_revision", "\0", Some(all().with_min_create_revision(middle))).await;
    d.get("filter: max_create_revision", "\0", Some(all().with_max_create_revision(middle))).await;
    let window = all().with_min_mod_revision(marks.first + 1).with_max_mod_revision(middle + 2);
    d.get("filter: mod revision window with limit", "\0", Some(window.with_limit(1))).await;
    let window = all().with_min_create_revision(middle).with_max_create_revision(middle + 1);
    d.get("filter: create revision window", "\0", Some(window)).await;

    d.get("range: serializable get", "a", Some(GetOptions::new().with_serializable())).await;
    let old = all().with_revision(middle).with_serializable();
    d.get("range: serializable history read", "\0", Some(old)).await;
}

/// Every sort target in both orders, the default order for a non-key target, and sorting
/// combined with limit and keys_only.
async fn sorts(d: &mut Differ) {
    let targets = [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ];
    for target in targets {
        for order in [SortOrder::Ascend, SortOrder::Descend] {
            let name = format!("sort: {} {}", target.as_str_name(), order.as_str_name());
            let options = GetOptions::new().with_from_key().with_sort(target, order);
            d.get(&name, "\0", Some(options)).await;
        }
    }
    let sorted = |target, order| GetOptions::new().with_from_key().with_sort(target, order);
    let options = sorted(SortTarget::Version, SortOrder::None);
    d.get("sort: VERSION with no order sorts ascending", "\0", Some(options)).await;
    let options = sorted(SortTarget::Mod, SortOrder::Descend).with_limit(3);
    d.get("sort: MOD DESCEND with limit", "\0", Some(options)).await;
    // etcd fetches only `limit + 1` keys when no order is given, then sorts those; Strata sorts
    // the whole range (one of the DELIBERATE differences).
    let options = sorted(SortTarget::Value, SortOrder::None).with_limit(3);
    d.get("sort: VALUE with no order, with limit", "\0", Some(options)).await;
    let options = sorted(SortTarget::Value, SortOrder::Descend).with_keys_only();
    d.get("sort: VALUE DESCEND, keys_only", "\0", Some(options)).await;
}

/// DeleteRange on single keys and spans, then the history that still holds the deleted keys.
pub(super) async fn deletes(d: &mut Differ) {
    let before = d.revision;
    let with_prev = || DeleteOptions::new().with_prev_key();
    d.delete("delete: single key with prev_kv", "c", Some(with_prev())).await;
    d.delete("delete: missing key", "nope", Some(with_prev())).await;
    d.delete("delete: range [d, f) with prev_kv", "d", Some(with_prev().with_range("f"))).await;
    d.delete("delete: prefix without prev_kv", "prefix/", Some(DeleteOptions::new().with_prefix()))
        .await;
    d.delete("delete: end before start", "b", Some(DeleteOptions::new().with_range("a"))).await;
    d.get("get: deleted key", "c", None).await;
    d.put("put: recreate a deleted key", "c", "8", Some(PutOptions::new().with_prev_key())).await;
    d.get("get: recreated key starts at version 1", "c", None).await;
    let old = GetOptions::new().with_from_key().with_revision(before);
    d.get("range: history still holds the deleted keys", "\0", Some(old)).await;
}

/// Txn: every compare target with every operator, both branches, nested transactions, and
/// reads that see the transaction's own writes.
pub(super) async fn txns(d: &mut Differ) {
    d.put("put: txn fixture", "t", "v1", None).await;
    let created = d.revision;
    d.put("put: txn fixture again", "t", "v2", None).await;
    let modified = d.revision;
    compares(d, created, modified).await;

    let txn = Txn::new()
        .when([Compare::value("t", CompareOp::Equal, "v2")])
        .and_then([
            TxnOp::put("t", "v3", Some(PutOptions::new().with_prev_key())),
            TxnOp::put("t/1", "x", None),
        ])
        .or_else([TxnOp::put("t/else", "y", None)]);
    d.txn("txn: success branch writes", txn).await;
    let txn = Txn::new()
        .when([Compare::version("t", CompareOp::Equal, 100)])
        .and_then([TxnOp::put("t/then", "y", None)])
        .or_else([
            TxnOp::delete("t/1", Some(DeleteOptions::new().with_prev_key())),
            TxnOp::put("t/2", "z", Some(PutOptions::new().with_prev_key())),
        ]);
    d.txn("txn: failure branch writes", txn).await;
    let txn = Txn::new().and_then([
        TxnOp::put("t/3", "new", None),
        TxnOp::get("t/", Some(GetOptions::new().with_prefix())),
        TxnOp::get("t/3", None),
    ]);
    d.txn("txn: range sees the txn's own put", txn).await;
    let txn = Txn::new().and_then([
        TxnOp::delete("t/", Some(DeleteOptions::new().with_prefix().with_prev_key())),
        TxnOp::get("t/", Some(GetOptions::new().with_prefix().with_count_only())),
    ]);
    d.txn("txn: range sees the txn's own delete", txn).await;
    let txn = Txn::new().and_then([
        TxnOp::delete("nothing/", Some(DeleteOptions::new().with_prefix())),
        TxnOp::get("t", None),
    ]);
    d.txn("txn: delete of nothing writes nothing", txn).await;

    nested_txns(d).await;

    let txn = Txn::new().and_then([TxnOp::get("t", None), TxnOp::get("n/", prefix())]);
    d.txn("txn: read only", txn).await;
    d.txn("txn: empty", Txn::new()).await;
    let old = GetOptions::new().with_revision(created);
    d.txn("txn: history read inside", Txn::new().and_then([TxnOp::get("t", Some(old))])).await;
    let keep = PutOptions::new().with_ignore_value().with_prev_key();
    d.txn("txn: ignore_value put", Txn::new().and_then([TxnOp::put("t", "", Some(keep))])).await;
    d.get("get: after the transactions", "\0", Some(GetOptions::new().with_from_key())).await;
}

pub(super) fn prefix() -> Option<GetOptions> {
    Some(GetOptions::new().with_prefix())
}

/// One read-only transaction per compare: the branch taken shows whether it held.
async fn compares(d: &mut Differ, created: i64, modified: i64) {
    use CompareOp::{Equal, Greater, Less, NotEqual};
    let cases = [
        ("value = v2", Compare::value("t", Equal, "v2")),
        ("value != v2", Compare::value("t", NotEqual, "v2")),
        ("value > v1", Compare::value("t", Greater, "v1")),
        ("value < v1", Compare::value("t", Less, "v1")),
        ("version = 2", Compare::version("t", Equal, 2)),
        ("version != 3", Compare::version("t", NotEqual, 3)),
        ("version > 1", Compare::version("t", Greater, 1)),
        ("version < 2", Compare::version("t", Less, 2)),
        ("create = its create revision", Compare::create_revision("t", Equal, created)),
        ("create != 0", Compare::create_revision("t", NotEqual, 0)),
        ("create > its create revision", Compare::create_revision("t", Greater, created)),
        ("create < its create revision + 1", Compare::create_revision("t", Less, created + 1)),
        ("mod = its mod revision", Compare::mod_revision("t", Equal, modified)),
        ("mod != its mod revision", Compare::mod_revision("t", NotEqual, modified)),
        ("mod > its create revision", Compare::mod_revision("t", Greater, created)),
        ("mod < its mod revision", Compare::mod_revision("t", Less, modified)),
        ("lease = 0", Compare::lease("t", Equal, 0)),
        ("lease != 0", Compare::lease("t", NotEqual, 0)),
        ("lease > 0", Compare::lease("t", Greater, 0)),
        ("lease < 1", Compare::lease("t", Less, 1)),
        // A missing key: its value never compares, everything else compares as zero.
        ("missing key value = empty", Compare::value("missing", Equal, "")),
        ("missing key version = 0", Compare::version("missing", Equal, 0)),
        ("missing key create < 1", Compare::create_revision("missing", Less, 1)),
        ("missing key mod > 0", Compare::mod_revision("missing", Greater, 0)),
        ("missing key lease = 0", Compare::lease("missing", Equal, 0)),
        // Over a span, every key in it must satisfy the compare; an empty span is one missing key.
        ("span [a, c) version > 0", Compare::version("a", Greater, 0).with_range("c")),
        ("span [a, c) value = 4", Compare::value("a", Equal, "4").with_range("c")),
        ("empty prefix version = 0", Compare::version("prefix/", Equal, 0).with_prefix()),
    ];
    for (label, compare) in cases {
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::get("t", None)])
            .or_else([TxnOp::get("a", None)]);
        d.txn(&format!("txn compare: {label}"), txn).await;
    }
    let txn = Txn::new()
        .when([Compare::version("t", Equal, 2), Compare::value("t", Equal, "other")])
        .and_then([TxnOp::get("t", None)]);
    d.txn("txn compare: all must hold", txn).await;
}

/// Transactions inside transactions. Each branch writes as many keys as the other, so a wrong
/// branch shows in the values without shifting the revisions of every later step.
async fn nested_txns(d: &mut Differ) {
    let inner = Txn::new()
        .when([Compare::value("t", CompareOp::Equal, "v3")])
        .and_then([TxnOp::put("n/inner", "then", None), TxnOp::get("n/", prefix())])
        .or_else([TxnOp::put("n/inner", "else", None)]);
    let txn = Txn::new()
        .when([Compare::version("t", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("n/outer", "1", None), TxnOp::txn(inner)]);
    d.txn("txn: nested", txn).await;
    // etcd decides every branch, nested ones included, before executing any operation.
    let inner = Txn::new()
        .when([Compare::value("n/flag", CompareOp::Equal, "on")])
        .and_then([TxnOp::put("n/seen", "yes", None)])
        .or_else([TxnOp::put("n/seen", "no", None)]);
    let txn = Txn::new().and_then([TxnOp::put("n/flag", "on", None), TxnOp::txn(inner)]);
    d.txn("txn: nested compares see the store before the txn", txn).await;
    let inner = Txn::new().and_then([TxnOp::get("n/", prefix())]);
    let txn =
        Txn::new().when([Compare::version("t", CompareOp::Equal, 0)]).or_else([TxnOp::txn(inner)]);
    d.txn("txn: nested in the failure branch", txn).await;
    let inner = Txn::new()
        .when([Compare::value("t", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("n/same", "a", None)])
        .or_else([TxnOp::put("n/same", "b", None)]);
    d.txn(
        "txn: nested then and else may put the same key",
        Txn::new().and_then([TxnOp::txn(inner)]),
    )
    .await;
}

/// Compaction, and reads and compactions around the compacted revision.
pub(super) async fn compaction(d: &mut Differ) {
    let at = d.revision - 2;
    let all = || GetOptions::new().with_from_key();
    d.compact("compact", at, None).await;
    d.get("range: at the compaction revision", "\0", Some(all().with_revision(at))).await;
    d.get("error: compacted revision", "\0", Some(all().with_revision(at - 1))).await;
    d.get("error: future revision", "\0", Some(all().with_revision(d.revision + 1))).await;
    d.compact("error: compact at the compacted revision", at, None).await;
    d.compact("error: compact below the compacted revision", at - 1, None).await;
    d.compact("error: compact at a future revision", d.revision + 1, None).await;
    let old = Txn::new().and_then([TxnOp::get("t", Some(GetOptions::new().with_revision(at - 1)))]);
    d.txn("error: txn range at a compacted revision", old).await;
    let future = GetOptions::new().with_revision(d.revision + 1);
    d.txn(
        "error: txn range at a future revision",
        Txn::new().and_then([TxnOp::get("t", Some(future))]),
    )
    .await;
    d.put("put: after compaction", "after", "1", None).await;
    let now = d.revision;
    d.compact(
        "compact: physical, at the current revision",
        now,
        Some(CompactionOptions::new().with_physical()),
    )
    .await;
    d.get("range: at the current, compacted revision", "\0", Some(all().with_revision(now))).await;
    d.get("get: every key after compacting everything", "\0", Some(all())).await;
}

/// Requests etcd rejects. Transactions here that a server might wrongly accept are guarded by a
/// compare that never holds, so that nothing is written either way and a difference here does
/// not shift the revisions of later steps.
pub(super) async fn errors(d: &mut Differ) {
    d.put("error: put with empty key", "", "v", None).await;
    d.get("error: get with empty key", "", None).await;
    d.delete("error: delete with empty key", "", None).await;
    let txn = Txn::new().when([Compare::version("", CompareOp::Equal, 0)]);
    d.txn("error: txn compare with empty key", txn).await;
    d.txn("error: txn put with empty key", guarded([TxnOp::put("", "v", None)])).await;
    let big = vec![b'x'; REQUEST_BYTES_MAX + 1];
    d.put("error: request too large", "big", big, None).await;

    let puts =
        |n: usize| (0..n).map(|i| TxnOp::put(format!("many/{i}"), "v", None)).collect::<Vec<_>>();
    d.txn("error: too many ops in txn", guarded(puts(TXN_OPS_MAX + 1))).await;
    d.txn("txn: as many ops as allowed", guarded(puts(TXN_OPS_MAX))).await;
    let many: Vec<Compare> = (0..=TXN_OPS_MAX)
        .map(|i| Compare::version(format!("many/{i}"), CompareOp::Equal, 0))
        .collect();
    d.txn("error: too many compares in txn", Txn::new().when(many)).await;
    // A nested transaction may use only what its parent's largest list leaves of the budget.
    let inner = Txn::new().and_then(puts(TXN_OPS_MAX - 1));
    let txn = guarded([TxnOp::put("budget", "v", None), TxnOp::txn(inner)]);
    d.txn("error: nested txn over the remaining op budget", txn).await;

    duplicates(d).await;

    d.put("error: lease not found", "k", "v", Some(PutOptions::new().with_lease(12345))).await;
    let leased = TxnOp::put("k", "v", Some(PutOptions::new().with_lease(12345)));
    d.txn("error: txn put with lease not found", Txn::new().and_then([leased])).await;
    let keep = || Some(PutOptions::new().with_ignore_value());
    d.put("error: ignore_value on a missing key", "missing", "", keep()).await;
    let txn = Txn::new().and_then([TxnOp::put("missing", "", keep())]);
    d.txn("error: txn ignore_value on a missing key", txn).await;
    d.put("error: value provided with ignore_value", "a", "v", keep()).await;
    let keep_lease = || PutOptions::new().with_ignore_lease();
    d.put("error: ignore_lease on a missing key", "missing", "v", Some(keep_lease())).await;
    d.put("error: lease provided with ignore_lease", "a", "v", Some(keep_lease().with_lease(5)))
        .await;
    let long_key = vec![b'k'; 28 * 1024 + 1];
    d.get("get: key above Strata's 28 KiB key cap", long_key, None).await;
}

/// A transaction whose `ops` never run: its only compare fails and it has no failure branch.
fn guarded(ops: impl Into<Vec<TxnOp>>) -> Txn {
    Txn::new().when([Compare::version("guard", CompareOp::Greater, 0)]).and_then(ops)
}

/// A transaction branch may not write one key twice, nor write and delete it.
async fn duplicates(d: &mut Differ) {
    let put = |key: &str| TxnOp::put(key, "v", None);
    let delete =
        |key: &str, end: &str| TxnOp::delete(key, Some(DeleteOptions::new().with_range(end)));
    let delete_one = |key: &str| TxnOp::delete(key, None);
    let delete_from = |key: &str| TxnOp::delete(key, Some(DeleteOptions::new().with_from_key()));
    let nested = |ops: Vec<TxnOp>| TxnOp::txn(Txn::new().and_then(ops));

    d.txn("error: duplicate put/put", guarded([put("dup"), put("dup")])).await;
    d.txn(
        "error: duplicate put + delete range covering it",
        guarded([put("dup/b"), delete("dup/a", "dup/c")]),
    )
    .await;
    d.txn(
        "error: duplicate put + delete of the same key",
        guarded([delete_one("dup"), put("dup")]),
    )
    .await;
    d.txn(
        "duplicate: put + from-key delete covering it",
        guarded([put("dup/z"), delete_from("dup/a")]),
    )
    .await;
    d.txn(
        "txn: put outside a deleted range is allowed",
        guarded([put("dup/c"), delete("dup/a", "dup/c")]),
    )
    .await;
    d.txn(
        "txn: overlapping deletes are allowed",
        guarded([delete("dup/a", "dup/c"), delete("dup/b", "dup/d")]),
    )
    .await;
    d.txn(
        "error: duplicate put + put in a nested txn",
        guarded([put("dup"), nested(vec![put("dup")])]),
    )
    .await;
    d.txn(
        "error: duplicate delete in a nested txn + put",
        guarded([nested(vec![delete_one("dup")]), put("dup")]),
    )
    .await;
    d.txn(
        "error: duplicate put in a nested txn + delete range",
        guarded([nested(vec![put("dup/b")]), delete("dup/a", "dup/c")]),
    )
    .await;
}
