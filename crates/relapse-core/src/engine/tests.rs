//! The engine under paused time, with in-memory probe, detector and fault whose behaviour is
//! exact, so the measured numbers are exact too.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use super::*;
use crate::fault::{
    BoxFuture, Effective, Fault, FaultError, LogError, RevertInstructions, RevertLog, RevertRecord,
    Reverted,
};
use crate::gate::Verdict;
use crate::sense::{Detector, DetectorError, Gauge, GaugeError, Outcome, Probe};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The system under test: broken while any fault is applied.
#[derive(Default)]
struct System {
    applied: AtomicU32,
    injections: AtomicU32,
    /// When set, the SLI never succeeds (no steady state).
    always_failing: AtomicBool,
}

/// How long a failing check takes; a good one answers at once.
const FAILING_CHECK_TAKES: Duration = Duration::from_millis(250);

struct SliProbe(Arc<System>);

impl Probe for SliProbe {
    fn check(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            if self.0.applied.load(Ordering::SeqCst) > 0
                || self.0.always_failing.load(Ordering::SeqCst)
            {
                // Like a gateway that waits for a hung upstream before it gives up.
                tokio::time::sleep(FAILING_CHECK_TAKES).await;
                Outcome::Failure {
                    status: Some(503),
                    error: "status 503".into(),
                }
            } else {
                Outcome::Success { status: Some(200) }
            }
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BreakRecord;

impl RevertRecord for BreakRecord {
    const KIND: &'static str = "break";
}

struct Break {
    system: Arc<System>,
    fail_inject: bool,
}

impl Fault for Break {
    fn describe(&self) -> String {
        "break the system".into()
    }
    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::new(&BreakRecord)
    }
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            self.system.injections.fetch_add(1, Ordering::SeqCst);
            if self.fail_inject {
                return Err(FaultError::Target("no such process".into()));
            }
            self.system.applied.fetch_add(1, Ordering::SeqCst);
            Ok(Effective {
                at: Instant::now(),
                detail: "broken".into(),
            })
        })
    }
    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            self.revert_now();
            Ok(Reverted {
                at: Instant::now(),
                detail: "mended".into(),
            })
        })
    }
    fn revert_now(&mut self) {
        let _ = self
            .system
            .applied
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// Notices a broken system `delay` after it breaks (a monitor with a fixed reaction time).
struct Monitor {
    system: Arc<System>,
    delay: Duration,
}

impl Detector for Monitor {
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>> {
        Box::pin(async move {
            let mut ticks = tokio::time::interval(ms(1));
            let mut broken_since: Option<Instant> = None;
            let mut fired = false;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = ticks.tick() => {}
                }
                let broken = self.system.applied.load(Ordering::SeqCst) > 0;
                let now = Instant::now();
                match (broken, broken_since) {
                    (true, None) => broken_since = Some(now),
                    (false, _) => {
                        if fired {
                            signals.clear("resolved");
                            fired = false;
                        }
                        broken_since = None;
                    }
                    _ => {}
                }
                if let Some(since) = broken_since {
                    if !fired && now - since >= self.delay {
                        signals.fire("FrontendDown firing");
                        fired = true;
                    }
                }
            }
        })
    }
}

fn plan(system: &Arc<System>, faults: &[(&str, u64, u64)], detector_delay: Option<u64>) -> Plan {
    Plan {
        scenario: "test".into(),
        probes: vec![PlannedProbe {
            name: "sli".into(),
            every: ms(100),
            timeout: ms(500),
            probe: Arc::new(SliProbe(system.clone())),
            placement: None,
        }],
        sli: 0,
        steady: SteadyRule {
            window: ms(1000),
            min_success: 0.9,
            max_p99: Some(ms(300)),
            probe_every: ms(100),
        },
        steady_timeout: ms(5000),
        detectors: detector_delay
            .map(|d| PlannedDetector {
                name: "pager".into(),
                resolution: Duration::ZERO,
                detector: Box::new(Monitor {
                    system: system.clone(),
                    delay: ms(d),
                }),
            })
            .into_iter()
            .collect(),
        faults: faults
            .iter()
            .map(|(name, start, duration)| PlannedFault {
                placements: Vec::new(),
                name: name.to_string(),
                start: ms(*start),
                duration: ms(*duration),
                fault: Box::new(Break {
                    system: system.clone(),
                    fail_inject: false,
                }),
                gates: Gates::default(),
            })
            .collect(),
        mitigation: None,
        expect: Default::default(),
        gates: Gates {
            detect_within: Some(ms(1000)),
            recover_within: Some(ms(200)),
            ..Gates::default()
        },
        limits: Limits {
            max_run: ms(60_000),
            observe_after: ms(10_000),
            inject_timeout: ms(1000),
        },
        stops: Vec::new(),
        backlog: None,
        journal: None,
        aborts: None,
        pacer: Arc::new(crate::sense::RuntimePacer),
    }
}

/// A mail queue: grows by 10 per reading while the system is broken, shrinks by `drain_per`
/// per reading once it is not, like mail waiting for a locked mailbox store.
struct Queue {
    system: Arc<System>,
    depth: std::sync::Mutex<f64>,
    drain_per: f64,
}

impl Gauge for Queue {
    fn read(&self) -> BoxFuture<'_, Result<f64, GaugeError>> {
        Box::pin(async move {
            let mut depth = self.depth.lock().unwrap();
            if self.system.applied.load(Ordering::SeqCst) > 0 {
                *depth += 10.0;
            } else {
                *depth = (*depth - self.drain_per).max(0.0);
            }
            Ok(*depth)
        })
    }
}

/// A journal in memory, shared with the test.
#[derive(Clone, Default)]
struct MemoryJournal {
    entries: Arc<std::sync::Mutex<Vec<(u64, String)>>>,
    next: Arc<AtomicU32>,
    refuse: bool,
}

impl RevertLog for MemoryJournal {
    fn record(
        &mut self,
        fault: &str,
        _describe: &str,
        instructions: &RevertInstructions,
    ) -> Result<u64, LogError> {
        if self.refuse {
            return Err(LogError("disk full".into()));
        }
        let id = u64::from(self.next.fetch_add(1, Ordering::SeqCst));
        self.entries
            .lock()
            .unwrap()
            .push((id, format!("{fault}:{}", instructions.kind)));
        Ok(id)
    }
    fn remove(&mut self, id: u64) -> Result<(), LogError> {
        self.entries.lock().unwrap().retain(|(i, _)| *i != id);
        Ok(())
    }
}

// Timing of these runs: probe checks at 0, 100, 200 ms…; steady state is confirmed with the
// check at 1000 (window [0, 1000) holds ten successes), so t0 = 1000 ms and a fault with
// start 1050 ms is effective at 2050 ms. The first failing check is the one at 2100 (TTI 50 ms);
// the monitor fires 700 ms after the break, on its 1 ms tick (TTD 700 ms); the revert at
// 2050 + 3000 = 5050 ms is followed by the good check at 5100 (TTR 50 ms).

#[tokio::test(start_paused = true)]
async fn measures_exact_times_for_one_fault() {
    let system = Arc::new(System::default());
    let report = run(
        plan(&system, &[("freeze", 1050, 3000)], Some(700)),
        CancellationToken::new(),
        None,
    )
    .await;
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.gates);
    let e = report.headline().unwrap();
    assert_eq!(e.injected_at, ms(2050));
    assert_eq!(e.reverted_at, Some(ms(5050)));
    assert_eq!(e.time_to_impact, Some(ms(50)));
    assert_eq!(e.time_to_detect, Some(ms(700)));
    assert_eq!(e.time_to_recover, Some(ms(50)));
    assert_eq!(e.time_to_mitigate, None);
    assert_eq!(e.detected_by.as_deref(), Some("pager"));
    // Checks 2100..=5000 failed: 30 of them, all 503.
    assert_eq!((e.samples, e.failures), (30, 30));
    assert_eq!(e.failure_statuses.get(&503), Some(&30));
    assert_eq!(system.applied.load(Ordering::SeqCst), 0);
    // 30 of the 66 checks (0..=6500 ms) failed, each after 250 ms; the rest answered at once.
    // The histogram keeps 3 significant figures.
    let probe = &report.probes[0];
    assert_eq!((probe.samples, probe.errors), (66, 30));
    assert_eq!(probe.statuses.get(&503), Some(&30));
    assert_eq!(probe.latency_p50, Duration::ZERO);
    for latency in [probe.latency_p90, probe.latency_p99, probe.latency_max] {
        assert!(latency.abs_diff(FAILING_CHECK_TAKES) < ms(1), "{latency:?}");
    }
    // Under paused time every check goes out at the instant its tick was scheduled for: no
    // lateness, so the stated resolution is the probe interval alone.
    assert_eq!(probe.lateness, crate::measure::Lateness::default());
    assert_eq!(report.resolution, probe.every);
    // The run ends once recovery is established: the window [5100, 6100) complete plus the probe
    // timeout (500 ms) for checks in flight is 6600 ms, seen on the engine's check tick at 6600
    // (every 100 ms from t0 = 1000 ms), before the probe's own tick at that instant.
    assert_eq!(report.duration, ms(6600));
    // What the pictures need: the windows and every SLI sample.
    assert_eq!(report.steady_window, ms(1000));
    assert_eq!(report.steady_confirmed_at, Some(ms(1000)));
    assert_eq!(e.recovered_at, Some(ms(5100)));
    assert_eq!(e.mitigated_at, None);
    assert_eq!(report.run_id.len(), 16);
    let series = report.sli.as_ref().unwrap();
    assert_eq!((series.probe.as_str(), series.every), ("sli", ms(100)));
    assert_eq!(series.samples.len(), 66);
    let failed: Vec<Duration> = series
        .samples
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.at)
        .collect();
    assert_eq!(failed.len(), 30);
    assert_eq!((failed[0], failed[29]), (ms(2100), ms(5000)));
    for s in &series.samples {
        let expected = if s.error.is_some() { 503 } else { 200 };
        assert_eq!(s.status, Some(expected), "{s:?}");
    }
    let events: Vec<&str> = report.timeline.iter().map(|t| t.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "steady state",
            "inject",
            "fault effective",
            "impact",
            "detection",
            "revert",
            "fault reverted",
            "detection cleared",
            "recovered"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn never_detected_fails_the_detect_gate_and_waits_out_the_observation() {
    let system = Arc::new(System::default());
    let mut p = plan(&system, &[("freeze", 1050, 3000)], Some(60_000));
    p.limits.observe_after = ms(2000);
    let report = run(p, CancellationToken::new(), None).await;
    assert_eq!(report.verdict, Verdict::Fail);
    let gate = &report.gates[0];
    assert_eq!(gate.name, "detect_within");
    assert!(!gate.passed);
    assert_eq!(gate.measured, None);
    // Recovery held, but detection never came: the run watched until the bound.
    assert_eq!(report.headline().unwrap().time_to_recover, Some(ms(50)));
    assert_eq!(report.duration, ms(5050 + 2000));
}

#[tokio::test(start_paused = true)]
async fn no_steady_state_is_inconclusive_and_injects_nothing() {
    let system = Arc::new(System::default());
    system.always_failing.store(true, Ordering::SeqCst);
    let report = run(
        plan(&system, &[("freeze", 0, 3000)], Some(700)),
        CancellationToken::new(),
        None,
    )
    .await;
    assert_eq!(report.verdict, Verdict::Inconclusive);
    assert_eq!(system.injections.load(Ordering::SeqCst), 0);
    assert!(report.episodes.is_empty());
    assert!(report
        .reason
        .as_deref()
        .unwrap()
        .contains("steady state did not hold within 5s"));
    assert_eq!(report.duration, ms(5000));
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_fault_reverts_and_aborts() {
    let system = Arc::new(System::default());
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(3000)).await;
            cancel.cancel();
        })
    };
    let report = run(
        plan(&system, &[("freeze", 1050, 30_000)], Some(700)),
        cancel,
        None,
    )
    .await;
    canceller.await.unwrap();
    assert_eq!(report.verdict, Verdict::Aborted);
    assert_eq!(system.applied.load(Ordering::SeqCst), 0);
    let e = report.headline().unwrap();
    assert_eq!(e.reverted_at, Some(ms(3000)));
    assert!(report.timeline.iter().any(|t| t.event == "aborted"));
}

/// A reason from outside (an agent's lease lost) aborts the run at once with that reason, and
/// what is applied is reverted then, not at its scheduled end.
#[tokio::test(start_paused = true)]
async fn an_outside_abort_mid_fault_reverts_and_aborts_with_its_reason() {
    let system = Arc::new(System::default());
    let (abort, aborts) = tokio::sync::mpsc::unbounded_channel();
    let mut p = plan(&system, &[("freeze", 1050, 30_000)], Some(700));
    p.aborts = Some(aborts);
    let sender = tokio::spawn(async move {
        tokio::time::sleep(ms(2500)).await;
        abort.send("agent \"a1\": lease lost".to_string()).unwrap();
        // Held open: a closed channel must not abort by itself.
        tokio::time::sleep(ms(60_000)).await;
    });
    let report = run(p, CancellationToken::new(), None).await;
    sender.abort();
    assert_eq!(report.verdict, Verdict::Aborted);
    assert_eq!(report.reason.as_deref(), Some("agent \"a1\": lease lost"));
    assert_eq!(system.applied.load(Ordering::SeqCst), 0);
    assert_eq!(report.headline().unwrap().reverted_at, Some(ms(2500)));
}

/// An abort source whose senders are all gone (the agents released) never aborts.
#[tokio::test(start_paused = true)]
async fn a_closed_abort_source_lets_the_run_complete() {
    let system = Arc::new(System::default());
    let (abort, aborts) = tokio::sync::mpsc::unbounded_channel::<String>();
    drop(abort);
    let mut p = plan(&system, &[("freeze", 1050, 3000)], Some(700));
    p.aborts = Some(aborts);
    let report = run(p, CancellationToken::new(), None).await;
    assert_ne!(report.verdict, Verdict::Aborted, "{:?}", report.reason);
}

#[tokio::test(start_paused = true)]
async fn a_failed_injection_aborts_and_reverts_what_it_may_have_left() {
    let system = Arc::new(System::default());
    let mut p = plan(&system, &[("freeze", 1050, 3000)], Some(700));
    p.faults[0].fault = Box::new(Break {
        system: system.clone(),
        fail_inject: true,
    });
    let report = run(p, CancellationToken::new(), None).await;
    assert_eq!(report.verdict, Verdict::Aborted);
    assert!(report
        .reason
        .as_deref()
        .unwrap()
        .contains("could not be injected: target: no such process"));
    assert_eq!(system.applied.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn max_run_reverts_and_aborts() {
    let system = Arc::new(System::default());
    let mut p = plan(&system, &[("freeze", 1050, 30_000)], Some(700));
    p.limits.max_run = ms(4000);
    let report = run(p, CancellationToken::new(), None).await;
    assert_eq!(report.verdict, Verdict::Aborted);
    assert!(report.reason.as_deref().unwrap().contains("limits.max_run"));
    assert_eq!(report.duration, ms(4000));
    assert_eq!(system.applied.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn overlapping_faults_are_one_episode_measured_from_the_last_revert() {
    let system = Arc::new(System::default());
    // Effective at 2050 and 3050; reverted at 4050 and 6050.
    let report = run(
        plan(
            &system,
            &[("first", 1050, 2000), ("second", 2050, 3000)],
            Some(700),
        ),
        CancellationToken::new(),
        None,
    )
    .await;
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.gates);
    assert_eq!(report.episodes.len(), 1);
    let e = report.headline().unwrap();
    assert_eq!(e.faults, ["first", "second"]);
    assert_eq!(e.reverted_at, Some(ms(6050)));
    assert_eq!(e.time_to_detect, Some(ms(700)));
    assert_eq!(e.time_to_recover, Some(ms(50)));
}

#[tokio::test(start_paused = true)]
async fn a_faults_own_gates_judge_its_episode_only_and_the_mitigation_is_named() {
    let system = Arc::new(System::default());
    let mut plan = plan(
        &system,
        &[("first", 1050, 2000), ("second", 5050, 2000)],
        Some(700),
    );
    // Nothing mitigates the test system's breakage, so the gate fails where it applies: in the
    // first fault's episode, and only there.
    plan.faults[0].gates = Gates {
        mitigate_within: Some(ms(1000)),
        ..Gates::default()
    };
    plan.mitigation = Some("failover".into());
    let report = run(plan, CancellationToken::new(), None).await;
    let names: Vec<&str> = report.gates.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "detect_within[1]",
            "mitigate_within[1]",
            "recover_within[1]",
            "detect_within[2]",
            "recover_within[2]"
        ]
    );
    let mitigate = &report.gates[1];
    assert!(!mitigate.passed);
    assert_eq!(report.verdict, Verdict::Fail);
    assert_eq!(report.mitigation.as_deref(), Some("failover"));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_future_reverts_through_the_guard() {
    let system = Arc::new(System::default());
    let run_future = run(
        plan(&system, &[("freeze", 1050, 30_000)], None),
        CancellationToken::new(),
        None,
    );
    // The fault is applied at 2050 ms; the timeout drops the run at 3000 ms.
    let result = tokio::time::timeout(ms(3000), run_future).await;
    assert!(result.is_err());
    assert_eq!(system.injections.load(Ordering::SeqCst), 1);
    assert_eq!(system.applied.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn each_fault_is_journaled_before_injection_and_struck_out_after_revert() {
    let system = Arc::new(System::default());
    let journal = MemoryJournal::default();
    let mut p = plan(&system, &[("freeze", 1050, 3000)], Some(700));
    p.journal = Some(Box::new(journal.clone()));
    let watcher = {
        let journal = journal.clone();
        let system = system.clone();
        tokio::spawn(async move {
            // While the fault is applied, its revert is in the journal.
            tokio::time::sleep(ms(3000)).await;
            (
                system.applied.load(Ordering::SeqCst),
                journal.entries.lock().unwrap().clone(),
            )
        })
    };
    let report = run(p, CancellationToken::new(), None).await;
    let (applied, entries) = watcher.await.unwrap();
    assert_eq!(applied, 1);
    assert_eq!(entries, [(0, "freeze:break".to_string())]);
    assert_eq!(report.verdict, Verdict::Pass);
    assert!(journal.entries.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_fault_whose_revert_cannot_be_journaled_is_not_injected() {
    let system = Arc::new(System::default());
    let mut p = plan(&system, &[("freeze", 1050, 3000)], Some(700));
    p.journal = Some(Box::new(MemoryJournal {
        refuse: true,
        ..MemoryJournal::default()
    }));
    let report = run(p, CancellationToken::new(), None).await;
    assert_eq!(report.verdict, Verdict::Aborted);
    assert!(report
        .reason
        .as_deref()
        .unwrap()
        .contains("could not be journaled: disk full"));
    assert_eq!(system.injections.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_condition_aborts_and_reverts_at_once() {
    let system = Arc::new(System::default());
    let mut p = plan(&system, &[("freeze", 1050, 30_000)], Some(700));
    p.stops = vec![StopSpec {
        name: "sli-collapse".into(),
        probe: 0,
        min_success: 0.5,
        window: ms(1000),
    }];
    let report = run(p, CancellationToken::new(), None).await;
    assert_eq!(report.verdict, Verdict::Aborted);
    assert_eq!(system.applied.load(Ordering::SeqCst), 0);
    let reason = report.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("stop condition \"sli-collapse\" tripped"),
        "{reason}"
    );
    // Injected at 2050. Checks complete after the probe timeout (500 ms), so the window
    // [2050, 3050) is judged at 3550 — the first 100 ms tick (from t0 = 1000) at or after it is
    // 3600 — and it holds ten failed checks: 0 % success.
    assert!(
        reason.contains("0.0% of 10 checks over the last 1s"),
        "{reason}"
    );
    let stop = report
        .timeline
        .iter()
        .find(|t| t.event == "stop condition")
        .unwrap();
    assert_eq!(stop.at, ms(3600));
    assert_eq!(report.headline().unwrap().reverted_at, Some(ms(3600)));
}

#[tokio::test(start_paused = true)]
async fn recovery_waits_for_a_declared_backlog_to_drain() {
    let system = Arc::new(System::default());
    let mut plan = plan(&system, &[("lock", 1050, 3000)], Some(700));
    plan.gates.recover_within = Some(ms(5000));
    plan.backlog = Some(PlannedBacklog {
        name: "mail queue".into(),
        every: ms(100),
        timeout: ms(500),
        max: 0.0,
        gauge: Arc::new(Queue {
            system: system.clone(),
            depth: std::sync::Mutex::new(0.0),
            drain_per: 10.0,
        }),
    });
    let report = run(plan, CancellationToken::new(), None).await;
    assert_eq!(report.verdict, Verdict::Pass, "{:?}", report.gates);
    let e = report.headline().unwrap();
    // Broken from 2050 to 5050: the 30 readings 2100..=5000 grow the queue to 300; from 5100 it
    // drains 10 per reading and reads 0 at 8000.
    assert_eq!(e.time_to_serve, Some(ms(50)));
    assert_eq!(e.time_to_drain, Some(ms(2950)));
    assert_eq!(e.time_to_recover, Some(ms(2950)));
    let backlog = e.backlog.as_ref().unwrap();
    assert_eq!((backlog.max, backlog.peak), (0.0, Some(300.0)));
    // Observation lasts until the drain is seen, not only until the SLI recovered (6600). Like
    // every check of completeness it looks only up to now minus the probe timeout (500 ms), so
    // the reading at 8000 counts from 8500, on the check tick at 8600.
    assert_eq!(report.duration, ms(8600));
    assert!(report
        .timeline
        .iter()
        .any(|t| t.event == "drained" && t.at == ms(8000)));
}
