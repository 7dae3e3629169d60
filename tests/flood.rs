//! End-to-end tests of floods through the `relapse` binary: the OpenSRS scenarios against the
//! demo's login, and `relapse flood` against a server of the test's own. A test binary of its
//! own, and one flood at a time: a flood takes the machine's CPU on purpose, which must not skew
//! the timing tests in tests/cli.rs (cargo runs test binaries one after another).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One flood at a time.
static FLOODS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    FLOODS.lock().unwrap_or_else(|e| e.into_inner())
}

fn relapse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relapse"));
    command.stdin(Stdio::null());
    command
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a shipped scenario with a JSON report; returns the output and the report's first run.
fn run_shipped(scenario: &str) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = relapse()
        .arg("run")
        .arg(repo(scenario))
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&json)
            .unwrap_or_else(|_| panic!("no JSON report\n{}", show(&output))),
    )
    .unwrap();
    (output, report["runs"][0].clone())
}

fn failed_gates(run: &Value) -> Vec<String> {
    run["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["passed"] == false)
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn blocking_the_flood_s_sources_restores_logins_while_the_flood_goes_on() {
    let _flood = one_at_a_time();
    let (output, run) = run_shipped("scenarios/opensrs-auth-flood.toml");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let metrics = &run["metrics"];
    let mitigate = metrics["time_to_mitigate_ms"].as_f64().unwrap();
    let reverted_after =
        metrics["reverted_at_ms"].as_f64().unwrap() - metrics["injected_at_ms"].as_f64().unwrap();
    // Mitigated while the flood was still on, and only after it had hurt.
    assert!(mitigate < reverted_after, "{metrics}");
    assert!(metrics["time_to_impact_ms"].as_f64().unwrap() < mitigate);
    assert!(metrics["time_to_recover_ms"].as_f64().is_some());
    // The legitimate user saw the overloaded auth service (503), never the flood's block (429).
    let statuses = metrics["failure_statuses"].as_object().unwrap();
    assert_eq!(statuses.keys().collect::<Vec<_>>(), ["503"], "{statuses:?}");
}

#[test]
fn without_mitigation_the_same_flood_fails_mitigate_within_as_the_scenario_expects() {
    let _flood = one_at_a_time();
    let (output, run) = run_shipped("scenarios/opensrs-auth-flood-no-mitigation.toml");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(failed_gates(&run), ["mitigate_within"]);
    assert_eq!(run["verdict"], "fail");
    assert_eq!(run["outcome"], "pass");
    assert!(run["metrics"]["time_to_mitigate_ms"].is_null());
    // Once the flood stopped, logins came back: the failure is the missing mitigation.
    assert!(run["metrics"]["time_to_recover_ms"].as_f64().is_some());
}

/// A minimal HTTP/1.1 server on 127.0.0.1:0 that answers every request 200 over keep-alive and
/// records the address of every connection; serves until the test process ends.
fn recording_server() -> (u16, Arc<Mutex<Vec<IpAddr>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            seen.lock().unwrap().push(stream.peer_addr().unwrap().ip());
            std::thread::spawn(move || {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, peers)
}

#[test]
fn relapse_flood_sends_what_it_was_asked_from_every_source() {
    let _flood = one_at_a_time();
    let (port, peers) = recording_server();
    let output = relapse()
        .args(["flood", &format!("http://127.0.0.1:{port}/x?n={{seq}}")])
        .args([
            "-c",
            "32",
            "-n",
            "640",
            "-t",
            "2",
            "--source-cidr",
            "127.31.0.0/27",
        ])
        .args(["--per-source", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["completed"], 640, "{report}");
    assert_eq!(report["statuses"]["200"], 640, "{report}");
    // 32 keep-alive connections, one per address of the /27.
    let peers: BTreeSet<IpAddr> = peers.lock().unwrap().iter().copied().collect();
    let expected: BTreeSet<IpAddr> = (0..32).map(|i| IpAddr::from([127, 31, 0, i])).collect();
    assert_eq!(peers, expected);
}

#[test]
fn relapse_flood_refuses_what_it_must_not_do() {
    for args in [
        vec!["flood", "http://10.1.2.3/"],
        vec!["flood", "http://127.0.0.1:1/", "-d", "2h"],
        vec![
            "flood",
            "http://127.0.0.1:1/",
            "--source-cidr",
            "127.0.0.0/8",
        ],
        vec!["flood", "https://127.0.0.1/"],
    ] {
        let output = relapse().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}\n{}", show(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).starts_with("error: "),
            "{args:?}\n{}",
            show(&output)
        );
    }
}

#[test]
fn relapse_flood_refuses_a_request_it_could_not_send_before_sending_anything() {
    let (port, peers) = recording_server();
    for args in [
        vec![format!("http://127.0.0.1:{port}/a b")],
        vec![
            format!("http://127.0.0.1:{port}/"),
            "-H".into(),
            "x-bad: a\u{1}b".into(),
        ],
    ] {
        let output = relapse()
            .arg("flood")
            .args(&args)
            .args(["-d", "2s", "-n", "10"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}\n{}", show(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).starts_with("error: "),
            "{args:?}\n{}",
            show(&output)
        );
    }
    assert!(peers.lock().unwrap().is_empty());
}

/// With 4 file descriptors relapse can load and start, but no runtime can (each needs an epoll
/// and an eventfd): the flood fails at run time, 3 as for `relapse-flood`.
#[test]
fn relapse_flood_that_fails_at_run_time_exits_3() {
    let _flood = one_at_a_time();
    let (port, peers) = recording_server();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 4 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_relapse"))
        .args(["flood", &format!("http://127.0.0.1:{port}/")])
        .args(["-c", "1", "-t", "1", "-n", "10", "-d", "5s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("error: runtime: "),
        "{}",
        show(&output)
    );
    assert!(output.stdout.is_empty(), "{}", show(&output));
    assert!(peers.lock().unwrap().is_empty());
}

#[test]
fn relapse_flood_stopped_by_sigterm_exits_3_and_prints_what_it_sent() {
    let _flood = one_at_a_time();
    let (port, peers) = recording_server();
    // An open model at 50/s for at most 20s: SIGTERM comes long before either bound.
    let mut child = relapse()
        .args(["flood", &format!("http://127.0.0.1:{port}/")])
        .args([
            "--rate", "50", "-c", "4", "-t", "1", "-n", "1000", "-d", "20s",
        ])
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The signal handlers are installed before the first connection is made.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while peers.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("relapse flood still running 10s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(&output)));
    let completed = report["completed"].as_u64().unwrap();
    assert!((1..1000).contains(&completed), "{report}");
}
