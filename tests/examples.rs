//! The examples under `scenarios/examples/`, run against the real software they name, which
//! relapse starts for each run (`[[target.process]]`). Each window below is derived in the
//! example's own comments from its software's settings; the numbers are repeated here.

use std::path::PathBuf;

use serde_json::Value;

mod support;
use support::*;

fn ms(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn nginx_in_front_of_the_demo_answers_504_for_a_hung_upstream_and_logs_it() {
    let _serial = one_at_a_time();
    let (output, run, dir) = run_shipped("scenarios/examples/nginx-upstream-hang.toml");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let episode = &run["episodes"][0];
    assert_eq!(episode["detected_by"], "nginx-error-log", "{run}");
    // nginx logs the timeout `proxy_read_timeout` (500 ms) after it sent the first request the
    // frozen frontend leaves unanswered. That request went out at most one SLI interval (50 ms)
    // after the freeze, or up to one interval before it if it was still in flight (a request
    // takes ~3 ms; the interval is a generous bound); the log is read every 20 ms. So 450 ms to
    // 500 + 50 + 20 ms, plus 150 ms for scheduling on a loaded 2-core machine.
    let detect = ms(&episode["time_to_detect_ms"]);
    assert!(
        (450.0..=720.0).contains(&detect),
        "time to detect {detect} ms\n{run}"
    );
    // What users saw was nginx's own answer to a hung upstream.
    let statuses = episode["failure_statuses"].as_object().unwrap();
    assert_eq!(statuses.keys().collect::<Vec<_>>(), ["504"], "{run}");

    // The process: named in the report, stopped by its signal, its output kept.
    let process = &run["processes"][0];
    assert_eq!(process["name"], "nginx");
    let ended = process["ended"].as_str().unwrap();
    assert!(ended.starts_with("stopped by SIGQUIT"), "{ended}");
    let state = dir.path().join("state");
    let run_dir = PathBuf::from(run["run_dir"].as_str().unwrap());
    assert!(run_dir.starts_with(&state), "{}", run_dir.display());
    let log = PathBuf::from(process["log"].as_str().unwrap());
    assert_eq!(log.parent(), Some(run_dir.as_path()));
    let output_text = std::fs::read_to_string(&log).unwrap();
    assert!(output_text.contains("upstream timed out"), "{output_text}");
    // The config was rendered: its variables filled in, its own braces kept.
    let config = std::fs::read_to_string(run_dir.join("nginx.conf")).unwrap();
    assert!(
        !config.contains("{port.web}") && !config.contains("{run.dir}"),
        "{config}"
    );
    assert!(config.contains("server {"), "{config}");
    assert_processes_gone(&run, &state);
}

#[test]
fn haproxy_fails_over_from_a_frozen_primary_within_the_window_its_checks_imply() {
    let _serial = one_at_a_time();
    let (output, run, dir) = run_shipped("scenarios/examples/haproxy-failover.toml");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let episode = &run["episodes"][0];
    // From the example's settings (inter 200 ms, fall 2, timeout connect 100 ms, timeout check
    // 150 ms): HAProxy marks the primary DOWN 400 to 650 ms after the freeze. The first SLI check
    // after that (every 20 ms) succeeds on the backup; the log is read every 10 ms. Slack: 15 ms
    // early (HAProxy's millisecond timers, a request in flight), 40 ms late (scheduling).
    let mitigate = ms(&episode["time_to_mitigate_ms"]);
    assert!(
        (385.0..=650.0 + 20.0 + 40.0).contains(&mitigate),
        "time to mitigate {mitigate} ms\n{run}"
    );
    let detect = ms(&episode["time_to_detect_ms"]);
    assert!(
        (385.0..=650.0 + 10.0 + 40.0).contains(&detect),
        "time to detect {detect} ms\n{run}"
    );
    assert_eq!(run["mitigation"], "failover");
    // Failover came from HAProxy's DOWN, which the log detection saw: the two are within one
    // SLI interval and one log poll of each other.
    assert!(
        (mitigate - detect).abs() <= 20.0 + 10.0 + 15.0,
        "{mitigate} vs {detect}"
    );
    let names: Vec<&str> = run["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["primary", "standby", "haproxy"]);
    assert_processes_gone(&run, &dir.path().join("state"));
}

/// When each detection source first fired, after the fault took effect: from the timeline.
fn first_detections(run: &Value) -> Vec<(String, f64)> {
    let injected = ms(&run["episodes"][0]["injected_at_ms"]);
    let mut seen: Vec<(String, f64)> = Vec::new();
    for entry in run["timeline"].as_array().unwrap() {
        if entry["event"] != "detection" {
            continue;
        }
        let detail = entry["detail"].as_str().unwrap();
        let source = detail.split(':').next().unwrap().to_string();
        if !seen.iter().any(|(s, _)| *s == source) {
            seen.push((source, ms(&entry["at_ms"]) - injected));
        }
    }
    seen
}

#[test]
fn a_real_monitoring_pipeline_pages_and_the_pull_sources_see_it_beside_the_push() {
    let _serial = one_at_a_time();
    let (output, run, dir) = run_shipped("scenarios/examples/prometheus-paging.toml");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let detections = first_detections(&run);
    let at = |source: &str| {
        detections
            .iter()
            .find(|(s, _)| s == source)
            .unwrap_or_else(|| panic!("{source} never fired: {detections:?}\n{run}"))
            .1
    };
    // From the example's settings (scrape and evaluation 200 ms, probe timeout 150 ms, `for:
    // 1s`, group_wait 100 ms, pulls every 100 ms), with 100 ms early and 500 ms late slack:
    // the query once a scrape's probe timed out, 0 to 200 + 150 + 100 ms;
    let (promql, api, pager) = (at("promql"), at("alertmanager-api"), at("pager"));
    assert!(
        (0.0..=450.0 + 500.0).contains(&promql),
        "promql {promql} ms"
    );
    // the alert in Alertmanager, `for` after the evaluation that saw the failure: 1 s to
    // 200 + 150 + 200 + 1000 + 100 ms;
    assert!(
        (900.0..=1650.0 + 500.0).contains(&api),
        "alertmanager {api} ms"
    );
    // the webhook, `group_wait` after Alertmanager had the alert: 1.1 s to 1.65 s, pushed.
    assert!(
        (1000.0..=1650.0 + 500.0).contains(&pager),
        "pager {pager} ms"
    );
    // The pull and the push saw the same alert: the push `group_wait` (100 ms) after it
    // reached Alertmanager, the pull within one poll (100 ms) of that.
    assert!(
        (pager - api).abs() <= 100.0 + 100.0 + 50.0,
        "pager {pager} vs api {api}"
    );
    // The run's time to detect is the first of them: the query.
    assert_eq!(run["episodes"][0]["detected_by"], "promql", "{run}");
    eprintln!("time to detect: promql {promql:.1} ms, alertmanager-api {api:.1} ms, pager (push) {pager:.1} ms");
    assert_processes_gone(&run, &dir.path().join("state"));
}
