//! Scripted scenarios: a cluster of production nodes stepped by hand, one command at a time,
//! for golden tests of Raft and replica behaviour. Where the simulator explores, a scenario
//! pins one story down and records what happened, so a change in behaviour shows up as a diff.
//!
//! ```text
//! cluster nodes=3          start a cluster (always the first command)
//! tick 12 nodes=1          tick the listed running nodes (default: all) N times (default: 1)
//! deliver                  deliver messages in flight, and what they cause, until quiet
//! partition 1 from 2,3     cut the links between 1 and each of 2, 3, both ways
//! partition 1 -> 2         cut one direction only
//! heal                     restore every link
//! crash 2                  power loss: node 2's process stops, unsynced writes are lost
//! restart 2                start node 2 again from its disk
//! put a=1 [via 1]          propose at node 1 (default: the leader); deliver until answered
//!                          or quiet
//! del a [via 1]
//! get a [via 2] [serializable]  read (ReadIndex unless serializable); deliver until released
//! status                   role, term, leader, commit, applied index and revision per node
//! ```
//!
//! Every command prints what changed: roles taken, requests answered, messages dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_core::FIRST_RANGE_ID;
use strata_core::command::Request;
use strata_core::mvcc::read;
use strata_core::mvcc::view::View;
use strata_core::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use strata_core::raftstore::{Config, Node, OutMessage, StateRole};
use strata_storage::{Engine, MemEngine};

use crate::history::Outcome;
use crate::workload;

/// Rounds of delivery before `deliver` gives up on quiet (a livelock would be a bug).
const DELIVER_ROUNDS_MAX: usize = 1_000;

pub struct Scenario {
    engines: Vec<MemEngine>,
    nodes: Vec<Option<Node>>,
    epochs: Vec<u64>,
    in_flight: Vec<OutMessage>,
    cut: BTreeSet<(u64, u64)>,
    next_request: u64,
    /// Requests awaiting an answer: id → (node, description, read request if a read).
    waiting: BTreeMap<u64, (u64, String, Option<RangeRequest>)>,
    /// Roles as last printed, to report changes.
    roles: Vec<String>,
    out: String,
}

impl Scenario {
    /// Runs a whole script; returns its output in the golden-file format (each command, a
    /// `----` line, what it printed, a blank line). Comments are kept; output recorded under a
    /// command in `script` is replaced.
    pub fn run_script(script: &str) -> String {
        let mut scenario: Option<Scenario> = None;
        let mut out = String::new();
        let mut lines = script.lines().peekable();
        while let Some(line) = lines.next() {
            let command = line.trim();
            if command.is_empty() {
                continue;
            }
            if command.starts_with('#') {
                let _ = writeln!(out, "{command}");
                continue;
            }
            // Skip the output recorded under this command last time.
            if lines.peek() == Some(&"----") {
                while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
                    lines.next();
                }
            }
            let printed = match &mut scenario {
                _ if command.starts_with("cluster") => match arg(command, "nodes").unwrap_or(3) {
                    nodes @ 1..=9 => {
                        scenario = Some(Scenario::new(nodes));
                        format!("{nodes} nodes started\n")
                    }
                    _ => "error: a cluster has 1 to 9 nodes\n".to_string(),
                },
                Some(s) => s.command(command),
                None => "error: the script must start with `cluster`\n".to_string(),
            };
            let _ = write!(out, "{command}\n----\n{printed}\n");
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    }

    fn new(count: u64) -> Self {
        let mut scenario = Self {
            engines: (0..count).map(|_| MemEngine::new()).collect(),
            nodes: (0..count).map(|_| None).collect(),
            epochs: vec![0; count as usize],
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            next_request: 1,
            waiting: BTreeMap::new(),
            roles: vec![String::new(); count as usize],
            out: String::new(),
        };
        for id in 1..=count {
            scenario.start(id);
        }
        scenario.roles = (1..=count).map(|id| scenario.role(id)).collect();
        scenario
    }

    fn count(&self) -> u64 {
        self.nodes.len() as u64
    }

    fn start(&mut self, id: u64) {
        let i = id as usize - 1;
        self.epochs[i] += 1;
        let mut config = Config::new(id, self.epochs[i], (1..=self.count()).collect());
        config.election_seed = Some(0);
        let engine: Arc<dyn Engine> = Arc::new(self.engines[i].clone());
        match Node::open(config, engine) {
            Ok(node) => self.nodes[i] = Some(node),
            Err(e) => {
                let _ = writeln!(self.out, "n{id} refused to start: {e}");
            }
        }
    }

    fn command(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words.as_slice() {
            ["tick", rest @ ..] => self.tick(rest),
            ["deliver"] => {
                self.deliver();
                Ok(())
            }
            ["partition", a, "from", others] => self.partition(a, others, true),
            ["partition", a, "->", b] => self.partition(a, b, false),
            ["heal"] => {
                self.cut.clear();
                self.out.push_str("all links restored\n");
                Ok(())
            }
            ["crash", id] => self.crash(id),
            ["restart", id] => self.restart(id),
            ["put", assignment, rest @ ..] => {
                self.via(rest).and_then(|id| self.put(assignment, id))
            }
            ["del", key, rest @ ..] => self.via(rest).and_then(|id| self.delete(key, id)),
            ["get", key, rest @ ..] => {
                self.via(rest).and_then(|id| self.get(key, id, rest.contains(&"serializable")))
            }
            ["status"] => {
                self.status();
                Ok(())
            }
            _ => Err(format!("unknown command: {line}")),
        };
        if let Err(e) = result {
            let _ = writeln!(self.out, "error: {e}");
        }
        self.report_roles();
        if self.out.is_empty() {
            self.out.push_str("ok\n");
        }
        std::mem::take(&mut self.out)
    }

    fn node_id(&self, word: &str) -> Result<u64, String> {
        match word.parse::<u64>() {
            Ok(id) if (1..=self.count()).contains(&id) => Ok(id),
            _ => Err(format!("no node {word}")),
        }
    }

    /// The node named by `via N`, or else the leader of the highest term (node 1 if none).
    fn via(&self, args: &[&str]) -> Result<u64, String> {
        if let Some(at) = args.iter().position(|w| *w == "via") {
            return self.node_id(args.get(at + 1).ok_or("via what?")?);
        }
        let leader = (1..=self.count())
            .filter_map(|id| Some((id, self.nodes[id as usize - 1].as_ref()?)))
            .filter(|(_, node)| node.role(FIRST_RANGE_ID) == Some(StateRole::Leader))
            .max_by_key(|(_, node)| node.term(FIRST_RANGE_ID));
        Ok(leader.map_or(1, |(id, _)| id))
    }

    fn tick(&mut self, args: &[&str]) -> Result<(), String> {
        let times = args.first().and_then(|w| w.parse::<usize>().ok()).unwrap_or(1);
        let targets: Vec<u64> = match args.iter().find_map(|w| w.strip_prefix("nodes=")) {
            Some(list) => list.split(',').map(|w| self.node_id(w)).collect::<Result<_, _>>()?,
            None => (1..=self.count()).collect(),
        };
        for _ in 0..times {
            for &id in &targets {
                if let Some(node) = self.nodes[id as usize - 1].as_mut() {
                    node.tick();
                    self.round(id);
                }
            }
        }
        Ok(())
    }

    /// Runs rounds on a node until it has no work, queueing its messages and reporting answers.
    fn round(&mut self, id: u64) {
        while let Some(node) = self.nodes[id as usize - 1].as_mut() {
            if !node.has_work() {
                break;
            }
            let output = node.process_ready().expect("the in-memory disk does not fail");
            self.in_flight.extend(output.messages);
            for (request, result) in output.completions {
                if let Some((_, what, _)) = self.waiting.remove(&request) {
                    let _ = writeln!(
                        self.out,
                        "n{id}: {what} -> {}",
                        show(&workload::write_outcome(result))
                    );
                }
            }
            for request in output.reads_ready {
                self.serve(id, request);
            }
        }
    }

    fn serve(&mut self, id: u64, request: u64) {
        let Some((_, what, Some(range))) = self.waiting.remove(&request) else { return };
        let node = self.nodes[id as usize - 1].as_ref().expect("running");
        let state = node.shared(FIRST_RANGE_ID).expect("range").read_state();
        let engine = &self.engines[id as usize - 1];
        let result = read::range(&View::new(engine as &dyn Engine), &state, &range);
        let _ = writeln!(self.out, "n{id}: {what} -> {}", show(&workload::read_outcome(result)));
    }

    fn deliver(&mut self) {
        let (mut delivered, mut dropped) = (0, 0);
        for _ in 0..DELIVER_ROUNDS_MAX {
            if self.in_flight.is_empty() {
                break;
            }
            let (d, x) = self.deliver_in_flight();
            delivered += d;
            dropped += x;
        }
        let _ = writeln!(self.out, "{delivered} messages delivered, {dropped} dropped");
    }

    /// Delivers every message now in flight (not the ones that causes); returns how many were
    /// delivered and dropped.
    fn deliver_in_flight(&mut self) -> (usize, usize) {
        let (mut delivered, mut dropped) = (0, 0);
        for message in std::mem::take(&mut self.in_flight) {
            let (from, to) = (message.message.from, message.message.to);
            let Some(node) = self.nodes[to as usize - 1].as_mut() else {
                dropped += 1;
                continue;
            };
            if self.cut.contains(&(from, to)) {
                dropped += 1;
                continue;
            }
            node.step(message.range_id, message.message);
            delivered += 1;
            self.round(to);
        }
        (delivered, dropped)
    }

    fn partition(&mut self, a: &str, others: &str, both_ways: bool) -> Result<(), String> {
        let a = self.node_id(a)?;
        for other in others.split(',') {
            let b = self.node_id(other)?;
            self.cut.insert((a, b));
            if both_ways {
                self.cut.insert((b, a));
            }
        }
        let links: Vec<String> = self.cut.iter().map(|(f, t)| format!("{f}->{t}")).collect();
        let _ = writeln!(self.out, "cut: {}", links.join(" "));
        Ok(())
    }

    fn crash(&mut self, id: &str) -> Result<(), String> {
        let id = self.node_id(id)?;
        if self.nodes[id as usize - 1].take().is_none() {
            return Err(format!("n{id} is not running"));
        }
        self.engines[id as usize - 1].crash();
        self.waiting.retain(|_, (node, _, _)| *node != id);
        let _ = writeln!(self.out, "n{id} crashed");
        Ok(())
    }

    fn restart(&mut self, id: &str) -> Result<(), String> {
        let id = self.node_id(id)?;
        if self.nodes[id as usize - 1].is_some() {
            return Err(format!("n{id} is running"));
        }
        self.start(id);
        let _ = writeln!(self.out, "n{id} restarted");
        Ok(())
    }

    fn put(&mut self, assignment: &str, id: u64) -> Result<(), String> {
        let (key, value) = assignment.split_once('=').ok_or("expected key=value")?;
        let request = Request::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        });
        self.write(request, format!("put {assignment}"), id)
    }

    fn delete(&mut self, key: &str, id: u64) -> Result<(), String> {
        let request = Request::DeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        });
        self.write(request, format!("del {key}"), id)
    }

    fn write(&mut self, request: Request, what: String, id: u64) -> Result<(), String> {
        let node = self.nodes[id as usize - 1].as_mut().ok_or(format!("n{id} is down"))?;
        let request_id = self.next_request;
        self.next_request += 1;
        node.propose(FIRST_RANGE_ID, request_id, request).map_err(|e| e.to_string())?;
        self.waiting.insert(request_id, (id, what, None));
        self.round(id);
        self.settle(request_id);
        Ok(())
    }

    fn get(&mut self, key: &str, id: u64, serializable: bool) -> Result<(), String> {
        let node = self.nodes[id as usize - 1].as_mut().ok_or(format!("n{id} is down"))?;
        let request_id = self.next_request;
        self.next_request += 1;
        let range =
            RangeRequest { key: key.as_bytes().to_vec(), serializable, ..Default::default() };
        let what =
            if serializable { format!("get {key} serializable") } else { format!("get {key}") };
        self.waiting.insert(request_id, (id, what, Some(range)));
        if serializable {
            self.serve(id, request_id);
        } else {
            node.read_index(FIRST_RANGE_ID, request_id);
            self.round(id);
            self.settle(request_id);
        }
        Ok(())
    }

    /// Delivers until the request is answered or nothing more happens.
    fn settle(&mut self, request: u64) {
        for _ in 0..DELIVER_ROUNDS_MAX {
            if !self.waiting.contains_key(&request) || self.in_flight.is_empty() {
                break;
            }
            self.deliver_in_flight();
        }
        if let Some((id, what, _)) = self.waiting.get(&request) {
            let _ = writeln!(self.out, "n{id}: {what} pending");
        }
    }

    fn role(&self, id: u64) -> String {
        match &self.nodes[id as usize - 1] {
            None => "down".into(),
            Some(node) => {
                let role = match node.role(FIRST_RANGE_ID) {
                    Some(StateRole::Leader) => "leader",
                    Some(StateRole::Candidate) => "candidate",
                    Some(StateRole::PreCandidate) => "pre-candidate",
                    _ => "follower",
                };
                format!("{role} term={}", node.term(FIRST_RANGE_ID))
            }
        }
    }

    fn report_roles(&mut self) {
        for id in 1..=self.count() {
            let role = self.role(id);
            if role != self.roles[id as usize - 1] {
                let _ = writeln!(self.out, "n{id} is now {role}");
                self.roles[id as usize - 1] = role;
            }
        }
    }

    fn status(&mut self) {
        for id in 1..=self.count() {
            let Some(node) = &self.nodes[id as usize - 1] else {
                let _ = writeln!(self.out, "n{id}: down");
                continue;
            };
            let shared = node.shared(FIRST_RANGE_ID).expect("range");
            let _ = writeln!(
                self.out,
                "n{id}: {} leader={} commit={} applied={} revision={}",
                self.role(id),
                shared.leader_id.load(Ordering::Acquire),
                shared.commit_index.load(Ordering::Acquire),
                shared.applied_index.load(Ordering::Acquire),
                shared.revision.load(Ordering::Acquire),
            );
        }
    }
}

fn arg(command: &str, name: &str) -> Option<u64> {
    command.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// An outcome as one short line.
fn show(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Put { revision } => format!("ok revision={revision}"),
        Outcome::Delete { revision, deleted } => format!("deleted={deleted} revision={revision}"),
        Outcome::Cas { revision, succeeded } => {
            format!("succeeded={succeeded} revision={revision}")
        }
        Outcome::Read { revision, kvs } => {
            let found: Vec<String> = kvs
                .iter()
                .map(|kv| {
                    format!(
                        "{}={} mod={} version={}",
                        kv.key, kv.value, kv.mod_revision, kv.version
                    )
                })
                .collect();
            if found.is_empty() {
                format!("not found revision={revision}")
            } else {
                format!("{} revision={revision}", found.join(" "))
            }
        }
        Outcome::Failed(e) => format!("error: {e}"),
        Outcome::Pending | Outcome::Unknown => "unknown".into(),
    }
}
