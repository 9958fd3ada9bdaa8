//! The cluster's members, as replicated records (`keys::member`): written when the cluster is
//! bootstrapped and by every applied membership change, carried in snapshots with the data.

use prost::Message as _;

use super::view::View;
use crate::command::MemberRecord;
use crate::{Error, Result, keys};

/// Every member, by id.
pub fn all(view: &View<'_>) -> Result<Vec<(u64, MemberRecord)>> {
    let (lo, hi) = keys::member_bounds();
    let mut out = Vec::new();
    for item in view.scan(&lo, &hi)? {
        let (key, value) = item?;
        let id = keys::decode_member(&key)
            .ok_or_else(|| Error::Storage("malformed member key".into()))?;
        let record = MemberRecord::decode(value.as_slice())
            .map_err(|e| Error::Storage(format!("undecodable member record: {e}")))?;
        out.push((id, record));
    }
    Ok(out)
}
