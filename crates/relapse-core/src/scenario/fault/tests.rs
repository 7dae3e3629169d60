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
    assert_eq!(FAULT_KINDS.len(), 8, "{FAULT_KINDS:?}");
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
    assert_eq!(
        err,
        "kind.toml:21:8: fault \"it\" needs exactly one kind: expected one of `process_freeze`, \
         `port_exhaustion`, `fd_exhaustion`, `db_lock`, `db_proxy`, `http_flood`, `slowloris`, \
         `connection_flood`"
    );
}
