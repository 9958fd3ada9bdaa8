//! Hashes of a replica's MVCC data, so members can be compared (`Maintenance.Hash`/`HashKV`).
//!
//! Every replica applies the same log, so replicas at the same applied index hold byte-identical
//! MVCC records, and their hashes agree. The values are Strata's own (CRC-32 over Strata's
//! records), comparable between Strata members, not with etcd's.

use super::compaction::{Sweep, Verdict};
use super::record::VersionRecord;
use super::view::View;
use crate::{Result, keys};

/// CRC-32 of every key version written at or below `revision` that compaction at
/// `compact_revision` keeps. Versions it dooms are left out whether they are deleted yet or not,
/// so members at the same compaction revision agree however far their deletions got.
pub fn hash_kv(view: &View<'_>, revision: i64, compact_revision: i64) -> Result<u32> {
    let (lo, hi) = keys::version_bounds(b"", b"");
    let mut hasher = crc32fast::Hasher::new();
    let mut sweep = Sweep::new(compact_revision);
    for item in view.scan(&lo, &hi)? {
        let (key, value) = item?;
        let (user_key, mod_revision) = keys::decode_version(&key)
            .ok_or_else(|| crate::Error::Storage("malformed MVCC key".into()))?;
        let verdict =
            sweep.judge(&user_key, mod_revision, || VersionRecord::is_tombstone(&value))?;
        if mod_revision <= revision && verdict == Verdict::Kept {
            hasher.update(&key);
            hasher.update(&value);
        }
    }
    Ok(hasher.finalize())
}

/// CRC-32 of every MVCC record: versions, the change index and leases.
pub fn hash_all(view: &View<'_>) -> Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    for item in view.scan(&[], &[])? {
        let (key, value) = item?;
        hasher.update(&key);
        hasher.update(&value);
    }
    Ok(hasher.finalize())
}
