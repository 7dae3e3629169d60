//! The comparison with a baseline (`relapse run --baseline`), per scenario, episode and time.

use std::fmt::Write;

use relapse_core::compare::{Change, Comparison, ScenarioComparison, TimeComparison};
use relapse_core::gate::Verdict;

use super::{optional, plural};

/// Signed milliseconds for people: `+303.5ms`.
fn signed(seconds: f64) -> String {
    format!("{:+.1}ms", seconds * 1000.0)
}

pub fn comparison(c: &Comparison) -> String {
    let mut out = format!(
        "\ncomparison with baseline {:?} (bootstrap of the difference of medians, {:.0}% interval; noise {:.0}% or the resolution)\n",
        c.baseline,
        (1.0 - c.settings.significance) * 100.0,
        c.settings.noise * 100.0
    );
    for s in &c.scenarios {
        scenario(&mut out, s);
    }
    out
}

fn scenario(out: &mut String, s: &ScenarioComparison) {
    let verdict = match s.verdict() {
        Verdict::Fail => "regressed",
        Verdict::Pass => "no regression",
        _ => "inconclusive",
    };
    let m = &s.baseline_machine;
    let _ = writeln!(
        out,
        "  {}: {} run{} against {} (baseline saved {} on {}, {} CPU{}, kernel {}): {verdict}",
        s.scenario,
        s.new_runs,
        plural(s.new_runs),
        s.baseline_runs,
        humantime::format_rfc3339_seconds(s.baseline_saved),
        m.host,
        m.cpus,
        plural(m.cpus),
        m.kernel,
    );
    for refusal in &s.refusals {
        let _ = writeln!(out, "    not compared: {refusal}");
    }
    for note in &s.notes {
        let _ = writeln!(out, "    note: {note}");
    }
    for e in &s.episodes {
        let _ = writeln!(out, "    episode {}: {}", e.number, e.faults.join(" + "));
        if let Some(reason) = &e.reason {
            let _ = writeln!(out, "      inconclusive: {reason}");
            continue;
        }
        let _ = writeln!(
            out,
            "      {:<18} {:>9} {:>9}  {:<24} {:>9}  verdict",
            "", "baseline", "new", "difference (interval)", "threshold"
        );
        for t in e.times.iter().filter(|t| t.change != Change::NotMeasured) {
            time(out, t);
        }
    }
}

fn time(out: &mut String, t: &TimeComparison) {
    let interval = t.interval.map_or_else(
        || "—".to_string(),
        |i| format!("{} … {}", signed(i.lower), signed(i.upper)),
    );
    let _ = write!(
        out,
        "      {:<18} {:>9} {:>9}  {:<24} {:>9}  {}",
        t.measure.label(),
        optional(t.baseline_median),
        optional(t.new_median),
        interval,
        format!("±{}", super::human(t.threshold)),
        t.change.as_str()
    );
    if t.baseline_reached < t.baseline_runs || t.new_reached < t.new_runs {
        let _ = write!(
            out,
            " (reached in {}/{} and {}/{} runs)",
            t.baseline_reached, t.baseline_runs, t.new_reached, t.new_runs
        );
    }
    let _ = writeln!(out);
    if let Some(reason) = &t.reason {
        let _ = writeln!(out, "        {reason}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use expect_test::expect;
    use relapse_core::compare::*;

    fn samples(ms: &[u64]) -> TimeSamples {
        TimeSamples {
            resolution: Duration::from_millis(50),
            samples: ms.iter().map(|&m| Some(Duration::from_millis(m))).collect(),
        }
    }

    fn series(detect: &[u64], recover: &[u64], sha: &str) -> Series {
        let mut times = BTreeMap::new();
        times.insert(Measure::Detect, samples(detect));
        times.insert(Measure::Recover, samples(recover));
        times.insert(
            Measure::Mitigate,
            TimeSamples {
                resolution: Duration::from_millis(50),
                samples: vec![None; detect.len()],
            },
        );
        Series {
            key: ComparabilityKey {
                relapse_version: "0.1.0".into(),
                scenario: "freeze".into(),
                sli_interval: Duration::from_millis(50),
                detectors: vec![("pager".into(), Duration::ZERO)],
                backlog_interval: None,
                scenario_sha256: sha.repeat(64),
            },
            machine: Machine {
                host: "ci".into(),
                cpus: 2,
                kernel: "6.1.0".into(),
            },
            saved: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_184_000),
            runs: detect.len(),
            episodes: vec![EpisodeSeries {
                faults: vec!["backend-freezes".into()],
                times,
            }],
        }
    }

    #[test]
    fn a_comparison_reads_well() {
        let baseline = series(&[310, 320, 300, 330, 315], &[50, 60, 40, 50, 55], "a");
        let new = series(&[610, 620, 600, 630, 615], &[55, 50, 45, 60, 50], "b");
        let c = Comparison {
            baseline: "release-1".into(),
            settings: Settings::default(),
            scenarios: vec![compare_series(&baseline, &new, Settings::default())],
        };
        expect![[r#"

            comparison with baseline "release-1" (bootstrap of the difference of medians, 95% interval; noise 5% or the resolution)
              freeze: 5 runs against 5 (baseline saved 2026-12-02T04:00:00Z on ci, 2 CPUs, kernel 6.1.0): regressed
                note: the scenario file changed since the baseline (sha256 aaaaaaaaaaaa → bbbbbbbbbbbb)
                episode 1: backend-freezes
                                      baseline       new  difference (interval)    threshold  verdict
                  time to detect         315ms     615ms  +280.0ms … +320.0ms          ±50ms  regressed
                  time to recover         50ms      50ms  -10.0ms … +10.0ms            ±50ms  no change
        "#]]
        .assert_eq(&super::comparison(&c));
    }
}
