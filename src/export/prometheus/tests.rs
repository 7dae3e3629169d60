use expect_test::expect;

use super::*;
use crate::export::fixtures::{expected_failure_run, failover_run, inconclusive_run};

#[test]
fn a_failover_run_and_an_inconclusive_one_of_the_same_scenario() {
    let failover = failover_run();
    let inconclusive = inconclusive_run("flg-healthcheck-hang");
    expect![[r##"
        # HELP relapse_verdict 1 for the run's verdict by its gates (pass, fail, inconclusive or aborted), 0 for the others.
        # TYPE relapse_verdict gauge
        relapse_verdict{scenario="flg-healthcheck-hang",run="1",verdict="pass"} 0
        relapse_verdict{scenario="flg-healthcheck-hang",run="1",verdict="fail"} 1
        relapse_verdict{scenario="flg-healthcheck-hang",run="1",verdict="inconclusive"} 0
        relapse_verdict{scenario="flg-healthcheck-hang",run="1",verdict="aborted"} 0
        relapse_verdict{scenario="flg-healthcheck-hang",run="2",verdict="pass"} 0
        relapse_verdict{scenario="flg-healthcheck-hang",run="2",verdict="fail"} 0
        relapse_verdict{scenario="flg-healthcheck-hang",run="2",verdict="inconclusive"} 1
        relapse_verdict{scenario="flg-healthcheck-hang",run="2",verdict="aborted"} 0
        # HELP relapse_outcome 1 for the run's verdict against the scenario's expectation, which the exit code goes by, 0 for the others; equal to relapse_verdict unless the scenario expects its gates to fail.
        # TYPE relapse_outcome gauge
        relapse_outcome{scenario="flg-healthcheck-hang",run="1",outcome="pass"} 0
        relapse_outcome{scenario="flg-healthcheck-hang",run="1",outcome="fail"} 1
        relapse_outcome{scenario="flg-healthcheck-hang",run="1",outcome="inconclusive"} 0
        relapse_outcome{scenario="flg-healthcheck-hang",run="1",outcome="aborted"} 0
        relapse_outcome{scenario="flg-healthcheck-hang",run="2",outcome="pass"} 0
        relapse_outcome{scenario="flg-healthcheck-hang",run="2",outcome="fail"} 0
        relapse_outcome{scenario="flg-healthcheck-hang",run="2",outcome="inconclusive"} 1
        relapse_outcome{scenario="flg-healthcheck-hang",run="2",outcome="aborted"} 0
        # HELP relapse_gate_passed 1 when the gate held, 0 when it failed, whether or not the scenario expected it to fail.
        # TYPE relapse_gate_passed gauge
        relapse_gate_passed{scenario="flg-healthcheck-hang",run="1",gate="detect_within[1]"} 1
        relapse_gate_passed{scenario="flg-healthcheck-hang",run="1",gate="mitigate_within[1]"} 1
        relapse_gate_passed{scenario="flg-healthcheck-hang",run="1",gate="detect_within[2]"} 1
        relapse_gate_passed{scenario="flg-healthcheck-hang",run="1",gate="recover_within[2]"} 0
        # HELP relapse_run_duration_seconds How long the run took.
        # TYPE relapse_run_duration_seconds gauge
        relapse_run_duration_seconds{scenario="flg-healthcheck-hang",run="1"} 14.2505
        relapse_run_duration_seconds{scenario="flg-healthcheck-hang",run="2"} 14.2505
        # HELP relapse_run_timestamp_seconds When the run started (wall clock), in seconds since the Unix epoch.
        # TYPE relapse_run_timestamp_seconds gauge
        relapse_run_timestamp_seconds{scenario="flg-healthcheck-hang",run="1"} 1764633600.25
        relapse_run_timestamp_seconds{scenario="flg-healthcheck-hang",run="2"} 1764633600.25
        # HELP relapse_sli_resolution_seconds The precision of the times to impact, mitigate, serve and recover: the SLI probe interval plus the SLI probe's p99 lateness.
        # TYPE relapse_sli_resolution_seconds gauge
        relapse_sli_resolution_seconds{scenario="flg-healthcheck-hang",run="1"} 0.05
        relapse_sli_resolution_seconds{scenario="flg-healthcheck-hang",run="2"} 0.05
        # HELP relapse_time_to_impact_seconds Time from the fault becoming effective to the first failing SLI check after it, per episode; absent when the SLI never failed.
        # TYPE relapse_time_to_impact_seconds gauge
        relapse_time_to_impact_seconds{scenario="flg-healthcheck-hang",run="1",episode="1"} 0.042125
        relapse_time_to_impact_seconds{scenario="flg-healthcheck-hang",run="1",episode="2"} 0.042125
        # HELP relapse_time_to_detect_seconds Time from the fault becoming effective to the first firing detection signal, per episode; absent when nothing detected it.
        # TYPE relapse_time_to_detect_seconds gauge
        relapse_time_to_detect_seconds{scenario="flg-healthcheck-hang",run="1",episode="1"} 0.748
        relapse_time_to_detect_seconds{scenario="flg-healthcheck-hang",run="1",episode="2"} 1.5
        # HELP relapse_time_to_mitigate_seconds Time from the fault becoming effective to the start of the first steady SLI window while it was still active, per episode; absent when it was not mitigated.
        # TYPE relapse_time_to_mitigate_seconds gauge
        relapse_time_to_mitigate_seconds{scenario="flg-healthcheck-hang",run="1",episode="1"} 0.790001
        # HELP relapse_time_to_recover_seconds Time from the fault's confirmed revert to the SLI serving steadily again and any backlog drained, per episode; absent when it did not recover.
        # TYPE relapse_time_to_recover_seconds gauge
        relapse_time_to_recover_seconds{scenario="flg-healthcheck-hang",run="1",episode="1"} 0.089
        relapse_time_to_recover_seconds{scenario="flg-healthcheck-hang",run="1",episode="2"} 6.085
        # HELP relapse_time_to_serve_seconds Time from the fault's confirmed revert to the SLI serving steadily again, backlog aside, per episode; absent when it did not.
        # TYPE relapse_time_to_serve_seconds gauge
        relapse_time_to_serve_seconds{scenario="flg-healthcheck-hang",run="1",episode="1"} 0.089
        relapse_time_to_serve_seconds{scenario="flg-healthcheck-hang",run="1",episode="2"} 0.034
        # HELP relapse_time_to_drain_seconds Time from the fault's confirmed revert to the backlog being at or under its bound, per episode; absent without a backlog or when it never drained.
        # TYPE relapse_time_to_drain_seconds gauge
        relapse_time_to_drain_seconds{scenario="flg-healthcheck-hang",run="1",episode="2"} 6.085
        # HELP relapse_detect_resolution_seconds How late the detecting source could have noticed: its polling interval, 0 when pushed; absent when nothing detected the episode.
        # TYPE relapse_detect_resolution_seconds gauge
        relapse_detect_resolution_seconds{scenario="flg-healthcheck-hang",run="1",episode="1"} 0.05
        relapse_detect_resolution_seconds{scenario="flg-healthcheck-hang",run="1",episode="2"} 0
        # HELP relapse_episode_sli_samples SLI checks sent from the fault becoming effective until recovery or the end of observation, per episode.
        # TYPE relapse_episode_sli_samples gauge
        relapse_episode_sli_samples{scenario="flg-healthcheck-hang",run="1",episode="1"} 80
        relapse_episode_sli_samples{scenario="flg-healthcheck-hang",run="1",episode="2"} 80
        # HELP relapse_episode_sli_failures Failed SLI checks among relapse_episode_sli_samples, per episode.
        # TYPE relapse_episode_sli_failures gauge
        relapse_episode_sli_failures{scenario="flg-healthcheck-hang",run="1",episode="1"} 15
        relapse_episode_sli_failures{scenario="flg-healthcheck-hang",run="1",episode="2"} 15
    "##]].assert_eq(&exposition(&[(1, &failover), (2, &inconclusive)]));
}

#[test]
fn label_values_are_escaped_backslash_quote_and_newline() {
    let run = inconclusive_run("say \"hi\" \\ then\nmore");
    expect![[r##"
        # HELP relapse_verdict 1 for the run's verdict by its gates (pass, fail, inconclusive or aborted), 0 for the others.
        # TYPE relapse_verdict gauge
        relapse_verdict{scenario="say \"hi\" \\ then\nmore",run="1",verdict="pass"} 0
        relapse_verdict{scenario="say \"hi\" \\ then\nmore",run="1",verdict="fail"} 0
        relapse_verdict{scenario="say \"hi\" \\ then\nmore",run="1",verdict="inconclusive"} 1
        relapse_verdict{scenario="say \"hi\" \\ then\nmore",run="1",verdict="aborted"} 0
        # HELP relapse_outcome 1 for the run's verdict against the scenario's expectation, which the exit code goes by, 0 for the others; equal to relapse_verdict unless the scenario expects its gates to fail.
        # TYPE relapse_outcome gauge
        relapse_outcome{scenario="say \"hi\" \\ then\nmore",run="1",outcome="pass"} 0
        relapse_outcome{scenario="say \"hi\" \\ then\nmore",run="1",outcome="fail"} 0
        relapse_outcome{scenario="say \"hi\" \\ then\nmore",run="1",outcome="inconclusive"} 1
        relapse_outcome{scenario="say \"hi\" \\ then\nmore",run="1",outcome="aborted"} 0
        # HELP relapse_run_duration_seconds How long the run took.
        # TYPE relapse_run_duration_seconds gauge
        relapse_run_duration_seconds{scenario="say \"hi\" \\ then\nmore",run="1"} 14.2505
        # HELP relapse_run_timestamp_seconds When the run started (wall clock), in seconds since the Unix epoch.
        # TYPE relapse_run_timestamp_seconds gauge
        relapse_run_timestamp_seconds{scenario="say \"hi\" \\ then\nmore",run="1"} 1764633600.25
        # HELP relapse_sli_resolution_seconds The precision of the times to impact, mitigate, serve and recover: the SLI probe interval plus the SLI probe's p99 lateness.
        # TYPE relapse_sli_resolution_seconds gauge
        relapse_sli_resolution_seconds{scenario="say \"hi\" \\ then\nmore",run="1"} 0.05
    "##]].assert_eq(&exposition(&[(1, &run)]));
}

#[test]
fn an_expected_failure_has_verdict_fail_and_outcome_pass() {
    let run = expected_failure_run();
    let text = exposition(&[(1, &run)]);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}… in\n{text}"))
            .to_string()
    };
    let labels = r#"scenario="kolab-misleading-errors",run="1""#;
    assert_eq!(
        line(&format!(r#"relapse_verdict{{{labels},verdict="fail"}}"#)),
        format!(r#"relapse_verdict{{{labels},verdict="fail"}} 1"#)
    );
    assert_eq!(
        line(&format!(r#"relapse_outcome{{{labels},outcome="fail"}}"#)),
        format!(r#"relapse_outcome{{{labels},outcome="fail"}} 0"#)
    );
    assert_eq!(
        line(&format!(r#"relapse_outcome{{{labels},outcome="pass"}}"#)),
        format!(r#"relapse_outcome{{{labels},outcome="pass"}} 1"#)
    );
    // Not detected, not mitigated: no sample at all, not NaN, and no family when no episode has one.
    assert!(!text.contains("NaN"), "{text}");
    assert!(!text.contains("relapse_time_to_detect_seconds"), "{text}");
    assert!(!text.contains("relapse_time_to_mitigate_seconds"), "{text}");
}

#[test]
fn seconds_are_written_to_the_microsecond_and_read_back_exactly() {
    for micros in [0_u64, 1, 42_125, 790_001, 1_764_633_600_250_000, 14_250_500] {
        let text = Value::Seconds(Duration::from_micros(micros)).to_string();
        let read: f64 = text.parse().unwrap();
        assert_eq!(read, micros as f64 / 1e6, "{micros} µs written as {text}");
        assert!(!text.contains('e'), "{text}");
    }
    // Below the microsecond is cut off, as in the JSON report.
    assert_eq!(
        Value::Seconds(Duration::from_nanos(1_999)).to_string(),
        "0.000001"
    );
}
