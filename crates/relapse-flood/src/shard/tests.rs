use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use super::*;
use crate::load::new_histogram;

fn shard_report(latency: Histogram<u64>, sent: u64) -> LoadReport {
    LoadReport {
        sent,
        completed: latency.len(),
        errors_by_kind: BTreeMap::from([("timeout".to_string(), sent - latency.len())]),
        statuses: BTreeMap::from([(200, latency.len())]),
        duration: Duration::from_millis(1000 + sent),
        achieved_rps: 0.0,
        latency,
        per_source: None,
        intended_rate: Some(250.0),
        intended: Some(sent),
    }
}

/// The exactness: the shards' histograms, each serialized as V2, read back and added,
/// give the same percentiles (and count, min, max, mean) as one histogram of all the values,
/// with the same settings.
#[test]
fn merged_shards_have_exactly_the_percentiles_of_one_histogram_of_all_values() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut whole = new_histogram();
    let mut parts: Vec<Histogram<u64>> = (0..4).map(|_| new_histogram()).collect();
    for i in 0..200_000u64 {
        // Latencies from 50 µs to a few seconds, with a long tail: what a flood sees.
        let value = if rng.random_bool(0.01) {
            rng.random_range(100_000..5_000_000)
        } else {
            rng.random_range(50..20_000)
        };
        whole.record(value).unwrap();
        parts[(i % 4) as usize].record(value).unwrap();
    }
    let reports: Vec<FloodFigures> = parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let sent = part.len() + i as u64;
            let report = figures(&shard_report(part, sent));
            // Through JSON, as it travels.
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap()
        })
        .collect();
    let merged = merge(&reports).unwrap();
    assert_eq!(merged.latency.len(), whole.len());
    for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
        assert_eq!(
            merged.latency.value_at_quantile(q),
            whole.value_at_quantile(q),
            "quantile {q}"
        );
    }
    assert_eq!(merged.latency.min(), whole.min());
    assert_eq!(merged.latency.max(), whole.max());
    assert_eq!(merged.latency.mean(), whole.mean());
    // The counts add up (each shard sent i more than were answered); the duration is the
    // longest shard's.
    assert_eq!(merged.sent, whole.len() + 6);
    assert_eq!(merged.completed, whole.len());
    assert_eq!(merged.errors("timeout"), 6);
    assert_eq!(merged.statuses[&200], whole.len());
    assert_eq!(merged.intended_rate, Some(1000.0));
    assert_eq!(merged.duration, Duration::from_millis(1000 + 50_003));
}
