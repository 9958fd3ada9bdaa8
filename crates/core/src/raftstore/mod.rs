//! The raftstore: Raft replicas of ranges and the driver logic of a node.
//!
//! A [`Node`] owns every replica on a node and the node's storage engine. The I/O shell (the
//! server crate, or the simulator) feeds it inputs — ticks, Raft messages from peers, client
//! proposals, read requests — and calls [`Node::process_ready`], which does one **round**:
//!
//! 1. gather the `Ready` of every replica that has one;
//! 2. write all their new log entries, hard states and received snapshots in **one batch with
//!    one fsync** (group commit across ranges); a hard state that only moves the commit index
//!    needs no fsync and goes with step 3's batch;
//! 3. advance raft-rs, apply every newly committed entry to the MVCC state machine, and write
//!    all of that in a second, buffered batch together with each range's applied index;
//! 4. return the messages to send and the results of this node's proposals and reads.
//!
//! Linearizable reads use **ReadIndex** (raft-rs `ReadOnlyOption::Safe`): the leader confirms
//! with a heartbeat quorum that it is still leader, and the read is served once the local
//! replica has applied up to the returned commit index. It makes no assumption about clocks,
//! which is why Strata uses it rather than leader leases. Reads arriving in the same round
//! share one ReadIndex request.

mod closing;
mod config;
mod desk;
mod driver;
pub mod lessor;
pub mod local_read;
mod log;
mod node;
mod open;
pub mod oracle;
mod propose;
mod read_index;
mod repair;
mod replica;
mod revisions;
mod round;
mod session;
mod shared;
pub mod snapshot;
mod split;
mod stamping;
pub mod stats;

pub use config::{Config, Mutation};
pub use desk::{Ask, Grant, NodeBody, NodeMessage, RemoteAnswer, RemoteAsk};
pub use driver::{Answers, Driver};
pub use log::{decode as decode_raft, encode as encode_raft};
pub use node::{AppliedEntry, Configuration, Node, OutMessage, Output};
pub use raft::StateRole;
pub use raft::prelude::{Message, MessageType};
pub use shared::{RangeShared, SharedRanges, Watermarks};
pub use stamping::Stamped;
