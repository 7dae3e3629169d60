//! The probes' and the backlog gauge's loops, and the per-probe statistics of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{PlannedBacklog, PlannedProbe, Run};
use crate::measure::{self, BacklogReading, Sample};
use crate::report::ProbeStats;
use crate::sense::{Outcome, Ticks, Timed};

impl Run {
    pub(super) fn probe_stats(&self) -> Vec<ProbeStats> {
        self.probe_meta
            .iter()
            .enumerate()
            .map(|(index, (name, every, _))| {
                let samples: Vec<&Sample> = if index == self.sli {
                    self.sli_samples.iter().collect()
                } else {
                    self.other_samples
                        .iter()
                        .filter(|(i, _)| *i == index)
                        .map(|(_, s)| s)
                        .collect()
                };
                // Fixed bounds (1 µs to 1 h): `saturating_record` on an auto-resizing histogram
                // clamps to its initial range instead of growing it.
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("1 µs to 1 h at 3 significant figures are valid bounds");
                let mut statuses = BTreeMap::new();
                let mut error_kinds = BTreeMap::new();
                let mut errors = 0;
                for s in &samples {
                    histogram.saturating_record(s.latency.as_micros() as u64);
                    if let Some(status) = s.outcome.status() {
                        *statuses.entry(status).or_default() += 1;
                    }
                    if let Outcome::Failure { error, .. } = &s.outcome {
                        errors += 1;
                        *error_kinds.entry(error.clone()).or_default() += 1;
                    }
                }
                let at = |q: f64| Duration::from_micros(histogram.value_at_quantile(q));
                ProbeStats {
                    lateness: measure::lateness(samples.iter().copied()),
                    name: name.clone(),
                    sli: index == self.sli,
                    every: *every,
                    samples: samples.len() as u64,
                    errors,
                    statuses,
                    error_kinds,
                    latency_p50: at(0.5),
                    latency_p90: at(0.9),
                    latency_p99: at(0.99),
                    latency_max: Duration::from_micros(histogram.max()),
                }
            })
            .collect()
    }
}

/// Sends one check every `every`, without waiting for the previous one: a hung target must not
/// slow the probe down, or the SLI would stop seeing what users see.
pub(super) async fn probe_loop(
    index: usize,
    planned: PlannedProbe,
    mut ticks: Box<dyn Ticks>,
    samples: mpsc::UnboundedSender<(usize, Sample)>,
    stop: CancellationToken,
) {
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // The tick is the instant the check was meant to go out; how much later the spawned
            // task sends it is the harness's own lateness, reported beside the resolution.
            scheduled = ticks.tick() => {
                let probe = planned.probe.clone();
                let samples = samples.clone();
                in_flight.spawn(async move {
                    let Timed { at, latency, outcome } = probe.timed_check().await;
                    let _ = samples.send((index, Sample { scheduled, at, latency, outcome }));
                });
            }
            // Reap finished checks so the set does not grow over a long run.
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    // Checks sent before the stop complete (each probe enforces its timeout), so every sample
    // sent before the end of the run is measured.
    while in_flight.join_next().await.is_some() {}
}

/// Reads the backlog gauge every `every`, one reading at a time: a queue-depth query is cheap,
/// and a slow one is bounded by the timeout and recorded as unreadable.
pub(super) async fn backlog_loop(
    planned: PlannedBacklog,
    readings: mpsc::UnboundedSender<BacklogReading>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(planned.every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {
                let at = Instant::now();
                let value = match tokio::time::timeout(planned.timeout, planned.gauge.read()).await {
                    Ok(Ok(value)) => Some(value),
                    Ok(Err(error)) => {
                        tracing::debug!(backlog = %planned.name, %error, "backlog unreadable");
                        None
                    }
                    Err(_) => None,
                };
                let _ = readings.send(BacklogReading { at, value });
            }
        }
    }
}
