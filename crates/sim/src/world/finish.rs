//! The end of a run: faults stop, the nodes settle, every client reads every key once more, and
//! every checker looks at what happened — convergence, durability, revisions, the oracle's
//! grants, watchers, membership, ranges, leases and linearizability.

use strata_core::raftstore::{Configuration, SharedRanges, Watermarks};
use strata_core::range::META_RANGE_ID;
use strata_storage::Engine;

use super::{Event, MS, Report, Role, SEARCH_BUDGET, SETTLE, SimNode, TICK, World};
use crate::check::{self, FinalReplica};
use crate::history::{Op, Outcome};
use crate::members;

impl World {
    /// Faults stop: the network heals, every node is up, resumed and on time again.
    pub(super) fn quiesce(&mut self) {
        self.log(|| "faults stop".into());
        self.faults_on = false;
        self.cut.clear();
        self.plan.network = crate::faults::Network::calm();
        for id in 1..=self.nodes.len() as u64 {
            let sim = &mut self.nodes[id as usize - 1];
            sim.tick_interval = TICK;
            sim.disk.clear_faults();
            self.resume(id);
            if self.nodes[id as usize - 1].node.is_none() {
                self.schedule(0, Event::Restart(id));
            }
        }
        self.schedule(SETTLE, Event::FinalRead(0));
        if self.bank.clients() > 0 {
            self.schedule(2 * SETTLE, Event::FinalAudit);
        }
    }

    /// After recovery, one linearizable read of each key, retried until answered: these pin
    /// down the final state for the linearizability check.
    pub(super) fn final_read(&mut self, key: usize) {
        let client = self.options.clients; // a reader of its own
        let last = self.history.iter().rev().find(|op| op.client == client);
        let next_key = match last {
            Some(op) if op.outcome == Outcome::Pending => {
                return self.schedule(10 * MS, Event::FinalRead(key));
            }
            Some(op) if matches!(op.outcome, Outcome::Read { .. }) => key + 1,
            _ => key,
        };
        if next_key >= self.keys.len() {
            return;
        }
        let op = Op::Get { key: self.keys[next_key].clone(), serializable: false };
        self.invoke(client, op);
        self.schedule(10 * MS, Event::FinalRead(next_key));
    }

    // ---- the end ----

    pub(super) fn finish(mut self) -> Report {
        self.stop_removed_members();
        let mut violations = std::mem::take(&mut self.violations);
        violations.append(&mut self.observer.violations);
        let final_reads = self.history.iter().filter(|op| op.client == self.options.clients);
        let answered = final_reads.filter(|op| matches!(op.outcome, Outcome::Read { .. })).count();
        if answered < self.keys.len() {
            violations.push(format!(
                "liveness: only {answered} of {} final reads were answered after the faults stopped",
                self.keys.len()
            ));
        }
        // A node whose disk was damaged may rightly be down or missing data; the others must
        // agree and hold every acknowledged write.
        let replicas: Vec<FinalReplica> = self
            .nodes
            .iter()
            .filter(|sim| !sim.damaged && sim.role == Role::Member)
            .map(|sim| FinalReplica {
                id: sim.id,
                engine: &sim.disk,
                ranges: sim.node.as_ref().map(|driver| {
                    let node = driver.node();
                    (node.range_ids().into_iter())
                        .filter_map(|range| {
                            let applied = node.shared(range)?.read_state().applied_index;
                            Some((range, (node.descriptor(range)?.clone(), applied)))
                        })
                        .collect()
                }),
            })
            .collect();
        violations.extend(check::convergence(&replicas));
        violations.extend(check::durability(&replicas, &self.history));
        violations.extend(check::revisions(&self.history));
        violations.extend(self.oracle.check());
        let up: Vec<(u64, &dyn Engine, SharedRanges)> = self
            .nodes
            .iter()
            .filter(|sim| !sim.damaged && sim.role == Role::Member)
            .filter_map(|sim| {
                let ranges = sim.node.as_ref()?.node().shared_ranges();
                Some((sim.id, &sim.disk as &dyn Engine, ranges))
            })
            .collect();
        let (watch_violations, watch_events) = match up.first() {
            Some((_, reference, ranges)) => {
                // Every event the converged store holds, in every range.
                let all = ranges.all().iter().map(|(_, r)| r.read_state().revision).max();
                let marks = Watermarks { frontier: all.unwrap_or(0), ..ranges.watermarks() };
                self.watchers.check(&up, *reference, marks)
            }
            None => (Vec::new(), 0),
        };
        violations.extend(watch_violations);
        let configurations: Vec<(u64, Configuration, Vec<members::Recorded>)> = (self.nodes.iter())
            .filter(|sim| !sim.damaged && sim.role == Role::Member)
            .filter_map(|sim| {
                let node = sim.node.as_ref()?.node();
                let recorded = node.members().ok()?;
                let recorded = recorded.into_iter().map(|(id, r)| (id, r.is_learner)).collect();
                Some((sim.id, node.configuration(META_RANGE_ID)?, recorded))
            })
            .collect();
        violations.extend(members::check(&configurations));
        let running =
            |sim: &&SimNode| !sim.damaged && sim.role == Role::Member && sim.node.is_some();
        let live: Vec<u64> = self.nodes.iter().filter(running).map(|sim| sim.id).collect();
        for sim in self.nodes.iter().filter(running) {
            if let Some(driver) = &sim.node {
                violations.extend(members::check_ranges(sim.id, driver.node(), &live));
            }
        }
        let reference =
            self.nodes.iter().filter(|sim| !sim.damaged && sim.role == Role::Member).find_map(
                |sim| {
                    let node = sim.node.as_ref()?.node();
                    let state = node.shared(META_RANGE_ID)?.read_state();
                    Some((&sim.disk as &dyn Engine, state, node.leases(META_RANGE_ID)))
                },
            );
        if let Some((engine, state, leases_left)) = reference {
            let clock_rate = TICK as f64 / self.fastest_tick as f64;
            match leases_left {
                Ok(left) => violations.extend(self.leases.check(clock_rate, engine, state, &left)),
                Err(e) => violations.push(format!("cannot read the final leases: {e}")),
            }
        }
        violations.extend(self.bank_check());
        let (lin, inconclusive_keys) =
            check::linearizability::check(&self.history, &self.keys, SEARCH_BUDGET);
        violations.extend(lin);
        self.plan.counts.fsync_failures = self.nodes.iter().map(|n| n.disk.failed_syncs()).sum();
        Report {
            trace_hash: self.trace,
            simulated_ms: self.now / MS,
            events: self.events,
            faults: self.plan.counts.clone(),
            history: self.history,
            violations,
            inconclusive_keys,
            watch_events,
            watch_connects: self.watchers.reconnects,
            leases: self.leases.counts.clone(),
            membership: self.operator.counts.clone(),
            oracle: self.oracle.counts.clone(),
            bank: self.bank.counts,
            splits: self.splits.done,
            options: self.options,
        }
    }

    /// The bank's end: every audit was whole (checked as they came), a final one was answered,
    /// and no range on a running member holds a lock (abandoned ones were resolved).
    fn bank_check(&mut self) -> Vec<String> {
        let mut violations = std::mem::take(&mut self.bank.violations);
        if self.bank.clients() == 0 {
            return violations;
        }
        if !self.bank_world.final_audited {
            violations.push("liveness: no final bank audit was answered".into());
        }
        for sim in self.nodes.iter().filter(|sim| !sim.damaged && sim.role == Role::Member) {
            let Some(driver) = &sim.node else { continue };
            for range_id in driver.node().range_ids() {
                // As stored: what the replica applied, whatever it published.
                let Ok(state) = strata_core::mvcc::load_applied_state(&sim.disk, range_id) else {
                    continue;
                };
                if state.lock_count > 0 {
                    let held: Vec<String> = (driver.node().shared(range_id).iter())
                        .flat_map(|shared| {
                            let table = shared.locks.read().expect("lock table lock");
                            let locks: Vec<String> = (table.locks())
                                .map(|(key, lock)| {
                                    format!(
                                        "{} (primary {}, lease {})",
                                        key.escape_ascii(),
                                        lock.primary_key.escape_ascii(),
                                        lock.lease
                                    )
                                })
                                .collect();
                            locks
                        })
                        .collect();
                    violations.push(format!(
                        "bank: n{} range {range_id} still holds {} lock(s) at the end: {held:?}",
                        sim.id, state.lock_count
                    ));
                }
                // The lock table in memory is what the records say.
                let (Some(shared), Some(descriptor)) =
                    (driver.node().shared(range_id), driver.node().descriptor(range_id))
                else {
                    continue;
                };
                let stored =
                    strata_core::mvcc::locks::LockTable::load(&sim.disk, descriptor.span());
                let keys = |table: &strata_core::mvcc::locks::LockTable| -> Vec<Vec<u8>> {
                    table.locks().map(|(key, _)| key.clone()).collect()
                };
                let held = keys(&shared.locks.read().expect("lock table lock"));
                if stored.as_ref().map(keys).ok() != Some(held) {
                    violations.push(format!(
                        "bank: n{}'s lock table of range {range_id} differs from its records",
                        sim.id
                    ));
                }
            }
        }
        violations
    }
}
