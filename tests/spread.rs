//! A flood spread over agents (`on = ["a1", "a2"]`) on test hosts (network namespaces the test
//! makes): the shards start behind one barrier, each sends its share, and the run's report
//! holds each shard's figures and the whole flood's, merged from theirs. A shard whose agent
//! dies is reported lost and its share counted as not sent; a coordinator that dies leaves
//! every shard to stop when its lease lapses. Each agent, on a host of its own, floods a server
//! on its host's loopback.

mod support;

use std::process::Command;
use std::time::Duration;

use relapse_core::report::FloodFigures;
use relapse_ports::netns::Host;
use support::agents::*;
use tokio::time::Instant;

/// The floods of these tests share the machine's cores: one at a time, so that none measures
/// another's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Flood agents on the test hosts of these tags, each host with a server of `serve` on its
/// loopback. The fields drop in their order: the servers, then the agents, then the hosts.
struct FloodHosts {
    servers: Vec<(Started, tempfile::TempDir)>,
    agents: Vec<Agent>,
    _hosts: Vec<Host>,
}

fn flood_hosts(
    tags: impl IntoIterator<Item = u32>,
    serve: fn(&Host) -> (Started, tempfile::TempDir),
) -> FloodHosts {
    let hosts: Vec<Host> = tags.into_iter().map(test_host).collect();
    FloodHosts {
        agents: hosts
            .iter()
            .map(|h| start_agent_on(&["http_flood"], Some(h)))
            .collect(),
        servers: hosts.iter().map(serve).collect(),
        _hosts: hosts,
    }
}

fn figures(value: &serde_json::Value) -> FloodFigures {
    serde_json::from_value(value.clone()).unwrap()
}

/// Two shards of 100 req/s each for 2 s: both start behind the barrier, each reports its own
/// figures, and the whole flood's are exactly theirs merged (counts added, histograms added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_flood_starts_its_shards_together_and_merges_their_figures() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = flood_hosts([21, 22], server_in);
    let agents = &world.agents;
    let scenario = spread_scenario(
        &agents.iter().collect::<Vec<_>>(),
        r#"http_flood = { url = "http://127.0.0.1:8080/", rate = 200, connections = 8, max_requests = 2000 }"#,
        "2s",
    );
    let (run, output) = tokio::task::block_in_place(|| run_while(&scenario, || true));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let effective = event_detail(&run, "fault effective");
    eprintln!("spread: {effective}");
    assert!(effective.contains("all 2 shards started"), "{effective}");
    // The go instant reaches both agents before it comes (it is set 150 ms ahead), so their
    // first requests differ by the start of a flood's runtime and one connect on each, plus the
    // two clocks' uncertainties (under a millisecond each on a veth link): 100 ms is far above.
    let apart: f64 = effective
        .split("first requests ")
        .nth(1)
        .and_then(|t| t.split("ms apart").next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(apart < 100.0, "{effective}");

    let flood = &run["floods"][0];
    assert_eq!(flood["fault"], "flood");
    let shards = flood["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let parts: Vec<FloodFigures> = shards
        .iter()
        .map(|shard| {
            assert!(shard.get("lost").is_none(), "{shard}");
            figures(&shard["figures"])
        })
        .collect();
    let whole = figures(&flood["figures"]);
    assert_eq!(whole, FloodFigures::merge(&parts).unwrap());
    for (i, part) in parts.iter().enumerate() {
        eprintln!(
            "shard a{}: {} sent, {} answered, {:.1} req/s, p99 {:?}",
            i + 1,
            part.sent,
            part.completed,
            part.achieved_rps(),
            part.latency_at(0.99)
        );
        assert_eq!(part.intended_rate, Some(100.0));
        // Its share for its 2 s: 200 requests, less what a slow start or stop costs.
        assert!(part.sent >= 150 && part.sent <= 1000, "{part:?}");
    }
    eprintln!(
        "whole: {} sent, {} answered, {:.1} req/s, p99 {:?}",
        whole.sent,
        whole.completed,
        whole.achieved_rps(),
        whole.latency_at(0.99)
    );
    assert_eq!(whole.intended_rate, Some(200.0));
    assert_eq!(whole.sent, parts[0].sent + parts[1].sent);
    for agent in agents {
        assert!(holds_nothing(agent).await);
    }
}

/// The lease of every agent in these scenarios.
const LEASE: Duration = Duration::from_secs(1);

/// A flood of 100 req/s per shard for 20 s, stopped long before by what the test does.
const LONG_FLOOD: &str = r#"http_flood = { url = "http://127.0.0.1:8080/", rate = 200, connections = 8, max_requests = 8000 }"#;

/// Agent a2 is killed (SIGKILL) once its shard has been answered 20 times: its lease is lost, so
/// the run aborts (exit 3) and stops a1's shard. The report names a2's shard lost, counts the
/// requests due of its share over the flood's duration as due and not sent; the run's journal
/// keeps the lease it could not release on a2, for `relapse cleanup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_agent_dies_is_reported_lost_and_its_share_counted_as_not_sent() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = flood_hosts([23, 24], server_in);
    let (agents, servers) = (&world.agents, &world.servers);
    let scenario = spread_scenario(&agents.iter().collect::<Vec<_>>(), LONG_FLOOD, "20s");
    let doomed = agents[1].process.0.id();
    let mut killed = None;
    let (run, output, left) = tokio::task::block_in_place(|| {
        run_in_background(&scenario, || {
            if requests_answered(&servers[1].1) < 20 {
                return false;
            }
            kill_9(doomed);
            killed = Some(Instant::now());
            true
        })
    });
    let ended = killed.unwrap().elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(run["verdict"], "aborted");
    let aborted = event_detail(&run, "aborted");
    assert!(aborted.contains("agent \"a2\": lease lost"), "{aborted}");

    let flood = &run["floods"][0];
    let shards = flood["shards"].as_array().unwrap();
    let lost = shards[1]["lost"].as_str().unwrap();
    assert!(shards[1]["figures"].is_null(), "{}", shards[1]);
    assert!(shards[0].get("lost").is_none(), "{}", shards[0]);
    let survivor = figures(&shards[0]["figures"]);
    let whole = figures(&flood["figures"]);
    eprintln!(
        "lost shard: {lost}; a1 sent {} in {:?}; whole {} sent of {} due; run ended {ended:?} after the kill",
        survivor.sent,
        survivor.duration,
        whole.sent,
        whole.intended.unwrap_or(0)
    );
    // The lost shard sent nothing that counts; its 100 req/s were due all along.
    assert_eq!(whole.sent, survivor.sent);
    let due = (100.0 * whole.duration.as_secs_f64()).round() as u64;
    assert_eq!(whole.intended, Some(survivor.intended.unwrap() + due));
    assert_eq!(whole.intended_rate, Some(200.0));
    assert!(whole.delivered().unwrap() < 0.6, "{whole:?}");
    // The flood stopped long before its 20 s: the lease lapsed 1 s after the last renewal
    // before the kill, and a1's shard was stopped then; 5 s covers the report's writing.
    assert!(survivor.duration < Duration::from_secs(15), "{survivor:?}");
    assert!(ended < LEASE + Duration::from_secs(5), "{ended:?}");
    // An aborted run is judged by no gate: the abort is its verdict.
    assert_eq!(run["gates"], serde_json::json!([]));
    assert!(holds_nothing(&agents[0]).await);
    // What could not be undone is kept: a2's lease, which only a2 (if it comes back) can end
    // (beside it, the run's owner: its pid and start time).
    let entries: Vec<&String> = left.iter().filter(|e| e.contains("\"kind\"")).collect();
    assert_eq!(entries.len(), 1, "{left:?}");
    assert!(entries[0].contains("\"agent_run\""), "{left:?}");
    assert!(entries[0].contains(&agents[1].url), "{left:?}");
}

/// The dead-man lease with shards: `relapse run` and its guardian are killed (SIGKILL) while
/// both shards flood, and each agent stops its shard when the lease lapses: within the lease
/// + 1 s of the kill, and not before the lease less a renewal interval and a call (350 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_man_lease_stops_every_shard_when_the_coordinator_dies() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = flood_hosts([25, 26], server_in);
    let (agents, servers) = (&world.agents, &world.servers);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        spread_scenario(&agents.iter().collect::<Vec<_>>(), LONG_FLOOD, "20s"),
    )
    .unwrap();
    let state = dir.path().join("state");
    let coordinator = start_coordinator(&file, &state);
    // Steady state, then both shards flood: 30 s bounds a slow machine's start.
    let start = Instant::now();
    while servers.iter().any(|(_, root)| requests_answered(root) < 20) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the shards never flooded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill_9(coordinator.guardian);
    kill_9(coordinator.run.0.id());
    let killed = Instant::now();
    for (i, agent) in agents.iter().enumerate() {
        while !holds_nothing(agent).await {
            assert!(
                killed.elapsed() < LEASE + Duration::from_secs(1),
                "a{}'s shard still held {:?} after the kill",
                i + 1,
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopped = killed.elapsed();
        eprintln!("a{}: shard stopped {stopped:?} after the kill", i + 1);
        assert!(
            stopped + Duration::from_millis(350) >= LEASE,
            "a{}'s shard stopped {stopped:?} after the kill, before the lease could lapse",
            i + 1
        );
    }
    drop(coordinator);
    // The coordinator's journal is left for `relapse cleanup`, which finds both runs ended.
    let cleanup = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .args(["cleanup", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        cleanup.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&cleanup.stdout),
        String::from_utf8_lossy(&cleanup.stderr)
    );
    assert!(walk(&state).is_empty(), "{:?}", walk(&state));
}

/// The whole flood's figures of a spread flood over `agents` against their own nginx, run to
/// its end (`duration`).
fn spread_flood(agents: &[Agent], table: &str, duration: &str) -> FloodFigures {
    let scenario = spread_scenario(&agents.iter().collect::<Vec<_>>(), table, duration);
    let (run, output) = tokio::task::block_in_place(|| run_while(&scenario, || true));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let flood = &run["floods"][0];
    for shard in flood["shards"].as_array().unwrap() {
        let part = figures(&shard["figures"]);
        eprintln!(
            "  shard {}: {} sent, {} answered, {:.1} req/s, p99 {:?}",
            shard["agent"],
            part.sent,
            part.completed,
            part.achieved_rps(),
            part.latency_at(0.99)
        );
    }
    figures(&flood["figures"])
}

/// Four shards on four hosts, each flooding an nginx on its host: first as fast as they can
/// (closed model, 8 connections each, 2 s), then, open model, at 70 % of the total they
/// reached. The four together send the asked total within 1 % (of the requests due at that
/// rate over the flood's duration) and every one is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_hold_the_asked_total_rate_within_one_percent_at_70_percent_of_capacity() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = flood_hosts(27..31, nginx_in);
    let agents = &world.agents;
    let url = "http://127.0.0.1:8080/";
    eprintln!("capacity:");
    let capacity = spread_flood(
        agents,
        &format!("http_flood = {{ url = \"{url}\", connections = 32 }}"),
        "2s",
    );
    let rate = (capacity.achieved_rps() * 0.7).round();
    eprintln!(
        "capacity {:.1} req/s ({} answered); asking 70 %: {rate} req/s",
        capacity.achieved_rps(),
        capacity.completed
    );
    assert!(rate >= 100.0, "{capacity:?}");
    eprintln!("at {rate} req/s:");
    let held = spread_flood(
        agents,
        &format!(
            "http_flood = {{ url = \"{url}\", rate = {rate}, connections = 64, max_requests = 10000000 }}"
        ),
        "3s",
    );
    let delivered = held.delivered().unwrap();
    eprintln!(
        "whole: {} sent of {} due ({:.2} %), {} answered, {:.1} req/s of {rate} asked, p99 {:?}",
        held.sent,
        held.intended.unwrap(),
        delivered * 100.0,
        held.completed,
        held.achieved_rps(),
        held.latency_at(0.99)
    );
    assert_eq!(held.intended_rate, Some(rate));
    assert!((0.99..=1.01).contains(&delivered), "{held:?}");
    assert!(
        held.completed as f64 >= 0.99 * held.intended.unwrap() as f64,
        "{held:?}"
    );
    for agent in agents {
        assert!(holds_nothing(agent).await);
    }
}

/// `relapse flood URL --agents FILE`: the standalone flood spread over two agents on hosts of
/// their own, 200 req/s for 2 s. Its JSON holds each shard's figures and the whole's, exactly
/// their merge; a flood that cannot be split and an agents file with a wrong key are bad input
/// (exit 2, nothing sent), the latter with its file, line and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relapse_flood_over_agents_merges_its_shards_into_one_report() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = flood_hosts([31, 32], server_in);
    let (agents, servers) = (&world.agents, &world.servers);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.toml");
    let sections: Vec<String> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| named_agent_section(agent, &format!("a{}", i + 1), "1s", "250ms"))
        .collect();
    std::fs::write(&file, sections.join("\n")).unwrap();
    let flood = |extra: &[&str], agents_file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_relapse"))
            .args(["flood", "http://127.0.0.1:8080/", "--agents"])
            .arg(agents_file)
            .args(extra)
            .output()
            .unwrap()
    };
    let output = tokio::task::block_in_place(|| {
        flood(&["--rate", "200", "-c", "8", "-d", "2s", "--json"], &file)
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let parts: Vec<FloodFigures> = report["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|shard| figures(&shard["figures"]))
        .collect();
    let whole = figures(&report["figures"]);
    assert_eq!(parts.len(), 2);
    assert_eq!(whole, FloodFigures::merge(&parts).unwrap());
    assert_eq!(whole.intended_rate, Some(200.0));
    for (part, (_, root)) in parts.iter().zip(servers) {
        eprintln!(
            "shard: {} sent, {} answered, {:.1} req/s",
            part.sent,
            part.completed,
            part.achieved_rps()
        );
        // Its share for 2 s: 200 requests, less what a slow start or stop costs; every one
        // reached its own host's server.
        assert!(part.sent >= 150 && part.sent <= 300, "{part:?}");
        assert_eq!(requests_answered(root) as u64, part.completed);
    }
    for agent in agents {
        assert!(holds_nothing(agent).await);
    }
    // For people: the whole flood's summary, then one line per shard.
    let summary =
        tokio::task::block_in_place(|| flood(&["--rate", "20", "-c", "2", "-d", "1s"], &file));
    let text = String::from_utf8_lossy(&summary.stdout);
    eprintln!("{text}");
    assert!(summary.status.success(), "{text}");
    assert!(text.contains(" sent, ") && text.contains("req/s"), "{text}");
    assert!(
        text.contains("shard on a1: ") && text.contains("shard on a2: "),
        "{text}"
    );
    let whole_completed = whole.completed
        + text
            .split(" completed")
            .next()
            .and_then(|head| head.rsplit(", ").next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no count of answers: {text}"));

    let unsplittable = flood(&["-c", "1", "-d", "1s"], &file);
    assert_eq!(unsplittable.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unsplittable.stderr);
    assert!(
        stderr.contains("1 connections cannot be spread over 2 agents"),
        "{stderr}"
    );
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, format!("{}lease_time = \"1s\"\n", sections[0])).unwrap();
    let refused = flood(&["-c", "2", "-d", "1s"], &wrong);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:8:1: unknown field `lease_time`",
            wrong.display()
        )),
        "{stderr}"
    );
    let sent: usize = servers
        .iter()
        .map(|(_, root)| requests_answered(root))
        .sum();
    assert_eq!(sent as u64, whole_completed, "bad input sent nothing");
}
