//! `relapse schema`: the JSON Schema of the scenario format, checked against what the loader
//! accepts and refuses. Every shipped scenario is valid; every malformed case the schema can
//! express (an unknown key, a wrong type, a missing key, a value outside a list) is refused by
//! it too; the rest are the loader's own checks (references, ranges, templates).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The malformed cases in `tests/data/bad/` that the schema refuses, by file stem. Every other
/// case passes the schema and is refused by the loader alone.
const REFUSED_BY_THE_SCHEMA: &[&str] = &[
    "bad-duration",
    "duration-without-unit",
    "failover-unknown-key",
    "failover-unknown-name",
    "missing-scenario-section",
    "negative-duration",
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
    assert!(shipped.len() >= 10, "{shipped:?}");
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
