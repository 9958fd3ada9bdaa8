//! `Range`: reads of one key, a span of keys, or a prefix, at the current or a past revision,
//! with etcd's limit, count, sort and filter semantics.

use std::cmp::Ordering;

use super::AppliedState;
use super::view::View;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::pb::mvccpb::KeyValue;
use crate::{Error, Result};

/// etcd's `range_end` conventions: empty means "just `key`"; `"\0"` means "every key ≥ `key`".
/// Returns `[start, end)` with an empty `end` meaning unbounded.
pub fn key_span(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match range_end {
        [] => {
            let mut end = key.to_vec();
            end.push(0);
            (key.to_vec(), end)
        }
        [0] => (key.to_vec(), Vec::new()),
        end => (key.to_vec(), end.to_vec()),
    }
}

/// The `range_end` that makes a request cover every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff incremented and the rest
/// dropped, or `"\0"` (every key from `prefix` on) when every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Which revision a read at `requested` (0: the current one) sees, or why it cannot.
pub fn read_revision(state: &AppliedState, requested: i64) -> Result<i64> {
    if requested <= 0 {
        return Ok(state.revision);
    }
    if requested > state.revision {
        return Err(Error::FutureRevision);
    }
    if requested < state.compact_revision {
        return Err(Error::Compacted);
    }
    Ok(requested)
}

/// Serves a `Range`. `current_revision` is what the response header reports (etcd reports the
/// store's current revision, not the revision read at).
pub fn range(view: &View<'_>, state: &AppliedState, req: &RangeRequest) -> Result<RangeResponse> {
    let revision = read_revision(state, req.revision)?;
    let (start, end) = key_span(&req.key, &req.range_end);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let sort_order = effective_sort_order(req);
    // Without sorting or filtering, stop collecting after limit + 1 keys (the extra one decides
    // `more`); otherwise everything must be collected first.
    let collect_max = if req.limit > 0 && sort_order == SortOrder::None && !filtered {
        req.limit as usize + 1
    } else {
        usize::MAX
    };
    let mut kvs = Vec::new();
    let mut count: i64 = 0;
    view.for_each_live(&start, &end, revision, |live| {
        count += 1;
        if !req.count_only && kvs.len() < collect_max {
            kvs.push(live.into_key_value()?);
        }
        Ok(true)
    })?;
    if req.count_only {
        kvs.clear();
    }
    kvs.retain(|kv| passes_filters(req, kv));
    if sort_order != SortOrder::None {
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        kvs.sort_by(|a, b| {
            let ordering = compare_by(target, a, b);
            if sort_order == SortOrder::Descend { ordering.reverse() } else { ordering }
        });
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader { revision: state.revision, ..Default::default() }),
        kvs,
        more,
        count,
    })
}

/// The part of `req` for the keys `[first, past)` of one range (an empty `past`: to the end
/// of the key space), to be served by that range and joined with the others by [`merge`].
/// Without sorting or filtering each part stops at the request's limit; otherwise a part must
/// return every key, since any of them may make the cut once the parts are joined.
pub fn part_of(req: &RangeRequest, first: &[u8], past: &[u8]) -> RangeRequest {
    let key = req.key.as_slice().max(first).to_vec();
    let end_of = |end: &[u8]| (!end.is_empty()).then(|| end.to_vec());
    let wanted = if req.range_end == [0] { None } else { Some(req.range_end.clone()) };
    let range_end = match (wanted, end_of(past)) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => vec![0],
    };
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let limit =
        if effective_sort_order(req) == SortOrder::None && !filtered { req.limit } else { 0 };
    RangeRequest { key, range_end, limit, ..req.clone() }
}

/// Joins the answers of a request's parts (see [`part_of`]), in key order of their ranges,
/// into the answer one store holding every key would give, at `revision`.
pub fn merge(req: &RangeRequest, parts: Vec<RangeResponse>, revision: i64) -> RangeResponse {
    let count = parts.iter().map(|p| p.count).sum();
    let mut more = parts.iter().any(|p| p.more);
    let mut kvs: Vec<KeyValue> = parts.into_iter().flat_map(|p| p.kvs).collect();
    let sort_order = effective_sort_order(req);
    if sort_order != SortOrder::None {
        // Stable: keys equal in the target keep their key order, as in one store.
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        kvs.sort_by(|a, b| {
            let ordering = compare_by(target, a, b);
            if sort_order == SortOrder::Descend { ordering.reverse() } else { ordering }
        });
    }
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    RangeResponse {
        header: Some(ResponseHeader { revision, ..Default::default() }),
        kvs,
        more,
        count,
    }
}

/// etcd returns keys in ascending key order already; it sorts only when asked for another
/// order, and sorts ascending by default when asked for another target.
fn effective_sort_order(req: &RangeRequest) -> SortOrder {
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    match (target, order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (SortTarget::Key, order) => order,
        (_, SortOrder::None) => SortOrder::Ascend,
        (_, order) => order,
    }
}

fn compare_by(target: SortTarget, a: &KeyValue, b: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_after_its_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"job/"), b"job0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0", "every key from the prefix on");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
