//! Comparing a series of runs with a stored baseline: per scenario, per episode (by index) and
//! per measured time, is the new series slower, faster or the same? Pure: the caller reads the
//! baseline and builds both series; this module only judges them (docs/baselines.md).
//!
//! Each time is judged by a bootstrap interval of the difference of medians (new − baseline)
//! against a noise threshold: the larger of a share of the baseline median and the time's
//! resolution, so a change smaller than one probe interval is never a regression.

pub mod stats;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::gate::{GateResult, Verdict};
use crate::report::{EpisodeReport, RunReport};
use stats::Interval;

/// Fewer samples than this on either side of a time and it is not judged (inconclusive): the
/// bootstrap interval of a median from 4 runs is mostly the spread of 4 numbers.
pub const MIN_SAMPLES: usize = 5;

/// The measured times a comparison covers, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    Impact,
    Detect,
    Mitigate,
    Serve,
    Drain,
    Recover,
}

impl Measure {
    pub const ALL: [Measure; 6] = [
        Measure::Impact,
        Measure::Detect,
        Measure::Mitigate,
        Measure::Serve,
        Measure::Drain,
        Measure::Recover,
    ];

    /// The name in files and gates: `time_to_recover`.
    pub fn key(self) -> &'static str {
        match self {
            Measure::Impact => "time_to_impact",
            Measure::Detect => "time_to_detect",
            Measure::Mitigate => "time_to_mitigate",
            Measure::Serve => "time_to_serve",
            Measure::Drain => "time_to_drain",
            Measure::Recover => "time_to_recover",
        }
    }

    pub fn from_key(key: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.key() == key)
    }

    /// The name for people: `time to recover`.
    pub fn label(self) -> &'static str {
        match self {
            Measure::Impact => "time to impact",
            Measure::Detect => "time to detect",
            Measure::Mitigate => "time to mitigate",
            Measure::Serve => "time to serve",
            Measure::Drain => "time to drain",
            Measure::Recover => "time to recover",
        }
    }

    pub fn of(self, e: &EpisodeReport) -> Option<Duration> {
        match self {
            Measure::Impact => e.time_to_impact,
            Measure::Detect => e.time_to_detect,
            Measure::Mitigate => e.time_to_mitigate,
            Measure::Serve => e.time_to_serve,
            Measure::Drain => e.time_to_drain,
            Measure::Recover => e.time_to_recover,
        }
    }
}

/// One time of one episode over a series of runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSamples {
    /// How precise each sample is: the SLI probe interval for impact, mitigate and serve; the
    /// detecting source's resolution for detect; the backlog gauge's interval for drain; the
    /// larger of the SLI's and the gauge's for recover.
    pub resolution: Duration,
    /// One per completed run; `None`: the run never reached this time.
    pub samples: Vec<Option<Duration>>,
}

impl TimeSamples {
    fn reached(&self) -> Vec<f64> {
        self.samples
            .iter()
            .flatten()
            .map(Duration::as_secs_f64)
            .collect()
    }
}

/// One episode over a series of runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeSeries {
    pub faults: Vec<String>,
    pub times: BTreeMap<Measure, TimeSamples>,
}

/// What must match for two series to be compared at all (the scenario hash only gives a note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComparabilityKey {
    pub relapse_version: String,
    pub scenario: String,
    pub sli_interval: Duration,
    /// Each detection source's name and resolution (its interval; zero when pushed).
    pub detectors: Vec<(String, Duration)>,
    pub backlog_interval: Option<Duration>,
    /// SHA-256 of the scenario file, hex.
    pub scenario_sha256: String,
}

/// The machine a series ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub host: String,
    pub cpus: usize,
    pub kernel: String,
}

/// A series of runs of one scenario: a stored baseline, or the runs just made.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub key: ComparabilityKey,
    pub machine: Machine,
    /// When the series was made (a baseline: when it was saved).
    pub saved: SystemTime,
    /// How many completed runs the samples come from.
    pub runs: usize,
    pub episodes: Vec<EpisodeSeries>,
}

/// The episodes of a scenario's completed runs (pass or fail; inconclusive and aborted runs
/// measured nothing comparable), by index. A run with fewer episodes counts as not reaching the
/// missing episodes' times.
pub fn episodes_of(
    reports: &[&RunReport],
    backlog_interval: Option<Duration>,
) -> (usize, Vec<EpisodeSeries>) {
    let completed: Vec<&RunReport> = reports
        .iter()
        .copied()
        .filter(|r| matches!(r.verdict, Verdict::Pass | Verdict::Fail))
        .collect();
    let sli = completed
        .iter()
        .map(|r| r.resolution)
        .max()
        .unwrap_or_default();
    let backlog = backlog_interval.unwrap_or_default();
    let count = completed
        .iter()
        .map(|r| r.episodes.len())
        .max()
        .unwrap_or(0);
    let episodes = (0..count)
        .map(|index| {
            let of_index: Vec<Option<&EpisodeReport>> =
                completed.iter().map(|r| r.episodes.get(index)).collect();
            let detect = of_index
                .iter()
                .flatten()
                .filter_map(|e| e.detect_resolution)
                .max()
                .unwrap_or_default();
            let times = Measure::ALL
                .into_iter()
                .map(|measure| {
                    let resolution = match measure {
                        Measure::Detect => detect,
                        Measure::Drain => backlog,
                        Measure::Recover => sli.max(backlog),
                        Measure::Impact | Measure::Mitigate | Measure::Serve => sli,
                    };
                    let samples = of_index
                        .iter()
                        .map(|e| e.and_then(|e| measure.of(e)))
                        .collect();
                    (
                        measure,
                        TimeSamples {
                            resolution,
                            samples,
                        },
                    )
                })
                .collect();
            let faults = of_index
                .iter()
                .flatten()
                .next()
                .map(|e| e.faults.clone())
                .unwrap_or_default();
            EpisodeSeries { faults, times }
        })
        .collect();
    (completed.len(), episodes)
}

/// How a comparison is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The share of the baseline median below which a change is noise (`--noise`, 0.05).
    pub noise: f64,
    /// One minus the interval's confidence (`--significance`, 0.05: a 95 % interval).
    pub significance: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            noise: 0.05,
            significance: 0.05,
        }
    }
}

/// What became of one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The whole interval is below −threshold.
    Improved,
    /// The interval reaches into [−threshold, +threshold].
    NoChange,
    /// The whole interval is above +threshold.
    Regressed,
    /// Too few samples on a side to judge.
    Inconclusive,
    /// Reached in no run on either side (no backlog, nothing mitigated): nothing to compare.
    NotMeasured,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Improved => "improved",
            Change::NoChange => "no change",
            Change::Regressed => "regressed",
            Change::Inconclusive => "inconclusive",
            Change::NotMeasured => "not measured",
        }
    }
}

/// One time of one episode, compared.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeComparison {
    pub measure: Measure,
    pub baseline_runs: usize,
    pub baseline_reached: usize,
    pub new_runs: usize,
    pub new_reached: usize,
    pub baseline_median: Option<Duration>,
    pub new_median: Option<Duration>,
    /// The interval of median(new) − median(baseline), signed seconds; `None` when not judged.
    pub interval: Option<Interval>,
    pub threshold: Duration,
    pub change: Change,
    /// Why it was not judged.
    pub reason: Option<String>,
}

/// Compares one time: the samples of the runs that reached it on each side.
pub fn compare_time(
    measure: Measure,
    baseline: &TimeSamples,
    new: &TimeSamples,
    settings: Settings,
) -> TimeComparison {
    let (b, n) = (baseline.reached(), new.reached());
    let baseline_median = stats::median(&b);
    let resolution = baseline.resolution.max(new.resolution);
    let threshold = baseline_median
        .map(|m| Duration::from_secs_f64((m * settings.noise).max(0.0)))
        .unwrap_or_default()
        .max(resolution);
    let mut comparison = TimeComparison {
        measure,
        baseline_runs: baseline.samples.len(),
        baseline_reached: b.len(),
        new_runs: new.samples.len(),
        new_reached: n.len(),
        baseline_median: baseline_median.map(Duration::from_secs_f64),
        new_median: stats::median(&n).map(Duration::from_secs_f64),
        interval: None,
        threshold,
        change: Change::NotMeasured,
        reason: None,
    };
    if b.is_empty() && n.is_empty() {
        return comparison;
    }
    if b.len() < MIN_SAMPLES || n.len() < MIN_SAMPLES {
        comparison.change = Change::Inconclusive;
        comparison.reason = Some(format!(
            "reached in {} of {} baseline run{} and {} of {} new run{}; at least {MIN_SAMPLES} on each side are needed",
            b.len(),
            baseline.samples.len(),
            plural(baseline.samples.len()),
            n.len(),
            new.samples.len(),
            plural(new.samples.len()),
        ));
        return comparison;
    }
    let interval = stats::median_difference_interval(&b, &n, settings.significance, stats::SEED)
        .expect("both sides have samples");
    let limit = threshold.as_secs_f64();
    comparison.change = if interval.lower > limit {
        Change::Regressed
    } else if interval.upper < -limit {
        Change::Improved
    } else {
        Change::NoChange
    };
    comparison.interval = Some(interval);
    comparison
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One episode, compared.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeComparison {
    /// From 1.
    pub number: usize,
    pub faults: Vec<String>,
    pub times: Vec<TimeComparison>,
    /// Why the episode was not compared (it is in one series only).
    pub reason: Option<String>,
}

/// One scenario's series against its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioComparison {
    pub scenario: String,
    pub baseline_machine: Machine,
    pub baseline_saved: SystemTime,
    pub baseline_runs: usize,
    pub new_runs: usize,
    /// Which parts of the comparability key differ; non-empty: nothing was compared.
    pub refusals: Vec<String>,
    /// Differences that do not prevent comparing: the scenario file changed, another machine.
    pub notes: Vec<String>,
    pub episodes: Vec<EpisodeComparison>,
}

fn key_differences(baseline: &ComparabilityKey, new: &ComparabilityKey) -> Vec<String> {
    let mut differ = Vec::new();
    if baseline.relapse_version != new.relapse_version {
        differ.push(format!(
            "relapse version differs: baseline {}, now {}",
            baseline.relapse_version, new.relapse_version
        ));
    }
    if baseline.scenario != new.scenario {
        differ.push(format!(
            "scenario name differs: baseline {:?}, now {:?}",
            baseline.scenario, new.scenario
        ));
    }
    if baseline.sli_interval != new.sli_interval {
        differ.push(format!(
            "SLI probe interval differs: baseline {:?}, now {:?}",
            baseline.sli_interval, new.sli_interval
        ));
    }
    if baseline.detectors != new.detectors {
        let show = |d: &[(String, Duration)]| {
            let parts: Vec<String> = d.iter().map(|(name, r)| format!("{name} {r:?}")).collect();
            format!("[{}]", parts.join(", "))
        };
        differ.push(format!(
            "detection sources or their resolutions differ: baseline {}, now {}",
            show(&baseline.detectors),
            show(&new.detectors)
        ));
    }
    if baseline.backlog_interval != new.backlog_interval {
        differ.push(format!(
            "backlog gauge interval differs: baseline {:?}, now {:?}",
            baseline.backlog_interval, new.backlog_interval
        ));
    }
    differ
}

/// Compares a new series with its baseline: refused (inconclusive) when the comparability key
/// differs, else each episode by index and each time.
pub fn compare_series(baseline: &Series, new: &Series, settings: Settings) -> ScenarioComparison {
    let refusals = key_differences(&baseline.key, &new.key);
    let mut notes = Vec::new();
    if baseline.key.scenario_sha256 != new.key.scenario_sha256 {
        notes.push(format!(
            "the scenario file changed since the baseline (sha256 {} → {})",
            short(&baseline.key.scenario_sha256),
            short(&new.key.scenario_sha256)
        ));
    }
    if baseline.machine != new.machine {
        let m = |m: &Machine| format!("{} ({} CPUs, kernel {})", m.host, m.cpus, m.kernel);
        notes.push(format!(
            "the baseline ran on {}, these runs on {}",
            m(&baseline.machine),
            m(&new.machine)
        ));
    }
    let episodes = if refusals.is_empty() {
        let count = baseline.episodes.len().max(new.episodes.len());
        (0..count)
            .map(|i| compare_episode(i, baseline.episodes.get(i), new.episodes.get(i), settings))
            .collect()
    } else {
        Vec::new()
    };
    ScenarioComparison {
        scenario: new.key.scenario.clone(),
        baseline_machine: baseline.machine.clone(),
        baseline_saved: baseline.saved,
        baseline_runs: baseline.runs,
        new_runs: new.runs,
        refusals,
        notes,
        episodes,
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn compare_episode(
    index: usize,
    baseline: Option<&EpisodeSeries>,
    new: Option<&EpisodeSeries>,
    settings: Settings,
) -> EpisodeComparison {
    let number = index + 1;
    let (b, n) = match (baseline, new) {
        (Some(b), Some(n)) => (b, n),
        (one, _) => {
            let side = if one.is_some() {
                "the baseline"
            } else {
                "the new runs"
            };
            return EpisodeComparison {
                number,
                faults: baseline
                    .or(new)
                    .map(|e| e.faults.clone())
                    .unwrap_or_default(),
                times: Vec::new(),
                reason: Some(format!("episode {number} is only in {side}")),
            };
        }
    };
    let empty = TimeSamples {
        resolution: Duration::ZERO,
        samples: Vec::new(),
    };
    let times = Measure::ALL
        .into_iter()
        .map(|m| {
            let side =
                |e: &EpisodeSeries| e.times.get(&m).cloned().unwrap_or_else(|| empty.clone());
            compare_time(m, &side(b), &side(n), settings)
        })
        .collect();
    EpisodeComparison {
        number,
        faults: n.faults.clone(),
        times,
        reason: None,
    }
}

impl ScenarioComparison {
    /// One gate per judged time, `regression:time_to_detect[1]` (always with the episode
    /// number): failed when the time regressed.
    pub fn gates(&self) -> Vec<GateResult> {
        self.episodes
            .iter()
            .flat_map(|e| e.times.iter().map(move |t| (e.number, t)))
            .filter(|(_, t)| {
                matches!(
                    t.change,
                    Change::Improved | Change::NoChange | Change::Regressed
                )
            })
            .map(|(number, t)| GateResult {
                name: format!("regression:{}[{number}]", t.measure.key()),
                limit: Some(t.threshold),
                measured: None,
                passed: t.change != Change::Regressed,
                message: describe(t),
            })
            .collect()
    }

    /// Why the comparison could not decide, one line each: the key's differences, episodes in
    /// one series only, times with too few samples.
    pub fn inconclusive_reasons(&self) -> Vec<String> {
        let mut reasons = self.refusals.clone();
        for e in &self.episodes {
            reasons.extend(e.reason.clone());
            for t in e.times.iter().filter(|t| t.change == Change::Inconclusive) {
                reasons.push(format!(
                    "{}[{}]: {}",
                    t.measure.key(),
                    e.number,
                    t.reason.as_deref().unwrap_or("not judged")
                ));
            }
        }
        reasons
    }

    /// Fail if any time regressed, else inconclusive if anything could not be decided, else pass.
    pub fn verdict(&self) -> Verdict {
        if self.gates().iter().any(|g| !g.passed) {
            Verdict::Fail
        } else if !self.inconclusive_reasons().is_empty() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }
}

/// "median 612ms → 915ms, difference +303ms (95% interval +290ms … +310ms), threshold 100ms: regressed".
pub fn describe(t: &TimeComparison) -> String {
    let ms = |d: Option<Duration>| {
        d.map_or("—".to_string(), |d| {
            format!("{:.1}ms", d.as_secs_f64() * 1000.0)
        })
    };
    let signed = |s: f64| format!("{:+.1}ms", s * 1000.0);
    let interval = t.interval.map_or("—".to_string(), |i| {
        format!("{} … {}", signed(i.lower), signed(i.upper))
    });
    format!(
        "median {} → {}, interval of the difference {}, threshold ±{}: {}",
        ms(t.baseline_median),
        ms(t.new_median),
        interval,
        ms(Some(t.threshold)),
        t.change.as_str()
    )
}

/// The comparison of a `relapse run` with a named baseline: one entry per scenario run.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// As given: a name under the state directory, or a path.
    pub baseline: String,
    pub settings: Settings,
    pub scenarios: Vec<ScenarioComparison>,
}

impl Comparison {
    pub fn verdict(&self) -> Verdict {
        let verdicts: Vec<Verdict> = self
            .scenarios
            .iter()
            .map(ScenarioComparison::verdict)
            .collect();
        if verdicts.contains(&Verdict::Fail) {
            Verdict::Fail
        } else if verdicts.contains(&Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }
}

#[cfg(test)]
mod tests;
