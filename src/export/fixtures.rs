//! Reports the export tests render: fixed instants and numbers, so the texts are exact.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use relapse_core::gate::{ExpectationOutcome, GateResult, Verdict};
use relapse_core::report::{BacklogReport, EpisodeReport, RunReport};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn gate(name: &str, passed: bool, message: &str) -> GateResult {
    GateResult {
        name: name.into(),
        limit: None,
        measured: None,
        passed,
        message: message.into(),
    }
}

/// An episode that hurt, was detected by a polled log, mitigated and recovered.
pub fn episode(faults: &[&str]) -> EpisodeReport {
    EpisodeReport {
        faults: faults.iter().map(|f| f.to_string()).collect(),
        placements: Vec::new(),
        injected_at: ms(2_000),
        reverted_at: Some(ms(6_000)),
        time_to_impact: Some(Duration::from_micros(42_125)),
        time_to_detect: Some(ms(748)),
        time_to_mitigate: Some(Duration::from_micros(790_001)),
        time_to_recover: Some(ms(89)),
        time_to_serve: Some(ms(89)),
        time_to_drain: None,
        backlog: None,
        mitigated_at: Some(Duration::from_micros(2_790_001)),
        recovered_at: Some(ms(6_089)),
        detected_by: Some("failover-log".into()),
        detect_resolution: Some(ms(50)),
        samples: 80,
        failures: 15,
        failure_statuses: BTreeMap::from([(504, 15)]),
        failure_errors: BTreeMap::new(),
    }
}

/// A run of `scenario` that passed, one episode, started at a fixed wall-clock instant.
pub fn run(scenario: &str) -> RunReport {
    RunReport {
        run_id: "5eed000000000001".into(),
        steady_window: ms(1_000),
        steady_confirmed_at: Some(ms(1_500)),
        sli: None,
        scenario: scenario.into(),
        file: Some(PathBuf::from(format!("scenarios/{scenario}.toml"))),
        mitigation: None,
        verdict: Verdict::Pass,
        expectation: None,
        reason: None,
        started: SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_633_600_250_000),
        duration: Duration::from_micros(14_250_500),
        resolution: ms(50),
        episodes: vec![episode(&["primary-hangs"])],
        gates: vec![gate(
            "recover_within",
            true,
            "time to recover 89ms is within the limit of 5s",
        )],
        timeline: Vec::new(),
        probes: Vec::new(),
        run_dir: None,
        processes: Vec::new(),
        floods: Vec::new(),
    }
}

/// FLG's shape: a failover, then two hangs at once behind a backlog, never mitigated, whose
/// recovery gate failed.
pub fn failover_run() -> RunReport {
    let mut second = episode(&["new-primary-hangs", "old-primary-hangs"]);
    second.time_to_mitigate = None;
    second.mitigated_at = None;
    second.time_to_detect = Some(ms(1_500));
    second.detected_by = Some("pager".into());
    second.detect_resolution = Some(Duration::ZERO);
    second.time_to_serve = Some(ms(34));
    second.time_to_drain = Some(ms(6_085));
    second.time_to_recover = Some(ms(6_085));
    second.backlog = Some(BacklogReport {
        max: 2.0,
        peak: Some(80.0),
    });
    RunReport {
        mitigation: Some("failover".into()),
        verdict: Verdict::Fail,
        episodes: vec![episode(&["primary-hangs"]), second],
        gates: vec![
            gate(
                "detect_within[1]",
                true,
                "time to detect 748ms is within 1s",
            ),
            gate(
                "mitigate_within[1]",
                true,
                "time to mitigate 790ms is within 1s",
            ),
            gate(
                "detect_within[2]",
                true,
                "time to detect 1500ms is within 2s",
            ),
            gate(
                "recover_within[2]",
                false,
                "time to recover 6085ms exceeds 5s",
            ),
        ],
        ..run("flg-healthcheck-hang")
    }
}

/// A run whose gate failed as its scenario expects.
pub fn expected_failure_run() -> RunReport {
    let mut e = episode(&["lock"]);
    e.time_to_detect = None;
    e.detected_by = None;
    e.detect_resolution = None;
    e.time_to_mitigate = None;
    e.mitigated_at = None;
    RunReport {
        verdict: Verdict::Fail,
        expectation: Some(ExpectationOutcome {
            expected: vec!["allowed_error_statuses".into()],
            met: true,
            failed_as_expected: vec!["allowed_error_statuses".into()],
            message: "failed as expected: allowed_error_statuses".into(),
        }),
        episodes: vec![e],
        gates: vec![gate(
            "allowed_error_statuses",
            false,
            "statuses outside [503] during impact: 401 ×30",
        )],
        ..run("kolab-misleading-errors")
    }
}

/// A run where steady state never held: nothing injected, nothing measured.
pub fn inconclusive_run(scenario: &str) -> RunReport {
    RunReport {
        verdict: Verdict::Inconclusive,
        reason: Some("steady state never held: 3 of 10 SLI samples failed".into()),
        episodes: Vec::new(),
        gates: Vec::new(),
        ..run(scenario)
    }
}

/// A baseline series of `runs` runs of a one-fault scenario "freeze" with these times, probed
/// every 50 ms on a 2-core "ci" machine: what the comparison's renderers are tested on.
pub fn freeze_series(
    times: BTreeMap<relapse_core::compare::Measure, relapse_core::compare::TimeSamples>,
    runs: usize,
) -> relapse_core::compare::Series {
    use relapse_core::compare::{ComparabilityKey, EpisodeSeries, Machine, Series};
    Series {
        key: ComparabilityKey {
            relapse_version: "0.1.0".into(),
            scenario: "freeze".into(),
            sli_interval: Duration::from_millis(50),
            detectors: Vec::new(),
            backlog_interval: None,
            scenario_sha256: String::new(),
        },
        machine: Machine {
            host: "ci".into(),
            cpus: 2,
            kernel: "6.1".into(),
        },
        saved: SystemTime::UNIX_EPOCH,
        runs,
        episodes: vec![EpisodeSeries {
            faults: vec!["freeze".into()],
            times,
        }],
    }
}
