//! `relapse run --pushgateway` and `--markdown` end to end, against a real Prometheus Pushgateway
//! (Debian's `prometheus-pushgateway`, which `.ci/run` installs) that each test starts on
//! 127.0.0.1 with a port of its own choosing, keeps in memory only, and stops by its pid.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

fn relapse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relapse"));
    command.stdin(Stdio::null());
    command
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A Pushgateway this test started; stopped by its own pid when dropped, on every exit path.
struct Pushgateway {
    child: Child,
    address: SocketAddr,
}

impl Pushgateway {
    /// Starts one on 127.0.0.1:0 and waits, with bounds, for it to say which port it took and
    /// then to answer `/-/ready`.
    fn start(dir: &Path) -> Pushgateway {
        let mut child = Command::new("prometheus-pushgateway")
            .arg("--web.listen-address=127.0.0.1:0")
            // Empty: metrics in memory only (Debian's default is a file under /var/lib).
            .arg("--persistence.file=")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus-pushgateway ({e}); .ci/run installs it")
            });
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the log to its end, so the pushgateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = listening_address(&line) {
                    let _ = tx.send(address);
                }
            }
        });
        let address = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(address) => address,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the pushgateway did not say where it listens: {e}");
            }
        };
        let gateway = Pushgateway { child, address };
        let start = Instant::now();
        while !http(address, "GET", "/-/ready", "").is_ok_and(|(status, _)| status == 200) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the pushgateway at {address} was not ready within 20s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        gateway
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The groups, as its JSON API gives them.
    fn groups(&self) -> Vec<Value> {
        let (status, body) = http(self.address, "GET", "/api/v1/metrics", "").unwrap();
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"].as_array().unwrap().clone()
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the pushgateway's `msg="Listening on" address=127.0.0.1:PORT` log line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("msg=\"Listening on\"") {
        return None;
    }
    let rest = &line[line.find(" address=")? + " address=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// One HTTP/1.0 exchange (no chunked answers, the connection closes at the end): status, body.
fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A name with what the exposition format must escape (`"`, `\`, a line feed) and what a
/// Pushgateway path cannot hold as it is (`/`), and a `|` for the Markdown table.
const AWKWARD_NAME: &str = "export \"failover\" a/b\\c | d\ne";

/// The demo with failover, its primary frozen for 2 s: impact, detection (the frontend's
/// "is DOWN" log line), mitigation (the failover) and recovery all happen, in about 4 s; no
/// backlog, so there is no time to drain. Gates generous enough to pass on a loaded machine.
const FAILOVER_SCENARIO: &str = r#"
[scenario]
name = "export \"failover\" a/b\\c | d\ne"
mitigation = "failover"

[target.demo]
upstream_timeout = "200ms"
failover = { inter = "100ms", timeout = "100ms", fall = 2, rise = 2, failback = false }

[[probe]]
name = "webmail"
every = "50ms"
http = { url = "{demo.url}/", timeout = "1s", expect = [200] }

[steady_state]
probe = "webmail"
window = "500ms"
min_success = 0.9
timeout = "20s"

[[detect]]
name = "failover-log"
log = { path = "{demo.frontend.log}", pattern = "is DOWN", every = "50ms" }

[[fault]]
name = "primary-hangs"
process_freeze = { demo = "primary" }
start = "200ms"
duration = "2s"

[gates]
mitigate_within = "5s"
recover_within = "5s"

[limits]
max_run = "1m"
observe_after = "5s"
"#;

/// A process the test starts, freezes through relapse, and ends by its own pid.
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
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port with a listener behind it that accepts and closes every connection.
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

/// The quickest passing run there is (about 1.5 s, no demo): a sleeper frozen for 300 ms while
/// a TCP probe watches a port that stays up.
fn quick_scenario(name: &str, pid: u32, port: u16) -> String {
    format!(
        r#"
[scenario]
name = "{name}"

[[probe]]
name = "tcp"
every = "50ms"
tcp = {{ address = "127.0.0.1:{port}", timeout = "500ms" }}

[steady_state]
probe = "tcp"
window = "500ms"
min_success = 1.0
timeout = "10s"

[[fault]]
name = "freeze"
process_freeze = {{ pid = {pid} }}
start = "100ms"
duration = "300ms"

[gates]
recover_within = "5s"

[limits]
observe_after = "3s"
"#
    )
}

/// Runs `relapse run` on `scenario_text` with a JSON report and the given extra arguments.
fn run(dir: &Path, scenario_text: &str, args: &[&str]) -> Output {
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, scenario_text).unwrap();
    relapse()
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(dir.join("report.json"))
        .args(args)
        .env("RELAPSE_STATE_DIR", dir.join("state"))
        .output()
        .unwrap()
}

fn json_report(dir: &Path, output: &Output) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json"))
        .unwrap_or_else(|_| panic!("no JSON report\n{}", show(output)));
    serde_json::from_str(&text).unwrap()
}

/// A sample of a pushed metric: its labels (the grouping key's and the pushgateway's `instance`
/// among them) and its value.
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of `family` in `group`, each checked to be a gauge with a help text.
fn samples(group: &Value, family: &str) -> Vec<Sample> {
    let Some(f) = group.get(family) else {
        return Vec::new();
    };
    assert_eq!(f["type"], "GAUGE", "{family}: {f}");
    assert!(!f["help"].as_str().unwrap().is_empty(), "{family}: {f}");
    f["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Sample {
            labels: serde_json::from_value(m["labels"].clone()).unwrap(),
            value: m["value"].as_str().unwrap().parse().unwrap(),
        })
        .collect()
}

/// The value of the one sample of `family` whose labels include `with`; `None` if there is none.
fn value(group: &Value, family: &str, with: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples(group, family)
        .into_iter()
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    assert!(matching.len() <= 1, "{family} {with:?}: {matching:?}");
    matching.first().copied()
}

/// Seconds from the JSON report's milliseconds, which carry whole microseconds: the exact value
/// relapse pushes.
fn seconds(ms: &Value) -> Option<f64> {
    ms.as_f64()
        .map(|ms| (ms * 1000.0).round() as u64 as f64 / 1e6)
}

#[test]
fn the_pushed_metrics_are_the_json_reports_numbers_and_the_summary_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Pushgateway::start(dir.path());
    let summary = dir.path().join("summary.md");
    std::fs::write(&summary, "## an earlier step\n\nall good\n").unwrap();
    // A trailing `/` on the URL, as people write it.
    let url = format!("{}/", gateway.url());
    let output = run(
        dir.path(),
        FAILOVER_SCENARIO,
        &[
            "--pushgateway",
            &url,
            "--markdown",
            summary.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report = json_report(dir.path(), &output);
    let r = &report["runs"][0];
    assert_eq!(r["scenario"], AWKWARD_NAME);

    // One group, keyed by job and scenario (base64 in the path, the name itself in the key).
    let groups = gateway.groups();
    let ours: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == "relapse")
        .collect();
    assert_eq!(ours.len(), 1, "{groups:?}");
    let group = ours[0];
    assert_eq!(
        group["labels"],
        serde_json::json!({"job": "relapse", "scenario": AWKWARD_NAME})
    );
    assert_eq!(group["last_push_successful"], true);
    let run1 = [("scenario", AWKWARD_NAME), ("run", "1")];

    // The verdict and the outcome: 1 for the one that happened, 0 for each other.
    for verdict in ["pass", "fail", "inconclusive", "aborted"] {
        let with = |label| [run1[0], run1[1], (label, verdict)];
        let expected = |key: &str| f64::from(u8::from(r[key] == verdict));
        assert_eq!(
            value(group, "relapse_verdict", &with("verdict")),
            Some(expected("verdict")),
            "{verdict}"
        );
        assert_eq!(
            value(group, "relapse_outcome", &with("outcome")),
            Some(expected("outcome")),
            "{verdict}"
        );
    }
    for gate in r["gates"].as_array().unwrap() {
        let name = gate["name"].as_str().unwrap();
        assert_eq!(
            value(
                group,
                "relapse_gate_passed",
                &[run1[0], run1[1], ("gate", name)]
            ),
            Some(f64::from(u8::from(gate["passed"] == true))),
            "{gate}"
        );
    }

    // Per episode, each time exactly as in the JSON report, and absent where that says null.
    let episodes = r["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 1, "{r}");
    let e = &episodes[0];
    for key in [
        "time_to_impact_ms",
        "time_to_detect_ms",
        "time_to_mitigate_ms",
        "time_to_recover_ms",
    ] {
        assert!(e[key].is_f64(), "the scenario is meant to reach {key}: {e}");
    }
    assert!(e["time_to_drain_ms"].is_null(), "no backlog, no drain: {e}");
    let episode1 = [run1[0], run1[1], ("episode", "1")];
    for (family, key) in [
        ("relapse_time_to_impact_seconds", "time_to_impact_ms"),
        ("relapse_time_to_detect_seconds", "time_to_detect_ms"),
        ("relapse_time_to_mitigate_seconds", "time_to_mitigate_ms"),
        ("relapse_time_to_recover_seconds", "time_to_recover_ms"),
        ("relapse_time_to_serve_seconds", "time_to_serve_ms"),
        ("relapse_time_to_drain_seconds", "time_to_drain_ms"),
        ("relapse_detect_resolution_seconds", "detect_resolution_ms"),
    ] {
        assert_eq!(
            value(group, family, &episode1),
            seconds(&e[key]),
            "{family}"
        );
    }
    for (family, key) in [
        ("relapse_episode_sli_samples", "samples"),
        ("relapse_episode_sli_failures", "failures"),
    ] {
        assert_eq!(
            value(group, family, &episode1),
            e[key].as_u64().map(|n| n as f64),
            "{family}"
        );
    }
    assert_eq!(
        value(group, "relapse_sli_resolution_seconds", &run1),
        seconds(&e["resolution_ms"])
    );

    // The run's duration (whole milliseconds in JSON) and start (RFC 3339 to the millisecond).
    let duration = value(group, "relapse_run_duration_seconds", &run1).unwrap();
    assert_eq!(
        (duration * 1e6).round() as u64 / 1000,
        r["duration_ms"].as_u64().unwrap()
    );
    let started = humantime::parse_rfc3339(r["started"].as_str().unwrap()).unwrap();
    let started = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let pushed = value(group, "relapse_run_timestamp_seconds", &run1).unwrap();
    assert!(
        (started..started + 0.001).contains(&pushed),
        "pushed start {pushed}, JSON start {started}"
    );

    // The summary went after what was there, as one row for the one episode, escaped.
    let text = std::fs::read_to_string(&summary).unwrap();
    let (before, ours) = text.split_once("### relapse\n").unwrap();
    assert_eq!(before, "## an earlier step\n\nall good\n");
    let rows: Vec<&str> = ours.lines().filter(|l| l.starts_with("| export")).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(
        rows[0].starts_with(
            "| export \"failover\" a/b\\\\c \\| d<br>e | 1 (primary-hangs) | ✅ pass | "
        ),
        "{text}"
    );
    assert!(rows[0].contains(" by failover-log | "), "{text}");
    assert!(rows[0].contains(" (failover) | "), "{text}");
    assert!(text.ends_with("|\n\n"), "{text:?}");
}

#[test]
fn a_pushgateway_that_is_not_there_exits_3_and_the_reports_are_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    // A port nobody listens on.
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let summary = dir.path().join("summary.md");
    let output = run(
        dir.path(),
        &quick_scenario("push-to-nowhere", sleeper.0.id(), port),
        &[
            "--pushgateway",
            &format!("http://{nowhere}"),
            "--markdown",
            summary.to_str().unwrap(),
        ],
    );
    // The run passed; its metrics were lost: that must not look like success.
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: --pushgateway: the metrics of scenario \"push-to-nowhere\" were not pushed: PUT http://{nowhere}/metrics/job/relapse/scenario/push-to-nowhere: "
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    let report = json_report(dir.path(), &output);
    assert_eq!(report["runs"][0]["verdict"], "pass");
    assert_eq!(report["runs"][0]["outcome"], "pass");
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(
        text.contains("| push-to-nowhere | 1 (freeze) | ✅ pass |"),
        "{text}"
    );
}

#[test]
fn a_pushgateway_that_refuses_the_push_exits_3_with_its_status_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Pushgateway::start(dir.path());
    // Another job's relapse_verdict of another type: the pushgateway refuses ours as
    // inconsistent with it, with a 400 that says why.
    let (status, body) = http(
        gateway.address,
        "PUT",
        "/metrics/job/someone-else",
        "relapse_verdict 1\n",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let output = run(
        dir.path(),
        &quick_scenario("refused-push", sleeper.0.id(), port),
        &["--pushgateway", &gateway.url()],
    );
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "PUT {}/metrics/job/relapse/scenario/refused-push: status 400 Bad Request: pushed metrics are invalid or inconsistent",
            gateway.url()
        )),
        "{stderr}"
    );
    assert_eq!(
        json_report(dir.path(), &output)["runs"][0]["verdict"],
        "pass"
    );
    // The pushgateway keeps the refused group as a record of the failure, with none of our
    // metrics in it.
    let groups = gateway.groups();
    let ours: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == "relapse")
        .collect();
    assert_eq!(ours.len(), 1, "{groups:?}");
    assert_eq!(ours[0]["last_push_successful"], false, "{groups:?}");
    let families: Vec<&String> = ours[0].as_object().unwrap().keys().collect();
    assert!(
        families.iter().all(|name| !name.starts_with("relapse_")),
        "{families:?}"
    );
}

#[test]
fn a_pushgateway_off_loopback_or_not_http_is_invalid_input_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sleeper = Sleeper::start();
    let (_listener, port) = listening_port();
    let scenario = quick_scenario("never-runs", sleeper.0.id(), port);
    // 198.51.100.0/24 is TEST-NET-2: documentation only; nothing is ever sent there.
    for (url, says) in [
        (
            "http://198.51.100.7:9091",
            "\"198.51.100.7\" is not loopback: relapse reaches only 127.0.0.0/8, ::1 and localhost unless told otherwise; name it with --allow-target 198.51.100.7",
        ),
        (
            "https://127.0.0.1:9091",
            "only http:// URLs are supported",
        ),
    ] {
        let output = run(dir.path(), &scenario, &["--pushgateway", url]);
        assert_eq!(output.status.code(), Some(2), "{}", show(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("error: --pushgateway {url}: {says}")),
            "{stderr}"
        );
        assert!(
            !dir.path().join("state").exists(),
            "a journal was started for a refused push target"
        );
        assert!(!dir.path().join("report.json").exists());
    }
}
