//! A run's request floods in its summary: what each sent and how it was answered, and for a
//! flood spread over agents, each shard's part and the shards that were lost.

use std::fmt::Write;

use relapse_core::report::{FloodFigures, FloodReport};

use super::human;

/// The `floods` block of a run's summary; empty when the run had none.
pub fn floods(floods: &[FloodReport]) -> String {
    let mut out = String::new();
    if floods.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n  floods");
    for flood in floods {
        let whole = match &flood.outcome.figures {
            Some(figures) => figures_line(figures),
            None => "holds connections; no requests counted".to_string(),
        };
        let _ = writeln!(out, "    {}: {whole}", flood.fault);
        out.push_str(&flood_shards(flood));
    }
    out
}

/// One line per shard of a spread flood: its figures, or why it was lost.
pub fn flood_shards(flood: &FloodReport) -> String {
    let mut out = String::new();
    for shard in &flood.outcome.shards {
        let line = match (&shard.lost, &shard.figures) {
            (Some(why), _) => format!("LOST ({why}); its share counted as not sent"),
            (None, Some(figures)) => figures_line(figures),
            (None, None) => "reported".to_string(),
        };
        let _ = writeln!(out, "      shard on {}: {line}", shard.agent);
    }
    out
}

/// `402 sent, 402 answered (200.4/s; 100.0% of the 402 due), latency p50 1.2ms p99 5.2ms …`.
fn figures_line(f: &FloodFigures) -> String {
    let due = match (f.intended, f.delivered()) {
        (Some(due), Some(share)) => format!("; {:.1}% of the {due} due", share * 100.0),
        _ => String::new(),
    };
    let mut line = format!(
        "{} sent, {} answered ({:.1}/s{due})",
        f.sent,
        f.completed,
        f.achieved_rps()
    );
    if f.completed > 0 {
        let _ = write!(
            line,
            ", latency p50 {} p90 {} p99 {} max {}",
            human(f.latency_at(0.5)),
            human(f.latency_at(0.9)),
            human(f.latency_at(0.99)),
            human(std::time::Duration::from_micros(f.latency.max()))
        );
    }
    let mut kinds: Vec<String> = f.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    kinds.extend(f.errors_by_kind.iter().map(|(k, n)| format!("{k}×{n}")));
    if !kinds.is_empty() {
        let _ = write!(line, "; {}", kinds.join(" "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;
    use relapse_core::report::{FloodOutcome, ShardOutcome};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn figures(sent: u64, answered: u64, latency_us: u64) -> FloodFigures {
        let mut latency = Histogram::new(2).unwrap();
        latency.record_n(latency_us, answered).unwrap();
        FloodFigures {
            sent,
            completed: answered,
            errors_by_kind: BTreeMap::from([("timeout".to_string(), sent - answered)]),
            statuses: BTreeMap::from([(200, answered)]),
            duration: Duration::from_secs(2),
            intended_rate: Some(100.0),
            intended: Some(200),
            latency,
        }
    }

    #[test]
    fn a_spread_flood_shows_the_whole_then_each_shard() {
        let report = FloodReport {
            fault: "login-flood".into(),
            outcome: FloodOutcome {
                figures: Some(figures(200, 190, 3_000)),
                shards: vec![
                    ShardOutcome {
                        agent: "a1".into(),
                        figures: Some(figures(200, 190, 3_000)),
                        lost: None,
                    },
                    ShardOutcome {
                        agent: "a2".into(),
                        figures: None,
                        lost: Some("connection refused".into()),
                    },
                ],
            },
        };
        let line = "200 sent, 190 answered (95.0/s; 100.0% of the 200 due), latency p50 3.0ms p90 3.0ms p99 3.0ms max 3.0ms; 200×190 timeout×10";
        assert_eq!(
            floods(&[report]),
            format!(
                "\n  floods\n    login-flood: {line}\n      shard on a1: {line}\n      shard on a2: LOST (connection refused); its share counted as not sent\n"
            )
        );
        assert_eq!(floods(&[]), "");
    }
}
