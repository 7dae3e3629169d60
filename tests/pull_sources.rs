//! `relapse run` with `prometheus` and `alertmanager` detection sources whose server never
//! answers: a poll that gets no answer must not count as detected, and a run in which every
//! poll failed shows what the other sources' failures show — nothing detected, a failed
//! `detected` gate, and the warning on stderr. (The sources against a real Prometheus and
//! Alertmanager are tested in `crates/relapse-probe/tests/prometheus.rs`.)

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A process for the fault to freeze, ended by its own pid.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn polls_that_get_no_answer_detect_nothing_and_say_so() {
    // Accepts and closes every connection: the TCP probe connects, every HTTP poll fails.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for connection in acceptor.incoming() {
            drop(connection);
        }
    });
    let sleeper = Sleeper(
        Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"
[scenario]
name = "unanswered-polls"

[[probe]]
name = "tcp"
every = "50ms"
tcp = {{ address = "127.0.0.1:{port}", timeout = "500ms" }}

[steady_state]
probe = "tcp"
window = "500ms"
min_success = 1.0
timeout = "10s"

[[detect]]
name = "query"
prometheus = {{ url = "http://127.0.0.1:{port}", query = "up == 0", every = "50ms" }}

[[detect]]
name = "alerts"
alertmanager = {{ url = "http://127.0.0.1:{port}", match = {{ alertname = "Down" }}, every = "50ms" }}

[[fault]]
name = "freeze"
process_freeze = {{ pid = {pid} }}
start = "100ms"
duration = "500ms"

[limits]
observe_after = "1s"
"#,
            pid = sleeper.0.id()
        ),
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "fail");
    assert!(run["episodes"][0]["time_to_detect_ms"].is_null(), "{run:#}");
    let detected = run["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|gate| gate["name"] == "detected")
        .unwrap_or_else(|| panic!("no `detected` gate: {run:#}"));
    assert_eq!(detected["passed"], false);
    let detections: Vec<&Value> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["event"].as_str().unwrap_or("").contains("detect"))
        .collect();
    assert!(detections.is_empty(), "{detections:?}");
    // Every poll failed, with errors that flip between "reset" and "incomplete response" as the
    // listener's close races the request: one warning for the whole run of failures, not one per
    // poll or per change.
    for source in ["prometheus", "alertmanager"] {
        let warnings = stderr
            .lines()
            .filter(|line| {
                line.contains("WARN")
                    && line.contains("poll failed; it counts neither as firing nor as clear")
                    && line.contains(&format!("{source} http://127.0.0.1:{port}"))
            })
            .count();
        assert_eq!(warnings, 1, "warnings for {source}:\n{stderr}");
    }
}
