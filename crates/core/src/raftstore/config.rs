//! [`Config`]: how a node runs its replicas, and the deliberate bugs ([`Mutation`]) the
//! simulator switches on to prove its checkers catch them.

use crate::NodeId;

/// How a node runs its replicas.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: NodeId,
    /// Distinguishes this process from earlier runs of the same node (see `Command`).
    pub epoch: u64,
    /// The first range's voters when the node starts with an empty store.
    pub initial_voters: Vec<NodeId>,
    /// The members to record when bootstrapping (names and peer URLs of the initial voters).
    pub initial_members: Vec<(NodeId, crate::command::MemberRecord)>,
    /// The cluster id to record when bootstrapping.
    pub cluster_id: u64,
    /// Where to cut the key space into ranges when bootstrapping: the meta range holds the keys
    /// before the first, each further range the keys from one split key to the next. Not yet
    /// safe with writes in more than one range, whose revisions would collide until the
    /// revision oracle lands (`docs/sharding.md`); the server does not offer it yet.
    pub initial_split_keys: Vec<Vec<u8>>,
    /// Start with an empty store as a member added to a running cluster: no bootstrap; the
    /// leader sends the state (a snapshot) once the member has been added.
    pub join: bool,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Milliseconds per tick: the leader's lease clock counts in ticks.
    pub tick_ms: u64,
    /// Compact a replica's log once it holds more applied entries than this...
    pub log_entries_max: u64,
    /// ...keeping this many of the newest applied entries, so briefly lagging followers catch
    /// up from the log rather than by snapshot.
    pub log_entries_keep: u64,
    /// Largest batch of entries in one append message.
    pub append_bytes_max: u64,
    pub inflight_appends_max: usize,
    /// Records a compaction step examines: the leader proposes one step per tick while a
    /// compaction has versions left to delete.
    pub compaction_step_records: u64,
    /// Re-issue a ReadIndex request unanswered after this many ticks. raft-rs drops one it
    /// cannot serve (no leader known, or a new leader that has not yet committed an entry of its
    /// term), so the retry is what bounds the wait.
    pub read_retry_ticks: u64,
    /// Where raft-rs's own log records go (elections, rejections); discarded when `None`.
    pub raft_logger: Option<slog::Logger>,
    /// Derive randomized election timeouts from this seed instead of the OS random number
    /// generator raft-rs uses, so that a simulated run replays exactly.
    pub election_seed: Option<u64>,
    /// Report every applied entry in [`Output::applied`] (for the simulator's checkers).
    pub record_applied: bool,
    /// A deliberately broken behaviour, for proving that the simulator's checkers catch it.
    pub mutation: Mutation,
}

/// Deliberate bugs the simulator's tests (and a few in-process cluster tests) switch on to show
/// that their checks fail when they should. Production code never sets anything but `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    #[default]
    None,
    /// Write log entries and hard state without fsync, acknowledging them all the same.
    AckBeforeFsync,
    /// Skip the effect of one applied write (the first at index 10 or later) on this replica.
    SkipApply,
    /// Compact the Raft log in a buffered write, so that the log may lose entries whose
    /// application a power loss then takes back.
    CompactWithoutSync,
    /// Serve linearizable reads from the leader's lease (raft-rs `LeaseBased`), which trusts
    /// that clocks tick at the same rate.
    LeaseReads,
    /// Serve linearizable reads from the local state without ReadIndex. Acted on by the read
    /// path of the shell that serves clients, not by the node.
    ReadsWithoutReadIndex,
    /// Answer a lease keep-alive from the lease clock without first confirming leadership with
    /// a ReadIndex. Acted on by the driver.
    KeepAliveWithoutReadIndex,
    /// Let a follower's ReadIndex request join the leader's round already under way, whose
    /// commit index may predate the request, instead of the next one.
    RemoteReadsJoinRoundUnderWay,
    /// Answer a follower's ReadIndex request at once even before the leader has committed an
    /// entry of its term, when its commit index may be behind what its predecessor committed.
    RemoteReadsBeforeCommitInTerm,
    /// Install a snapshot by deleting every MVCC record of the node first, as a store of one
    /// range could: the records of the node's other ranges, and the cluster's, go with them.
    /// Caught by `crates/core/tests/cluster.rs` (the simulator's ranges past the meta range
    /// hold no data yet).
    RestoreOutsideSpan,
    /// Hand out revisions and read timestamps without first confirming meta leadership with a
    /// quorum check issued after the ask arrived: a deposed meta leader answers from its old,
    /// lower numbers.
    OracleWithoutQuorumCheck,
    /// Start a new meta leader's oracle above the meta range's own revision only, ignoring the
    /// ceiling its predecessors applied: numbers they handed out are handed out again.
    OracleStartsBelowCeiling,
    /// Stamp a range's writes with a block even when a read of the range was answered for a
    /// timestamp at or above it: the read missed writes it should have seen.
    StampPassedRead,
    /// Answer a read of a range taking revisions from the oracle with the leader's commit index
    /// instead of its last index: the read may be served before entries stamped at or below its
    /// timestamp are applied.
    ReadAtCommitIndex,
    /// Close a node's ranges at the oracle's read timestamp as soon as it is given, without the
    /// ReadIndex that makes every range stamp above it and the wait for what was stamped below:
    /// watchers are given events past ones not yet applied, which they then never see.
    CloseWithoutReadIndex,
    /// Keep a range's locks of transactions across ranges from its readers: reads at or above
    /// a lock's start are served while its transaction may commit below them, watchers are
    /// given revisions past it, and nobody resolves an abandoned lock.
    LocksUnpublished,
    /// Answer the meta range's prepare of a lease's revocation as if the lease was registered
    /// for no other range: the revocation deletes the lease's keys in the meta range only, and
    /// its keys elsewhere outlive it.
    RevokeForgetsRanges,
    /// Apply commands whatever epoch and span they were routed by: a write routed to a range
    /// before its split is applied by it after, to a key the new range owns.
    EpochUnchecked,
}

impl Config {
    pub fn new(node_id: NodeId, epoch: u64, initial_voters: Vec<NodeId>) -> Self {
        Self {
            node_id,
            epoch,
            initial_voters,
            initial_members: Vec::new(),
            cluster_id: 0,
            initial_split_keys: Vec::new(),
            join: false,
            election_ticks: 10,
            heartbeat_ticks: 1,
            tick_ms: 100,
            log_entries_max: 10_000,
            log_entries_keep: 2_000,
            append_bytes_max: 1024 * 1024,
            inflight_appends_max: 256,
            compaction_step_records: 10_000,
            read_retry_ticks: 3,
            raft_logger: None,
            election_seed: None,
            record_applied: false,
            mutation: Mutation::None,
        }
    }
}
