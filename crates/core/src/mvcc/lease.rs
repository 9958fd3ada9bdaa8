//! Reading leases: which exist, their TTLs, the keys attached to them.
//!
//! Leases are replicated state like keys: granting one writes `keys::lease(id)`, attaching a key
//! (a `Put` with the lease) writes `keys::lease_key(id, key)`, and revoking one deletes its
//! keys, the attachments and the record, all in one apply. When a lease *expires* is not
//! replicated: the leader's lessor decides and proposes the revocation.

use super::record::LeaseRecord;
use super::view::View;
use crate::{Error, Result, keys};

/// A lease's record, if it exists.
pub fn get(view: &View<'_>, id: i64) -> Result<Option<LeaseRecord>> {
    match view.get_raw(&keys::lease(id))? {
        Some(bytes) => Ok(Some(LeaseRecord::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Every lease, as `(id, ttl)`, by id.
pub fn all(view: &View<'_>) -> Result<Vec<(i64, i64)>> {
    let (lo, hi) = keys::lease_bounds();
    let mut out = Vec::new();
    for item in view.scan(&lo, &hi)? {
        let (key, bytes) = item?;
        let id = keys::decode_lease(&key).ok_or_else(|| malformed(&key))?;
        out.push((id, LeaseRecord::decode(&bytes)?.ttl));
    }
    Ok(out)
}

/// The keys attached to lease `id`, in key order.
pub fn attached_keys(view: &View<'_>, id: i64) -> Result<Vec<Vec<u8>>> {
    let (lo, hi) = keys::lease_keys_bounds(id);
    let mut out = Vec::new();
    for item in view.scan(&lo, &hi)? {
        let (key, _) = item?;
        out.push(keys::decode_lease_key(&key).ok_or_else(|| malformed(&key))?);
    }
    Ok(out)
}

fn malformed(key: &[u8]) -> Error {
    Error::Storage(format!("malformed lease key {}", strata_storage::display_key(key)))
}
