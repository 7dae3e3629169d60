use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::gate::{GateResult, Verdict};
use crate::report::{EpisodeReport, Placed, RunReport, SeriesSample, SliSeries};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn run() -> RunReport {
    let samples = (0..40)
        .map(|i| SeriesSample {
            at: ms(i * 100) + Duration::from_micros(120),
            latency: Duration::from_micros(1_230 + i * 10),
            status: if (12..20).contains(&i) {
                None
            } else {
                Some(200)
            },
            error: (12..20).contains(&i).then(|| "timeout".to_string()),
        })
        .collect();
    RunReport {
        run_id: "00112233aabbccdd".into(),
        scenario: "hang".into(),
        file: Some("scenarios/hang.toml".into()),
        mitigation: Some("failover".into()),
        verdict: Verdict::Fail,
        expectation: None,
        reason: None,
        started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        duration: ms(4_000),
        resolution: ms(100),
        steady_window: ms(500),
        steady_confirmed_at: Some(ms(1_000)),
        sli: Some(SliSeries {
            probe: "web".into(),
            every: ms(100),
            samples,
        }),
        episodes: vec![EpisodeReport {
            faults: vec!["freeze".into()],
            placements: Vec::new(),
            injected_at: ms(1_100),
            reverted_at: Some(ms(2_100)),
            time_to_impact: Some(ms(100)),
            time_to_detect: Some(ms(350)),
            time_to_mitigate: None,
            time_to_recover: Some(ms(200)),
            time_to_serve: Some(ms(200)),
            time_to_drain: None,
            backlog: None,
            mitigated_at: None,
            recovered_at: Some(ms(2_300)),
            detected_by: Some("monitor".into()),
            detect_resolution: Some(ms(0)),
            samples: 20,
            failures: 8,
            failure_statuses: BTreeMap::new(),
            failure_errors: BTreeMap::from([("timeout".to_string(), 8)]),
        }],
        gates: vec![GateResult {
            name: "recover_within".into(),
            limit: Some(ms(100)),
            measured: Some(ms(200)),
            passed: false,
            message: "recovered in 200ms, over 100ms".into(),
        }],
        timeline: Vec::new(),
        probes: Vec::new(),
        run_dir: None,
        processes: Vec::new(),
        floods: Vec::new(),
    }
}

#[test]
fn a_report_reads_back_as_the_run_it_was_written_from() {
    let original = run();
    let text = ReportFile::new(std::slice::from_ref(&original)).to_json();
    let back = ReportFile::parse(&text).unwrap().to_reports().unwrap();
    assert_eq!(back.len(), 1);
    let back = &back[0];
    assert_eq!(back.run_id, original.run_id);
    assert_eq!(back.episodes, original.episodes);
    assert_eq!(back.gates, original.gates);
    assert_eq!(back.steady_confirmed_at, original.steady_confirmed_at);
    assert_eq!(back.steady_window, original.steady_window);
    assert_eq!(back.started, original.started);
    // The series keeps 10 µs: these samples are on that grid.
    assert_eq!(back.sli, original.sli);
}

#[test]
fn the_json_keeps_the_windows_and_the_series_as_parallel_arrays() {
    let text = ReportFile::new(&[run()]).to_json();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let run = &value["runs"][0];
    assert_eq!(run["run_id"], "00112233aabbccdd");
    assert_eq!(
        run["steady_state"],
        serde_json::json!({"start_ms": 500.0, "length_ms": 500.0})
    );
    assert_eq!(
        run["episodes"][0]["recovery_window"],
        serde_json::json!({"start_ms": 2300.0, "length_ms": 500.0})
    );
    assert_eq!(
        run["episodes"][0]["mitigation_window"],
        serde_json::Value::Null
    );
    let series = &run["sli_series"];
    assert_eq!(series["at_ms"][1], 100.12);
    assert_eq!(series["latency_ms"][0], 1.23);
    assert_eq!(series["status"][12], serde_json::Value::Null);
    assert_eq!(series["error"][12], "timeout");
    assert_eq!(series["error"][0], serde_json::Value::Null);
    // Each array of scalars is one line; objects are indented as before.
    let line = text.lines().find(|l| l.contains("\"at_ms\": [")).unwrap();
    assert!(line.ends_with("3900.12],"), "{line}");
    assert!(
        text.contains("\n        \"faults\": [\"freeze\"],\n"),
        "{text}"
    );
    assert!(text.contains("\"failure_statuses\": {},"), "{text}");
}

#[test]
fn what_is_not_a_relapse_report_is_refused_by_name() {
    assert!(matches!(
        ReportFile::parse("not json"),
        Err(ReadError::NotJson(_))
    ));
    assert!(matches!(
        ReportFile::parse(r#"{"runs": []}"#),
        Err(ReadError::NotAReport)
    ));
    assert!(matches!(
        ReportFile::parse(r#"{"relapse_report": 9, "runs": []}"#),
        Err(ReadError::Version(9))
    ));
    assert!(matches!(
        ReportFile::parse(r#"{"relapse_report": 1, "runs": [{"scenario": 3}]}"#),
        Err(ReadError::Malformed(_))
    ));
}

#[test]
fn a_remote_fault_is_named_with_its_agent_and_its_clock_widens_the_resolutions() {
    let mut original = run();
    original.episodes[0].placements = vec![crate::report::Placement {
        what: Placed::Fault("freeze".into()),
        agent: "db1".into(),
        url: "https://10.0.0.12:7700".into(),
        clock_uncertainty: Duration::from_micros(300),
    }];
    original.episodes[0].detect_resolution = Some(ms(50));
    let text = ReportFile::new(std::slice::from_ref(&original)).to_json();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let metrics = &json["runs"][0]["metrics"];
    assert_eq!(metrics["placements"][0]["agent"], "db1");
    assert_eq!(metrics["resolution_ms"], 100.3);
    assert_eq!(metrics["detect_resolution_ms"], 50.3);
    let back = ReportFile::parse(&text).unwrap().to_reports().unwrap();
    assert_eq!(back[0].episodes, original.episodes);
    assert_eq!(back[0].resolution, original.resolution);
}

#[test]
fn a_time_between_two_agents_carries_both_clocks_and_one_agent_counts_once() {
    let placement = |what, agent: &str, us| crate::report::Placement {
        what,
        agent: agent.into(),
        url: format!("https://{agent}:7700"),
        clock_uncertainty: Duration::from_micros(us),
    };
    let mut original = run();
    original.episodes[0].placements = vec![
        placement(Placed::Fault("freeze".into()), "db1", 300),
        placement(Placed::Fault("leak".into()), "db1", 300),
        placement(Placed::Probe("sli".into()), "web1", 200),
    ];
    let text = ReportFile::new(std::slice::from_ref(&original)).to_json();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let metrics = &json["runs"][0]["metrics"];
    assert_eq!(metrics["placements"][2]["probe"], "sli");
    assert!(metrics["placements"][2].get("fault").is_none());
    assert_eq!(metrics["resolution_ms"], 100.5);
    let back = ReportFile::parse(&text).unwrap().to_reports().unwrap();
    assert_eq!(back[0].episodes, original.episodes);
    assert_eq!(back[0].resolution, original.resolution);
}
