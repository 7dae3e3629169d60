//! The kind list and the model agree.

use std::path::Path;

use super::FAULT_KINDS;
use crate::scenario::parse;

/// One small valid table per kind, from the kind's own module.
fn example(kind: &str) -> &'static str {
    super::EXAMPLES
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, table)| *table)
        .unwrap_or_else(|| panic!("no example for the fault kind `{kind}`"))
}

fn scenario(kind: &str) -> String {
    format!(
        r#"
[scenario]
name = "one-{kind}"

[[db_proxy]]
name = "db"
postgres = "127.0.0.1:5432"

[[fs_gate]]
name = "mail"
source = "/srv/mail"

[target.demo]

[[probe]]
name = "web"
http = {{ url = "{{demo.url}}/" }}

[steady_state]
probe = "web"
window = "1s"
min_success = 0.9

[[fault]]
name = "it"
{table}
start = "1s"
duration = "2s"
"#,
        table = example(kind)
    )
}

#[test]
fn every_listed_kind_is_what_its_model_calls_itself() {
    assert_eq!(super::EXAMPLES.len(), FAULT_KINDS.len());
    for kind in FAULT_KINDS {
        let s = parse(Path::new("kind.toml"), &scenario(kind))
            .unwrap_or_else(|e| panic!("the `{kind}` example does not load: {e}"));
        assert_eq!(s.faults.len(), 1);
        assert_eq!(s.faults[0].kind.name(), *kind);
    }
}

#[test]
fn two_kinds_in_one_table_name_every_kind_in_list_order() {
    let text = scenario("process_freeze").replace(
        "start = \"1s\"",
        "fd_exhaustion = { pid = 4242 }\nstart = \"1s\"",
    );
    let err = parse(Path::new("kind.toml"), &text)
        .unwrap_err()
        .to_string();
    // Every kind, in the list's order (which starts as the file format always has), so a new
    // kind needs no edit here; the malformed corpus pins the whole message.
    let every: Vec<String> = FAULT_KINDS.iter().map(|k| format!("`{k}`")).collect();
    assert_eq!(
        err,
        format!(
            "kind.toml:25:8: fault \"it\" needs exactly one kind: expected one of {}",
            every.join(", ")
        )
    );
    assert!(
        err.contains("`process_freeze`, `port_exhaustion`, `fd_exhaustion`, `db_lock`"),
        "{err}"
    );
}
