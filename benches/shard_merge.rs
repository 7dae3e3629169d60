//! What merging a spread flood's shards costs: N shard reports of 50,000 latencies each (a
//! flood's long tail included), each read back from its JSON and V2 histogram and added into
//! one. The peer, in the same run, is recording the same N × 50,000 values into one histogram
//! directly, as a flood on one host does: the ratio is the price of spreading.

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hdrhistogram::Histogram;
use relapse_core::report::FloodFigures;
use relapse_flood::load::LoadReport;
use relapse_flood::shard::{figures, merge};

const PER_SHARD: usize = 50_000;

/// Deterministic latencies in µs: mostly 50 µs to 20 ms, one in a hundred 0.1 s to 5 s.
fn values(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = x >> 33;
            if r % 100 == 0 {
                100_000 + r % 4_900_000
            } else {
                50 + r % 19_950
            }
        })
        .collect()
}

fn histogram(values: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::new(2).unwrap();
    for v in values {
        h.record(*v).unwrap();
    }
    h
}

fn shard_json(values: &[u64]) -> String {
    let latency = histogram(values);
    let report = LoadReport {
        sent: latency.len(),
        completed: latency.len(),
        errors_by_kind: BTreeMap::new(),
        statuses: BTreeMap::from([(200, latency.len())]),
        duration: Duration::from_secs(10),
        achieved_rps: 0.0,
        latency,
        per_source: None,
        intended_rate: Some(5000.0),
        intended: Some(PER_SHARD as u64),
    };
    serde_json::to_string(&figures(&report)).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("spread flood merge");
    for shards in [4usize, 16] {
        let per_shard: Vec<Vec<u64>> = (0..shards).map(|i| values(i as u64, PER_SHARD)).collect();
        let texts: Vec<String> = per_shard.iter().map(|v| shard_json(v)).collect();
        group.bench_with_input(
            BenchmarkId::new("merge shards", shards),
            &texts,
            |b, texts| {
                b.iter(|| {
                    let reports: Vec<FloodFigures> = texts
                        .iter()
                        .map(|t| serde_json::from_str(t).unwrap())
                        .collect();
                    merge(&reports).unwrap()
                })
            },
        );
        let all: Vec<u64> = per_shard.concat();
        group.bench_with_input(
            BenchmarkId::new("record all in one", shards),
            &all,
            |b, all| b.iter(|| histogram(all)),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
