//! Scenarios: the model of what a run does (`model`), and the loader that reads a scenario file
//! (`file`, its serde types), checks it section by section (`check`, and `fault` per fault
//! kind) and builds the model (`load`). Everything public is re-exported here.

mod check;
mod fault;
mod file;
mod load;
mod model;
pub mod spread;
pub mod target;
mod template;

pub use fault::exports::*;
pub use load::{
    load, load_agents, load_allowing, parse, parse_allowing, parse_fault_table, parse_probe_table,
    parse_spread_fault, ScenarioError,
};
pub use model::*;
pub use template::{Template, TemplateError, Vars, RUN_DIR_VARIABLE};

#[cfg(test)]
mod tests;

/// The JSON Schema (draft 2020-12) of the scenario file, derived from its serde types: every
/// table and key with its documentation. What it cannot say (references between sections,
/// exactly one kind per table, template variables, bounds that depend on other keys) the
/// loader checks.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<file::ScenarioFile>())
        .expect("a schema is JSON");
    without_null(&mut schema);
    unwrapped_descriptions(&mut schema);
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$id".into(),
            serde_json::Value::String("https://relapse.invalid/scenario.schema.json".into()),
        );
        object.insert(
            "title".into(),
            serde_json::Value::String("relapse scenario".into()),
        );
    }
    schema
}

/// [`json_schema`], pretty-printed.
pub fn json_schema_text() -> String {
    serde_json::to_string_pretty(&json_schema()).expect("a schema serialises")
}

/// Doc comments are wrapped, and schemars keeps their line breaks: a description reads as one
/// paragraph per blank line, so each single line break becomes a space.
fn unwrapped_descriptions(node: &mut serde_json::Value) {
    use serde_json::Value;
    match node {
        Value::Object(object) => {
            if let Some(Value::String(text)) = object.get_mut("description") {
                let paragraphs: Vec<String> =
                    text.split("\n\n").map(|p| p.replace('\n', " ")).collect();
                *text = paragraphs.join("\n\n");
            }
            object.values_mut().for_each(unwrapped_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(unwrapped_descriptions),
        _ => {}
    }
}

/// TOML has no null: an optional key is one that may be left out, never one set to null. So
/// the `null` alternatives schemars gives an `Option` go (`anyOf: [T, null]` becomes `T`,
/// `type: [T, "null"]` becomes `T`), and an editor does not offer them.
fn without_null(node: &mut serde_json::Value) {
    use serde_json::Value;
    match node {
        Value::Object(object) => {
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    object.insert("type".into(), only);
                }
            }
            let single = match object.get_mut("anyOf") {
                Some(Value::Array(alternatives)) => {
                    alternatives.retain(|a| a.get("type").is_none_or(|t| t != "null"));
                    (alternatives.len() == 1).then(|| alternatives.remove(0))
                }
                _ => None,
            };
            if let Some(Value::Object(only)) = single {
                object.remove("anyOf");
                for (key, value) in only {
                    object.entry(key).or_insert(value);
                }
            }
            object.values_mut().for_each(without_null);
        }
        Value::Array(items) => items.iter_mut().for_each(without_null),
        _ => {}
    }
}
