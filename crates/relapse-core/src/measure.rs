//! Measurement: from what was observed to time to impact, detect, mitigate and recover.
//!
//! Everything here is a pure function of instants, so it is tested with exact numbers. The
//! definitions are the ones docs/design.md gives:
//! - a sample is placed at the instant its check was *sent* (the instant a user asked);
//! - steady state holds over a window `[s, s + W)` when the SLI samples sent in it number at least
//!   half of what the probe interval promises, succeed at least `min_success` of the time, and
//!   their p99 latency is at most `max_p99`;
//! - faults whose active periods overlap form one *episode*, measured from its first injection to
//!   its last revert; each episode is observed until the next one starts or the run ends;
//! - where a backlog is declared (a queue depth), an episode has *drained* at the first reading
//!   sent after the revert that is at or under the bound, and recovery needs both: serving again
//!   and the backlog drained.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::sense::{Outcome, Signal};

/// One SLI check.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The instant the probe's schedule meant the check to be sent.
    pub scheduled: Instant,
    /// The instant the check was sent: `scheduled` plus however long the harness itself took
    /// to get to it (a busy runtime, a busy core).
    pub at: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

impl Sample {
    /// How much later than scheduled the check was sent.
    pub fn lateness(&self) -> Duration {
        self.at.saturating_duration_since(self.scheduled)
    }
}

/// How late a probe's checks were sent, over a run: the harness's own distortion of its
/// samples. Quantiles are nearest-rank over the exact values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lateness {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The lateness of `samples` (zero for none).
pub fn lateness<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Lateness {
    let mut late: Vec<Duration> = samples.into_iter().map(Sample::lateness).collect();
    if late.is_empty() {
        return Lateness::default();
    }
    late.sort_unstable();
    // Nearest rank: the smallest value with at least q of the values at or under it.
    let rank = |q: f64| late[((q * late.len() as f64).ceil() as usize).clamp(1, late.len()) - 1];
    Lateness {
        p50: rank(0.5),
        p99: rank(0.99),
        max: late[late.len() - 1],
    }
}

/// The steady-state rule, with the probe interval that sets its resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyRule {
    pub window: Duration,
    pub min_success: f64,
    pub max_p99: Option<Duration>,
    pub probe_every: Duration,
}

impl SteadyRule {
    /// The fewest samples a window needs before it can count: half of what the interval promises,
    /// so that a probe slowed by a hung target cannot make an almost empty window look healthy.
    pub fn min_samples(&self) -> usize {
        let promised = (self.window.as_nanos() / self.probe_every.as_nanos().max(1)) as usize;
        (promised / 2).max(1)
    }
}

/// When one fault was active.
#[derive(Debug, Clone)]
pub struct FaultActivity {
    pub name: String,
    pub injected: Instant,
    /// `None` when the run ended with the fault still applied (it was then reverted by the guard).
    pub reverted: Option<Instant>,
}

/// A group of faults whose active periods overlap, and what was measured about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub faults: Vec<String>,
    pub injected: Instant,
    pub reverted: Option<Instant>,
    /// The end of this episode's observation: the next episode's injection, or the end of the run.
    pub horizon: Instant,
    pub first_failure: Option<Instant>,
    /// The first firing detection signal and the index of its source.
    pub detected: Option<(Instant, usize)>,
    /// Start of the first steady window after impact that ends before the revert.
    pub mitigated: Option<Instant>,
    /// Start of the first steady window after the revert.
    pub recovered: Option<Instant>,
    /// SLI samples sent from injection until recovery (or the horizon).
    pub samples: u64,
    pub failures: u64,
    /// Statuses of the failed samples in that span.
    pub failure_statuses: BTreeMap<u16, u64>,
    /// Errors without a status (timeouts, refused connections) in that span.
    pub failure_errors: BTreeMap<String, u64>,
    /// The backlog over this episode, when the scenario declares one ([`apply_backlog`]).
    pub backlog: Option<BacklogOutcome>,
}

/// One reading of a backlog gauge (a queue depth).
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogReading {
    /// The instant the reading was asked for.
    pub at: Instant,
    /// `None` when the gauge could not be read: it neither proves nor disproves a drain.
    pub value: Option<f64>,
}

/// What the backlog did over one episode.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogOutcome {
    /// The bound recovery waits for: drained means at or under it.
    pub max: f64,
    /// The highest reading from injection to the horizon; `None` when none could be read.
    pub peak: Option<f64>,
    /// The first reading sent at or after the revert that is at or under `max`.
    pub drained: Option<Instant>,
}

impl Episode {
    pub fn time_to_impact(&self) -> Option<Duration> {
        self.first_failure.map(|t| t - self.injected)
    }
    pub fn time_to_detect(&self) -> Option<Duration> {
        self.detected.map(|(t, _)| t - self.injected)
    }
    pub fn time_to_mitigate(&self) -> Option<Duration> {
        self.mitigated.map(|t| t - self.injected)
    }
    /// Time from the revert until the system served again and, where a backlog is declared, had
    /// drained it: whichever came last.
    pub fn time_to_recover(&self) -> Option<Duration> {
        let serving = self.time_to_serve()?;
        match &self.backlog {
            None => Some(serving),
            Some(_) => Some(serving.max(self.time_to_drain()?)),
        }
    }
    /// Time from the revert until the SLI's steady state returned, backlog aside.
    pub fn time_to_serve(&self) -> Option<Duration> {
        Some(self.recovered? - self.reverted?)
    }
    /// Time from the revert until the backlog was at or under its bound.
    pub fn time_to_drain(&self) -> Option<Duration> {
        let drained = self.backlog.as_ref()?.drained?;
        Some(drained - self.reverted?)
    }
    pub fn error_ratio(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.failures as f64 / self.samples as f64
        }
    }
}

/// Whether steady state holds over `[start, start + window)`. `samples` are sorted by `at`.
pub fn window_holds(samples: &[Sample], start: Instant, rule: &SteadyRule) -> bool {
    let end = start + rule.window;
    let from = samples.partition_point(|s| s.at < start);
    let to = samples.partition_point(|s| s.at < end);
    let window = &samples[from..to];
    if window.len() < rule.min_samples() {
        return false;
    }
    let successes = window.iter().filter(|s| s.outcome.is_success()).count();
    if (successes as f64) < rule.min_success * window.len() as f64 {
        return false;
    }
    match rule.max_p99 {
        None => true,
        Some(limit) => {
            let mut latencies: Vec<Duration> = window.iter().map(|s| s.latency).collect();
            latencies.sort_unstable();
            percentile(&latencies, 0.99) <= limit
        }
    }
}

/// Nearest-rank percentile of sorted values; zero for none.
pub fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The start of the first window, beginning at a sample sent after `after` (or at it, when
/// `inclusive`), that lies wholly before `until` and in which steady state holds.
pub fn first_steady_window(
    samples: &[Sample],
    after: Instant,
    inclusive: bool,
    until: Instant,
    rule: &SteadyRule,
) -> Option<Instant> {
    let first = if inclusive {
        samples.partition_point(|s| s.at < after)
    } else {
        samples.partition_point(|s| s.at <= after)
    };
    samples[first..]
        .iter()
        .map(|s| s.at)
        .take_while(|&start| start + rule.window <= until)
        .find(|&start| window_holds(samples, start, rule))
}

/// Groups faults into episodes and measures each one.
///
/// `samples` and `signals` need not be sorted; `end` is the instant observation stopped (every
/// sample sent before it is in `samples`).
pub fn measure(
    samples: &[Sample],
    faults: &[FaultActivity],
    signals: &[Signal],
    rule: &SteadyRule,
    end: Instant,
) -> Vec<Episode> {
    let mut samples = samples.to_vec();
    samples.sort_by_key(|s| s.at);
    let mut faults = faults.to_vec();
    faults.sort_by_key(|f| f.injected);

    // Group overlapping activity periods; an open fault extends its episode to the end.
    let mut groups: Vec<(Vec<String>, Instant, Option<Instant>)> = Vec::new();
    for fault in faults {
        match groups.last_mut() {
            Some((names, _, reverted)) if reverted.is_none_or(|r| fault.injected <= r) => {
                names.push(fault.name);
                *reverted = match (*reverted, fault.reverted) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => groups.push((vec![fault.name], fault.injected, fault.reverted)),
        }
    }

    let starts: Vec<Instant> = groups.iter().map(|g| g.1).collect();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (names, injected, reverted))| {
            let horizon = starts.get(i + 1).copied().unwrap_or(end).max(injected);
            let in_span = |t: Instant| t >= injected && t < horizon;
            let first_failure = samples
                .iter()
                .find(|s| in_span(s.at) && !s.outcome.is_success())
                .map(|s| s.at);
            let detected = signals
                .iter()
                .filter(|s| s.firing && in_span(s.at))
                .min_by_key(|s| s.at)
                .map(|s| (s.at, s.source));
            let mitigated = match (first_failure, reverted) {
                (Some(failure), Some(until)) => {
                    first_steady_window(&samples, failure, false, until, rule)
                }
                (Some(failure), None) => {
                    first_steady_window(&samples, failure, false, horizon, rule)
                }
                (None, _) => None,
            };
            let recovered =
                reverted.and_then(|r| first_steady_window(&samples, r, true, horizon, rule));

            let counted_until = recovered.unwrap_or(horizon);
            let mut episode = Episode {
                faults: names,
                injected,
                reverted,
                horizon,
                first_failure,
                detected,
                mitigated,
                recovered,
                samples: 0,
                failures: 0,
                failure_statuses: BTreeMap::new(),
                failure_errors: BTreeMap::new(),
                backlog: None,
            };
            for s in samples
                .iter()
                .filter(|s| s.at >= injected && s.at < counted_until)
            {
                episode.samples += 1;
                if let Outcome::Failure { status, error } = &s.outcome {
                    episode.failures += 1;
                    match status {
                        Some(code) => *episode.failure_statuses.entry(*code).or_default() += 1,
                        None => *episode.failure_errors.entry(error.clone()).or_default() += 1,
                    }
                }
            }
            episode
        })
        .collect()
}

/// Measures the backlog over each episode: its peak from injection to the horizon, and when it
/// drained (the first reading sent at or after the revert, before the horizon, at or under
/// `max`). `readings` need not be sorted.
pub fn apply_backlog(episodes: &mut [Episode], readings: &[BacklogReading], max: f64) {
    let mut readings = readings.to_vec();
    readings.sort_by_key(|r| r.at);
    for episode in episodes {
        let in_span = |r: &&BacklogReading| r.at >= episode.injected && r.at < episode.horizon;
        let peak = readings
            .iter()
            .filter(in_span)
            .filter_map(|r| r.value)
            .fold(None, |peak: Option<f64>, v| {
                Some(peak.map_or(v, |p| p.max(v)))
            });
        let drained = episode.reverted.and_then(|reverted| {
            readings
                .iter()
                .filter(in_span)
                .find(|r| r.at >= reverted && r.value.is_some_and(|v| v <= max))
                .map(|r| r.at)
        });
        episode.backlog = Some(BacklogOutcome { max, peak, drained });
    }
}

#[cfg(test)]
mod tests;
