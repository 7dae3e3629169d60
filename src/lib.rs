//! The `relapse` command's library: wiring a scenario to injectors, probes and the demo target,
//! and rendering reports. `main.rs` only parses arguments, calls in here and picks the exit code.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod agent;
pub mod baseline;
pub mod cli;
pub mod export;
pub mod flood_agents;
pub mod harness;
pub mod junit;
pub mod kinds;
pub mod plan;
pub mod reach;
pub mod remote;
pub mod render;
pub mod safety;
pub mod setup;

use relapse_core::compare::Comparison;
use relapse_core::gate::Verdict;
use relapse_core::report::RunReport;

/// Exit codes, as docs/design.md gives them.
pub mod exit {
    pub const PASS: u8 = 0;
    pub const FAIL: u8 = 1;
    pub const INVALID_INPUT: u8 = 2;
    pub const INCONCLUSIVE: u8 = 3;

    // `relapse flood` and `relapse-flood` exit by relapse_flood's codes: they must be these.
    const _: () = {
        use relapse_flood::cli::exit as flood;
        assert!(flood::COMPLETED == PASS);
        assert!(flood::BAD_INPUT == INVALID_INPUT);
        assert!(flood::INTERRUPTED_OR_FAILED == INCONCLUSIVE);
    };
}

/// The exit code for a set of runs, by each run's verdict against its scenario's expectation
/// ([`RunReport::outcome`]): any failed gate, or a run expected to fail that did not fail as
/// expected, gives 1 (a definite finding outranks an unknown), else any inconclusive or aborted
/// run gives 3, else 0. A comparison with a baseline (`--baseline`) counts as one more verdict:
/// a regressed time is a failed gate (1), a comparison that could not decide (too few samples,
/// a key that differs) is inconclusive (3).
pub fn exit_code(reports: &[RunReport], comparison: Option<&Comparison>) -> u8 {
    let verdicts: Vec<Verdict> = (reports.iter().map(RunReport::outcome))
        .chain(comparison.map(Comparison::verdict))
        .collect();
    if verdicts.contains(&Verdict::Fail) {
        exit::FAIL
    } else if (verdicts.iter()).any(|v| matches!(v, Verdict::Inconclusive | Verdict::Aborted)) {
        exit::INCONCLUSIVE
    } else {
        exit::PASS
    }
}

/// The exit code once the metrics push is known: a push that failed turns a passing exit into 3,
/// since a CI gate must not lose its metrics without failing; it never hides a failed gate (1) or
/// an invalid input (2), nor changes a 3.
pub fn exit_code_after_push(code: u8, pushed: bool) -> u8 {
    if !pushed && code == exit::PASS {
        exit::INCONCLUSIVE
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(refusals: &[&str], change: relapse_core::compare::Change) -> Comparison {
        use relapse_core::compare::*;
        use std::time::{Duration, SystemTime};
        let time = TimeComparison {
            measure: Measure::Detect,
            baseline_runs: 5,
            baseline_reached: 5,
            new_runs: 5,
            new_reached: 5,
            baseline_median: Some(Duration::from_millis(300)),
            new_median: Some(Duration::from_millis(600)),
            interval: None,
            threshold: Duration::from_millis(50),
            change,
            reason: None,
        };
        Comparison {
            baseline: "b".into(),
            settings: Settings::default(),
            scenarios: vec![ScenarioComparison {
                scenario: "s".into(),
                baseline_machine: Machine {
                    host: "h".into(),
                    cpus: 1,
                    kernel: "k".into(),
                },
                baseline_saved: SystemTime::UNIX_EPOCH,
                baseline_runs: 5,
                new_runs: 5,
                refusals: refusals.iter().map(|r| r.to_string()).collect(),
                notes: Vec::new(),
                episodes: vec![EpisodeComparison {
                    number: 1,
                    faults: Vec::new(),
                    times: vec![time],
                    reason: None,
                }],
            }],
        }
    }

    #[test]
    fn a_comparison_is_one_more_verdict() {
        use relapse_core::compare::Change;
        // No runs: only the comparison decides.
        assert_eq!(exit_code(&[], None), exit::PASS);
        let same = comparison(&[], Change::NoChange);
        assert_eq!(exit_code(&[], Some(&same)), exit::PASS);
        let regressed = comparison(&[], Change::Regressed);
        assert_eq!(exit_code(&[], Some(&regressed)), exit::FAIL);
        let undecided = comparison(&[], Change::Inconclusive);
        assert_eq!(exit_code(&[], Some(&undecided)), exit::INCONCLUSIVE);
        // A regression outranks an undecided part, as a failed gate outranks an inconclusive run.
        let both = comparison(&["relapse version differs"], Change::Regressed);
        assert_eq!(exit_code(&[], Some(&both)), exit::FAIL);
    }

    #[test]
    fn a_failed_push_turns_only_a_pass_into_3() {
        assert_eq!(exit_code_after_push(exit::PASS, false), exit::INCONCLUSIVE);
        assert_eq!(exit_code_after_push(exit::FAIL, false), exit::FAIL);
        assert_eq!(
            exit_code_after_push(exit::INVALID_INPUT, false),
            exit::INVALID_INPUT
        );
        assert_eq!(
            exit_code_after_push(exit::INCONCLUSIVE, false),
            exit::INCONCLUSIVE
        );
        for code in [
            exit::PASS,
            exit::FAIL,
            exit::INVALID_INPUT,
            exit::INCONCLUSIVE,
        ] {
            assert_eq!(exit_code_after_push(code, true), code);
        }
    }
}
