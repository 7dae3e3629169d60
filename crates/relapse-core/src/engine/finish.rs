//! The end of a run: what is still applied is reverted, probes and detection stop, and the
//! samples are measured and judged into the [`RunReport`].

use std::time::Duration;

use tokio::time::Instant;

use super::{Ending, Phase, Run};
use crate::fault::FaultGuard;
use crate::gate::{self, Verdict};
use crate::measure;
use crate::report::{
    BacklogReport, EpisodeReport, Placed, RunReport, SeriesSample, SliSeries, TimelineEntry,
};
use crate::scenario::Gates;
use crate::sense::Outcome;

impl Run {
    /// Reverts whatever is still applied, stops probes and detection, measures and judges.
    pub(super) async fn finish(mut self, ending: Ending) -> RunReport {
        if self.guards.iter().any(FaultGuard::is_applied) {
            self.set_phase(Phase::Reverting);
            for index in 0..self.guards.len() {
                if let Err(reason) = self.revert(index).await {
                    // The guard stays applied and reverts again, without confirmation, on drop.
                    self.event(Instant::now(), "revert failed", reason);
                }
            }
        }

        let end = Instant::now();
        self.stop.cancel();
        self.tasks.close();
        // In-flight checks end by their own timeouts; the bound only guards against a probe that
        // ignores its own.
        let longest = self
            .probe_meta
            .iter()
            .map(|m| m.2)
            .max()
            .unwrap_or_default();
        if tokio::time::timeout(longest + Duration::from_secs(2), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("probes or detection sources did not stop in time");
        }
        while let Ok((index, sample)) = self.samples_rx.try_recv() {
            self.record_sample(index, sample);
        }
        while let Ok(signal) = self.signals_rx.try_recv() {
            self.record_signal(signal);
        }
        while let Ok(reading) = self.backlog_rx.try_recv() {
            self.backlog.push(reading);
        }

        let activity = self.fault_activity();
        let mut episodes = measure::measure(
            &self.sli_samples,
            &activity,
            &self.signals,
            &self.steady,
            end,
        );
        if let Some((_, _, max)) = &self.backlog_meta {
            measure::apply_backlog(&mut episodes, &self.backlog, *max);
        }
        let (verdict, reason, gates, expectation) = match ending {
            Ending::Completed => {
                let per_episode: Vec<Gates> = episodes
                    .iter()
                    .map(|e| self.episode_gates(&e.faults))
                    .collect();
                let gates = gate::judge(
                    &episodes,
                    &per_episode,
                    !self.detector_meta.is_empty(),
                    &self.floods,
                );
                let expectation = gate::expectation(&self.expect, &gates);
                (gate::verdict(&gates), None, gates, expectation)
            }
            Ending::Inconclusive(reason) => (Verdict::Inconclusive, Some(reason), Vec::new(), None),
            Ending::Aborted(reason) => {
                self.event(end, "aborted", reason.clone());
                (Verdict::Aborted, Some(reason), Vec::new(), None)
            }
        };

        for e in &episodes {
            if let Some(t) = e.first_failure {
                self.event(t, "impact", "first failing SLI sample");
            }
            if let Some(t) = e.mitigated {
                self.event(
                    t,
                    "mitigated",
                    "steady state returned while the fault was active",
                );
            }
            if let Some(t) = e.recovered {
                self.event(
                    t,
                    "recovered",
                    "start of the first steady window after the revert",
                );
            }
            if let (Some(backlog), Some((name, _, _))) = (&e.backlog, &self.backlog_meta) {
                if let Some(t) = backlog.drained {
                    self.event(
                        t,
                        "drained",
                        format!("backlog \"{name}\" at or under {}", backlog.max),
                    );
                }
            }
        }
        self.timeline.sort_by_key(|t| t.0);

        let start = self.start;
        let episode_reports = episodes
            .iter()
            .map(|e| EpisodeReport {
                faults: e.faults.clone(),
                placements: self
                    .placements
                    .iter()
                    .filter(|p| match &p.what {
                        Placed::Fault(fault) => e.faults.contains(fault),
                        // The SLI measured every episode.
                        Placed::Probe(_) => true,
                    })
                    .cloned()
                    .collect(),
                injected_at: e.injected - start,
                reverted_at: e.reverted.map(|r| r - start),
                time_to_impact: e.time_to_impact(),
                time_to_detect: e.time_to_detect(),
                time_to_mitigate: e.time_to_mitigate(),
                time_to_recover: e.time_to_recover(),
                time_to_serve: e.time_to_serve(),
                time_to_drain: e.time_to_drain(),
                backlog: e.backlog.as_ref().map(|b| BacklogReport {
                    max: b.max,
                    peak: b.peak,
                }),
                mitigated_at: e.mitigated.map(|t| t - start),
                recovered_at: e.recovered.map(|t| t - start),
                detected_by: e.detected.map(|(_, s)| self.detector_meta[s].0.clone()),
                detect_resolution: e.detected.map(|(_, s)| self.detector_meta[s].1),
                samples: e.samples,
                failures: e.failures,
                failure_statuses: e.failure_statuses.clone(),
                failure_errors: e.failure_errors.clone(),
            })
            .collect();

        let probes = self.probe_stats();
        // A time measured from the SLI's checks is off by up to its interval, and by how late
        // the harness itself sent the checks: the 99th percentile of that lateness.
        let resolution = self.steady.probe_every
            + probes
                .get(self.sli)
                .map_or(Duration::ZERO, |p| p.lateness.p99);
        self.set_phase(Phase::Done);
        let sli = self
            .probe_meta
            .get(self.sli)
            .map(|(probe, every, _)| SliSeries {
                probe: probe.clone(),
                every: *every,
                samples: self
                    .sli_samples
                    .iter()
                    .map(|s| SeriesSample {
                        at: s.at.saturating_duration_since(start),
                        latency: s.latency,
                        status: s.outcome.status(),
                        error: match &s.outcome {
                            Outcome::Success { .. } => None,
                            Outcome::Failure { error, .. } => Some(error.clone()),
                        },
                    })
                    .collect(),
            });
        RunReport {
            run_id: crate::report::new_run_id(),
            steady_window: self.steady.window,
            steady_confirmed_at: self.steady_confirmed.map(|t| t - start),
            sli,
            scenario: self.scenario.clone(),
            file: None,
            mitigation: self.mitigation.clone(),
            verdict,
            expectation,
            reason,
            started: self.started_wall,
            duration: end - start,
            resolution,
            episodes: episode_reports,
            gates,
            timeline: self
                .timeline
                .iter()
                .map(|(at, event, detail)| TimelineEntry {
                    at: at.saturating_duration_since(start),
                    event: event.clone(),
                    detail: detail.clone(),
                })
                .collect(),
            probes,
            run_dir: None,
            processes: Vec::new(),
            floods: std::mem::take(&mut self.floods),
        }
    }
}
