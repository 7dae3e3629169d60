//! `relapse schema`: the JSON Schema of the scenario format, checked against what the loader
//! accepts and refuses. Every key is documented; every shipped scenario is valid, and so are the
//! values the loader accepts at the edges of the schema's patterns; every malformed case the
//! schema can express (an unknown key, a wrong type, a missing key, a value outside a list, a
//! pattern or a range) is refused by it too; the rest are the loader's own checks (references,
//! templates, ranges that depend on other keys).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The malformed cases in `tests/data/bad/` that the schema refuses, by file stem: an unknown
/// key or section, a wrong type, a missing section, a value outside a list or a pattern, a
/// number out of range. Every other case passes the schema and is refused by the loader alone:
/// what one key cannot say by itself — references between sections (a probe, proxy, process or
/// demo component by name, template variables), exactly one kind, target or server per table,
/// unique names, bounds that depend on other keys or on a duration's value (a window against
/// the probe's `every`, `jobs.work` against `upstream_timeout`, a zero or too long duration),
/// the error codes of the proxy's own server, and what needs parsing (addresses, CIDRs, regular
/// expressions, hosts outside loopback).
const REFUSED_BY_THE_SCHEMA: &[&str] = &[
    "auth-unknown-profile",
    "backlog-negative-max",
    "bad-duration",
    "bad-http-method",
    "command-empty",
    "db-proxy-unknown-mode",
    "duration-without-unit",
    "error-ratio-out-of-range",
    "expect-failed-empty",
    "expect-failed-unknown-gate",
    "expect-unknown",
    "failover-unknown-key",
    "failover-unknown-name",
    "failover-zero-fall",
    "flood-delivered-out-of-range",
    "flood-too-many-connections",
    "freeze-init",
    "https-url",
    "min-success-out-of-range",
    "missing-scenario-section",
    "negative-duration",
    "no-faults",
    "port-exhaustion-unknown-mode",
    "process-empty-run",
    "process-unknown-signal",
    "prometheus-above-not-finite",
    "scratch-fs-bad-size",
    "status-out-of-range",
    "unknown-demo-component",
    "unknown-fault-kind",
    "unknown-key",
    "unknown-section",
    "wrong-type",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn schema() -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn as_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let value: toml::Value = toml::from_str(&text).ok()?;
    Some(serde_json::to_value(value).unwrap())
}

fn scenarios(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scenarios(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn the_schema_is_draft_2020_12_and_documents_every_key() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let mut undocumented = Vec::new();
    let mut tables = vec![("scenario file".to_string(), &schema)];
    for (name, definition) in schema["$defs"].as_object().unwrap() {
        tables.push((name.clone(), definition));
    }
    for (name, table) in tables {
        for (key, property) in table["properties"].as_object().into_iter().flatten() {
            if property.get("description").is_none() {
                undocumented.push(format!("{name}.{key}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "keys without a description: {undocumented:?}"
    );
}

#[test]
fn every_shipped_scenario_is_valid_and_each_malformed_case_the_schema_can_express_is_refused() {
    let schema = schema();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let mut shipped = Vec::new();
    scenarios(&repo("scenarios"), &mut shipped);
    scenarios(&repo("deploy"), &mut shipped);
    assert!(shipped.len() >= 12, "{shipped:?}");
    for path in &shipped {
        let scenario = as_json(path).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&scenario)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }

    let mut refused = Vec::new();
    let mut bad: Vec<PathBuf> = std::fs::read_dir(repo("tests/data/bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    bad.sort();
    for path in &bad {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        // Not TOML at all: no document for a schema to judge.
        let Some(scenario) = as_json(path) else {
            continue;
        };
        if !validator.is_valid(&scenario) {
            refused.push(stem);
        }
    }
    assert_eq!(refused, REFUSED_BY_THE_SCHEMA);
}

/// A scenario the loader accepts, with `scenario` added to `[scenario]` and `tables` after the
/// rest.
fn edge_case(scenario: &str, tables: &str) -> String {
    format!(
        r#"
[scenario]
name = "edge"
{scenario}

[target.demo]

[[probe]]
name = "web"
http = {{ url = "{{demo.url}}/" }}

[steady_state]
probe = "web"
window = "1s"
min_success = 0.9

[[fault]]
name = "freeze"
process_freeze = {{ demo = "backend" }}
start = "1s"
duration = "2s"

{tables}
"#
    )
}

/// What the loader accepts at the edges of the schema's patterns and lists — words in any case,
/// a `SIG` prefix, a gate name with spaces around it or a `+` in its episode, a duration without
/// a leading digit, a MySQL code written as a string, a setting of another mode, which the
/// loader ignores — the schema accepts too: it is never stricter than the loader.
#[test]
fn what_the_loader_accepts_at_the_edges_the_schema_accepts() {
    let cases = [
        (
            "",
            r#"
            [[probe]]
            name = "login"
            http = { url = "{demo.url}/login", method = "post" }
            "#,
        ),
        (
            "",
            r#"
            [[target.process]]
            name = "app"
            run = ["sleep", "60"]
            stop = { signal = "sigterm" }

            [[target.process]]
            name = "other-1"
            run = ["sleep", "60"]
            stop = { signal = "Hup" }
            "#,
        ),
        (
            r#"
            expect = "fail"
            expect_failed = [" recover_within[+1] ", "max_error_ratio"]
            "#,
            r#"
            [gates]
            recover_within = "1s"
            max_error_ratio = 0.5
            "#,
        ),
        (
            "",
            r#"
            [limits]
            observe_after = ".5s"
            inject_timeout = " 2 s "
            "#,
        ),
        (
            "",
            r#"
            [[db_proxy]]
            name = "Mail_DB"
            postgres = "127.0.0.1:5432"

            [[db_proxy]]
            name = "queue"
            mysql = "127.0.0.1:3306"

            [[fault]]
            name = "pg"
            db_proxy = { proxy = "Mail_DB", mode = "error", error = "55p03" }
            start = "5s"
            duration = "1s"

            [[fault]]
            name = "my"
            db_proxy = { proxy = "queue", mode = "error", error = "1205" }
            start = "10s"
            duration = "1s"
            "#,
        ),
        (
            "",
            r#"
            [[fault]]
            name = "flood"
            http_flood = { url = "{demo.url}/", method = "Patch", rate = 0.5 }
            start = "5s"
            duration = "1s"

            [[fault]]
            name = "ports"
            port_exhaustion = { netns = "blue", mode = "leak", destination = "127.0.0.1:80", fraction = 5.0 }
            start = "10s"
            duration = "1s"
            "#,
        ),
    ];
    let validator = jsonschema::draft202012::new(&schema()).unwrap();
    for (scenario, tables) in cases {
        let text = edge_case(scenario, tables);
        if let Err(e) = relapse_core::scenario::parse(Path::new("edge.toml"), &text) {
            panic!("the loader refuses an edge case: {e}\n{text}");
        }
        let value = serde_json::to_value(toml::from_str::<toml::Value>(&text).unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:?}\n{text}");
    }
}
