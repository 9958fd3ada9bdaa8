//! In-process multi-node tests of the raftstore: several `Node`s over in-memory engines, wired
//! by a test network that can drop a node's traffic. They cover what is checked best over many
//! writes or with a hand-made message: leader loss, restart after a crash that loses unsynced
//! writes, catch-up by snapshot after the log was compacted, refusing a damaged log, duplicated
//! proposals, and what a removed member answers. Stories that read best message by message
//! (elections, follower reads, proposal batching, removing the leader) are golden scenario
//! scripts in `crates/sim/tests/testdata/scenarios/`.

use std::collections::HashSet;
use std::sync::Arc;

use strata_core::FIRST_RANGE_ID;
use strata_core::command::{MemberChange, MemberChangeKind, MemberRecord, Request};
use strata_core::mvcc::view::View;
use strata_core::mvcc::{Response, read};
use strata_core::pb::etcdserverpb::{PutRequest, RangeRequest};
use strata_core::raftstore::oracle::Block;
use strata_core::raftstore::{Config, Message, MessageType, Mutation, Node, OutMessage};
use strata_storage::{Engine, MemEngine};

struct TestCluster {
    engines: Vec<MemEngine>,
    nodes: Vec<Option<Node>>,
    /// Nodes whose traffic (both directions) is dropped.
    isolated: HashSet<u64>,
    in_flight: Vec<OutMessage>,
    next_proposal: u64,
    config: fn(u64) -> Config,
    /// Reads released by the last step, as (node, read id).
    reads_ready: Vec<(u64, u64)>,
    /// The next revision to hand a range leader that holds writes: the test stands in for
    /// the revision oracle (which the simulator and the server run on the meta leader).
    next_revision: i64,
}

fn default_config(id: u64) -> Config {
    Config::new(id, 1, vec![1, 2, 3])
}

fn small_log_config(id: u64) -> Config {
    let mut config = Config::new(id, 1, vec![1, 2, 3]);
    config.log_entries_max = 20;
    config.log_entries_keep = 5;
    config
}

impl TestCluster {
    fn new(config: fn(u64) -> Config) -> Self {
        let engines: Vec<MemEngine> = (0..3).map(|_| MemEngine::new()).collect();
        let nodes = (1..=3)
            .map(|id| {
                Some(Node::open(config(id), Arc::new(engines[id as usize - 1].clone())).unwrap())
            })
            .collect();
        Self {
            engines,
            nodes,
            isolated: HashSet::new(),
            in_flight: Vec::new(),
            next_proposal: 1,
            config,
            reads_ready: Vec::new(),
            next_revision: 1_000,
        }
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes[id as usize - 1].as_mut().expect("node is running")
    }

    /// One step of the world: tick everyone, deliver what is in flight, run a round.
    fn step(&mut self) -> Vec<(u64, u64, Result<Response, strata_core::Error>)> {
        let mut completions = Vec::new();
        self.reads_ready.clear();
        for msg in std::mem::take(&mut self.in_flight) {
            let to = msg.message.to;
            if self.isolated.contains(&to) || self.isolated.contains(&msg.message.from) {
                continue;
            }
            if let Some(node) = self.nodes[to as usize - 1].as_mut() {
                node.step(msg.range_id, msg.message);
            }
        }
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            let Some(node) = slot.as_mut() else { continue };
            node.tick();
            let output = node.process_ready().unwrap();
            self.in_flight.extend(output.messages);
            for (id, result) in output.completions {
                completions.push((i as u64 + 1, id, result));
            }
            self.reads_ready.extend(output.reads_ready.iter().map(|r| (i as u64 + 1, *r)));
            for range in 1..=2 {
                let Some((count @ 1.., term)) = node.revisions_held(range) else { continue };
                let lo = self.next_revision;
                self.next_revision += count as i64;
                node.stamp(range, term, Block { lo, hi: lo + count as i64 - 1 });
            }
        }
        completions
    }

    fn leader(&self) -> Option<u64> {
        self.leader_of(FIRST_RANGE_ID)
    }

    /// The leader of `range` that every running, connected node agrees on.
    fn leader_of(&self, range: u64) -> Option<u64> {
        let leaders: HashSet<u64> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.is_some() && !self.isolated.contains(&(*i as u64 + 1)))
            .map(|(_, n)| {
                let shared = n.as_ref().unwrap().shared(range).unwrap();
                shared.leader_id.load(std::sync::atomic::Ordering::Acquire)
            })
            .collect();
        match leaders.into_iter().collect::<Vec<_>>()[..] {
            [id] if id != 0 => Some(id),
            _ => None,
        }
    }

    fn run_until_leader(&mut self) -> u64 {
        self.run_until_leader_of(FIRST_RANGE_ID)
    }

    fn run_until_leader_of(&mut self, range: u64) -> u64 {
        for _ in 0..500 {
            self.step();
            if let Some(leader) = self.leader_of(range).filter(|l| !self.isolated.contains(l)) {
                return leader;
            }
        }
        panic!("no leader of range {range} elected");
    }

    /// Elects a leader, writes once so that every member has applied an entry of its term, and
    /// returns the leader and one follower.
    fn settled_leader_and_follower(&mut self) -> (u64, u64) {
        let leader = self.run_until_leader();
        self.put(leader, "warm", "up");
        self.run(3);
        (leader, (1..=3).find(|id| *id != leader).unwrap())
    }

    /// Proposes a put at `via` and runs until it is applied there.
    fn put(&mut self, via: u64, key: &str, value: &str) -> i64 {
        let request =
            Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() });
        match self.propose(via, FIRST_RANGE_ID, request) {
            Response::Put(r) => r.header.unwrap().revision,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Proposes `request` to `range` at `via` and runs until it is applied there.
    fn propose(&mut self, via: u64, range: u64, request: Request) -> Response {
        self.try_propose(via, range, request).unwrap()
    }

    /// [`Self::propose`], for a request that may be refused.
    fn try_propose(
        &mut self,
        via: u64,
        range: u64,
        request: Request,
    ) -> Result<Response, strata_core::Error> {
        let id = self.next_proposal;
        self.next_proposal += 1;
        self.node(via).propose(range, id, request).unwrap();
        for _ in 0..500 {
            for (node, pid, result) in self.step() {
                if node == via && pid == id {
                    return result;
                }
            }
        }
        panic!("a proposal to range {range} via {via} was never applied");
    }

    fn get(&self, id: u64, key: &str) -> Option<Vec<u8>> {
        let node = self.nodes[id as usize - 1].as_ref().unwrap();
        let state = node.shared(FIRST_RANGE_ID).unwrap().read_state();
        let engine = &self.engines[id as usize - 1];
        let request = RangeRequest { key: key.into(), ..Default::default() };
        let response = read::range(&View::new(engine as &dyn Engine), &state, &request).unwrap();
        response.kvs.first().map(|kv| kv.value.clone())
    }

    fn revision(&self, id: u64) -> i64 {
        let node = self.nodes[id as usize - 1].as_ref().unwrap();
        node.shared(FIRST_RANGE_ID).unwrap().read_state().revision
    }

    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Simulates a power loss of node `id` and restarts it from what was durable.
    fn crash_and_restart(&mut self, id: u64) {
        self.nodes[id as usize - 1] = None;
        let engine = self.engines[id as usize - 1].clone();
        engine.crash();
        let mut config = (self.config)(id);
        config.epoch = 2;
        self.nodes[id as usize - 1] = Some(Node::open(config, Arc::new(engine)).unwrap());
    }
}

#[test]
fn survives_leader_loss() {
    let mut cluster = TestCluster::new(default_config);
    let old = cluster.run_until_leader();
    cluster.put(old, "before", "1");
    cluster.isolated.insert(old);
    let new = cluster.run_until_leader();
    assert_ne!(new, old);
    cluster.put(new, "after", "2");
    // The old leader rejoins and catches up.
    cluster.isolated.clear();
    cluster.run(100);
    assert_eq!(cluster.get(old, "after"), Some(b"2".to_vec()));
    assert_eq!(cluster.revision(old), cluster.revision(new));
}

#[test]
fn restarts_from_durable_state_after_power_loss() {
    let mut cluster = TestCluster::new(default_config);
    let leader = cluster.run_until_leader();
    for i in 0..10 {
        cluster.put(leader, &format!("k{i}"), "v");
    }
    cluster.run(10);
    for id in 1..=3 {
        cluster.crash_and_restart(id);
    }
    let leader = cluster.run_until_leader();
    cluster.put(leader, "k10", "v");
    cluster.run(20);
    for id in 1..=3 {
        for i in 0..=10 {
            assert_eq!(
                cluster.get(id, &format!("k{i}")),
                Some(b"v".to_vec()),
                "node {id} lost k{i}"
            );
        }
    }
}

#[test]
fn lagging_member_catches_up_by_snapshot() {
    let mut cluster = TestCluster::new(small_log_config);
    let leader = cluster.run_until_leader();
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.isolated.insert(lagging);
    for i in 0..100 {
        cluster.put(leader, &format!("k{i:03}"), &format!("v{i}"));
    }
    cluster.isolated.clear();
    cluster.run(200);
    assert_eq!(cluster.revision(lagging), cluster.revision(leader));
    for i in (0..100).step_by(7) {
        assert_eq!(cluster.get(lagging, &format!("k{i:03}")), Some(format!("v{i}").into_bytes()));
    }
    // And it keeps up afterwards, through the log.
    let r = cluster.put(leader, "after-snapshot", "x");
    cluster.run(20);
    assert_eq!(cluster.revision(lagging), r);
}

#[test]
fn linearizable_read_on_a_follower_waits_for_apply() {
    let mut cluster = TestCluster::new(default_config);
    let leader = cluster.run_until_leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.put(leader, "x", "1");
    // Partition the follower before the write reaches it, then ask it for a read: the read
    // must not be released until the follower has applied the write.
    cluster.isolated.insert(follower);
    let revision = cluster.put(leader, "y", "2");
    assert!(cluster.revision(follower) < revision);
    cluster.node(follower).read_index(FIRST_RANGE_ID, 77);
    cluster.run(5);
    assert!(cluster.get(follower, "y").is_none());
    cluster.isolated.clear();
    let mut released = false;
    for _ in 0..200 {
        cluster.step();
        if cluster.reads_ready.contains(&(follower, 77)) {
            released = true;
            // Released only once the state it will read includes the write.
            assert!(cluster.revision(follower) >= revision);
            assert_eq!(cluster.get(follower, "y"), Some(b"2".to_vec()));
            break;
        }
    }
    assert!(released, "the read was never released");
}

/// Whether a follower's read is released while a new leader has not committed an entry of its
/// term yet (its appends are lost), when its commit index may lag its predecessor's.
fn follower_read_released_before_the_new_leader_commits(config: fn(u64) -> Config) -> bool {
    let mut cluster = TestCluster::new(config);
    let old = cluster.run_until_leader();
    cluster.put(old, "x", "1");
    cluster.isolated.insert(old);
    let drop_appends = |cluster: &mut TestCluster| {
        cluster.in_flight.retain(|m| m.message.get_msg_type() != MessageType::MsgAppend);
    };
    let mut new = None;
    for _ in 0..500 {
        cluster.step();
        drop_appends(&mut cluster);
        new = cluster.leader().filter(|l| *l != old);
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("a new leader");
    let follower = (1..=3).find(|id| *id != old && *id != new).unwrap();
    cluster.node(follower).read_index(FIRST_RANGE_ID, 99);
    let mut early = false;
    for _ in 0..20 {
        cluster.step();
        drop_appends(&mut cluster);
        early |= cluster.reads_ready.contains(&(follower, 99));
    }
    // Once the new leader's appends arrive, it commits in its term and answers.
    let mut released = early;
    for _ in 0..100 {
        cluster.step();
        released |= cluster.reads_ready.contains(&(follower, 99));
    }
    assert!(released, "the read was never released");
    early
}

#[test]
fn a_new_leader_confirms_no_followers_read_before_committing_in_its_term() {
    assert!(!follower_read_released_before_the_new_leader_commits(default_config));
    // The test notices a leader that answers too early.
    assert!(follower_read_released_before_the_new_leader_commits(|id| Config {
        mutation: Mutation::RemoteReadsBeforeCommitInTerm,
        ..default_config(id)
    }));
}

#[test]
fn second_snapshot_is_fresh_not_the_cached_first_one() {
    let mut cluster = TestCluster::new(small_log_config);
    let leader = cluster.run_until_leader();
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    // Fall behind twice; the log is compacted past the first snapshot in between, so the
    // second catch-up needs a new snapshot.
    for round in 0..2 {
        cluster.isolated.insert(lagging);
        for i in 0..100 {
            cluster.put(leader, &format!("r{round}/{i:03}"), "v");
        }
        cluster.isolated.clear();
        cluster.run(300);
        assert_eq!(cluster.revision(lagging), cluster.revision(leader), "round {round}");
    }
    assert_eq!(cluster.get(lagging, "r1/099"), Some(b"v".to_vec()));
}

#[test]
fn refuses_to_open_a_log_that_lost_acknowledged_entries() {
    let mut cluster = TestCluster::new(default_config);
    let leader = cluster.run_until_leader();
    for i in 0..5 {
        cluster.put(leader, &format!("k{i}"), "v");
    }
    cluster.run(10);
    // Drop the newest log entry of a follower behind its back, as a damaged journal would.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.nodes[follower as usize - 1] = None;
    let engine = cluster.engines[follower as usize - 1].clone();
    let (start, end) = strata_core::keys::raft_log_bounds(FIRST_RANGE_ID);
    let last = engine
        .scan(strata_storage::Keyspace::Raft, &start, &end)
        .unwrap()
        .last()
        .unwrap()
        .unwrap()
        .0;
    let mut batch = strata_storage::WriteBatch::new();
    batch.delete(strata_storage::Keyspace::Raft, last);
    engine.write(&batch, strata_storage::Durability::Sync).unwrap();
    let err = Node::open(default_config(follower), Arc::new(engine)).err().expect("must refuse");
    assert!(err.to_string().contains("lost acknowledged entries"), "{err}");
}

#[test]
fn a_duplicated_proposal_is_applied_once() {
    let mut cluster = TestCluster::new(default_config);
    let leader = cluster.run_until_leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.put(leader, "k", "first");
    // A follower's proposal travels to the leader as a message; deliver that message twice, as
    // a duplicating network would, with a newer write in between.
    let request = Request::Put(PutRequest {
        key: b"k".to_vec(),
        value: b"old".to_vec(),
        ..Default::default()
    });
    cluster.node(follower).propose(FIRST_RANGE_ID, 1_000, request).unwrap();
    let output = cluster.node(follower).process_ready().unwrap();
    let proposal = output.messages.into_iter().find(|m| m.message.to == leader).unwrap();
    cluster.in_flight.push(proposal.clone());
    cluster.run(10);
    assert_eq!(cluster.get(leader, "k"), Some(b"old".to_vec()));
    let revision = cluster.put(leader, "k", "new");
    cluster.in_flight.push(proposal);
    cluster.run(10);
    for id in 1..=3 {
        assert_eq!(cluster.get(id, "k"), Some(b"new".to_vec()), "node {id}");
        assert_eq!(cluster.revision(id), revision, "the copy must not take a revision");
    }
}

/// A batch of proposals bigger than an append may be is proposed in several messages, each
/// within the bound (one proposal at least per message).
#[test]
fn a_batch_of_proposals_is_cut_at_the_append_size_bound() {
    let mut cluster =
        TestCluster::new(|id| Config { append_bytes_max: 1_000, ..default_config(id) });
    let (_, follower) = cluster.settled_leader_and_follower();
    let mut proposals: Vec<(u64, Request)> = (0..10)
        .map(|i| {
            let value = vec![b'v'; 300];
            let request = PutRequest { key: format!("k{i}").into(), value, ..Default::default() };
            (1_000 + i, Request::Put(request))
        })
        .collect();
    cluster.node(follower).propose_many(FIRST_RANGE_ID, &mut proposals).unwrap();
    assert!(proposals.is_empty(), "all handed to Raft");
    let output = cluster.node(follower).process_ready().unwrap();
    let forwarded: Vec<usize> = output
        .messages
        .iter()
        .filter(|m| m.message.get_msg_type() == MessageType::MsgPropose)
        .map(|m| m.message.entries.len())
        .collect();
    assert_eq!(forwarded, vec![3, 3, 3, 1], "at most three 300-byte values in 1,000 bytes");
    cluster.in_flight.extend(output.messages);
    let mut answered = 0;
    for _ in 0..50 {
        answered +=
            cluster.step().iter().filter(|(node, _, r)| *node == follower && r.is_ok()).count();
    }
    assert_eq!(answered, 10, "every proposal applied and answered where it was made");
}

#[test]
fn epochs_grow_across_restarts_whatever_the_configured_epoch() {
    let mut cluster = TestCluster::new(default_config);
    let leader = cluster.run_until_leader();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.put(follower, "a", "1");
    // Restart the follower with an epoch lower than before (a clock that went backwards): its
    // new proposals must still be applied, not mistaken for old ones.
    cluster.nodes[follower as usize - 1] = None;
    let engine = cluster.engines[follower as usize - 1].clone();
    let mut config = default_config(follower);
    config.epoch = 0;
    cluster.nodes[follower as usize - 1] = Some(Node::open(config, Arc::new(engine)).unwrap());
    cluster.run(20);
    cluster.put(follower, "b", "2");
    assert_eq!(cluster.get(leader, "b"), Some(b"2".to_vec()));
}

/// Removes the leader through Raft and runs until it has applied the end of the joint
/// configuration. Returns the removed leader, the others, and the messages it sent in the
/// rounds it stepped down in.
fn remove_the_leader(cluster: &mut TestCluster) -> (u64, Vec<u64>, Vec<Message>) {
    let leader = cluster.run_until_leader();
    cluster.put(leader, "a", "1");
    let change = MemberChange { kind: MemberChangeKind::Remove as i32, id: leader, member: None };
    cluster.node(leader).propose(FIRST_RANGE_ID, 1_000, Request::MemberChange(change)).unwrap();
    for _ in 0..200 {
        cluster.step();
        let conf = cluster.node(leader).configuration(FIRST_RANGE_ID).unwrap();
        if !conf.joint && !conf.voters.contains(&leader) {
            // What it sends while applying goes out with its next round.
            let mut sent = Vec::new();
            for _ in 0..2 {
                sent.extend(cluster.in_flight.iter().filter(|m| m.message.from == leader).cloned());
                cluster.step();
            }
            let sent = sent.into_iter().map(|m| m.message).collect();
            let others = (1..=3).filter(|id| *id != leader).collect();
            return (leader, others, sent);
        }
    }
    panic!("the leader's removal was never applied");
}

#[test]
fn a_removed_member_refuses_a_pre_vote_in_the_candidates_term() {
    // A removed member falls behind in term. Its refusal carries what it knows is committed
    // (which lets a candidate holding those entries commit them), but a candidate ignores an
    // answer from an older term: the member answers in the candidate's.
    let mut cluster = TestCluster::new(default_config);
    let (removed, others, _) = remove_the_leader(&mut cluster);
    cluster.run(20);
    let node = cluster.node(removed);
    let committed = node.shared(FIRST_RANGE_ID).unwrap().read_state().applied_index;
    let candidate_term = node.term(FIRST_RANGE_ID) + 5;
    let mut pre_vote = Message::default();
    pre_vote.set_msg_type(MessageType::MsgRequestPreVote);
    (pre_vote.from, pre_vote.to, pre_vote.term) = (others[0], removed, candidate_term + 1);
    // A log that holds nothing: the member must refuse.
    (pre_vote.index, pre_vote.log_term) = (0, 0);
    node.step(FIRST_RANGE_ID, pre_vote);
    let output = node.process_ready().unwrap();
    let answer = (output.messages.iter().map(|m| &m.message))
        .find(|m| m.get_msg_type() == MessageType::MsgRequestPreVoteResponse)
        .expect("an answer to the pre-vote");
    assert!(answer.reject);
    assert_eq!(answer.term, candidate_term, "answered in the member's own, older term");
    assert!(answer.commit >= committed && answer.commit_term > 0, "{answer:?}");
}

/// Two ranges on every node: the meta range `["", "m")` and range 2 `["m", ∞)`, whose writes
/// wait for blocks of revisions (`TestCluster::step` hands them out).
fn two_ranges_config(id: u64) -> Config {
    let member = |id| {
        let peer_urls = vec![format!("http://n{id}")];
        (id, MemberRecord { name: format!("n{id}"), peer_urls, is_learner: false })
    };
    Config {
        initial_split_keys: vec![b"m".to_vec()],
        initial_members: (1..=3).map(member).collect(),
        ..small_log_config(id)
    }
}

fn put_request(key: &str, value: &str) -> Request {
    Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

/// The MVCC records node `id` holds that range `range` owns, by its descriptor there.
fn owned_records(cluster: &TestCluster, id: u64, range: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let node = cluster.nodes[id as usize - 1].as_ref().unwrap();
    let descriptor = node.descriptor(range).unwrap().clone();
    let engine = &cluster.engines[id as usize - 1];
    let records = engine.scan(strata_storage::Keyspace::Mvcc, b"", b"").unwrap();
    records.map(|r| r.unwrap()).filter(|(k, v)| descriptor.owns(k, v)).collect()
}

/// Whether the meta range's records on a node survive its catching up on range 2 by snapshot.
fn meta_records_survive_a_snapshot_of_range_2(config: fn(u64) -> Config) -> bool {
    let mut cluster = TestCluster::new(config);
    cluster.run_until_leader_of(1);
    let leader = cluster.run_until_leader_of(2);
    cluster.propose(leader, 2, put_request("m", "first"));
    cluster.run(5);
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    let meta_before = owned_records(&cluster, lagging, 1);
    assert!(meta_before.len() >= 4, "members and the cluster id: {meta_before:?}");
    cluster.isolated.insert(lagging);
    for i in 0..100 {
        cluster.propose(leader, 2, put_request(&format!("x{i:03}"), "v"));
    }
    cluster.isolated.clear();
    cluster.run(200);
    let stats = cluster.node(lagging).stats();
    let snapshots = stats.snapshots_applied.load(std::sync::atomic::Ordering::Relaxed);
    assert!(snapshots >= 1, "n{lagging} caught up by snapshot");
    assert_eq!(owned_records(&cluster, lagging, 2), owned_records(&cluster, leader, 2));
    owned_records(&cluster, lagging, 1) == meta_before
}

#[test]
fn a_snapshot_of_one_range_leaves_the_other_ranges_records_alone() {
    assert!(meta_records_survive_a_snapshot_of_range_2(two_ranges_config));
    // The test notices a snapshot that wipes its neighbours.
    assert!(!meta_records_survive_a_snapshot_of_range_2(|id| Config {
        mutation: Mutation::RestoreOutsideSpan,
        ..two_ranges_config(id)
    }));
}

#[test]
fn removing_a_replica_of_a_data_range_removes_no_member() {
    let mut cluster = TestCluster::new(two_ranges_config);
    cluster.run_until_leader_of(1);
    let leader = cluster.run_until_leader_of(2);
    let removed = (1..=3).find(|id| *id != leader).unwrap();
    let change = MemberChange { kind: MemberChangeKind::Remove as i32, id: removed, member: None };
    cluster.propose(leader, 2, Request::MemberChange(change));
    for _ in 0..100 {
        cluster.step();
        let conf = cluster.node(leader).configuration(2).unwrap();
        if !conf.joint {
            break;
        }
    }
    let conf = cluster.node(leader).configuration(2).unwrap();
    assert!(!conf.joint && !conf.voters.contains(&removed), "{conf:?}");
    let descriptor = cluster.node(leader).descriptor(2).unwrap().clone();
    assert!(descriptor.replicas.iter().all(|r| r.node_id != removed), "{descriptor:?}");
    assert!(descriptor.epoch().conf_ver > 1, "a replica change bumps conf_ver");
    assert_eq!(descriptor.epoch().version, 1, "and leaves the span's version alone");
    cluster.run(10);
    // The cluster's membership is the meta range's: every node still records all three.
    for id in 1..=3 {
        let members: Vec<u64> =
            cluster.node(id).members().unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(members, vec![1, 2, 3], "n{id}");
        assert_eq!(cluster.node(id).configuration(1).unwrap().voters, vec![1, 2, 3]);
    }
}

#[test]
fn a_store_from_before_descriptors_is_upgraded_in_place() {
    let mut cluster = TestCluster::new(default_config);
    let leader = cluster.run_until_leader();
    cluster.put(leader, "a", "1");
    cluster.run(5);
    let expected = cluster.node(1).descriptor(FIRST_RANGE_ID).unwrap().clone();
    cluster.nodes[0] = None;
    let engine = cluster.engines[0].clone();
    let mut batch = strata_storage::WriteBatch::new();
    batch.delete(strata_storage::Keyspace::Meta, strata_core::keys::range_descriptor(1));
    engine.write(&batch, strata_storage::Durability::Sync).unwrap();
    let node = Node::open(default_config(1), Arc::new(engine.clone())).unwrap();
    let upgraded = node.descriptor(FIRST_RANGE_ID).unwrap().clone();
    assert_eq!((upgraded.span(), upgraded.epoch().version), (expected.span(), 1));
    let replicas = |d: &strata_core::range::RangeDescriptor| -> Vec<u64> {
        d.replicas.iter().map(|r| r.node_id).collect()
    };
    assert_eq!(replicas(&upgraded), replicas(&expected));
    assert!(strata_core::range::load(&engine, 1).unwrap().is_some(), "written back");
    cluster.nodes[0] = Some(node);
    assert_eq!(cluster.get(1, "a"), Some(b"1".to_vec()));
}

#[test]
fn a_corrupt_or_foreign_descriptor_refuses_to_start() {
    use prost::Message as _;
    let engine = MemEngine::new();
    drop(Node::open(default_config(1), Arc::new(engine.clone())).unwrap());
    let write = |bytes: Vec<u8>| {
        let mut batch = strata_storage::WriteBatch::new();
        let key = strata_core::keys::range_descriptor(1);
        batch.put(strata_storage::Keyspace::Meta, key, bytes);
        engine.write(&batch, strata_storage::Durability::Sync).unwrap();
    };
    let refusal = || Node::open(default_config(1), Arc::new(engine.clone())).err().unwrap();
    write(vec![0xff, 0xff, 0xff]);
    let error = refusal().to_string();
    assert!(error.contains("range 1: refusing its stored descriptor: undecodable"), "{error}");
    let foreign = strata_core::range::RangeDescriptor::bootstrap(7, b"", b"", &[1]);
    write(foreign.encode_to_vec());
    let error = refusal().to_string();
    assert!(error.contains("refusing its stored descriptor: it describes range 7"), "{error}");
}

#[test]
fn a_leader_taking_a_commit_stamps_nothing_at_or_below_its_revision() {
    use strata_core::command::TxnCommit;
    use strata_core::raftstore::Stamped;
    let mut cluster = TestCluster::new(two_ranges_config);
    cluster.run_until_leader_of(1);
    let leader = cluster.run_until_leader_of(2);
    cluster.propose(leader, 2, put_request("m", "first"));
    let term = cluster.node(leader).term(2);
    // A write waits for a block; a transaction across ranges commits at 5,000 meanwhile (its
    // entry queues behind the write).
    cluster.node(leader).propose(2, 900, put_request("n", "held")).unwrap();
    let commit = TxnCommit {
        id: vec![1; 24],
        primary_key: b"a".to_vec(),
        commit_ts: 5_000,
        compares: vec![],
    };
    cluster.node(leader).propose(2, 901, Request::TxnCommit(commit)).unwrap();
    // A block handed out before the commit revision arrives late: the write must not take it,
    // or it would land after the commit in the log with a revision below it.
    assert_eq!(
        cluster.node(leader).stamp(2, term, Block { lo: 4_000, hi: 4_000 }),
        Stamped::Discarded
    );
    assert!(matches!(
        cluster.node(leader).stamp(2, term, Block { lo: 5_001, hi: 5_001 }),
        Stamped::Proposed(2)
    ));
}

/// A lease found expired by the meta leader of one term is revoked only in entries of that term:
/// a deposed leader's revocation, carried to its successor (whose lease clock may have renewed
/// the lease since), is refused, at prepare and at commit.
#[test]
fn an_expiry_carried_past_its_leaders_term_is_refused() {
    use strata_core::command::{LeaseMarkRequest, LeaseRegister, TxnCommit, TxnPrepare};
    use strata_core::mvcc::locks::{Span, txn_id};
    use strata_core::pb::etcdserverpb::LeaseGrantRequest;
    let mut cluster = TestCluster::new(two_ranges_config);
    let first = cluster.run_until_leader_of(1);
    cluster.run_until_leader_of(2);
    cluster.propose(first, 1, Request::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }));
    let span = Some(Span { start: b"m".to_vec(), end: Vec::new() });
    let registered =
        cluster.propose(first, 1, Request::LeaseRegister(LeaseRegister { lease: 7, span }));
    let Response::LeaseRegistered(incarnation) = registered else { panic!("{registered:?}") };
    cluster.propose(first, 2, Request::LeaseMark(LeaseMarkRequest { lease: 7, incarnation }));
    let prepare = |sequence: u64, expiry_term: u64| {
        Request::TxnPrepare(TxnPrepare {
            id: txn_id(first, 1, sequence).to_vec(),
            primary_key: Vec::new(),
            revoke_lease: 7,
            expiry_term,
            ..Default::default()
        })
    };
    let first_term = cluster.node(first).term(1);

    // The first leader is cut off, another is elected, and the first rejoins as a follower.
    cluster.isolated.insert(first);
    let second = cluster.run_until_leader_of(1);
    cluster.isolated.clear();
    cluster.run(30);
    let second_term = cluster.node(second).term(1);
    assert!(second_term > first_term && cluster.leader_of(1) == Some(second));
    // The first leader's revocation reaches the second leader's log: refused.
    let refused = cluster.try_propose(first, 1, prepare(1, first_term));
    assert_eq!(refused.unwrap_err(), strata_core::Error::NotLeader);

    // The second leader's own is prepared; its commit, carried past its term, is refused too.
    match cluster.propose(second, 1, prepare(2, second_term)) {
        Response::LeasePrepared { incarnation: said, .. } => assert_eq!(said, incarnation),
        other => panic!("{other:?}"),
    }
    cluster.isolated.insert(second);
    let third = cluster.run_until_leader_of(1);
    cluster.isolated.clear();
    cluster.run(30);
    let commit = TxnCommit {
        id: txn_id(first, 1, 2).to_vec(),
        primary_key: Vec::new(),
        commit_ts: 9_000,
        compares: Vec::new(),
    };
    let refused = cluster.try_propose(third, 1, Request::TxnCommit(commit));
    assert_eq!(refused.unwrap_err(), strata_core::Error::NotLeader);
    let leases = cluster.node(third).leases(1).unwrap();
    assert_eq!(leases, vec![(7, 60)], "the lease lives on");
}
