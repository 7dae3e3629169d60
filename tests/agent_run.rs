//! `relapse run` with faults and probes on an agent on a test host (a network namespace the
//! test makes, joined by a veth pair): each measured like the same scenario run locally, and
//! nothing left on the agent or in the journal afterwards.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::agents::*;

/// The demo's backend hangs, frozen locally or by an agent on a test host (whose namespace
/// shares this machine's pids, so `{demo.primary.pid}` names the same process there). `on`
/// and the agent are the only difference.
fn demo_scenario(agent: Option<&Agent>) -> String {
    let (agent_section, on) = match agent {
        None => (String::new(), ""),
        Some(agent) => {
            let tls = agent.dir.path().join("tls");
            (
                format!(
                    "[[agent]]\nname = \"a1\"\nurl = \"{}\"\nca = \"{}\"\ntoken_file = \"{}\"\nlease = \"2s\"\nrenew_every = \"250ms\"\n",
                    agent.url,
                    tls.join("ca.pem").display(),
                    tls.join("token").display()
                ),
                "on = \"a1\"\n",
            )
        }
    };
    format!(
        r#"[scenario]
name = "backend-hang"

[target.demo]
upstream_timeout = "250ms"
monitor = {{ interval = "250ms", timeout = "250ms", fall = 2, rise = 1, alertname = "FrontendDown" }}

[[probe]]
name = "web"
every = "50ms"
http = {{ url = "{{demo.url}}/", timeout = "1s" }}

[steady_state]
probe = "web"
window = "1s"
min_success = 0.95
timeout = "20s"

[[detect]]
name = "pager"
webhook = {{ match = {{ alertname = "FrontendDown" }} }}

{agent_section}
[[fault]]
name = "backend-hangs"
{on}process_freeze = {{ pid = "{{demo.primary.pid}}" }}
start = "500ms"
duration = "2s"

[gates]
allowed_error_statuses = [502, 503, 504]

[limits]
observe_after = "3s"
"#
    )
}

/// A remote `process_freeze` of the demo's backend through an agent on a test host measures
/// as the same fault run locally: both detected by the demo's monitor and recovered. The
/// monitor's alert can fire no sooner than fall × interval after the hang, and no later than
/// fall × (interval + timeout) plus one interval; the remote instant adds at most the clock's
/// stated uncertainty (under a millisecond on a veth link, bounded here by 5 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_freeze_of_the_demo_measures_like_a_local_one() {
    let host = test_host(3);
    let agent = start_agent_on(&["process_freeze"], Some(&host));
    let (local, _) = relapse_run(&demo_scenario(None));
    let (remote, output) = relapse_run(&demo_scenario(Some(&agent)));
    let (interval, timeout, fall) = (250.0, 250.0, 2.0);
    let earliest = fall * interval - 50.0;
    let latest = fall * (interval + timeout) + interval + 5.0;
    for (where_, run) in [("local", &local), ("remote", &remote)] {
        let metrics = &run["metrics"];
        let ttd = metrics["time_to_detect_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{where_}: not detected: {run}"));
        let ttr = metrics["time_to_recover_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{where_}: not recovered: {run}"));
        eprintln!(
            "{where_} process_freeze of the demo's backend: TTD {ttd:.1} ms, TTR {ttr:.1} ms"
        );
        assert!(
            (earliest..=latest).contains(&ttd),
            "{where_}: TTD {ttd} ms outside {earliest}..={latest}"
        );
        assert_eq!(run["verdict"], "pass", "{where_}: {run}");
    }
    let effective = remote["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "fault effective")
        .unwrap_or_else(|| panic!("no effective event: {remote}"));
    assert!(
        effective["detail"]
            .as_str()
            .unwrap()
            .contains("on agent a1"),
        "{effective}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The report says where the fault ran, and its resolution carries the clock's uncertainty.
    let placement = &remote["metrics"]["placements"][0];
    assert_eq!(placement["agent"], "a1", "{}", remote["metrics"]);
    let clock = placement["clock_uncertainty_ms"].as_f64().unwrap();
    assert!(clock > 0.0 && clock < 5.0, "clock uncertainty {clock} ms");
    eprintln!("remote fault's clock uncertainty: ± {clock:.3} ms");
    assert!(
        local["metrics"]["placements"].is_null(),
        "{}",
        local["metrics"]
    );
    // The run released the agent: it holds nothing, and no lease.
    let client = connect(&agent).await;
    let held = client.held().await.unwrap();
    assert!(held.faults.is_empty() && held.run.is_none(), "{held:?}");
}

/// `fd_exhaustion` through `relapse run` on an agent: the agent lowers the remote process's
/// soft descriptor limit (seen in /proc during the run) and restores it at the revert, and the
/// report names the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_fd_exhaustion_lowers_the_limit_and_restores_it() {
    let host = test_host(6);
    let agent = start_agent_on(&["fd_exhaustion"], Some(&host));
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let before = soft_nofile(pid);
    let table = format!("fd_exhaustion = {{ command = \"{command}\", headroom = 2 }}");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, remote_scenario(&agent, &table, "2s", "5s", "1s")).unwrap();
    let state = dir.path().join("state");
    let json = dir.path().join("report.json");
    let mut run = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", &state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the fault holds (2 s), the limit is the few descriptors `sleep` has plus 2; /proc
    // has no event for a limit's change, so it is polled (30 s bounds a slow start).
    let start = std::time::Instant::now();
    let lowered = loop {
        let now = soft_nofile(pid);
        if now != before {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30) && run.try_wait().unwrap().is_none(),
            "the limit was never lowered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let lowered: u64 = lowered.parse().unwrap();
    assert!(lowered < 16, "soft limit {lowered} during the fault");
    let output = run.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(soft_nofile(pid), before, "the limit was not restored");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        report["runs"][0]["metrics"]["placements"][0]["agent"], "a1",
        "{report}"
    );
    assert!(
        walk(&state).is_empty(),
        "the journal still holds {:?}",
        walk(&state)
    );
    let held = connect(&agent).await.held().await.unwrap();
    assert!(held.faults.is_empty() && held.run.is_none(), "{held:?}");
}

/// An HTTP server (Python's) inside `host`, on port 8080 of all its addresses, serving a
/// directory of its own.
fn server_in(host: &relapse_ports::netns::Host) -> (Started, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "ok\n").unwrap();
    // `ip netns exec` enters the namespace and execs the server: the pid is the server's.
    let server = Started(
        Command::new("ip")
            .args(["netns", "exec", host.name(), "python3", "-m", "http.server"])
            .args(["--bind", "0.0.0.0", "--directory"])
            .arg(root.path())
            .arg("8080")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (server, root)
}

/// Two probes of the same server inside the agent's host: `remote` from the agent (its own
/// loopback, which only a check made there can reach) and `local` from here (the host's
/// address across the link); `sli` names the one measured. The agent freezes the server.
fn remote_sli_scenario(agent: &Agent, inside: &str, pid: u32, sli: &str) -> String {
    let tls = agent.dir.path().join("tls");
    format!(
        r#"[scenario]
name = "remote-sli"
allow_targets = ["{inside}"]

[[probe]]
name = "remote"
on = "a1"
every = "50ms"
http = {{ url = "http://127.0.0.1:8080/", timeout = "200ms" }}

[[probe]]
name = "local"
every = "50ms"
http = {{ url = "http://{inside}:8080/", timeout = "200ms" }}

[steady_state]
probe = "{sli}"
window = "500ms"
min_success = 0.95
timeout = "20s"

[[agent]]
name = "a1"
url = "{url}"
ca = "{ca}"
token_file = "{token}"
lease = "2s"
renew_every = "250ms"

[[fault]]
name = "server-hangs"
on = "a1"
process_freeze = {{ pid = {pid} }}
start = "500ms"
duration = "1s"

[limits]
observe_after = "2s"
"#,
        url = agent.url,
        ca = tls.join("ca.pem").display(),
        token = tls.join("token").display(),
    )
}

/// The SLI checked from an agent's host: its checks reach a server on that host's own
/// loopback (unreachable from here), their instants are the agent's mapped to this host's
/// clock, and the freeze's impact and recovery measure as they do with the SLI checked from
/// here across the link. A check sent at or after the freeze times out, so the impact is seen
/// within one probe interval (50 ms) of the injection, plus the harness's lateness (20 ms
/// allowed) and the clock's uncertainty; after the thaw the next check succeeds, so the
/// recovery (the start of the first steady window) comes within one interval and one timeout
/// (200 ms) of the revert, plus the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sli_checked_from_an_agent_measures_like_the_sli_checked_from_here() {
    let host = test_host(7);
    let agent = start_agent_on(&["process_freeze"], Some(&host));
    let (server, _root) = server_in(&host);
    let inside = host.inside.to_string();
    let pid = server.0.id();
    let (every, timeout, late) = (50.0, 200.0, 20.0);
    for sli in ["remote", "local"] {
        let (run, output) = relapse_run(&remote_sli_scenario(&agent, &inside, pid, sli));
        let metrics = &run["metrics"];
        let clock = metrics["placements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["clock_uncertainty_ms"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let tti = metrics["time_to_impact_ms"].as_f64().unwrap_or_else(|| {
            panic!(
                "{sli}: no impact: {run}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let ttr = metrics["time_to_recover_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{sli}: not recovered: {run}"));
        eprintln!("SLI checked {sli}ly: TTI {tti:.1} ms, TTR {ttr:.1} ms, clock ± {clock:.3} ms");
        assert!(
            tti <= every + late + 2.0 * clock,
            "{sli}: TTI {tti} ms, later than one interval after the freeze"
        );
        assert!(
            ttr <= every + timeout + late + 2.0 * clock,
            "{sli}: TTR {ttr} ms"
        );
        let placed: Vec<(String, String)> = metrics["placements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let what = p["probe"].as_str().or(p["fault"].as_str()).unwrap();
                (what.to_string(), p["agent"].as_str().unwrap().to_string())
            })
            .collect();
        let mut expected = vec![("server-hangs".to_string(), "a1".to_string())];
        let terminal = String::from_utf8_lossy(&output.stdout);
        if sli == "remote" {
            expected.push(("remote".into(), "a1".into()));
            assert!(
                terminal.contains("server-hangs (on agent a1), the SLI checked from agent a1"),
                "{terminal}"
            );
        }
        assert_eq!(placed, expected, "{sli}");
        // Both probes saw the freeze, each from its side of the link.
        for probe in run["probes"].as_array().unwrap() {
            assert!(
                probe["errors"].as_u64().unwrap() > 0 && probe["samples"].as_u64().unwrap() > 20,
                "{sli}: {probe}"
            );
        }
    }
    let held = connect(&agent).await.held().await.unwrap();
    assert!(held.faults.is_empty() && held.run.is_none(), "{held:?}");
}

/// An agent whose lease another run holds refuses this run's: `relapse run` stops before it
/// probes or applies anything (inconclusive, exit 3), says which agent and why, and strikes its
/// journal's entry for the lease it never took at once (the guardian is left nothing to do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_take_an_agents_lease_stops_with_nothing_journaled() {
    let agent = start_agent(&["process_freeze"]);
    let client = connect(&agent).await;
    let other = run_id("someone-else");
    client
        .lease(&other, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap();
    let (sleeper, command) = target();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, freeze_scenario(&agent, &command, "5s", "1s")).unwrap();
    let state = dir.path().join("state");
    let output = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&scenario)
        .env("RELAPSE_STATE_DIR", &state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("agent \"a1\"") && stderr.contains("someone-else"),
        "{stderr}"
    );
    assert_ne!(support::agents::state(sleeper.0.id()), 'T');
    // The entry went at once: the guardian found nothing to revert at the end.
    assert!(!stderr.contains("relapse guardian: reverted"), "{stderr}");
    assert!(
        walk(&state).is_empty(),
        "the journal holds {:?}",
        walk(&state)
    );
    // The other run's lease is untouched.
    assert_eq!(
        client.held().await.unwrap().run.as_deref(),
        Some("someone-else")
    );
}
