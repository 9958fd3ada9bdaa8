//! Errors a request can end in, with their meaning for a client.
//!
//! Each variant maps to exactly one gRPC status code and, where etcd has one, etcd's error text,
//! so that etcd clients recognise it (they match on the text). The mapping to tonic's `Status`
//! happens once, in the server crate, from [`Error::code`] and the `Display` text.

/// The gRPC status codes Strata answers with (a subset, named as in the gRPC spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
    Internal,
    Unimplemented,
    /// What Go's gRPC answers for an error without a code (etcd's election errors).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// Strata's own limit (etcd has none below the request size); see `validate::KEY_BYTES_MAX`.
    #[error("etcdserver: key is too large")]
    KeyTooLarge,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A lease operation that only the leader can answer reached a member that is not (or no
    /// longer) the leader.
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// Another membership change is being made; Raft makes one at a time. Retry shortly.
    #[error("etcdserver: a membership change is in progress, retry later")]
    MembershipChangePending,
    /// A member is over its storage quota (a `NOSPACE` alarm is active): only deletions,
    /// compactions and revocations are accepted until it is disarmed.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The leader key given to `Proclaim` no longer leads (etcd's `ErrElectionNotLeader`).
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Nobody leads the election asked about.
    #[error("election: no leader")]
    ElectionNoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// No leader is known: an election is in progress or a majority is unreachable.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while the request was in flight; it may or may not have been applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A command was proposed under an epoch of its range that is no longer current (the range
    /// split or merged since): it was not applied, and must be routed again. Retried inside the
    /// server; a client sees it only if the deadline passes first.
    /// (A transaction's prepare routed by a span the range no longer has is refused alike, with
    /// no epochs to name: both 0.)
    #[error("etcdserver: range {range_id} changed while the request was in flight; retry")]
    EpochNotMatch { range_id: u64, proposed: u64, current: u64 },
    /// This member holds no replica (or only an uninitialized one) of a range holding some of
    /// the request's keys: it lagged through a split and is catching up. Retried inside the
    /// server; a client sees it only if the deadline passes first.
    #[error("etcdserver: the range of the keys is not available on this member yet; retry")]
    RangeUnavailable,
    /// An admin split that cannot be made (named in the message).
    #[error("strata: cannot split: {0}")]
    SplitRefused(String),
    /// What a transaction across ranges cannot do yet (named in the message).
    #[error("etcdserver: {0} in a transaction across ranges is not supported yet")]
    AcrossRanges(String),
    /// The request touches keys a transaction across ranges holds locked (see `mvcc::locks`).
    /// Retried inside the server, resolving the lock if its transaction stalled; a client sees
    /// it only if the deadline passes first.
    #[error("etcdserver: keys are locked by a transaction in progress; retry")]
    Locked(LockInfo),
    /// A transaction across ranges was rolled back before it could commit (a conflict, or its
    /// locks were taken for abandoned). Retried inside the server.
    #[error("etcdserver: a transaction across ranges was rolled back; retry")]
    TxnAborted,
    /// A key given a lease in a range the lease was not registered for (see
    /// `mvcc::record::LeaseMark`): the server registers it with the meta range and tries again.
    #[error("etcdserver: lease {0:x} is not registered with the key's range; retry")]
    LeaseUnregistered(i64),
    /// A lease revoked in one round whose keys lie in other ranges too: the server revokes it
    /// as a transaction across ranges instead.
    #[error("etcdserver: lease {0:x} has keys in several ranges; retry")]
    LeaseInRanges(i64),
    /// The request did not complete before its deadline; it may still be applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Too many requests are queued on this node; retry with backoff.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The node is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
    #[error("etcdserver: {0}")]
    Internal(String),
}

/// Which transaction holds a lock a request ran into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub id: Vec<u8>,
    pub primary_key: Vec<u8>,
    pub start_ts: i64,
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::EmptyKey
            | Error::KeyTooLarge
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey
            | Error::RequestTooLarge => Code::InvalidArgument,
            Error::Compacted | Error::FutureRevision | Error::LeaseTtlTooLarge => Code::OutOfRange,
            Error::LeaseNotFound => Code::NotFound,
            Error::LeaseExists
            | Error::NotLeader
            | Error::BadLeaderTransferee
            | Error::MemberExists
            | Error::PeerUrlExists
            | Error::MemberNotLearner
            | Error::LearnerNotReady => Code::FailedPrecondition,
            Error::MemberNotFound => Code::NotFound,
            Error::MemberBadUrls => Code::InvalidArgument,
            Error::NoLeader | Error::LeaderChanged | Error::Stopped => Code::Unavailable,
            Error::MembershipChangePending => Code::Unavailable,
            Error::Timeout | Error::EpochNotMatch { .. } | Error::RangeUnavailable => {
                Code::Unavailable
            }
            Error::Locked(_) | Error::TxnAborted => Code::Unavailable,
            Error::LeaseUnregistered(_) | Error::LeaseInRanges(_) => Code::Unavailable,
            Error::TooManyRequests | Error::NoSpace => Code::ResourceExhausted,
            Error::Storage(_) | Error::Internal(_) => Code::Internal,
            Error::AcrossRanges(_) => Code::Unimplemented,
            Error::SplitRefused(_) => Code::FailedPrecondition,
            Error::ElectionNotLeader | Error::ElectionNoLeader | Error::MissingLeaderKey => {
                Code::Unknown
            }
        }
    }

    /// Whether sending the same request again may succeed. Writes that failed with a retryable
    /// error may nevertheless have been applied: clients retry them only if they are idempotent.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NoLeader
                | Error::NotLeader
                | Error::LeaderChanged
                | Error::EpochNotMatch { .. }
                | Error::RangeUnavailable
                | Error::Locked(_)
                | Error::TxnAborted
                | Error::Timeout
                | Error::TooManyRequests
                | Error::Stopped
        )
    }
}

impl From<strata_storage::Error> for Error {
    fn from(e: strata_storage::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
