//! `relapse run` with faults and probes on an agent on a test host (a network namespace the
//! test makes, joined by a veth pair): each measured like the same scenario run locally, and
//! nothing left on the agent or in the journal afterwards.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::agents::*;
use support::PgTable;

/// The demo's backend hangs, frozen locally or by an agent on a test host (whose namespace
/// shares this machine's pids, so `{demo.primary.pid}` names the same process there). `on`
/// and the agent are the only difference.
fn demo_scenario(agent: Option<&Agent>) -> String {
    let (agent_section, on) = match agent {
        None => (String::new(), ""),
        Some(agent) => (agent_section(agent, "2s", "250ms"), "on = \"a1\"\n"),
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
    let scenario = remote_scenario(&agent, &table, "2s", "5s", "1s");
    // While the fault holds (2 s), the limit is the few descriptors `sleep` has plus 2.
    let mut lowered = None;
    let (run, output) = tokio::task::block_in_place(|| {
        run_while(&scenario, || {
            let now = soft_nofile(pid);
            lowered = (now != before).then_some(now);
            lowered.is_some()
        })
    });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lowered: u64 = lowered.unwrap().parse().unwrap();
    assert!(lowered < 16, "soft limit {lowered} during the fault");
    assert_eq!(soft_nofile(pid), before, "the limit was not restored");
    assert_eq!(run["metrics"]["placements"][0]["agent"], "a1", "{run}");
    assert!(holds_nothing(&agent).await);
}

/// `port_exhaustion` through an agent: the agent's port holders take every ephemeral port of
/// another test host's namespace (by name), where an implicit-bind connect then fails with
/// EADDRNOTAVAIL; after the run it connects again, and the holders are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_port_exhaustion_starves_the_namespace_and_frees_it() {
    let host = test_host(8);
    let victim = test_host(9);
    let agent = start_agent_on(&["port_exhaustion"], Some(&host));
    assert_eq!(connect_inside(&victim), Ok(()));
    let table = format!("port_exhaustion = {{ netns = \"{}\" }}", victim.name());
    let scenario = remote_scenario(&agent, &table, "1s", "5s", "1s");
    let (run, output) = tokio::task::block_in_place(|| {
        run_while(&scenario, || {
            connect_inside(&victim) == Err(nix::libc::EADDRNOTAVAIL)
        })
    });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        event_detail(&run, "fault effective").contains("on agent a1"),
        "{run}"
    );
    assert_eq!(connect_inside(&victim), Ok(()), "the ports were not freed");
    assert!(holds_nothing(&agent).await);
}

/// `db_lock` through an agent: its session (over PostgreSQL's unix socket, which the test
/// host's namespace shares with this one) holds an ACCESS EXCLUSIVE lock on a table of the
/// test's own while the fault holds, and no lock is left after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_db_lock_is_held_and_released() {
    let host = test_host(10);
    let agent = start_agent_on(&["db_lock"], Some(&host));
    let table = PgTable::create("agent_lock");
    let fault = format!(
        "db_lock = {{ postgres = \"host=/var/run/postgresql user=postgres dbname=test\", table = \"{}\" }}",
        table.0
    );
    let scenario = remote_scenario(&agent, &fault, "1s", "5s", "1s");
    let (run, output) =
        tokio::task::block_in_place(|| run_while(&scenario, || table.locks_held() > 0));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        event_detail(&run, "fault effective").contains("ACCESS EXCLUSIVE"),
        "{run}"
    );
    assert_eq!(table.locks_held(), 0, "the lock outlived the run");
    assert!(holds_nothing(&agent).await);
}

/// The three floods through an agent, each at the server on the agent's own loopback (where a
/// flood's sources must be): each sends, and its revert, confirmed on the agent, leaves no
/// connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_floods_send_and_close_every_connection() {
    let host = test_host(11);
    let agent = start_agent_on(
        &["http_flood", "slowloris", "connection_flood"],
        Some(&host),
    );
    let (_server, _root) = server_in(&host);
    // (table, what its effective instant says, what its confirmed revert says)
    let floods = [
        (
            r#"http_flood = { url = "http://127.0.0.1:8080/", rate = 200, connections = 4, max_requests = 400 }"#,
            "first request sent",
            "http flood stopped after",
        ),
        (
            r#"slowloris = { url = "http://127.0.0.1:8080/", connections = 20 }"#,
            "20 of 20 connections open",
            "slowloris: 0 connections open",
        ),
        (
            r#"connection_flood = { url = "http://127.0.0.1:8080/", connections = 20 }"#,
            "20 of 20 connections open",
            "connection_flood: 0 connections open",
        ),
    ];
    for (table, effective, reverted) in floods {
        // The SLI is the agent's port, as in the other tests; the server is what is flooded.
        let scenario = remote_scenario(&agent, table, "1s", "5s", "1s");
        let (run, output) = tokio::task::block_in_place(|| relapse_run_quietly(&scenario));
        assert!(
            output.status.success(),
            "{table}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let applied = event_detail(&run, "fault effective");
        let detail = event_detail(&run, "fault reverted");
        eprintln!("remote: {applied} / {detail}");
        assert!(applied.contains(effective), "{table}: {applied}");
        assert!(detail.contains(reverted), "{table}: {detail}");
        if let Some(answered) = detail.split(" requests (").nth(1) {
            // 200 requests a second for its 1 s; half of them at least.
            let answered: u64 = answered.split(' ').next().unwrap().parse().unwrap();
            assert!(answered >= 100, "{detail}");
        }
        assert!(holds_nothing(&agent).await, "{table}");
    }
}

/// `relapse run` until it ends, for a fault whose effect the test does not watch.
fn relapse_run_quietly(scenario: &str) -> (serde_json::Value, std::process::Output) {
    run_while(scenario, || true)
}

/// `fs_freeze` through an agent, of a file system the test made (so `allow_foreign_mount`:
/// the agent did not make it): a writer here that writes and syncs every 20 ms is held for the
/// fault's second (its longest gap is at least the duration less 100 ms for the confirmations
/// either side), and after the run a write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_fs_freeze_holds_writers_for_its_duration_and_thaws() {
    let dir = tempfile::tempdir().unwrap();
    // Made before the agent starts, so the agent's mount namespace has it too.
    let fs =
        relapse_fs::ScratchFs::create(dir.path(), "agentfs", 64 << 20, &mut |_, _| Ok(())).unwrap();
    let mount = fs.mountpoint().to_path_buf();
    let host = test_host(12);
    let agent = start_agent_on(&["fs_freeze"], Some(&host));
    let table = format!(
        "fs_freeze = {{ mount = \"{}\", allow_foreign_mount = true }}",
        mount.display()
    );
    let scenario = remote_scenario(&agent, &table, "1s", "5s", "1s");
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (mount, writing) = (mount.clone(), writing.clone());
        std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut last = std::time::Instant::now();
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let mut file = std::fs::File::create(mount.join("canary")).unwrap();
                std::io::Write::write_all(&mut file, b"x").unwrap();
                file.sync_all().unwrap();
                longest = longest.max(last.elapsed());
                last = std::time::Instant::now();
                std::thread::sleep(Duration::from_millis(20));
            }
            longest
        })
    };
    let (run, output) = tokio::task::block_in_place(|| relapse_run_quietly(&scenario));
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let longest = writer.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        event_detail(&run, "fault effective").contains("on agent a1"),
        "{run}"
    );
    eprintln!("remote fs_freeze: the writer's longest wait {longest:?} (fault 1 s)");
    assert!(
        longest >= Duration::from_millis(900),
        "the writer waited at most {longest:?}"
    );
    std::fs::write(mount.join("after"), b"thawed").unwrap();
    assert!(holds_nothing(&agent).await);
    drop(fs);
}

/// Two probes of the same server inside the agent's host: `remote` from the agent (its own
/// loopback, which only a check made there can reach) and `local` from here (the host's
/// address across the link); `sli` names the one measured. The agent freezes the server.
fn remote_sli_scenario(agent: &Agent, inside: &str, pid: u32, sli: &str) -> String {
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

{agent}
[[fault]]
name = "server-hangs"
on = "a1"
process_freeze = {{ pid = {pid} }}
start = "500ms"
duration = "1s"

[limits]
observe_after = "2s"
"#,
        agent = agent_section(agent, "2s", "250ms"),
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
