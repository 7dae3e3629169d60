//! Spread flood: the total rate of N = 1, 2 and 4 shards against one target, as a ratio to N
//! times one shard alone, measured in the same run.
//!
//! Each measurement is a real `relapse run` of a scenario whose one fault is a closed-model
//! `http_flood` (8 connections per shard, as fast as answered) spread over N real agents
//! (`relapse agent serve`, on loopback, each its own process), against one
//! `relapse-bench-server` on loopback. The total rate is the merged flood's answers per second.
//! The rounds alternate N so that drift on the machine touches every N alike.
//!
//! Run: `cargo build --release && cargo build --release -p relapse-flood --bin
//! relapse-bench-server && cargo bench --bench spread_rate` (ROUNDS, DURATION_S to override).
//! Every load is bounded by its duration; traffic stays on loopback.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[allow(dead_code)] // the tests' helpers: the bench uses the agents and the runs
#[path = "../tests/support/agents.rs"]
mod agents;
#[path = "support/bench_server.rs"]
mod bench_server;

use agents::{run_while, spread_scenario, start_agent_on, Agent};
use bench_server::Server;
use relapse_core::report::FloodFigures;

const SHARDS: [usize; 3] = [1, 2, 4];
const CONNECTIONS_PER_SHARD: usize = 8;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The whole flood's figures of one run spread over `agents`.
fn flood(agents: &[&Agent], server: &Server, duration_s: u64) -> FloodFigures {
    let table = format!(
        "http_flood = {{ url = \"http://{}/\", connections = {} }}",
        server.addr,
        CONNECTIONS_PER_SHARD * agents.len()
    );
    let scenario = spread_scenario(agents, &table, &format!("{duration_s}s"));
    let (run, output) = run_while(&scenario, || true);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_value(run["floods"][0]["figures"].clone()).expect("the flood's figures")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; this bench has no filter to take.
    let rounds = env_or("ROUNDS", 3) as usize;
    let duration_s = env_or("DURATION_S", 3);
    let server = Server::start(2);
    let agents: Vec<Agent> = (0..*SHARDS.iter().max().unwrap())
        .map(|_| start_agent_on(&["http_flood"], None))
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); SHARDS.len()];
    for round in 0..rounds {
        for (i, &n) in SHARDS.iter().enumerate() {
            let on: Vec<&Agent> = agents.iter().take(n).collect();
            let whole = flood(&on, &server, duration_s);
            let rate = whole.achieved_rps();
            println!(
                "round {round}: {n} shard(s): {} answered in {:?}: {rate:.0} req/s, p99 {:?}",
                whole.completed,
                whole.duration,
                whole.latency_at(0.99)
            );
            rates[i].push(rate);
        }
    }
    let alone = median(&mut rates[0].clone());
    println!("\nshards | total req/s (median of {rounds}) | N × one shard alone | ratio");
    for (i, &n) in SHARDS.iter().enumerate() {
        let total = median(&mut rates[i]);
        println!(
            "{n} | {total:.0} | {:.0} | {:.2}",
            alone * n as f64,
            total / (alone * n as f64)
        );
    }
}
