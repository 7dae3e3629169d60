//! Loading scenarios: defaults, and errors that point at the right place.

use std::path::Path;
use std::time::Duration;

use super::load::line_column;
use super::*;

const GOOD: &str = r#"
[scenario]
name = "example"

[target.demo]
monitor = { interval = "250ms", fall = 2 }

[[probe]]
name = "webmail"
every = "50ms"
http = { url = "{demo.url}/", timeout = "1s" }

[[probe]]
name = "smtp"
tcp = { address = "127.0.0.1:25" }

[steady_state]
probe = "webmail"
window = "2s"
min_success = 0.99
max_p99 = "300ms"

[[detect]]
name = "pager"
webhook = { match = { alertname = "FrontendDown" } }

[[detect]]
name = "errors"
log = { path = "/var/log/app.log", pattern = "ERROR .* timeout" }

[[fault]]
name = "hang"
process_freeze = { demo = "backend" }
start = "1s"
duration = "5s"

[gates]
detect_within = "5s"
recover_within = "2m"
allowed_error_statuses = [503]
"#;

fn parse_str(text: &str) -> Result<Scenario, ScenarioError> {
    parse(Path::new("s.toml"), text)
}

/// The error as the CLI prints it.
fn error(text: &str) -> String {
    parse_str(text).unwrap_err().to_string()
}

#[test]
fn reads_a_full_scenario_and_fills_defaults() {
    let s = parse_str(GOOD).unwrap();
    assert_eq!(s.name, "example");
    let demo = s.demo.unwrap();
    assert_eq!(demo.upstream_timeout, Duration::from_millis(250));
    assert_eq!(demo.monitor.interval, Duration::from_millis(250));
    assert_eq!((demo.monitor.fall, demo.monitor.rise), (2, 2));
    assert_eq!(s.probes.len(), 2);
    match &s.probes[0].kind {
        ProbeKind::Http { method, expect, .. } => {
            assert_eq!(method, "GET");
            assert_eq!(expect, &[200]);
        }
        other => panic!("expected an http probe, got {other:?}"),
    }
    assert_eq!(s.probes[1].every, Duration::from_millis(100));
    assert_eq!(s.steady_state.probe, 0);
    assert_eq!(s.steady_state.timeout, Duration::from_secs(30));
    assert_eq!(s.detectors.len(), 2);
    assert_eq!(
        s.faults[0].kind,
        FaultKind::ProcessFreeze(ProcessFreezeSpec {
            target: ProcessTarget::Demo(DemoComponent::Primary),
            process_group: false
        })
    );
    assert_eq!(s.gates.recover_within, Some(Duration::from_secs(120)));
    assert_eq!(s.limits.max_run, Duration::from_secs(600));
    assert_eq!(s.sink_listen, "127.0.0.1:0".parse().unwrap());
}

#[test]
fn a_bad_duration_points_at_its_value() {
    let text = GOOD.replace("window = \"2s\"", "window = \"2 parsecs\"");
    let line = text.lines().position(|l| l.starts_with("window")).unwrap() + 1;
    let err = error(&text);
    assert!(
        err.starts_with(&format!("s.toml:{line}:10: invalid duration \"2 parsecs\"")),
        "{err}"
    );
    assert!(
        err.contains("expected a number followed by a unit"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_an_error_that_lists_the_expected_ones() {
    let text = GOOD.replace("min_success = 0.99", "min_succes = 0.99");
    let line = text
        .lines()
        .position(|l| l.starts_with("min_succes"))
        .unwrap()
        + 1;
    let err = error(&text);
    assert!(
        err.starts_with(&format!("s.toml:{line}:1: unknown field `min_succes`")),
        "{err}"
    );
    assert!(err.contains("expected one of"), "{err}");
}

#[test]
fn an_unknown_fault_kind_names_the_known_kinds() {
    let text = GOOD.replace(
        "process_freeze = { demo = \"backend\" }",
        "disk_fill = { path = \"/\" }",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("disk_fill"))
        .unwrap()
        + 1;
    let err = error(&text);
    assert!(
        err.starts_with(&format!("s.toml:{line}:1: unknown field `disk_fill`")),
        "{err}"
    );
    assert!(err.contains("process_freeze"), "{err}");
}

#[test]
fn a_missing_probe_reference_points_at_the_reference() {
    let text = GOOD.replace("probe = \"webmail\"", "probe = \"webmial\"");
    let line = text
        .lines()
        .position(|l| l.starts_with("probe = "))
        .unwrap()
        + 1;
    let err = error(&text);
    assert_eq!(
        err,
        format!(
            "s.toml:{line}:9: unknown probe \"webmial\": expected one of \"webmail\", \"smtp\""
        )
    );
}

#[test]
fn a_demo_variable_without_a_demo_is_refused() {
    let text = GOOD
        .replace(
            "[target.demo]\nmonitor = { interval = \"250ms\", fall = 2 }\n",
            "",
        )
        .replace(
            "process_freeze = { demo = \"backend\" }",
            "process_freeze = { pid = 4242 }",
        );
    let err = error(&text);
    assert!(
        err.contains("template variable `{demo.url}` needs [target.demo]"),
        "{err}"
    );
}

#[test]
fn a_fault_needs_exactly_one_target() {
    let text = GOOD.replace(
        "process_freeze = { demo = \"backend\" }",
        "process_freeze = { pid = 4242, demo = \"backend\" }",
    );
    assert!(error(&text).contains("process_freeze needs exactly one target"));
    let text = GOOD.replace(
        "process_freeze = { demo = \"backend\" }",
        "process_freeze = { pid = 1 }",
    );
    assert!(error(&text).contains("refusing to freeze pid 0 or 1"));
}

#[test]
fn a_process_is_found_by_its_command_line_at_injection() {
    let text = GOOD.replace(
        "process_freeze = { demo = \"backend\" }",
        "process_freeze = { command = \"postgres: checkpointer\" }",
    );
    let s = parse_str(&text).unwrap();
    assert_eq!(
        s.faults[0].kind,
        FaultKind::ProcessFreeze(ProcessFreezeSpec {
            target: ProcessTarget::Command("postgres: checkpointer".into()),
            process_group: false,
        })
    );
    let text = GOOD.replace(
        "process_freeze = { demo = \"backend\" }",
        "process_freeze = { command = \"postgres\", pid = 4242 }",
    );
    assert!(error(&text).contains("process_freeze needs exactly one target"));
    let text = GOOD.replace(
        "process_freeze = { demo = \"backend\" }",
        "process_freeze = { command = \"  \" }",
    );
    let err = error(&text);
    assert!(err.contains("`command` is empty"), "{err}");
    assert!(err.starts_with("s.toml:"), "the place is given: {err}");
}

#[test]
fn one_fault_table_is_read_as_an_agent_receives_it() {
    let text = "[[fault]]\nname = \"db-hangs\"\nstart = \"0s\"\nduration = \"2s\"\nprocess_freeze = { command = \"postgres: checkpointer\" }\n";
    let fault = parse_fault_table(Path::new("agent"), text, &[], &Vars::default()).unwrap();
    assert_eq!(fault.name, "db-hangs");
    assert_eq!(
        fault.kind,
        FaultKind::ProcessFreeze(ProcessFreezeSpec {
            target: ProcessTarget::Command("postgres: checkpointer".into()),
            process_group: false,
        })
    );
    // What needs a run's own world is refused, with the place in the text.
    let demo = text.replace("command = \"postgres: checkpointer\"", "demo = \"backend\"");
    let err = parse_fault_table(Path::new("agent"), &demo, &[], &Vars::default())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("agent:5:"), "{err}");
    assert!(err.contains("no [target.demo]"), "{err}");
    let two = format!("{text}{text}");
    let err = parse_fault_table(Path::new("agent"), &two, &[], &Vars::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected exactly one [[fault]] and nothing else, found 2 tables"),
        "{err}"
    );
}

#[test]
fn an_invalid_regex_is_caught_at_load_time() {
    let text = GOOD.replace("ERROR .* timeout", "ERROR (unclosed");
    assert!(error(&text).contains("invalid regular expression"));
}

#[test]
fn syntax_errors_point_at_the_place() {
    let err = error("[scenario]\nname = \"x\"\n[steady_state\n");
    assert!(err.starts_with("s.toml:3:"), "{err}");
}

#[test]
fn line_and_column_count_characters_not_bytes() {
    assert_eq!(line_column("ab\ncdé\nf", 8), (3, 1));
    assert_eq!(line_column("ab\ncdé\nf", 7), (2, 4));
    assert_eq!(line_column("x", 0), (1, 1));
}

const PROXIED: &str = r#"
[scenario]
name = "proxied"

[[db_proxy]]
name = "mail-db"
postgres = "127.0.0.1:5432"

[target.demo]
database = { postgres = "host={db_proxy.mail-db.host} port={db_proxy.mail-db.port} user=postgres dbname=test", profile = "misleading_errors" }

[[probe]]
name = "webmail"
http = { url = "{demo.url}/mail" }

[steady_state]
probe = "webmail"
window = "1s"
min_success = 0.9

[backlog]
name = "queue"
sql = { postgres = "host=127.0.0.1 user=postgres dbname=test", query = "SELECT count(*) FROM {demo.queue_table}" }
max = 3

[[fault]]
name = "stall"
db_proxy = { proxy = "mail-db", mode = "stall_writes" }
start = "1s"
duration = "2s"

[[fault]]
name = "deadlock"
db_proxy = { proxy = "mail-db", mode = "error", error = "40p01" }
start = "4s"
duration = "2s"

[[fault]]
name = "slow"
db_proxy = { proxy = "mail-db", mode = "latency", latency = "200ms", jitter = "50ms" }
start = "7s"
duration = "2s"
"#;

#[test]
fn reads_db_proxies_their_faults_and_a_backlog() {
    let s = parse(Path::new("proxied.toml"), PROXIED).unwrap();
    assert_eq!(
        s.db_proxies,
        [DbProxySpec {
            name: "mail-db".into(),
            server: DbServer::Postgres,
            upstream: "127.0.0.1:5432".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
        }]
    );
    let database = s.demo.unwrap().database.unwrap();
    assert_eq!(database.server, DbServer::Postgres);
    assert!(database.misleading_errors);
    let mut vars = Vars::default();
    vars.set("db_proxy.mail-db.host", "127.0.0.1");
    vars.set("db_proxy.mail-db.port", "41234");
    assert_eq!(
        database.dsn.render(&vars).unwrap(),
        "host=127.0.0.1 port=41234 user=postgres dbname=test"
    );
    let modes: Vec<&FaultKind> = s.faults.iter().map(|f| &f.kind).collect();
    assert_eq!(
        modes,
        [
            &FaultKind::DbProxy(DbProxyFaultSpec {
                proxy: 0,
                mode: DbProxyMode::StallWrites
            }),
            &FaultKind::DbProxy(DbProxyFaultSpec {
                proxy: 0,
                mode: DbProxyMode::Error {
                    code: DbErrorCode::Deadlock
                }
            }),
            &FaultKind::DbProxy(DbProxyFaultSpec {
                proxy: 0,
                mode: DbProxyMode::Latency {
                    latency: Duration::from_millis(200),
                    jitter: Duration::from_millis(50)
                }
            }),
        ]
    );
    let backlog = s.backlog.unwrap();
    assert_eq!((backlog.name.as_str(), backlog.max), ("queue", 3.0));
    assert_eq!(backlog.every, Duration::from_millis(100));
    assert!(matches!(
        backlog.kind,
        BacklogKind::Sql {
            server: DbServer::Postgres,
            ..
        }
    ));
}

#[test]
fn the_demo_database_cannot_use_the_demo_s_own_variables() {
    let text = PROXIED.replace("{db_proxy.mail-db.host}", "{demo.backend.address}");
    let error = parse(Path::new("proxied.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("proxied.toml:10:") && error.contains("cannot use `{demo.backend.address}`"),
        "{error}"
    );
}

const FLOODED: &str = r#"
[scenario]
name = "flooded"

[target.demo]
auth = { profile = "no_mitigation", ban = "5s" }

[[probe]]
name = "login"
http = { url = "{demo.url}/login", method = "post", headers = { "content-type" = "application/x-www-form-urlencoded" }, body = "user=demo&password=demo-password" }

[steady_state]
probe = "login"
window = "1s"
min_success = 0.9

[[fault]]
name = "flood"
http_flood = { url = "{demo.url}/login?n={seq}", method = "POST", body = "user=u{rand.u32}&password={rand.alnum:12}", rate = 500, connections = 128, source_cidr = "127.20.0.0/23", ramp_up = "1s" }
start = "1s"
duration = "10s"

[[fault]]
name = "slow"
slowloris = { url = "{demo.url}/", connections = 200, sources = ["127.0.0.2", "127.0.0.3"] }
start = "12s"
duration = "2s"

[[fault]]
name = "idle"
connection_flood = { url = "{demo.url}/", connections = 300 }
start = "15s"
duration = "2s"
"#;

#[test]
fn reads_floods_and_the_demo_login() {
    let s = parse(Path::new("flooded.toml"), FLOODED).unwrap();
    let auth = s.demo.as_ref().unwrap().auth.clone().unwrap();
    assert_eq!(
        auth,
        DemoAuthSpec {
            mitigation: false,
            max_failures: 3,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(5),
        }
    );
    let ProbeKind::Http {
        method,
        headers,
        body,
        ..
    } = &s.probes[0].kind
    else {
        panic!("an http probe")
    };
    assert_eq!(method, "POST");
    assert_eq!(headers[0].0, "content-type");
    assert_eq!(body, "user=demo&password=demo-password");

    let FaultKind::HttpFlood(flood) = &s.faults[0].kind else {
        panic!("an http_flood")
    };
    assert_eq!(
        flood.load,
        FloodLoad::Open {
            rate: 500.0,
            max_in_flight: 128
        }
    );
    assert_eq!(
        flood.sources,
        FloodSources::Cidr {
            network: "127.20.0.0".parse().unwrap(),
            prefix: 23
        }
    );
    assert_eq!(flood.max_requests, 1_000_000);
    // Run variables are filled in; the flood's own placeholders are left for it.
    let mut vars = Vars::default();
    vars.set("demo.url", "http://127.0.0.1:4000");
    assert_eq!(
        flood
            .url
            .render_keeping(&vars, is_flood_placeholder)
            .unwrap(),
        "http://127.0.0.1:4000/login?n={seq}"
    );
    assert!(matches!(
        &s.faults[1].kind,
        FaultKind::Slowloris(SlowlorisSpec {
            connections: 200,
            sources: FloodSources::List(list),
            header_interval,
            ..
        }) if list.len() == 2 && *header_interval == Duration::from_secs(1)
    ));
    assert!(matches!(
        &s.faults[2].kind,
        FaultKind::ConnectionFlood(ConnectionFloodSpec {
            connections: 300,
            sources: FloodSources::Default,
            ..
        })
    ));
}

#[test]
fn an_imap_probe_selects_inbox_by_default_and_stays_on_loopback() {
    let text = GOOD.replace(
        "tcp = { address = \"127.0.0.1:25\" }",
        "imap = { address = \"127.0.0.1:143\", user = \"demo\", password = \"pw\", timeout = \"2s\" }",
    );
    let s = parse_str(&text).unwrap();
    let ProbeKind::Imap {
        address,
        user,
        mailbox,
        fetch_header,
        timeout,
        ..
    } = &s.probes[1].kind
    else {
        panic!("not an imap probe: {:?}", s.probes[1].kind);
    };
    assert_eq!(address.render(&Vars::default()).unwrap(), "127.0.0.1:143");
    assert_eq!((user.as_str(), mailbox.as_str()), ("demo", "INBOX"));
    assert_eq!(*fetch_header, None);
    assert_eq!(*timeout, Duration::from_secs(2));
    let off_loopback = text.replace("127.0.0.1:143", "192.0.2.9:143");
    assert!(
        error(&off_loopback).contains("target \"192.0.2.9\" is not loopback"),
        "{}",
        error(&off_loopback)
    );
}

#[test]
fn failover_reads_a_table_with_defaults_or_none_and_a_standby_needs_it() {
    let with = |setting: &str| {
        GOOD.replace(
            "monitor = { interval = \"250ms\", fall = 2 }",
            &format!("monitor = {{ interval = \"250ms\", fall = 2 }}\n{setting}"),
        )
    };
    let s = parse_str(&with("failover = { inter = \"100ms\", fall = 3 }")).unwrap();
    let failover = s.demo.unwrap().failover.unwrap();
    assert_eq!(
        failover,
        FailoverSpec {
            inter: Duration::from_millis(100),
            timeout: Duration::from_millis(250),
            fall: 3,
            rise: 2,
            failback: false,
        }
    );
    let s = parse_str(&with("failover = \"none\"")).unwrap();
    assert_eq!(s.demo.unwrap().failover, None);
    // Without failover there is no standby to freeze, nor its variables.
    let standby = GOOD.replace("demo = \"backend\"", "demo = \"standby\"");
    assert!(
        error(&standby).contains("the demo has no standby"),
        "{}",
        error(&standby)
    );
    let with_standby = with("failover = {}").replace("demo = \"backend\"", "demo = \"standby\"");
    let s = parse_str(&with_standby).unwrap();
    assert_eq!(
        s.faults[0].kind,
        FaultKind::ProcessFreeze(ProcessFreezeSpec {
            target: ProcessTarget::Demo(DemoComponent::Standby),
            process_group: false,
        })
    );
    let variable = GOOD.replace("{demo.url}/", "{demo.standby.url}/");
    assert!(
        error(&variable).contains("needs the demo's standby"),
        "{}",
        error(&variable)
    );
    let bad_key = with("failover = { inter = \"100ms\", falls = 3 }");
    let message = error(&bad_key);
    assert!(message.contains("unknown field `falls`"), "{message}");
}

#[test]
fn jobs_must_finish_within_the_upstream_timeout() {
    let with = |jobs: &str| {
        GOOD.replace(
            "monitor = { interval = \"250ms\", fall = 2 }",
            &format!("monitor = {{ interval = \"250ms\", fall = 2 }}\n{jobs}"),
        )
    };
    let s = parse_str(&with("jobs = { per_request = 3 }")).unwrap();
    assert_eq!(
        s.demo.unwrap().jobs,
        Some(JobsSpec {
            per_request: 3,
            work: Duration::from_millis(20),
            max_queue: 100_000,
        })
    );
    let message = error(&with("jobs = { work = \"250ms\" }"));
    assert!(
        message.contains("less than the upstream timeout (250ms)"),
        "{message}"
    );
}

#[test]
fn a_faults_gates_join_the_scenarios_and_overlapping_faults_must_agree() {
    let own = GOOD.replace(
        "duration = \"5s\"\n",
        "duration = \"5s\"\ngates = { mitigate_within = \"1s\", detect_within = \"2s\" }\n",
    );
    let s = parse_str(&own).unwrap();
    let gates = s.gates.overlay(&s.faults[0].gates);
    assert_eq!(gates.mitigate_within, Some(Duration::from_secs(1)));
    assert_eq!(gates.detect_within, Some(Duration::from_secs(2)));
    assert_eq!(gates.recover_within, Some(Duration::from_secs(120)));
    let second = |gates: &str, start: &str| {
        format!(
            "{own}\n[[fault]]\nname = \"again\"\nprocess_freeze = {{ demo = \"backend\" }}\nstart = \"{start}\"\nduration = \"1s\"\n{gates}\n"
        )
    };
    // The same gate, another value, overlapping in time: which would judge the episode?
    let clash = second("gates = { mitigate_within = \"3s\" }", "2s");
    let message = error(&clash);
    assert!(
        message.contains(
            "fault \"again\" sets `mitigate_within` for its episode, and so does fault \"hang\""
        ),
        "{message}"
    );
    // Apart in time, or agreeing, they may.
    parse_str(&second("gates = { mitigate_within = \"3s\" }", "10s")).unwrap();
    parse_str(&second("gates = { mitigate_within = \"1s\" }", "2s")).unwrap();
}

#[test]
fn the_mitigation_label_is_short() {
    let labelled = GOOD.replace(
        "name = \"example\"",
        "name = \"example\"\nmitigation = \"failover\"",
    );
    assert_eq!(
        parse_str(&labelled).unwrap().mitigation.as_deref(),
        Some("failover")
    );
    let long = labelled.replace("failover", "someone restarts it by hand, eventually");
    assert!(
        error(&long).contains("1 to 32 characters"),
        "{}",
        error(&long)
    );
}

mod agent;
