//! A real HAProxy (Debian's package; `.ci/run` installs it and nginx-light) in front of two real
//! nginx backends, a primary and a `backup` server, on loopback. relapse freezes the primary with
//! `process_freeze`; HAProxy's health checks mark it DOWN and traffic moves to the standby. The
//! test derives from HAProxy's own settings when that must happen, and checks that relapse's time
//! to mitigate lies in that window, and that its log detection on HAProxy's "is DOWN" line comes
//! within one poll of the instant HAProxy wrote the line.
//!
//! Every process the test starts is a child of the test, ended by its pid on every path.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

#[path = "haproxy/stack.rs"]
mod stack;
use stack::*;

// ---------------------------------------------------------------------------------------------
// The settings: every number below goes into HAProxy's, nginx's or the scenario's configuration,
// and the windows the test asserts are computed from the same constants.

/// HAProxy's `inter`: the gap between the end of one health check and the start of the next.
const INTER: Duration = Duration::from_millis(200);
/// HAProxy's `fall`: failed checks in a row that mark a server DOWN.
const FALL: u32 = 2;
/// HAProxy's `rise`: good checks in a row that mark it UP again.
const RISE: u32 = 2;
/// HAProxy's `timeout connect`.
const TIMEOUT_CONNECT: Duration = Duration::from_millis(100);
/// HAProxy's `timeout check`; unlike the connect bound, so the log tells which one ended a check.
const TIMEOUT_CHECK: Duration = Duration::from_millis(150);
/// HAProxy's `timeout server`: how long a request parked on the frozen primary waits (then 504).
const TIMEOUT_SERVER: Duration = Duration::from_secs(1);
/// nginx's listen backlog: small, so the frozen primary's accept queue fills within a few
/// requests.
const BACKLOG: u32 = 4;

/// The SLI probe's interval, and its timeout (longer than `timeout server`, so a request parked
/// on the frozen primary fails with HAProxy's 504 rather than the probe's own timeout).
const PROBE_EVERY: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often relapse's log detector reads HAProxy's log.
const LOG_POLL: Duration = Duration::from_millis(10);
/// The steady-state window W.
const STEADY_WINDOW: Duration = Duration::from_millis(500);

/// How much earlier than derived an instant may come: HAProxy's timers count in whole
/// milliseconds, and each of a chain of timers may fire up to 1 ms early.
const EARLY_SLACK: Duration = Duration::from_millis(5);
/// How long a probe check may take from its stamp ("sent") to HAProxy's choice of a server: while
/// every pooled connection is parked on the primary it opens a fresh one, so a connect and an
/// accept come first. A check stamped that much before the DOWN may still reach the standby.
const REQUEST_IN_FLIGHT: Duration = Duration::from_millis(10);
/// How much later: timers, tasks and threads that wake late on a loaded two-core machine.
const LATE_SLACK: Duration = Duration::from_millis(40);
/// How late past the poll that found it a detection may come: the read, on tokio's blocking
/// pool, and the wakeup.
const DETECT_SLACK: Duration = Duration::from_millis(15);
/// The report's wall clock (`started`) has millisecond precision: mapping HAProxy's timestamp
/// onto relapse's clock is good to about that.
const WALL_CLOCK_PRECISION: Duration = Duration::from_millis(2);

/// Upper bound for a process to start and serve; generous, for a loaded CI machine.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How often a readiness poll looks again.
const READY_POLL: Duration = Duration::from_millis(10);

/// An interval of time after the freeze.
#[derive(Debug, Clone, Copy)]
struct Window {
    lower: Duration,
    upper: Duration,
}

impl Window {
    fn contains_ms(&self, ms: f64) -> bool {
        (millis(self.lower)..=millis(self.upper)).contains(&ms)
    }

    /// This window opened `early` earlier and closed `late` later.
    fn widened(self, early: Duration, late: Duration) -> Window {
        Window {
            lower: self.lower.saturating_sub(early),
            upper: self.upper + late,
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:?}, {:?}]", self.lower, self.upper)
    }
}

/// When HAProxy marks the frozen primary DOWN, after the instant F the freeze became effective.
/// From HAProxy 2.6's source:
///
/// - Scheduling (src/check.c, `process_chk_conn`): when a check ends, the next one is due at
///   now + `srv_getinter()` (plus a random spread only with `spread-checks`, which is off).
///   `srv_getinter()` (src/server.c) is `inter` while the server is fully up, `fastinter` while
///   it is changing state, `downinter` while it is down, each falling back to `inter`: we set
///   neither, so every gap between checks is INTER. A good check takes well under 1 ms here.
/// - A check's bound (src/tcpcheck.c, `tcpcheck_eval_connect`): with `timeout check` set, the
///   connection may take min(`inter`, `timeout connect`); once it is established, the rest of the
///   check has `timeout check`.
/// - `fall` failures in a row take the health from `rise + fall - 1` to under `rise`: DOWN.
///
/// A frozen nginx does not answer, but its kernel still completes handshakes into its listen
/// queue until that holds BACKLOG + 1 connections, and then drops SYNs. A failing check thus
/// ends one of two ways: admitted to the queue, its `GET /health` is never answered and it ends
/// by `timeout check` ("Layer7 timeout"); or the queue is full, its SYN is dropped (the kernel
/// resends it only after 1 s) and it ends by the connect bound ("Layer4 timeout"). The queue
/// fills fast: after the freeze every SLI request HAProxy forwards stays parked on a connection
/// of its own, so HAProxy opens a new one to the primary for each, and BACKLOG + 1 of them
/// ((BACKLOG + 1) · PROBE_EVERY = 100 ms of probing) fill the queue; a slot is never freed while
/// nginx is frozen, since only accept() frees one. So:
///
/// - the first failing check starts at S1 in [F, F + INTER] (the one after the last good check;
///   a check in flight at F started at most a good check's duration before F) and may end
///   either way, after D1 in [min(connect bound, TIMEOUT_CHECK), max(…)];
/// - each later one starts INTER after the previous one ended, at least INTER + D1 after F,
///   when the queue has long been full: it ends by the connect bound (the test checks this in
///   HAProxy's log).
///
/// DOWN − F = (S1 − F) + D1 + (FALL − 1) · (INTER + connect bound): with the settings above,
/// [100 + 300, 200 + 150 + 300] = [400 ms, 650 ms].
fn marked_down_window() -> Window {
    let connect_bound = TIMEOUT_CONNECT.min(INTER);
    let later_checks = (INTER + connect_bound) * (FALL - 1);
    Window {
        lower: connect_bound.min(TIMEOUT_CHECK) + later_checks,
        upper: INTER + connect_bound.max(TIMEOUT_CHECK) + later_checks,
    }
}

/// relapse's time to mitigate: the start of the first steady window after the impact. With
/// `min_success = 1` that window starts at the first SLI check sent after the last failed one.
/// Until the DOWN, HAProxy sends every request to the primary, where it fails (`retries 0`, so
/// no retry can reach the standby after the DOWN and turn an earlier request into a success);
/// from the DOWN on, to the standby, where it succeeds. So the first check sent after the DOWN
/// marks the mitigation: within one PROBE_EVERY of it (or a request in flight before it).
fn mitigation_window() -> Window {
    marked_down_window().widened(EARLY_SLACK + REQUEST_IN_FLIGHT, PROBE_EVERY + LATE_SLACK)
}

/// relapse's time to recover. The standby serves across the revert: the primary stays DOWN until
/// RISE good checks, and serves again after them. So the first steady window after the revert
/// starts at the first SLI check sent after it, within one PROBE_EVERY.
fn recovery_window() -> Window {
    Window {
        lower: Duration::ZERO,
        upper: PROBE_EVERY + LATE_SLACK,
    }
}

/// relapse's time to detect, given the instant HAProxy wrote its DOWN line: the log detector
/// reads the file every LOG_POLL and fires on the first read that finds the line.
fn detection_window(line_written_ms: f64) -> (f64, f64) {
    (
        line_written_ms - millis(WALL_CLOCK_PRECISION),
        line_written_ms + millis(LOG_POLL + DETECT_SLACK),
    )
}

// ---------------------------------------------------------------------------------------------
// Clocks

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ms(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// A wall-clock instant as milliseconds since the epoch (an f64 keeps them to a fraction of a
/// microsecond).
fn epoch_ms(instant: SystemTime) -> f64 {
    millis(instant.duration_since(UNIX_EPOCH).unwrap())
}

/// The wall-clock instant at the start of one of HAProxy's `iso` log lines:
/// `2026-01-31T12:00:00.123456+01:00 …`, local time and its offset from UTC, to the microsecond.
/// HAProxy reads the clock (gettimeofday) for each line as it writes it.
fn haproxy_timestamp(line: &str) -> f64 {
    let stamp = line.split(' ').next().unwrap();
    assert_eq!(stamp.len(), 32, "not an iso timestamp: {line}");
    let (local, offset) = stamp.split_at(26);
    let as_if_utc = humantime::parse_rfc3339(&format!("{local}Z"))
        .unwrap_or_else(|error| panic!("{error}: {line}"));
    let hours: u64 = offset[1..3].parse().unwrap();
    let minutes: u64 = offset[4..6].parse().unwrap();
    let offset_from_utc = Duration::from_secs(hours * 3600 + minutes * 60);
    epoch_ms(match &offset[..1] {
        "+" => as_if_utc - offset_from_utc,
        _ => as_if_utc + offset_from_utc,
    })
}

/// The `check duration: 100ms` of one of HAProxy's health check lines.
fn check_duration(line: &str) -> Duration {
    let (_, after) = line
        .split_once("check duration: ")
        .unwrap_or_else(|| panic!("no check duration: {line}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    Duration::from_millis(digits.parse().unwrap())
}

// ---------------------------------------------------------------------------------------------
// The test

fn scenario(
    frontend: u16,
    haproxy_log: &Path,
    primary_pid: u32,
    fault_from: Duration,
    fault_for: Duration,
) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    format!(
        r#"[scenario]
name = "haproxy-failover"
description = "The primary behind HAProxy freezes; HAProxy's checks fail over to the backup"

[[probe]]
name = "through-haproxy"
every = "{every}"
http = {{ url = "http://127.0.0.1:{frontend}/", timeout = "{probe_timeout}", expect = [200] }}

[steady_state]
probe = "through-haproxy"
window = "{window}"
min_success = 1.0
timeout = "10s"

[[detect]]
name = "haproxy-log"
log = {{ path = {log:?}, pattern = "Server web/primary is DOWN", every = "{poll}" }}

[[fault]]
name = "freeze-primary"
process_freeze = {{ pid = {primary_pid} }}
start = "{fault_from}"
duration = "{fault_for}"

[gates]
detect_within = "5s"
mitigate_within = "5s"
recover_within = "5s"

[limits]
max_run = "30s"
observe_after = "5s"
"#,
        every = ms(PROBE_EVERY),
        probe_timeout = ms(PROBE_TIMEOUT),
        window = ms(STEADY_WINDOW),
        log = haproxy_log.display().to_string(),
        poll = ms(LOG_POLL),
        fault_from = ms(fault_from),
        fault_for = ms(fault_for),
    )
}

#[test]
fn a_frozen_primary_behind_haproxy_fails_over_to_the_backup_within_the_window_its_checks_imply() {
    // Declared first, dropped last: the processes end before their files go.
    let dir = tempfile::tempdir().unwrap();
    let mut children = Children::default();

    let primary = start_nginx(&dir.path().join("primary"), "primary", &mut children);
    let standby = start_nginx(&dir.path().join("standby"), "standby", &mut children);
    let haproxy_log = dir.path().join("haproxy.log");
    let haproxy = start_haproxy(
        dir.path(),
        &haproxy_log,
        (primary.port, standby.port),
        &mut children,
    );

    let down = marked_down_window();
    let mitigation = mitigation_window();
    let recovery = recovery_window();
    // relapse injects a fixed time after the steady state it confirms, which comes a fixed time
    // after HAProxy's first checks, so without this the freeze would meet HAProxy's check cycle
    // at about the same phase in every run. A random delay within one cycle spreads it.
    let fault_from = Duration::from_millis(rand::random_range(0..INTER.as_millis() as u64));
    // The fault lasts until every request parked on the primary has had its 504 (a late answer
    // after the revert would turn a request sent before the DOWN into a success), and until a
    // whole steady window fits after the latest mitigation; then some room.
    let fault_for = (down.upper + TIMEOUT_SERVER).max(mitigation.upper + STEADY_WINDOW)
        + Duration::from_millis(300);
    let toml = scenario(
        haproxy.port,
        &haproxy_log,
        primary.pid,
        fault_from,
        fault_for,
    );
    let scenario_path = dir.path().join("haproxy-failover.toml");
    fs::write(&scenario_path, toml).unwrap();

    let report_path = dir.path().join("report.json");
    let state = dir.path().join("state");
    let output = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&scenario_path)
        .arg("--json")
        .arg(&report_path)
        .env("RELAPSE_STATE_DIR", &state)
        .output()
        .unwrap();
    let logged = fs::read_to_string(&haproxy_log).unwrap();
    let shown = format!(
        "{}\n{}\nHAProxy's log:\n{logged}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let report: Value = serde_json::from_str(&fs::read_to_string(&report_path).unwrap()).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "pass", "{shown}");
    let episode = &run["episodes"][0];

    // The freeze is over and nothing of the run is left: the primary runs (not `T`), and the
    // journal holds no run.
    let state_after = process_state(primary.pid);
    assert!(
        state_after != 'T' && state_after != 't',
        "the primary is left stopped\n{shown}"
    );
    let runs_left = fs::read_dir(state.join("runs")).map_or(0, |runs| runs.count());
    assert_eq!(runs_left, 0, "the journal is not empty\n{shown}");

    // HAProxy's own account. Its DOWN line carries the microsecond it was written; the report's
    // wall clock (`started`, plus the monotonic offset of the injection) puts the freeze on the
    // same clock. This is the independent instant: the writer's own, not a second poller of the
    // file (the test's own observer would be the same kind of thing as the detector under test).
    let lines: Vec<&str> = logged.lines().collect();
    let down_index = lines
        .iter()
        .position(|line| line.contains("Server web/primary is DOWN"))
        .unwrap_or_else(|| panic!("HAProxy never marked the primary DOWN\n{shown}"));
    let started = humantime::parse_rfc3339(run["started"].as_str().unwrap()).unwrap();
    let frozen_at = epoch_ms(started) + ms(&episode["injected_at_ms"]);
    let line_written_ms = haproxy_timestamp(lines[down_index]) - frozen_at;
    let failed_checks: Vec<&str> = lines[..down_index]
        .iter()
        .copied()
        .filter(|line| line.contains("Health check for server web/primary failed"))
        .filter(|line| haproxy_timestamp(line) > frozen_at)
        .collect();

    let mitigate = ms(&episode["time_to_mitigate_ms"]);
    let detect = ms(&episode["time_to_detect_ms"]);
    let recover = ms(&episode["time_to_recover_ms"]);
    let (earliest, latest) = detection_window(line_written_ms);
    println!(
        "freeze {fault_from:?} after steady state. HAProxy marked the primary DOWN \
         {line_written_ms:.3} ms after the freeze (derived: {down}); relapse: time to mitigate \
         {mitigate:.3} ms (window {mitigation}), time to detect {detect:.3} ms (window \
         [{earliest:.3}, {latest:.3}]), time to recover {recover:.3} ms (window {recovery})"
    );
    for line in &failed_checks {
        println!("  {line}");
    }

    // The derivation's premise: every check after the first ended by the connect bound, because
    // the frozen primary's listen queue had filled.
    assert_eq!(failed_checks.len(), FALL as usize, "{shown}");
    let connect_bound = TIMEOUT_CONNECT.min(INTER);
    for check in &failed_checks[1..] {
        let took = check_duration(check);
        assert!(
            check.contains("reason: Layer4 timeout")
                && (connect_bound - EARLY_SLACK..=connect_bound + LATE_SLACK).contains(&took),
            "a later check did not end by the connect bound ({connect_bound:?}): {check}\n{shown}"
        );
    }
    let down_seen = down.widened(EARLY_SLACK, LATE_SLACK);
    assert!(
        down_seen.contains_ms(line_written_ms),
        "HAProxy marked the primary DOWN {line_written_ms} ms after the freeze, outside \
         {down_seen}\n{shown}"
    );

    // relapse's time to mitigate lies in the window HAProxy's settings imply, and, closer, within
    // one probe interval after the DOWN HAProxy logged.
    assert!(
        mitigation.contains_ms(mitigate),
        "time to mitigate {mitigate} ms outside {mitigation}\n{shown}"
    );
    let after_down = mitigate - line_written_ms;
    assert!(
        (-millis(REQUEST_IN_FLIGHT)..=millis(PROBE_EVERY + LATE_SLACK)).contains(&after_down),
        "time to mitigate {after_down} ms after HAProxy's DOWN\n{shown}"
    );

    // The log detector saw HAProxy's DOWN line within one poll of its writing.
    assert_eq!(episode["detected_by"], "haproxy-log", "{shown}");
    assert!(
        (earliest..=latest).contains(&detect),
        "time to detect {detect} ms, the line was written at {line_written_ms} ms: outside \
         [{earliest}, {latest}]\n{shown}"
    );

    // Recovery came with the first check after the revert; and once the primary is UP again,
    // HAProxy serves from it.
    assert!(
        recovery.contains_ms(recover),
        "time to recover {recover} ms outside {recovery}\n{shown}"
    );
    let deadline = Instant::now() + READY_WITHIN;
    while !http_get(haproxy.port, "/").is_ok_and(|(_, answer)| answer == "primary\n") {
        assert!(
            Instant::now() < deadline,
            "HAProxy did not serve the primary again\n{}",
            fs::read_to_string(&haproxy_log).unwrap()
        );
        std::thread::sleep(READY_POLL);
    }
}
