//! How things are laid out in the storage engine's keyspaces.
//!
//! ```text
//! Raft keyspace (per range; every key starts with the range id)
//!   <range_id:8> 'l' <index:8>        raft log entry (eraftpb.Entry)
//!   <range_id:8> 'h'                  hard state (term, vote, commit)
//!   <range_id:8> 's'                  snapshot metadata: the log's compaction point
//! Meta keyspace
//!   "range/" <range_id:8>             applied state: applied index, revision, compaction
//!   "conf/" <range_id:8>              Raft conf state (voters, learners), as applied
//!   "snapshot/" <range_id:8>          point (index, term) of the last snapshot installed
//!   "desc/" <range_id:8>              the range's descriptor: span, epoch, replicas
//!   "session/" <range_id:8> '/' <proposer:8>   the latest proposal applied per proposer
//! Mvcc keyspace (one key space shared by all ranges; a range is a span of it)
//!   'k' <escaped user key> <!revision:8>   one version of a key (newest first)
//!   'r' <revision:8> <sub:4>                change index: which key changed at a revision
//!   'L' <lease id:8>                        a lease: its TTL
//!   'A' <lease id:8> <escaped user key>     a key attached to a lease
//!   'W' <member id:8> <alarm type:4>        an active alarm (e.g. NOSPACE) raised by a member
//!   'M' <member id:8>                       a cluster member: name, peer URLs, learner or voter
//!   'C'                                     the cluster's id, chosen when it was bootstrapped
//!   'P' [<range_id:8>]                      where a range's pending compaction resumes (no
//!                                           range id: the meta range's)
//!   'F'                                     the cluster's compaction revision, in a cluster of
//!                                           ranges taking revisions from the oracle
//! ```
//!
//! All integers are big endian so that byte order is numeric order. User keys are escaped
//! (memcomparable: 0x00 becomes 0x00 0xFF, and 0x00 0x01 ends the key) so that the versions of
//! one key are contiguous and keys sort exactly as etcd sorts them, bytewise. The revision is
//! stored inverted so that a forward scan meets a key's newest version first, and "the latest
//! version at or below revision R" is the first record at or after `key + !R`.
//!
//! MVCC data is not prefixed by range id, deliberately: ranges are spans of the key space, so
//! splitting a range later changes only descriptors, never rewrites data (as in TiKV and
//! CockroachDB). Everything that belongs to one replica (log, hard state, applied state) is.
//! Which range owns an MVCC record is decided by the user key it concerns ([`user_key_of`]);
//! the records that concern no user key are the meta range's (`crate::range`).

use crate::RangeId;

const TAG_LOG: u8 = b'l';
const TAG_HARD_STATE: u8 = b'h';
const TAG_SNAPSHOT: u8 = b's';
const TAG_VERSION: u8 = b'k';
const TAG_CHANGE: u8 = b'r';
const TAG_LEASE: u8 = b'L';
const TAG_LEASE_KEY: u8 = b'A';
const TAG_ALARM: u8 = b'W';
const TAG_MEMBER: u8 = b'M';
const TAG_CLUSTER_ID: u8 = b'C';
const TAG_COMPACTION: u8 = b'P';
const TAG_CLUSTER_COMPACTION: u8 = b'F';
const TAG_LOCK: u8 = b'x';
const TAG_TXN_STATUS: u8 = b'X';
const TAG_LEASE_MARK: u8 = b'G';
const TAG_NEXT_RANGE_ID: u8 = b'N';

fn range_prefixed(range_id: RangeId, tag: u8, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + suffix.len());
    key.extend_from_slice(&range_id.to_be_bytes());
    key.push(tag);
    key.extend_from_slice(suffix);
    key
}

pub fn raft_log(range_id: RangeId, index: u64) -> Vec<u8> {
    range_prefixed(range_id, TAG_LOG, &index.to_be_bytes())
}

/// The bounds `[start, end)` of a range's whole log.
pub fn raft_log_bounds(range_id: RangeId) -> (Vec<u8>, Vec<u8>) {
    (range_prefixed(range_id, TAG_LOG, &[]), range_prefixed(range_id, TAG_LOG + 1, &[]))
}

pub fn raft_log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(9..17)?.try_into().ok()?))
}

pub fn raft_hard_state(range_id: RangeId) -> Vec<u8> {
    range_prefixed(range_id, TAG_HARD_STATE, &[])
}

/// A range's Raft configuration. It changes when an entry is applied, so it is kept with the
/// applied state (in the Meta keyspace, one journal with it), not with the log.
pub fn range_conf_state(range_id: RangeId) -> Vec<u8> {
    let mut key = b"conf/".to_vec();
    key.extend_from_slice(&range_id.to_be_bytes());
    key
}

/// Where the last snapshot a range installed ends (see `RaftLog::load`).
pub fn range_snapshot(range_id: RangeId) -> Vec<u8> {
    let mut key = b"snapshot/".to_vec();
    key.extend_from_slice(&range_id.to_be_bytes());
    key
}

pub fn raft_snapshot(range_id: RangeId) -> Vec<u8> {
    range_prefixed(range_id, TAG_SNAPSHOT, &[])
}

pub fn range_applied(range_id: RangeId) -> Vec<u8> {
    let mut key = b"range/".to_vec();
    key.extend_from_slice(&range_id.to_be_bytes());
    key
}

/// The latest proposal of `proposer` that range `range_id` applied (see `raftstore::session`).
pub fn range_session(range_id: RangeId, proposer: u64) -> Vec<u8> {
    let mut key = range_session_prefix(range_id);
    key.extend_from_slice(&proposer.to_be_bytes());
    key
}

/// The bounds `[start, end)` of a range's session records.
pub fn range_session_bounds(range_id: RangeId) -> (Vec<u8>, Vec<u8>) {
    let start = range_session_prefix(range_id);
    let mut end = start.clone();
    *end.last_mut().expect("prefix ends with a separator") += 1;
    (start, end)
}

fn range_session_prefix(range_id: RangeId) -> Vec<u8> {
    let mut key = b"session/".to_vec();
    key.extend_from_slice(&range_id.to_be_bytes());
    key.push(b'/');
    key
}

/// A range's descriptor (see `crate::range`).
pub fn range_descriptor(range_id: RangeId) -> Vec<u8> {
    let mut key = DESCRIPTOR_PREFIX.to_vec();
    key.extend_from_slice(&range_id.to_be_bytes());
    key
}

const DESCRIPTOR_PREFIX: &[u8] = b"desc/";

/// The bounds `[start, end)` of every range's descriptor.
pub fn range_descriptor_bounds() -> (Vec<u8>, Vec<u8>) {
    (DESCRIPTOR_PREFIX.to_vec(), b"desc0".to_vec())
}

/// The range id of a descriptor key.
pub fn decode_range_descriptor(key: &[u8]) -> Option<RangeId> {
    Some(u64::from_be_bytes(key.strip_prefix(DESCRIPTOR_PREFIX)?.try_into().ok()?))
}

/// What an MVCC record is, by its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Version,
    Change,
    Lease,
    LeaseKey,
    Lock,
    TxnStatus,
    LeaseMark,
    CompactionCursor,
    ClusterCompaction,
    /// The cluster's records: members, alarms, the cluster id.
    Cluster,
}

pub fn record_kind(raw_key: &[u8]) -> RecordKind {
    match raw_key.first() {
        Some(&TAG_VERSION) => RecordKind::Version,
        Some(&TAG_CHANGE) => RecordKind::Change,
        Some(&TAG_LEASE) => RecordKind::Lease,
        Some(&TAG_LEASE_KEY) => RecordKind::LeaseKey,
        Some(&TAG_LOCK) => RecordKind::Lock,
        Some(&TAG_TXN_STATUS) => RecordKind::TxnStatus,
        Some(&TAG_LEASE_MARK) => RecordKind::LeaseMark,
        Some(&TAG_COMPACTION) => RecordKind::CompactionCursor,
        Some(&TAG_CLUSTER_COMPACTION) => RecordKind::ClusterCompaction,
        _ => RecordKind::Cluster,
    }
}

/// The user key an MVCC record concerns: a version's key, a lease attachment's key, or the key
/// a change record names (its value). `None` for the cluster's own records (members, alarms,
/// the cluster id, leases, the compaction cursor), and for a record it cannot decode.
pub fn user_key_of(raw_key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    match *raw_key.first()? {
        TAG_VERSION => decode_version(raw_key).map(|(key, _)| key),
        TAG_CHANGE => Some(value.to_vec()),
        TAG_LEASE_KEY => decode_lease_key(raw_key),
        TAG_LOCK | TAG_TXN_STATUS => decode_anchored(raw_key, 24).map(|(key, _)| key),
        TAG_LEASE_MARK => decode_anchored(raw_key, 8).map(|(key, _)| key),
        _ => None,
    }
}

/// The epoch of the node's latest start, so that epochs only grow.
pub fn node_epoch() -> Vec<u8> {
    b"node/epoch".to_vec()
}

/// Appends the memcomparable escaping of `user_key`.
fn escape_into(out: &mut Vec<u8>, user_key: &[u8]) {
    for &b in user_key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The prefix shared by every version of `user_key`.
pub fn version_prefix(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + 11);
    out.push(TAG_VERSION);
    escape_into(&mut out, user_key);
    out
}

/// The key of `user_key`'s version written at `revision`.
pub fn version(user_key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = version_prefix(user_key);
    out.extend_from_slice(&(!(revision as u64)).to_be_bytes());
    out
}

/// Where a scan over user keys `[start, end)` starts and stops in the Mvcc keyspace. An empty
/// `end` means "every key from `start` on".
pub fn version_bounds(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lower = version_prefix(start);
    let upper = if end.is_empty() { vec![TAG_VERSION + 1] } else { version_prefix(end) };
    (lower, upper)
}

/// Splits a version key into the user key and the revision.
pub fn decode_version(key: &[u8]) -> Option<(Vec<u8>, i64)> {
    let body = key.strip_prefix(&[TAG_VERSION])?;
    let (escaped, revision) = body.split_at_checked(body.len().checked_sub(8)?)?;
    let revision = !u64::from_be_bytes(revision.try_into().ok()?) as i64;
    Some((unescape(escaped)?, revision))
}

/// The lock a transaction across ranges holds in one range, under `anchor`: the first key of
/// its spans in that range (so a range's locks lie in its span, and move with it).
pub fn lock(anchor: &[u8], txn_id: &[u8; 24]) -> Vec<u8> {
    anchored(TAG_LOCK, anchor, txn_id)
}

/// Where a scan over the locks anchored in user keys `[start, end)` starts and stops (an empty
/// `end`: every key from `start` on).
pub fn lock_bounds(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lower = anchored(TAG_LOCK, start, &[]);
    let upper = if end.is_empty() { vec![TAG_LOCK + 1] } else { anchored(TAG_LOCK, end, &[]) };
    (lower, upper)
}

/// The outcome of a transaction across ranges, kept by the range of its primary key.
pub fn txn_status(primary_key: &[u8], txn_id: &[u8; 24]) -> Vec<u8> {
    anchored(TAG_TXN_STATUS, primary_key, txn_id)
}

fn anchored(tag: u8, anchor: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(anchor.len() + suffix.len() + 3);
    out.push(tag);
    escape_into(&mut out, anchor);
    out.extend_from_slice(suffix);
    out
}

/// Splits an anchored key (a lock, a transaction's status, a lease mark) into its user key and
/// its suffix of `suffix_len` bytes.
fn decode_anchored(key: &[u8], suffix_len: usize) -> Option<(Vec<u8>, &[u8])> {
    let body = key.get(1..)?;
    let (escaped, suffix) = body.split_at_checked(body.len().checked_sub(suffix_len)?)?;
    Some((unescape(escaped)?, suffix))
}

/// What a range other than the meta range knows of lease `id` (`mvcc::record::LeaseMark`),
/// under `anchor`: the range's first key, so the record lies in its span and moves with it.
pub fn lease_mark(anchor: &[u8], id: i64) -> Vec<u8> {
    anchored(TAG_LEASE_MARK, anchor, &(id as u64).to_be_bytes())
}

/// Where the lease marks anchored at `anchor` lie, `[start, end)`: a split copies them to the
/// new range's first key.
pub fn lease_mark_bounds(anchor: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = anchored(TAG_LEASE_MARK, anchor, &[]);
    let end = crate::mvcc::read::prefix_end(&start);
    (start, end)
}

/// The next id a split may give a new range (a cluster record of the meta range).
pub fn next_range_id() -> Vec<u8> {
    vec![TAG_NEXT_RANGE_ID]
}

/// Where a range's pending compaction's next step starts: a raw Mvcc key (replicated, so every
/// replica deletes the same records at the same entry). The meta range's is the one cursor of
/// stores from before ranges; every other range's names it.
pub fn compaction_cursor(range_id: RangeId) -> Vec<u8> {
    let mut out = vec![TAG_COMPACTION];
    if range_id != crate::range::META_RANGE_ID {
        out.extend_from_slice(&range_id.to_be_bytes());
    }
    out
}

/// The range a compaction cursor belongs to.
pub fn decode_compaction_cursor(key: &[u8]) -> Option<RangeId> {
    match key.strip_prefix(&[TAG_COMPACTION])? {
        [] => Some(crate::range::META_RANGE_ID),
        id => Some(u64::from_be_bytes(id.try_into().ok()?)),
    }
}

/// The revision the cluster was last compacted at, in a cluster of ranges taking revisions
/// from the oracle (each range compacts only up to its own last revision; see
/// `Applier::compact`). The meta range's record.
pub fn cluster_compaction() -> Vec<u8> {
    vec![TAG_CLUSTER_COMPACTION]
}

/// The cluster's id (replicated, so a member added later answers with the same id).
pub fn cluster_id() -> Vec<u8> {
    vec![TAG_CLUSTER_ID]
}

/// A cluster member's record.
pub fn member(id: u64) -> Vec<u8> {
    let mut out = vec![TAG_MEMBER];
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Bounds of every member record.
pub fn member_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![TAG_MEMBER], vec![TAG_MEMBER + 1])
}

pub fn decode_member(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.strip_prefix(&[TAG_MEMBER])?.try_into().ok()?))
}

/// An active alarm of a member.
pub fn alarm(member_id: u64, alarm: i32) -> Vec<u8> {
    let mut out = vec![TAG_ALARM];
    out.extend_from_slice(&member_id.to_be_bytes());
    out.extend_from_slice(&(alarm as u32).to_be_bytes());
    out
}

/// Bounds of every alarm record.
pub fn alarm_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![TAG_ALARM], vec![TAG_ALARM + 1])
}

/// `(member id, alarm type)` of an alarm record.
pub fn decode_alarm(key: &[u8]) -> Option<(u64, i32)> {
    let body = key.strip_prefix(&[TAG_ALARM])?;
    if body.len() != 12 {
        return None;
    }
    let member = u64::from_be_bytes(body[..8].try_into().ok()?);
    Some((member, u32::from_be_bytes(body[8..].try_into().ok()?) as i32))
}

/// A lease's record.
pub fn lease(id: i64) -> Vec<u8> {
    let mut out = vec![TAG_LEASE];
    out.extend_from_slice(&(id as u64).to_be_bytes());
    out
}

/// Bounds of every lease record.
pub fn lease_bounds() -> (Vec<u8>, Vec<u8>) {
    (vec![TAG_LEASE], vec![TAG_LEASE + 1])
}

pub fn decode_lease(key: &[u8]) -> Option<i64> {
    let body = key.strip_prefix(&[TAG_LEASE])?;
    Some(u64::from_be_bytes(body.try_into().ok()?) as i64)
}

/// The record attaching `user_key` to lease `id`.
pub fn lease_key(id: i64, user_key: &[u8]) -> Vec<u8> {
    let mut out = lease_keys_prefix(id);
    escape_into(&mut out, user_key);
    out
}

fn lease_keys_prefix(id: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.push(TAG_LEASE_KEY);
    out.extend_from_slice(&(id as u64).to_be_bytes());
    out
}

/// Bounds of the keys attached to lease `id`.
pub fn lease_keys_bounds(id: i64) -> (Vec<u8>, Vec<u8>) {
    match (id as u64).checked_add(1) {
        Some(next) => (lease_keys_prefix(id), lease_keys_prefix(next as i64)),
        None => (lease_keys_prefix(id), vec![TAG_LEASE_KEY + 1]),
    }
}

/// The user key of an attachment record.
pub fn decode_lease_key(key: &[u8]) -> Option<Vec<u8>> {
    unescape(key.strip_prefix(&[TAG_LEASE_KEY])?.get(8..)?)
}

/// Undoes [`escape_into`]; `escaped` must end with the terminator.
fn unescape(escaped: &[u8]) -> Option<Vec<u8>> {
    let mut user_key = Vec::with_capacity(escaped.len());
    let mut i = 0;
    loop {
        match (escaped.get(i), escaped.get(i + 1)) {
            (Some(0), Some(0xff)) => {
                user_key.push(0);
                i += 2;
            }
            (Some(0), Some(0x01)) if i + 2 == escaped.len() => return Some(user_key),
            (Some(&b), _) if b != 0 => {
                user_key.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
}

pub fn change(revision: i64, sub: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(TAG_CHANGE);
    out.extend_from_slice(&(revision as u64).to_be_bytes());
    out.extend_from_slice(&sub.to_be_bytes());
    out
}

/// The revision of a change-index key.
pub fn decode_change(key: &[u8]) -> Option<i64> {
    let body = key.strip_prefix(&[TAG_CHANGE])?;
    (body.len() == 12).then(|| u64::from_be_bytes(body[..8].try_into().expect("8 bytes")) as i64)
}

/// Bounds of the change index for revisions `[from, to)`.
pub fn change_bounds(from: i64, to: i64) -> (Vec<u8>, Vec<u8>) {
    (change(from, 0), change(to, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_key_then_newest_first() {
        let mut keys = [
            version(b"a", 1),
            version(b"a", 5),
            version(b"a\x00", 3),
            version(b"ab", 2),
            version(b"", 9),
            version(b"b", 1),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| decode_version(k).unwrap()).collect();
        assert_eq!(
            decoded,
            vec![
                (b"".to_vec(), 9),
                (b"a".to_vec(), 5),
                (b"a".to_vec(), 1),
                (b"a\x00".to_vec(), 3),
                (b"ab".to_vec(), 2),
                (b"b".to_vec(), 1),
            ]
        );
    }

    #[test]
    fn bounds_contain_exactly_the_span() {
        let (lo, hi) = version_bounds(b"b", b"d");
        assert!(version(b"a\xff", 1) < lo);
        assert!(version(b"b", i64::MAX) >= lo && version(b"b", 1) < hi);
        assert!(version(b"c\xff\xff", 1) < hi);
        assert!(version(b"d", i64::MAX) >= hi);
        let (_, all) = version_bounds(b"", b"");
        assert!(version(b"\xff\xff\xff", 1) < all);
        assert!(change(1, 0) >= all, "change index sorts after every version");
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(decode_version(b"k"), None);
        assert_eq!(decode_version(b"kabc\x00\x02xxxxxxxx"), None);
        assert_eq!(decode_version(&raft_log(1, 2)), None);
        assert_eq!(decode_change(&change(42, 3)), Some(42));
        assert_eq!(decode_change(&version(b"a", 1)), None);
        assert_eq!(decode_lease(&lease(7)), Some(7));
        assert_eq!(decode_alarm(&alarm(9, 1)), Some((9, 1)));
        assert_eq!(decode_lease_key(&lease_key(7, b"a\x00b")), Some(b"a\x00b".to_vec()));
        let (lo, hi) = lease_keys_bounds(7);
        assert!(lease_key(7, b"\xff\xff") < hi && lease_key(7, b"") >= lo);
        assert!(lease_key(8, b"") >= hi);
        for id in [i64::MAX, -1, i64::MIN] {
            let (lo, hi) = lease_keys_bounds(id);
            assert!(lease_key(id, b"\xff") >= lo && lease_key(id, b"\xff") < hi, "{id}");
        }
        let (_, all_versions) = version_bounds(b"", b"");
        let (first_version, _) = version_bounds(b"", b"");
        for key in [lease(1), lease_key(1, b"k")] {
            assert!(key < first_version || key >= all_versions, "lease records are not versions");
        }
    }

    #[test]
    fn log_keys_roundtrip() {
        let (lo, hi) = raft_log_bounds(7);
        let k = raft_log(7, 42);
        assert!(k >= lo && k < hi);
        assert_eq!(raft_log_index(&k), Some(42));
        assert!(raft_log(8, 0) >= hi);
    }
}
