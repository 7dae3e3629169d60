//! Baseline files: the raw samples of a series of runs, with what makes two series comparable
//! (docs/baselines.md). `relapse run --save-baseline NAME` writes one per scenario,
//! `<state>/baselines/NAME/<scenario>.json` (or the one file given as a path); `--baseline NAME`
//! reads them back for [`relapse_core::compare`]. Nothing here prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use relapse_core::compare::{
    episodes_of, ComparabilityKey, EpisodeSeries, Machine, Measure, Series, TimeSamples,
};
use relapse_core::report::RunReport;
use relapse_core::scenario::Scenario;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of the baseline file format.
pub const BASELINE_VERSION: u32 = 1;

/// Where a baseline lives: a name under the state directory, or one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `<state>/baselines/NAME/`, one file per scenario.
    Named { dir: PathBuf, name: String },
    /// A path given (with a `/` in it, or ending in `.json`): one scenario's baseline.
    File(PathBuf),
}

impl Location {
    /// A NAME that contains `/` or ends in `.json` is a path; any other is a name.
    pub fn parse(arg: &str, state_dir: &Path) -> Location {
        if arg.contains('/') || arg.ends_with(".json") {
            Location::File(PathBuf::from(arg))
        } else {
            Location::Named {
                dir: state_dir.join("baselines").join(arg),
                name: arg.to_string(),
            }
        }
    }

    /// Whether this location holds one scenario only.
    pub fn is_file(&self) -> bool {
        matches!(self, Location::File(_))
    }

    /// The file of `scenario`'s baseline.
    pub fn path_for(&self, scenario: &str) -> PathBuf {
        match self {
            Location::File(path) => path.clone(),
            Location::Named { dir, .. } => dir.join(format!("{}.json", scenario.replace('/', "_"))),
        }
    }

    /// The name recorded in the file and shown in reports.
    pub fn name(&self) -> String {
        match self {
            Location::File(path) => path.display().to_string(),
            Location::Named { name, .. } => name.clone(),
        }
    }
}

/// The comparability key of `scenario`, loaded from `file`, for this relapse.
pub fn key_of(scenario: &Scenario, file: &Path) -> anyhow::Result<ComparabilityKey> {
    let content =
        std::fs::read(file).with_context(|| format!("reading {} to hash it", file.display()))?;
    let hash: String = Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(ComparabilityKey {
        relapse_version: env!("CARGO_PKG_VERSION").to_string(),
        scenario: scenario.name.clone(),
        sli_interval: scenario.probes[scenario.steady_state.probe].every,
        detectors: (scenario.detectors.iter())
            .map(|d| (d.name.clone(), d.kind.resolution()))
            .collect(),
        backlog_interval: scenario.backlog.as_ref().map(|b| b.every),
        scenario_sha256: hash,
    })
}

/// The machine relapse runs on, from /proc (empty strings where it cannot be read).
pub fn this_machine() -> Machine {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    Machine {
        host: read("/proc/sys/kernel/hostname"),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease"),
    }
}

/// The series of `scenario`'s runs among `reports`, made now on this machine.
pub fn series_of(
    scenario: &Scenario,
    file: &Path,
    reports: &[&RunReport],
) -> anyhow::Result<Series> {
    let (runs, episodes) = episodes_of(reports, scenario.backlog.as_ref().map(|b| b.every));
    Ok(Series {
        key: key_of(scenario, file)?,
        machine: this_machine(),
        saved: SystemTime::now(),
        runs,
        episodes,
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct BaselineFile {
    relapse_baseline: u32,
    name: String,
    /// RFC 3339.
    saved: String,
    machine: MachineFile,
    key: KeyFile,
    /// Completed runs (pass or fail) the samples come from.
    runs: usize,
    episodes: Vec<EpisodeFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MachineFile {
    host: String,
    cpus: usize,
    kernel: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    relapse_version: String,
    scenario: String,
    scenario_sha256: String,
    sli_interval_ms: f64,
    detectors: Vec<DetectorKeyFile>,
    backlog_interval_ms: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DetectorKeyFile {
    name: String,
    resolution_ms: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct EpisodeFile {
    faults: Vec<String>,
    /// By `time_to_impact`, `time_to_detect`, … .
    times: BTreeMap<String, TimeFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TimeFile {
    resolution_ms: f64,
    /// One per run, in run order; `null`: that run never reached the time.
    samples_ms: Vec<Option<f64>>,
}

/// Milliseconds with microsecond precision, as the JSON report has them.
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn duration(ms: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        ms.is_finite() && ms >= 0.0,
        "{ms} is not a duration in milliseconds"
    );
    Ok(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// Writes `series` as baseline `name` to `path` (its directories made, the file replaced whole).
pub fn save(path: &Path, name: &str, series: &Series) -> anyhow::Result<()> {
    let file = BaselineFile {
        relapse_baseline: BASELINE_VERSION,
        name: name.to_string(),
        saved: humantime::format_rfc3339_millis(series.saved).to_string(),
        machine: MachineFile {
            host: series.machine.host.clone(),
            cpus: series.machine.cpus,
            kernel: series.machine.kernel.clone(),
        },
        key: KeyFile {
            relapse_version: series.key.relapse_version.clone(),
            scenario: series.key.scenario.clone(),
            scenario_sha256: series.key.scenario_sha256.clone(),
            sli_interval_ms: ms(series.key.sli_interval),
            detectors: (series.key.detectors.iter())
                .map(|(name, r)| DetectorKeyFile {
                    name: name.clone(),
                    resolution_ms: ms(*r),
                })
                .collect(),
            backlog_interval_ms: series.key.backlog_interval.map(ms),
        },
        runs: series.runs,
        episodes: (series.episodes.iter())
            .map(|e| EpisodeFile {
                faults: e.faults.clone(),
                times: (e.times.iter())
                    .map(|(m, t)| {
                        let time = TimeFile {
                            resolution_ms: ms(t.resolution),
                            samples_ms: t.samples.iter().map(|s| s.map(ms)).collect(),
                        };
                        (m.key().to_string(), time)
                    })
                    .collect(),
            })
            .collect(),
    };
    let context = || format!("writing the baseline {}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(context)?;
    }
    let text = serde_json::to_string_pretty(&file).context("serialising the baseline")? + "\n";
    // Written aside and renamed, so a crash mid-write never leaves half a baseline.
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).with_context(context)?;
    std::fs::rename(&partial, path).with_context(context)
}

/// Reads the baseline at `path`.
pub fn load(path: &Path) -> anyhow::Result<Series> {
    let context = || format!("reading the baseline {}", path.display());
    let text = std::fs::read_to_string(path).with_context(context)?;
    let file: BaselineFile = serde_json::from_str(&text).with_context(context)?;
    anyhow::ensure!(
        file.relapse_baseline == BASELINE_VERSION,
        "{}: baseline format {} (this relapse reads {BASELINE_VERSION})",
        path.display(),
        file.relapse_baseline
    );
    let saved = humantime::parse_rfc3339(&file.saved)
        .with_context(|| format!("{}: saved {:?}", path.display(), file.saved))?;
    let detectors = (file.key.detectors.iter())
        .map(|d| Ok((d.name.clone(), duration(d.resolution_ms)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut episodes = Vec::new();
    for e in file.episodes {
        let mut times = BTreeMap::new();
        for (key, t) in e.times {
            let measure = Measure::from_key(&key)
                .with_context(|| format!("{}: unknown time {key:?}", path.display()))?;
            let samples = (t.samples_ms.iter())
                .map(|s| s.map(duration).transpose())
                .collect::<anyhow::Result<_>>()?;
            let resolution = duration(t.resolution_ms)?;
            times.insert(
                measure,
                TimeSamples {
                    resolution,
                    samples,
                },
            );
        }
        episodes.push(EpisodeSeries {
            faults: e.faults,
            times,
        });
    }
    Ok(Series {
        key: ComparabilityKey {
            relapse_version: file.key.relapse_version,
            scenario: file.key.scenario,
            sli_interval: duration(file.key.sli_interval_ms)?,
            detectors,
            backlog_interval: file.key.backlog_interval_ms.map(duration).transpose()?,
            scenario_sha256: file.key.scenario_sha256,
        },
        machine: Machine {
            host: file.machine.host,
            cpus: file.machine.cpus,
            kernel: file.machine.kernel,
        },
        saved,
        runs: file.runs,
        episodes,
    })
}

#[cfg(test)]
mod tests;
