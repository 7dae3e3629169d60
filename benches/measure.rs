//! How long measurement takes on a long run: one hour of SLI samples every 50 ms (72,000) with
//! ten fault episodes. Measurement runs once at the end of a run and every 100 ms while the
//! engine watches for recovery, so it must stay far below that interval.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use relapse_core::measure::{measure, FaultActivity, Sample, SteadyRule};
use relapse_core::sense::{Outcome, Signal};
use tokio::time::Instant;

fn one_hour() -> (Vec<Sample>, Vec<FaultActivity>, Vec<Signal>, Instant) {
    let base = Instant::now();
    let every = Duration::from_millis(50);
    let faults: Vec<FaultActivity> = (0..10)
        .map(|i| FaultActivity {
            name: format!("fault-{i}"),
            injected: base + Duration::from_secs(300 * i + 60),
            reverted: Some(base + Duration::from_secs(300 * i + 120)),
        })
        .collect();
    let samples = (0..72_000u64)
        .map(|k| {
            let at = base + every * k as u32;
            let broken = faults
                .iter()
                .any(|f| at >= f.injected && Some(at) < f.reverted);
            Sample {
                scheduled: at,
                at,
                latency: Duration::from_millis(if broken { 250 } else { 2 }),
                outcome: if broken {
                    Outcome::Failure {
                        status: Some(504),
                        error: "status 504".into(),
                    }
                } else {
                    Outcome::Success { status: Some(200) }
                },
            }
        })
        .collect();
    let signals = faults
        .iter()
        .map(|f| Signal {
            source: 0,
            at: f.injected + Duration::from_millis(1500),
            firing: true,
            detail: String::new(),
        })
        .collect();
    (samples, faults, signals, base + Duration::from_secs(3600))
}

fn bench_measure(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let (samples, faults, signals, end) = one_hour();
    let rule = SteadyRule {
        window: Duration::from_secs(2),
        min_success: 0.99,
        max_p99: Some(Duration::from_millis(300)),
        probe_every: Duration::from_millis(50),
    };
    c.bench_function("measure one hour at 50ms, 10 episodes", |b| {
        b.iter(|| measure(&samples, &faults, &signals, &rule, end))
    });
}

criterion_group!(benches, bench_measure);
criterion_main!(benches);
