use super::*;

const SCENARIO: &str = r#"
[scenario]
name = "freeze"

[target.demo]
monitor = { interval = "100ms", timeout = "80ms", fall = 3, rise = 2, alertname = "Down" }

[[probe]]
name = "webmail"
every = "50ms"
http = { url = "{demo.url}/", timeout = "1s", expect = [200] }

[steady_state]
probe = "webmail"
window = "1s"
min_success = 0.95

[[detect]]
name = "pager"
webhook = { match = { alertname = "Down" } }

[[detect]]
name = "log"
log = { path = "{demo.frontend.log}", pattern = "DOWN", every = "20ms" }

[[fault]]
name = "freeze"
process_freeze = { demo = "backend" }
start = "500ms"
duration = "1s"
"#;

fn scenario(dir: &Path, text: &str) -> (Scenario, PathBuf) {
    let file = dir.join("freeze.toml");
    std::fs::write(&file, text).unwrap();
    (relapse_core::scenario::load(&file).unwrap(), file)
}

#[test]
fn a_name_is_under_the_state_dir_and_a_path_is_a_file() {
    let state = Path::new("/state");
    let named = Location::parse("release-1", state);
    assert_eq!(
        named.path_for("freeze"),
        Path::new("/state/baselines/release-1/freeze.json")
    );
    assert!(!named.is_file());
    for arg in ["out/base.json", "base.json", "./base"] {
        let file = Location::parse(arg, state);
        assert_eq!(file, Location::File(PathBuf::from(arg)));
        assert_eq!(file.path_for("freeze"), Path::new(arg));
    }
}

#[test]
fn the_key_has_the_intervals_and_the_content_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (s, file) = scenario(dir.path(), SCENARIO);
    let key = key_of(&s, &file).unwrap();
    assert_eq!(key.relapse_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(key.scenario, "freeze");
    assert_eq!(key.sli_interval, Duration::from_millis(50));
    assert_eq!(
        key.detectors,
        [
            ("pager".to_string(), Duration::ZERO),
            ("log".to_string(), Duration::from_millis(20))
        ]
    );
    assert_eq!(key.backlog_interval, None);
    assert_eq!(key.scenario_sha256.len(), 64);
    // A comment changes the content, so the hash, and nothing else.
    let (s2, file2) = scenario(dir.path(), &format!("# changed\n{SCENARIO}"));
    let key2 = key_of(&s2, &file2).unwrap();
    assert_ne!(key2.scenario_sha256, key.scenario_sha256);
    assert_eq!(
        ComparabilityKey {
            scenario_sha256: key.scenario_sha256.clone(),
            ..key2
        },
        key
    );
}

#[test]
fn a_saved_baseline_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (s, file) = scenario(dir.path(), SCENARIO);
    let mut times = BTreeMap::new();
    times.insert(
        Measure::Detect,
        TimeSamples {
            resolution: Duration::ZERO,
            samples: vec![Some(Duration::from_micros(312_345)), None],
        },
    );
    let series = Series {
        key: key_of(&s, &file).unwrap(),
        machine: this_machine(),
        saved: humantime::parse_rfc3339("2026-12-02T04:00:00.123Z").unwrap(),
        runs: 2,
        episodes: vec![EpisodeSeries {
            faults: vec!["freeze".into()],
            times,
        }],
    };
    let path = Location::parse("v1", dir.path()).path_for("freeze");
    save(&path, "v1", &series).unwrap();
    assert_eq!(load(&path).unwrap(), series);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"relapse_baseline\": 1"), "{text}");
    assert!(!path.with_extension("json.partial").exists());
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.json");
    std::fs::write(
        &path,
        r#"{"relapse_baseline": 2, "name": "x", "saved": "2026-12-02T04:00:00Z",
            "machine": {"host": "h", "cpus": 1, "kernel": "k"},
            "key": {"relapse_version": "0.1.0", "scenario": "s", "scenario_sha256": "",
                    "sli_interval_ms": 50, "detectors": [], "backlog_interval_ms": null},
            "runs": 0, "episodes": []}"#,
    )
    .unwrap();
    let error = load(&path).unwrap_err().to_string();
    assert!(
        error.ends_with("baseline format 2 (this relapse reads 1)"),
        "{error}"
    );
}

#[test]
fn the_machine_is_read_from_proc() {
    let m = this_machine();
    assert!(
        !m.host.is_empty() && !m.kernel.is_empty() && m.cpus >= 1,
        "{m:?}"
    );
}
