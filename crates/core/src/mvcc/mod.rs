//! The range state machine: etcd's multi-version key-value model on top of an [`Engine`].
//!
//! Every write gets the next **revision**, a counter shared by the whole range (and, while the
//! cluster has one range, by the whole cluster). A transaction's writes share one revision.
//! Each key keeps its history as versions: `create_revision` (when the current incarnation of the
//! key was created), `mod_revision` (when it was last written) and `version` (writes since
//! creation). A delete writes a **tombstone**; a later put starts a new incarnation with
//! `version` 1. Reads may ask for any revision not yet **compacted**; compaction at revision C
//! discards every version that no read at or above C can see.
//!
//! The module is split by what the caller does:
//! * [`view`]: a read view that merges the engine with writes of the batch being applied;
//! * [`read`]: `Range` queries;
//! * [`apply`]: `Put`, `DeleteRange`, `Txn` and `Compact`, producing a [`WriteBatch`];
//! * [`validate`]: request checks done before a request is proposed, as etcd does them.
//!
//! [`Engine`]: strata_storage::Engine
//! [`WriteBatch`]: strata_storage::WriteBatch

pub mod alarm;
pub mod apply;
pub mod compaction;
pub mod hash;
pub mod lease;
pub mod locks;
pub mod members;
pub mod memo;
pub mod read;
pub(crate) mod record;
pub mod validate;
pub mod view;

pub use apply::{
    Applier, COMPARE_FAILS, COMPARE_HOLDS, COMPARE_NO_KEYS, LeaseChange, Response, judge_compares,
};
pub use record::{AppliedState, LeaseRecord};

use strata_storage::{Engine, Keyspace};

use crate::{RangeId, Result, keys};

/// Limits applied to requests, with etcd's defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request accepted, in bytes (etcd's `--max-request-bytes`, 1.5 MiB).
    pub request_bytes_max: usize,
    /// Most operations in one branch of a transaction (etcd's `--max-txn-ops`, 128).
    pub txn_ops_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { request_bytes_max: 1536 * 1024, txn_ops_max: 128 }
    }
}

/// Loads a range's applied state, or the state of a brand-new range.
pub fn load_applied_state(engine: &dyn Engine, range_id: RangeId) -> Result<AppliedState> {
    match engine.get(Keyspace::Meta, &keys::range_applied(range_id))? {
        Some(bytes) => AppliedState::decode(&bytes),
        None => Ok(AppliedState::initial()),
    }
}
