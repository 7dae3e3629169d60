//! End-to-end tests of the `relapse` binary: real processes, real sockets, the real demo target.
//! Each test has its own temp dir and its own demo on 127.0.0.1:0; nothing is shared.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn relapse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relapse"));
    command.stdin(Stdio::null());
    command
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

fn ms(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("expected milliseconds, found {value}"))
}

/// Runs scenario text from a temp dir with JSON and JUnit reports; returns the output and both.
fn run_scenario(dir: &Path, scenario_text: &str) -> (Output, Value, String) {
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, scenario_text).unwrap();
    let json = dir.join("report.json");
    let junit = dir.join("junit.xml");
    let output = relapse()
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|_| panic!("no JSON report\n{}", show(&output)));
    let junit = std::fs::read_to_string(&junit).unwrap_or_default();
    (output, serde_json::from_str(&report).unwrap(), junit)
}

/// A process the test starts and ends by its own pid; never left stopped.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.trim_start().chars().next().unwrap()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port with a listener behind it: connects succeed (the kernel completes the handshake).
fn listening_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// A scenario that freezes `pid` while a TCP probe watches `port`.
fn freeze_scenario(pid: u32, port: u16, steady_timeout: &str, duration: &str) -> String {
    format!(
        r#"
[scenario]
name = "freeze-a-sleeper"

[[probe]]
name = "tcp"
every = "50ms"
tcp = {{ address = "127.0.0.1:{port}", timeout = "500ms" }}

[steady_state]
probe = "tcp"
window = "500ms"
min_success = 1.0
timeout = "{steady_timeout}"

[[fault]]
name = "freeze"
process_freeze = {{ pid = {pid} }}
start = "100ms"
duration = "{duration}"

[gates]
recover_within = "1s"

[limits]
observe_after = "3s"
"#
    )
}

#[test]
fn the_flg_scenario_passes_and_detection_lies_in_the_window_the_monitor_implies() {
    let dir = tempfile::tempdir().unwrap();
    let path = repo("scenarios/flg-healthcheck-hang.toml");
    let scenario = relapse_core::scenario::load(&path).unwrap();
    let (output, report, junit) =
        run_scenario(dir.path(), &std::fs::read_to_string(&path).unwrap());
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "pass");
    assert_eq!(report["relapse_report"], 1);

    // The window for time to detect, from the demo monitor's own settings.
    // The monitor checks /health every I; the frontend answers 503 after waiting U for the frozen
    // backend (U < the monitor's timeout, so the 503 decides); the monitor pages on the fall-th
    // failed check in a row, at once. The first failing check is the first one sent after the
    // freeze, at s1 in [t_inject - e, t_inject + I): e covers a check that reached the backend an
    // instant before SIGSTOP took effect, at most the few ms a healthy check takes. The page is
    // then sent at s1 + (fall - 1) * I + U. So
    //     (fall - 1) * I + U - e  <=  TTD  <=  fall * I + U + d,
    // with d = 100 ms for delivering the page on a loaded 2-core machine. Detection is pushed to
    // the sink, so the SLI probe's resolution does not widen this window.
    let demo = scenario.demo.as_ref().unwrap();
    let (interval, fall, upstream) = (
        demo.monitor.interval.as_secs_f64() * 1000.0,
        f64::from(demo.monitor.fall),
        demo.upstream_timeout.as_secs_f64() * 1000.0,
    );
    assert!(upstream < demo.monitor.timeout.as_secs_f64() * 1000.0);
    let (e, d) = (10.0, 100.0);
    let lower = (fall - 1.0) * interval + upstream - e;
    let upper = fall * interval + upstream + d;
    let resolution = scenario.probes[scenario.steady_state.probe]
        .every
        .as_secs_f64()
        * 1000.0;

    let episodes = run["episodes"].as_array().unwrap();
    assert_eq!(
        episodes.len(),
        2,
        "the FLG scenario hangs the backend twice"
    );
    for episode in episodes {
        let ttd = ms(&episode["time_to_detect_ms"]);
        assert!(
            (lower..=upper).contains(&ttd),
            "TTD {ttd} ms outside [{lower}, {upper}] ms"
        );
        assert_eq!(episode["detected_by"], "pager");
        // Impact and recovery are seen by the SLI probe, so they are bounded by its interval:
        // the first check after the freeze fails, the first after the resume succeeds.
        let tti = ms(&episode["time_to_impact_ms"]);
        assert!(tti <= 2.0 * resolution, "TTI {tti} ms > 2 probe intervals");
        let ttr = ms(&episode["time_to_recover_ms"]);
        assert!(ttr <= 2.0 * resolution, "TTR {ttr} ms > 2 probe intervals");
        assert_eq!(ms(&episode["resolution_ms"]), resolution);
        // The frontend waits for the frozen backend and answers 504: only gateway errors.
        let statuses = episode["failure_statuses"].as_object().unwrap();
        assert!(
            statuses.keys().all(|s| s == "504" || s == "502"),
            "{statuses:?}"
        );
    }
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
            "recover_within[1]",
            "allowed_error_statuses[1]",
            "detect_within[2]",
            "recover_within[2]",
            "allowed_error_statuses[2]"
        ]
    );
    assert!(
        junit.contains("<testsuite name=\"flg-healthcheck-hang\""),
        "{junit}"
    );
    assert!(!junit.contains("<failure"), "{junit}");
    let summary = text(&output.stdout);
    assert!(
        summary.contains("time to detect") && summary.contains("verdict: pass"),
        "{summary}"
    );
}

#[test]
fn an_impossible_gate_fails_with_exit_1_and_junit_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("scenarios/flg-healthcheck-hang.toml"))
        .unwrap()
        .replace("detect_within = \"3s\"", "detect_within = \"1ms\"");
    let (output, report, junit) = run_scenario(dir.path(), &text);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert_eq!(report["runs"][0]["verdict"], "fail");
    let failed: Vec<&Value> = report["runs"][0]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0]["name"], "detect_within[1]");
    assert_eq!(ms(&failed[0]["limit_ms"]), 1.0);
    assert!(
        junit.contains("<testcase name=\"detect_within[1]\""),
        "{junit}"
    );
    assert!(
        junit.contains("<failure message=\"time to detect"),
        "{junit}"
    );
    assert!(junit.contains("exceeds the limit of 1ms"), "{junit}");
}

#[test]
fn no_steady_state_exits_3_without_injecting() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    // A port nobody listens on: every probe is refused, steady state never holds.
    let (listener, port) = listening_port();
    drop(listener);
    let (output, report, junit) = run_scenario(
        dir.path(),
        &freeze_scenario(sleeper.pid(), port, "1s", "2s"),
    );
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "inconclusive");
    assert!(run["reason"]
        .as_str()
        .unwrap()
        .contains("nothing was injected"));
    let events: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert!(!events.contains(&"inject"), "{events:?}");
    assert_eq!(run["probes"][0]["errors"], run["probes"][0]["samples"]);
    assert!(junit.contains("type=\"inconclusive\""), "{junit}");
    assert_ne!(sleeper.state(), 'T');
}

#[test]
fn a_frozen_process_runs_again_after_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let (output, report, _) = run_scenario(
        dir.path(),
        &freeze_scenario(sleeper.pid(), port, "10s", "300ms"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let events: Vec<&str> = report["runs"][0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"fault effective") && events.contains(&"fault reverted"),
        "{events:?}"
    );
    assert_ne!(sleeper.state(), 'T');
}

#[test]
fn sigterm_mid_fault_reverts_writes_a_partial_report_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, freeze_scenario(sleeper.pid(), port, "10s", "1m")).unwrap();
    let json = dir.path().join("report.json");
    let mut child = relapse()
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the freeze to take effect: the sleeper's state turns T.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sleeper.state() != 'T' {
        assert!(
            std::time::Instant::now() < deadline,
            "the fault never took effect"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_ne!(sleeper.state(), 'T', "the process was left frozen");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["runs"][0]["verdict"], "aborted");
    assert!(report["runs"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("cancelled"));
}

#[test]
fn malformed_scenarios_exit_2_with_file_line_column_and_what_was_expected() {
    let dir = repo("tests/data/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus shrank: {}", files.len());
    for file in files {
        let content = std::fs::read_to_string(&file).unwrap();
        // Each file states what it expects on its first line: `# expect: LINE:COLUMN: message`.
        let expected = content
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        for verb in ["validate", "run"] {
            let output = relapse().arg(verb).arg(&file).output().unwrap();
            assert_eq!(
                output.status.code(),
                Some(2),
                "{verb} {}\n{}",
                file.display(),
                show(&output)
            );
            let stderr = text(&output.stderr);
            let wanted = format!("{}:{expected}", file.display());
            assert!(
                stderr.contains(&wanted),
                "{verb} {}: expected\n  {wanted}\nin\n  {stderr}",
                file.display()
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn the_shipped_scenarios_validate() {
    let mut command = relapse();
    command.arg("validate");
    for entry in std::fs::read_dir(repo("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            command.arg(path);
        }
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(text(&output.stdout).contains("ok: "));
}

#[test]
fn list_names_every_kind() {
    let output = relapse().arg("list").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let listing = text(&output.stdout);
    for kind in ["process_freeze", "http", "tcp", "webhook", "command", "log"] {
        assert!(listing.contains(kind), "{kind} missing from\n{listing}");
    }
}

#[test]
fn a_missing_target_process_is_invalid_input_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_listener, port) = listening_port();
    // Pids above the kernel's pid_max (at most 2^22) never exist.
    let (output, _, _) = {
        let scenario = dir.path().join("scenario.toml");
        std::fs::write(&scenario, freeze_scenario(5_000_000, port, "10s", "1s")).unwrap();
        let json = dir.path().join("report.json");
        let output = relapse()
            .arg("run")
            .arg(&scenario)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        (output, (), ())
    };
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        text(&output.stderr).contains("no process with pid 5000000"),
        "{}",
        show(&output)
    );
}
