//! JUnit XML: one test suite per run, one test case per gate, so a CI system shows which gate
//! failed and by how much. In a scenario that expects its gates to fail, a gate that failed as
//! expected is a passed case, and an expectation not met is a failed case of its own. A
//! comparison with a baseline adds one suite per scenario, `baseline NAME: SCENARIO`, with one
//! case per judged time (`regression:time_to_detect[1]`) and, if it could not decide, an error
//! case `comparison` giving why.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use relapse_core::compare::Comparison;
use relapse_core::gate::Verdict;
use relapse_core::report::RunReport;

pub fn to_junit(
    reports: &[RunReport],
    comparison: Option<&Comparison>,
) -> Result<String, quick_junit::SerializeError> {
    let mut junit = Report::new("relapse");
    for (i, r) in reports.iter().enumerate() {
        let name = if reports.iter().filter(|o| o.scenario == r.scenario).count() > 1 {
            format!("{} #{}", r.scenario, i + 1)
        } else {
            r.scenario.clone()
        };
        let mut suite = TestSuite::new(name);
        if matches!(r.verdict, Verdict::Inconclusive | Verdict::Aborted) {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(format!(
                "{}: {}",
                r.verdict.as_str(),
                r.reason.as_deref().unwrap_or("no reason recorded")
            ));
            status.set_type(r.verdict.as_str());
            let mut case = TestCase::new("run", status);
            case.set_classname(r.scenario.clone());
            case.set_time(r.duration);
            suite.add_test_case(case);
        }
        if let Some(expectation) = r.expectation.as_ref().filter(|e| !e.met) {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(expectation.message.clone());
            status.set_type("expectation");
            let mut case = TestCase::new("expect", status);
            case.set_classname(r.scenario.clone());
            suite.add_test_case(case);
        }
        for g in &r.gates {
            let expected = r
                .expectation
                .as_ref()
                .is_some_and(|e| e.failed_as_expected.contains(&g.name));
            let status = if g.passed || expected {
                TestCaseStatus::success()
            } else {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(g.message.clone());
                status.set_type("gate");
                status
            };
            let mut case = TestCase::new(g.name.clone(), status);
            case.set_classname(r.scenario.clone());
            if expected {
                case.set_system_out(format!("failed as expected: {}", g.message));
            } else {
                case.set_system_out(g.message.clone());
            }
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    for c in comparison
        .iter()
        .flat_map(|c| c.scenarios.iter().map(move |s| (c, s)))
    {
        let (comparison, scenario) = c;
        let mut suite = TestSuite::new(format!(
            "baseline {}: {}",
            comparison.baseline, scenario.scenario
        ));
        let reasons = scenario.inconclusive_reasons();
        if !reasons.is_empty() {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(format!("inconclusive: {}", reasons.join("; ")));
            status.set_type("inconclusive");
            let mut case = TestCase::new("comparison", status);
            case.set_classname(scenario.scenario.clone());
            suite.add_test_case(case);
        }
        for g in scenario.gates() {
            let status = if g.passed {
                TestCaseStatus::success()
            } else {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(g.message.clone());
                status.set_type("regression");
                status
            };
            let mut case = TestCase::new(g.name.clone(), status);
            case.set_classname(scenario.scenario.clone());
            case.set_system_out(g.message.clone());
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    junit.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

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

    fn junit(baseline: &Series, new: &Series) -> String {
        let comparison = Comparison {
            baseline: "release-1".into(),
            settings: Settings::default(),
            scenarios: vec![compare_series(baseline, new, Settings::default())],
        };
        super::to_junit(&[], Some(&comparison)).unwrap()
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
