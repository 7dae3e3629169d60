use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use expect_test::expect;
use relapse_core::engine::Phase;
use relapse_core::gate::GateResult;
use relapse_core::report::{BacklogReport, Lateness, ProbeStats, TimelineEntry};

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
        placements: Vec::new(),
        injected_at: ms(2_000),
        reverted_at: Some(ms(12_000)),
        time_to_impact: Some(ms(impact)),
        time_to_detect: Some(ms(detect)),
        time_to_mitigate: Some(ms(mitigate)),
        time_to_recover: Some(ms(recover)),
        time_to_serve: Some(ms(recover)),
        time_to_drain: None,
        backlog: None,
        mitigated_at: Some(ms(2_000 + mitigate)),
        recovered_at: Some(ms(12_000 + recover)),
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
        run_id: "5eed000000000001".into(),
        steady_window: ms(1_000),
        steady_confirmed_at: Some(ms(1_000)),
        sli: None,
        scenario: scenario.into(),
        file: Some(PathBuf::from(format!("scenarios/{scenario}.toml"))),
        mitigation: None,
        expectation: None,
        verdict,
        reason: None,
        started: SystemTime::UNIX_EPOCH,
        duration: ms(14_250),
        resolution: ms(100),
        episodes,
        gates: Vec::new(),
        timeline: Vec::new(),
        probes: Vec::new(),
        run_dir: None,
        processes: Vec::new(),
        floods: Vec::new(),
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
    second.mitigated_at = None;
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
        // The SLI probe's interval plus its p99 lateness.
        resolution: Duration::from_micros(104_300),
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
                lateness: Lateness {
                    p50: Duration::from_micros(150),
                    p99: Duration::from_micros(4_300),
                    max: Duration::from_micros(4_400),
                },
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
                lateness: Lateness {
                    p50: Duration::from_micros(100),
                    p99: Duration::from_micros(800),
                    max: ms(2),
                },
            },
        ],
        run_dir: Some(PathBuf::from("/state/output/flg-2026-12-02T031604Z-4200-0")),
        processes: vec![relapse_core::report::ProcessReport {
            name: "haproxy".into(),
            pid: 4300,
            log: PathBuf::from("/state/output/flg-2026-12-02T031604Z-4200-0/haproxy.log"),
            ended: "stopped by SIGTERM in 3.1ms (exit status: 0)".into(),
        }],
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

          measured — episode 1: freeze (resolution 104ms: the SLI probe interval 100ms + its p99 lateness 4.3ms)
            time to impact        420ms
            time to detect       1.270s  by monitor (polled every 500ms)
            time to mitigate     4.000s  by failover
            time to recover      5.350s
            errors            37 of 100 SLI samples (37.0%): 503 ×30, timeout ×7

          measured — episode 2: lock + stall (resolution 104ms: the SLI probe interval 100ms + its p99 lateness 4.3ms)
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
              sent late by p50 0.1ms p99 4.3ms max 4.4ms (the harness's own delay; p99 is in the resolution)
            port: 20 samples, 0 errors, latency p50 0.3ms p90 0.5ms p99 0.9ms max 1.0ms
              sent late by p50 0.1ms p99 0.8ms max 2.0ms (the harness's own delay)

          processes (output in /state/output/flg-2026-12-02T031604Z-4200-0)
            haproxy (pid 4300): stopped by SIGTERM in 3.1ms (exit status: 0); output haproxy.log

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
              sent late by p50 0.1ms p99 0.8ms max 2.0ms (the harness's own delay)

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
    quiet.mitigated_at = None;
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

          measured: freeze (resolution 100ms)
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

#[test]
fn a_run_that_fails_as_its_scenario_expects_says_both_and_passes() {
    use relapse_core::gate::expectation;
    use relapse_core::scenario::Expectation;
    let expect = |gates: &[&str]| Expectation::Fail {
        gates: gates.iter().map(|g| g.to_string()).collect(),
    };
    let mut run = failed_run();
    run.expectation = expectation(&expect(&["recover_within", "mitigate_within"]), &run.gates);
    assert_eq!(run.outcome(), Verdict::Pass);
    let lines = |r: &RunReport| {
        summary(r)
            .lines()
            .filter(|l| {
                [
                    "relapse ·",
                    "ok ",
                    "FAIL ",
                    "verdict",
                    "expected:",
                    "outcome",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
            + &verdict_line(r)
    };
    expect![[r#"
        relapse · flg (scenarios/flg.toml) · FAIL (as expected) in 14.250s
            ok   detect_within            1.270s against a limit of 2.000s
            FAIL recover_within           9.800s against a limit of 5.000s (expected to fail)
            FAIL mitigate_within[2]       never reached; limit 3.000s (expected to fail)
        verdict: fail
        expected: fail (recover_within, mitigate_within): failed as expected: recover_within, mitigate_within[2]
        outcome: pass
        flg: pass (verdict fail; failed as expected: recover_within, mitigate_within[2])"#]].assert_eq(&lines(&run));

    run.expectation = expectation(&expect(&["recover_within"]), &run.gates);
    assert_eq!(run.outcome(), Verdict::Fail);
    expect![[r#"
        relapse · flg (scenarios/flg.toml) · FAIL (not as expected) in 14.250s
            ok   detect_within            1.270s against a limit of 2.000s
            FAIL recover_within           9.800s against a limit of 5.000s (expected to fail)
            FAIL mitigate_within[2]       never reached; limit 3.000s
        verdict: fail
        expected: fail (recover_within): expected recover_within to fail, but mitigate_within[2] failed too
        outcome: fail
        flg: fail (verdict fail; expected recover_within to fail, but mitigate_within[2] failed too)"#]].assert_eq(&lines(&run));
}
