//! Gates on what a request flood did: its p99 latency, the share of the requests due that it
//! sent, and, for a flood spread over agents, that no shard was lost (judged whether or not a
//! gate asks: a run that lost part of its load must not pass as if it had sent it all).

use super::{fmt, GateResult};
use crate::measure::Episode;
use crate::report::{FloodFigures, FloodReport};
use crate::scenario::Gates;

/// Judges each episode's floods (`floods` whose fault is one of the episode's) against its
/// gates; `name` gives a gate's judged name (with the episode number when there are several).
/// An episode without a flood has nothing for the flood gates to judge: a scenario's `[gates]`
/// hold for all its episodes, and loading refused flood gates in a scenario without a flood.
pub fn judge(
    episode: &Episode,
    gates: &Gates,
    floods: &[FloodReport],
    name: impl Fn(&str) -> String,
) -> Vec<GateResult> {
    let mine: Vec<&FloodReport> = floods
        .iter()
        .filter(|f| episode.faults.contains(&f.fault))
        .collect();
    // The floods that counted requests (an http_flood's), with their figures.
    let counted: Vec<(&FloodReport, &FloodFigures)> = mine
        .iter()
        .filter_map(|f| Some((*f, f.outcome.figures.as_ref()?)))
        .collect();
    let mut results = Vec::new();
    if let Some(limit) = gates.flood_p99_within {
        for (flood, figures) in &counted {
            let answered = figures.completed;
            let p99 = figures.latency_at(0.99);
            results.push(GateResult {
                name: name("flood_p99_within"),
                limit: Some(limit),
                measured: (answered > 0).then_some(p99),
                passed: answered > 0 && p99 <= limit,
                message: if answered == 0 {
                    format!(
                        "flood \"{}\": no request was answered (limit {})",
                        flood.fault,
                        fmt(limit)
                    )
                } else {
                    format!(
                        "flood \"{}\": p99 latency {} of {answered} answers {} the limit of {}",
                        flood.fault,
                        micros(p99),
                        if p99 <= limit { "is within" } else { "exceeds" },
                        fmt(limit)
                    )
                },
            });
        }
    }
    if let Some(limit) = gates.flood_min_delivered {
        for (flood, figures) in &counted {
            let delivered = figures.delivered();
            results.push(GateResult {
                name: name("flood_min_delivered"),
                limit: None,
                measured: None,
                passed: delivered.is_some_and(|d| d >= limit),
                message: match (delivered, figures.intended) {
                    (Some(d), Some(due)) => format!(
                        "flood \"{}\": sent {} of {due} requests due ({:.1}%) against at least {:.1}%",
                        flood.fault,
                        figures.sent,
                        d * 100.0,
                        limit * 100.0
                    ),
                    _ => format!(
                        "flood \"{}\": no requests were due (a closed-model flood has no rate to deliver)",
                        flood.fault
                    ),
                },
            });
        }
    }
    for flood in &mine {
        if flood.outcome.shards.is_empty() {
            continue;
        }
        let lost: Vec<String> = flood
            .outcome
            .shards
            .iter()
            .filter_map(|s| s.lost.as_ref().map(|why| format!("{} ({why})", s.agent)))
            .collect();
        results.push(GateResult {
            name: name("flood_shards"),
            limit: None,
            measured: None,
            passed: lost.is_empty(),
            message: if lost.is_empty() {
                format!(
                    "flood \"{}\": all {} shards reported",
                    flood.fault,
                    flood.outcome.shards.len()
                )
            } else {
                format!(
                    "flood \"{}\": {} of {} shards lost, their share counted as not sent: {}",
                    flood.fault,
                    lost.len(),
                    flood.outcome.shards.len(),
                    lost.join("; ")
                )
            },
        });
    }
    results
}

fn micros(d: std::time::Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{FloodOutcome, ShardOutcome};
    use hdrhistogram::Histogram;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use tokio::time::Instant;

    fn episode() -> Episode {
        let base = Instant::now();
        Episode {
            faults: vec!["flood".into()],
            injected: base,
            reverted: Some(base + Duration::from_secs(2)),
            horizon: base + Duration::from_secs(5),
            first_failure: None,
            detected: None,
            mitigated: None,
            recovered: None,
            samples: 10,
            failures: 0,
            failure_statuses: BTreeMap::new(),
            failure_errors: BTreeMap::new(),
            backlog: None,
        }
    }

    /// 100 answers: 98 at 1 ms, one at 4 ms and one at 30 ms, so p99 is 4.015 ms: the highest
    /// value the histogram's 2 significant digits hold as equal to 4 ms. 180 sent of 200 due.
    fn figures() -> FloodFigures {
        let mut latency = Histogram::new(2).unwrap();
        latency.record_n(1_000, 98).unwrap();
        latency.record(4_000).unwrap();
        latency.record(30_000).unwrap();
        FloodFigures {
            sent: 180,
            completed: 100,
            errors_by_kind: BTreeMap::from([("timeout".to_string(), 80)]),
            statuses: BTreeMap::from([(200, 100)]),
            duration: Duration::from_secs(2),
            intended_rate: Some(100.0),
            intended: Some(200),
            latency,
        }
    }

    fn flood(fault: &str, shards: Vec<ShardOutcome>) -> FloodReport {
        FloodReport {
            fault: fault.into(),
            outcome: FloodOutcome {
                figures: Some(figures()),
                shards,
            },
        }
    }

    fn gates(p99_ms: u64, delivered: f64) -> Gates {
        Gates {
            flood_p99_within: Some(Duration::from_millis(p99_ms)),
            flood_min_delivered: Some(delivered),
            ..Gates::default()
        }
    }

    fn summary(results: &[GateResult]) -> Vec<(String, bool, String)> {
        results
            .iter()
            .map(|g| (g.name.clone(), g.passed, g.message.clone()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_p99_and_delivered_gates_judge_the_episodes_flood() {
        let floods = [flood("flood", vec![]), flood("other-episode", vec![])];
        let passed = judge(&episode(), &gates(5, 0.9), &floods, str::to_string);
        assert_eq!(
            summary(&passed),
            [
                (
                    "flood_p99_within".to_string(),
                    true,
                    "flood \"flood\": p99 latency 4.015ms of 100 answers is within the limit of 5ms"
                        .to_string()
                ),
                (
                    "flood_min_delivered".to_string(),
                    true,
                    "flood \"flood\": sent 180 of 200 requests due (90.0%) against at least 90.0%"
                        .to_string()
                ),
            ]
        );
        assert_eq!(passed[0].measured, Some(Duration::from_micros(4_015)));
        let failed = judge(&episode(), &gates(4, 0.95), &floods, str::to_string);
        assert_eq!(
            failed.iter().map(|g| g.passed).collect::<Vec<_>>(),
            [false, false]
        );
        assert!(failed[0]
            .message
            .contains("4.015ms of 100 answers exceeds the limit of 4ms"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_gate_fails_a_flood_without_answers_and_skips_an_episode_without_one() {
        let none = judge(
            &episode(),
            &gates(4, 0.5),
            &[flood("elsewhere", vec![])],
            str::to_string,
        );
        assert!(none.is_empty(), "{none:?}");
        let mut silent = flood("flood", vec![]);
        let figures = silent.outcome.figures.as_mut().unwrap();
        figures.completed = 0;
        figures.latency.reset();
        let unanswered = judge(&episode(), &gates(4, 0.5), &[silent], str::to_string);
        assert_eq!(
            unanswered[0].message,
            "flood \"flood\": no request was answered (limit 4ms)"
        );
        assert!(!unanswered[0].passed && unanswered[0].measured.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_shard_fails_the_run_even_without_a_flood_gate() {
        let shards = vec![
            ShardOutcome {
                agent: "a1".into(),
                figures: Some(figures()),
                lost: None,
            },
            ShardOutcome {
                agent: "a2".into(),
                figures: None,
                lost: Some("connection refused".into()),
            },
        ];
        let results = judge(
            &episode(),
            &Gates::default(),
            &[flood("flood", shards.clone())],
            |n| format!("{n}[2]"),
        );
        assert_eq!(
            summary(&results),
            [(
                "flood_shards[2]".to_string(),
                false,
                "flood \"flood\": 1 of 2 shards lost, their share counted as not sent: a2 (connection refused)"
                    .to_string()
            )]
        );
        let mut whole = shards;
        whole[1].lost = None;
        whole[1].figures = Some(figures());
        let results = judge(
            &episode(),
            &Gates::default(),
            &[flood("flood", whole)],
            str::to_string,
        );
        assert!(results[0].passed, "{}", results[0].message);
        assert_eq!(results[0].message, "flood \"flood\": all 2 shards reported");
    }
}
