//! A run's reports: the live line while it goes, the summary after it, and the spread over
//! repeated runs.

use std::fmt::Write;
use std::time::Duration;

use relapse_core::engine::Progress;
use relapse_core::gate::Verdict;
use relapse_core::report::{EpisodeReport, RunReport};

use super::{human, optional, plural};

/// The one-line live display while a run is going.
pub fn progress_line(scenario: &str, p: &Progress) -> String {
    format!(
        "{scenario} · {:>7} · {} · SLI {} samples, {} failed · {} fault{} applied{}",
        human(p.elapsed),
        p.phase.as_str(),
        p.sli_samples,
        p.sli_failures,
        p.faults_applied,
        if p.faults_applied == 1 { "" } else { "s" },
        if p.detected { " · detected" } else { "" }
    )
}

/// The summary printed after a run.
pub fn summary(r: &RunReport) -> String {
    let mut out = String::new();
    let verdict = match r.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Inconclusive => "INCONCLUSIVE",
        Verdict::Aborted => "ABORTED",
    };
    let file = r
        .file
        .as_ref()
        .map(|f| format!(" ({})", f.display()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "relapse · {}{file} · {verdict} in {}",
        r.scenario,
        human(r.duration)
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  reason: {reason}");
    }

    let _ = writeln!(out, "\n  timeline (since the run started)");
    for t in &r.timeline {
        let _ = writeln!(out, "  {:>9}  {:<18} {}", human(t.at), t.event, t.detail);
    }

    for (i, e) in r.episodes.iter().enumerate() {
        let title = if r.episodes.len() > 1 {
            format!(" — episode {}", i + 1)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\n  measured{title}: {} (resolution {}, the SLI probe interval)",
            e.faults.join(" + "),
            human(r.resolution)
        );
        let _ = writeln!(
            out,
            "    time to impact    {:>9}",
            optional(e.time_to_impact)
        );
        let detect_by = match (&e.detected_by, e.detect_resolution) {
            (Some(name), Some(res)) if res.is_zero() => format!("  by {name} (pushed)"),
            (Some(name), Some(res)) => format!("  by {name} (polled every {})", human(res)),
            _ if e.time_to_detect.is_none() => "  not detected".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "    time to detect    {:>9}{detect_by}",
            optional(e.time_to_detect)
        );
        let mitigated_by = match (&r.mitigation, e.time_to_mitigate) {
            (Some(label), Some(_)) => format!("  by {label}"),
            (Some(label), None) => format!("  no {label}"),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            out,
            "    time to mitigate  {:>9}{mitigated_by}",
            optional(e.time_to_mitigate)
        );
        let recover_detail = match &e.backlog {
            Some(_) => format!(
                "  serving again after {}, backlog drained after {}",
                optional(e.time_to_serve),
                optional(e.time_to_drain)
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "    time to recover   {:>9}{recover_detail}",
            optional(e.time_to_recover)
        );
        if let Some(backlog) = &e.backlog {
            let peak = backlog
                .peak
                .map_or("unreadable".to_string(), |p| format!("{p}"));
            let _ = writeln!(
                out,
                "    backlog           peak {peak}, drained means at or under {}",
                backlog.max
            );
        }
        let mut kinds: Vec<String> = e
            .failure_statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect();
        kinds.extend(e.failure_errors.iter().map(|(k, n)| format!("{k} ×{n}")));
        let _ = writeln!(
            out,
            "    errors            {} of {} SLI samples ({:.1}%){}",
            e.failures,
            e.samples,
            e.error_ratio() * 100.0,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(": {}", kinds.join(", "))
            }
        );
    }

    if !r.gates.is_empty() {
        let _ = writeln!(out, "\n  gates");
        for g in &r.gates {
            let mark = if g.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "    {mark} {:<24} {}", g.name, g.message);
        }
    }

    let _ = writeln!(out, "\n  probes");
    for p in &r.probes {
        let statuses: Vec<String> = p.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        let _ = writeln!(
            out,
            "    {}{}: {} samples, {} errors, latency p50 {} p90 {} p99 {} max {}{}",
            p.name,
            if p.sli { " (SLI)" } else { "" },
            p.samples,
            p.errors,
            human(p.latency_p50),
            human(p.latency_p90),
            human(p.latency_p99),
            human(p.latency_max),
            if statuses.is_empty() {
                String::new()
            } else {
                format!(", statuses {}", statuses.join(" "))
            }
        );
    }
    let _ = writeln!(out, "\nverdict: {}", r.verdict.as_str());
    out
}

/// Min / median / max of each measured time over repeated runs of the same scenario, one block
/// per scenario name in the order the names first appear, and in it one per episode (the first
/// episode of each run, the second, …). The median of an even count is the mean of the middle
/// two.
pub fn spread(reports: &[RunReport]) -> String {
    let mut out = String::from("\nspread over repeated runs\n");
    let mut names: Vec<&str> = Vec::new();
    for r in reports {
        if !names.contains(&r.scenario.as_str()) {
            names.push(&r.scenario);
        }
    }
    for name in names {
        let runs: Vec<&RunReport> = reports.iter().filter(|r| r.scenario == name).collect();
        let _ = writeln!(
            out,
            "  {name}: {} run{}, {} passed",
            runs.len(),
            plural(runs.len()),
            runs.iter().filter(|r| r.verdict == Verdict::Pass).count()
        );
        let episodes = runs.iter().map(|r| r.episodes.len()).max().unwrap_or(0);
        for index in 0..episodes.max(1) {
            let of_index: Vec<Option<&EpisodeReport>> =
                runs.iter().map(|r| r.episodes.get(index)).collect();
            if episodes > 1 {
                let faults = of_index
                    .iter()
                    .flatten()
                    .next()
                    .map(|e| e.faults.join(" + "))
                    .unwrap_or_default();
                let _ = writeln!(out, "    episode {}: {faults}", index + 1);
            }
            let indent = if episodes > 1 { "      " } else { "    " };
            spread_rows(&mut out, indent, &runs, &of_index);
        }
    }
    out
}

/// "time to mitigate", with what mitigates where the scenario names it: "(failover)".
fn mitigate_label(mitigation: Option<&str>) -> String {
    match mitigation {
        Some(label) => format!("time to mitigate ({label})"),
        None => "time to mitigate".to_string(),
    }
}

/// One row per measured time over the runs' episodes of one index (`None`: that run had fewer).
fn spread_rows(
    out: &mut String,
    indent: &str,
    runs: &[&RunReport],
    episodes: &[Option<&EpisodeReport>],
) {
    type Pick = fn(&EpisodeReport) -> Option<Duration>;
    let mitigation = runs.iter().find_map(|r| r.mitigation.as_deref());
    let mut metrics: Vec<(String, Pick)> = vec![
        ("time to impact".into(), |e| e.time_to_impact),
        ("time to detect".into(), |e| e.time_to_detect),
        (mitigate_label(mitigation), |e| e.time_to_mitigate),
    ];
    if episodes.iter().flatten().any(|e| e.backlog.is_some()) {
        metrics.push(("time to serve".into(), |e| e.time_to_serve));
        metrics.push(("time to drain".into(), |e| e.time_to_drain));
    }
    metrics.push(("time to recover".into(), |e| e.time_to_recover));
    for (label, pick) in metrics {
        let mut values: Vec<Duration> = episodes.iter().flatten().filter_map(|e| pick(e)).collect();
        values.sort();
        if values.is_empty() {
            let _ = writeln!(out, "{indent}{label:<28} —");
            continue;
        }
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 0 {
            (values[middle - 1] + values[middle]) / 2
        } else {
            values[middle]
        };
        let _ = writeln!(
            out,
            "{indent}{label:<28} min {:>9}  median {:>9}  max {:>9}  ({} of {} run{})",
            human(values[0]),
            human(median),
            human(values[values.len() - 1]),
            values.len(),
            runs.len(),
            plural(runs.len())
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::SystemTime;

    use expect_test::expect;
    use relapse_core::engine::Phase;
    use relapse_core::gate::GateResult;
    use relapse_core::report::{BacklogReport, ProbeStats, TimelineEntry};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn gate(name: &str, limit: u64, measured: Option<u64>) -> GateResult {
        let passed = measured.is_some_and(|m| m <= limit);
        let message = match measured {
            Some(m) => format!("{} against a limit of {}", human(ms(m)), human(ms(limit))),
            None => format!("never reached; limit {}", human(ms(limit))),
        };
        GateResult {
            name: name.into(),
            limit: Some(ms(limit)),
            measured: measured.map(ms),
            passed,
            message,
        }
    }

    /// An episode that hurt, was detected by a polled source, mitigated and recovered.
    fn episode(impact: u64, detect: u64, mitigate: u64, recover: u64) -> EpisodeReport {
        EpisodeReport {
            faults: vec!["freeze".into()],
            injected_at: ms(2_000),
            reverted_at: Some(ms(12_000)),
            time_to_impact: Some(ms(impact)),
            time_to_detect: Some(ms(detect)),
            time_to_mitigate: Some(ms(mitigate)),
            time_to_recover: Some(ms(recover)),
            time_to_serve: Some(ms(recover)),
            time_to_drain: None,
            backlog: None,
            detected_by: Some("monitor".into()),
            detect_resolution: Some(ms(500)),
            samples: 100,
            failures: 37,
            failure_statuses: BTreeMap::from([(503, 30)]),
            failure_errors: BTreeMap::from([("timeout".to_string(), 7)]),
        }
    }

    fn report(scenario: &str, verdict: Verdict, episodes: Vec<EpisodeReport>) -> RunReport {
        RunReport {
            scenario: scenario.into(),
            file: Some(PathBuf::from(format!("scenarios/{scenario}.toml"))),
            mitigation: None,
            verdict,
            reason: None,
            started: SystemTime::UNIX_EPOCH,
            duration: ms(14_250),
            resolution: ms(100),
            episodes,
            gates: Vec::new(),
            timeline: Vec::new(),
            probes: Vec::new(),
        }
    }

    /// Two episodes: the first detected (polled), mitigated and recovered, gates passing and
    /// failing; the second behind a backlog, detected by a push, never mitigated.
    fn failed_run() -> RunReport {
        let mut second = episode(150, 0, 0, 0);
        second.faults = vec!["lock".into(), "stall".into()];
        second.time_to_detect = Some(ms(2_400));
        second.detect_resolution = Some(Duration::ZERO);
        second.detected_by = Some("alertmanager".into());
        second.time_to_mitigate = None;
        second.time_to_serve = Some(ms(3_100));
        second.time_to_drain = Some(ms(9_800));
        second.time_to_recover = Some(ms(9_800));
        second.backlog = Some(BacklogReport {
            max: 10.0,
            peak: Some(412.0),
        });
        second.failure_errors.clear();
        RunReport {
            mitigation: Some("failover".into()),
            timeline: vec![
                TimelineEntry {
                    at: ms(0),
                    event: "steady state".into(),
                    detail: "SLI healthy for 1s".into(),
                },
                TimelineEntry {
                    at: ms(2_000),
                    event: "injected".into(),
                    detail: "freeze: SIGSTOP pid 4242".into(),
                },
                TimelineEntry {
                    at: ms(3_270),
                    event: "detected".into(),
                    detail: "monitor answered 503".into(),
                },
                TimelineEntry {
                    at: ms(135_000),
                    event: "reverted".into(),
                    detail: "freeze: SIGCONT pid 4242".into(),
                },
            ],
            gates: vec![
                gate("detect_within", 2_000, Some(1_270)),
                gate("recover_within", 5_000, Some(9_800)),
                gate("mitigate_within[2]", 3_000, None),
            ],
            probes: vec![
                ProbeStats {
                    name: "webmail".into(),
                    sli: true,
                    every: ms(100),
                    samples: 200,
                    errors: 67,
                    statuses: BTreeMap::from([(200, 133), (503, 60)]),
                    error_kinds: BTreeMap::from([("timeout".to_string(), 7)]),
                    latency_p50: Duration::from_micros(2_500),
                    latency_p90: ms(48),
                    latency_p99: ms(1_273),
                    latency_max: ms(2_001),
                },
                ProbeStats {
                    name: "port".into(),
                    sli: false,
                    every: ms(1_000),
                    samples: 20,
                    errors: 0,
                    statuses: BTreeMap::new(),
                    error_kinds: BTreeMap::new(),
                    latency_p50: Duration::from_micros(300),
                    latency_p90: Duration::from_micros(450),
                    latency_p99: Duration::from_micros(900),
                    latency_max: ms(1),
                },
            ],
            ..report(
                "flg",
                Verdict::Fail,
                vec![episode(420, 1_270, 4_000, 5_350), second],
            )
        }
    }

    #[test]
    fn the_summary_of_a_failed_run_with_two_episodes() {
        expect![[r#"
            relapse · flg (scenarios/flg.toml) · FAIL in 14.250s

              timeline (since the run started)
                  0.0ms  steady state       SLI healthy for 1s
                 2.000s  injected           freeze: SIGSTOP pid 4242
                 3.270s  detected           monitor answered 503
                  2m15s  reverted           freeze: SIGCONT pid 4242

              measured — episode 1: freeze (resolution 100ms, the SLI probe interval)
                time to impact        420ms
                time to detect       1.270s  by monitor (polled every 500ms)
                time to mitigate     4.000s  by failover
                time to recover      5.350s
                errors            37 of 100 SLI samples (37.0%): 503 ×30, timeout ×7

              measured — episode 2: lock + stall (resolution 100ms, the SLI probe interval)
                time to impact        150ms
                time to detect       2.400s  by alertmanager (pushed)
                time to mitigate          —  no failover
                time to recover      9.800s  serving again after 3.100s, backlog drained after 9.800s
                backlog           peak 412, drained means at or under 10
                errors            37 of 100 SLI samples (37.0%): 503 ×30

              gates
                ok   detect_within            1.270s against a limit of 2.000s
                FAIL recover_within           9.800s against a limit of 5.000s
                FAIL mitigate_within[2]       never reached; limit 3.000s

              probes
                webmail (SLI): 200 samples, 67 errors, latency p50 2.5ms p90 48ms p99 1.273s max 2.001s, statuses 200×133 503×60
                port: 20 samples, 0 errors, latency p50 0.3ms p90 0.5ms p99 0.9ms max 1.0ms

            verdict: fail
        "#]].assert_eq(&summary(&failed_run()));
    }

    #[test]
    fn the_summary_of_an_inconclusive_run_has_its_reason_and_nothing_measured() {
        let mut never = report("flg", Verdict::Inconclusive, Vec::new());
        never.file = None;
        never.reason = Some("steady state never held: 3 of 10 SLI samples failed".into());
        never.probes = failed_run().probes[1..].to_vec();
        expect![[r#"
            relapse · flg · INCONCLUSIVE in 14.250s
              reason: steady state never held: 3 of 10 SLI samples failed

              timeline (since the run started)

              probes
                port: 20 samples, 0 errors, latency p50 0.3ms p90 0.5ms p99 0.9ms max 1.0ms

            verdict: inconclusive
        "#]]
        .assert_eq(&summary(&never));
    }

    #[test]
    fn the_summary_of_an_episode_nothing_noticed() {
        let mut quiet = episode(420, 0, 0, 0);
        quiet.time_to_detect = None;
        quiet.detected_by = None;
        quiet.detect_resolution = None;
        quiet.time_to_mitigate = None;
        quiet.time_to_recover = None;
        quiet.backlog = Some(BacklogReport {
            max: 0.0,
            peak: None,
        });
        quiet.time_to_serve = None;
        quiet.samples = 0;
        quiet.failures = 0;
        quiet.failure_statuses.clear();
        quiet.failure_errors.clear();
        let r = report("kolab", Verdict::Aborted, vec![quiet]);
        expect![[r#"
            relapse · kolab (scenarios/kolab.toml) · ABORTED in 14.250s

              timeline (since the run started)

              measured: freeze (resolution 100ms, the SLI probe interval)
                time to impact        420ms
                time to detect            —  not detected
                time to mitigate          —
                time to recover           —  serving again after —, backlog drained after —
                backlog           peak unreadable, drained means at or under 0
                errors            0 of 0 SLI samples (0.0%)

              probes

            verdict: aborted
        "#]]
        .assert_eq(&summary(&r));
    }

    #[test]
    fn the_progress_line() {
        let p = Progress {
            phase: Phase::Faulting,
            elapsed: ms(3_270),
            sli_samples: 33,
            sli_failures: 4,
            faults_applied: 1,
            detected: true,
        };
        expect!["flg ·  3.270s · fault schedule running · SLI 33 samples, 4 failed · 1 fault applied · detected"].assert_eq(&progress_line("flg", &p));
    }

    #[test]
    fn the_spread_of_repeated_runs() {
        let mut undetected = episode(380, 0, 3_900, 5_100);
        undetected.time_to_detect = None;
        let reports = [
            report(
                "flg",
                Verdict::Pass,
                vec![episode(420, 1_270, 4_000, 5_350)],
            ),
            report("flg", Verdict::Fail, vec![undetected]),
            report("flg", Verdict::Pass, vec![episode(510, 900, 4_200, 5_600)]),
            report("kolab", Verdict::Inconclusive, Vec::new()),
            report("ipaper", Verdict::Pass, vec![episode(90, 250, 700, 1_000)]),
        ];
        expect![[r#"

            spread over repeated runs
              flg: 3 runs, 2 passed
                time to impact               min     380ms  median     420ms  max     510ms  (3 of 3 runs)
                time to detect               min     900ms  median    1.085s  max    1.270s  (2 of 3 runs)
                time to mitigate             min    3.900s  median    4.000s  max    4.200s  (3 of 3 runs)
                time to recover              min    5.100s  median    5.350s  max    5.600s  (3 of 3 runs)
              kolab: 1 run, 0 passed
                time to impact               —
                time to detect               —
                time to mitigate             —
                time to recover              —
              ipaper: 1 run, 1 passed
                time to impact               min      90ms  median      90ms  max      90ms  (1 of 1 run)
                time to detect               min     250ms  median     250ms  max     250ms  (1 of 1 run)
                time to mitigate             min     700ms  median     700ms  max     700ms  (1 of 1 run)
                time to recover              min    1.000s  median    1.000s  max    1.000s  (1 of 1 run)
        "#]]
        .assert_eq(&spread(&reports));
    }

    #[test]
    fn the_spread_of_runs_with_two_episodes_names_the_mitigation_and_the_drain() {
        let runs: Vec<RunReport> = [(600, 2_000), (700, 2_400), (650, 2_200), (800, 2_300)]
            .into_iter()
            .map(|(mitigate, drain)| {
                let mut second = failed_run().episodes[1].clone();
                second.time_to_drain = Some(ms(drain));
                second.time_to_recover = Some(ms(drain));
                RunReport {
                    mitigation: Some("failover".into()),
                    ..report(
                        "flg",
                        Verdict::Pass,
                        vec![episode(100, mitigate, mitigate, 50), second],
                    )
                }
            })
            .collect();
        expect![[r#"

            spread over repeated runs
              flg: 4 runs, 4 passed
                episode 1: freeze
                  time to impact               min     100ms  median     100ms  max     100ms  (4 of 4 runs)
                  time to detect               min     600ms  median     675ms  max     800ms  (4 of 4 runs)
                  time to mitigate (failover)  min     600ms  median     675ms  max     800ms  (4 of 4 runs)
                  time to recover              min      50ms  median      50ms  max      50ms  (4 of 4 runs)
                episode 2: lock + stall
                  time to impact               min     150ms  median     150ms  max     150ms  (4 of 4 runs)
                  time to detect               min    2.400s  median    2.400s  max    2.400s  (4 of 4 runs)
                  time to mitigate (failover)  —
                  time to serve                min    3.100s  median    3.100s  max    3.100s  (4 of 4 runs)
                  time to drain                min    2.000s  median    2.250s  max    2.400s  (4 of 4 runs)
                  time to recover              min    2.000s  median    2.250s  max    2.400s  (4 of 4 runs)
        "#]].assert_eq(&spread(&runs));
    }

    #[test]
    fn a_name_repeated_in_files_apart_is_summarised_once_where_it_first_appears() {
        // `relapse run --repeat 2 a.toml b.toml c.toml` where a and c name the same scenario.
        let reports = [
            report(
                "flg",
                Verdict::Pass,
                vec![episode(400, 1_000, 4_000, 5_000)],
            ),
            report(
                "flg",
                Verdict::Pass,
                vec![episode(500, 1_100, 4_100, 5_100)],
            ),
            report("kolab", Verdict::Pass, vec![episode(100, 200, 300, 400)]),
            report("kolab", Verdict::Pass, vec![episode(100, 200, 300, 400)]),
            report(
                "flg",
                Verdict::Fail,
                vec![episode(600, 1_200, 4_200, 5_200)],
            ),
            report(
                "flg",
                Verdict::Pass,
                vec![episode(700, 1_300, 4_300, 5_300)],
            ),
        ];
        let text = spread(&reports);
        assert_eq!(text.matches("  flg:").count(), 1, "{text}");
        expect![[r#"

            spread over repeated runs
              flg: 4 runs, 3 passed
                time to impact               min     400ms  median     550ms  max     700ms  (4 of 4 runs)
                time to detect               min    1.000s  median    1.150s  max    1.300s  (4 of 4 runs)
                time to mitigate             min    4.000s  median    4.150s  max    4.300s  (4 of 4 runs)
                time to recover              min    5.000s  median    5.150s  max    5.300s  (4 of 4 runs)
              kolab: 2 runs, 2 passed
                time to impact               min     100ms  median     100ms  max     100ms  (2 of 2 runs)
                time to detect               min     200ms  median     200ms  max     200ms  (2 of 2 runs)
                time to mitigate             min     300ms  median     300ms  max     300ms  (2 of 2 runs)
                time to recover              min     400ms  median     400ms  max     400ms  (2 of 2 runs)
        "#]]
        .assert_eq(&text);
    }
}
