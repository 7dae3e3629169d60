//! The runs of one scenario in the Prometheus text exposition format (version 0.0.4): what
//! `--pushgateway` pushes as the scenario's group.
//!
//! Every metric is a gauge: each value is a fact about a finished run, not a count that keeps
//! growing. Samples carry `scenario` and `run` (the run's number among the scenario's runs,
//! from 1), and per episode `episode` (from 1). Times are in seconds with microsecond precision,
//! the precision of the JSON report's milliseconds, so both say exactly the same. A time an
//! episode never reached is left out rather than given as NaN: "absent" is what PromQL can
//! test for, and an average over runs is not poisoned by it.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use relapse_core::gate::Verdict;
use relapse_core::report::{EpisodeReport, RunReport};

/// The content type of the text format, for the push's `Content-Type`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const VERDICTS: [Verdict; 4] = [
    Verdict::Pass,
    Verdict::Fail,
    Verdict::Inconclusive,
    Verdict::Aborted,
];

type EpisodeValue = fn(&EpisodeReport) -> Option<Value>;

/// The per-episode metrics: name, help, value (`None`: left out for that episode).
const EPISODE_METRICS: [(&str, &str, EpisodeValue); 9] = [
    (
        "relapse_time_to_impact_seconds",
        "Time from the fault becoming effective to the first failing SLI check after it, per episode; absent when the SLI never failed.",
        |e| e.time_to_impact.map(Value::Seconds),
    ),
    (
        "relapse_time_to_detect_seconds",
        "Time from the fault becoming effective to the first firing detection signal, per episode; absent when nothing detected it.",
        |e| e.time_to_detect.map(Value::Seconds),
    ),
    (
        "relapse_time_to_mitigate_seconds",
        "Time from the fault becoming effective to the start of the first steady SLI window while it was still active, per episode; absent when it was not mitigated.",
        |e| e.time_to_mitigate.map(Value::Seconds),
    ),
    (
        "relapse_time_to_recover_seconds",
        "Time from the fault's confirmed revert to the SLI serving steadily again and any backlog drained, per episode; absent when it did not recover.",
        |e| e.time_to_recover.map(Value::Seconds),
    ),
    (
        "relapse_time_to_serve_seconds",
        "Time from the fault's confirmed revert to the SLI serving steadily again, backlog aside, per episode; absent when it did not.",
        |e| e.time_to_serve.map(Value::Seconds),
    ),
    (
        "relapse_time_to_drain_seconds",
        "Time from the fault's confirmed revert to the backlog being at or under its bound, per episode; absent without a backlog or when it never drained.",
        |e| e.time_to_drain.map(Value::Seconds),
    ),
    (
        "relapse_detect_resolution_seconds",
        "How late the detecting source could have noticed: its polling interval, 0 when pushed; absent when nothing detected the episode.",
        |e| e.detect_resolution.map(Value::Seconds),
    ),
    (
        "relapse_episode_sli_samples",
        "SLI checks sent from the fault becoming effective until recovery or the end of observation, per episode.",
        |e| Some(Value::Count(e.samples)),
    ),
    (
        "relapse_episode_sli_failures",
        "Failed SLI checks among relapse_episode_sli_samples, per episode.",
        |e| Some(Value::Count(e.failures)),
    ),
];

/// A sample's value, written without loss: durations in seconds to the microsecond.
#[derive(Debug, Clone, Copy)]
enum Value {
    Seconds(Duration),
    Count(u64),
    Flag(bool),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            // The nearest f64 to the exact decimal, written as the shortest text that reads back
            // as that f64: what the JSON report's milliseconds divided by 1000 read back as.
            Value::Seconds(d) => write!(f, "{}", d.as_micros() as f64 / 1e6),
            Value::Count(n) => write!(f, "{n}"),
            Value::Flag(b) => write!(f, "{}", u8::from(b)),
        }
    }
}

/// One metric family as it is written: its `# HELP`, its `# TYPE`, its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn write(&self, out: &mut String) {
        // A family without samples is left out whole: some parsers take a lone TYPE line for a
        // metric that exists.
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", self.name, labels.join(","));
        }
    }
}

/// The exposition text of one scenario's runs (each with its number, see
/// [`super::numbered`]): run-level metrics first, then one family per episode metric.
pub fn exposition(runs: &[(u32, &RunReport)]) -> String {
    let mut verdict = Family::new(
        "relapse_verdict",
        "1 for the run's verdict by its gates (pass, fail, inconclusive or aborted), 0 for the others.",
    );
    let mut outcome = Family::new(
        "relapse_outcome",
        "1 for the run's verdict against the scenario's expectation, which the exit code goes by, 0 for the others; equal to relapse_verdict unless the scenario expects its gates to fail.",
    );
    let mut gate = Family::new(
        "relapse_gate_passed",
        "1 when the gate held, 0 when it failed, whether or not the scenario expected it to fail.",
    );
    let mut duration = Family::new("relapse_run_duration_seconds", "How long the run took.");
    let mut started = Family::new(
        "relapse_run_timestamp_seconds",
        "When the run started (wall clock), in seconds since the Unix epoch.",
    );
    let mut resolution = Family::new(
        "relapse_sli_resolution_seconds",
        "The precision of the times to impact, mitigate, serve and recover: the SLI probe interval plus the SLI probe's p99 lateness.",
    );
    let mut episodes: Vec<Family> = EPISODE_METRICS
        .iter()
        .map(|(name, help, _)| Family::new(name, help))
        .collect();
    for &(number, r) in runs {
        let run = || {
            vec![
                ("scenario", r.scenario.clone()),
                ("run", number.to_string()),
            ]
        };
        for v in VERDICTS {
            let mut labels = run();
            labels.push(("verdict", v.as_str().to_string()));
            verdict.samples.push((labels, Value::Flag(r.verdict == v)));
            let mut labels = run();
            labels.push(("outcome", v.as_str().to_string()));
            outcome
                .samples
                .push((labels, Value::Flag(r.outcome() == v)));
        }
        for g in &r.gates {
            let mut labels = run();
            labels.push(("gate", g.name.clone()));
            gate.samples.push((labels, Value::Flag(g.passed)));
        }
        duration.samples.push((run(), Value::Seconds(r.duration)));
        let since_epoch = r
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        started.samples.push((run(), Value::Seconds(since_epoch)));
        resolution
            .samples
            .push((run(), Value::Seconds(r.resolution)));
        for (index, e) in r.episodes.iter().enumerate() {
            for (family, (_, _, value)) in episodes.iter_mut().zip(&EPISODE_METRICS) {
                if let Some(value) = value(e) {
                    let mut labels = run();
                    labels.push(("episode", (index + 1).to_string()));
                    family.samples.push((labels, value));
                }
            }
        }
    }
    let mut out = String::new();
    for family in [verdict, outcome, gate, duration, started, resolution]
        .iter()
        .chain(&episodes)
    {
        family.write(&mut out);
    }
    out
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A help text as the text format wants it: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
