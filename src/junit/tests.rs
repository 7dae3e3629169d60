//! The JUnit file of a repeated run: every case named once, every failure saying what was
//! measured against what limit. The gates are the real ones, judged by `relapse_core::gate`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use quick_xml::events::Event;
use quick_xml::Reader;
use relapse_core::gate::{self, Verdict};
use relapse_core::measure::Episode;
use relapse_core::report::RunReport;
use relapse_core::scenario::Gates;
use tokio::time::Instant;

use super::to_junit;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An episode injected at `at` ms, reverted 3 s later and watched 5 s more, that hurt the SLI
/// (some 401s among the 503s) and was never detected, mitigated or recovered.
fn hurt(base: Instant, at: u64, fault: &str) -> Episode {
    Episode {
        faults: vec![fault.into()],
        injected: base + ms(at),
        reverted: Some(base + ms(at + 3_000)),
        horizon: base + ms(at + 8_000),
        first_failure: Some(base + ms(at + 50)),
        detected: None,
        mitigated: None,
        recovered: None,
        samples: 40,
        failures: 30,
        failure_statuses: BTreeMap::from([(503, 28), (401, 2)]),
        failure_errors: BTreeMap::new(),
        backlog: None,
    }
}

/// Every gate kind, each bound to fail on `hurt` episodes; without `detect_within` the
/// `detected` gate stands in for it.
fn gates(detect_within: bool) -> Gates {
    Gates {
        detect_within: detect_within.then(|| ms(1_000)),
        mitigate_within: Some(ms(500)),
        recover_within: Some(ms(2_000)),
        max_error_ratio: Some(0.1),
        allowed_error_statuses: Some(vec![503]),
        ..Gates::default()
    }
}

fn run(gates: Gates) -> RunReport {
    let base = Instant::now();
    let episodes = [hurt(base, 1_000, "hang"), hurt(base, 20_000, "hang-again")];
    let judged = gate::judge(&episodes, &[gates.clone(), gates], true, &[]);
    RunReport {
        scenario: "flg-healthcheck-hang".into(),
        file: None,
        mitigation: None,
        verdict: gate::verdict(&judged),
        expectation: None,
        reason: None,
        started: SystemTime::UNIX_EPOCH,
        duration: ms(30_000),
        resolution: ms(50),
        episodes: Vec::new(),
        gates: judged,
        timeline: Vec::new(),
        probes: Vec::new(),
        run_dir: None,
        processes: Vec::new(),
        floods: Vec::new(),
        run_id: "5eed000000000002".into(),
        steady_window: ms(1_000),
        steady_confirmed_at: Some(ms(1_500)),
        sli: None,
    }
}

/// Each test case's name and, if it failed, its failure message.
fn cases(xml: &str) -> Vec<(String, Option<String>)> {
    let mut reader = Reader::from_str(xml);
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let attribute = |key: &str| {
                    e.try_get_attribute(key)
                        .expect("a well-formed attribute")
                        .map(|a| {
                            a.normalized_value(quick_xml::XmlVersion::Explicit1_0)
                                .expect("escaped")
                                .into_owned()
                        })
                };
                match e.name().as_ref() {
                    b"testcase" => cases.push((attribute("name").expect("a name"), None)),
                    b"failure" => {
                        cases.last_mut().expect("inside a test case").1 = attribute("message")
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    cases
}

#[test]
fn three_runs_of_two_episodes_name_every_case_once_and_say_measured_against_limit() {
    let reports = [run(gates(true)), run(gates(true)), run(gates(false))];
    assert!(reports.iter().all(|r| r.verdict == Verdict::Fail));
    let xml = to_junit(&reports, None).unwrap();
    let cases = cases(&xml);

    // 5 gates × 2 episodes × 3 runs, no name twice.
    assert_eq!(cases.len(), 30, "{xml}");
    let names: BTreeSet<&str> = cases.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "duplicate names in\n{xml}");
    for name in [
        "flg-healthcheck-hang #1 · detect_within[1]",
        "flg-healthcheck-hang #2 · recover_within[1]",
        "flg-healthcheck-hang #2 · recover_within[2]",
        "flg-healthcheck-hang #3 · detected[2]",
        "flg-healthcheck-hang #3 · allowed_error_statuses[1]",
    ] {
        assert!(names.contains(name), "no case {name:?} in {names:?}");
    }

    // Every gate failed, and each message gives the measurement and the limit.
    let messages: BTreeSet<&str> = cases
        .iter()
        .map(|(name, message)| {
            message
                .as_deref()
                .unwrap_or_else(|| panic!("{name} has no failure message"))
        })
        .collect();
    assert_eq!(
        messages,
        BTreeSet::from([
            "not detected in the 8s observed after t_inject (limit 1s)",
            "not detected in the 8s observed after t_inject; required: a detection, as detection sources are declared",
            "steady state did not return in the 3s the fault was active (limit 500ms)",
            "steady state did not return in the 5s observed after the revert (limit 2s)",
            "error ratio 0.750 (30 of 40 SLI samples) against a limit of 0.100",
            "statuses outside [503] during impact: 401 ×2",
        ])
    );
}

#[test]
fn a_single_run_is_named_by_its_scenario_alone_and_other_scenarios_count_apart() {
    let mut other = run(Gates::default());
    other.scenario = "kolab".into();
    let reports = [run(Gates::default()), other.clone(), run(Gates::default())];
    let xml = to_junit(&reports, None).unwrap();
    // The second flg run is the third report, but its scenario's run #2; kolab ran once.
    assert!(
        xml.contains("testsuite name=\"flg-healthcheck-hang #2\""),
        "{xml}"
    );
    assert!(xml.contains("testsuite name=\"kolab\""), "{xml}");
    assert!(!xml.contains("#3"), "{xml}");
}

/// The baseline comparison's suites.
mod comparison {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use relapse_core::compare::*;

    fn series(recover_ms: u64, runs: usize) -> Series {
        let mut times = BTreeMap::new();
        times.insert(
            Measure::Recover,
            TimeSamples {
                resolution: Duration::from_millis(50),
                samples: (0..runs as u64)
                    .map(|i| Some(Duration::from_millis(recover_ms + i * 10)))
                    .collect(),
            },
        );
        crate::export::fixtures::freeze_series(times, runs)
    }

    fn junit(baseline: &Series, new: &Series) -> String {
        let comparison = Comparison {
            baseline: "release-1".into(),
            settings: Settings::default(),
            scenarios: vec![compare_series(baseline, new, Settings::default())],
        };
        super::super::to_junit(&[], Some(&comparison)).unwrap()
    }

    #[test]
    fn a_regression_is_a_failed_case_of_the_baseline_suite() {
        let xml = junit(&series(1000, 5), &series(1500, 5));
        assert!(
            xml.contains(r#"<testsuite name="baseline release-1: freeze""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"name="regression:time_to_recover[1]""#),
            "{xml}"
        );
        assert!(xml.contains(r#"type="regression""#), "{xml}");
        let same = junit(&series(1000, 5), &series(1000, 5));
        assert!(!same.contains("<failure"), "{same}");
    }

    #[test]
    fn a_comparison_that_cannot_decide_is_an_error_case() {
        let xml = junit(&series(1000, 5), &series(1000, 3));
        assert!(xml.contains(r#"name="comparison""#), "{xml}");
        assert!(xml.contains("at least 5 on each side are needed"), "{xml}");
    }
}
