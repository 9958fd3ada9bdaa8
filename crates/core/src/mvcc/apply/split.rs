//! What a split asks of the state machine (see `raftstore::split`): a range id from the meta
//! range, and the range's own part — no locks held, the lease marks the new range inherits, and
//! a narrower span for the entries applied after it.

use super::{Applier, Response};
use crate::range::META_RANGE_ID;
use crate::{Error, Result, keys};

/// The first id handed out by a cluster bootstrapped before ranges were allocated ids: above
/// any number of ranges such a cluster could have been bootstrapped with.
const FIRST_ID_WITHOUT_RECORD: u64 = 1_000;

impl Applier<'_> {
    /// In the meta range: hands out the next range id (never one handed out before).
    pub(super) fn allocate_range_id(&mut self) -> Result<Response> {
        if self.range_id != META_RANGE_ID {
            return Err(Error::Internal("range ids are allocated by the meta range".into()));
        }
        let next = match self.view().get_raw(&keys::next_range_id())? {
            Some(bytes) => u64::from_be_bytes(
                (bytes.as_slice().try_into())
                    .map_err(|_| Error::Storage("malformed next range id record".into()))?,
            ),
            None => FIRST_ID_WITHOUT_RECORD,
        };
        self.write_raw(keys::next_range_id(), Some((next + 1).to_be_bytes().to_vec()));
        Ok(Response::RangeIdAllocated(next))
    }

    /// Gives up the keys from `split_key` on: refused while the range holds locks of
    /// transactions across ranges (a lock would be left with a range that no longer owns its
    /// key; the server waits for them, resolving abandoned ones). Returns the lease marks the
    /// new range starts with: the range's own, anchored at `split_key`.
    pub fn split_off(&mut self, split_key: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if let Some((_, lock)) = self.locks()?.into_iter().next() {
            return Err(Error::Locked(lock.info()));
        }
        let (start, end) = keys::lease_mark_bounds(&self.span.0);
        let mut marks = Vec::new();
        for item in self.view().scan(&start, &end)? {
            let (key, value) = item?;
            let Some(id) = key.len().checked_sub(8).and_then(|at| key[at..].try_into().ok()) else {
                return Err(Error::Storage("malformed lease mark".into()));
            };
            marks.push((keys::lease_mark(split_key, i64::from_be_bytes(id)), value));
        }
        self.span.1 = split_key.to_vec();
        Ok(marks)
    }
}
