//! A flood spread over agents (`on = ["a1", "a2"]`) on test hosts (network namespaces the test
//! makes): the shards start behind one barrier, each sends its share, and the run's report
//! holds each shard's figures and the whole flood's, merged from theirs.

mod support;

use relapse_core::report::FloodFigures;
use support::agents::*;

/// Each agent on a host of its own floods the server on its own loopback (where a flood's
/// sources must be); the SLI is a1's port.
fn spread_scenario(agents: &[&Agent], table: &str, duration: &str) -> String {
    let names: Vec<String> = (1..=agents.len()).map(|i| format!("\"a{i}\"")).collect();
    let sections: String = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| named_agent_section(agent, &format!("a{}", i + 1), "2s", "250ms"))
        .collect::<Vec<_>>()
        .join("\n");
    let authority = agents[0].url.trim_start_matches("https://");
    let host = authority.rsplit_once(':').unwrap().0;
    format!(
        r#"[scenario]
name = "spread"
allow_targets = ["{host}"]

[[probe]]
name = "agent-port"
every = "50ms"
tcp = {{ address = "{authority}" }}

[steady_state]
probe = "agent-port"
window = "200ms"
min_success = 0.5

{sections}
[[fault]]
name = "flood"
on = [{names}]
{table}
start = "0s"
duration = "{duration}"

[limits]
observe_after = "1s"
"#,
        names = names.join(", ")
    )
}

fn figures(value: &serde_json::Value) -> FloodFigures {
    serde_json::from_value(value.clone()).unwrap()
}

/// Two shards of 100 req/s each for 2 s: both start behind the barrier, each reports its own
/// figures, and the whole flood's are exactly theirs merged (counts added, histograms added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_flood_starts_its_shards_together_and_merges_their_figures() {
    let hosts = [test_host(21), test_host(22)];
    let agents: Vec<Agent> = hosts
        .iter()
        .map(|h| start_agent_on(&["http_flood"], Some(h)))
        .collect();
    let _servers: Vec<_> = hosts.iter().map(server_in).collect();
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
    for agent in &agents {
        assert!(holds_nothing(agent).await);
    }
}
