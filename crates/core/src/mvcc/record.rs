//! Encodings of what the state machine stores.

use prost::Message as _;

use crate::pb::mvccpb::KeyValue;
use crate::{Error, Result};

/// One version of a key, stored under `keys::version(key, mod_revision)`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRecord {
    #[prost(int64, tag = "1")]
    pub create_revision: i64,
    #[prost(int64, tag = "2")]
    pub version: i64,
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
    /// A deletion: the key does not exist from this revision on.
    #[prost(bool, tag = "5")]
    pub tombstone: bool,
}

impl VersionRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        <Self as prost::Message>::decode(bytes)
            .map_err(|e| Error::Storage(format!("undecodable MVCC version record: {e}")))
    }

    /// Whether the encoded record is a tombstone, without copying its value out: decoding the
    /// one field skips the others' bytes.
    pub fn is_tombstone(bytes: &[u8]) -> Result<bool> {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Tombstone {
            #[prost(bool, tag = "5")]
            tombstone: bool,
        }
        <Tombstone as prost::Message>::decode(bytes)
            .map(|t| t.tombstone)
            .map_err(|e| Error::Storage(format!("undecodable MVCC version record: {e}")))
    }

    pub fn into_key_value(self, key: Vec<u8>, mod_revision: i64) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision,
            version: self.version,
            value: self.value,
            lease: self.lease,
        }
    }
}

/// A lease, stored under `keys::lease(id)` in the meta range. Its expiry is not replicated:
/// only the leader tracks time (see `raftstore::lessor`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseRecord {
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    /// The meta range's log index of the grant: a lease revoked and granted again under the
    /// same id is a new incarnation, which a range's marks tell apart (0: granted before
    /// leases had incarnations).
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
    /// The spans of the ranges outside the meta range where keys were given the lease
    /// (`LeaseRegister`): a revocation deletes its keys in every range overlapping them.
    #[prost(message, repeated, tag = "3")]
    pub spans: Vec<super::locks::Span>,
}

/// What a range other than the meta range knows of a lease, under `keys::lease_mark`: that
/// the lease was registered for the range's keys (so puts with it may apply here), or that
/// its incarnation was revoked (so a registration of that incarnation arriving late is
/// refused). Each range decides from its own records, alike on every replica.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct LeaseMark {
    #[prost(uint64, tag = "1")]
    pub incarnation: u64,
    #[prost(bool, tag = "2")]
    pub revoked: bool,
}

impl LeaseMark {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        <Self as prost::Message>::decode(bytes)
            .map_err(|e| Error::Storage(format!("undecodable lease mark: {e}")))
    }
}

impl LeaseRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        <Self as prost::Message>::decode(bytes)
            .map_err(|e| Error::Storage(format!("undecodable lease record: {e}")))
    }
}

/// A range replica's applied state. It is written in the same batch as the MVCC data that
/// applying up to `applied_index` produced, so the two can never disagree after a crash.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct AppliedState {
    #[prost(uint64, tag = "1")]
    pub applied_index: u64,
    #[prost(uint64, tag = "2")]
    pub applied_term: u64,
    /// The range's current revision: the revision of the last write.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// Reads below this revision fail with "compacted".
    #[prost(int64, tag = "4")]
    pub compact_revision: i64,
    /// Versions the last compaction made unreadable are still being deleted, a step at a time
    /// (see `Applier::compaction_step`); where the next step starts is a record of its own.
    #[prost(bool, tag = "5")]
    pub compaction_pending: bool,
    /// The meta range's revision oracle may hand out no revision above this (0: it never
    /// handed out any). Raised by `TsoCeiling` entries; see `raftstore::oracle`.
    #[prost(int64, tag = "6")]
    pub tso_ceiling: i64,
    /// How many locks of transactions across ranges the range holds (see `mvcc::locks`): with
    /// none, writes and reads skip looking for them.
    #[prost(uint64, tag = "7")]
    pub lock_count: u64,
    /// The least start timestamp of those locks (0 with none): the range's closed revision
    /// stays below it, since their transactions may still commit above it.
    #[prost(int64, tag = "8")]
    pub lock_floor: i64,
}

impl AppliedState {
    /// A new range: etcd starts counting at revision 1, so the first write gets revision 2.
    pub fn initial() -> Self {
        Self {
            applied_index: 0,
            applied_term: 0,
            revision: 1,
            compact_revision: 0,
            compaction_pending: false,
            tso_ceiling: 0,
            lock_count: 0,
            lock_floor: 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        <Self as prost::Message>::decode(bytes)
            .map_err(|e| Error::Storage(format!("undecodable applied state: {e}")))
    }
}
