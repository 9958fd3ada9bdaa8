//! Watches: streams of a range's events (puts and deletes) in revision order.
//!
//! Two parts, both pure:
//! * [`history`] reads past events from the change index, for watchers that start in the past
//!   or fell behind;
//! * [`Hub`] holds the watchers of a node and hands each one the live events it wants, as they
//!   are published after being applied, with a bounded buffer per watcher.
//!
//! The server feeds the hub and runs the client streams; the simulator can drive the same code.
//! How the parts fit: events are published once, in order, after the writes that made them are
//! visible in the engine. A watcher is either *synced* (it gets published events as they come,
//! into its buffer) or *lagging* (it reads from the change index until it reaches the published
//! revision, then syncs again). A watcher whose buffer would overflow its limit turns lagging and
//! its buffer is dropped: a slow watcher costs storage reads later, never memory now, and never
//! slows anyone else down.

pub mod feed;
pub mod history;
mod hub;
mod hubs;

pub use hub::{Hub, Take, WatcherId};
pub use hubs::{Group, Hubs};

use crate::pb::mvccpb::Event;
use crate::pb::mvccpb::event::EventType;

/// Bytes of events buffered for one watcher at most (one larger event is still buffered alone).
/// Beyond it the watcher falls behind and catches up from storage.
pub const WATCHER_BUFFER_BYTES_MAX: usize = 256 * 1024;
/// Bytes of events buffered for all of a node's watchers together. A watcher whose next event
/// would pass it falls behind instead, so thousands of slow watchers cannot add up.
pub const HUB_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What a watcher watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    pub key: Vec<u8>,
    /// `None`: `key` alone; `Some` empty: every key from `key` on; otherwise `[key, end)`.
    pub range_end: Option<Vec<u8>>,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl Spec {
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.range_end {
            None => key == self.key.as_slice(),
            Some(end) => key >= self.key.as_slice() && (end.is_empty() || key < end.as_slice()),
        }
    }

    /// Whether the watcher wants `event` (its key is assumed to be in range).
    pub fn wants(&self, event: &Event) -> bool {
        match EventType::try_from(event.r#type) {
            Ok(EventType::Put) => !self.no_put,
            Ok(EventType::Delete) => !self.no_delete,
            Err(_) => false,
        }
    }
}

/// The revision of an event.
pub fn revision_of(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
