//! Ranges as state: a range is a span of the user key space, replicated by one Raft group, and
//! described by a [`RangeDescriptor`] that the range itself replicates.
//!
//! The descriptor says which keys the range holds (`[start_key, end_key)`, an empty end being
//! the end of the key space), who holds replicas of it, and its [`RangeEpoch`]: `version` grows
//! when the span changes (a split or a merge), `conf_ver` when the replicas change. Every
//! command carries the epoch it was proposed under, and apply refuses a command whose version
//! is not the range's: after a split, a command routed by the old descriptor would otherwise
//! write keys the range no longer owns (TiKV's region epoch, `check_region_epoch`).
//!
//! Range [`META_RANGE_ID`] (range 1) also owns the cluster's own records: members, alarms, the
//! cluster id, leases, the compaction cursor. Until the meta range hands its user keys to a
//! range of their own it spans the whole user key space too (see `docs/sharding.md`).
//!
//! Which stored MVCC records a range owns ([`RangeDescriptor::owns`]) is what bounds its
//! snapshots: a snapshot carries, and its installation replaces, exactly those records, so
//! installing one range's snapshot never touches another range's data on the same node.

use strata_storage::{Engine, Keyspace};

use crate::{Error, NodeId, RangeId, Result, keys};

/// The range that holds the cluster's own records; the first range of every cluster.
pub const META_RANGE_ID: RangeId = 1;

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RangeDescriptor {
    #[prost(uint64, tag = "1")]
    pub range_id: RangeId,
    /// The first user key the range holds.
    #[prost(bytes = "vec", tag = "2")]
    pub start_key: Vec<u8>,
    /// The first user key past the range; empty: the end of the key space.
    #[prost(bytes = "vec", tag = "3")]
    pub end_key: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub epoch: Option<RangeEpoch>,
    /// Sorted by replica id.
    #[prost(message, repeated, tag = "5")]
    pub replicas: Vec<ReplicaDescriptor>,
    /// Replica ids are never reused within a range: the next one to hand out.
    #[prost(uint64, tag = "6")]
    pub next_replica_id: u64,
    /// The range's writes take their revisions from the revision oracle: set for every range
    /// of a cluster of more than one range (a cluster of one range counts them itself). Its
    /// leader stamps each write with a block, and apply refuses a write without one.
    #[prost(bool, tag = "7")]
    pub oracle_revisions: bool,
}

/// Which generation of a range's span and replicas a descriptor (or a command) belongs to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Message)]
pub struct RangeEpoch {
    /// Grows with every change of the span (split, merge).
    #[prost(uint64, tag = "1")]
    pub version: u64,
    /// Grows with every change of the replicas.
    #[prost(uint64, tag = "2")]
    pub conf_ver: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ReplicaDescriptor {
    /// The replica's id in the range's Raft group (today the node's id; see `docs/sharding.md`).
    #[prost(uint64, tag = "1")]
    pub replica_id: u64,
    #[prost(uint64, tag = "2")]
    pub node_id: NodeId,
    #[prost(bool, tag = "3")]
    pub learner: bool,
}

impl RangeDescriptor {
    /// The descriptor of a range created at bootstrap: epoch 1, a voter on each node.
    pub fn bootstrap(
        range_id: RangeId,
        start_key: &[u8],
        end_key: &[u8],
        voters: &[NodeId],
    ) -> Self {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        let replicas: Vec<ReplicaDescriptor> = (voters.iter())
            .map(|&id| ReplicaDescriptor { replica_id: id, node_id: id, learner: false })
            .collect();
        Self {
            range_id,
            start_key: start_key.to_vec(),
            end_key: end_key.to_vec(),
            epoch: Some(RangeEpoch { version: 1, conf_ver: 1 }),
            next_replica_id: replicas.last().map_or(1, |r| r.replica_id + 1),
            replicas,
            oracle_revisions: false,
        }
    }

    pub fn epoch(&self) -> RangeEpoch {
        self.epoch.unwrap_or_default()
    }

    /// `[start_key, end_key)`.
    pub fn span(&self) -> (&[u8], &[u8]) {
        (&self.start_key, &self.end_key)
    }

    /// Whether the range holds user key `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice()
            && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    /// Whether the range owns the stored MVCC record `raw_key` (whose value is `value`): a
    /// version or a lease attachment of a key in its span, a change record naming such a key,
    /// its compaction cursor, or, for the meta range, one of the cluster's own records.
    pub fn owns(&self, raw_key: &[u8], value: &[u8]) -> bool {
        if let Some(range_id) = keys::decode_compaction_cursor(raw_key) {
            return range_id == self.range_id;
        }
        match keys::user_key_of(raw_key, value) {
            Some(key) => self.contains(&key),
            None => self.range_id == META_RANGE_ID,
        }
    }

    /// Refuses a write with keys outside the range's span: it was routed by a descriptor the
    /// range no longer has (a split applied after it was proposed). Every replica refuses it
    /// alike; the server routes it again.
    pub fn holds_keys_of(&self, request: &crate::command::Request) -> Result<()> {
        use crate::command::Request;
        let mut spans = Vec::new();
        match request {
            Request::Put(put) => spans.push((put.key.as_slice(), &[][..])),
            Request::DeleteRange(delete) => spans.push((&delete.key[..], &delete.range_end[..])),
            Request::Txn(txn) => crate::mvcc::locks::txn_spans(txn, &mut spans),
            _ => return Ok(()),
        }
        if spans.iter().all(|(key, end)| self.covers(key, end)) {
            return Ok(());
        }
        let version = self.epoch().version;
        Err(Error::EpochNotMatch { range_id: self.range_id, proposed: version, current: version })
    }

    /// Whether the range holds every key of etcd's `[key, range_end)`.
    fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        let (start, end) = (self.start_key.as_slice(), self.end_key.as_slice());
        match range_end {
            [] => self.contains(key),
            [0] => key >= start && end.is_empty(),
            past => key >= start && (end.is_empty() || past <= end),
        }
    }

    /// Refuses a command proposed under another version of the range's span: it was routed by
    /// a descriptor that no longer holds, and may concern keys the range does not own now.
    /// Every replica refuses it alike, since all apply the same descriptor changes in the same
    /// order. A command without an epoch (written before ranges had them) and a replica that
    /// does not know its descriptor yet admit everything.
    pub fn admits(&self, proposed: Option<RangeEpoch>) -> Result<()> {
        let (Some(proposed), Some(current)) = (proposed, self.epoch) else { return Ok(()) };
        if proposed.version != current.version {
            return Err(Error::EpochNotMatch {
                range_id: self.range_id,
                proposed: proposed.version,
                current: current.version,
            });
        }
        Ok(())
    }

    /// Why this descriptor cannot be range `range_id`'s, if it cannot.
    pub fn check(&self, range_id: RangeId) -> std::result::Result<(), String> {
        if self.range_id != range_id {
            return Err(format!("it describes range {}", self.range_id));
        }
        if !self.end_key.is_empty() && self.start_key >= self.end_key {
            return Err("its span is empty".into());
        }
        let epoch = self.epoch.ok_or("it has no epoch")?;
        if epoch.version == 0 || epoch.conf_ver == 0 {
            return Err(format!("its epoch {epoch:?} is not one a range ever had"));
        }
        let ids = self.replicas.iter().map(|r| r.replica_id);
        if ids.clone().zip(ids.skip(1)).any(|(a, b)| a >= b) {
            return Err("its replicas are not sorted by distinct ids".into());
        }
        if self.replicas.iter().any(|r| r.replica_id == 0 || r.replica_id >= self.next_replica_id) {
            return Err("a replica id is one it has not handed out".into());
        }
        Ok(())
    }

    /// The replicas after a change of the Raft configuration to `voters` and `learners`, at
    /// `conf_ver + 1`. Replica ids are node ids while each node holds one replica of a range.
    pub fn with_configuration(&self, voters: &[u64], learners: &[u64]) -> Self {
        let mut replicas: Vec<ReplicaDescriptor> = voters
            .iter()
            .map(|&id| (id, false))
            .chain(learners.iter().map(|&id| (id, true)))
            .map(|(id, learner)| ReplicaDescriptor { replica_id: id, node_id: id, learner })
            .collect();
        replicas.sort_by_key(|r| r.replica_id);
        replicas.dedup_by_key(|r| r.replica_id);
        let epoch = self.epoch();
        let highest = replicas.last().map_or(0, |r| r.replica_id);
        Self {
            replicas,
            epoch: Some(RangeEpoch { conf_ver: epoch.conf_ver + 1, ..epoch }),
            next_replica_id: self.next_replica_id.max(highest + 1),
            ..self.clone()
        }
    }
}

/// Reads range `range_id`'s descriptor; `None` if the store has none for it. A descriptor that
/// does not decode or describes something else is refused, naming what is wrong.
pub fn load(engine: &dyn Engine, range_id: RangeId) -> Result<Option<RangeDescriptor>> {
    use prost::Message as _;
    let Some(bytes) = engine.get(Keyspace::Meta, &keys::range_descriptor(range_id))? else {
        return Ok(None);
    };
    let refuse = |why: String| {
        Error::Storage(format!("range {range_id}: refusing its stored descriptor: {why}"))
    };
    let descriptor = RangeDescriptor::decode(bytes.as_slice())
        .map_err(|e| refuse(format!("undecodable: {e}")))?;
    descriptor.check(range_id).map_err(refuse)?;
    Ok(Some(descriptor))
}

/// The ids of every range the store holds a descriptor of, in order.
pub fn stored_ids(engine: &dyn Engine) -> Result<Vec<RangeId>> {
    let (start, end) = keys::range_descriptor_bounds();
    let mut ids = Vec::new();
    for item in engine.scan(Keyspace::Meta, &start, &end)? {
        let (key, _) = item?;
        let id = keys::decode_range_descriptor(&key).ok_or_else(|| {
            Error::Storage(format!(
                "malformed descriptor key {}",
                strata_storage::display_key(&key)
            ))
        })?;
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: &str, end: &str) -> RangeDescriptor {
        RangeDescriptor::bootstrap(2, start.as_bytes(), end.as_bytes(), &[3, 1, 2])
    }

    #[test]
    fn a_span_holds_its_start_and_stops_before_its_end() {
        let range = span("b", "d");
        assert!(!range.contains(b"a"));
        assert!(range.contains(b"b"));
        assert!(range.contains(b"c\xff"));
        assert!(!range.contains(b"d"));
        assert!(span("b", "").contains(b"\xff\xff"), "an empty end is the end of the key space");
        assert!(span("", "b").contains(b""), "the empty key belongs to the first range");
    }

    #[test]
    fn a_range_owns_the_records_of_its_keys_and_the_meta_range_the_clusters() {
        let data = span("m", "");
        let meta = RangeDescriptor::bootstrap(META_RANGE_ID, b"", b"m", &[1]);
        let records = [
            (keys::version(b"a", 3), b"..".to_vec()),
            (keys::version(b"x", 4), b"..".to_vec()),
            (keys::change(3, 0), b"a".to_vec()),
            (keys::change(4, 0), b"x".to_vec()),
            (keys::lease_key(7, b"x"), Vec::new()),
            (keys::member(1), Vec::new()),
            (keys::cluster_id(), Vec::new()),
            (keys::lease(7), Vec::new()),
            (keys::alarm(1, 1), Vec::new()),
            (keys::compaction_cursor(1), Vec::new()),
            (keys::compaction_cursor(2), Vec::new()),
            (keys::lease_mark(b"m", 7), Vec::new()),
        ];
        let owned = |range: &RangeDescriptor| -> Vec<usize> {
            (0..records.len()).filter(|&i| range.owns(&records[i].0, &records[i].1)).collect()
        };
        assert_eq!(owned(&data), vec![1, 3, 4, 10, 11]);
        assert_eq!(owned(&meta), vec![0, 2, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn a_descriptor_that_does_not_fit_its_range_is_refused() {
        assert_eq!(span("a", "b").check(2), Ok(()));
        assert!(span("a", "b").check(3).unwrap_err().contains("describes range 2"));
        assert!(span("b", "b").check(2).unwrap_err().contains("span is empty"));
        let mut no_epoch = span("a", "");
        no_epoch.epoch = None;
        assert!(no_epoch.check(2).is_err());
        let mut reused = span("a", "");
        reused.next_replica_id = 2;
        assert!(reused.check(2).unwrap_err().contains("not handed out"));
    }

    #[test]
    fn a_command_of_another_span_version_is_refused_and_one_of_another_conf_ver_is_not() {
        let range = span("a", "");
        let epoch = |version, conf_ver| Some(RangeEpoch { version, conf_ver });
        assert_eq!(range.admits(epoch(1, 1)), Ok(()));
        assert_eq!(range.admits(epoch(1, 7)), Ok(()), "replica changes do not move keys");
        let refused = range.admits(epoch(2, 1)).unwrap_err();
        assert_eq!(refused, Error::EpochNotMatch { range_id: 2, proposed: 2, current: 1 });
        assert!(refused.is_retryable());
        assert_eq!(range.admits(None), Ok(()), "an entry from before epochs");
    }

    #[test]
    fn a_configuration_change_bumps_conf_ver_and_never_reuses_an_id() {
        let range = span("", "");
        let changed = range.with_configuration(&[1, 2], &[5]);
        assert_eq!(changed.epoch(), RangeEpoch { version: 1, conf_ver: 2 });
        let ids: Vec<(u64, bool)> =
            changed.replicas.iter().map(|r| (r.replica_id, r.learner)).collect();
        assert_eq!(ids, vec![(1, false), (2, false), (5, true)]);
        assert_eq!(changed.next_replica_id, 6);
        let shrunk = changed.with_configuration(&[1], &[]);
        assert_eq!(shrunk.next_replica_id, 6, "ids handed out stay handed out");
        assert_eq!(shrunk.check(2), Ok(()));
    }

    #[test]
    fn a_write_with_a_key_outside_the_span_is_refused() {
        use crate::command::Request;
        use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest};
        let range = span("b", "d");
        let put = |key: &str| Request::Put(PutRequest { key: key.into(), ..Default::default() });
        let delete = |key: &str, end: &[u8]| {
            Request::DeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.to_vec(),
                ..Default::default()
            })
        };
        assert_eq!(range.holds_keys_of(&put("b")), Ok(()));
        assert_eq!(range.holds_keys_of(&delete("b", b"d")), Ok(()));
        let refused =
            |request| matches!(range.holds_keys_of(&request), Err(Error::EpochNotMatch { .. }));
        assert!(refused(put("d")), "the end is the next range's");
        assert!(refused(delete("c", b"e")), "past the end");
        assert!(refused(delete("c", &[0])), "to the end of the key space");
        // The last range holds every key from its start on.
        assert_eq!(span("b", "").holds_keys_of(&delete("c", &[0])), Ok(()));
    }
}
