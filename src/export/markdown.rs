//! `--markdown PATH`: a table for a CI job summary, one row per run and episode, so a reader sees
//! each scenario's outcome and times without opening the log.
//!
//! The file is appended to, never replaced: GitHub's `$GITHUB_STEP_SUMMARY` is one file that every
//! step of a job appends to, and a `relapse run` per step must not wipe the others' summaries.
//! The text starts with a heading and ends with a blank line, so whatever is appended next cannot
//! run into the table.

use std::fmt::Write;

use relapse_core::compare::{Change, Comparison};
use relapse_core::gate::Verdict;
use relapse_core::report::{EpisodeReport, RunReport};

use crate::render::{human, optional};

/// The summary of the runs: a heading and the table.
pub fn summary(reports: &[RunReport]) -> String {
    let mut out = String::from("### relapse\n\n");
    out.push_str(
        "| Scenario | Episode (faults) | Outcome | TTI | TTD | TTM | TTR | Failed gates |\n",
    );
    out.push_str("|---|---|---|---:|---|---|---:|---|\n");
    for (number, r) in super::numbered(reports) {
        let repeated = reports.iter().filter(|o| o.scenario == r.scenario).count() > 1;
        let scenario = if repeated {
            format!("{} #{number}", cell(&r.scenario))
        } else {
            cell(&r.scenario)
        };
        let outcome = outcome(r);
        let mut failed = failed_gates(r);
        if let Some(reason) = &r.reason {
            failed[0].push(format!("reason: {}", cell(reason)));
        }
        if r.episodes.is_empty() {
            let notes = failed[0].join("<br>");
            let _ = writeln!(
                out,
                "| {scenario} | — | {outcome} | — | — | — | — | {notes} |"
            );
        }
        for (index, e) in r.episodes.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {scenario} | {} ({}) | {outcome} | {} | {} | {} | {} | {} |",
                index + 1,
                cell(&e.faults.join(" + ")),
                optional(e.time_to_impact),
                detected(e),
                mitigated(e, r.mitigation.as_deref()),
                optional(e.time_to_recover),
                failed[index].join("<br>"),
            );
        }
    }
    out.push('\n');
    out
}

/// The outcome, marked for a glance, with the verdict beside it when the scenario expected its
/// gates to fail: "fail (as expected)".
fn outcome(r: &RunReport) -> String {
    let mark = match r.outcome() {
        Verdict::Pass => "✅",
        Verdict::Fail => "❌",
        Verdict::Inconclusive | Verdict::Aborted => "⚠️",
    };
    let expectation = match &r.expectation {
        Some(e) if e.met => " (as expected)",
        Some(_) => " (not as expected)",
        None => "",
    };
    format!("{mark} {}{expectation}", r.verdict.as_str())
}

fn detected(e: &EpisodeReport) -> String {
    match (e.time_to_detect, &e.detected_by) {
        (Some(t), Some(source)) => format!("{} by {}", human(t), cell(source)),
        (t, _) => optional(t),
    }
}

fn mitigated(e: &EpisodeReport, mitigation: Option<&str>) -> String {
    match (e.time_to_mitigate, mitigation) {
        (Some(t), Some(label)) => format!("{} ({})", human(t), cell(label)),
        (t, _) => optional(t),
    }
}

/// Each episode's failed gates, `name: message` (and "(expected)" for one the scenario expected
/// to fail), one list per episode (at least one, for a run without episodes). With several
/// episodes a gate's name ends in its episode's number (`recover_within[2]`); a gate that names
/// none goes with the first.
fn failed_gates(r: &RunReport) -> Vec<Vec<String>> {
    let mut lists = vec![Vec::new(); r.episodes.len().max(1)];
    for g in r.gates.iter().filter(|g| !g.passed) {
        let expected = r
            .expectation
            .as_ref()
            .is_some_and(|e| e.failed_as_expected.contains(&g.name));
        let note = if expected { " (expected)" } else { "" };
        let index = episode_of(&g.name, lists.len()).unwrap_or(0);
        lists[index].push(format!("{}{note}: {}", cell(&g.name), cell(&g.message)));
    }
    lists
}

/// The episode (from 0) a judged gate name like `detect_within[2]` belongs to, when there are
/// several.
fn episode_of(gate: &str, episodes: usize) -> Option<usize> {
    if episodes < 2 {
        return None;
    }
    let number: usize = gate.strip_suffix(']')?.rsplit_once('[')?.1.parse().ok()?;
    (1..=episodes).contains(&number).then(|| number - 1)
}

/// Text made safe for a table cell: a `|` would end the cell and a line feed the row; `<`, `>`
/// and `&` would be read as HTML, a backslash as an escape.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// With `--baseline`: a table of the comparison, one row per scenario, episode and judged or
/// undecided time, and a row per reason a scenario was not compared.
pub fn comparison(c: &Comparison) -> String {
    let mut out = format!("### relapse against baseline {}\n\n", cell(&c.baseline));
    out.push_str(
        "| Scenario | Episode | Time | Baseline | New | Difference (interval) | Verdict |\n",
    );
    out.push_str("|---|---|---|---:|---:|---|---|\n");
    for s in &c.scenarios {
        let scenario = cell(&s.scenario);
        for reason in &s.refusals {
            let _ = writeln!(
                out,
                "| {scenario} | — | — | — | — | — | ⚠️ {} |",
                cell(reason)
            );
        }
        for e in &s.episodes {
            if let Some(reason) = &e.reason {
                let _ = writeln!(
                    out,
                    "| {scenario} | {} | — | — | — | — | ⚠️ {} |",
                    e.number,
                    cell(reason)
                );
            }
            for t in e.times.iter().filter(|t| t.change != Change::NotMeasured) {
                let mark = match t.change {
                    Change::Regressed => "❌",
                    Change::Improved => "🚀",
                    Change::Inconclusive => "⚠️",
                    Change::NoChange | Change::NotMeasured => "✅",
                };
                let interval = t.interval.map_or_else(
                    || "—".to_string(),
                    |i| format!("{:+.1}ms … {:+.1}ms", i.lower * 1000.0, i.upper * 1000.0),
                );
                let _ = writeln!(
                    out,
                    "| {scenario} | {} | {} | {} | {} | {interval} | {mark} {} |",
                    e.number,
                    t.measure.label(),
                    optional(t.baseline_median),
                    optional(t.new_median),
                    t.change.as_str(),
                );
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
