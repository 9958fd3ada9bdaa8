//! Serving reads from a replica's applied state: what a linearizable read does once ReadIndex
//! released it, and what a serializable read does at once. The server's handlers, the
//! simulator and the golden scenarios all read through here, so that they serve the same
//! answers.
//!
//! A read runs against the engine at the revision the replica has published, through the
//! range's key index. The one hazard is compaction: its floor is published before its
//! deletions land (see `round.rs`), so a read that saw the floor unchanged from start to end
//! saw no deletions it needed. Otherwise it runs again on the new state, where a read below the
//! new floor fails with "compacted", as it should. The floor can also run ahead of the
//! published revision for a moment within a round; that state is skipped too.

use std::sync::atomic::Ordering;

use strata_storage::Engine;

use super::shared::RangeShared;
use crate::command::Request;
use crate::mvcc::view::View;
use crate::mvcc::{AppliedState, Applier, Response, locks, read};
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, TxnRequest, TxnResponse};
use crate::{Error, RangeId, Result};

/// Runs `read` against the replica's published state, at a state no compaction overtook;
/// returns its result and the state it ran at.
pub fn read_stable<T>(
    shared: &RangeShared,
    read: impl Fn(AppliedState) -> Result<T>,
) -> Result<(T, AppliedState)> {
    loop {
        let state = shared.read_state();
        if state.compact_revision > state.revision {
            // Only between two stores of one round's publication (another thread's): retry.
            std::thread::yield_now();
            continue;
        }
        let result = read(state);
        if shared.compact_revision.load(Ordering::Acquire) == state.compact_revision {
            return result.map(|value| (value, state));
        }
    }
}

/// Serves a `Range` from the replica. The header carries the revision it was served at; the
/// caller fills in the rest.
pub fn range(
    engine: &dyn Engine,
    shared: &RangeShared,
    request: &RangeRequest,
) -> Result<RangeResponse> {
    let view = View::with_memo(engine, &shared.memo);
    let (response, _) = read_stable(shared, |state| read::range(&view, &state, request))?;
    Ok(response)
}

/// Serves a `Range` at a read timestamp from the revision oracle, in a range taking its
/// revisions from it: the replica has applied every write stamped at or below `read_ts` (its
/// ReadIndex said so), and sees none above it. The header carries `read_ts`.
pub fn range_at(
    engine: &dyn Engine,
    shared: &RangeShared,
    request: &RangeRequest,
    read_ts: i64,
) -> Result<RangeResponse> {
    let view = View::with_memo(engine, &shared.memo);
    check_locks(shared, &request.key, &request.range_end, read_ts)?;
    let (response, _) = read_stable(shared, |state| {
        // The read is at `read_ts`, whether the range's own last revision is below it (the
        // cluster's moved on elsewhere) or above it (the range applied later writes since): a
        // read over several ranges is one snapshot only if each part is read at its timestamp.
        let state = AppliedState { revision: read_ts, ..state };
        read::range(&view, &state, request)
    })?;
    Ok(response)
}

/// Refuses a read at `read_ts` of keys that a transaction across ranges, started at or below
/// it, holds locked: it may yet commit at or below `read_ts` (see `mvcc::locks`). The caller
/// retries, and the lock is resolved meanwhile.
fn check_locks(shared: &RangeShared, key: &[u8], range_end: &[u8], read_ts: i64) -> Result<()> {
    if shared.lock_count.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let descriptor = shared.descriptor.read().expect("descriptor lock").clone();
    let spans: Vec<_> = locks::clip(key, range_end, descriptor.span()).into_iter().collect();
    let table = shared.locks.read().expect("lock table lock");
    locks::check(table.locks().map(|(_, lock)| lock), &spans, &[], read_ts)
}

/// Serves a transaction that writes nothing (every branch only reads), as etcd serves it: like
/// a read, without a log entry. It runs on a scratch applier whose writes are discarded.
///
/// With a read timestamp (a range taking its revisions from the oracle) the answer reports it,
/// as [`range_at`] does: the range has applied every write of its own at or below it.
pub fn read_only_txn(
    engine: &dyn Engine,
    shared: &RangeShared,
    range_id: RangeId,
    request: TxnRequest,
    read_ts: Option<i64>,
) -> Result<TxnResponse> {
    let request = Request::Txn(request);
    let descriptor = shared.descriptor.read().expect("descriptor lock").clone();
    let (response, state) = read_stable(shared, |state| {
        // Locked keys are refused whatever the read timestamp (see `mvcc::locks`).
        let applier = Applier::new(engine, range_id, state).with_span(descriptor.span());
        applier.with_locks(&shared.locks).apply(&request)
    })?;
    match response {
        Response::Txn(mut response) => {
            let header = response.header.get_or_insert_default();
            header.revision = state.revision.max(read_ts.unwrap_or(0));
            Ok(response)
        }
        other => Err(Error::Internal(format!("a transaction answered {other:?}"))),
    }
}
