//! Reading a JSON report back into the model (`relapse report`): the version refused unless it
//! is one this relapse reads, then each run converted, its problems named by run.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{clock_of, from_ms, MetricsFile, ReportFile, RunFile, REPORT_VERSION};
use crate::gate::{ExpectationOutcome, GateResult, Verdict};
use crate::report::{
    BacklogReport, EpisodeReport, Placed, Placement, ProbeStats, ProcessReport, RunReport,
    SeriesSample, SliSeries, TimelineEntry,
};

/// Why a file could not be read as a JSON report.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("not a relapse JSON report (no \"relapse_report\" version)")]
    NotAReport,
    #[error(
        "relapse_report version {0} is not one this relapse reads (it reads {REPORT_VERSION})"
    )]
    Version(u64),
    #[error("a relapse report, but malformed: {0}")]
    Malformed(serde_json::Error),
    #[error("run {run}: {message}")]
    Run { run: usize, message: String },
}

impl ReportFile {
    /// Reads a JSON report, refusing anything that does not say it is one.
    pub fn parse(text: &str) -> Result<ReportFile, ReadError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(ReadError::NotJson)?;
        match value
            .get("relapse_report")
            .and_then(serde_json::Value::as_u64)
        {
            None => return Err(ReadError::NotAReport),
            Some(v) if v != u64::from(REPORT_VERSION) => return Err(ReadError::Version(v)),
            Some(_) => {}
        }
        serde_json::from_value(value).map_err(ReadError::Malformed)
    }

    /// The runs as the report model, for the same writers `relapse run` uses.
    pub fn to_reports(&self) -> Result<Vec<RunReport>, ReadError> {
        self.runs
            .iter()
            .enumerate()
            .map(|(index, run)| {
                run.to_report().map_err(|message| ReadError::Run {
                    run: index + 1,
                    message,
                })
            })
            .collect()
    }
}

fn verdict(text: &str) -> Result<Verdict, String> {
    [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Inconclusive,
        Verdict::Aborted,
    ]
    .into_iter()
    .find(|v| v.as_str() == text)
    .ok_or_else(|| format!("unknown verdict {text:?}"))
}

fn statuses(map: &BTreeMap<String, u64>) -> Result<BTreeMap<u16, u64>, String> {
    map.iter()
        .map(|(k, v)| {
            k.parse()
                .map(|k| (k, *v))
                .map_err(|_| format!("status {k:?} is not a number"))
        })
        .collect()
}

fn episode(m: &MetricsFile) -> Result<EpisodeReport, String> {
    let clock = clock_of(m);
    Ok(EpisodeReport {
        faults: m.faults.clone(),
        placements: m
            .placements
            .iter()
            .map(|p| {
                let what = match (&p.fault, &p.probe) {
                    (Some(fault), None) => Placed::Fault(fault.clone()),
                    (None, Some(probe)) => Placed::Probe(probe.clone()),
                    _ => return Err("a placement names one fault or one probe".to_string()),
                };
                Ok(Placement {
                    what,
                    agent: p.agent.clone(),
                    url: p.url.clone(),
                    clock_uncertainty: from_ms(p.clock_uncertainty_ms),
                })
            })
            .collect::<Result<_, String>>()?,
        injected_at: from_ms(
            m.injected_at_ms
                .ok_or("an episode without injected_at_ms")?,
        ),
        reverted_at: m.reverted_at_ms.map(from_ms),
        time_to_impact: m.time_to_impact_ms.map(from_ms),
        time_to_detect: m.time_to_detect_ms.map(from_ms),
        time_to_mitigate: m.time_to_mitigate_ms.map(from_ms),
        time_to_recover: m.time_to_recover_ms.map(from_ms),
        time_to_serve: m.time_to_serve_ms.map(from_ms),
        time_to_drain: m.time_to_drain_ms.map(from_ms),
        backlog: m.backlog.as_ref().map(|b| BacklogReport {
            max: b.max,
            peak: b.peak,
        }),
        mitigated_at: m.mitigation_window.as_ref().map(|w| from_ms(w.start_ms)),
        recovered_at: m.recovery_window.as_ref().map(|w| from_ms(w.start_ms)),
        detected_by: m.detected_by.clone(),
        detect_resolution: m
            .detect_resolution_ms
            .map(|d| from_ms(d).saturating_sub(clock)),
        samples: m.samples,
        failures: m.failures,
        failure_statuses: statuses(&m.failure_statuses)?,
        failure_errors: m.failure_errors.clone(),
    })
}

impl RunFile {
    /// The run as the report model. What the file does not keep comes back empty: the gates
    /// an expectation covered are found again by their names.
    pub fn to_report(&self) -> Result<RunReport, String> {
        let gates: Vec<GateResult> = self
            .gates
            .iter()
            .map(|g| GateResult {
                name: g.name.clone(),
                limit: g.limit_ms.map(from_ms),
                measured: g.measured_ms.map(from_ms),
                passed: g.passed,
                message: g.message.clone(),
            })
            .collect();
        let expectation = self.expect.as_ref().map(|e| ExpectationOutcome {
            expected: e.failed_gates.clone(),
            met: e.met,
            failed_as_expected: gates
                .iter()
                .filter(|g| !g.passed)
                .filter(|g| {
                    e.failed_gates.is_empty()
                        || e.failed_gates
                            .iter()
                            .any(|p| crate::gate::gate_matches(p, &g.name))
                })
                .map(|g| g.name.clone())
                .collect(),
            message: e.message.clone(),
        });
        let started = humantime::parse_rfc3339(&self.started)
            .map_err(|e| format!("started {:?}: {e}", self.started))?;
        let sli = match &self.sli_series {
            None => None,
            Some(s) => {
                let n = s.at_ms.len();
                if s.latency_ms.len() != n || s.status.len() != n || s.error.len() != n {
                    return Err("sli_series: its arrays differ in length".into());
                }
                Some(SliSeries {
                    probe: s.probe.clone(),
                    every: from_ms(s.every_ms),
                    samples: (0..n)
                        .map(|i| SeriesSample {
                            at: from_ms(s.at_ms[i]),
                            latency: from_ms(s.latency_ms[i]),
                            status: s.status[i],
                            error: s.error[i].clone(),
                        })
                        .collect(),
                })
            }
        };
        Ok(RunReport {
            run_id: self.run_id.clone(),
            scenario: self.scenario.clone(),
            file: self.file.as_ref().map(Into::into),
            mitigation: self.mitigation.clone(),
            verdict: verdict(&self.verdict)?,
            expectation,
            reason: self.reason.clone(),
            started,
            duration: Duration::from_millis(self.duration_ms),
            resolution: from_ms(self.metrics.resolution_ms).saturating_sub(clock_of(&self.metrics)),
            steady_window: from_ms(self.steady_window_ms),
            steady_confirmed_at: self
                .steady_state
                .as_ref()
                .map(|w| from_ms(w.start_ms + w.length_ms)),
            sli,
            episodes: self
                .episodes
                .iter()
                .map(episode)
                .collect::<Result<_, _>>()?,
            gates,
            timeline: self
                .timeline
                .iter()
                .map(|t| TimelineEntry {
                    at: from_ms(t.at_ms),
                    event: t.event.clone(),
                    detail: t.detail.clone(),
                })
                .collect(),
            probes: self
                .probes
                .iter()
                .map(|p| {
                    Ok(ProbeStats {
                        name: p.name.clone(),
                        sli: p.sli,
                        every: from_ms(p.every_ms),
                        samples: p.samples,
                        errors: p.errors,
                        statuses: statuses(&p.status_codes)?,
                        error_kinds: p.error_kinds.clone(),
                        latency_p50: from_ms(p.latency_ms.p50),
                        latency_p90: from_ms(p.latency_ms.p90),
                        latency_p99: from_ms(p.latency_ms.p99),
                        latency_max: from_ms(p.latency_ms.max),
                        lateness: crate::measure::Lateness {
                            p50: from_ms(p.lateness_ms.p50),
                            p99: from_ms(p.lateness_ms.p99),
                            max: from_ms(p.lateness_ms.max),
                        },
                    })
                })
                .collect::<Result<_, String>>()?,
            run_dir: self.run_dir.as_ref().map(Into::into),
            processes: self
                .processes
                .iter()
                .map(|p| ProcessReport {
                    name: p.name.clone(),
                    pid: p.pid,
                    log: p.log.clone().into(),
                    ended: p.ended.clone(),
                })
                .collect(),
            floods: self.floods.clone(),
        })
    }
}
