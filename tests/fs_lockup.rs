//! The OpenSRS Cluster B scenario end to end: the demo's maildir on a file system relapse makes,
//! frozen twice. Mail hangs (504), the deep health check notices, the shallow one never does,
//! and nothing of the file system is left afterwards.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

fn ms(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
fn a_locked_up_mail_store_hangs_webmail_the_deep_check_notices_and_the_shallow_one_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let json = dir.path().join("report.json");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/opensrs-fs-lockup.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The scratch file system's image is in memory, named after relapse's pid.
    let images = format!("/dev/shm/relapse-{}-", child.id());
    let output = child.wait_with_output().unwrap();
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["verdict"], "pass", "{shown}");

    let episodes = run["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 2, "{shown}");
    for episode in episodes {
        assert_eq!(episode["detected_by"], "deep-health", "{shown}");
        // The deep check fails once a check whose write came after the freeze began (t_inject,
        // the instant FIFREEZE was issued) has waited out the frontend's 250 ms upstream
        // timeout; checks start every 250 ms. So detection comes between 250 ms and 250 + 250
        // ms after the freeze, plus 150 ms for scheduling and the backend's own 250 ms bound
        // running alongside; and down to 50 ms earlier for a check sent just before the freeze
        // whose write came just after it (the hop through the frontend to the backend's write
        // takes under 2 ms idle, 50 ms is a loaded 2-core machine's allowance).
        let detect = ms(&episode["time_to_detect_ms"]);
        assert!(
            (200.0..=650.0).contains(&detect),
            "time to detect {detect} ms\n{shown}"
        );
        // Webmail answered 504 (the frontend's upstream timeout), never an error of another kind.
        let statuses = episode["failure_statuses"].as_object().unwrap();
        assert_eq!(statuses.keys().collect::<Vec<_>>(), ["504"], "{shown}");
        assert!(
            episode["failure_errors"].as_object().unwrap().is_empty(),
            "{shown}"
        );
    }
    // The trap: the shallow health check stayed green through both lockups.
    let timeline = run["timeline"].as_array().unwrap();
    let shallow: Vec<&Value> = timeline
        .iter()
        .filter(|t| {
            t["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("shallow-health")
        })
        .collect();
    assert!(shallow.is_empty(), "the shallow check fired: {shallow:?}");
    let deep = timeline
        .iter()
        .filter(|t| {
            t["event"] == "detection"
                && t["detail"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("deep-health")
        })
        .count();
    assert_eq!(deep, 2, "{shown}");

    // Nothing of the file system relapse made is left: no mount, no loop device, no journal.
    let state_path = state.display().to_string();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&state_path), "{mounts}");
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(&state_path) && !loops.contains(&images),
        "{loops}"
    );
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.starts_with(&images))
        .collect();
    assert!(left.is_empty(), "scratch images left: {left:?}");
    let runs = std::fs::read_dir(state.join("runs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "the journal is not empty");
}
