use expect_test::expect;

use super::*;
use crate::export::fixtures::{expected_failure_run, failover_run, gate, inconclusive_run, run};

#[test]
fn one_row_per_run_and_episode_with_outcomes_times_and_failed_gates() {
    let reports = [
        failover_run(),
        expected_failure_run(),
        inconclusive_run("opensrs-fs-lockup"),
    ];
    expect![[r#"
        ### relapse

        | Scenario | Episode (faults) | Outcome | TTI | TTD | TTM | TTR | Failed gates |
        |---|---|---|---:|---|---|---:|---|
        | flg-healthcheck-hang | 1 (primary-hangs) | ❌ fail | 42ms | 748ms by failover-log | 790ms (failover) | 89ms |  |
        | flg-healthcheck-hang | 2 (new-primary-hangs + old-primary-hangs) | ❌ fail | 42ms | 1.500s by pager | — | 6.085s | recover_within[2]: time to recover 6085ms exceeds 5s |
        | kolab-misleading-errors | 1 (lock) | ✅ fail (as expected) | 42ms | — | — | 89ms | allowed_error_statuses (expected): statuses outside [503] during impact: 401 ×30 |
        | opensrs-fs-lockup | — | ⚠️ inconclusive | — | — | — | — | reason: steady state never held: 3 of 10 SLI samples failed |

    "#]].assert_eq(&summary(&reports));
}

#[test]
fn repeated_runs_are_numbered_and_an_unmet_expectation_says_so() {
    let mut held = expected_failure_run();
    held.verdict = Verdict::Pass;
    held.gates = vec![gate(
        "allowed_error_statuses",
        true,
        "every error status was one of [503]",
    )];
    if let Some(e) = held.expectation.as_mut() {
        e.met = false;
        e.failed_as_expected.clear();
    }
    let reports = [expected_failure_run(), held];
    expect![[r#"
        ### relapse

        | Scenario | Episode (faults) | Outcome | TTI | TTD | TTM | TTR | Failed gates |
        |---|---|---|---:|---|---|---:|---|
        | kolab-misleading-errors #1 | 1 (lock) | ✅ fail (as expected) | 42ms | — | — | 89ms | allowed_error_statuses (expected): statuses outside [503] during impact: 401 ×30 |
        | kolab-misleading-errors #2 | 1 (lock) | ❌ pass (not as expected) | 42ms | — | — | 89ms |  |

    "#]].assert_eq(&summary(&reports));
}

#[test]
fn pipes_newlines_and_html_in_cells_are_escaped() {
    let mut awkward = run("a | b\nc <d> & e\\");
    awkward.episodes[0].faults = vec!["x|y".into()];
    awkward.verdict = Verdict::Fail;
    awkward.gates = vec![gate("recover_within", false, "line one\nline | two")];
    expect![[r#"
        ### relapse

        | Scenario | Episode (faults) | Outcome | TTI | TTD | TTM | TTR | Failed gates |
        |---|---|---|---:|---|---|---:|---|
        | a \| b<br>c &lt;d&gt; &amp; e\\ | 1 (x\|y) | ❌ fail | 42ms | 748ms by failover-log | 790ms | 89ms | recover_within: line one<br>line \| two |

    "#]].assert_eq(&summary(&[awkward]));
}

#[test]
fn gates_belong_to_the_episode_their_name_numbers() {
    assert_eq!(episode_of("recover_within[2]", 2), Some(1));
    assert_eq!(episode_of("recover_within[3]", 2), None);
    assert_eq!(episode_of("recover_within", 2), None);
    // With one episode names carry no number, and every gate is the first episode's.
    assert_eq!(episode_of("recover_within[1]", 1), None);
}

#[test]
fn the_comparison_is_a_table_of_its_own() {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use relapse_core::compare::*;

    let series = |detect_ms: u64, runs: usize| {
        let mut times = BTreeMap::new();
        let samples = |base: u64| TimeSamples {
            resolution: Duration::from_millis(50),
            samples: (0..runs as u64)
                .map(|i| Some(Duration::from_millis(base + i * 10)))
                .collect(),
        };
        times.insert(Measure::Detect, samples(detect_ms));
        times.insert(Measure::Recover, samples(40));
        crate::export::fixtures::freeze_series(times, runs)
    };
    let mut other = series(300, 5);
    other.key.relapse_version = "0.2.0".into();
    let c = Comparison {
        baseline: "release-1".into(),
        settings: Settings::default(),
        scenarios: vec![
            compare_series(&series(300, 5), &series(600, 5), Settings::default()),
            compare_series(&series(300, 5), &other, Settings::default()),
        ],
    };
    expect![[r#"
        ### relapse against baseline release-1

        | Scenario | Episode | Time | Baseline | New | Difference (interval) | Verdict |
        |---|---|---|---:|---:|---|---|
        | freeze | 1 | time to detect | 320ms | 620ms | +270.0ms … +330.0ms | ❌ regressed |
        | freeze | 1 | time to recover | 60ms | 60ms | -30.0ms … +30.0ms | ✅ no change |
        | freeze | — | — | — | — | — | ⚠️ relapse version differs: baseline 0.1.0, now 0.2.0 |

    "#]]
    .assert_eq(&comparison(&c));
}
