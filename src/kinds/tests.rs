//! The kind table is complete, its reverts refuse what is not theirs, its samples are valid,
//! and the model's protocol lists agree with the injectors'.

use super::*;

#[test]
fn every_kind_of_the_scenario_model_has_exactly_one_entry() {
    for kind in relapse_core::scenario::FAULT_KINDS {
        let entries = FAULT_KINDS.iter().filter(|e| e.kind == *kind).count();
        assert_eq!(
            entries, 1,
            "fault kind {kind}: {entries} kind table entries"
        );
    }
    for entry in FAULT_KINDS {
        assert!(
            relapse_core::scenario::FAULT_KINDS.contains(&entry.kind),
            "the kind table has {} but the scenario model does not",
            entry.kind
        );
    }
}

#[test]
fn every_entry_reverts_its_own_records_and_refuses_foreign_ones() {
    for entry in FAULT_KINDS {
        // A record of no kind at all: each revert must decode and refuse it, not panic or
        // pretend to succeed.
        let refused = (entry.revert)(serde_json::json!({"not": "a record"}));
        assert!(
            matches!(refused, Err(RevertError::Record { kind, .. }) if kind == entry.kind),
            "{}: {refused:?}",
            entry.kind
        );
    }
    for record in HARNESS_RECORDS {
        let refused = (record.revert)(serde_json::json!({"not": "a record"}));
        assert!(
            matches!(refused, Err(RevertError::Record { .. })),
            "{}: {refused:?}",
            record.kind
        );
    }
    assert!(matches!(
        revert_entry("no_such_kind", serde_json::json!({})),
        Err(RevertError::UnknownKind(k)) if k == "no_such_kind"
    ));
}

#[test]
fn every_sample_is_a_valid_scenario_of_its_own_kind() {
    for entry in FAULT_KINDS {
        let text = entry.sample.replace("@TARGET_PID@", "4242");
        let scenario = relapse_core::scenario::parse(Path::new(entry.kind), &text)
            .unwrap_or_else(|e| panic!("{}'s sample: {e}", entry.kind));
        let kinds: Vec<&str> = scenario.faults.iter().map(|f| f.kind.name()).collect();
        assert_eq!(kinds, [entry.kind], "{}'s sample", entry.kind);
    }
}

/// The scenario model keeps a few protocol lists so that a scenario is refused with its line
/// and column; they must say what the injectors themselves accept.
#[test]
fn the_models_protocol_lists_are_the_injectors_own() {
    use relapse_core::scenario::{DbErrorCode, MYSQL_PROXY_ERRORS, POSTGRES_PROXY_ERRORS};
    for (i, code) in DbErrorCode::ALL.into_iter().enumerate() {
        let spoken = relapse_dbproxy::ErrorCode::from(code);
        assert_eq!(POSTGRES_PROXY_ERRORS[i], spoken.pg_sqlstate(), "{code:?}");
        assert_eq!(
            MYSQL_PROXY_ERRORS[i],
            spoken.mysql_code().to_string(),
            "{code:?}"
        );
    }
    // The default table lock modes the model fills in are modes the db crate takes.
    for (server, modes) in [
        (
            "postgres = \"host=127.0.0.1\"",
            relapse_db::POSTGRES_TABLE_MODES,
        ),
        (
            "mysql = \"mysql://root@127.0.0.1/test\"",
            relapse_db::MYSQL_TABLE_MODES,
        ),
    ] {
        let text = FAULT_KINDS[0]
            .sample
            .replace("@TARGET_PID@", "4242")
            .replace(
                "process_freeze = { pid = 4242 }",
                &format!("db_lock = {{ {server}, table = \"t\" }}"),
            );
        let scenario = relapse_core::scenario::parse(Path::new("modes"), &text).unwrap();
        let FaultKind::DbLock(db) = &scenario.faults[0].kind else {
            panic!("not a db_lock: {:?}", scenario.faults[0].kind);
        };
        let DbLockTarget::Table { mode, .. } = &db.lock else {
            panic!("not a table lock: {:?}", db.lock);
        };
        assert!(modes.contains(&mode.as_str()), "{mode} not in {modes:?}");
    }
    // The HTTP methods the model accepts are methods the flood and the probe can send.
    for method in relapse_core::scenario::HTTP_METHODS {
        assert!(
            relapse_flood::RequestTemplate::new(method, "/", "").is_ok(),
            "{method}"
        );
        assert!(
            relapse_probe::HttpProbe::new(
                "http://127.0.0.1:1/",
                method,
                Duration::from_secs(1),
                vec![200]
            )
            .is_ok(),
            "{method}"
        );
    }
}
