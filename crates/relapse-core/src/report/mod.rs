//! The report model: what a run measured, in a form the CLI renders (terminal, JSON, JUnit).

pub mod file;
mod flood;
mod json;

pub use flood::{
    FiguresError, FloodFigures, FloodOutcome, FloodReport, ShardOutcome, LATENCY_SIGNIFICANT_DIGITS,
};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::gate::{ExpectationOutcome, GateResult, Verdict};
pub use crate::measure::Lateness;

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Random, 16 hex digits: tells apart runs of one scenario across files and series.
    pub run_id: String,
    pub scenario: String,
    pub file: Option<PathBuf>,
    /// What mitigates the fault (`"failover"`), as the scenario names it.
    pub mitigation: Option<String>,
    /// The gates' verdict, whatever the scenario expected of them.
    pub verdict: Verdict,
    /// With `[scenario] expect = "fail"`, whether exactly the expected gates failed; `None`
    /// when the gates were expected to hold or were not judged (inconclusive, aborted).
    pub expectation: Option<ExpectationOutcome>,
    /// Why the run was inconclusive or aborted.
    pub reason: Option<String>,
    /// Wall-clock start; every `at` below is monotonic time since this instant.
    pub started: SystemTime,
    pub duration: Duration,
    /// The precision of the times to impact, mitigate, serve and recover: the SLI probe interval
    /// plus the 99th percentile of the SLI probe's lateness (how much later than scheduled the
    /// harness sent its checks).
    pub resolution: Duration,
    /// The steady-state window W: every steady window (before injection, mitigation,
    /// recovery) is this long.
    pub steady_window: Duration,
    /// When steady state was confirmed before injection: the window `[at - W, at)` held.
    /// `None` when it never was (an inconclusive run).
    pub steady_confirmed_at: Option<Duration>,
    /// Every SLI sample, in the order sent.
    pub sli: Option<SliSeries>,
    pub episodes: Vec<EpisodeReport>,
    pub gates: Vec<GateResult>,
    pub timeline: Vec<TimelineEntry>,
    pub probes: Vec<ProbeStats>,
    /// `{run.dir}`, where the run's processes kept their files and output; `None` without
    /// `[[target.process]]`.
    pub run_dir: Option<PathBuf>,
    /// The run's `[[target.process]]` and how each ended.
    pub processes: Vec<ProcessReport>,
    /// What each request flood of the run did, in the order the faults were reverted.
    pub floods: Vec<FloodReport>,
}

/// A process relapse started for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessReport {
    pub name: String,
    pub pid: u32,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// How it ended: "stopped by SIGTERM in 3.1ms (exit status: 0)", "had exited on its own …".
    pub ended: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeReport {
    pub faults: Vec<String>,
    /// The episode's faults that ran on agents, and where; the others ran on relapse's host.
    pub placements: Vec<Placement>,
    pub injected_at: Duration,
    pub reverted_at: Option<Duration>,
    pub time_to_impact: Option<Duration>,
    pub time_to_detect: Option<Duration>,
    pub time_to_mitigate: Option<Duration>,
    /// Until serving again and, with a backlog, drained: whichever came last.
    pub time_to_recover: Option<Duration>,
    /// Until the SLI's steady state returned, backlog aside.
    pub time_to_serve: Option<Duration>,
    /// Until the backlog was at or under its bound.
    pub time_to_drain: Option<Duration>,
    pub backlog: Option<BacklogReport>,
    /// Start of the mitigation window (steady state with the fault still active), since the
    /// run's start; the window is the run's `steady_window` long.
    pub mitigated_at: Option<Duration>,
    /// Start of the recovery window (the first steady window after the revert).
    pub recovered_at: Option<Duration>,
    pub detected_by: Option<String>,
    /// How late the detecting source could have noticed (its polling interval; zero if pushed).
    pub detect_resolution: Option<Duration>,
    pub samples: u64,
    pub failures: u64,
    pub failure_statuses: BTreeMap<u16, u64>,
    pub failure_errors: BTreeMap<String, u64>,
}

/// A fault an agent applied, or the SLI probe an agent checked from its host: its instants were
/// read on the agent's clock and mapped to this host's by an offset known to within
/// `clock_uncertainty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub what: Placed,
    /// The `[[agent]]`'s name.
    pub agent: String,
    pub url: String,
    pub clock_uncertainty: Duration,
}

/// What ran on an agent, by its name in the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    Fault(String),
    Probe(String),
}

/// How uncertain a time between instants read on these agents is: a time between two agents'
/// instants carries both offsets' uncertainty, so each agent's counts once, summed.
pub fn clock_uncertainty<'a>(agents: impl IntoIterator<Item = (&'a str, Duration)>) -> Duration {
    let mut seen = BTreeMap::new();
    for (agent, uncertainty) in agents {
        let largest = seen.entry(agent).or_insert(Duration::ZERO);
        *largest = (*largest).max(uncertainty);
    }
    seen.values().sum()
}

impl EpisodeReport {
    /// How uncertain the episode's remote instants are (zero when all its faults and its SLI
    /// ran here): every time measured from its injection carries it in its resolution.
    pub fn clock_uncertainty(&self) -> Duration {
        clock_uncertainty(
            self.placements
                .iter()
                .map(|p| (p.agent.as_str(), p.clock_uncertainty)),
        )
    }

    /// The agent a fault of this episode ran on, if not here.
    pub fn fault_agent(&self, fault: &str) -> Option<&Placement> {
        self.placements
            .iter()
            .find(|p| matches!(&p.what, Placed::Fault(f) if f == fault))
    }

    /// The agent the SLI was checked from, if not here.
    pub fn probe_agent(&self) -> Option<&Placement> {
        self.placements
            .iter()
            .find(|p| matches!(p.what, Placed::Probe(_)))
    }

    pub fn error_ratio(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.failures as f64 / self.samples as f64
        }
    }
}

/// The backlog over an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogReport {
    /// The bound recovery waited for.
    pub max: f64,
    /// The highest reading during the episode, if any could be read.
    pub peak: Option<f64>,
}

/// The SLI probe's samples over the whole run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliSeries {
    pub probe: String,
    pub every: Duration,
    pub samples: Vec<SeriesSample>,
}

/// One SLI check.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSample {
    /// When it was sent, since the run's start.
    pub at: Duration,
    pub latency: Duration,
    pub status: Option<u16>,
    /// Why it failed; `None` for a success.
    pub error: Option<String>,
}

/// A fresh run id: 16 hex digits from the standard library's per-process random hash keys,
/// mixed with the clock so two runs of one process differ.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: Duration,
    pub event: String,
    pub detail: String,
}

/// Counts and latency of one probe over the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStats {
    pub name: String,
    pub sli: bool,
    pub every: Duration,
    pub samples: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    pub latency_p50: Duration,
    pub latency_p90: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
    /// How much later than scheduled the checks were sent.
    pub lateness: Lateness,
}

impl RunReport {
    /// The verdict against the scenario's expectation: a run expected to fail passes when
    /// exactly the expected gates failed, and fails otherwise. What exit codes and CI reports
    /// go by.
    pub fn outcome(&self) -> Verdict {
        match (&self.expectation, self.verdict) {
            (Some(e), Verdict::Pass | Verdict::Fail) => {
                if e.met {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                }
            }
            (_, verdict) => verdict,
        }
    }

    /// The first episode: the headline numbers of a run.
    pub fn headline(&self) -> Option<&EpisodeReport> {
        self.episodes.first()
    }
}
