//! The `relapse` command's library: wiring a scenario to injectors, probes and the demo target,
//! and rendering reports. `main.rs` only parses arguments, calls in here and picks the exit code.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod baseline;
pub mod cli;
pub mod export;
pub mod harness;
pub mod junit;
pub mod kinds;
pub mod plan;
pub mod reach;
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
