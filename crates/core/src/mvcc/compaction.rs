//! Which versions a compaction makes unreadable.
//!
//! After compacting at revision R, reads happen only at R or later. A key's versions above R
//! stay; of those at or below R, only the newest can still be seen (by reads between R and the
//! key's next version), and only if it is not a tombstone. Everything else is deleted, a step
//! at a time (`Applier::compaction_step`), and `HashKV` leaves it out whether it is deleted yet
//! or not, so members agree however far their deletions got.

use super::record::VersionRecord;
use super::view::View;
use crate::{Error, Result, keys};

/// The cluster's compaction revision in a cluster of several ranges, as the meta range keeps it
/// (`fallback`, the meta range's own, before any compaction across ranges).
pub fn cluster_revision(view: &View<'_>, fallback: i64) -> Result<i64> {
    match view.get_raw(&keys::cluster_compaction())? {
        Some(bytes) => Ok(i64::from_be_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Storage("a malformed cluster compaction revision".into()))?,
        )),
        None => Ok(fallback),
    }
}

/// Walks versions in store order (keys ascending, each key's versions newest first) and tells
/// which ones a compaction at `revision` dooms.
pub struct Sweep {
    revision: i64,
    key: Option<Vec<u8>>,
    /// Whether the current key's newest version at or below `revision` has been seen.
    kept_one: bool,
}

impl Sweep {
    pub fn new(revision: i64) -> Self {
        Self { revision, key: None, kept_one: false }
    }

    /// Whether `user_key` differs from the key of the last version judged.
    pub fn is_new_key(&self, user_key: &[u8]) -> bool {
        self.key.as_deref() != Some(user_key)
    }

    /// Judges the version of `user_key` written at `mod_revision`. `tombstone` is asked only
    /// for the one version where the answer depends on it.
    pub fn judge(
        &mut self,
        user_key: &[u8],
        mod_revision: i64,
        tombstone: impl FnOnce() -> Result<bool>,
    ) -> Result<Verdict> {
        if self.is_new_key(user_key) {
            self.key = Some(user_key.to_vec());
            self.kept_one = false;
        }
        if mod_revision > self.revision {
            return Ok(Verdict::Kept);
        }
        if self.kept_one {
            return Ok(Verdict::Doomed);
        }
        self.kept_one = true;
        Ok(if tombstone()? { Verdict::DoomedDeletion } else { Verdict::Kept })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Kept,
    Doomed,
    /// Doomed, and the key's newest version at the revision: a deletion.
    DoomedDeletion,
}

/// Collects the versions in `[from, end)` that reads at `revision` and later cannot see, and
/// the keys whose newest version at `revision` is a deletion it dooms. Returns where the next
/// step starts (a key boundary past `budget` records), `None` at `end`.
pub(super) fn doomed_versions(
    view: View<'_>,
    (from, end): (&[u8], &[u8]),
    revision: i64,
    budget: usize,
    doomed: &mut Vec<Vec<u8>>,
    forgotten: &mut Vec<(Vec<u8>, i64)>,
) -> Result<Option<Vec<u8>>> {
    let mut sweep = Sweep::new(revision);
    for (examined, item) in view.scan(from, end)?.enumerate() {
        let (raw_key, bytes) = item?;
        let (user_key, mod_revision) = keys::decode_version(&raw_key)
            .ok_or_else(|| Error::Storage("malformed MVCC key".into()))?;
        if examined >= budget && sweep.is_new_key(&user_key) {
            return Ok(Some(keys::version_prefix(&user_key)));
        }
        match sweep.judge(&user_key, mod_revision, || VersionRecord::is_tombstone(&bytes))? {
            Verdict::Kept => continue,
            Verdict::Doomed => {}
            // If that deletion is the key's newest version of all, the key has none left.
            Verdict::DoomedDeletion => forgotten.push((user_key, mod_revision)),
        }
        doomed.push(raw_key);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_reads_at_or_after_the_revision_see() {
        let mut sweep = Sweep::new(10);
        let mut judge =
            |key: &[u8], revision, tombstone| sweep.judge(key, revision, || Ok(tombstone)).unwrap();
        // Key a: 12 (above), 8 (what reads at 10 see), 5 (hidden by 8).
        assert_eq!(judge(b"a", 12, false), Verdict::Kept);
        assert_eq!(judge(b"a", 8, false), Verdict::Kept);
        assert_eq!(judge(b"a", 5, false), Verdict::Doomed);
        // Key b: its newest version at or below 10 is a deletion, so all of them go.
        assert_eq!(judge(b"b", 9, true), Verdict::DoomedDeletion);
        assert_eq!(judge(b"b", 3, false), Verdict::Doomed);
        // Key c: a single live version stays.
        assert_eq!(judge(b"c", 2, false), Verdict::Kept);
    }
}
