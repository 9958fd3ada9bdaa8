//! Which versions a compaction makes unreadable.
//!
//! After compacting at revision R, reads happen only at R or later. A key's versions above R
//! stay; of those at or below R, only the newest can still be seen (by reads between R and the
//! key's next version), and only if it is not a tombstone. Everything else is deleted, a step
//! at a time (`Applier::compaction_step`), and `HashKV` leaves it out whether it is deleted yet
//! or not, so members agree however far their deletions got.

use crate::Result;

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

    /// Whether the version of `user_key` written at `mod_revision` is doomed. `tombstone` is
    /// asked only for the one version where the answer depends on it.
    pub fn doomed(
        &mut self,
        user_key: &[u8],
        mod_revision: i64,
        tombstone: impl FnOnce() -> Result<bool>,
    ) -> Result<bool> {
        if self.is_new_key(user_key) {
            self.key = Some(user_key.to_vec());
            self.kept_one = false;
        }
        if mod_revision > self.revision {
            return Ok(false);
        }
        if self.kept_one {
            return Ok(true);
        }
        self.kept_one = true;
        tombstone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_reads_at_or_after_the_revision_see() {
        let mut sweep = Sweep::new(10);
        // Key a: 12 (above), 8 (what reads at 10 see), 5 (hidden by 8).
        let judged: Vec<bool> = [(b"a", 12, false), (b"a", 8, false), (b"a", 5, false)]
            .into_iter()
            .map(|(k, r, t)| sweep.doomed(k, r, || Ok(t)).unwrap())
            .collect();
        assert_eq!(judged, [false, false, true]);
        // Key b: its newest version at or below 10 is a tombstone, so all of them go.
        assert!(sweep.doomed(b"b", 9, || Ok(true)).unwrap());
        assert!(sweep.doomed(b"b", 3, || Ok(false)).unwrap());
        // Key c: a single live version stays.
        assert!(!sweep.doomed(b"c", 2, || Ok(false)).unwrap());
    }
}
