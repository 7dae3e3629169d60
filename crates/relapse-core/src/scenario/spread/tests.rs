use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::scenario::{parse_fault_table, Vars};

#[test]
fn shares_add_up_and_differ_by_at_most_one() {
    assert_eq!(shares(10, 4), [3, 3, 2, 2]);
    assert_eq!(shares(3, 4), [1, 1, 1, 0]);
    assert_eq!(shares(0, 2), [0, 0]);
    assert!(shares(5, 0).is_empty());
    for (total, n) in [(1_000_003, 7), (10_000, 3), (1, 1), (99, 100)] {
        let parts = shares(total, n);
        assert_eq!(parts.len(), n);
        assert_eq!(parts.iter().sum::<u64>(), total);
        assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
    }
}

#[test]
fn segments_are_disjoint_contiguous_and_cover_every_item() {
    let sources: Vec<u32> = (0..10).collect();
    let runs = segments(&sources, 4);
    assert_eq!(runs, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9]]);
    assert_eq!(runs.concat(), sources);
}

/// One flood's `[[fault]]` with `kind_table`, read by the agent's own loader: its kind, and
/// its kind's value as the scenario wrote it.
fn flood(kind_table: &str) -> (FaultKind, toml::Value) {
    let text =
        format!("[[fault]]\nname = \"flood\"\nstart = \"0s\"\nduration = \"10s\"\n{kind_table}\n");
    let spec = parse_fault_table(Path::new("t"), &text, &[], &Vars::default()).unwrap();
    let document: toml::Table = toml::from_str(&text).unwrap();
    let value = document["fault"][0][spec.kind.name()].clone();
    (spec.kind, value)
}

/// What each shard's table reads back as, by the same loader an agent uses.
fn read_back(kind: &str, tables: &[toml::Value]) -> Vec<FaultKind> {
    tables
        .iter()
        .map(|table| flood(&format!("{kind} = {table}")).0)
        .collect()
}

#[test]
fn an_open_flood_splits_its_rate_connections_requests_and_sources() {
    let (kind, table) = flood(
        r#"http_flood = { url = "http://127.0.0.1:8080/", rate = 1000, connections = 10, max_requests = 5003, source_cidr = "127.20.0.0/29", timeout = "1s" }"#,
    );
    let tables = shard_tables(&kind, &table, 4).unwrap();
    let shards = read_back("http_flood", &tables);
    let mut rate = 0.0;
    let (mut in_flight, mut requests) = (0, 0);
    let mut seen = BTreeSet::new();
    for shard in &shards {
        let FaultKind::HttpFlood(f) = shard else {
            panic!("{shard:?}")
        };
        let FloodLoad::Open {
            rate: r,
            max_in_flight,
        } = f.load
        else {
            panic!("{f:?}")
        };
        rate += r;
        in_flight += max_in_flight;
        requests += f.max_requests;
        let FloodSources::List(list) = &f.sources else {
            panic!("{f:?}")
        };
        for address in list {
            assert!(seen.insert(*address), "{address} in two shards");
        }
        // Everything else is the flood's own.
        assert_eq!(f.timeout, std::time::Duration::from_secs(1));
    }
    assert_eq!(rate, 1000.0);
    assert_eq!(in_flight, 10);
    assert_eq!(requests, 5003);
    assert_eq!(seen.len(), 8, "every address of the /29, once");
}

#[test]
fn held_connections_split_and_without_sources_each_kernel_picks() {
    for kind in ["slowloris", "connection_flood"] {
        let (spec, table) = flood(&format!(
            r#"{kind} = {{ url = "http://127.0.0.1:8080/", connections = 10 }}"#
        ));
        let tables = shard_tables(&spec, &table, 3).unwrap();
        assert!(tables.iter().all(|t| t.get("sources").is_none()));
        let held: Vec<usize> = read_back(kind, &tables)
            .iter()
            .map(|s| match s {
                FaultKind::Slowloris(f) => f.connections,
                FaultKind::ConnectionFlood(f) => f.connections,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(held, [4, 3, 3], "{kind}");
    }
}

#[test]
fn a_flood_too_small_for_its_agents_or_not_a_flood_is_refused() {
    let (kind, table) =
        flood(r#"connection_flood = { url = "http://127.0.0.1:8080/", connections = 2 }"#);
    let refused = shard_tables(&kind, &table, 3).unwrap_err();
    assert!(
        refused.contains("2 connections cannot be spread over 3 agents"),
        "{refused}"
    );
    let (kind, table) = flood(
        r#"http_flood = { url = "http://127.0.0.1:8080/", connections = 8, sources = ["127.0.0.2", "127.0.0.3"] }"#,
    );
    let refused = shard_tables(&kind, &table, 4).unwrap_err();
    assert!(
        refused.contains("2 source addresses cannot be spread over 4 agents"),
        "{refused}"
    );
    let (kind, table) = flood(r#"process_freeze = { pid = 4242 }"#);
    let refused = shard_tables(&kind, &table, 2).unwrap_err();
    assert!(
        refused.contains("a process_freeze fault cannot be spread"),
        "{refused}"
    );
}
