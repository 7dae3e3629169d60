//! The statistics of a comparison: medians and a bootstrap confidence interval of the difference
//! of two medians. Pure functions over seconds.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bootstrap resamples per interval: enough that the 2.5th and 97.5th percentiles of the
/// resampled differences move by well under a probe interval from one seed to another, and
/// quick (6 times × a few episodes × 10,000 × 2 medians of ≤ 100 samples is milliseconds).
pub const RESAMPLES: usize = 10_000;

/// The seed of every comparison's generator ("relapse!"), so that the same samples always give
/// the same interval: a report can be reproduced from its baseline and its runs.
pub const SEED: u64 = 0x7265_6c61_7073_6521;

/// The median of `values` (the mean of the two middle ones for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A two-sided interval, in signed seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// The `1 - significance` percentile bootstrap interval of median(new) − median(baseline):
/// [`RESAMPLES`] times, each side is resampled with replacement to its own size and the
/// difference of the two medians taken; the interval runs from the `significance / 2` to the
/// `1 - significance / 2` quantile of those differences. `None` if either side is empty.
pub fn median_difference_interval(
    baseline: &[f64],
    new: &[f64],
    significance: f64,
    seed: u64,
) -> Option<Interval> {
    if baseline.is_empty() || new.is_empty() {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let resample = |from: &[f64], buffer: &mut Vec<f64>, rng: &mut StdRng| {
        buffer.clear();
        buffer.extend((0..from.len()).map(|_| from[rng.random_range(0..from.len())]));
        buffer.sort_by(f64::total_cmp);
        median_of_sorted(buffer).unwrap_or(0.0)
    };
    let (mut b, mut n) = (Vec::new(), Vec::new());
    let mut differences: Vec<f64> = (0..RESAMPLES)
        .map(|_| resample(new, &mut n, &mut rng) - resample(baseline, &mut b, &mut rng))
        .collect();
    differences.sort_by(f64::total_cmp);
    let tail = (significance / 2.0).clamp(0.0, 0.5);
    let last = RESAMPLES - 1;
    let lower = ((tail * RESAMPLES as f64).floor() as usize).min(last);
    let upper = (((1.0 - tail) * RESAMPLES as f64).ceil() as usize)
        .saturating_sub(1)
        .clamp(lower, last);
    Some(Interval {
        lower: differences[lower],
        upper: differences[upper],
    })
}
