//! How long `relapse report` takes and how big its files get: one hour of SLI samples every
//! 50 ms (72,000) with ten episodes, and a series of 50 runs of 30 s at 100 ms with two
//! episodes each. The reports are synthetic; what is timed is the JSON text (`--json`), reading
//! it back (`relapse report`'s input) and the HTML page (`--html`). The sizes are printed once.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use relapse::render::html;
use relapse_core::gate::{GateResult, Verdict};
use relapse_core::report::file::ReportFile;
use relapse_core::report::{EpisodeReport, RunReport, SeriesSample, SliSeries};

fn run(length: Duration, every: Duration, episodes: u32, seed: u64) -> RunReport {
    let period = length / (episodes + 1);
    let episode_spans: Vec<(Duration, Duration)> = (1..=episodes)
        .map(|i| (period * i, period * i + period / 3))
        .collect();
    let n = (length.as_nanos() / every.as_nanos()) as u32;
    let samples = (0..n)
        .map(|k| {
            let at = every * k;
            let broken = episode_spans.iter().any(|(a, b)| at >= *a && at < *b);
            // A little jitter so that the numbers do not repeat.
            let jitter = u64::from(k).wrapping_mul(2_654_435_761).wrapping_add(seed) % 900;
            SeriesSample {
                at: at + Duration::from_micros(jitter),
                latency: Duration::from_micros(if broken { 250_000 } else { 1_500 + jitter }),
                status: Some(if broken { 504 } else { 200 }),
                error: broken.then(|| "status 504".to_string()),
            }
        })
        .collect();
    RunReport {
        run_id: format!("{seed:016x}"),
        scenario: "bench".into(),
        file: Some("scenarios/bench.toml".into()),
        mitigation: None,
        verdict: Verdict::Pass,
        expectation: None,
        reason: None,
        started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        duration: length,
        resolution: every,
        steady_window: Duration::from_secs(2),
        steady_confirmed_at: Some(Duration::from_secs(2)),
        sli: Some(SliSeries {
            probe: "web".into(),
            every,
            samples,
        }),
        episodes: episode_spans
            .iter()
            .enumerate()
            .map(|(i, (injected, reverted))| EpisodeReport {
                faults: vec![format!("fault-{i}")],
                placements: Vec::new(),
                injected_at: *injected,
                reverted_at: Some(*reverted),
                time_to_impact: Some(every),
                time_to_detect: Some(Duration::from_millis(1_500 + seed % 300)),
                time_to_mitigate: None,
                time_to_recover: Some(every * 2),
                time_to_serve: Some(every * 2),
                time_to_drain: None,
                backlog: None,
                mitigated_at: None,
                recovered_at: Some(*reverted + every * 2),
                detected_by: Some("monitor".into()),
                detect_resolution: Some(Duration::from_millis(500)),
                samples: 100,
                failures: 40,
                failure_statuses: BTreeMap::from([(504, 40)]),
                failure_errors: BTreeMap::new(),
            })
            .collect(),
        gates: vec![GateResult {
            name: "recover_within".into(),
            limit: Some(Duration::from_secs(5)),
            measured: Some(every * 2),
            passed: true,
            message: "within".into(),
        }],
        timeline: Vec::new(),
        probes: Vec::new(),
        run_dir: None,
        processes: Vec::new(),
        floods: Vec::new(),
    }
}

fn bench_report(c: &mut Criterion) {
    let hour = vec![run(
        Duration::from_secs(3_600),
        Duration::from_millis(50),
        10,
        1,
    )];
    let series: Vec<RunReport> = (0..50)
        .map(|i| run(Duration::from_secs(30), Duration::from_millis(100), 2, i))
        .collect();
    for (name, runs) in [("one hour at 50ms", &hour), ("50 runs of 30s", &series)] {
        let json = ReportFile::new(runs).to_json();
        let page = html::page(runs);
        eprintln!(
            "{name}: JSON {} bytes, HTML {} bytes",
            json.len(),
            page.len()
        );
        c.bench_function(&format!("json {name}"), |b| {
            b.iter(|| ReportFile::new(runs).to_json())
        });
        c.bench_function(&format!("read json {name}"), |b| {
            b.iter(|| ReportFile::parse(&json).unwrap().to_reports().unwrap())
        });
        c.bench_function(&format!("html {name}"), |b| b.iter(|| html::page(runs)));
    }
}

criterion_group!(benches, bench_report);
criterion_main!(benches);
