//! Peer admission: which processes may open a peer stream to this member (`transport`).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who may open a peer stream to this member: a member of its cluster. The sending side keeps
/// it current with the membership; the receiving side checks each stream's introduction, so a
/// stray process — a member of another cluster, a removed member, anything that found the
/// port — cannot hand this member's Raft a single message.
#[derive(Default)]
pub struct Admission {
    /// The cluster's members but this one.
    peers: Mutex<BTreeSet<u64>>,
    /// The cluster's id as this member's store records it; 0 until it holds the cluster's
    /// state (a member joining a running cluster learns it with its first snapshot).
    pub(crate) cluster_id: AtomicU64,
}

impl Admission {
    pub(crate) fn update(&self, peers: &[(u64, String)], cluster_id: Option<u64>) {
        *self.peers.lock().expect("admission lock") = peers.iter().map(|(id, _)| *id).collect();
        if let Some(id) = cluster_id {
            self.cluster_id.store(id, Ordering::Relaxed);
        }
    }

    /// Why a stream introduced as coming from `from` of cluster `cluster_id` (0: its sender
    /// does not know its cluster's id yet, or predates the field) must be refused, if it must.
    pub(crate) fn refuses(&self, from: u64, cluster_id: u64) -> Option<String> {
        let mine = self.cluster_id.load(Ordering::Relaxed);
        if cluster_id != 0 && mine != 0 && cluster_id != mine {
            return Some(format!(
                "node {from:x} belongs to cluster {cluster_id:x}, this member to cluster {mine:x}"
            ));
        }
        if !self.peers.lock().expect("admission lock").contains(&from) {
            return Some(format!("node {from:x} is not a member of this cluster"));
        }
        None
    }
}
