//! The statistics on synthetic samples with known answers.

use super::*;

const PROBE: Duration = Duration::from_millis(50);

/// `n` samples around `center` ms, spread evenly over ±`spread` ms (a deterministic jitter, so
/// the known answer does not hang on a generator).
fn series(n: usize, center: f64, spread: f64) -> TimeSamples {
    let samples = (0..n)
        .map(|i| {
            // A permutation of 0..n, so the order is not sorted.
            let k = (i * 7 + 3) % n;
            let offset = if n > 1 {
                -spread + 2.0 * spread * k as f64 / (n - 1) as f64
            } else {
                0.0
            };
            Some(Duration::from_secs_f64((center + offset) / 1000.0))
        })
        .collect();
    TimeSamples {
        resolution: PROBE,
        samples,
    }
}

fn shifted(s: &TimeSamples, by_ms: f64) -> TimeSamples {
    TimeSamples {
        resolution: s.resolution,
        samples: s
            .samples
            .iter()
            .map(|d| d.map(|d| Duration::from_secs_f64(d.as_secs_f64() + by_ms / 1000.0)))
            .collect(),
    }
}

fn judge(b: &TimeSamples, n: &TimeSamples) -> TimeComparison {
    compare_time(Measure::Recover, b, n, Settings::default())
}

#[test]
fn identical_series_are_no_change() {
    for n in [5, 20, 100] {
        let b = series(n, 1000.0, 60.0);
        let c = judge(&b, &b.clone());
        assert_eq!(c.change, Change::NoChange, "n = {n}: {c:?}");
        let i = c.interval.unwrap();
        assert!(i.lower <= 0.0 && i.upper >= 0.0, "{i:?}");
        assert_eq!(c.baseline_median, c.new_median);
    }
}

#[test]
fn a_shift_of_three_probe_intervals_is_a_regression() {
    for n in [5, 20, 100] {
        let b = series(n, 1000.0, 40.0);
        let c = judge(&b, &shifted(&b, 150.0));
        assert_eq!(c.change, Change::Regressed, "n = {n}: {c:?}");
        // The threshold is the probe interval (5 % of 1 s is 50 ms too); the interval holds the
        // true shift.
        assert_eq!(c.threshold, PROBE);
        let i = c.interval.unwrap();
        assert!(
            i.lower > 0.05 && i.lower <= 0.150 && i.upper >= 0.150,
            "{i:?}"
        );
    }
}

#[test]
fn a_shift_under_one_probe_interval_is_no_change_whatever_the_count() {
    // 5 % of 400 ms is 20 ms, under the 50 ms probe interval, which is then the threshold.
    for n in [5, 20, 100] {
        let b = series(n, 400.0, 30.0);
        let c = judge(&b, &shifted(&b, 45.0));
        assert_eq!(c.threshold, PROBE);
        assert_eq!(c.change, Change::NoChange, "n = {n}: {c:?}");
        // Many samples make the interval narrow around the 45 ms shift, above zero, but it
        // never clears the threshold: a real change smaller than the resolution is no change.
        let i = c.interval.unwrap();
        assert!(i.lower <= 0.045 && i.upper >= 0.045, "{i:?}");
        if n == 100 {
            assert!(i.lower > 0.0, "{i:?}");
        }
    }
}

#[test]
fn the_noise_share_is_the_threshold_when_larger_than_the_resolution() {
    // 5 % of 10 s is 500 ms: a 400 ms shift is noise, a 1.5 s one is not.
    let b = series(20, 10_000.0, 100.0);
    let c = judge(&b, &shifted(&b, 400.0));
    assert_eq!(c.threshold, Duration::from_millis(500));
    assert_eq!(c.change, Change::NoChange);
    assert_eq!(judge(&b, &shifted(&b, 1500.0)).change, Change::Regressed);
}

#[test]
fn a_big_improvement_is_improved() {
    let b = series(8, 2000.0, 100.0);
    let c = judge(&b, &shifted(&b, -1000.0));
    assert_eq!(c.change, Change::Improved, "{c:?}");
    assert!(c.interval.unwrap().upper < -0.05);
}

#[test]
fn too_few_samples_are_inconclusive() {
    let b = series(5, 1000.0, 40.0);
    let c = judge(&b, &shifted(&series(4, 1000.0, 40.0), 500.0));
    assert_eq!(c.change, Change::Inconclusive);
    assert_eq!(c.interval, None);
    assert_eq!(
        c.reason.as_deref(),
        Some("reached in 5 of 5 baseline runs and 4 of 4 new runs; at least 5 on each side are needed")
    );
}

#[test]
fn runs_that_never_reached_a_time_do_not_count_as_samples() {
    let b = series(6, 1000.0, 40.0);
    let mut n = shifted(&b, 500.0);
    n.samples[0] = None;
    n.samples[1] = None;
    let c = judge(&b, &n);
    assert_eq!((c.new_runs, c.new_reached), (6, 4));
    assert_eq!(c.change, Change::Inconclusive);
    // Reached by no run on either side: nothing to compare, and nothing undecided either.
    let never = TimeSamples {
        resolution: PROBE,
        samples: vec![None; 5],
    };
    assert_eq!(judge(&never, &never).change, Change::NotMeasured);
}

#[test]
fn the_seed_makes_intervals_reproducible() {
    let b = series(9, 700.0, 80.0);
    let n = shifted(&series(11, 700.0, 120.0), 30.0);
    let (b, n) = (b.reached(), n.reached());
    let first = stats::median_difference_interval(&b, &n, 0.05, stats::SEED).unwrap();
    let again = stats::median_difference_interval(&b, &n, 0.05, stats::SEED).unwrap();
    assert_eq!(first, again);
    let other = stats::median_difference_interval(&b, &n, 0.05, stats::SEED + 1).unwrap();
    assert_ne!(first, other, "another seed resamples differently");
}

#[test]
fn medians_of_odd_and_even_counts() {
    assert_eq!(stats::median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(stats::median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(stats::median(&[]), None);
}

fn key() -> ComparabilityKey {
    ComparabilityKey {
        relapse_version: "0.1.0".into(),
        scenario: "freeze".into(),
        sli_interval: PROBE,
        detectors: vec![("pager".into(), Duration::ZERO)],
        backlog_interval: None,
        scenario_sha256: "a".repeat(64),
    }
}

fn one_episode(recover: TimeSamples) -> Series {
    let mut times = BTreeMap::new();
    times.insert(Measure::Recover, recover);
    Series {
        key: key(),
        machine: Machine {
            host: "ci".into(),
            cpus: 2,
            kernel: "6.1".into(),
        },
        saved: SystemTime::UNIX_EPOCH,
        runs: 5,
        episodes: vec![EpisodeSeries {
            faults: vec!["freeze".into()],
            times,
        }],
    }
}

#[test]
fn a_regression_is_a_failed_gate_named_by_time_and_episode() {
    let b = one_episode(series(5, 1000.0, 40.0));
    let n = one_episode(shifted(&series(5, 1000.0, 40.0), 300.0));
    let c = compare_series(&b, &n, Settings::default());
    let gates = c.gates();
    assert_eq!(
        gates.len(),
        1,
        "only the time measured is a gate: {gates:?}"
    );
    assert_eq!(gates[0].name, "regression:time_to_recover[1]");
    assert!(!gates[0].passed);
    assert_eq!(c.verdict(), Verdict::Fail);
    assert_eq!(
        compare_series(&b, &b, Settings::default()).verdict(),
        Verdict::Pass
    );
}

#[test]
fn a_key_that_differs_refuses_and_says_which_part() {
    let b = one_episode(series(5, 1000.0, 40.0));
    let mut n = b.clone();
    n.key.relapse_version = "0.2.0".into();
    n.key.sli_interval = Duration::from_millis(100);
    let c = compare_series(&b, &n, Settings::default());
    assert_eq!(
        c.refusals,
        [
            "relapse version differs: baseline 0.1.0, now 0.2.0",
            "SLI probe interval differs: baseline 50ms, now 100ms"
        ]
    );
    assert!(c.episodes.is_empty() && c.gates().is_empty());
    assert_eq!(c.verdict(), Verdict::Inconclusive);
}

#[test]
fn a_changed_scenario_file_is_a_note_not_a_refusal() {
    let b = one_episode(series(5, 1000.0, 40.0));
    let mut n = b.clone();
    n.key.scenario_sha256 = "b".repeat(64);
    let c = compare_series(&b, &n, Settings::default());
    assert!(c.refusals.is_empty());
    assert_eq!(
        c.notes,
        ["the scenario file changed since the baseline (sha256 aaaaaaaaaaaa → bbbbbbbbbbbb)"]
    );
    assert_eq!(c.verdict(), Verdict::Pass);
}

#[test]
fn an_episode_in_one_series_only_is_inconclusive() {
    let b = one_episode(series(5, 1000.0, 40.0));
    let mut n = b.clone();
    n.episodes.push(n.episodes[0].clone());
    let c = compare_series(&b, &n, Settings::default());
    assert_eq!(
        c.inconclusive_reasons(),
        ["episode 2 is only in the new runs"]
    );
    assert_eq!(c.verdict(), Verdict::Inconclusive);
}

#[test]
fn the_json_report_has_the_comparison_beside_the_runs() {
    use crate::report::file::ReportFile;
    let b = one_episode(series(5, 1000.0, 40.0));
    let n = one_episode(shifted(&series(5, 1000.0, 40.0), 300.0));
    let comparison = Comparison {
        baseline: "release-1".into(),
        settings: Settings::default(),
        scenarios: vec![compare_series(&b, &n, Settings::default())],
    };
    let json = serde_json::to_value(ReportFile::with_comparison(&[], Some(&comparison))).unwrap();
    let c = &json["comparison"];
    assert_eq!(c["verdict"], "fail");
    assert_eq!(c["resamples"], RESAMPLES_IN_DOCS);
    assert_eq!(c["seed"], stats::SEED);
    let time = &c["scenarios"][0]["episodes"][0]["times"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["time"] == "time_to_recover")
        .unwrap()
        .clone();
    assert_eq!(time["verdict"], "regressed");
    assert_eq!(time["baseline_median_ms"], 1000.0);
    assert_eq!(time["new_median_ms"], 1300.0);
    assert_eq!(time["threshold_ms"], 50.0);
    assert!(time["difference_ms"]["lower"].as_f64().unwrap() > 50.0);
    assert_eq!(
        c["scenarios"][0]["gates"][0]["name"],
        "regression:time_to_recover[1]"
    );
    // Without a comparison the section is absent, not null.
    let plain = serde_json::to_value(ReportFile::new(&[])).unwrap();
    assert!(plain.get("comparison").is_none(), "{plain}");
}

/// docs/baselines.md gives this number.
const RESAMPLES_IN_DOCS: usize = 10_000;
