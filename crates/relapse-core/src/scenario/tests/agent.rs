//! `[[agent]]`, and `on` on faults and probes.

use std::path::Path;
use std::time::Duration;

use super::super::*;
use super::{error, parse_str};

/// A scenario with one agent and one fault on it, whose kind table is written `kind_table`.
fn with_agent(agent_extra: &str, fault: &str) -> String {
    format!(
        r#"
[scenario]
name = "remote"

[[probe]]
name = "sli"
tcp = {{ address = "127.0.0.1:25" }}

[steady_state]
probe = "sli"
window = "1s"
min_success = 0.9

[[agent]]
name = "db1"
url = "https://10.0.0.12:7700"
ca = "tls/ca.pem"
token_file = "tls/token"
{agent_extra}

[[fault]]
name = "hang"
start = "1s"
duration = "5s"
{fault}
"#
    )
}

#[test]
fn an_agent_gets_its_defaults_and_a_remote_fault_its_table() {
    let scenario = parse_str(&with_agent(
        "",
        r#"on = "db1"
process_freeze = { command = "postgres: checkpointer" }"#,
    ))
    .unwrap();
    let agent = &scenario.agents[0];
    assert_eq!(agent.host, "10.0.0.12");
    assert_eq!(agent.lease, DEFAULT_LEASE);
    assert_eq!(agent.renew_every, DEFAULT_RENEW_EVERY);
    assert_eq!(
        scenario.faults[0].on,
        vec![OnAgent {
            agent: "db1".into(),
            table: r#"process_freeze = { command = "postgres: checkpointer" }"#.into(),
        }]
    );
}

#[test]
fn a_remote_fault_written_as_a_section_travels_as_one_inline_table() {
    let scenario = parse_str(&with_agent(
        r#"lease = "3s"
renew_every = "500ms""#,
        r#"on = "db1"

[fault.fd_exhaustion]
pid = 4242
headroom = 2"#,
    ))
    .unwrap();
    let table = &scenario.faults[0].on[0].table;
    assert!(table.starts_with("fd_exhaustion = {"), "{table}");
    assert!(!table.contains('\n'), "{table}");
    // The agent reads the table back into the same model.
    let text = format!("[[fault]]\nname = \"hang\"\nstart = \"0s\"\nduration = \"5s\"\n{table}\n");
    let again = parse_fault_table(Path::new("t"), &text, &[], &Vars::default()).unwrap();
    assert_eq!(again.kind, scenario.faults[0].kind);
    assert_eq!(scenario.agents[0].lease, Duration::from_secs(3));
}

#[test]
fn on_must_name_an_agent_and_a_kind_that_can_run_away() {
    let unknown = error(&with_agent(
        "",
        r#"on = "db2"
process_freeze = { pid = 4242 }"#,
    ));
    assert!(
        unknown.contains(r#"fault "hang": unknown agent "db2": expected one of "db1""#),
        "{unknown}"
    );
    let demo = error(&with_agent(
        "",
        r#"on = "db1"
process_freeze = { demo = "backend" }"#,
    ));
    assert!(demo.contains("demo"), "{demo}");
    let renew = error(&with_agent(
        r#"lease = "2s"
renew_every = "2s""#,
        "process_freeze = { pid = 4242 }",
    ));
    assert!(
        renew.contains(
            r#"agent "db1": renew_every must be more than 0ms and less than the lease (2s)"#
        ),
        "{renew}"
    );
    let url =
        error(&with_agent("", "process_freeze = { pid = 4242 }").replace("https://", "http://"));
    assert!(url.contains("expected https://HOST:PORT"), "{url}");
}

#[test]
fn a_run_proxy_cannot_be_switched_from_an_agent() {
    let text = with_agent(
        "",
        r#"on = "db1"
db_proxy = { proxy = "pg", mode = "stall" }"#,
    )
    .replace(
        "[[agent]]",
        "[[db_proxy]]\nname = \"pg\"\npostgres = \"127.0.0.1:5432\"\n\n[[agent]]",
    );
    let message = error(&text);
    assert!(
        message.contains("a db_proxy fault switches what the run itself started"),
        "{message}"
    );
}

#[test]
fn a_remote_fault_may_name_an_agent_address() {
    let vars_of = |text: &str| parse_str(text).map(|s| s.faults[0].kind.name());
    assert_eq!(
        vars_of(&with_agent(
            "",
            r#"on = "db1"
connection_flood = { url = "http://{agent.db1.address}:5432/", connections = 10 }"#,
        ))
        .unwrap(),
        "connection_flood"
    );
}

/// A scenario with one agent whose SLI probe, written `probe`, may check from it.
fn with_remote_probe(probe: &str) -> String {
    with_agent("", "process_freeze = { pid = 4242 }")
        .replace("tcp = { address = \"127.0.0.1:25\" }", probe)
}

#[test]
fn a_probe_on_an_agent_travels_as_its_kind_table_and_reads_back_the_same() {
    let scenario = parse_str(&with_remote_probe(
        r#"on = "db1"
every = "250ms"
http = { url = "http://{agent.db1.address}:8080/health", timeout = "300ms", expect = [200, 204] }"#,
    ))
    .unwrap();
    let probe = &scenario.probes[0];
    let on = probe.on.as_ref().unwrap();
    assert_eq!(on.agent, "db1");
    assert!(on.table.starts_with("http = {"), "{}", on.table);
    assert!(!on.table.contains("every"), "{}", on.table);
    let mut vars = Vars::default();
    vars.set("agent.db1.address", "10.0.0.12".to_string());
    let text = format!("[[probe]]\nname = \"sli\"\n{}\n", on.table);
    let again = parse_probe_table(Path::new("t"), &text, &["10.0.0.12".into()], &vars).unwrap();
    assert_eq!(again.kind.key(), "http");
    assert_eq!(again.kind.timeout(), Duration::from_millis(300));
    assert!(again.on.is_none());
}

#[test]
fn a_probe_section_on_an_agent_is_sent_inline() {
    let scenario = parse_str(&with_remote_probe(
        r#"on = "db1"

[probe.tcp]
address = "127.0.0.1:5432"
timeout = "200ms""#,
    ))
    .unwrap();
    let table = &scenario.probes[0].on.as_ref().unwrap().table;
    assert!(table.starts_with("tcp = {"), "{table}");
    assert!(!table.contains('\n'), "{table}");
}

#[test]
fn a_probe_on_must_name_an_agent() {
    let message = error(&with_remote_probe(
        r#"on = "web9"
tcp = { address = "127.0.0.1:25" }"#,
    ));
    assert!(
        message.contains("probe \"sli\": unknown agent \"web9\": expected one of \"db1\""),
        "{message}"
    );
}

#[test]
fn an_agent_reads_a_probe_table_against_its_own_allowlist() {
    let text = "[[probe]]\nname = \"sli\"\ntcp = { address = \"10.9.9.9:25\" }\n";
    let refused = parse_probe_table(Path::new("the probe's table"), text, &[], &Vars::default())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("the probe's table:3:"), "{refused}");
    assert!(refused.contains("10.9.9.9"), "{refused}");
    let two = "[[probe]]\nname = \"a\"\ntcp = { address = \"127.0.0.1:1\" }\n[[probe]]\nname = \"b\"\ntcp = { address = \"127.0.0.1:2\" }\n";
    let refused = parse_probe_table(Path::new("t"), two, &[], &Vars::default())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("expected exactly one [[probe]] and nothing else, found 2 tables"),
        "{refused}"
    );
    // A fault's table cannot bring a probe along, nor the other way round.
    let both = "[[fault]]\nname = \"f\"\nstart = \"0s\"\nduration = \"1s\"\nprocess_freeze = { pid = 1 }\n[[probe]]\nname = \"a\"\ntcp = { address = \"127.0.0.1:1\" }\n";
    for refused in [
        parse_fault_table(Path::new("t"), both, &[], &Vars::default()).map(|_| ()),
        parse_probe_table(Path::new("t"), both, &[], &Vars::default()).map(|_| ()),
    ] {
        let refused = refused.unwrap_err().to_string();
        assert!(
            refused.contains("and nothing else, found 2 tables"),
            "{refused}"
        );
    }
}

/// `with_agent` with a second agent, `db2`, and a third, `db3`.
fn with_three_agents(fault: &str) -> String {
    let mut agents = String::new();
    for (name, address) in [("db2", "10.0.0.13"), ("db3", "10.0.0.14")] {
        agents.push_str(&format!(
            "[[agent]]\nname = \"{name}\"\nurl = \"https://{address}:7700\"\nca = \"tls/ca.pem\"\ntoken_file = \"tls/token\"\n\n"
        ));
    }
    with_agent("", fault).replace("[[fault]]", &format!("{agents}[[fault]]"))
}

#[test]
fn a_flood_on_a_list_of_agents_sends_each_its_share_and_its_own_sources() {
    let scenario = parse_str(&with_three_agents(
        r#"on = ["db1", "db2", "db3"]
http_flood = { url = "http://127.0.0.1:8080/", rate = 300, connections = 30, max_requests = 1000, source_cidr = "127.0.0.8/29" }"#,
    ))
    .unwrap();
    let on = &scenario.faults[0].on;
    let agents: Vec<&str> = on.iter().map(|o| o.agent.as_str()).collect();
    assert_eq!(agents, ["db1", "db2", "db3"]);
    // Each agent reads its table back with its own loader: the shares add up to the flood.
    let mut rate = 0.0;
    let mut requests = 0;
    let mut sources = Vec::new();
    for shard in on {
        let text = format!(
            "[[fault]]\nname = \"hang\"\nstart = \"0s\"\nduration = \"5s\"\n{}\n",
            shard.table
        );
        let spec = parse_fault_table(Path::new("t"), &text, &[], &Vars::default()).unwrap();
        let FaultKind::HttpFlood(flood) = spec.kind else {
            panic!("{:?}", spec.kind)
        };
        let FloodLoad::Open { rate: own, .. } = flood.load else {
            panic!("{:?}", flood.load)
        };
        rate += own;
        requests += flood.max_requests;
        let FloodSources::List(own) = flood.sources else {
            panic!("{:?}", flood.sources)
        };
        sources.extend(own);
    }
    assert!((rate - 300.0).abs() < 1e-9, "{rate}");
    assert_eq!(requests, 1000);
    assert_eq!(sources.len(), 8);
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), 8, "no two shards share a source");
}

#[test]
fn a_list_of_agents_is_only_for_floods_and_names_each_agent_once() {
    let freeze = error(&with_three_agents(
        r#"on = ["db1", "db2"]
process_freeze = { pid = 4242 }"#,
    ));
    assert!(
        freeze.contains(r#"fault "hang": a process_freeze fault runs on one agent: `on` takes a list only for "http_flood", "slowloris", "connection_flood""#),
        "{freeze}"
    );
    let twice = error(&with_three_agents(
        r#"on = ["db1", "db1"]
connection_flood = { url = "http://127.0.0.1:25/", connections = 10 }"#,
    ));
    assert!(twice.contains(r#"`on` lists agent "db1" twice"#), "{twice}");
    let unknown = error(&with_three_agents(
        r#"on = ["db1", "db9"]
connection_flood = { url = "http://127.0.0.1:25/", connections = 10 }"#,
    ));
    assert!(unknown.contains(r#"unknown agent "db9""#), "{unknown}");
    let none = error(&with_three_agents(
        r#"on = []
connection_flood = { url = "http://127.0.0.1:25/", connections = 10 }"#,
    ));
    assert!(none.contains("`on` lists no agent"), "{none}");
    let small = error(&with_three_agents(
        r#"on = ["db1", "db2", "db3"]
slowloris = { url = "http://127.0.0.1:25/", connections = 2 }"#,
    ));
    assert!(
        small.contains("2 connections cannot be spread over 3 agents"),
        "{small}"
    );
    let number = error(&with_three_agents(
        r#"on = 3
connection_flood = { url = "http://127.0.0.1:25/", connections = 10 }"#,
    ));
    assert!(
        number.contains("an [[agent]]'s name, or a list of them"),
        "{number}"
    );
}
