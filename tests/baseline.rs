//! End to end: a baseline saved from 5 runs on the embedded demo, then compared with 5 runs of
//! the same scenario whose monitor pages later. Real processes, real sockets, own temp dirs.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The monitor checks the frontend's /health every I = 100 ms; with the backend frozen the
/// frontend answers 503 after U = upstream_timeout = 50 ms; the monitor pages after `fall`
/// failures in a row. The first failing check is sent within one interval of the freeze, so the
/// page comes (fall − 1)·I + U to fall·I + U after it: 250–350 ms with fall = 3, 550–650 ms with
/// fall = 6. Raising fall from 3 to 6 moves time to detect by (6 − 3)·I = 300 ms and nothing
/// else: recovery is the SLI's, within one probe interval (50 ms) of the revert either way.
/// The freeze lasts 1.2 s, so even fall = 6 pages well before the revert.
///
/// The monitor's checks are paced by its own timer, which on a busy machine sends one a few
/// milliseconds late. If the first failing check is the late one and the later ones are on time,
/// the page comes that much sooner: the lower bound allows M = 20 ms of it (seen: 7 ms in CI).
fn scenario(fall: u32, every: &str) -> String {
    format!(
        r#"
[scenario]
name = "baseline-freeze"

[target.demo]
upstream_timeout = "50ms"
monitor = {{ interval = "100ms", timeout = "80ms", fall = {fall}, rise = 2, alertname = "BaselineDown" }}

[[probe]]
name = "webmail"
every = "{every}"
http = {{ url = "{{demo.url}}/", timeout = "1s", expect = [200] }}

[steady_state]
probe = "webmail"
window = "1s"
min_success = 0.95
timeout = "15s"

[[detect]]
name = "pager"
webhook = {{ match = {{ alertname = "BaselineDown" }} }}

[[fault]]
name = "backend-freezes"
process_freeze = {{ demo = "backend" }}
start = "200ms"
duration = "1200ms"

[limits]
observe_after = "3s"
max_run = "30s"
"#
    )
}

fn relapse(dir: &Path, scenario_text: &str, args: &[&str]) -> Output {
    let file = dir.join("scenario.toml");
    std::fs::write(&file, scenario_text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&file)
        .args(args)
        .env("RELAPSE_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let runs = dir.join("state/runs");
    let left = std::fs::read_dir(&runs).map_or(0, |d| d.count());
    assert_eq!(left, 0, "journal not empty\n{}", show(&output));
    output
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ms(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("expected milliseconds, found {value}"))
}

fn time<'a>(scenario: &'a Value, name: &str) -> &'a Value {
    scenario["episodes"][0]["times"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["time"] == name)
        .unwrap_or_else(|| panic!("no {name} in {scenario}"))
}

#[test]
fn a_monitor_that_pages_later_is_a_regression_of_time_to_detect_only() {
    let dir = tempfile::tempdir().unwrap();
    let saved = relapse(
        dir.path(),
        &scenario(3, "50ms"),
        &["--repeat", "5", "--save-baseline", "release-1", "-q"],
    );
    assert_eq!(saved.status.code(), Some(0), "{}", show(&saved));
    let path = dir
        .path()
        .join("state/baselines/release-1/baseline-freeze.json");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(stored["relapse_baseline"], 1);
    assert_eq!(stored["runs"], 5);
    assert_eq!(stored["key"]["sli_interval_ms"], 50.0);
    let detect = stored["episodes"][0]["times"]["time_to_detect"]["samples_ms"]
        .as_array()
        .unwrap();
    assert_eq!(detect.len(), 5);
    for sample in detect {
        // 250–350 ms as derived above, less M below, and 100 ms above for the alert's
        // delivery and scheduling.
        let sample = ms(sample);
        assert!(
            (230.0..450.0).contains(&sample),
            "time to detect {sample} ms"
        );
    }

    // A missing baseline is refused before anything runs.
    let missing = relapse(
        dir.path(),
        &scenario(3, "50ms"),
        &["--baseline", "release-0"],
    );
    assert_eq!(missing.status.code(), Some(2), "{}", show(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no usable baseline \"release-0\""),
        "{}",
        show(&missing)
    );

    let json = dir.path().join("report.json");
    let junit = dir.path().join("junit.xml");
    let compared = relapse(
        dir.path(),
        &scenario(6, "50ms"),
        &[
            "--repeat",
            "5",
            "--baseline",
            "release-1",
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&compared.stdout);
    // The runs themselves pass (no absolute limit on time to detect); the comparison fails.
    assert_eq!(compared.status.code(), Some(1), "{}", show(&compared));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["verdict"] == "pass"));
    let c = &report["comparison"];
    assert_eq!(c["baseline"], "release-1");
    assert_eq!(c["verdict"], "fail");
    assert_eq!(c["resamples"], 10_000);
    let s = &c["scenarios"][0];
    assert_eq!(s["verdict"], "fail", "{s}");
    assert!(
        s["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("the scenario file changed since the baseline"),
        "{s}"
    );
    let detect = time(s, "time_to_detect");
    assert_eq!(detect["verdict"], "regressed", "{detect}\n{stdout}");
    // The medians move by 300 ms; each sample lies anywhere in its 100 ms window, so the
    // difference of medians is 300 ± 100 ms (and ± 50 ms more for delivery).
    let shift = ms(&detect["new_median_ms"]) - ms(&detect["baseline_median_ms"]);
    assert!(
        (150.0..450.0).contains(&shift),
        "shift {shift} ms\n{stdout}"
    );
    let recover = time(s, "time_to_recover");
    assert_eq!(recover["verdict"], "no change", "{recover}\n{stdout}");
    // The time's resolution: one probe interval (50 ms) plus the SLI probe's p99 lateness (a
    // few milliseconds; 25 ms is a loaded 2-core machine's allowance), above 5 % of ~40 ms.
    let threshold = ms(&recover["threshold_ms"]);
    assert!(
        (50.0..=75.0).contains(&threshold),
        "threshold {threshold} ms: one probe interval and its lateness"
    );
    assert_eq!(time(s, "time_to_mitigate")["verdict"], "not measured");
    let junit = std::fs::read_to_string(&junit).unwrap();
    assert!(
        junit.contains("name=\"regression:time_to_detect[1]\"")
            && junit.contains("type=\"regression\""),
        "{junit}"
    );
    assert!(
        stdout.contains("comparison with baseline \"release-1\""),
        "{stdout}"
    );
    println!("{stdout}");

    // Another SLI probe interval: not comparable, and the report says which part differs.
    let other = relapse(
        dir.path(),
        &scenario(3, "100ms"),
        &["--baseline", "release-1", "-q"],
    );
    assert_eq!(other.status.code(), Some(3), "{}", show(&other));
    assert!(
        String::from_utf8_lossy(&other.stdout)
            .contains("not compared: SLI probe interval differs: baseline 50ms, now 100ms"),
        "{}",
        show(&other)
    );
}
