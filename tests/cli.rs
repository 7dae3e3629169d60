//! End-to-end tests of the `relapse` binary: real processes, real sockets, the real demo target.
//! Each test has its own temp dir and its own demo on 127.0.0.1:0; nothing is shared.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

mod support;

use support::PgTable;

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
        .env("RELAPSE_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert_journal_empty(&dir.join("state"));
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|_| panic!("no JSON report\n{}", show(&output)));
    let junit = std::fs::read_to_string(&junit).unwrap_or_default();
    (output, serde_json::from_str(&report).unwrap(), junit)
}

/// Polls until `done`, at most `within`; returns how long it took. Used where no event can be
/// awaited with a bound: another process's run state, a directory emptied by another process.
fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

fn journal_is_empty(state: &Path) -> bool {
    std::fs::read_dir(state.join("runs")).map_or(true, |mut d| d.next().is_none())
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// The pid of the guardian that the relapse process `harness` started.
fn guardian_of(harness: u32) -> u32 {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{harness}/task")).unwrap() {
        let list =
            std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
        children.extend(list.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
    }
    children
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__guardian"))
        })
        .expect("relapse runs a guardian")
}

/// No run directory is left in the state directory: every revert was confirmed and struck out.
fn assert_journal_empty(state: &Path) {
    let runs = state.join("runs");
    let left: Vec<PathBuf> = std::fs::read_dir(&runs)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "journal not empty: {left:?}");
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

/// A port with a listener behind it that accepts and closes every connection, so that probes
/// succeed however many run (an unaccepted backlog would fill up and stall them).
fn listening_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = listener.try_clone().unwrap();
    // Ends with the test binary; it only ever serves this test's own probes.
    std::thread::spawn(move || {
        for connection in acceptor.incoming() {
            drop(connection);
        }
    });
    (listener, port)
}

/// Starts `relapse run` in the background on a scenario that freezes `sleeper` for a minute, with
/// its journal under `dir/state` and its JSON report at `dir/report.json`.
fn spawn_freeze_run(dir: &Path, sleeper: &Sleeper, port: u16) -> Child {
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, freeze_scenario(sleeper.pid(), port, "10s", "1m")).unwrap();
    relapse()
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(dir.join("report.json"))
        .env("RELAPSE_STATE_DIR", dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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
fn an_impossible_gate_fails_with_exit_1_and_junit_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("scenarios/flg-healthcheck-hang.toml"))
        .unwrap()
        .replace("detect_within = \"1s\"", "detect_within = \"1ms\"");
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
        junit.contains("<testcase name=\"flg-healthcheck-hang · detect_within[1]\""),
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
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
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
fn the_json_gives_each_probes_lateness_and_the_resolution_includes_the_slis() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let (output, report, _) = run_scenario(
        dir.path(),
        &freeze_scenario(sleeper.pid(), port, "10s", "300ms"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let run = &report["runs"][0];
    let probe = &run["probes"][0];
    assert_eq!(probe["sli"], true);
    let late = &probe["lateness_ms"];
    let (p50, p99, max) = (ms(&late["p50"]), ms(&late["p99"]), ms(&late["max"]));
    // How late is the machine's business; that the figures are a distribution of real delays is
    // ours: never negative, ordered, and within the run.
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{late}");
    assert!(max < ms(&run["duration_ms"]), "{late}");
    // The stated resolution is the interval plus the p99 lateness, to the microsecond.
    let every = ms(&probe["every_ms"]);
    assert_eq!(every, 50.0);
    for metrics in std::iter::once(&run["metrics"]).chain(run["episodes"].as_array().unwrap()) {
        let resolution = ms(&metrics["resolution_ms"]);
        assert!((resolution - (every + p99)).abs() < 0.0015, "{metrics}");
    }
    let terminal = text(&output.stdout);
    assert!(
        terminal.contains("the SLI probe interval 50ms + its p99 lateness")
            && terminal.contains("sent late by p50"),
        "{terminal}"
    );
}

#[test]
fn sigterm_mid_fault_reverts_writes_a_partial_report_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let mut child = spawn_freeze_run(dir.path(), &sleeper, port);
    let json = dir.path().join("report.json");
    // Wait for the freeze to take effect: the sleeper's state turns T.
    wait_until(Duration::from_secs(20), "the fault to take effect", || {
        sleeper.state() == 'T'
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_ne!(sleeper.state(), 'T', "the process was left frozen");
    assert!(journal_is_empty(&dir.path().join("state")));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["runs"][0]["verdict"], "aborted");
    assert!(report["runs"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("cancelled"));
}

#[test]
fn malformed_scenarios_exit_2_with_file_line_column_and_what_was_expected() {
    // Run from the repository root with relative paths, so that the paths in the messages are the
    // same on every machine.
    let root = repo("");
    let dir = "tests/data/bad";
    let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "toml" || e == "expected")
        })
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "the corpus shrank: {}", names.len());
    for name in names {
        let file = format!("{dir}/{name}.toml");
        assert!(
            root.join(&file).exists(),
            "{dir}/{name}.expected has no {file}"
        );
        // Beside each file, the whole of what the CLI must print to stderr.
        let expected = std::fs::read_to_string(root.join(format!("{dir}/{name}.expected")))
            .unwrap_or_else(|_| panic!("{file} has no {name}.expected beside it"));
        let state = tempfile::tempdir().unwrap();
        for verb in ["validate", "run"] {
            let output = relapse()
                .current_dir(&root)
                .arg(verb)
                .arg(&file)
                .env("RELAPSE_STATE_DIR", state.path())
                .output()
                .unwrap();
            // Nothing was applied: not even a journal was started.
            assert!(
                !state.path().join("runs").exists(),
                "{verb} {file} started a journal"
            );
            assert_eq!(
                output.status.code(),
                Some(2),
                "{verb} {file}\n{}",
                show(&output)
            );
            let stderr = text(&output.stderr);
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert_eq!(
                stderr, expected,
                "{verb} {file}: stderr is not {name}.expected"
            );
        }
    }
}

#[test]
fn the_shipped_scenarios_validate() {
    let mut command = relapse();
    command.arg("validate");
    // The incidents' scenarios, and those the Kubernetes manifests ship in their ConfigMaps.
    for dir in [
        "scenarios",
        "deploy/kubernetes/base",
        "deploy/kubernetes/overlays/kolab-staging",
    ] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                command.arg(path);
            }
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
    for kind in [
        "process_freeze",
        "port_exhaustion",
        "fd_exhaustion",
        "http",
        "tcp",
        "webhook",
        "command",
        "log",
        "prometheus",
        "alertmanager",
    ] {
        assert!(listing.contains(kind), "{kind} missing from\n{listing}");
    }
}

#[test]
fn a_missing_target_process_is_invalid_input_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_listener, port) = listening_port();
    // Pids above the kernel's pid_max (at most 2^22) never exist.
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, freeze_scenario(5_000_000, port, "10s", "1s")).unwrap();
    let output = relapse()
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        text(&output.stderr).contains("no process with pid 5000000"),
        "{}",
        show(&output)
    );
}

#[test]
fn sigint_twice_mid_fault_still_reverts_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let mut child = spawn_freeze_run(dir.path(), &sleeper, port);
    let json = dir.path().join("report.json");
    wait_until(Duration::from_secs(20), "the fault to take effect", || {
        sleeper.state() == 'T'
    });
    // As an impatient person at a terminal would: Ctrl-C, and at once again.
    signal(child.id(), nix::sys::signal::Signal::SIGINT);
    signal(child.id(), nix::sys::signal::Signal::SIGINT);
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert_ne!(sleeper.state(), 'T', "the process was left frozen");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["runs"][0]["verdict"], "aborted");
    assert!(journal_is_empty(&state));
}

#[test]
fn kill_9_of_the_harness_at_random_instants_leaves_nothing_applied() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    // Printed so that a failure can be replayed with the same instants.
    eprintln!("kill -9 instants: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_listener, port) = listening_port();
    let rounds = 20;
    let mut killed_mid_fault = 0;
    let mut slowest_revert = Duration::ZERO;
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let sleeper = Sleeper::start();
        let mut child = spawn_freeze_run(dir.path(), &sleeper, port);
        // Three kills in four land while the fault is applied (a random instant up to 300 ms
        // after it took effect), the rest at a random instant before it: while relapse starts,
        // waits for steady state, or is about to inject.
        let mid_fault = rng.random_ratio(3, 4);
        let started = std::time::Instant::now();
        let kill_at = if mid_fault {
            let frozen_after =
                wait_until(Duration::from_secs(20), "the fault to take effect", || {
                    sleeper.state() == 'T'
                });
            frozen_after + Duration::from_millis(rng.random_range(0..300))
        } else {
            Duration::from_millis(rng.random_range(0..500))
        };
        let mut seen_frozen = false;
        while started.elapsed() < kill_at {
            seen_frozen |= sleeper.state() == 'T';
            std::thread::sleep(Duration::from_millis(1));
        }
        seen_frozen |= sleeper.state() == 'T';
        signal(child.id(), nix::sys::signal::Signal::SIGKILL);
        let killed = std::time::Instant::now();
        child.wait().unwrap();
        killed_mid_fault += u32::from(seen_frozen);
        wait_until(
            Duration::from_secs(1),
            "the guardian to resume the process",
            || sleeper.state() != 'T',
        );
        slowest_revert = slowest_revert.max(killed.elapsed());
        wait_until(
            Duration::from_secs(1),
            "the guardian to empty the journal",
            || journal_is_empty(&state),
        );
        eprintln!(
            "round {round}: killed after {kill_at:?}, {}",
            if seen_frozen {
                "mid-fault"
            } else {
                "before the fault"
            }
        );
    }
    eprintln!("kill -9: {rounds} rounds, {killed_mid_fault} mid-fault, 0 faults left behind, slowest revert {slowest_revert:?}");
    // Enough kills must land while the fault is applied for the test to mean something.
    assert!(
        killed_mid_fault >= 5,
        "only {killed_mid_fault} of {rounds} kills landed mid-fault"
    );
    assert!(slowest_revert < Duration::from_secs(1));
}

#[test]
fn cleanup_reverts_what_a_dead_harness_and_guardian_left_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let mut child = spawn_freeze_run(dir.path(), &sleeper, port);
    wait_until(Duration::from_secs(20), "the fault to take effect", || {
        sleeper.state() == 'T'
    });
    // The worst case: the guardian dies first, then the harness. Both are ours, ended by pid.
    signal(guardian_of(child.id()), nix::sys::signal::Signal::SIGKILL);
    signal(child.id(), nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    assert_eq!(
        sleeper.state(),
        'T',
        "nothing was left to revert: the test proves nothing"
    );
    assert!(!journal_is_empty(&state));

    let output = relapse()
        .arg("cleanup")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let said = text(&output.stdout);
    assert!(said.contains("reverted: \"freeze\""), "{said}");
    assert!(said.contains("1 fault reverted"), "{said}");
    assert_ne!(sleeper.state(), 'T');
    assert!(journal_is_empty(&state));

    let again = relapse()
        .arg("cleanup")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert!(
        text(&again.stdout).contains("0 faults reverted"),
        "{}",
        show(&again)
    );
}

#[test]
fn a_stop_condition_trips_aborts_and_reverts() {
    let dir = tempfile::tempdir().unwrap();
    // Until the failover, half a second or more, every page view fails: the first second after
    // the freeze cannot be 99 % good.
    let text = std::fs::read_to_string(repo("scenarios/flg-healthcheck-hang.toml")).unwrap()
        + "\n[[stop]]\nname = \"webmail-down\"\nmin_success = 0.99\nfor = \"1s\"\n";
    let (output, report, junit) = run_scenario(dir.path(), &text);
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "aborted");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("stop condition \"webmail-down\" tripped"),
        "{reason}"
    );
    let timeline = run["timeline"].as_array().unwrap();
    let at = |event: &str| {
        timeline
            .iter()
            .find(|t| t["event"] == event)
            .map(|t| ms(&t["at_ms"]))
    };
    let (injected, tripped, reverted) = (
        at("fault effective").unwrap(),
        at("stop condition").unwrap(),
        at("fault reverted").unwrap(),
    );
    // The condition is judged on completed checks: a full 1 s window after the injection plus the
    // probe's 1 s timeout, seen on the next 100 ms check.
    assert!(
        tripped - injected >= 2000.0 && tripped - injected <= 2200.0,
        "tripped {} ms after the injection",
        tripped - injected
    );
    assert!(reverted >= tripped && reverted - tripped < 100.0);
    // Only the first hang happened: the second was never injected.
    assert_eq!(
        timeline
            .iter()
            .filter(|t| t["event"] == "fault effective")
            .count(),
        1
    );
    assert!(junit.contains("type=\"aborted\""), "{junit}");
}

#[test]
fn a_target_off_loopback_needs_permission() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    let scenario = dir.path().join("scenario.toml");
    // 198.51.100.0/24 is TEST-NET-2: documentation only; nothing is ever sent there.
    let scenario_text =
        freeze_scenario(sleeper.pid(), 1, "10s", "1s").replace("127.0.0.1:1", "198.51.100.7:80");
    std::fs::write(&scenario, &scenario_text).unwrap();
    let output = relapse()
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let line = scenario_text
        .lines()
        .position(|l| l.contains("198.51.100.7"))
        .unwrap()
        + 1;
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:{line}:", scenario.display())),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-target 198.51.100.7"), "{stderr}");
    assert!(
        !dir.path().join("state").exists(),
        "a journal was started for a refused scenario"
    );
    assert_ne!(sleeper.state(), 'T');
    // Named, it is allowed (validated only: nothing is sent to it).
    let output = relapse()
        .arg("validate")
        .arg(&scenario)
        .arg("--allow-target")
        .arg("198.51.100.7")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
}

/// Processes whose command line mentions `needle` (e.g. a namespace name).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// The network namespaces a relapse process with this pid made (`relapse-PID-N`).
fn namespaces_of(harness: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("relapse-{harness}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_ipaper_scenario_passes_and_leaves_the_machines_own_ports_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let json = dir.path().join("report.json");
    let mut child = relapse()
        .arg("run")
        .arg(repo("scenarios/ipaper-port-exhaustion.toml"))
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // While it runs, connect() in the machine's own namespace keeps working.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut connects = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        TcpStream::connect(listener.local_addr().unwrap()).expect("connect() in our own namespace");
        drop(listener.accept().unwrap());
        connects += 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        connects > 100,
        "only {connects} connects while the scenario ran"
    );
    assert_eq!(status.code(), Some(0));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "pass", "{run:#}");
    let episode = &run["episodes"][0];
    assert_eq!(
        episode["faults"],
        serde_json::json!(["ports-leaking", "ports-exhausted"])
    );
    // Intermittent first: some requests failed before the whole range was taken.
    let timeline = run["timeline"].as_array().unwrap();
    let at = |event: &str, n: usize| {
        timeline
            .iter()
            .filter(|t| t["event"] == event)
            .nth(n)
            .map(|t| ms(&t["at_ms"]))
    };
    let (impact, exhausted) = (at("impact", 0).unwrap(), at("fault effective", 1).unwrap());
    assert!(
        impact < exhausted,
        "the SLI was first hit at {impact} ms, only once exhausted at {exhausted} ms"
    );
    // Nothing is left: no namespace, no port holder, no journal entry.
    assert!(
        namespaces_of(child.id()).is_empty(),
        "{:?}",
        namespaces_of(child.id())
    );
    assert!(processes_mentioning(&format!("relapse-{}-", child.id())).is_empty());
    assert!(journal_is_empty(&state));
}

#[test]
fn kill_9_mid_port_exhaustion_frees_the_ports_and_removes_the_namespace() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut child = relapse()
            .arg("run")
            .arg(repo("scenarios/ipaper-port-exhaustion.toml"))
            .env("RELAPSE_STATE_DIR", &state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let needle = format!("relapse-{}-", child.id());
        // Mid-fault: the port holders are running.
        wait_until(Duration::from_secs(30), "the port holders", || {
            processes_mentioning("__helper\0port_exhaustion")
                .iter()
                .any(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                })
        });
        signal(child.id(), nix::sys::signal::Signal::SIGKILL);
        child.wait().unwrap();
        wait_until(
            Duration::from_secs(1),
            "the guardian to remove the namespace",
            || namespaces_of(child.id()).is_empty(),
        );
        wait_until(
            Duration::from_secs(1),
            "the holders to die with relapse",
            || processes_mentioning(&needle).is_empty(),
        );
        wait_until(
            Duration::from_secs(1),
            "the guardian to empty the journal",
            || journal_is_empty(&state),
        );
    }
}

#[test]
fn port_exhaustion_refuses_relapses_own_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let (_listener, port) = listening_port();
    let scenario = dir.path().join("scenario.toml");
    // The test's own namespace is relapse's too: it runs beside us.
    let scenario_text = freeze_scenario(std::process::id(), port, "10s", "1s").replace(
        &format!("process_freeze = {{ pid = {} }}", std::process::id()),
        &format!(
            "port_exhaustion = {{ pid = {}, mode = \"reserve\" }}",
            std::process::id()
        ),
    );
    std::fs::write(&scenario, &scenario_text).unwrap();
    let output = relapse()
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        text(&output.stderr).contains("refusing to exhaust relapse's own network namespace"),
        "{}",
        show(&output)
    );
}

/// Runs SQL on the machine's PostgreSQL (127.0.0.1:5432, trust auth, database `test`) with psql,
/// the server's own client; returns its unaligned output.
/// A scenario that holds an ACCESS EXCLUSIVE lock on `table` while a TCP probe watches `port`.
fn db_lock_scenario(table: &str, port: u16, duration: &str) -> String {
    freeze_scenario(1, port, "10s", duration).replace(
        "process_freeze = { pid = 1 }",
        &format!("db_lock = {{ postgres = \"host=127.0.0.1 port=5432 user=postgres dbname=test\", table = \"{table}\" }}"),
    )
}

#[test]
fn a_db_lock_is_held_for_its_duration_and_released_after() {
    let dir = tempfile::tempdir().unwrap();
    let table = PgTable::create("held");
    let (_listener, port) = listening_port();
    let (output, report, _) = run_scenario(dir.path(), &db_lock_scenario(&table.0, port, "500ms"));
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let timeline = report["runs"][0]["timeline"].as_array().unwrap();
    let effective = timeline
        .iter()
        .find(|t| t["event"] == "fault effective")
        .unwrap();
    assert!(
        effective["detail"]
            .as_str()
            .unwrap()
            .contains("ACCESS EXCLUSIVE"),
        "{effective}"
    );
    assert_eq!(table.locks_held(), 0, "the lock outlived the run");
}

#[test]
fn kill_9_mid_db_lock_releases_the_lock_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let table = PgTable::create("kill");
    let (_listener, port) = listening_port();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, db_lock_scenario(&table.0, port, "1m")).unwrap();
    let mut child = relapse()
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the lock to be granted", || {
        table.locks_held() > 0
    });
    signal(child.id(), nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    // The session dies with relapse's connection, and the guardian terminates it by its journaled
    // backend pid in any case.
    wait_until(Duration::from_secs(1), "the lock to be released", || {
        table.locks_held() == 0
    });
    wait_until(
        Duration::from_secs(1),
        "the guardian to empty the journal",
        || journal_is_empty(&state),
    );
}

/// Runs a Kolab lock scenario that must pass with honest 503s, with mail queued behind the lock:
/// recovery is the later of serving again and the queue draining.
///
/// `queue_grows`: whether sends keep succeeding through the lock. On MariaDB they do (each
/// request has a pooled connection of its own); on PostgreSQL the demo pipelines requests over a
/// few shared connections, so sends queue behind the stalled reads and mostly fail too.
fn assert_kolab_passes(scenario: &str, queue_grows: bool) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo(scenario)).unwrap();
    let (output, report, _) = run_scenario(dir.path(), &text);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let episode = &report["runs"][0]["episodes"][0];
    let statuses = episode["failure_statuses"].as_object().unwrap();
    assert_eq!(statuses.keys().collect::<Vec<_>>(), ["503"], "{statuses:?}");
    assert!(episode["time_to_detect_ms"].as_f64().is_some());
    let backlog = &episode["backlog"];
    let (max, peak) = (
        backlog["max"].as_f64().unwrap(),
        backlog["peak"].as_f64().unwrap(),
    );
    if queue_grows {
        assert!(peak > max, "the queue never grew past its bound: {backlog}");
    } else {
        assert!(peak >= 0.0, "{backlog}");
    }
    let serve = episode["time_to_serve_ms"].as_f64().unwrap();
    let drain = episode["time_to_drain_ms"].as_f64().unwrap();
    let recover = episode["time_to_recover_ms"].as_f64().unwrap();
    assert_eq!(recover, serve.max(drain), "{episode}");
}

#[test]
fn the_kolab_scenario_passes_with_honest_503s_and_a_drained_queue() {
    assert_kolab_passes("scenarios/kolab-db-lock.toml", false);
}

#[test]
fn the_kolab_scenario_through_a_stalling_db_proxy_passes_with_honest_503s() {
    assert_kolab_passes("scenarios/kolab-db-proxy-stall.toml", false);
}

#[test]
fn the_kolab_scenario_on_mariadb_passes_with_honest_503s_and_a_drained_queue() {
    assert_kolab_passes("scenarios/kolab-db-lock-mariadb.toml", true);
}

#[test]
fn the_misleading_errors_scenario_fails_its_status_gate_by_design_and_so_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("scenarios/kolab-misleading-errors.toml")).unwrap();
    let (output, report, junit) = run_scenario(dir.path(), &text);
    // The gate failed, as the scenario expects: the run succeeds, and says both.
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "fail", "{run}");
    assert_eq!(run["outcome"], "pass", "{run}");
    assert_eq!(run["expect"]["met"], true, "{run}");
    assert_eq!(
        run["expect"]["failed_gates"],
        serde_json::json!(["allowed_error_statuses"])
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAIL (as expected)"), "{stdout}");
    assert!(
        stdout.contains("expected: fail (allowed_error_statuses): failed as expected: allowed_error_statuses\noutcome: pass"),
        "{stdout}"
    );
    // In JUnit the expected failure is a passed case that says so.
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(junit.contains("failed as expected"), "{junit}");
    let gates = report["runs"][0]["gates"].as_array().unwrap();
    let failed: Vec<&str> = gates
        .iter()
        .filter(|g| g["passed"] == false)
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["allowed_error_statuses"]);
    let gate = gates
        .iter()
        .find(|g| g["name"] == "allowed_error_statuses")
        .unwrap();
    assert!(gate["message"].as_str().unwrap().contains("401"), "{gate}");
    assert!(
        junit.contains("statuses outside [503] during impact: 401"),
        "{junit}"
    );
}

#[test]
fn a_scenario_that_expects_a_gate_to_fail_which_holds_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("scenarios/kolab-misleading-errors.toml"))
        .unwrap()
        .replace(
            "expect_failed = [\"allowed_error_statuses\"]",
            "expect_failed = [\"allowed_error_statuses\", \"recover_within\"]",
        );
    assert!(
        text.contains("\"recover_within\"]"),
        "the replacement did not apply"
    );
    let (output, report, junit) = run_scenario(dir.path(), &text);
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "fail", "{run}");
    assert_eq!(run["outcome"], "fail", "{run}");
    assert_eq!(run["expect"]["met"], false, "{run}");
    let message = run["expect"]["message"].as_str().unwrap();
    assert!(message.ends_with("but recover_within held"), "{message}");
    assert!(junit.contains("type=\"expectation\""), "{junit}");
}
