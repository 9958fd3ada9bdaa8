//! What a Raft log entry carries: one client request, tagged with who proposed it.
//!
//! The request is etcd's own message, applied deterministically by every replica: revisions
//! are assigned at apply time from the replicated revision counter, and nothing else the apply
//! reads can differ between replicas. The proposal id lets the replica that proposed the entry
//! find the waiting client when it applies it; every other replica ignores it.

use prost::Message as _;

use crate::pb::etcdserverpb::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, TxnRequest,
};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    /// The node that proposed this entry.
    #[prost(uint64, tag = "1")]
    pub proposer: u64,
    /// Unique per proposer and process lifetime (together with `proposer_epoch`).
    #[prost(uint64, tag = "2")]
    pub proposal_id: u64,
    /// Distinguishes a proposer's restarts, so a proposal id is never matched to a waiter of an
    /// earlier incarnation of the process.
    #[prost(uint64, tag = "3")]
    pub proposer_epoch: u64,
    /// Numbers the proposer's proposals in the order it made them (per epoch, from 1), so every
    /// replica applies each at most once: a copy (a duplicated message) or a proposal overtaken
    /// by a later one is skipped. See `raftstore::session`.
    #[prost(uint64, tag = "4")]
    pub sequence: u64,
    /// The epoch of the range's descriptor the command was proposed under: apply refuses it
    /// when the range's span has changed since (see `crate::range`). `None` in entries written
    /// before ranges had epochs, which are applied as they always were.
    #[prost(message, optional, tag = "5")]
    pub range_epoch: Option<crate::range::RangeEpoch>,
    /// The revisions the range's leader stamped the command with, from the revision oracle
    /// (`raftstore::oracle`): its writes take `max(range's last revision + 1, lo)`, never more
    /// than `hi`. `None` while the range counts revisions itself (a cluster of one range).
    #[prost(message, optional, tag = "6")]
    pub block: Option<crate::raftstore::oracle::Block>,
    #[prost(
        oneof = "Request",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27"
    )]
    pub request: Option<Request>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    #[prost(message, tag = "10")]
    Put(PutRequest),
    #[prost(message, tag = "11")]
    DeleteRange(DeleteRangeRequest),
    #[prost(message, tag = "12")]
    Txn(TxnRequest),
    #[prost(message, tag = "13")]
    Compaction(CompactionRequest),
    /// A lease with its final id and TTL (the member that received the request chose the id
    /// and applied the TTL bounds, so every replica grants the same lease).
    #[prost(message, tag = "14")]
    LeaseGrant(LeaseGrantRequest),
    /// Proposed by a client, or by the leader when a lease expires.
    #[prost(message, tag = "15")]
    LeaseRevoke(LeaseRevokeRequest),
    /// Raising or clearing an alarm (a member over its storage quota raises `NOSPACE`).
    #[prost(message, tag = "16")]
    Alarm(AlarmRequest),
    /// A membership change: proposed as a Raft configuration change carrying this command (see
    /// `raftstore::node::Node::propose`), applied to Raft's configuration and to the member
    /// records together.
    #[prost(message, tag = "17")]
    MemberChange(MemberChange),
    /// Proposed by the leader while a compaction has versions left to delete.
    #[prost(message, tag = "18")]
    CompactionStep(CompactionStep),
    /// Raises the revision oracle's ceiling (the meta range only; see `raftstore::oracle`).
    #[prost(message, tag = "19")]
    TsoCeiling(TsoCeiling),
    /// Two-phase commit of a transaction across ranges (see `mvcc::locks`): locks its keys in
    /// this range and judges its comparisons there.
    #[prost(message, tag = "20")]
    TxnPrepare(TxnPrepare),
    /// Writes the transaction's part in this range at its commit revision and unlocks.
    #[prost(message, tag = "21")]
    TxnCommit(TxnCommit),
    /// Unlocks without writing; in the range of the primary key, decides the transaction (if
    /// it was not decided yet) as rolled back.
    #[prost(message, tag = "22")]
    TxnRollback(TxnRollback),
    /// Drops the primary's record of a transaction once no range holds or will hold its lock.
    #[prost(message, tag = "23")]
    TxnForget(TxnRollback),
    /// Records in the meta range that keys of a range's span are given a lease, so that its
    /// revocation reaches them; answers with the lease's incarnation ("lease not found" if it
    /// does not exist).
    #[prost(message, tag = "24")]
    LeaseRegister(LeaseRegister),
    /// Tells a range other than the meta range that a lease was registered for its keys.
    #[prost(message, tag = "25")]
    LeaseMark(LeaseMarkRequest),
    /// Hands out a range id no range of the cluster has or had (the meta range only): the id
    /// of a range a split is about to create.
    #[prost(message, tag = "26")]
    RangeIdAllocate(RangeIdAllocate),
    /// Splits the range at a key: the range keeps the keys below it, a new range (with the
    /// same replicas) takes the rest. See `raftstore::split`.
    #[prost(message, tag = "27")]
    Split(SplitRequest),
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RangeIdAllocate {}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SplitRequest {
    /// The first key of the new range; strictly inside the range's span.
    #[prost(bytes = "vec", tag = "1")]
    pub split_key: Vec<u8>,
    /// The new range's id, from `RangeIdAllocate`.
    #[prost(uint64, tag = "2")]
    pub new_range_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRegister {
    #[prost(int64, tag = "1")]
    pub lease: i64,
    #[prost(message, optional, tag = "2")]
    pub span: Option<crate::mvcc::locks::Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseMarkRequest {
    #[prost(int64, tag = "1")]
    pub lease: i64,
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
}

/// Phase one of a transaction across ranges, in one of its ranges.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnPrepare {
    /// The transaction's id (`mvcc::locks::TxnId`, 24 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    /// A read timestamp taken before any lock: the transaction commits above it.
    #[prost(int64, tag = "2")]
    pub start_ts: i64,
    /// The key whose range decides the transaction.
    #[prost(bytes = "vec", tag = "3")]
    pub primary_key: Vec<u8>,
    /// This range's place among the transaction's ranges, in key order: its writes are
    /// numbered after those of the ranges before it.
    #[prost(uint32, tag = "4")]
    pub slot: u32,
    /// The whole transaction; each range applies the part of it in its span.
    #[prost(message, optional, tag = "5")]
    pub txn: Option<TxnRequest>,
    /// Instead of a transaction: the revocation of this lease, whose keys lie in several
    /// ranges. The range locks its keys attached to the lease, and puts with the lease.
    #[prost(int64, tag = "6")]
    pub revoke_lease: i64,
    /// The incarnation of the lease revoked (the meta range's prepare answers with it): the
    /// other ranges mark it revoked when they commit.
    #[prost(uint64, tag = "7")]
    pub lease_incarnation: u64,
    /// For a lease found expired by the meta leader's lease clock: that leader's term. The meta
    /// range prepares and commits the revocation only in entries of that term — proposed by
    /// that leader while it led — so a deposed leader cannot revoke a lease its successor has
    /// renewed (0: a client's revocation).
    #[prost(uint64, tag = "8")]
    pub expiry_term: u64,
    /// The range's span as the coordinator routed by: a range whose span differs now (it split
    /// since) refuses the prepare, which would otherwise lock only part of what it was sent
    /// for (`Error::EpochNotMatch`; the transaction is routed again).
    #[prost(message, optional, tag = "9")]
    pub span: Option<crate::mvcc::locks::Span>,
}

/// Phase two: the transaction's outcome, for one of its ranges.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnCommit {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub primary_key: Vec<u8>,
    /// A revision from the oracle, taken once every lock was held.
    #[prost(int64, tag = "3")]
    pub commit_ts: i64,
    /// Whether each comparison of the transaction held, across all its ranges.
    #[prost(bool, repeated, tag = "4")]
    pub compares: Vec<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRollback {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub primary_key: Vec<u8>,
}

/// The highest revision the oracle may hand out once this is applied.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct TsoCeiling {
    #[prost(int64, tag = "1")]
    pub ceiling: i64,
}

/// One step of a compaction's deletions. The leader chooses its size, so every replica deletes
/// exactly the same records when it applies the entry.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct CompactionStep {
    /// Records to examine (the step ends at the first key boundary after this many).
    #[prost(uint64, tag = "1")]
    pub records: u64,
}

/// What a membership change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum MemberChangeKind {
    AddVoter = 0,
    AddLearner = 1,
    /// A learner becomes a voter.
    Promote = 2,
    Remove = 3,
    /// New peer URLs for a member, in the role it has.
    Update = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberChange {
    #[prost(enumeration = "MemberChangeKind", tag = "1")]
    pub kind: i32,
    #[prost(uint64, tag = "2")]
    pub id: u64,
    /// The member's record after the change (for `Remove`, ignored).
    #[prost(message, optional, tag = "3")]
    pub member: Option<MemberRecord>,
}

/// A cluster member as the cluster records it (`keys::member(id)`), replicated with the data.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MemberRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "2")]
    pub peer_urls: Vec<String>,
    #[prost(bool, tag = "3")]
    pub is_learner: bool,
}

impl Request {
    /// Whether applying the request may write versions, and so take a revision: what the
    /// revision oracle's blocks are counted in.
    pub fn takes_revision(&self) -> bool {
        matches!(
            self,
            Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_) | Request::LeaseRevoke(_)
        )
    }
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Encodes this command (whose `request` is `None`) carrying `request`, which it borrows:
    /// the same bytes as `encode` with the request inside, without copying the request first.
    pub fn encode_with(&self, request: &Request) -> Vec<u8> {
        debug_assert!(self.request.is_none());
        let mut bytes = Vec::with_capacity(self.encoded_len() + request.encoded_len());
        self.encode_raw(&mut bytes);
        request.encode(&mut bytes);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        <Self as prost::Message>::decode(bytes)
    }
}
