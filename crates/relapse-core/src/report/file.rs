//! The JSON report format: `{"relapse_report": 1, "runs": [...]}`, and with `--baseline` a
//! `"comparison": {...}`. Its own types, so the model can change without changing what CI jobs
//! parse. `relapse report` reads the runs back (the comparison is not read)
//! ([`ReportFile::parse`], [`RunFile::to_report`]); fields added since version 1 began default
//! when absent, so older files still read.
//!
//! Here: the format's types and writing them; reading them back is in `read`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EpisodeReport, Placed, RunReport};
use crate::compare::{stats, Comparison, ScenarioComparison, TimeComparison};
use crate::gate::GateResult;

mod read;

pub use read::ReadError;

/// The version of the JSON report format.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct ReportFile {
    pub relapse_report: u32,
    pub runs: Vec<RunFile>,
    /// With `relapse run --baseline`: the runs against the stored baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, skip_deserializing)]
    pub comparison: Option<ComparisonFile>,
}

#[derive(Debug, Serialize)]
pub struct ComparisonFile {
    pub baseline: String,
    /// `fail` (a time regressed), `inconclusive` (something could not be decided) or `pass`.
    pub verdict: &'static str,
    pub noise: f64,
    pub significance: f64,
    pub resamples: usize,
    pub seed: u64,
    pub scenarios: Vec<ScenarioComparisonFile>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioComparisonFile {
    pub scenario: String,
    pub verdict: &'static str,
    pub baseline_machine: MachineFile,
    pub baseline_saved: String,
    pub baseline_runs: usize,
    pub new_runs: usize,
    /// The parts of the comparability key that differ: then nothing was compared.
    pub refusals: Vec<String>,
    pub notes: Vec<String>,
    /// Every reason the comparison could not decide (refusals included).
    pub inconclusive: Vec<String>,
    pub episodes: Vec<EpisodeComparisonFile>,
    /// `regression:time_to_detect[1]`, one per judged time.
    pub gates: Vec<GateFile>,
}

#[derive(Debug, Serialize)]
pub struct MachineFile {
    pub host: String,
    pub cpus: usize,
    pub kernel: String,
}

#[derive(Debug, Serialize)]
pub struct EpisodeComparisonFile {
    pub episode: usize,
    pub faults: Vec<String>,
    pub reason: Option<String>,
    pub times: Vec<TimeComparisonFile>,
}

#[derive(Debug, Serialize)]
pub struct TimeComparisonFile {
    pub time: &'static str,
    /// `improved`, `no change`, `regressed`, `inconclusive` or `not measured`.
    pub verdict: &'static str,
    pub baseline_median_ms: Option<f64>,
    pub new_median_ms: Option<f64>,
    /// The interval of median(new) − median(baseline), in signed milliseconds.
    pub difference_ms: Option<IntervalFile>,
    pub threshold_ms: f64,
    pub baseline_reached: usize,
    pub baseline_runs: usize,
    pub new_reached: usize,
    pub new_runs: usize,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct IntervalFile {
    pub lower: f64,
    pub upper: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RunFile {
    /// Random, 16 hex digits.
    #[serde(default)]
    pub run_id: String,
    pub scenario: String,
    pub file: Option<String>,
    /// What mitigates the fault, as the scenario names it (`"failover"`); the episodes'
    /// `time_to_mitigate_ms` is the time it took.
    pub mitigation: Option<String>,
    /// The gates' verdict, whatever the scenario expected of them.
    pub verdict: String,
    /// The verdict against the scenario's expectation (what the exit code goes by); equal to
    /// `verdict` unless the scenario expects its gates to fail.
    pub outcome: String,
    /// With `expect = "fail"`, the gates that had to fail and whether exactly they did.
    pub expect: Option<ExpectFile>,
    pub reason: Option<String>,
    pub started: String,
    pub duration_ms: u64,
    /// The steady-state window W, which every steady window below is long.
    #[serde(default)]
    pub steady_window_ms: f64,
    /// The steady window confirmed before injection (it ends where the fault schedule starts).
    #[serde(default)]
    pub steady_state: Option<WindowFile>,
    /// Every SLI sample, as parallel arrays.
    #[serde(default)]
    pub sli_series: Option<SeriesFile>,
    pub metrics: MetricsFile,
    pub episodes: Vec<MetricsFile>,
    pub gates: Vec<GateFile>,
    pub timeline: Vec<TimelineFile>,
    pub probes: Vec<ProbeFile>,
    /// Where the run's `[[target.process]]` kept their files and output (kept after the run).
    pub run_dir: Option<String>,
    pub processes: Vec<ProcessFile>,
    /// What each request flood did: its counts, percentiles and latency histogram (V2, base64),
    /// and a spread flood's shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floods: Vec<super::FloodReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessFile {
    pub name: String,
    pub pid: u32,
    /// Its stdout and stderr.
    pub log: String,
    pub ended: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExpectFile {
    pub verdict: String,
    /// Empty: any gate.
    pub failed_gates: Vec<String>,
    pub met: bool,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MetricsFile {
    pub faults: Vec<String>,
    pub injected_at_ms: Option<f64>,
    pub reverted_at_ms: Option<f64>,
    pub time_to_impact_ms: Option<f64>,
    pub time_to_detect_ms: Option<f64>,
    pub time_to_mitigate_ms: Option<f64>,
    pub time_to_recover_ms: Option<f64>,
    /// Recovery of the SLI alone; equal to `time_to_recover_ms` unless a backlog drained later.
    pub time_to_serve_ms: Option<f64>,
    pub time_to_drain_ms: Option<f64>,
    pub backlog: Option<BacklogFile>,
    /// The precision of impact, mitigation, serve and recovery times: the SLI probe interval
    /// plus the SLI probe's p99 lateness (its `lateness_ms.p99`).
    /// The steady window that marked mitigation (it starts at injection + time to mitigate).
    #[serde(default)]
    pub mitigation_window: Option<WindowFile>,
    /// The first steady window after the revert (it starts at the revert + time to serve).
    #[serde(default)]
    pub recovery_window: Option<WindowFile>,
    pub resolution_ms: f64,
    pub detected_by: Option<String>,
    pub detect_resolution_ms: Option<f64>,
    pub samples: u64,
    pub failures: u64,
    pub error_ratio: f64,
    pub failure_statuses: BTreeMap<String, u64>,
    pub failure_errors: BTreeMap<String, u64>,
    /// The faults that ran on agents, and the SLI probe if an agent checked it. Their instants
    /// came from the agents' clocks, so `resolution_ms` and `detect_resolution_ms` include each
    /// agent's `clock_uncertainty_ms` once (summed over the agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<PlacementFile>,
}

/// A fault an agent applied (`fault`), or the SLI probe an agent checked (`probe`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PlacementFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    pub agent: String,
    pub url: String,
    pub clock_uncertainty_ms: f64,
}

/// A steady window: from `start_ms` (since the run's start) for `length_ms`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct WindowFile {
    pub start_ms: f64,
    pub length_ms: f64,
}

/// The SLI's samples as parallel arrays, one entry per sample in the order sent (10 µs
/// precision): compact enough for an hour at 50 ms (72,000 samples, ~2 MB).
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct SeriesFile {
    pub probe: String,
    pub every_ms: f64,
    /// When each check was sent, since the run's start.
    pub at_ms: Vec<f64>,
    pub latency_ms: Vec<f64>,
    /// Its HTTP status, where there is one.
    pub status: Vec<Option<u16>>,
    /// Why it failed (`timeout`, `status 503`, …); `null` for a success.
    pub error: Vec<Option<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BacklogFile {
    pub max: f64,
    pub peak: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GateFile {
    pub name: String,
    pub limit_ms: Option<f64>,
    pub measured_ms: Option<f64>,
    pub passed: bool,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TimelineFile {
    pub at_ms: f64,
    pub wall: String,
    pub event: String,
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeFile {
    pub name: String,
    pub sli: bool,
    pub every_ms: f64,
    pub samples: u64,
    pub errors: u64,
    pub status_codes: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    pub latency_ms: LatencyFile,
    /// How much later than scheduled the checks were sent: the harness's own distortion. The
    /// SLI probe's p99 is part of the runs' `resolution_ms`.
    /// Absent in reports written before it was measured: read back as zero.
    #[serde(default)]
    pub lateness_ms: LatenessFile,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LatenessFile {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LatencyFile {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Milliseconds with 10 µs precision: the series' arrays stay short.
fn ms_series(d: Duration) -> f64 {
    ((d.as_micros() / 10) as f64) / 100.0
}

/// Back from milliseconds, to the microsecond.
fn from_ms(ms: f64) -> Duration {
    Duration::from_micros((ms * 1000.0).round().max(0.0) as u64)
}

fn window(start: Option<Duration>, length: Duration) -> Option<WindowFile> {
    start.map(|start| WindowFile {
        start_ms: ms(start),
        length_ms: ms(length),
    })
}

fn metrics(e: Option<&EpisodeReport>, resolution: Duration, steady: Duration) -> MetricsFile {
    let clock = e.map(EpisodeReport::clock_uncertainty).unwrap_or_default();
    MetricsFile {
        faults: e.map(|e| e.faults.clone()).unwrap_or_default(),
        injected_at_ms: e.map(|e| ms(e.injected_at)),
        reverted_at_ms: e.and_then(|e| e.reverted_at).map(ms),
        time_to_impact_ms: e.and_then(|e| e.time_to_impact).map(ms),
        time_to_detect_ms: e.and_then(|e| e.time_to_detect).map(ms),
        time_to_mitigate_ms: e.and_then(|e| e.time_to_mitigate).map(ms),
        time_to_recover_ms: e.and_then(|e| e.time_to_recover).map(ms),
        time_to_serve_ms: e.and_then(|e| e.time_to_serve).map(ms),
        time_to_drain_ms: e.and_then(|e| e.time_to_drain).map(ms),
        backlog: e.and_then(|e| e.backlog.as_ref()).map(|b| BacklogFile {
            max: b.max,
            peak: b.peak,
        }),
        mitigation_window: window(e.and_then(|e| e.mitigated_at), steady),
        recovery_window: window(e.and_then(|e| e.recovered_at), steady),
        resolution_ms: ms(resolution + clock),
        detected_by: e.and_then(|e| e.detected_by.clone()),
        detect_resolution_ms: e.and_then(|e| e.detect_resolution).map(|d| ms(d + clock)),
        samples: e.map_or(0, |e| e.samples),
        failures: e.map_or(0, |e| e.failures),
        error_ratio: e.map_or(0.0, EpisodeReport::error_ratio),
        failure_statuses: e
            .map(|e| {
                e.failure_statuses
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect()
            })
            .unwrap_or_default(),
        failure_errors: e.map(|e| e.failure_errors.clone()).unwrap_or_default(),
        placements: e
            .map(|e| {
                e.placements
                    .iter()
                    .map(|p| PlacementFile {
                        fault: match &p.what {
                            Placed::Fault(name) => Some(name.clone()),
                            Placed::Probe(_) => None,
                        },
                        probe: match &p.what {
                            Placed::Probe(name) => Some(name.clone()),
                            Placed::Fault(_) => None,
                        },
                        agent: p.agent.clone(),
                        url: p.url.clone(),
                        clock_uncertainty_ms: ms(p.clock_uncertainty),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The clock uncertainty of a file's placements, as [`EpisodeReport::clock_uncertainty`].
fn clock_of(m: &MetricsFile) -> Duration {
    super::clock_uncertainty(
        m.placements
            .iter()
            .map(|p| (p.agent.as_str(), from_ms(p.clock_uncertainty_ms))),
    )
}

impl RunFile {
    pub fn from_report(r: &RunReport) -> RunFile {
        RunFile {
            run_id: r.run_id.clone(),
            steady_window_ms: ms(r.steady_window),
            steady_state: r.steady_confirmed_at.map(|end| WindowFile {
                start_ms: ms(end.saturating_sub(r.steady_window)),
                length_ms: ms(r.steady_window),
            }),
            sli_series: r.sli.as_ref().map(|series| SeriesFile {
                probe: series.probe.clone(),
                every_ms: ms(series.every),
                at_ms: series.samples.iter().map(|s| ms_series(s.at)).collect(),
                latency_ms: series
                    .samples
                    .iter()
                    .map(|s| ms_series(s.latency))
                    .collect(),
                status: series.samples.iter().map(|s| s.status).collect(),
                error: series.samples.iter().map(|s| s.error.clone()).collect(),
            }),
            scenario: r.scenario.clone(),
            mitigation: r.mitigation.clone(),
            file: r.file.as_ref().map(|p| p.display().to_string()),
            verdict: r.verdict.as_str().to_string(),
            outcome: r.outcome().as_str().to_string(),
            expect: r.expectation.as_ref().map(|e| ExpectFile {
                verdict: "fail".to_string(),
                failed_gates: e.expected.clone(),
                met: e.met,
                message: e.message.clone(),
            }),
            reason: r.reason.clone(),
            started: humantime::format_rfc3339_millis(r.started).to_string(),
            duration_ms: r.duration.as_millis() as u64,
            metrics: metrics(r.headline(), r.resolution, r.steady_window),
            episodes: r
                .episodes
                .iter()
                .map(|e| metrics(Some(e), r.resolution, r.steady_window))
                .collect(),
            gates: r.gates.iter().map(gate_file).collect(),
            timeline: r
                .timeline
                .iter()
                .map(|t| TimelineFile {
                    at_ms: ms(t.at),
                    wall: humantime::format_rfc3339_millis(r.started + t.at).to_string(),
                    event: t.event.clone(),
                    detail: t.detail.clone(),
                })
                .collect(),
            probes: r
                .probes
                .iter()
                .map(|p| ProbeFile {
                    name: p.name.clone(),
                    sli: p.sli,
                    every_ms: ms(p.every),
                    samples: p.samples,
                    errors: p.errors,
                    status_codes: p
                        .statuses
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                    error_kinds: p.error_kinds.clone(),
                    latency_ms: LatencyFile {
                        p50: ms(p.latency_p50),
                        p90: ms(p.latency_p90),
                        p99: ms(p.latency_p99),
                        max: ms(p.latency_max),
                    },
                    lateness_ms: LatenessFile {
                        p50: ms(p.lateness.p50),
                        p99: ms(p.lateness.p99),
                        max: ms(p.lateness.max),
                    },
                })
                .collect(),
            run_dir: r.run_dir.as_ref().map(|d| d.display().to_string()),
            processes: r
                .processes
                .iter()
                .map(|p| ProcessFile {
                    name: p.name.clone(),
                    pid: p.pid,
                    log: p.log.display().to_string(),
                    ended: p.ended.clone(),
                })
                .collect(),
            floods: r.floods.clone(),
        }
    }
}

fn gate_file(g: &GateResult) -> GateFile {
    GateFile {
        name: g.name.clone(),
        limit_ms: g.limit.map(ms),
        measured_ms: g.measured.map(ms),
        passed: g.passed,
        message: g.message.clone(),
    }
}

/// Signed seconds as milliseconds to the microsecond.
fn signed_ms(seconds: f64) -> f64 {
    (seconds * 1_000_000.0).round() / 1000.0
}

fn time_file(t: &TimeComparison) -> TimeComparisonFile {
    TimeComparisonFile {
        time: t.measure.key(),
        verdict: t.change.as_str(),
        baseline_median_ms: t.baseline_median.map(ms),
        new_median_ms: t.new_median.map(ms),
        difference_ms: t.interval.map(|i| IntervalFile {
            lower: signed_ms(i.lower),
            upper: signed_ms(i.upper),
        }),
        threshold_ms: ms(t.threshold),
        baseline_reached: t.baseline_reached,
        baseline_runs: t.baseline_runs,
        new_reached: t.new_reached,
        new_runs: t.new_runs,
        reason: t.reason.clone(),
    }
}

fn scenario_file(c: &ScenarioComparison) -> ScenarioComparisonFile {
    ScenarioComparisonFile {
        scenario: c.scenario.clone(),
        verdict: c.verdict().as_str(),
        baseline_machine: MachineFile {
            host: c.baseline_machine.host.clone(),
            cpus: c.baseline_machine.cpus,
            kernel: c.baseline_machine.kernel.clone(),
        },
        baseline_saved: humantime::format_rfc3339_millis(c.baseline_saved).to_string(),
        baseline_runs: c.baseline_runs,
        new_runs: c.new_runs,
        refusals: c.refusals.clone(),
        notes: c.notes.clone(),
        inconclusive: c.inconclusive_reasons(),
        episodes: (c.episodes.iter())
            .map(|e| EpisodeComparisonFile {
                episode: e.number,
                faults: e.faults.clone(),
                reason: e.reason.clone(),
                times: e.times.iter().map(time_file).collect(),
            })
            .collect(),
        gates: c.gates().iter().map(gate_file).collect(),
    }
}

impl ComparisonFile {
    pub fn new(c: &Comparison) -> ComparisonFile {
        ComparisonFile {
            baseline: c.baseline.clone(),
            verdict: c.verdict().as_str(),
            noise: c.settings.noise,
            significance: c.settings.significance,
            resamples: stats::RESAMPLES,
            seed: stats::SEED,
            scenarios: c.scenarios.iter().map(scenario_file).collect(),
        }
    }
}

impl ReportFile {
    pub fn new(runs: &[RunReport]) -> ReportFile {
        ReportFile::with_comparison(runs, None)
    }

    pub fn with_comparison(runs: &[RunReport], comparison: Option<&Comparison>) -> ReportFile {
        ReportFile {
            relapse_report: REPORT_VERSION,
            runs: runs.iter().map(RunFile::from_report).collect(),
            comparison: comparison.map(ComparisonFile::new),
        }
    }
}

impl ReportFile {
    /// The report as JSON text: indented, but each array of numbers or strings on one line, so
    /// an hour of samples stays a few lines rather than hundreds of thousands.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(
            &mut out,
            super::json::ScalarArraysInline::new(),
        );
        self.serialize(&mut serializer)
            .expect("a report serializes: its maps have string keys");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

#[cfg(test)]
mod tests;
