//! `[[target.process]]` end to end: relapse starts a process for the run and stops it on every
//! exit path — a process that never gets ready, one that dies at start, and `kill -9` of relapse
//! itself. (`tests/examples.rs` runs real software this way.)

use std::process::Stdio;
use std::time::{Duration, Instant};

mod support;
use support::*;

/// Pids whose command line has `arg` as one of its arguments.
fn processes_with_arg(arg: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// A `sleep` argument no other process has: this test process's pid in the fraction.
fn unique_sleep(seconds: u32, salt: u32) -> String {
    format!("{seconds}.{}{salt}", std::process::id())
}

/// A scenario around the demo with one process of `process` (TOML keys) and a freeze of it.
fn scenario_with(process: &str, fault_duration: &str) -> String {
    format!(
        r#"[scenario]
name = "process-test"

[target.demo]

[[target.process]]
name = "sleeper"
{process}

[[probe]]
name = "web"
every = "50ms"
http = {{ url = "{{demo.url}}/health", timeout = "1s" }}

[steady_state]
probe = "web"
window = "500ms"
min_success = 0.9
timeout = "10s"

[[fault]]
name = "freeze-it"
process_freeze = {{ process = "sleeper" }}
start = "200ms"
duration = "{fault_duration}"

[limits]
max_run = "1m"
observe_after = "1s"
"#
    )
}

#[test]
fn kill_9_of_relapse_stops_the_process_and_a_child_that_left_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (main, stray) = (unique_sleep(300, 1), unique_sleep(300, 2));
    let process = format!(
        r#"run = ["sh", "-c", "setsid sleep {stray} & echo started; exec sleep {main}"]
ready = {{ log = "^started$", timeout = "5s" }}
stop = {{ grace = "1s" }}"#
    );
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, scenario_with(&process, "30s")).unwrap();
    let mut child = relapse()
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Mid-fault: the process is frozen (state T), and its stray child runs.
    let stopped = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
    };
    wait_until(Duration::from_secs(20), "the process to be frozen", || {
        processes_with_arg(&main).iter().any(stopped)
    });
    assert_eq!(processes_with_arg(&stray).len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // The guardian thaws it (the newer entry), then ends everything carrying its token: the
    // 1 s grace, then SIGKILL; and 1 s for the guardian to notice and read /proc.
    wait_until(
        Duration::from_secs(3),
        "the process and its stray to end",
        || processes_with_arg(&main).is_empty() && processes_with_arg(&stray).is_empty(),
    );
    wait_until(Duration::from_secs(2), "the journal to empty", || {
        journal_is_empty(&state)
    });
}

#[test]
fn a_process_that_never_gets_ready_makes_the_run_inconclusive_and_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sleep = unique_sleep(300, 3);
    let process = format!(
        r#"ports = ["never"]
run = ["sleep", "{sleep}"]
ready = {{ tcp = "127.0.0.1:{{port.never}}", timeout = "500ms" }}"#
    );
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, scenario_with(&process, "1s")).unwrap();
    let output = relapse()
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", &state)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("process \"sleeper\"") && stderr.contains("was not ready within 500ms"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was injected"), "{stderr}");
    assert!(
        processes_with_arg(&sleep).is_empty(),
        "the process outlived the run"
    );
    assert!(journal_is_empty(&state));
}

#[test]
fn a_process_that_dies_at_start_shows_why_and_the_run_is_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let process = r#"run = ["sh", "-c", "echo 'config line 3: unknown directive' >&2; exit 7"]
ready = { log = "listening", timeout = "10s" }"#;
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, scenario_with(process, "1s")).unwrap();
    let started = Instant::now();
    let output = relapse()
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", &state)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("exited before it was ready (exit status: 7)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("config line 3: unknown directive"),
        "{stderr}"
    );
    // It did not wait out the 10 s readiness timeout.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(journal_is_empty(&state));
}
