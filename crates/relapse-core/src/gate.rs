//! Gates: limits on what was measured, and the verdict they add up to.

use std::time::Duration;

use crate::duration::format_duration;
use crate::measure::Episode;
use crate::report::FloodReport;

mod flood;
use crate::scenario::{Expectation, Gates};

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every gate held.
    Pass,
    /// At least one gate was missed.
    Fail,
    /// Steady state never held before injection: nothing was injected, nothing judged.
    Inconclusive,
    /// The run was stopped early (cancelled, over its time limit, an injector failed); every
    /// applied fault was reverted.
    Aborted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Aborted => "aborted",
        }
    }
}

/// One gate judged against one episode.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    pub name: String,
    /// The limit, for gates on a duration.
    pub limit: Option<Duration>,
    /// What was measured, for gates on a duration (`None`: never reached).
    pub measured: Option<Duration>,
    pub passed: bool,
    /// What was measured against what limit, in words.
    pub message: String,
}

/// Judges each episode against its gates (`gates[i]` for `episodes[i]`). With more than one
/// episode, gate names carry the episode number: `detect_within[2]`.
///
/// `has_detectors`: a scenario that declares detection sources but no `detect_within` still
/// fails when nothing was detected (gate `detected`): silence is never a pass.
///
/// `floods`: what the run's request floods did, for the flood gates of their episodes.
pub fn judge(
    episodes: &[Episode],
    gates: &[Gates],
    has_detectors: bool,
    floods: &[FloodReport],
) -> Vec<GateResult> {
    assert_eq!(episodes.len(), gates.len(), "one set of gates per episode");
    let mut results = Vec::new();
    for (i, (episode, gates)) in episodes.iter().zip(gates).enumerate() {
        let name = |gate: &str| {
            if episodes.len() > 1 {
                format!("{gate}[{}]", i + 1)
            } else {
                gate.to_string()
            }
        };
        // What "never" measured: how long the episode was watched for it.
        let observed = episode.horizon.saturating_duration_since(episode.injected);
        let not_detected = format!(
            "not detected in the {} observed after t_inject",
            fmt(observed)
        );
        if let Some(limit) = gates.detect_within {
            results.push(duration_gate(
                name("detect_within"),
                "time to detect",
                episode.time_to_detect(),
                limit,
                &not_detected,
            ));
        } else if has_detectors {
            let detected = episode.time_to_detect();
            results.push(GateResult {
                name: name("detected"),
                limit: None,
                measured: detected,
                passed: detected.is_some(),
                message: match detected {
                    Some(t) => format!(
                        "detected after {}; required: a detection, as detection sources are declared",
                        fmt(t)
                    ),
                    None => format!(
                        "{not_detected}; required: a detection, as detection sources are declared"
                    ),
                },
            });
        }
        if let Some(limit) = gates.mitigate_within {
            if episode.first_failure.is_none() {
                results.push(GateResult {
                    name: name("mitigate_within"),
                    limit: Some(limit),
                    measured: None,
                    passed: true,
                    message: "no impact on the SLI, nothing to mitigate".to_string(),
                });
            } else {
                let active = episode
                    .reverted
                    .unwrap_or(episode.horizon)
                    .saturating_duration_since(episode.injected);
                results.push(duration_gate(
                    name("mitigate_within"),
                    "time to mitigate",
                    episode.time_to_mitigate(),
                    limit,
                    &format!(
                        "steady state did not return in the {} the fault was active",
                        fmt(active)
                    ),
                ));
            }
        }
        if let Some(limit) = gates.recover_within {
            let never = match episode.reverted {
                None => "the fault was still applied when the run ended".to_string(),
                Some(reverted) => format!(
                    "steady state did not return in the {} observed after the revert",
                    fmt(episode.horizon.saturating_duration_since(reverted))
                ),
            };
            results.push(duration_gate(
                name("recover_within"),
                "time to recover",
                episode.time_to_recover(),
                limit,
                &never,
            ));
        }
        if let Some(limit) = gates.max_error_ratio {
            let ratio = episode.error_ratio();
            results.push(GateResult {
                name: name("max_error_ratio"),
                limit: None,
                measured: None,
                passed: ratio <= limit,
                message: format!(
                    "error ratio {:.3} ({} of {} SLI samples) against a limit of {limit:.3}",
                    ratio, episode.failures, episode.samples
                ),
            });
        }
        if let Some(allowed) = &gates.allowed_error_statuses {
            let disallowed: Vec<String> = episode
                .failure_statuses
                .iter()
                .filter(|(status, _)| !allowed.contains(status))
                .map(|(status, count)| format!("{status} ×{count}"))
                .collect();
            let allowed_list = allowed
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            results.push(GateResult {
                name: name("allowed_error_statuses"),
                limit: None,
                measured: None,
                passed: disallowed.is_empty(),
                message: if disallowed.is_empty() {
                    format!("every error status was one of [{allowed_list}]")
                } else {
                    format!(
                        "statuses outside [{allowed_list}] during impact: {}",
                        disallowed.join(", ")
                    )
                },
            });
        }
        results.extend(flood::judge(episode, gates, floods, name));
    }
    results
}

fn duration_gate(
    name: String,
    what: &str,
    measured: Option<Duration>,
    limit: Duration,
    never: &str,
) -> GateResult {
    match measured {
        Some(t) => GateResult {
            name,
            limit: Some(limit),
            measured: Some(t),
            passed: t <= limit,
            message: format!(
                "{what} {} {} the limit of {}",
                fmt(t),
                if t <= limit { "is within" } else { "exceeds" },
                fmt(limit)
            ),
        },
        None => GateResult {
            name,
            limit: Some(limit),
            measured: None,
            passed: false,
            message: format!("{never} (limit {})", fmt(limit)),
        },
    }
}

fn fmt(d: Duration) -> String {
    if d.subsec_nanos() % 1_000_000 == 0 {
        format_duration(d)
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The verdict of a run that was not stopped early.
pub fn verdict(results: &[GateResult]) -> Verdict {
    if results.iter().all(|g| g.passed) {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// How a judged run compares with a scenario that expects its gates to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectationOutcome {
    /// The gates that must fail, as the scenario names them; empty: any gate.
    pub expected: Vec<String>,
    /// Whether exactly the expected gates failed.
    pub met: bool,
    /// The failed gates the expectation covers, by their judged names (`recover_within[2]`).
    pub failed_as_expected: Vec<String>,
    /// What was expected against what happened, in words.
    pub message: String,
}

/// Whether judged gate `name` (`recover_within[2]`, `detect_within`) is what `pattern` names:
/// the same gate, and the same episode if the pattern gives one.
pub fn gate_matches(pattern: &str, name: &str) -> bool {
    if pattern.contains('[') {
        return pattern == name;
    }
    name == pattern
        || name
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('['))
}

/// Compares judged gates with an expectation of failure; `None` when the scenario expects them
/// to hold (then the verdict stands alone).
pub fn expectation(expect: &Expectation, results: &[GateResult]) -> Option<ExpectationOutcome> {
    let Expectation::Fail { gates: expected } = expect else {
        return None;
    };
    let covered =
        |name: &str| expected.is_empty() || expected.iter().any(|p| gate_matches(p, name));
    let failed: Vec<&GateResult> = results.iter().filter(|g| !g.passed).collect();
    let failed_as_expected: Vec<String> = failed
        .iter()
        .filter(|g| covered(&g.name))
        .map(|g| g.name.clone())
        .collect();
    let unexpected: Vec<&str> = failed
        .iter()
        .filter(|g| !covered(&g.name))
        .map(|g| g.name.as_str())
        .collect();
    let held: Vec<&str> = expected
        .iter()
        .filter(|p| !failed.iter().any(|g| gate_matches(p, &g.name)))
        .map(String::as_str)
        .collect();
    let wanted = if expected.is_empty() {
        "a gate to fail".to_string()
    } else {
        format!("{} to fail", expected.join(", "))
    };
    let (met, message) = if failed.is_empty() {
        (false, format!("expected {wanted}, but every gate held"))
    } else if !unexpected.is_empty() {
        (
            false,
            format!(
                "expected {wanted}, but {} failed too",
                unexpected.join(", ")
            ),
        )
    } else if !held.is_empty() {
        (
            false,
            format!("expected {wanted}, but {} held", held.join(", ")),
        )
    } else {
        (
            true,
            format!("failed as expected: {}", failed_as_expected.join(", ")),
        )
    };
    Some(ExpectationOutcome {
        expected: expected.clone(),
        met,
        failed_as_expected,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tokio::time::Instant;

    fn episode(base: Instant) -> Episode {
        let ms = Duration::from_millis;
        Episode {
            faults: vec!["freeze".into()],
            injected: base + ms(1000),
            reverted: Some(base + ms(4000)),
            horizon: base + ms(9000),
            first_failure: Some(base + ms(1050)),
            detected: Some((base + ms(2500), 0)),
            mitigated: None,
            recovered: Some(base + ms(4100)),
            samples: 31,
            failures: 30,
            failure_statuses: BTreeMap::from([(504, 28), (401, 2)]),
            failure_errors: BTreeMap::new(),
            backlog: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duration_gates_compare_with_the_limit() {
        let e = episode(Instant::now());
        let gates = Gates {
            detect_within: Some(Duration::from_millis(1500)),
            recover_within: Some(Duration::from_millis(99)),
            ..Gates::default()
        };
        let results = judge(&[e], &[gates], true, &[]);
        assert_eq!(results[0].name, "detect_within");
        assert!(results[0].passed, "{}", results[0].message);
        assert_eq!(results[0].measured, Some(Duration::from_millis(1500)));
        assert_eq!(results[1].name, "recover_within");
        assert!(!results[1].passed);
        assert_eq!(
            results[1].message,
            "time to recover 100ms exceeds the limit of 99ms"
        );
        assert_eq!(verdict(&results), Verdict::Fail);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_fails_even_without_a_detect_gate() {
        let mut e = episode(Instant::now());
        e.detected = None;
        let results = judge(&[e], &[Gates::default()], true, &[]);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].name, "detected");
        assert!(!results[0].passed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_time_never_reached_says_how_long_it_was_watched_for_and_the_limit() {
        let mut e = episode(Instant::now());
        e.detected = None;
        e.recovered = None;
        let gates = Gates {
            detect_within: Some(Duration::from_secs(1)),
            mitigate_within: Some(Duration::from_millis(500)),
            recover_within: Some(Duration::from_secs(2)),
            ..Gates::default()
        };
        let messages: Vec<String> = judge(&[e.clone()], &[gates], true, &[])
            .into_iter()
            .map(|g| g.message)
            .collect();
        // Injected at 1 s, reverted at 4 s, observed until 9 s.
        assert_eq!(
            messages,
            [
                "not detected in the 8s observed after t_inject (limit 1s)",
                "steady state did not return in the 3s the fault was active (limit 500ms)",
                "steady state did not return in the 5s observed after the revert (limit 2s)",
            ]
        );
        let detected = judge(&[e], &[Gates::default()], true, &[]);
        assert_eq!(
            detected[0].message,
            "not detected in the 8s observed after t_inject; required: a detection, as detection sources are declared"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn error_statuses_outside_the_allowed_list_fail_and_are_named() {
        let e = episode(Instant::now());
        let gates = Gates {
            allowed_error_statuses: Some(vec![503, 504]),
            max_error_ratio: Some(0.5),
            ..Gates::default()
        };
        let results = judge(&[e], &[gates], false, &[]);
        assert!(!results[0].passed);
        assert!(
            results[0].message.contains("30 of 31"),
            "{}",
            results[0].message
        );
        assert!(!results[1].passed);
        assert_eq!(
            results[1].message,
            "statuses outside [503, 504] during impact: 401 ×2"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gates_are_named_per_episode_when_there_are_several() {
        let base = Instant::now();
        let gates = Gates {
            detect_within: Some(Duration::from_secs(2)),
            ..Gates::default()
        };
        let mut second = episode(base);
        second.detected = None;
        let results = judge(&[episode(base), second], &[gates.clone(), gates], true, &[]);
        let names: Vec<&str> = results.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["detect_within[1]", "detect_within[2]"]);
        assert!(results[0].passed && !results[1].passed);
    }

    #[tokio::test(start_paused = true)]
    async fn mitigation_without_impact_passes_and_says_why() {
        let mut e = episode(Instant::now());
        e.first_failure = None;
        let gates = Gates {
            mitigate_within: Some(Duration::from_secs(1)),
            ..Gates::default()
        };
        let results = judge(&[e], &[gates], false, &[]);
        assert!(results[0].passed);
        assert_eq!(
            results[0].message,
            "no impact on the SLI, nothing to mitigate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_episode_is_judged_by_its_own_gates() {
        // Episode 1 (one backend frozen) must be mitigated by failover; episode 2 (both frozen)
        // cannot be, so it has no mitigate gate: only its detection is judged.
        let base = Instant::now();
        let mut both_frozen = episode(base);
        both_frozen.mitigated = None;
        let run = Gates {
            detect_within: Some(Duration::from_secs(2)),
            ..Gates::default()
        };
        let failover = run.overlay(&Gates {
            mitigate_within: Some(Duration::from_secs(1)),
            ..Gates::default()
        });
        let mut one_frozen = episode(base);
        one_frozen.mitigated = Some(one_frozen.injected + Duration::from_millis(700));
        let results = judge(&[one_frozen, both_frozen], &[failover, run], true, &[]);
        let names: Vec<&str> = results.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            ["detect_within[1]", "mitigate_within[1]", "detect_within[2]"]
        );
        assert_eq!(results[1].measured, Some(Duration::from_millis(700)));
        assert!(results.iter().all(|g| g.passed), "{results:?}");
    }

    fn judged(gates: &[(&str, bool)]) -> Vec<GateResult> {
        gates
            .iter()
            .map(|(name, passed)| GateResult {
                name: name.to_string(),
                limit: None,
                measured: None,
                passed: *passed,
                message: String::new(),
            })
            .collect()
    }

    fn expect_fail(gates: &[&str]) -> Expectation {
        Expectation::Fail {
            gates: gates.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn a_name_matches_its_gate_in_every_episode_and_a_numbered_name_one_episode() {
        assert!(gate_matches("recover_within", "recover_within"));
        assert!(gate_matches("recover_within", "recover_within[2]"));
        assert!(gate_matches("recover_within[2]", "recover_within[2]"));
        assert!(!gate_matches("recover_within[2]", "recover_within[1]"));
        assert!(!gate_matches("recover_within[2]", "recover_within"));
        // A prefix of another gate's name is not that gate.
        assert!(!gate_matches("detect", "detect_within"));
        assert!(!gate_matches("detect_within", "detected"));
    }

    #[test]
    fn an_expectation_of_failure_is_met_only_by_exactly_the_expected_gates() {
        let expected = expect_fail(&["allowed_error_statuses"]);
        let met = expectation(
            &expected,
            &judged(&[
                ("detect_within[1]", true),
                ("allowed_error_statuses[1]", false),
                ("allowed_error_statuses[2]", false),
            ]),
        )
        .unwrap();
        assert!(met.met, "{met:?}");
        assert_eq!(
            met.failed_as_expected,
            ["allowed_error_statuses[1]", "allowed_error_statuses[2]"]
        );
        assert_eq!(
            met.message,
            "failed as expected: allowed_error_statuses[1], allowed_error_statuses[2]"
        );

        let held = expectation(&expected, &judged(&[("allowed_error_statuses", true)])).unwrap();
        assert!(!held.met);
        assert_eq!(
            held.message,
            "expected allowed_error_statuses to fail, but every gate held"
        );

        let another = expectation(
            &expected,
            &judged(&[("allowed_error_statuses", false), ("recover_within", false)]),
        )
        .unwrap();
        assert!(!another.met);
        assert_eq!(
            another.message,
            "expected allowed_error_statuses to fail, but recover_within failed too"
        );
        assert_eq!(another.failed_as_expected, ["allowed_error_statuses"]);

        let partly = expectation(
            &expect_fail(&["mitigate_within", "recover_within[2]"]),
            &judged(&[
                ("mitigate_within[1]", false),
                ("recover_within[1]", true),
                ("recover_within[2]", true),
            ]),
        )
        .unwrap();
        assert!(!partly.met);
        assert_eq!(
            partly.message,
            "expected mitigate_within, recover_within[2] to fail, but recover_within[2] held"
        );
    }

    #[test]
    fn expect_fail_without_gates_is_met_by_any_failure_and_pass_compares_nothing() {
        let any = expectation(&expect_fail(&[]), &judged(&[("detected", false)])).unwrap();
        assert!(any.met);
        let none_failed = expectation(&expect_fail(&[]), &judged(&[("detected", true)])).unwrap();
        assert!(!none_failed.met);
        assert_eq!(
            none_failed.message,
            "expected a gate to fail, but every gate held"
        );
        assert_eq!(
            expectation(&Expectation::Pass, &judged(&[("detected", false)])),
            None
        );
    }
}
