//! Scripted scenarios: a cluster of production nodes, each inside the production [`Driver`]
//! (the server's raftstore thread and the simulator run the same one), stepped by hand one
//! command at a time, for golden tests of Raft and replica behaviour. Where the simulator
//! explores, a scenario pins one story down and records what happened — every message
//! delivered or dropped, roles taken, requests answered — so a change in behaviour shows up as
//! a diff.
//!
//! ```text
//! cluster nodes=3 [heartbeat_ticks=N election_ticks=N read_retry_ticks=N log_entries_max=N
//!                  log_entries_keep=N append_bytes_max=N]
//!                          start a cluster (always the first command)
//! tick 12 nodes=1          tick the listed running nodes (default: all) N times (default: 1)
//! deliver                  deliver messages in flight, and what they cause, until quiet
//! deliver 1                deliver only the messages now in flight (one hop)
//! partition 1 from 2,3     cut the links between 1 and each of 2, 3, both ways
//! partition 1 -> 2         cut one direction only
//! heal                     restore every link
//! crash 2                  power loss: node 2's process stops, unsynced writes are lost
//! restart 2                start node 2 again from its disk
//! put a=1 [b=2 ...] [via 1] [hold]
//!                          propose at node 1 (default: the leader), all in one round;
//!                          deliver until answered or quiet (`hold`: leave them in flight)
//! del a [via 1]
//! get a [via 2] [serializable] [hold]
//!                          read (ReadIndex unless serializable); deliver until released
//! remove 1 [via 2]         propose removing member 1 (a Raft configuration change)
//! status                   role, term, leader, commit, applied index and revision per node
//! ```
//!
//! Messages print as `r<range> n<from>->n<to> <type> term=..` and the fields that type uses;
//! what a command caused is printed in the order it happened.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_core::FIRST_RANGE_ID;
use strata_core::command::{MemberChange, MemberChangeKind, Request};
use strata_core::mvcc::Response;
use strata_core::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use strata_core::raftstore::{
    Answers, Config, Driver, Message, MessageType, Node, OutMessage, StateRole, local_read,
};
use strata_storage::{Engine, MemEngine};

use crate::history::Outcome;
use crate::workload;

/// Rounds of delivery before `deliver` gives up on quiet (a livelock would be a bug).
const DELIVER_ROUNDS_MAX: usize = 1_000;

/// A node's driver: time in ticks; every reply handle is the scenario's request id.
type ScenarioDriver = Driver<u64, u64, u64, u64>;

/// A request waiting for its answer.
struct Waiting {
    node: u64,
    what: String,
    /// The read to serve once ReadIndex releases it; `None` for a write.
    read: Option<RangeRequest>,
}

pub struct Scenario {
    engines: Vec<MemEngine>,
    drivers: Vec<Option<ScenarioDriver>>,
    epochs: Vec<u64>,
    /// How every node is configured (its id and epoch aside).
    base: Config,
    /// Ticks so far: the drivers' clock.
    now: u64,
    in_flight: Vec<OutMessage>,
    cut: BTreeSet<(u64, u64)>,
    next_request: u64,
    waiting: BTreeMap<u64, Waiting>,
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
                _ if command.starts_with("cluster") => match Scenario::new(command) {
                    Ok(started) => {
                        let printed = format!("{} nodes started\n", started.count());
                        scenario = Some(started);
                        printed
                    }
                    Err(e) => format!("error: {e}\n"),
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

    fn new(command: &str) -> Result<Self, String> {
        let count = arg(command, "nodes").unwrap_or(3);
        if !(1..=9).contains(&count) {
            return Err("a cluster has 1 to 9 nodes".into());
        }
        let mut base = Config::new(0, 0, (1..=count).collect());
        base.election_seed = Some(0);
        for word in command.split_whitespace().skip(1) {
            let (name, value) =
                word.split_once('=').ok_or(format!("expected name=value: {word}"))?;
            let value: u64 = value.parse().map_err(|_| format!("not a number: {word}"))?;
            match name {
                "nodes" => {}
                "heartbeat_ticks" => base.heartbeat_ticks = value as usize,
                "election_ticks" => base.election_ticks = value as usize,
                "read_retry_ticks" => base.read_retry_ticks = value,
                "log_entries_max" => base.log_entries_max = value,
                "log_entries_keep" => base.log_entries_keep = value,
                "append_bytes_max" => base.append_bytes_max = value,
                _ => return Err(format!("unknown cluster option {name}")),
            }
        }
        let mut scenario = Self {
            engines: (0..count).map(|_| MemEngine::new()).collect(),
            drivers: (0..count).map(|_| None).collect(),
            epochs: vec![0; count as usize],
            base,
            now: 0,
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
        Ok(scenario)
    }

    fn count(&self) -> u64 {
        self.drivers.len() as u64
    }

    fn start(&mut self, id: u64) {
        let i = id as usize - 1;
        self.epochs[i] += 1;
        let config = Config { node_id: id, epoch: self.epochs[i], ..self.base.clone() };
        let engine: Arc<dyn Engine> = Arc::new(self.engines[i].clone());
        match Node::open(config, engine) {
            Ok(node) => self.drivers[i] = Some(Driver::new(node)),
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
                self.deliver(DELIVER_ROUNDS_MAX);
                Ok(())
            }
            ["deliver", hops] => match hops.parse() {
                Ok(hops) => {
                    self.deliver(hops);
                    Ok(())
                }
                Err(_) => Err(format!("not a number of hops: {hops}")),
            },
            ["partition", a, "from", others] => self.partition(a, others, true),
            ["partition", a, "->", b] => self.partition(a, b, false),
            ["heal"] => {
                self.cut.clear();
                self.out.push_str("all links restored\n");
                Ok(())
            }
            ["crash", id] => self.crash(id),
            ["restart", id] => self.restart(id),
            ["put", rest @ ..] => self.put(rest),
            ["del", key, rest @ ..] => self.via(rest).and_then(|id| self.delete(key, id, rest)),
            ["get", key, rest @ ..] => self.via(rest).and_then(|id| self.get(key, id, rest)),
            ["remove", member, rest @ ..] => {
                self.via(rest).and_then(|id| self.remove(member, id, rest))
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

    fn driver(&mut self, id: u64) -> Result<&mut ScenarioDriver, String> {
        self.drivers[id as usize - 1].as_mut().ok_or(format!("n{id} is down"))
    }

    /// The node named by `via N`, or else the leader of the highest term (node 1 if none).
    fn via(&self, args: &[&str]) -> Result<u64, String> {
        if let Some(at) = args.iter().position(|w| *w == "via") {
            return self.node_id(args.get(at + 1).ok_or("via what?")?);
        }
        let leader = (1..=self.count())
            .filter_map(|id| Some((id, self.drivers[id as usize - 1].as_ref()?.node())))
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
            self.now += 1;
            for &id in &targets {
                let now = self.now;
                if let Ok(driver) = self.driver(id) {
                    let answers = driver.tick(now);
                    self.answer(id, answers);
                    self.round(id);
                }
            }
        }
        Ok(())
    }

    /// Runs rounds on a node until it has no work, queueing its messages and reporting answers.
    fn round(&mut self, id: u64) {
        loop {
            let Some(driver) = self.drivers[id as usize - 1].as_mut() else { return };
            let mut sent = Vec::new();
            let ran = driver.round(&mut |messages| sent.extend(messages));
            self.in_flight.append(&mut sent);
            match ran.expect("the in-memory disk does not fail") {
                None => return,
                Some((mut output, answers)) => {
                    self.in_flight.append(&mut output.messages);
                    self.answer(id, answers);
                }
            }
        }
    }

    /// Reports the answers a driver released: writes' results, and reads, served now.
    fn answer(&mut self, id: u64, answers: Answers<u64, u64, u64>) {
        for (request, result) in answers.writes {
            if let Some(w) = self.waiting.remove(&request) {
                let outcome = match result {
                    Ok(Response::MemberChanged) => "ok".to_string(),
                    result => show(&workload::write_outcome(result)),
                };
                let _ = writeln!(self.out, "n{id}: {} -> {outcome}", w.what);
            }
        }
        for (request, result) in answers.reads {
            match result {
                Ok(read_ts) => self.serve(id, request, read_ts),
                Err(e) => {
                    if let Some(w) = self.waiting.remove(&request) {
                        let _ = writeln!(self.out, "n{id}: {} -> error: {e}", w.what);
                    }
                }
            }
        }
    }

    fn serve(&mut self, id: u64, request: u64, read_ts: Option<i64>) {
        let Some(Waiting { what, read: Some(range), .. }) = self.waiting.remove(&request) else {
            return;
        };
        let driver = self.drivers[id as usize - 1].as_ref().expect("running");
        let shared = driver.node().shared(FIRST_RANGE_ID).expect("range");
        let engine = &self.engines[id as usize - 1];
        let result = match read_ts {
            Some(ts) => local_read::range_at(engine, &shared, &range, ts),
            None => local_read::range(engine, &shared, &range),
        };
        let _ = writeln!(self.out, "n{id}: {what} -> {}", show(&workload::read_outcome(result)));
    }

    fn deliver(&mut self, hops: usize) {
        for _ in 0..hops {
            if self.in_flight.is_empty() {
                break;
            }
            self.deliver_in_flight();
        }
    }

    /// Delivers every message now in flight (not the ones that causes), printing each.
    fn deliver_in_flight(&mut self) {
        for message in std::mem::take(&mut self.in_flight) {
            let (from, to) = (message.message.from, message.message.to);
            let up = self.drivers[to as usize - 1].is_some();
            let cut = self.cut.contains(&(from, to));
            let fate = if !up {
                " (dropped: down)"
            } else if cut {
                " (dropped: cut)"
            } else {
                ""
            };
            let _ = writeln!(self.out, "{}{fate}", show_message(&message));
            if fate.is_empty() {
                let driver = self.drivers[to as usize - 1].as_mut().expect("up");
                driver.node_mut().step(message.range_id, message.message);
                self.round(to);
            }
        }
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
        if self.drivers[id as usize - 1].take().is_none() {
            return Err(format!("n{id} is not running"));
        }
        self.engines[id as usize - 1].crash();
        self.waiting.retain(|_, w| w.node != id);
        let _ = writeln!(self.out, "n{id} crashed");
        Ok(())
    }

    fn restart(&mut self, id: &str) -> Result<(), String> {
        let id = self.node_id(id)?;
        if self.drivers[id as usize - 1].is_some() {
            return Err(format!("n{id} is running"));
        }
        self.start(id);
        let _ = writeln!(self.out, "n{id} restarted");
        Ok(())
    }

    /// `put a=1 b=2 ... [via N] [hold]`: every assignment proposed before one round.
    fn put(&mut self, args: &[&str]) -> Result<(), String> {
        let id = self.via(args)?;
        let assignments = args.iter().take_while(|w| **w != "via" && **w != "hold");
        let mut requests = Vec::new();
        for assignment in assignments {
            let (key, value) = assignment.split_once('=').ok_or("expected key=value")?;
            let request = Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            });
            requests.push((request, format!("put {assignment}")));
        }
        if requests.is_empty() {
            return Err("put what?".into());
        }
        self.write(id, requests, args.contains(&"hold"))
    }

    fn delete(&mut self, key: &str, id: u64, args: &[&str]) -> Result<(), String> {
        let request = Request::DeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        });
        self.write(id, vec![(request, format!("del {key}"))], args.contains(&"hold"))
    }

    fn remove(&mut self, member: &str, id: u64, args: &[&str]) -> Result<(), String> {
        let member = self.node_id(member)?;
        let change =
            MemberChange { kind: MemberChangeKind::Remove as i32, id: member, member: None };
        let request = Request::MemberChange(change);
        self.write(id, vec![(request, format!("remove {member}"))], args.contains(&"hold"))
    }

    fn write(
        &mut self,
        id: u64,
        requests: Vec<(Request, String)>,
        hold: bool,
    ) -> Result<(), String> {
        let mut ids = Vec::new();
        for (request, what) in requests {
            let request_id = self.take_request_id();
            self.driver(id)?.propose(FIRST_RANGE_ID, request, u64::MAX, request_id);
            self.waiting.insert(request_id, Waiting { node: id, what, read: None });
            ids.push(request_id);
        }
        self.round(id);
        if !hold {
            self.settle(&ids);
        }
        Ok(())
    }

    fn get(&mut self, key: &str, id: u64, args: &[&str]) -> Result<(), String> {
        let serializable = args.contains(&"serializable");
        let request_id = self.take_request_id();
        let range =
            RangeRequest { key: key.as_bytes().to_vec(), serializable, ..Default::default() };
        let what =
            if serializable { format!("get {key} serializable") } else { format!("get {key}") };
        self.driver(id)?;
        self.waiting.insert(request_id, Waiting { node: id, what, read: Some(range) });
        if serializable {
            self.serve(id, request_id, None);
        } else {
            self.driver(id)?.read(FIRST_RANGE_ID, u64::MAX, request_id);
            self.round(id);
            if !args.contains(&"hold") {
                self.settle(&[request_id]);
            }
        }
        Ok(())
    }

    fn take_request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Delivers until the requests are answered or nothing more happens.
    fn settle(&mut self, requests: &[u64]) {
        for _ in 0..DELIVER_ROUNDS_MAX {
            let answered = requests.iter().all(|r| !self.waiting.contains_key(r));
            if answered || self.in_flight.is_empty() {
                break;
            }
            self.deliver_in_flight();
        }
        for request in requests {
            if let Some(w) = self.waiting.get(request) {
                let _ = writeln!(self.out, "n{}: {} pending", w.node, w.what);
            }
        }
    }

    fn role(&self, id: u64) -> String {
        let Some(driver) = &self.drivers[id as usize - 1] else { return "down".into() };
        let node = driver.node();
        let role = match node.role(FIRST_RANGE_ID) {
            Some(StateRole::Leader) => "leader",
            Some(StateRole::Candidate) => "candidate",
            Some(StateRole::PreCandidate) => "pre-candidate",
            _ => "follower",
        };
        format!("{role} term={}", node.term(FIRST_RANGE_ID))
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
            let Some(driver) = &self.drivers[id as usize - 1] else {
                let _ = writeln!(self.out, "n{id}: down");
                continue;
            };
            let node = driver.node();
            let shared = node.shared(FIRST_RANGE_ID).expect("range");
            let mut line = format!(
                "n{id}: {} leader={} commit={} applied={} revision={}",
                self.role(id),
                shared.leader_id.load(Ordering::Acquire),
                shared.commit_index.load(Ordering::Acquire),
                shared.applied_index.load(Ordering::Acquire),
                shared.revision.load(Ordering::Acquire),
            );
            if let Some(conf) = node.configuration(FIRST_RANGE_ID) {
                let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>();
                let _ = write!(line, " voters={}", ids(&conf.voters).join(","));
                if conf.joint {
                    line.push_str(" (joint)");
                }
            }
            let _ = writeln!(self.out, "{line}");
        }
    }
}

fn arg(command: &str, name: &str) -> Option<u64> {
    command.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// A message as one line: range, addresses, type, term, and what that type carries.
fn show_message(out: &OutMessage) -> String {
    let m: &Message = &out.message;
    let kind = m.get_msg_type();
    let mut line = format!("r{} n{}->n{} {kind:?} term={}", out.range_id, m.from, m.to, m.term);
    let entries = || match (m.entries.first(), m.entries.last()) {
        (Some(first), Some(last)) if first.index == last.index => {
            format!(" entries={}", first.index)
        }
        (Some(first), Some(last)) => format!(" entries={}..{}", first.index, last.index),
        _ => String::new(),
    };
    let field = match kind {
        MessageType::MsgAppend => {
            format!(" index={} log_term={} commit={}{}", m.index, m.log_term, m.commit, entries())
        }
        MessageType::MsgAppendResponse if m.reject => {
            format!(" index={} reject hint={}", m.index, m.reject_hint)
        }
        MessageType::MsgAppendResponse => format!(" index={}", m.index),
        MessageType::MsgHeartbeat => {
            let read = if m.context.is_empty() { "" } else { " (confirms reads)" };
            format!(" commit={}{read}", m.commit)
        }
        MessageType::MsgHeartbeatResponse if !m.context.is_empty() => " (confirms reads)".into(),
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
            format!(" index={} log_term={}", m.index, m.log_term)
        }
        MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse => {
            if m.reject { format!(" reject commit={}", m.commit) } else { String::new() }
        }
        MessageType::MsgPropose => format!(" proposals={}", m.entries.len()),
        MessageType::MsgReadIndexResp => format!(" index={}", m.index),
        MessageType::MsgSnapshot => {
            let meta = m.snapshot.as_ref().and_then(|s| s.metadata.as_ref());
            meta.map_or(String::new(), |meta| format!(" index={} term={}", meta.index, meta.term))
        }
        _ => String::new(),
    };
    line.push_str(&field);
    line
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
