//! The coordinator of a transaction across ranges, and the resolution of a lock its coordinator
//! abandoned: pure state machines (`docs/sharding.md`, "Transactions across ranges"; the
//! records and the rules each range applies are `mvcc::locks`).
//!
//! A machine says what it needs done ([`Ask`]: a read timestamp, a fresh revision, a read at a
//! revision, a proposal to a range) and is told how each ended ([`Answer`]); the caller does
//! the I/O — the server's handlers over the shell, the simulator over its drivers — so both run
//! the same protocol:
//!
//! 1. Every range the transaction touches is prepared at once, under its start timestamp.
//! 2. With every lock held, a fresh revision from the oracle is the commit revision.
//! 3. The range of the primary key commits first — the commit point — then the others. (A
//!    range's leader taking a commit stamps nothing at or below its revision from then on: see
//!    `raftstore::stamping`.) Their parts are joined into the one answer etcd gives.
//!
//! A prepare that fails (a lock conflict above all) rolls the attempt back everywhere; the
//! caller tries again with a new machine. The primary's status is dropped afterwards
//! (`TxnForget`) unless a prepare may still apply late.
//!
//! The same machine revokes a lease whose keys lie in several ranges ([`Coordinator::revoke`]):
//! the meta range is prepared first and is the primary; its prepare names the spans the lease
//! was registered for, and the ranges overlapping them are prepared next (`mvcc::apply::leases`).

use crate::command::{
    LeaseMarkRequest, LeaseRegister, Request, TxnCommit, TxnPrepare, TxnRollback,
};
use crate::mvcc::locks::{self, LockRecord, Span, TxnId, TxnStatus};
use crate::mvcc::{Response, judge_compares, read};
use crate::pb::etcdserverpb::request_op::Request as OpRequest;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    DeleteRangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::raftstore::{RangeShared, SharedRanges};
use crate::range::META_RANGE_ID;
use crate::{Error, RangeId, Result};

/// Something a machine needs done. `slot` is a range's place in the transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Ask {
    /// A revision from the oracle that nobody else is given.
    Revision,
    /// A proposal, whose result is wanted.
    Propose { slot: usize, range_id: RangeId, request: Request },
    /// A proposal nobody waits for.
    Send { range_id: RangeId, request: Request },
    /// The ranges overlapping these spans (a lease's registrations), as [`Participant`]s.
    Route { spans: Vec<Span> },
}

/// How an [`Ask`] ended.
#[derive(Debug)]
pub enum Answer {
    Revision(Result<i64>),
    Proposed(usize, Result<Response>),
    /// (`RangeUnavailable` when the node lacks a range the spans need: the attempt ends.)
    Routed(Result<Vec<Participant>>),
}

/// What a machine does next: asks to send, and once it is done, its outcome (sent with the
/// last asks, which nobody waits for).
#[derive(Debug, Default)]
pub struct Progress {
    pub asks: Vec<Ask>,
    pub outcome: Option<Result<TxnResponse>>,
}

impl Progress {
    fn asks(asks: Vec<Ask>) -> Self {
        Self { asks, outcome: None }
    }

    fn done(outcome: Result<TxnResponse>) -> Self {
        Self { asks: Vec::new(), outcome: Some(outcome) }
    }

    fn waiting() -> Self {
        Self::default()
    }
}

/// A range a transaction touches, with its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub range_id: RangeId,
    pub span: (Vec<u8>, Vec<u8>),
}

impl Participant {
    pub fn of(range_id: RangeId, shared: &RangeShared) -> Self {
        let descriptor = shared.descriptor.read().expect("descriptor lock");
        let (start, end) = descriptor.span();
        Self { range_id, span: (start.to_vec(), end.to_vec()) }
    }

    fn routed_span(&self) -> Span {
        Span { start: self.span.0.clone(), end: self.span.1.clone() }
    }
}

/// The ranges of a node that a transaction touches (`RangeUnavailable` if the node lacks one).
pub fn participants(txn: &TxnRequest, ranges: &SharedRanges) -> Result<Vec<Participant>> {
    let mut spans = Vec::new();
    locks::txn_spans(txn, &mut spans);
    Ok((ranges.holding_any(&spans)?.iter())
        .map(|(range_id, shared)| Participant::of(*range_id, shared))
        .collect())
}

/// The ranges of a node overlapping `spans` (the spans a lease was registered for;
/// `RangeUnavailable` if the node lacks one).
pub fn route(spans: &[Span], ranges: &SharedRanges) -> Result<Vec<Participant>> {
    const TO_THE_END: &[u8] = &[0];
    let etcd: Vec<(&[u8], &[u8])> = (spans.iter())
        .map(|span| {
            (span.start.as_slice(), if span.end.is_empty() { TO_THE_END } else { &span.end })
        })
        .collect();
    Ok((ranges.holding_any(&etcd)?.iter())
        .map(|(range_id, shared)| Participant::of(*range_id, shared))
        .collect())
}

/// A start timestamp for a transaction coordinated on a node: the highest closed revision of
/// the node's ranges. Any revision the oracle has handed out will do — the commit revision is
/// fresh, so above it — and a recent one holds back the ranges' closed revisions (and readers
/// at or above it) the least; this one costs no round trip.
pub fn start_ts(ranges: &SharedRanges) -> i64 {
    ranges.all().iter().map(|(_, shared)| shared.closed_revision()).max().unwrap_or(0)
}

/// Refuses what transactions across ranges cannot do yet, with a message that names it.
pub fn check_supported(txn: &TxnRequest) -> Result<()> {
    for op in txn.success.iter().chain(&txn.failure) {
        let refused = match &op.request {
            Some(OpRequest::RequestTxn(_)) => "a nested transaction",
            Some(OpRequest::RequestPut(p)) if p.lease != 0 => "a put with a lease",
            Some(OpRequest::RequestPut(p)) if p.ignore_value || p.ignore_lease => {
                "a put with ignore_value or ignore_lease"
            }
            Some(OpRequest::RequestRange(r)) if r.revision != 0 => "a read at a past revision",
            _ => continue,
        };
        return Err(Error::AcrossRanges(refused.into()));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Routing,
    TakingRevision,
    CommittingPrimary,
    CommittingOthers,
    RollingBack,
    Done,
}

/// One attempt at a transaction across ranges.
pub struct Coordinator {
    /// The transaction (empty for a lease's revocation).
    txn: TxnRequest,
    /// The lease revoked (0 for a transaction), its incarnation once the meta range said, and
    /// for an expiry the term of the meta leader that found it expired.
    lease: i64,
    incarnation: u64,
    expiry_term: u64,
    start_ts: i64,
    /// The ranges it touches, in key order: the first holds the primary key.
    ranges: Vec<RangeId>,
    /// Their spans as routed (a range that split since refuses the prepare).
    spans: Vec<Span>,
    id: TxnId,
    primary_key: Vec<u8>,
    phase: Phase,
    /// Answers still due in this phase.
    waiting: usize,
    judged: Vec<Vec<i32>>,
    /// Why the attempt failed, and whether a prepare of it may still apply (then the primary's
    /// decision must stay, to fence it).
    failure: Option<Error>,
    unsettled: bool,
    /// Every rollback was answered.
    rolled_back: bool,
    commit: Option<TxnCommit>,
    parts: Vec<TxnResponse>,
}

impl Coordinator {
    /// Starts an attempt at `txn` over the ranges it touches, under the id `id`, at
    /// `start_ts` (see [`start_ts`]).
    pub fn start(
        txn: TxnRequest,
        mut ranges: Vec<Participant>,
        id: TxnId,
        start_ts: i64,
    ) -> Result<(Self, Progress)> {
        check_supported(&txn)?;
        ranges.sort_by(|a, b| a.span.0.cmp(&b.span.0));
        let Some(Participant { span: (start, end), .. }) = ranges.first() else {
            return Err(Error::Internal("a transaction across no range".into()));
        };
        let spans = locks::txn_spans_within(&txn, (start, end));
        let primary_key = (spans.into_iter().map(|span| span.start).min())
            .ok_or_else(|| Error::Internal("a transaction misses its first range".into()))?;
        let mut coordinator = Self::new(txn, 0, ranges, id, primary_key, start_ts);
        let progress = coordinator.prepare(0..coordinator.ranges.len());
        Ok((coordinator, progress))
    }

    /// Starts an attempt at revoking `lease`, whose keys lie in several ranges: `meta` (the
    /// meta range) is prepared first, then the ranges its answer names. `expiry_term`: for a
    /// lease found expired, the term of the meta leader whose clock found it (0: a client's
    /// revocation); the meta range refuses the revocation in entries of another term.
    pub fn revoke(
        lease: i64,
        expiry_term: u64,
        meta: Participant,
        id: TxnId,
        start_ts: i64,
    ) -> (Self, Progress) {
        let primary_key = meta.span.0.clone();
        let mut coordinator =
            Self::new(TxnRequest::default(), lease, vec![meta], id, primary_key, start_ts);
        coordinator.expiry_term = expiry_term;
        let progress = coordinator.prepare(0..1);
        (coordinator, progress)
    }

    fn new(
        txn: TxnRequest,
        lease: i64,
        ranges: Vec<Participant>,
        id: TxnId,
        primary_key: Vec<u8>,
        start_ts: i64,
    ) -> Self {
        let count = ranges.len();
        Self {
            txn,
            lease,
            incarnation: 0,
            expiry_term: 0,
            start_ts,
            spans: ranges.iter().map(Participant::routed_span).collect(),
            ranges: ranges.into_iter().map(|p| p.range_id).collect(),
            id,
            primary_key,
            phase: Phase::Preparing,
            waiting: 0,
            judged: vec![Vec::new(); count],
            failure: None,
            unsettled: false,
            rolled_back: true,
            commit: None,
            parts: vec![TxnResponse::default(); count],
        }
    }

    pub fn handle(&mut self, answer: Answer) -> Progress {
        match (&self.phase, answer) {
            (Phase::Preparing, Answer::Proposed(slot, result)) => self.prepared(slot, result),
            (Phase::Routing, Answer::Routed(found)) => self.routed(found),
            (Phase::TakingRevision, Answer::Revision(Ok(commit_ts))) => {
                let commit = TxnCommit {
                    id: self.id.to_vec(),
                    primary_key: self.primary_key.clone(),
                    commit_ts,
                    compares: judge_compares(&self.txn.compare, &self.judged),
                };
                self.commit = Some(commit);
                self.phase = Phase::CommittingPrimary;
                Progress::asks(vec![self.propose_commit(0)])
            }
            (Phase::TakingRevision, Answer::Revision(Err(e))) => self.roll_back(e),
            (Phase::CommittingPrimary, Answer::Proposed(0, result)) => match result {
                Ok(Response::Txn(part)) => {
                    self.parts[0] = part;
                    self.commit_others()
                }
                // Taken for abandoned and rolled back meanwhile: a prepare may not have
                // applied yet everywhere, so the decision stays.
                Err(Error::TxnAborted) => {
                    self.unsettled = true;
                    self.roll_back(Error::TxnAborted)
                }
                // An expiry carried past the term of the leader that found it: refused, so
                // nothing committed.
                Err(Error::NotLeader) => self.roll_back(Error::NotLeader),
                // The outcome is unknown: whoever finds its locks finishes it.
                Err(e) => self.finish(Err(e)),
                Ok(other) => self.finish(Err(unexpected(other))),
            },
            (Phase::CommittingOthers, Answer::Proposed(slot, result)) => {
                let part = match result {
                    Ok(Response::Txn(part)) => Ok((slot, part)),
                    // Committed at the primary: no range can have lost its lock since.
                    Err(Error::Locked(_) | Error::TxnAborted) => Err(Error::Internal(format!(
                        "range {} lost a committed transaction's lock",
                        self.ranges[slot]
                    ))),
                    Err(e) => Err(e),
                    Ok(other) => Err(unexpected(other)),
                };
                self.committed_part(part)
            }
            (Phase::RollingBack, Answer::Proposed(_, result)) => {
                self.rolled_back &= result.is_ok();
                self.waiting -= 1;
                if self.waiting > 0 {
                    return Progress::waiting();
                }
                let failure = self.failure.take().unwrap_or(Error::TxnAborted);
                let mut progress = self.finish(Err(failure));
                if self.rolled_back && !self.unsettled {
                    progress.asks.push(self.forget());
                }
                progress
            }
            (phase, answer) => {
                self.finish(Err(Error::Internal(format!("{answer:?} while {phase:?}"))))
            }
        }
    }

    /// Prepares the ranges in `slots`.
    fn prepare(&mut self, slots: std::ops::Range<usize>) -> Progress {
        self.phase = Phase::Preparing;
        self.waiting = slots.len();
        let txn = (self.lease == 0).then(|| self.txn.clone());
        let asks = (slots.map(|slot| (slot, self.ranges[slot])))
            .map(|(slot, range_id)| Ask::Propose {
                slot,
                range_id,
                request: Request::TxnPrepare(TxnPrepare {
                    id: self.id.to_vec(),
                    start_ts: self.start_ts,
                    primary_key: self.primary_key.clone(),
                    slot: slot as u32,
                    txn: txn.clone(),
                    revoke_lease: self.lease,
                    lease_incarnation: self.incarnation,
                    expiry_term: self.expiry_term,
                    span: Some(self.spans[slot].clone()),
                }),
            })
            .collect();
        Progress::asks(asks)
    }

    fn prepared(&mut self, slot: usize, result: Result<Response>) -> Progress {
        match result {
            Ok(Response::TxnPrepared(said)) => self.judged[slot] = said,
            // The meta range locked the lease: the ranges it was registered for come next.
            Ok(Response::LeasePrepared { incarnation, spans }) if self.lease != 0 => {
                self.incarnation = incarnation;
                self.phase = Phase::Routing;
                return Progress::asks(vec![Ask::Route { spans }]);
            }
            Ok(other) => self.failure = Some(unexpected(other)),
            Err(e) => {
                // Refused at apply, or never proposed: it will not apply later.
                let settled = matches!(
                    e,
                    Error::Locked(_)
                        | Error::TxnAborted
                        | Error::TooManyRequests
                        | Error::LeaseNotFound
                        | Error::NotLeader
                        | Error::EpochNotMatch { .. }
                );
                self.unsettled |= !settled;
                self.failure = self.failure.take().or(Some(e));
            }
        }
        self.waiting -= 1;
        if self.waiting > 0 {
            return Progress::waiting();
        }
        match self.failure.take() {
            Some(e) => self.roll_back(e),
            None => {
                self.phase = Phase::TakingRevision;
                Progress::asks(vec![Ask::Revision])
            }
        }
    }

    /// The ranges a lease was registered for are prepared, after the meta range.
    fn routed(&mut self, found: Result<Vec<Participant>>) -> Progress {
        let found = match found {
            Ok(found) => found,
            Err(e) => return self.roll_back(e),
        };
        let mut found: Vec<Participant> =
            found.into_iter().filter(|p| !self.ranges.contains(&p.range_id)).collect();
        found.sort_by(|a, b| a.span.0.cmp(&b.span.0));
        let first = self.ranges.len();
        self.ranges.extend(found.iter().map(|p| p.range_id));
        self.spans.extend(found.iter().map(Participant::routed_span));
        self.judged.resize(self.ranges.len(), Vec::new());
        self.parts.resize(self.ranges.len(), TxnResponse::default());
        if self.ranges.len() == first {
            self.phase = Phase::TakingRevision;
            return Progress::asks(vec![Ask::Revision]);
        }
        self.prepare(first..self.ranges.len())
    }

    fn propose_commit(&self, slot: usize) -> Ask {
        let commit = self.commit.clone().expect("a commit revision");
        Ask::Propose { slot, range_id: self.ranges[slot], request: Request::TxnCommit(commit) }
    }

    /// The primary committed: every other range commits.
    fn commit_others(&mut self) -> Progress {
        self.phase = Phase::CommittingOthers;
        self.waiting = self.ranges.len() - 1;
        if self.waiting == 0 {
            return self.committed();
        }
        Progress::asks((1..self.ranges.len()).map(|slot| self.propose_commit(slot)).collect())
    }

    fn committed_part(&mut self, part: Result<(usize, TxnResponse)>) -> Progress {
        match part {
            Ok((slot, part)) => self.parts[slot] = part,
            Err(e) => self.failure = self.failure.take().or(Some(e)),
        }
        self.waiting -= 1;
        if self.waiting > 0 {
            return Progress::waiting();
        }
        match self.failure.take() {
            // Committed, but a range's part is unknown: so is the answer. Its lock is
            // finished by the range's leader once found abandoned.
            Some(e) => self.finish(Err(e)),
            None => self.committed(),
        }
    }

    fn committed(&mut self) -> Progress {
        let commit = self.commit.as_ref().expect("a commit");
        let succeeded = commit.compares.iter().all(|held| *held);
        let parts = std::mem::take(&mut self.parts);
        let response = join(&self.txn, succeeded, parts, commit.commit_ts);
        let mut progress = self.finish(Ok(response));
        progress.asks.push(self.forget());
        progress
    }

    /// Rolls the attempt back in every range (the primary's decides it).
    fn roll_back(&mut self, failure: Error) -> Progress {
        self.failure = Some(failure);
        self.phase = Phase::RollingBack;
        self.waiting = self.ranges.len();
        let rollback = TxnRollback { id: self.id.to_vec(), primary_key: self.primary_key.clone() };
        let asks = (self.ranges.iter().enumerate())
            .map(|(slot, &range_id)| Ask::Propose {
                slot,
                range_id,
                request: Request::TxnRollback(rollback.clone()),
            })
            .collect();
        Progress::asks(asks)
    }

    fn forget(&self) -> Ask {
        let forget = TxnRollback { id: self.id.to_vec(), primary_key: self.primary_key.clone() };
        Ask::Send { range_id: self.ranges[0], request: Request::TxnForget(forget) }
    }

    fn finish(&mut self, outcome: Result<TxnResponse>) -> Progress {
        self.phase = Phase::Done;
        Progress::done(outcome)
    }
}

/// Finishing the transaction of a lock found abandoned in range `range_id`: the primary's
/// range decides it (rolled back, unless it committed), and the lock's range follows.
pub struct Resolution {
    lock: LockRecord,
    range_id: RangeId,
    primary_range: RangeId,
    commit: Option<TxnCommit>,
}

impl Resolution {
    pub fn start(lock: LockRecord, range_id: RangeId, primary_range: RangeId) -> (Self, Progress) {
        let rollback = TxnRollback { id: lock.id.clone(), primary_key: lock.primary_key.clone() };
        let ask = Ask::Propose {
            slot: 0,
            range_id: primary_range,
            request: Request::TxnRollback(rollback),
        };
        (Self { lock, range_id, primary_range, commit: None }, Progress::asks(vec![ask]))
    }

    pub fn handle(&mut self, answer: Answer) -> Progress {
        match answer {
            Answer::Proposed(0, Ok(Response::TxnDecided(status))) => self.decided(status),
            Answer::Proposed(1, Ok(_)) => Progress::done(Ok(TxnResponse::default())),
            Answer::Proposed(_, Err(e)) => Progress::done(Err(e)),
            other => Progress::done(Err(Error::Internal(format!("{other:?} while resolving")))),
        }
    }

    /// Whether the transaction was found committed (once decided).
    pub fn committed(&self) -> bool {
        self.commit.is_some()
    }

    fn decided(&mut self, status: TxnStatus) -> Progress {
        let (id, primary_key) = (self.lock.id.clone(), self.lock.primary_key.clone());
        if status.committed {
            let commit_ts = status.commit_ts;
            let (id, primary_key) = (id.clone(), primary_key.clone());
            self.commit = Some(TxnCommit { id, primary_key, commit_ts, compares: status.compares });
        }
        if self.range_id == self.primary_range {
            return Progress::done(Ok(TxnResponse::default())); // decided there, lock and all
        }
        let request = match self.commit.clone() {
            Some(commit) => Request::TxnCommit(commit),
            None => Request::TxnRollback(TxnRollback { id, primary_key }),
        };
        Progress::asks(vec![Ask::Propose { slot: 1, range_id: self.range_id, request }])
    }
}

/// Registering a lease for the keys of a range that refused a write giving keys the lease
/// (`Error::LeaseUnregistered`; see `mvcc::apply::leases`): the meta range records the range's
/// span with the lease ("lease not found" if there is none), then the range is told the
/// lease's incarnation. The caller then proposes the write again.
pub struct Registration {
    lease: i64,
    range_id: RangeId,
}

impl Registration {
    pub fn start(lease: i64, range: Participant) -> (Self, Progress) {
        let (start, end) = range.span;
        let span = Some(Span { start, end });
        let request = Request::LeaseRegister(LeaseRegister { lease, span });
        let ask = Ask::Propose { slot: 0, range_id: META_RANGE_ID, request };
        (Self { lease, range_id: range.range_id }, Progress::asks(vec![ask]))
    }

    pub fn handle(&mut self, answer: Answer) -> Progress {
        match answer {
            Answer::Proposed(0, Ok(Response::LeaseRegistered(incarnation))) => {
                let mark = LeaseMarkRequest { lease: self.lease, incarnation };
                let request = Request::LeaseMark(mark);
                Progress::asks(vec![Ask::Propose { slot: 1, range_id: self.range_id, request }])
            }
            Answer::Proposed(1, Ok(_)) => Progress::done(Ok(TxnResponse::default())),
            Answer::Proposed(_, Err(e)) => Progress::done(Err(e)),
            other => Progress::done(Err(Error::Internal(format!("{other:?} while registering")))),
        }
    }
}

/// Which of a range's locks to take for abandoned now: those first seen (by whoever looks,
/// recorded in `seen`) at least `ttl` ago. `seen` forgets the locks gone.
pub fn abandoned<T: Copy + Ord + std::ops::Sub<Output = D>, D: Ord>(
    seen: &mut std::collections::HashMap<Vec<u8>, T>,
    found: Vec<LockRecord>,
    now: T,
    ttl: D,
) -> Vec<LockRecord> {
    seen.retain(|id, _| found.iter().any(|lock| &lock.id == id));
    (found.into_iter())
        .filter(|lock| now - *seen.entry(lock.id.clone()).or_insert(now) >= ttl)
        .collect()
}

/// Joins the ranges' parts (in key order) into the answer one store would give.
fn join(txn: &TxnRequest, succeeded: bool, parts: Vec<TxnResponse>, commit_ts: i64) -> TxnResponse {
    let ops = if succeeded { &txn.success } else { &txn.failure };
    let header = || Some(ResponseHeader { revision: commit_ts, ..Default::default() });
    let mut parts: Vec<std::vec::IntoIter<ResponseOp>> =
        parts.into_iter().map(|part| part.responses.into_iter()).collect();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops.iter().filter(|op| op.request.is_some()) {
        let pieces: Vec<OpResponse> =
            parts.iter_mut().filter_map(|part| part.next()?.response).collect();
        let response = match &op.request {
            Some(OpRequest::RequestRange(r)) => {
                let ranges = pieces.into_iter().filter_map(|piece| match piece {
                    OpResponse::ResponseRange(range) => Some(range),
                    _ => None,
                });
                let mut merged = read::merge(r, ranges.collect(), commit_ts);
                merged.header = header();
                OpResponse::ResponseRange(merged)
            }
            Some(OpRequest::RequestPut(_)) => {
                // The range holding the key answered it; the others left it empty.
                let mut put = (pieces.into_iter())
                    .find_map(|piece| match piece {
                        OpResponse::ResponsePut(put) if put.header.is_some() => Some(put),
                        _ => None,
                    })
                    .unwrap_or_default();
                put.header = header();
                OpResponse::ResponsePut(put)
            }
            _ => {
                let mut deleted = DeleteRangeResponse { header: header(), ..Default::default() };
                for piece in pieces {
                    if let OpResponse::ResponseDeleteRange(part) = piece {
                        deleted.deleted += part.deleted;
                        deleted.prev_kvs.extend(part.prev_kvs);
                    }
                }
                OpResponse::ResponseDeleteRange(deleted)
            }
        };
        responses.push(ResponseOp { response: Some(response) });
    }
    TxnResponse { header: header(), succeeded, responses }
}

fn unexpected(response: Response) -> Error {
    Error::Internal(format!("unexpected response kind {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{PutRequest, RequestOp};

    fn participants() -> Vec<Participant> {
        // Given out of key order: the coordinator orders them, the first holding the primary.
        vec![
            Participant { range_id: 2, span: (b"m".to_vec(), Vec::new()) },
            Participant { range_id: 1, span: (Vec::new(), b"m".to_vec()) },
        ]
    }

    fn puts() -> TxnRequest {
        let put = |key: &str| RequestOp {
            request: Some(OpRequest::RequestPut(PutRequest {
                key: key.into(),
                ..Default::default()
            })),
        };
        TxnRequest { success: vec![put("x"), put("a")], ..Default::default() }
    }

    fn proposals(progress: &Progress) -> Vec<(usize, RangeId, &'static str)> {
        (progress.asks.iter())
            .filter_map(|ask| match ask {
                Ask::Propose { slot, range_id, request } => {
                    let kind = match request {
                        Request::TxnPrepare(_) => "prepare",
                        Request::TxnCommit(_) => "commit",
                        Request::TxnRollback(_) => "rollback",
                        _ => "other",
                    };
                    Some((*slot, *range_id, kind))
                }
                _ => None,
            })
            .collect()
    }

    fn forgets(progress: &Progress) -> bool {
        (progress.asks.iter())
            .any(|ask| matches!(ask, Ask::Send { request: Request::TxnForget(_), range_id: 1 }))
    }

    fn prepared(machine: &mut Coordinator) -> Progress {
        let said = || Ok(Response::TxnPrepared(Vec::new()));
        assert!(machine.handle(Answer::Proposed(1, said())).asks.is_empty());
        machine.handle(Answer::Proposed(0, said()))
    }

    #[test]
    fn the_primary_commits_before_any_other_range() {
        let (mut machine, progress) =
            Coordinator::start(puts(), participants(), [7; 24], 5).unwrap();
        assert_eq!(proposals(&progress), vec![(0, 1, "prepare"), (1, 2, "prepare")]);
        assert_eq!(machine.primary_key, b"a");
        assert_eq!(prepared(&mut machine).asks, vec![Ask::Revision]);
        let commit = machine.handle(Answer::Revision(Ok(9)));
        assert_eq!(proposals(&commit), vec![(0, 1, "commit")]);
        let others = machine.handle(Answer::Proposed(0, Ok(Response::Txn(TxnResponse::default()))));
        assert_eq!(proposals(&others), vec![(1, 2, "commit")]);
        let done = machine.handle(Answer::Proposed(1, Ok(Response::Txn(TxnResponse::default()))));
        let response = done.outcome.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(response.header.as_ref().unwrap().revision, 9);
        assert_eq!(response.responses.len(), 2);
        assert!(forgets(&done));
    }

    #[test]
    fn a_conflict_rolls_back_everywhere_and_forgets_only_when_nothing_can_apply_late() {
        for (failure, forgotten) in [
            (Error::Locked(crate::LockInfo { id: vec![], primary_key: vec![], start_ts: 1 }), true),
            // A prepare that timed out may still apply: the primary's decision must fence it.
            (Error::Timeout, false),
        ] {
            let (mut machine, _) = Coordinator::start(puts(), participants(), [7; 24], 5).unwrap();
            machine.handle(Answer::Proposed(0, Ok(Response::TxnPrepared(Vec::new()))));
            let rollback = machine.handle(Answer::Proposed(1, Err(failure.clone())));
            assert_eq!(proposals(&rollback), vec![(0, 1, "rollback"), (1, 2, "rollback")]);
            let decided = || Ok(Response::TxnDecided(TxnStatus::default()));
            machine.handle(Answer::Proposed(1, decided()));
            let done = machine.handle(Answer::Proposed(0, decided()));
            assert_eq!(forgets(&done), forgotten, "{failure:?}");
            assert_eq!(done.outcome.unwrap().unwrap_err(), failure);
        }
    }

    #[test]
    fn a_commit_refused_at_the_primary_rolls_back_and_one_unanswered_is_left_to_resolve() {
        let (mut machine, _) = Coordinator::start(puts(), participants(), [7; 24], 5).unwrap();
        prepared(&mut machine);
        machine.handle(Answer::Revision(Ok(9)));
        let rollback = machine.handle(Answer::Proposed(0, Err(Error::TxnAborted)));
        assert_eq!(proposals(&rollback).len(), 2);

        let (mut machine, _) = Coordinator::start(puts(), participants(), [8; 24], 5).unwrap();
        prepared(&mut machine);
        machine.handle(Answer::Revision(Ok(9)));
        let unknown = machine.handle(Answer::Proposed(0, Err(Error::Timeout)));
        assert!(unknown.asks.is_empty(), "nothing is undone whose outcome is unknown");
        assert_eq!(unknown.outcome.unwrap().unwrap_err(), Error::Timeout);
    }

    #[test]
    fn a_lease_is_revoked_in_the_meta_range_first_then_where_it_was_registered() {
        let [meta, high] = [participants()[1].clone(), participants()[0].clone()];
        let (mut machine, progress) = Coordinator::revoke(7, 0, meta, [7; 24], 5);
        assert_eq!(proposals(&progress), vec![(0, 1, "prepare")]);
        let spans = vec![Span { start: b"m".to_vec(), end: Vec::new() }];
        let prepared = Response::LeasePrepared { incarnation: 3, spans: spans.clone() };
        let route = machine.handle(Answer::Proposed(0, Ok(prepared)));
        assert_eq!(route.asks, vec![Ask::Route { spans }]);
        let others = machine.handle(Answer::Routed(Ok(vec![high])));
        assert_eq!(proposals(&others), vec![(1, 2, "prepare")]);
        let Some(Ask::Propose { request: Request::TxnPrepare(prepare), .. }) = others.asks.first()
        else {
            panic!("{others:?}")
        };
        assert_eq!((prepare.revoke_lease, prepare.lease_incarnation), (7, 3));
        let said = Ok(Response::TxnPrepared(Vec::new()));
        assert_eq!(machine.handle(Answer::Proposed(1, said)).asks, vec![Ask::Revision]);
        let commit = machine.handle(Answer::Revision(Ok(9)));
        assert_eq!(proposals(&commit), vec![(0, 1, "commit")]);
        let done = Ok(Response::Txn(TxnResponse::default()));
        let others = machine.handle(Answer::Proposed(0, done));
        assert_eq!(proposals(&others), vec![(1, 2, "commit")]);
        let done = machine.handle(Answer::Proposed(1, Ok(Response::Txn(TxnResponse::default()))));
        let response = done.outcome.unwrap().unwrap();
        assert_eq!(response.header.unwrap().revision, 9);
    }

    #[test]
    fn a_resolution_follows_the_primarys_decision() {
        let lock = LockRecord { id: vec![1; 24], primary_key: b"a".to_vec(), ..Default::default() };
        let (mut resolution, progress) = Resolution::start(lock.clone(), 2, 1);
        assert_eq!(proposals(&progress), vec![(0, 1, "rollback")]);
        let committed = TxnStatus { committed: true, commit_ts: 30, compares: vec![] };
        let next = resolution.handle(Answer::Proposed(0, Ok(Response::TxnDecided(committed))));
        assert_eq!(proposals(&next), vec![(1, 2, "commit")]);
        assert!(resolution.committed());

        let (mut resolution, _) = Resolution::start(lock, 2, 1);
        let next =
            resolution.handle(Answer::Proposed(0, Ok(Response::TxnDecided(TxnStatus::default()))));
        assert_eq!(proposals(&next), vec![(1, 2, "rollback")]);
        assert!(!resolution.committed());
    }

    #[test]
    fn a_lock_is_abandoned_once_seen_for_its_ttl() {
        let lock = |id: u8| LockRecord { id: vec![id], ..Default::default() };
        let mut seen = std::collections::HashMap::new();
        assert!(abandoned(&mut seen, vec![lock(1)], 10u64, 5u64).is_empty());
        assert!(abandoned(&mut seen, vec![lock(1), lock(2)], 14, 5).is_empty());
        let old = abandoned(&mut seen, vec![lock(1), lock(2)], 15, 5);
        assert_eq!(old.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), vec![vec![1]]);
        // A lock gone is forgotten: seen again, it starts over.
        assert!(abandoned(&mut seen, vec![lock(2)], 16, 5).is_empty());
        assert!(abandoned(&mut seen, vec![lock(1)], 17, 5).is_empty());
    }
}
