//! Measurement under paused time: instants are exact, so are the expected numbers.

use super::*;

const EVERY: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rule() -> SteadyRule {
    SteadyRule {
        window: ms(1000),
        min_success: 0.9,
        max_p99: Some(ms(300)),
        probe_every: EVERY,
    }
}

/// One sample every 100 ms from `from` to `to` (inclusive, in ms after `base`), failing where
/// `fails(ms)` says so.
fn samples(base: Instant, from: u64, to: u64, fails: impl Fn(u64) -> bool) -> Vec<Sample> {
    (from..=to)
        .step_by(100)
        .map(|t| Sample {
            scheduled: base + ms(t),
            at: base + ms(t),
            latency: ms(5),
            outcome: if fails(t) {
                Outcome::Failure {
                    status: Some(504),
                    error: "status 504".into(),
                }
            } else {
                Outcome::Success { status: Some(200) }
            },
        })
        .collect()
}

fn fault(base: Instant, name: &str, injected: u64, reverted: Option<u64>) -> FaultActivity {
    FaultActivity {
        name: name.into(),
        injected: base + ms(injected),
        reverted: reverted.map(|r| base + ms(r)),
    }
}

fn signal(base: Instant, at: u64, firing: bool) -> Signal {
    Signal {
        source: 0,
        at: base + ms(at),
        firing,
        detail: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn measures_impact_detection_and_recovery_of_one_fault() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2100..=5000).contains(&t));
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, Some(5050))],
        &[signal(base, 2750, true), signal(base, 5600, false)],
        &rule(),
        base + ms(9050),
    );
    assert_eq!(episodes.len(), 1);
    let e = &episodes[0];
    assert_eq!(e.time_to_impact(), Some(ms(50)));
    assert_eq!(e.time_to_detect(), Some(ms(700)));
    assert_eq!(e.time_to_mitigate(), None);
    assert_eq!(e.time_to_recover(), Some(ms(50)));
    // Counted from 2050 until recovery at 5100: the 30 samples 2100..=5000, all failed.
    assert_eq!((e.samples, e.failures), (30, 30));
    assert_eq!(e.failure_statuses.get(&504), Some(&30));
    assert_eq!(e.error_ratio(), 1.0);
}

#[tokio::test(start_paused = true)]
async fn detection_before_impact_is_measured_as_such() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2400..=5000).contains(&t));
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, Some(5050))],
        &[signal(base, 2060, true)],
        &rule(),
        base + ms(9050),
    );
    let e = &episodes[0];
    assert_eq!(e.time_to_detect(), Some(ms(10)));
    assert_eq!(e.time_to_impact(), Some(ms(350)));
}

#[tokio::test(start_paused = true)]
async fn signals_before_injection_and_resolved_signals_are_not_detection() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2100..=5000).contains(&t));
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, Some(5050))],
        &[signal(base, 1000, true), signal(base, 3000, false)],
        &rule(),
        base + ms(9050),
    );
    assert_eq!(episodes[0].time_to_detect(), None);
    assert_eq!(episodes[0].detected, None);
}

#[tokio::test(start_paused = true)]
async fn never_recovered_when_failures_outlast_the_observation() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| t >= 2100);
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, Some(5050))],
        &[signal(base, 2750, true)],
        &rule(),
        base + ms(9050),
    );
    let e = &episodes[0];
    assert_eq!(e.time_to_recover(), None);
    // Without recovery the whole span to the horizon counts: 2100..=9000 = 70 samples.
    assert_eq!((e.samples, e.failures), (70, 70));
}

#[tokio::test(start_paused = true)]
async fn recovery_waits_out_flapping() {
    let base = Instant::now();
    // After the revert at 5050 the SLI flaps at 5200, 5400 and 5800. A 1 s window tolerates one
    // failure in ten (min_success 0.9): windows from 5100..5400 hold two or three failures, the
    // window from 5500 only 5800's. So recovery starts at 5500: 450 ms after the revert.
    let flaps = [5200, 5400, 5800];
    let sli = samples(base, 0, 9000, |t| {
        (2100..=5000).contains(&t) || flaps.contains(&t)
    });
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, Some(5050))],
        &[],
        &rule(),
        base + ms(9050),
    );
    assert_eq!(episodes[0].recovered, Some(base + ms(5500)));
    assert_eq!(episodes[0].time_to_recover(), Some(ms(450)));
}

#[tokio::test(start_paused = true)]
async fn a_window_must_end_before_observation_ends() {
    let base = Instant::now();
    let sli = samples(base, 0, 5500, |t| (2100..=5000).contains(&t));
    // Observation ends 450 ms after the revert: no full window fits, so no recovery is claimed.
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, Some(5050))],
        &[],
        &rule(),
        base + ms(5500),
    );
    assert_eq!(episodes[0].time_to_recover(), None);
}

#[tokio::test(start_paused = true)]
async fn slow_answers_break_steady_state_through_p99() {
    let base = Instant::now();
    let mut sli = samples(base, 0, 9000, |_| false);
    for s in sli
        .iter_mut()
        .filter(|s| s.at >= base + ms(5100) && s.at < base + ms(6000))
    {
        s.latency = ms(400);
    }
    let episodes = measure(
        &sli,
        &[fault(base, "latency", 2050, Some(5050))],
        &[],
        &rule(),
        base + ms(9050),
    );
    // Every window starting before 6000 holds at least one 400 ms answer, and with ten samples
    // the nearest-rank p99 is the slowest one.
    assert_eq!(episodes[0].recovered, Some(base + ms(6000)));
    assert_eq!(episodes[0].time_to_impact(), None);
}

#[tokio::test(start_paused = true)]
async fn sparse_windows_do_not_count_as_steady() {
    let base = Instant::now();
    // Only every fifth check came back after the revert (a hung target stalls the probe): two
    // samples a second, under the five that half of the promised ten require.
    let sli: Vec<Sample> = samples(base, 0, 9000, |t| (2100..=5000).contains(&t))
        .into_iter()
        .filter(|s| s.at < base + ms(5100) || (s.at - base).as_millis() % 500 == 0)
        .collect();
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, Some(5050))],
        &[],
        &rule(),
        base + ms(9050),
    );
    assert_eq!(episodes[0].recovered, None);
}

#[tokio::test(start_paused = true)]
async fn mitigation_is_steady_state_returning_while_the_fault_is_active() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2100..=3000).contains(&t));
    let episodes = measure(
        &sli,
        &[fault(base, "flood", 2050, Some(8050))],
        &[],
        &rule(),
        base + ms(9050),
    );
    let e = &episodes[0];
    assert_eq!(e.time_to_impact(), Some(ms(50)));
    // min_success 0.9 tolerates one failure in ten, so the first steady window starts at the
    // last failure (3000): 950 ms after the injection, well before the revert.
    assert_eq!(e.time_to_mitigate(), Some(ms(950)));
    // No full window fits between the revert (8050) and the end (9050), so there is no recovery
    // and counting runs to the end: 2100..=9000 is 70 samples, of which 2100..=3000 failed.
    assert_eq!(e.time_to_recover(), None);
    assert_eq!((e.samples, e.failures), (70, 10));
}

#[tokio::test(start_paused = true)]
async fn overlapping_faults_form_one_episode() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2100..=6000).contains(&t));
    let episodes = measure(
        &sli,
        &[
            fault(base, "second", 3050, Some(6050)),
            fault(base, "first", 2050, Some(4050)),
        ],
        &[signal(base, 3500, true)],
        &rule(),
        base + ms(9050),
    );
    assert_eq!(episodes.len(), 1);
    let e = &episodes[0];
    assert_eq!(e.faults, vec!["first".to_string(), "second".to_string()]);
    assert_eq!(e.injected, base + ms(2050));
    assert_eq!(e.reverted, Some(base + ms(6050)));
    assert_eq!(e.time_to_detect(), Some(ms(1450)));
    assert_eq!(e.time_to_recover(), Some(ms(50)));
}

#[tokio::test(start_paused = true)]
async fn faults_in_sequence_form_separate_episodes_each_observed_until_the_next() {
    let base = Instant::now();
    let sli = samples(base, 0, 12000, |t| {
        (2100..=3000).contains(&t) || (7100..=8000).contains(&t)
    });
    let episodes = measure(
        &sli,
        &[
            fault(base, "first", 2050, Some(3050)),
            fault(base, "second", 7050, Some(8050)),
        ],
        // The first source never fires; the second fires only in the second episode.
        &[signal(base, 7300, true)],
        &rule(),
        base + ms(12050),
    );
    assert_eq!(episodes.len(), 2);
    assert_eq!(episodes[0].horizon, base + ms(7050));
    assert_eq!(episodes[0].time_to_detect(), None);
    assert_eq!(episodes[0].time_to_recover(), Some(ms(50)));
    assert_eq!(episodes[1].time_to_detect(), Some(ms(250)));
    assert_eq!(episodes[1].time_to_recover(), Some(ms(50)));
}

#[tokio::test(start_paused = true)]
async fn a_fault_still_applied_at_the_end_has_no_recovery() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| t >= 2100);
    let episodes = measure(
        &sli,
        &[fault(base, "freeze", 2050, None)],
        &[],
        &rule(),
        base + ms(9050),
    );
    assert_eq!(episodes[0].reverted, None);
    assert_eq!(episodes[0].time_to_recover(), None);
    assert_eq!(episodes[0].time_to_mitigate(), None);
}

#[test]
fn percentile_is_nearest_rank() {
    let values: Vec<Duration> = (1..=100).map(ms).collect();
    assert_eq!(percentile(&values, 0.99), ms(99));
    assert_eq!(percentile(&values, 0.5), ms(50));
    assert_eq!(percentile(&values[..10], 0.99), ms(10));
    assert_eq!(percentile(&[], 0.99), Duration::ZERO);
}

/// A queue that grows by 10 per 100 ms from `grow_from` while faulted and shrinks by `drain_per`
/// per 100 ms after `drain_from`; one reading every 100 ms from 0 to 9000.
fn queue(base: Instant, grow_from: u64, drain_from: u64, drain_per: f64) -> Vec<BacklogReading> {
    let mut depth: f64 = 0.0;
    (0..=9000)
        .step_by(100)
        .map(|t| {
            if t >= grow_from && t < drain_from {
                depth += 10.0;
            } else if t >= drain_from {
                depth = (depth - drain_per).max(0.0);
            }
            BacklogReading {
                at: base + ms(t),
                value: Some(depth),
            }
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn recovery_waits_for_the_backlog_to_drain() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2100..=5000).contains(&t));
    let mut episodes = measure(
        &sli,
        &[fault(base, "lock", 2050, Some(5050))],
        &[],
        &rule(),
        base + ms(9050),
    );
    // 30 readings grow the queue to 300 (2100..=5000); from 5100 it drains 50 per reading, so
    // the reading at 5600 is the first at 0.
    apply_backlog(&mut episodes, &queue(base, 2100, 5100, 50.0), 0.0);
    let e = &episodes[0];
    assert_eq!(e.time_to_serve(), Some(ms(50)));
    assert_eq!(e.time_to_drain(), Some(ms(550)));
    assert_eq!(e.time_to_recover(), Some(ms(550)));
    let backlog = e.backlog.as_ref().unwrap();
    assert_eq!(backlog.peak, Some(300.0));
    assert_eq!(backlog.drained, Some(base + ms(5600)));
}

#[tokio::test(start_paused = true)]
async fn a_backlog_under_its_bound_at_the_revert_costs_nothing_beyond_serving() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2100..=5000).contains(&t));
    let mut episodes = measure(
        &sli,
        &[fault(base, "lock", 2050, Some(5050))],
        &[],
        &rule(),
        base + ms(9050),
    );
    // Peak 300, bound 1000: the first reading after the revert (5100) already counts.
    apply_backlog(&mut episodes, &queue(base, 2100, 5100, 50.0), 1000.0);
    let e = &episodes[0];
    assert_eq!(e.time_to_drain(), Some(ms(50)));
    assert_eq!(e.time_to_recover(), Some(ms(50)));
}

#[tokio::test(start_paused = true)]
async fn a_backlog_that_never_drains_means_no_recovery_and_unreadable_gauges_prove_nothing() {
    let base = Instant::now();
    let sli = samples(base, 0, 9000, |t| (2100..=5000).contains(&t));
    let mut episodes = measure(
        &sli,
        &[fault(base, "lock", 2050, Some(5050))],
        &[],
        &rule(),
        base + ms(9050),
    );
    // Drains 1 per reading: 300 → 261 by the end of the run, never at 0.
    let mut readings = queue(base, 2100, 5100, 1.0);
    // Failed readings after the revert must not count as drained.
    readings.push(BacklogReading {
        at: base + ms(5150),
        value: None,
    });
    apply_backlog(&mut episodes, &readings, 0.0);
    let e = &episodes[0];
    assert_eq!(e.time_to_serve(), Some(ms(50)));
    assert_eq!(e.time_to_drain(), None);
    assert_eq!(e.time_to_recover(), None);
    assert_eq!(e.backlog.as_ref().unwrap().peak, Some(300.0));
}

/// A check sent `late_us` after its scheduled instant `t` (ms after `base`).
fn sent_late(base: Instant, t: u64, late_us: u64) -> Sample {
    Sample {
        scheduled: base + ms(t),
        at: base + ms(t) + Duration::from_micros(late_us),
        latency: ms(5),
        outcome: Outcome::Success { status: Some(200) },
    }
}

#[tokio::test(start_paused = true)]
async fn lateness_is_the_send_instant_less_the_scheduled_one_in_nearest_rank_quantiles() {
    let base = Instant::now();
    // 200 checks every 50 ms, every fourth one a millisecond late.
    let mut sli: Vec<Sample> = (0..200u64)
        .map(|k| sent_late(base, k * 50, if k % 4 == 1 { 1_000 } else { 0 }))
        .collect();
    assert_eq!(sli.iter().filter(|s| !s.lateness().is_zero()).count(), 50);
    sli[7] = sent_late(base, 350, 4_300);
    sli[9] = sent_late(base, 450, 9_000);
    let late = lateness(&sli);
    // Now 149 on time, 49 a millisecond late, one 4.3 ms and one 9 ms late: rank 100 of 200
    // (p50) is on time, rank 198 (p99) one of the millisecond-late ones.
    assert_eq!(
        late,
        Lateness {
            p50: Duration::ZERO,
            p99: Duration::from_micros(1_000),
            max: Duration::from_micros(9_000),
        }
    );
    // One more check 5 ms late (instead of on time) makes rank 198 the 4.3 ms one.
    sli[11] = sent_late(base, 550, 5_000);
    assert_eq!(lateness(&sli).p99, Duration::from_micros(4_300));
}

#[tokio::test(start_paused = true)]
async fn lateness_of_no_samples_is_zero_and_a_check_sent_early_is_not_late() {
    let base = Instant::now();
    assert_eq!(lateness(&[]), Lateness::default());
    let early = Sample {
        scheduled: base + ms(10),
        at: base,
        latency: ms(5),
        outcome: Outcome::Success { status: Some(200) },
    };
    assert_eq!(early.lateness(), Duration::ZERO);
    let one = [sent_late(base, 0, 250)];
    let quarter = Duration::from_micros(250);
    assert_eq!(
        lateness(&one),
        Lateness {
            p50: quarter,
            p99: quarter,
            max: quarter
        }
    );
}
