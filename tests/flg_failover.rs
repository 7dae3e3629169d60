//! The FLG scenario end to end: the demo's frontend fails over from a frozen primary to its
//! standby; then both are frozen and nothing can fail over; background jobs queue up during each
//! outage and recovery waits until they have drained. Every window below comes from the
//! scenario's own settings, read from the file, not from numbers written here.

use std::path::Path;
use std::process::Command;

use relapse_core::scenario::{BacklogKind, DetectorKind, Scenario};
use serde_json::Value;

fn ms(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("expected milliseconds, found {value}"))
}

fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Slack for scheduling on a loaded 2-core machine: a check or a reading that should start at an
/// instant starts up to this much later (the probe, the frontend's check rounds and the harness
/// all share the two cores).
const SCHEDULING: f64 = 60.0;

struct Settings {
    /// The frontend's check rounds: interval, timeout, fall.
    inter: f64,
    check_timeout: f64,
    fall: f64,
    /// The SLI probe's interval, the resolution of impact, mitigation and recovery.
    every: f64,
    /// The log detection's polling interval.
    log_every: f64,
    /// The monitor (pager): interval and fall; the frontend's upstream timeout.
    monitor_interval: f64,
    monitor_fall: f64,
    upstream: f64,
    /// Jobs: arrivals and service per second, the backlog's bound and reading interval.
    arrivals: f64,
    service: f64,
    backlog_max: f64,
    backlog_every: f64,
}

fn settings(scenario: &Scenario) -> Settings {
    let demo = scenario
        .demo
        .as_ref()
        .expect("the FLG scenario runs the demo");
    let failover = demo.failover.as_ref().expect("the FLG scenario fails over");
    let jobs = demo
        .jobs
        .as_ref()
        .expect("the FLG scenario has background jobs");
    let sli = &scenario.probes[scenario.steady_state.probe];
    let log_every = scenario
        .detectors
        .iter()
        .find_map(|d| match &d.kind {
            DetectorKind::Log { every, .. } => Some(millis(*every)),
            _ => None,
        })
        .expect("a log detection on the frontend's event log");
    let backlog = scenario
        .backlog
        .as_ref()
        .expect("a backlog on the job queue");
    assert!(matches!(backlog.kind, BacklogKind::Metric { .. }));
    Settings {
        inter: millis(failover.inter),
        check_timeout: millis(failover.timeout),
        fall: f64::from(failover.fall),
        every: millis(sli.every),
        log_every,
        monitor_interval: millis(demo.monitor.interval),
        monitor_fall: f64::from(demo.monitor.fall),
        upstream: millis(demo.upstream_timeout),
        // Only the SLI's page views queue jobs (the monitor asks /health).
        arrivals: 1000.0 / millis(sli.every) * f64::from(jobs.per_request),
        service: 1000.0 / millis(jobs.work),
        backlog_max: backlog.max,
        backlog_every: millis(backlog.every),
    }
}

/// When a frozen backend is marked DOWN, after the freeze: the first failing check starts within
/// one round (rounds start every `inter`) and fails `timeout` later; the fall-th failure comes
/// (fall − 1) rounds after the first. So [(fall − 1)·inter + timeout, fall·inter + timeout]; a
/// check that reached the backend an instant before SIGSTOP took effect can only make it later.
fn down_window(s: &Settings) -> (f64, f64) {
    (
        (s.fall - 1.0) * s.inter + s.check_timeout,
        s.fall * s.inter + s.check_timeout,
    )
}

fn run(dir: &Path) -> (Value, String) {
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/flg-healthcheck-hang.toml");
    let json = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    let shown = format!(
        "status {:?}\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let report = std::fs::read_to_string(&json).unwrap_or_else(|_| panic!("no report\n{shown}"));
    (serde_json::from_str(&report).unwrap(), shown)
}

/// The instants (ms since the run started) of the timeline's events of `event` whose detail
/// starts with `prefix`.
fn events(run: &Value, event: &str, prefix: &str) -> Vec<f64> {
    run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["event"] == event && t["detail"].as_str().unwrap_or("").starts_with(prefix))
        .map(|t| ms(&t["at_ms"]))
        .collect()
}

#[test]
fn the_standby_takes_over_then_both_hang_and_recovery_waits_for_the_backlog() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/flg-healthcheck-hang.toml");
    let scenario = relapse_core::scenario::load(&path).unwrap();
    let s = settings(&scenario);
    let dir = tempfile::tempdir().unwrap();
    let (report, shown) = run(dir.path());
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "pass", "{shown}");
    assert_eq!(run["mitigation"], "failover", "{shown}");
    assert!(shown.contains("by failover"), "{shown}");

    let episodes = run["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 2, "{shown}");
    let (one, both) = (&episodes[0], &episodes[1]);
    assert_eq!(one["faults"], serde_json::json!(["primary-hangs"]));
    assert_eq!(
        both["faults"],
        serde_json::json!(["new-primary-hangs", "old-primary-hangs"])
    );
    let (down_early, down_late) = down_window(&s);

    // Hang 1. Time to fail over: the first page view sent after the switch is served by the
    // standby and every one after it, so the steady window starts at most one probe interval
    // after the primary is DOWN.
    let failover = ms(&one["time_to_mitigate_ms"]);
    let (lower, upper) = (down_early, down_late + s.every + SCHEDULING);
    assert!(
        (lower..=upper).contains(&failover),
        "time to fail over {failover} ms outside [{lower}, {upper}]\n{shown}"
    );
    // Detection: the "is DOWN" line is written at the switch, read within one log poll.
    for episode in [one, both] {
        assert_eq!(episode["detected_by"], "failover-log", "{shown}");
        let detect = ms(&episode["time_to_detect_ms"]);
        let upper = down_late + s.log_every + SCHEDULING;
        assert!(
            (down_early..=upper).contains(&detect),
            "time to detect {detect} ms outside [{down_early}, {upper}]\n{shown}"
        );
        // Users saw gateway errors only: the frontend gives up on a frozen backend with 504.
        let statuses = episode["failure_statuses"].as_object().unwrap();
        assert_eq!(statuses.keys().collect::<Vec<_>>(), ["504"], "{shown}");
    }
    let lines: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["event"] == "detection")
        .filter_map(|t| t["detail"].as_str())
        .filter(|d| d.starts_with("failover-log: "))
        .collect();
    assert!(lines[0].contains("backend primary is DOWN"), "{lines:?}");
    assert!(lines[1].contains("is DOWN"), "{lines:?}");

    // The pager: three failed /health checks 500 ms apart take longer than the failover, so it
    // stays quiet in hang 1: only checks sent between the freeze and the switch fail, and a span
    // shorter than (fall − 1)·I holds at most fall − 1 of them. In hang 2 it pages
    // (fall − 1)·I + U to fall·I + U after the freeze, as with one backend.
    let injected_both = ms(&both["injected_at_ms"]);
    let pages = events(run, "detection", "pager: ");
    assert!(
        (s.monitor_fall - 1.0) * s.monitor_interval > down_late + SCHEDULING,
        "the settings let the pager see the failover: the test's premise is gone"
    );
    assert_eq!(pages.len(), 1, "the pager fired {pages:?}\n{shown}");
    let page = pages[0] - injected_both;
    let (lower, upper) = (
        (s.monitor_fall - 1.0) * s.monitor_interval + s.upstream,
        s.monitor_fall * s.monitor_interval + s.upstream + SCHEDULING + 100.0,
    );
    assert!(
        (lower - SCHEDULING..=upper).contains(&page),
        "paged {page} ms after hang 2, outside [{lower}, {upper}]\n{shown}"
    );

    // Hang 2: nothing to fail over to, so no mitigation, and no gate asks for one.
    assert!(both["time_to_mitigate_ms"].is_null(), "{shown}");
    let gates: Vec<&str> = run["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        gates,
        [
            "detect_within[1]",
            "mitigate_within[1]",
            "recover_within[1]",
            "allowed_error_statuses[1]",
            "detect_within[2]",
            "recover_within[2]",
            "allowed_error_statuses[2]"
        ],
        "{shown}"
    );

    // The backlog grew in each outage: in hang 1 the worker waits from the freeze until the
    // switch (at least down_early), in hang 2 for the whole hang.
    let peak_one = ms(&one["backlog"]["peak"]);
    assert!(
        peak_one >= s.arrivals * down_early / 1000.0 - 2.0,
        "hang 1 backlog peaked at {peak_one}\n{shown}"
    );
    let hang = millis(scenario.faults[1].duration);
    let peak_both = ms(&both["backlog"]["peak"]);
    assert!(
        peak_both >= s.arrivals * hang / 1000.0 * 0.8,
        "hang 2 backlog peaked at {peak_both}\n{shown}"
    );
    // Hang 1's jobs ran on the standby while the primary was still frozen: drained at the first
    // reading after the revert. Serving never stopped after the failover.
    let drain_one = ms(&one["time_to_drain_ms"]);
    assert!(drain_one <= s.backlog_every + SCHEDULING, "{shown}");
    assert!(
        ms(&one["time_to_serve_ms"]) <= s.every + SCHEDULING,
        "{shown}"
    );
    // Hang 2: once the backends resume, the worker (after at most its job in flight's timeout
    // and a 50 ms retry pause) runs jobs at up to `service` a second while `arrivals` keep
    // coming. From the peak P (read every backlog_every, so at most arrivals·backlog_every
    // jobs more in truth), the queue is at or under its bound after
    //     (P − max) / (service − arrivals)                      at the earliest, and
    //     (P + arrivals·every − max) / (0.8·service − arrivals) + upstream + 50 ms + reading
    // at the latest, allowing each job a fifth more than its work for its own HTTP round trip.
    let drain = ms(&both["time_to_drain_ms"]);
    let earliest = (peak_both - s.backlog_max) / (s.service - s.arrivals) * 1000.0;
    let latest = (peak_both + s.arrivals * s.backlog_every / 1000.0 - s.backlog_max)
        / (0.8 * s.service - s.arrivals)
        * 1000.0
        + s.upstream
        + 50.0
        + s.backlog_every
        + SCHEDULING;
    assert!(
        (earliest..=latest).contains(&drain),
        "hang 2 drained {drain} ms after the revert, outside [{earliest:.0}, {latest:.0}] for a peak of {peak_both}\n{shown}"
    );
    // Serving came back at once (the resumed backend answers), so recovery is the drain.
    let serve = ms(&both["time_to_serve_ms"]);
    assert!(serve <= s.every + SCHEDULING, "{shown}");
    assert_eq!(ms(&both["time_to_recover_ms"]), drain.max(serve), "{shown}");
    let drained = events(run, "drained", "");
    assert_eq!(drained.len(), 2, "{shown}");
    assert!(
        (drained[1] - ms(&both["reverted_at_ms"]) - drain).abs() < 1.0,
        "{shown}"
    );

    // Nothing is left: no process of the run stopped, the journal empty.
    let runs = dir.path().join("state/runs");
    assert!(
        std::fs::read_dir(&runs).map_or(true, |mut d| d.next().is_none()),
        "the journal still holds {runs:?}"
    );
}
