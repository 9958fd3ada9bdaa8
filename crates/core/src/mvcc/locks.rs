//! Locks and outcomes of transactions across ranges: the records of two-phase commit
//! (`docs/sharding.md`, "Transactions across ranges").
//!
//! A transaction whose keys lie in several ranges is prepared in each (`TxnPrepare`): the range
//! writes a **lock** over every span of the transaction in its span — comparisons, reads and
//! the writes of both branches alike, so the lock is exclusive and a transaction's reads are as
//! protected as its writes (strict two-phase locking) — and judges the comparisons there. One
//! key of the transaction is its **primary**; the primary's range decides it: committing it
//! there (`TxnCommit`) writes a **status** record, and from then on it is committed, whatever
//! becomes of the coordinator. Every other range commits or rolls back as the status says.
//!
//! While a lock is held, a write of its range touching its spans is refused (`Error::Locked`)
//! and retried by the server, and so is a read at a read timestamp at or above its start
//! timestamp: the transaction may commit at or below that timestamp, once its locks are all
//! held. Locks are few and short-lived, so a range finds them by scanning its own; a range
//! holding none (`AppliedState::lock_count`) does not look.

use std::collections::BTreeMap;

use prost::Message as _;
use strata_storage::Engine;

use super::read;
use super::view::View;
use crate::pb::etcdserverpb::TxnRequest;
use crate::pb::etcdserverpb::request_op::Request as OpRequest;
use crate::{Error, LockInfo, Result, keys};

/// A transaction's id: the node that coordinates it, that node's epoch (its process's start),
/// and a sequence number within the epoch.
pub type TxnId = [u8; 24];

pub fn txn_id(node: u64, epoch: u64, sequence: u64) -> TxnId {
    let mut id = [0; 24];
    id[..8].copy_from_slice(&node.to_be_bytes());
    id[8..16].copy_from_slice(&epoch.to_be_bytes());
    id[16..].copy_from_slice(&sequence.to_be_bytes());
    id
}

pub fn parse_id(bytes: &[u8]) -> Result<TxnId> {
    bytes.try_into().map_err(|_| Error::Internal("a transaction id of the wrong length".into()))
}

/// A user-key span `[start, end)`; an empty `end` is the end of the key space.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub start: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub end: Vec<u8>,
}

impl Span {
    pub fn overlaps(&self, other: &Span) -> bool {
        below(&self.start, &other.end) && below(&other.start, &self.end)
    }
}

/// `key < end`, where an empty `end` is past every key.
fn below(key: &[u8], end: &[u8]) -> bool {
    end.is_empty() || key < end
}

/// A transaction's lock in one range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub start_ts: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub primary_key: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub slot: u32,
    #[prost(message, optional, tag = "5")]
    pub txn: Option<TxnRequest>,
    /// What it locks: the transaction's spans within the range.
    #[prost(message, repeated, tag = "6")]
    pub spans: Vec<Span>,
    /// The lease a revocation across ranges revokes (0 for a transaction): puts with it are
    /// refused while the lock is held, and `spans` are the keys attached to it.
    #[prost(int64, tag = "7")]
    pub lease: i64,
    #[prost(uint64, tag = "8")]
    pub lease_incarnation: u64,
    /// `TxnPrepare::expiry_term`.
    #[prost(uint64, tag = "9")]
    pub expiry_term: u64,
}

impl LockRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        <Self as prost::Message>::decode(bytes)
            .map_err(|e| Error::Storage(format!("undecodable lock record: {e}")))
    }

    pub fn info(&self) -> LockInfo {
        LockInfo {
            id: self.id.clone(),
            primary_key: self.primary_key.clone(),
            start_ts: self.start_ts,
        }
    }

    fn overlaps(&self, spans: &[Span]) -> bool {
        self.spans.iter().any(|mine| spans.iter().any(|span| mine.overlaps(span)))
    }
}

/// How a transaction ended, kept by the range of its primary key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnStatus {
    #[prost(bool, tag = "1")]
    pub committed: bool,
    #[prost(int64, tag = "2")]
    pub commit_ts: i64,
    #[prost(bool, repeated, tag = "3")]
    pub compares: Vec<bool>,
}

impl TxnStatus {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        <Self as prost::Message>::decode(bytes)
            .map_err(|e| Error::Storage(format!("undecodable transaction status: {e}")))
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// Every key span a transaction's comparisons and operations touch, nested ones included, as
/// etcd gives them (`key`, `range_end`).
pub fn txn_spans<'a>(txn: &'a TxnRequest, spans: &mut Vec<(&'a [u8], &'a [u8])>) {
    spans.extend(txn.compare.iter().map(|c| (c.key.as_slice(), c.range_end.as_slice())));
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(OpRequest::RequestRange(r)) => spans.push((&r.key, &r.range_end)),
            Some(OpRequest::RequestPut(p)) => spans.push((&p.key, &[])),
            Some(OpRequest::RequestDeleteRange(d)) => spans.push((&d.key, &d.range_end)),
            Some(OpRequest::RequestTxn(t)) => txn_spans(t, spans),
            None => {}
        }
    }
}

/// The leases a transaction's puts give their keys, nested ones included.
pub fn txn_leases(txn: &TxnRequest, leases: &mut Vec<i64>) {
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(OpRequest::RequestPut(p)) if p.lease != 0 => leases.push(p.lease),
            Some(OpRequest::RequestTxn(t)) => txn_leases(t, leases),
            _ => {}
        }
    }
}

/// The part of an etcd span (`key`, `range_end`) within `[first, past)`, if any.
pub fn clip(key: &[u8], range_end: &[u8], (first, past): (&[u8], &[u8])) -> Option<Span> {
    let (start, end) = read::key_span(key, range_end);
    let start = start.as_slice().max(first).to_vec();
    let end = match (end.is_empty(), past.is_empty()) {
        (true, _) => past.to_vec(),
        (false, true) => end,
        (false, false) => end.as_slice().min(past).to_vec(),
    };
    below(&start, &end).then_some(Span { start, end })
}

/// The spans of a transaction within `[first, past)`.
pub fn txn_spans_within(txn: &TxnRequest, within: (&[u8], &[u8])) -> Vec<Span> {
    let mut spans = Vec::new();
    txn_spans(txn, &mut spans);
    spans.into_iter().filter_map(|(key, end)| clip(key, end, within)).collect()
}

/// The locks anchored in `[first, past)` (a range's span), with their raw keys.
pub fn in_span(view: &View, (first, past): (&[u8], &[u8])) -> Result<Vec<(Vec<u8>, LockRecord)>> {
    let (lower, upper) = keys::lock_bounds(first, past);
    let mut locks = Vec::new();
    for item in view.scan(&lower, &upper)? {
        let (key, value) = item?;
        locks.push((key, LockRecord::decode(&value)?));
    }
    Ok(locks)
}

/// Refuses what touches `spans`, or gives a key one of `leases`, while another transaction,
/// started at or below `at`, holds a lock over any of them.
pub fn check<'a>(
    locks: impl IntoIterator<Item = &'a LockRecord>,
    spans: &[Span],
    leases: &[i64],
    at: i64,
) -> Result<()> {
    let locked = |lock: &LockRecord| lock.overlaps(spans) || leases.contains(&lock.lease);
    match locks.into_iter().find(|lock| lock.start_ts <= at && locked(lock)) {
        Some(lock) => Err(Error::Locked(lock.info())),
        None => Ok(()),
    }
}

/// A range's locks in memory, by record key, kept in step with its records as the key index
/// is (`memo`): writes and reads find them without scanning the engine, where every lock
/// released leaves a deleted record behind that a scan would step over until compacted away.
#[derive(Debug, Default)]
pub struct LockTable(BTreeMap<Vec<u8>, LockRecord>);

impl LockTable {
    pub fn load(engine: &dyn Engine, span: (&[u8], &[u8])) -> Result<Self> {
        Ok(Self(in_span(&View::new(engine), span)?.into_iter().collect()))
    }

    pub fn locks(&self) -> impl Iterator<Item = (&Vec<u8>, &LockRecord)> {
        self.0.iter()
    }

    /// An apply run's lock writes (`None`: released).
    pub fn absorb(&mut self, writes: BTreeMap<Vec<u8>, Option<LockRecord>>) {
        for (key, lock) in writes {
            match lock {
                Some(lock) => self.0.insert(key, lock),
                None => self.0.remove(&key),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: &str, end: &str) -> Span {
        Span { start: start.into(), end: end.into() }
    }

    #[test]
    fn spans_are_clipped_to_a_range() {
        let within = (&b"m"[..], &b""[..]);
        assert_eq!(clip(b"a", b"", within), None);
        assert_eq!(clip(b"n", b"", within), Some(span("n", "n\0")));
        assert_eq!(clip(b"a", b"z", within), Some(span("m", "z")));
        assert_eq!(clip(b"a", b"\0", within), Some(span("m", "")));
        let within = (&b""[..], &b"m"[..]);
        assert_eq!(clip(b"a", b"\0", within), Some(span("a", "m")));
        assert_eq!(clip(b"m", b"z", within), None);
    }

    #[test]
    fn spans_overlap_when_they_share_a_key() {
        assert!(span("a", "c").overlaps(&span("b", "d")));
        assert!(!span("a", "b").overlaps(&span("b", "d")));
        assert!(span("a", "").overlaps(&span("x", "y")));
        assert!(span("x", "x\0").overlaps(&span("a", "")));
        assert!(!span("x", "x\0").overlaps(&span("x\0", "")));
    }
}
