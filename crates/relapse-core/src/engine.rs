//! The engine: probes and detection run; steady state is confirmed; faults are injected and
//! reverted on schedule; the run is observed until recovery or its bound; then measured and judged.
//!
//! The engine owns the schedule. Faults never sleep on its behalf, and every applied fault sits in
//! a [`FaultGuard`], so every exit path (end, error, cancellation, a dropped future) reverts it.

use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::fault::{FaultGuard, RevertLog};
use crate::measure::{self, BacklogReading, FaultActivity, Sample, SteadyRule};
use crate::report::{FloodReport, RunReport};
use crate::scenario::{Expectation, Gates, Limits, StopSpec};
use crate::sense::{Signal, SignalSender};

/// How often the observation phase checks whether it may end early.
const OBSERVE_CHECK: Duration = Duration::from_millis(100);

/// Runs a plan to the end and reports. Never returns with a fault applied.
///
/// Cancel safety: dropping the future reverts applied faults through their guards (without
/// awaiting confirmation); cancelling `cancel` instead reverts them with confirmation and
/// returns an `aborted` report, which is the way to stop a run.
pub async fn run(
    plan: Plan,
    cancel: CancellationToken,
    progress: Option<watch::Sender<Progress>>,
) -> RunReport {
    let mut run = Run::new(plan, progress);
    let ending = run.drive(&cancel).await;
    run.finish(ending).await
}

/// The next reason to abort; never, without a source or once every sender is gone.
async fn next_abort(aborts: &mut Option<mpsc::UnboundedReceiver<String>>) -> String {
    if let Some(reason) = match aborts {
        Some(aborts) => aborts.recv().await,
        None => None,
    } {
        return reason;
    }
    std::future::pending().await
}

/// How the schedule ended.
enum Ending {
    Completed,
    Inconclusive(String),
    Aborted(String),
}

struct Run {
    scenario: String,
    sli: usize,
    steady: SteadyRule,
    steady_timeout: Duration,
    gates: Gates,
    /// Each fault's own gates, by name.
    fault_gates: Vec<(String, Gates)>,
    mitigation: Option<String>,
    expect: Expectation,
    limits: Limits,
    probe_meta: Vec<(String, Duration, Duration)>,
    detector_meta: Vec<(String, Duration)>,
    /// Name, interval and bound of the backlog gauge.
    backlog_meta: Option<(String, Duration, f64)>,
    planned_faults: Vec<(String, Duration, Duration)>,
    placements: Vec<crate::report::Placement>,
    guards: Vec<FaultGuard>,
    activity: Vec<Option<FaultActivity>>,
    stops: Vec<StopSpec>,
    journal: Option<Box<dyn RevertLog>>,
    journal_ids: Vec<Option<u64>>,

    start: Instant,
    started_wall: SystemTime,
    stop: CancellationToken,
    tasks: TaskTracker,
    samples_rx: mpsc::UnboundedReceiver<(usize, Sample)>,
    signals_rx: mpsc::UnboundedReceiver<Signal>,
    /// Reasons from outside to abort at once (an agent's lease lost).
    aborts: Option<mpsc::UnboundedReceiver<String>>,
    backlog_rx: mpsc::UnboundedReceiver<BacklogReading>,

    backlog: Vec<BacklogReading>,
    sli_samples: Vec<Sample>,
    /// When steady state was confirmed before injection.
    steady_confirmed: Option<Instant>,
    other_samples: Vec<(usize, Sample)>,
    signals: Vec<Signal>,
    timeline: Vec<(Instant, String, String)>,
    /// What each flood did, as it was reverted.
    floods: Vec<FloodReport>,
    progress: Option<watch::Sender<Progress>>,
    status: Progress,
}

impl Run {
    fn new(plan: Plan, progress: Option<watch::Sender<Progress>>) -> Run {
        let start = Instant::now();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (samples_tx, samples_rx) = mpsc::unbounded_channel();
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();

        let probe_meta = plan
            .probes
            .iter()
            .map(|p| (p.name.clone(), p.every, p.timeout))
            .collect();
        let sli_placement = plan.probes[plan.sli].placement.clone();
        for (index, probe) in plan.probes.into_iter().enumerate() {
            let ticks = plan.pacer.start(probe.every);
            tasks.spawn(probe_loop(
                index,
                probe,
                ticks,
                samples_tx.clone(),
                stop.clone(),
            ));
        }
        let detector_meta = plan
            .detectors
            .iter()
            .map(|d| (d.name.clone(), d.resolution))
            .collect();
        for (index, detector) in plan.detectors.into_iter().enumerate() {
            let signals = SignalSender::new(index, signals_tx.clone());
            let stop = stop.clone();
            let name = detector.name;
            tasks.spawn(async move {
                if let Err(error) = detector.detector.watch(signals, stop).await {
                    tracing::warn!(detector = %name, %error, "detection source stopped");
                }
            });
        }
        let (backlog_tx, backlog_rx) = mpsc::unbounded_channel();
        let backlog_meta = plan
            .backlog
            .as_ref()
            .map(|b| (b.name.clone(), b.every, b.max));
        if let Some(backlog) = plan.backlog {
            tasks.spawn(backlog_loop(backlog, backlog_tx, stop.clone()));
        }
        let planned_faults = plan
            .faults
            .iter()
            .map(|f| (f.name.clone(), f.start, f.duration))
            .collect();
        let placements = plan
            .faults
            .iter()
            .flat_map(|f| f.placements.iter().cloned())
            .chain(sli_placement)
            .collect();
        let fault_gates = plan
            .faults
            .iter()
            .map(|f| (f.name.clone(), f.gates.clone()))
            .collect();
        let activity = plan.faults.iter().map(|_| None).collect();
        let journal_ids = plan.faults.iter().map(|_| None).collect();
        let guards = plan
            .faults
            .into_iter()
            .map(|f| FaultGuard::new(f.fault))
            .collect();

        Run {
            scenario: plan.scenario,
            sli: plan.sli,
            steady: plan.steady,
            steady_timeout: plan.steady_timeout,
            gates: plan.gates,
            fault_gates,
            placements,
            mitigation: plan.mitigation,
            expect: plan.expect,
            limits: plan.limits,
            probe_meta,
            detector_meta,
            backlog_meta,
            planned_faults,
            guards,
            activity,
            stops: plan.stops,
            journal: plan.journal,
            journal_ids,
            start,
            started_wall: SystemTime::now(),
            stop,
            tasks,
            samples_rx,
            signals_rx,
            aborts: plan.aborts,
            backlog_rx,
            backlog: Vec::new(),
            sli_samples: Vec::new(),
            steady_confirmed: None,
            other_samples: Vec::new(),
            signals: Vec::new(),
            timeline: Vec::new(),
            floods: Vec::new(),
            progress,
            status: Progress::default(),
        }
    }

    fn event(&mut self, at: Instant, event: &str, detail: impl Into<String>) {
        self.timeline.push((at, event.to_string(), detail.into()));
    }

    fn set_phase(&mut self, phase: Phase) {
        self.status.phase = phase;
        self.publish();
    }

    fn publish(&mut self) {
        if let Some(tx) = &self.progress {
            self.status.elapsed = Instant::now() - self.start;
            self.status.faults_applied = self.guards.iter().filter(|g| g.is_applied()).count();
            let _ = tx.send(self.status.clone());
        }
    }

    fn record_sample(&mut self, index: usize, sample: Sample) {
        if index == self.sli {
            self.status.sli_samples += 1;
            if !sample.outcome.is_success() {
                self.status.sli_failures += 1;
            }
            // Checks complete out of order (a slow one after a fast one); keep them sorted by
            // the instant they were sent. Nearly always this is an append.
            let position = self.sli_samples.partition_point(|s| s.at <= sample.at);
            self.sli_samples.insert(position, sample);
        } else {
            self.other_samples.push((index, sample));
        }
    }

    fn record_signal(&mut self, signal: Signal) {
        let name = self.detector_meta[signal.source].0.clone();
        let what = if signal.firing {
            "detection"
        } else {
            "detection cleared"
        };
        self.event(signal.at, what, format!("{name}: {}", signal.detail));
        if signal.firing {
            self.status.detected = true;
        }
        self.signals.push(signal);
        self.publish();
    }

    /// Waits for steady state, runs the fault schedule, observes. Returns how it ended.
    async fn drive(&mut self, cancel: &CancellationToken) -> Ending {
        let run_deadline = self.start + self.limits.max_run;

        self.set_phase(Phase::WaitingForSteadyState);
        let steady_deadline = self.start + self.steady_timeout;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ending::Aborted("cancelled before injection".into()),
                reason = next_abort(&mut self.aborts) => return Ending::Aborted(reason),
                _ = sleep_until(run_deadline) => return Ending::Aborted("limits.max_run reached before injection".into()),
                _ = sleep_until(steady_deadline) => {
                    return Ending::Inconclusive(format!(
                        "steady state did not hold within {} of the start; nothing was injected",
                        crate::duration::format_duration(self.steady_timeout)
                    ));
                }
                Some(signal) = self.signals_rx.recv() => self.record_signal(signal),
                Some(reading) = self.backlog_rx.recv() => self.backlog.push(reading),
                Some((index, sample)) = self.samples_rx.recv() => {
                    let is_sli = index == self.sli;
                    self.record_sample(index, sample);
                    if is_sli && self.steady_now() {
                        break;
                    }
                }
            }
        }
        let t0 = Instant::now();
        self.steady_confirmed = Some(t0);
        self.event(
            t0,
            "steady state",
            "steady state confirmed; fault schedule starts",
        );

        self.set_phase(Phase::Faulting);
        let mut check = tokio::time::interval(OBSERVE_CHECK);
        let mut pending: Vec<(Instant, usize, bool)> = self
            .planned_faults
            .iter()
            .enumerate()
            .map(|(i, (_, start, _))| (t0 + *start, i, true))
            .collect();
        while !pending.is_empty() {
            pending.sort_by_key(|p| p.0);
            let (due, index, inject) = pending[0];
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ending::Aborted("cancelled while faults were scheduled".into()),
                reason = next_abort(&mut self.aborts) => return Ending::Aborted(reason),
                _ = sleep_until(run_deadline) => return Ending::Aborted("limits.max_run reached while faults were scheduled".into()),
                Some(signal) = self.signals_rx.recv() => self.record_signal(signal),
                Some((i, sample)) = self.samples_rx.recv() => self.record_sample(i, sample),
                Some(reading) = self.backlog_rx.recv() => self.backlog.push(reading),
                _ = check.tick() => {
                    if let Some(reason) = self.stop_tripped() {
                        return Ending::Aborted(reason);
                    }
                }
                _ = sleep_until(due) => {
                    pending.remove(0);
                    if inject {
                        match self.inject(index).await {
                            Ok(effective_at) => {
                                let duration = self.planned_faults[index].2;
                                pending.push((effective_at + duration, index, false));
                            }
                            Err(reason) => return Ending::Aborted(reason),
                        }
                    } else if let Err(reason) = self.revert(index).await {
                        return Ending::Aborted(reason);
                    }
                    self.publish();
                }
            }
        }

        self.set_phase(Phase::Observing);
        let last_revert = Instant::now();
        let observe_deadline = (last_revert + self.limits.observe_after).min(run_deadline);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ending::Aborted("cancelled while observing recovery".into()),
                reason = next_abort(&mut self.aborts) => return Ending::Aborted(reason),
                _ = sleep_until(observe_deadline) => {
                    let at = Instant::now();
                    self.event(at, "observation bound", "observation ended at its bound (limits.observe_after or limits.max_run)");
                    return Ending::Completed;
                }
                Some(signal) = self.signals_rx.recv() => self.record_signal(signal),
                Some((i, sample)) = self.samples_rx.recv() => self.record_sample(i, sample),
                Some(reading) = self.backlog_rx.recv() => self.backlog.push(reading),
                _ = check.tick() => {
                    self.publish();
                    if let Some(reason) = self.stop_tripped() {
                        return Ending::Aborted(reason);
                    }
                    if self.observation_complete() {
                        return Ending::Completed;
                    }
                }
            }
        }
    }

    /// Steady state holds over the window that just ended (completed checks only).
    fn steady_now(&self) -> bool {
        let now = Instant::now();
        if now < self.start + self.steady.window {
            return false;
        }
        measure::window_holds(&self.sli_samples, now - self.steady.window, &self.steady)
    }

    /// Recovery is established (and, where sources exist, detection too), counting only windows
    /// whose every check has completed.
    fn observation_complete(&self) -> bool {
        let sli_timeout = self.probe_meta[self.sli].2;
        let now = Instant::now();
        let complete_until = now.checked_sub(sli_timeout).unwrap_or(self.start);
        let mut episodes = measure::measure(
            &self.sli_samples,
            &self.fault_activity(),
            &self.signals,
            &self.steady,
            complete_until,
        );
        if let Some((_, _, max)) = &self.backlog_meta {
            measure::apply_backlog(&mut episodes, &self.backlog, *max);
        }
        match episodes.last() {
            Some(last) => {
                last.time_to_recover().is_some()
                    && (self.detector_meta.is_empty() || last.detected.is_some())
            }
            None => true,
        }
    }

    /// The first stop condition whose bound the target is beyond, as the abort reason. A
    /// condition is judged over its window of completed checks, once a whole window has passed
    /// since the first injection.
    fn stop_tripped(&mut self) -> Option<String> {
        let first_inject = self.activity.iter().flatten().map(|a| a.injected).min()?;
        let now = Instant::now();
        for stop in &self.stops {
            let timeout = self.probe_meta[stop.probe].2;
            let Some(until) = now.checked_sub(timeout) else {
                continue;
            };
            if until < first_inject + stop.window {
                continue;
            }
            let from = until - stop.window;
            let in_window = |s: &&Sample| s.at >= from && s.at < until;
            let (total, good) = if stop.probe == self.sli {
                let window: Vec<&Sample> = self.sli_samples.iter().filter(in_window).collect();
                (
                    window.len(),
                    window.iter().filter(|s| s.outcome.is_success()).count(),
                )
            } else {
                let window: Vec<&Sample> = self
                    .other_samples
                    .iter()
                    .filter(|(i, _)| *i == stop.probe)
                    .map(|(_, s)| s)
                    .filter(in_window)
                    .collect();
                (
                    window.len(),
                    window.iter().filter(|s| s.outcome.is_success()).count(),
                )
            };
            if total == 0 {
                continue;
            }
            let ratio = good as f64 / total as f64;
            if ratio < stop.min_success {
                let reason = format!(
                    "stop condition \"{}\" tripped: probe \"{}\" succeeded in {:.1}% of {} checks over the last {}, under the bound of {:.1}%",
                    stop.name,
                    self.probe_meta[stop.probe].0,
                    ratio * 100.0,
                    total,
                    crate::duration::format_duration(stop.window),
                    stop.min_success * 100.0
                );
                self.event(now, "stop condition", reason.clone());
                return Some(reason);
            }
        }
        None
    }

    fn fault_activity(&self) -> Vec<FaultActivity> {
        self.activity.iter().flatten().cloned().collect()
    }

    async fn inject(&mut self, index: usize) -> Result<Instant, String> {
        let name = self.planned_faults[index].0.clone();
        let description = self.guards[index].describe();
        self.event(Instant::now(), "inject", format!("{name}: {description}"));
        if let Some(journal) = &mut self.journal {
            let instructions = self.guards[index].revert_instructions();
            match journal.record(&name, &description, &instructions) {
                Ok(id) => self.journal_ids[index] = Some(id),
                Err(error) => {
                    return Err(format!(
                    "fault \"{name}\" was not injected: its revert could not be journaled: {error}"
                ))
                }
            }
        }
        let bound = self.limits.inject_timeout;
        match tokio::time::timeout(bound, self.guards[index].inject()).await {
            Ok(Ok(effective)) => {
                self.event(
                    effective.at,
                    "fault effective",
                    format!("{name}: {}", effective.detail),
                );
                self.activity[index] = Some(FaultActivity {
                    name,
                    injected: effective.at,
                    reverted: None,
                });
                Ok(effective.at)
            }
            Ok(Err(error)) => Err(format!("fault \"{name}\" could not be injected: {error}")),
            Err(_) => Err(format!(
                "fault \"{name}\" was not confirmed within limits.inject_timeout ({})",
                crate::duration::format_duration(bound)
            )),
        }
    }

    async fn revert(&mut self, index: usize) -> Result<(), String> {
        let name = self.planned_faults[index].0.clone();
        self.event(Instant::now(), "revert", name.clone());
        match self.guards[index].revert().await {
            Ok(Some(reverted)) => {
                self.event(
                    reverted.at,
                    "fault reverted",
                    format!("{name}: {}", reverted.detail),
                );
                if let Some(activity) = &mut self.activity[index] {
                    activity.reverted = Some(reverted.at);
                }
                if let Some(outcome) = self.guards[index].flood_outcome() {
                    self.floods.push(FloodReport {
                        fault: name,
                        outcome,
                    });
                }
                self.strike_from_journal(index);
                Ok(())
            }
            Ok(None) => {
                // Journaled but never applied (the injection failed before it began): nothing to
                // revert, so nothing to keep.
                self.strike_from_journal(index);
                Ok(())
            }
            Err(error) => Err(format!("fault \"{name}\" could not be reverted: {error}")),
        }
    }

    /// Removes a confirmed revert from the journal. A failure here leaves an entry whose revert
    /// is idempotent, so it is noted, not fatal.
    fn strike_from_journal(&mut self, index: usize) {
        if let (Some(journal), Some(id)) = (&mut self.journal, self.journal_ids[index].take()) {
            if let Err(error) = journal.remove(id) {
                self.event(
                    Instant::now(),
                    "journal",
                    format!("could not remove a confirmed revert: {error}"),
                );
            }
        }
    }

    /// The gates of an episode: the plan's, with its faults' own over them (the loader made
    /// sure that overlapping faults do not set one gate differently).
    fn episode_gates(&self, faults: &[String]) -> Gates {
        self.fault_gates
            .iter()
            .filter(|(name, _)| faults.contains(name))
            .fold(self.gates.clone(), |gates, (_, own)| gates.overlay(own))
    }
}

mod finish;
mod plan;
mod probes;
pub use plan::{
    Phase, Plan, PlannedBacklog, PlannedDetector, PlannedFault, PlannedProbe, Progress,
};
use probes::{backlog_loop, probe_loop};

#[cfg(test)]
mod tests;
