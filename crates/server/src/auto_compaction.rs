//! Automatic compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`
//! do it, proposed by the member that leads the meta range.
//!
//! * **periodic** (a duration; a bare number means hours): keep that much history. The
//!   revision is sampled every tenth of the period (of an hour at most); once a whole period
//!   has been sampled, the member compacts to the revision sampled a period ago, then again
//!   every period (every hour, for periods longer than an hour). A failed compaction is tried
//!   again at the next sample.
//! * **revision** (a count): every five minutes, compact to the current revision minus the
//!   count, if that moved.
//!
//! [`AutoCompactor`] is the decision alone, over times and revisions it is given; [`run`] is
//! the task that feeds it and proposes what it decides.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use strata_core::Error;
use strata_core::pb::etcdserverpb::CompactionRequest;
use tokio::time::Instant;

use crate::api::Api;
use crate::config::parse_duration;

/// How often revision mode looks (etcd's fixed interval).
const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revisions(i64),
}

impl Mode {
    /// From etcd's two flags; `None` when compaction is off (a retention of zero).
    pub fn parse(mode: &str, retention: &str) -> anyhow::Result<Option<Mode>> {
        let retention = retention.trim();
        match mode {
            "periodic" => {
                let period = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours * 3600),
                    Err(_) => parse_duration(retention).context("--auto-compaction-retention")?,
                };
                Ok((!period.is_zero()).then_some(Mode::Periodic(period)))
            }
            "revision" => {
                let count: i64 = retention.parse().with_context(|| {
                    format!("--auto-compaction-retention {retention:?}: a count of revisions")
                })?;
                if count < 0 {
                    bail!("--auto-compaction-retention must not be negative");
                }
                Ok((count > 0).then_some(Mode::Revisions(count)))
            }
            other => {
                bail!("--auto-compaction-mode must be `periodic` or `revision`, not {other:?}")
            }
        }
    }

    /// How often the compactor looks at the revision.
    pub fn interval(self) -> Duration {
        match self {
            Mode::Periodic(period) => period.min(Duration::from_secs(3600)) / 10,
            Mode::Revisions(_) => REVISION_MODE_INTERVAL,
        }
    }
}

/// What to compact to, decided from the samples it is given.
pub struct AutoCompactor {
    mode: Mode,
    /// Revisions sampled every interval, oldest first: a period's worth.
    samples: VecDeque<i64>,
    /// When the last compaction succeeded (or the compactor started).
    last_success: Instant,
    /// The wait before the next compaction: a whole period first, then the compaction interval.
    wait: Duration,
    /// Revision mode: the revision last compacted to.
    last_compacted: i64,
}

impl AutoCompactor {
    pub fn new(mode: Mode, now: Instant) -> Self {
        let wait = match mode {
            Mode::Periodic(period) => period,
            Mode::Revisions(_) => Duration::ZERO,
        };
        Self { mode, samples: VecDeque::new(), last_success: now, wait, last_compacted: 0 }
    }

    /// One look, at `now`, with the store at `revision`: the revision to compact to, if it is
    /// time and this member `leads`.
    pub fn sample(&mut self, now: Instant, revision: i64, leads: bool) -> Option<i64> {
        match self.mode {
            Mode::Periodic(period) => {
                let interval = self.mode.interval();
                let kept = (period.as_nanos() / interval.as_nanos().max(1)) as usize + 1;
                self.samples.push_back(revision);
                if self.samples.len() > kept {
                    self.samples.pop_front();
                }
                let due = now.duration_since(self.last_success) >= self.wait;
                let oldest = *self.samples.front().expect("just sampled");
                (leads && due && oldest > 0).then_some(oldest)
            }
            Mode::Revisions(count) => {
                let target = revision - count;
                (leads && target > 0 && target != self.last_compacted).then_some(target)
            }
        }
    }

    /// The compaction to `revision` decided by the last sample succeeded (or found the store
    /// compacted already).
    pub fn compacted(&mut self, now: Instant, revision: i64) {
        self.last_success = now;
        self.last_compacted = revision;
        if let Mode::Periodic(period) = self.mode {
            self.wait = period.min(Duration::from_secs(3600));
        }
    }
}

/// Runs the compactor for the life of the member.
pub async fn run(api: Arc<Api>, mode: Mode) {
    let mut compactor = AutoCompactor::new(mode, Instant::now());
    let mut ticks = tokio::time::interval(mode.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let range = api.range();
        // The revision through which this member holds every range's events: the meta range's
        // own revision when it is the only range, never past the cluster's.
        let revision = api.shell.shared_ranges().watermarks().frontier;
        let leads = range.leader_id.load(Ordering::Acquire) == api.config.member_id();
        let Some(target) = compactor.sample(Instant::now(), revision, leads) else { continue };
        tracing::info!(revision = target, ?mode, "starting automatic compaction");
        let request = CompactionRequest { revision: target, physical: false };
        match api.compact_request(request).await {
            Ok(_) | Err(Error::Compacted) => {
                tracing::info!(revision = target, "automatic compaction done");
                compactor.compacted(Instant::now(), target);
            }
            Err(e) => tracing::warn!(revision = target, error = %e, "automatic compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_parse_as_etcd_reads_them() {
        let parse = |mode, retention| Mode::parse(mode, retention).unwrap();
        assert_eq!(parse("periodic", "0"), None);
        assert_eq!(parse("periodic", "1"), Some(Mode::Periodic(Duration::from_secs(3600))));
        assert_eq!(parse("periodic", "30m"), Some(Mode::Periodic(Duration::from_secs(1800))));
        assert_eq!(parse("revision", "1000"), Some(Mode::Revisions(1000)));
        assert_eq!(parse("revision", "0"), None);
        assert!(Mode::parse("revision", "1h").is_err());
        assert!(Mode::parse("hourly", "1").is_err());
        assert_eq!(Mode::Periodic(Duration::from_secs(72 * 3600)).interval().as_secs(), 360);
        assert_eq!(Mode::Periodic(Duration::from_secs(10)).interval().as_secs(), 1);
    }

    #[test]
    fn periodic_keeps_a_period_of_history_and_compacts_once_per_period() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut compactor = AutoCompactor::new(Mode::Periodic(period), start);
        // One sample a second (a tenth of the period), the revision growing by 100 each.
        let mut decisions = Vec::new();
        for second in 0..=25u64 {
            let now = start + Duration::from_secs(second);
            let revision = 100 * second as i64 + 1;
            if let Some(target) = compactor.sample(now, revision, true) {
                decisions.push((second, target));
                compactor.compacted(now, target);
            }
        }
        // Nothing before a whole period; then, every period, the revision of a period ago.
        assert_eq!(decisions, vec![(10, 1), (20, 1001)]);
    }

    #[test]
    fn only_the_leader_compacts_and_a_failure_is_tried_again() {
        let start = Instant::now();
        let mut compactor = AutoCompactor::new(Mode::Periodic(Duration::from_secs(10)), start);
        for second in 0..10u64 {
            compactor.sample(start + Duration::from_secs(second), 5, false);
        }
        assert_eq!(compactor.sample(start + Duration::from_secs(10), 5, false), None);
        // Leading now: due, and due again at the next sample while nothing succeeded.
        assert_eq!(compactor.sample(start + Duration::from_secs(11), 5, true), Some(5));
        assert_eq!(compactor.sample(start + Duration::from_secs(12), 5, true), Some(5));
    }

    #[test]
    fn revision_mode_keeps_a_count_of_revisions() {
        let start = Instant::now();
        let mut compactor = AutoCompactor::new(Mode::Revisions(100), start);
        assert_eq!(compactor.sample(start, 50, true), None);
        assert_eq!(compactor.sample(start, 250, true), Some(150));
        compactor.compacted(start, 150);
        assert_eq!(compactor.sample(start, 250, true), None, "nothing moved");
        assert_eq!(compactor.sample(start, 400, false), None, "not the leader");
        assert_eq!(compactor.sample(start, 400, true), Some(300));
    }
}
