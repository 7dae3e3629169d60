//! JUnit XML: one test suite per run, one test case per gate, so a CI system shows which gate
//! failed and by how much. In a scenario that expects its gates to fail, a gate that failed as
//! expected is a passed case, and an expectation not met is a failed case of its own. A
//! comparison with a baseline adds one suite per scenario, `baseline NAME: SCENARIO`, with one
//! case per judged time (`regression:time_to_detect[1]`) and, if it could not decide, an error
//! case `comparison` giving why.
//!
//! Every case's name is unique in the file: CI readers key cases by name (some by class name
//! and name) and keep only the first of duplicates, so with `--repeat` the second run's
//! `recover_within` would vanish. A case is named by its suite — the scenario, and with more
//! than one run of it the run's number among them — and its gate, whose name carries the
//! episode when a run has several: `flg-healthcheck-hang #2 · recover_within[1]`.

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
        let name = suite_name(reports, i);
        let case_name = |case: &str| format!("{name} · {case}");
        let mut suite = TestSuite::new(name.clone());
        if matches!(r.verdict, Verdict::Inconclusive | Verdict::Aborted) {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(format!(
                "{}: {}",
                r.verdict.as_str(),
                r.reason.as_deref().unwrap_or("no reason recorded")
            ));
            status.set_type(r.verdict.as_str());
            let mut case = TestCase::new(case_name("run"), status);
            case.set_classname(r.scenario.clone());
            case.set_time(r.duration);
            suite.add_test_case(case);
        }
        if let Some(expectation) = r.expectation.as_ref().filter(|e| !e.met) {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(expectation.message.clone());
            status.set_type("expectation");
            let mut case = TestCase::new(case_name("expect"), status);
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
            let mut case = TestCase::new(case_name(&g.name), status);
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

/// The scenario's name, and with more than one run of it in `reports` the number of run
/// `index` among them (from 1, as the Pushgateway's `run` label counts).
fn suite_name(reports: &[RunReport], index: usize) -> String {
    let scenario = &reports[index].scenario;
    let runs = reports.iter().filter(|r| &r.scenario == scenario).count();
    if runs > 1 {
        let number = reports[..index]
            .iter()
            .filter(|r| &r.scenario == scenario)
            .count()
            + 1;
        format!("{scenario} #{number}")
    } else {
        scenario.clone()
    }
}

#[cfg(test)]
mod tests;
